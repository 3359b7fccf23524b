/**
 * Published ports: Docker's portmap read and checked, host ports chosen or
 * refused by who holds them, the rules they become, and the driver's
 * ProgramExternalConnectivity and RevokeExternalConnectivity on fakes.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { allocatePorts, parseDockerDnat, parseNftDockerDnat, parsePortmap, parseProcNet } from '../../src/domain/published.js';
import type { CreateNetworkRequest } from '../../src/protocol/network.js';
import { id, world } from './setup.js';

const NET = id('1');
const EP = id('e');
const EP2 = id('f');
const tcp = (Port: number, HostPort = 0, HostPortEnd = 0, HostIP = '') => ({ Proto: 6, IP: '', Port, HostIP, HostPort, HostPortEnd });

describe('published ports: the portmap and host ports', () => {
  it('reads what Docker sends: protocols by number, a host address or none, a port, a range or none', () => {
    assert.deepEqual(parsePortmap([tcp(80, 8080, 8080), { Proto: 17, Port: 53, HostIP: '0.0.0.0', HostPort: 5353 }, { Proto: 132, Port: 9, HostIP: '::', HostPort: 9000, HostPortEnd: 9010 }, tcp(443)]), [
      { proto: 'tcp', hostIp: '', hostPort: 8080, hostPortEnd: 8080, port: 80 },
      { proto: 'udp', hostIp: '0.0.0.0', hostPort: 5353, hostPortEnd: 5353, port: 53 },
      { proto: 'sctp', hostIp: '::', hostPort: 9000, hostPortEnd: 9010, port: 9 },
      { proto: 'tcp', hostIp: '', hostPort: 0, hostPortEnd: 0, port: 443 },
    ]);
    assert.throws(() => parsePortmap([{ Proto: 1, Port: 80 }]), /portmap\[0\]\.Proto 1 is not a protocol ports can be published for \(6 tcp, 17 udp, 132 sctp\)/);
    assert.throws(() => parsePortmap([tcp(80, 9000, 8000)]), /invalid host port range 9000-8000 for 80\/tcp: the end is below the start/);
    assert.throws(() => parsePortmap([{ ...tcp(80, 8080), HostIP: 'nowhere' }]), /HostIP "nowhere" is not an IP address/);
  });

  it('gives the port asked for, the first free one of a range or of the ephemeral range, and refuses a held one naming its holder', () => {
    const held = [{ proto: 'tcp' as const, address: '', port: 8080, holder: 'published by this plugin for endpoint abc' }];
    const range: [number, number] = [40000, 40002];
    assert.deepEqual(allocatePorts(parsePortmap([tcp(80, 8081)]), held, range), [{ proto: 'tcp', hostIp: '', hostPort: 8081, port: 80 }]);
    assert.deepEqual(allocatePorts(parsePortmap([tcp(80, 8080, 8082)]), held, range).map((p) => p.hostPort), [8081]);
    assert.deepEqual(allocatePorts(parsePortmap([tcp(80), tcp(81)]), held, range).map((p) => p.hostPort), [40000, 40001], 'one call never gives a port twice');
    assert.deepEqual(allocatePorts(parsePortmap([{ ...tcp(80, 8080), Proto: 17 }]), held, range).map((p) => p.hostPort), [8080], 'UDP 8080 is another port');
    assert.throws(
      () => allocatePorts(parsePortmap([tcp(80, 8080, 8080, '192.0.2.1')]), held, range),
      (err: Error & { code?: string }) => err.code === 'PortInUse' && err.message === 'host port 8080/tcp on 192.0.2.1 is already in use: published by this plugin for endpoint abc; publish on another host port, or leave the host port out (-p 80) for a free one',
    );
    assert.deepEqual(allocatePorts(parsePortmap([tcp(80, 8080, 8080, '::1')]), [{ ...held[0]!, address: '0.0.0.0' }], range).map((p) => p.hostPort), [8080], 'every IPv4 address is not an IPv6 one');
    assert.throws(() => allocatePorts(parsePortmap([tcp(80), tcp(81), tcp(82), tcp(83)]), [], range), /no free host port for 83\/tcp in 40000-40002/);
  });

  it('reads listening sockets from /proc/net and the ports Docker publishes from its DOCKER chain', () => {
    const tcp4 = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0100007F:0035 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   2: 0100007F:A1B2 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0`;
    assert.deepEqual(parseProcNet(tcp4, 'tcp', false), [{ address: '0.0.0.0', port: 8080 }, { address: '127.0.0.1', port: 53 }]);
    const tcp6 = `  sl  local_address                         remote_address                        st
   0: 00000000000000000000000000000000:1F91 00000000000000000000000000000000:0000 0A
   1: 000080FE00000000FF005002FE0100FE:0016 00000000000000000000000000000000:0000 0A`;
    assert.deepEqual(parseProcNet(tcp6, 'tcp', true), [{ address: '::', port: 8081 }, { address: 'fe80::250:ff:fe00:1fe', port: 22 }]);
    const docker = ['-N DOCKER', '-A DOCKER -i docker0 -j RETURN', '-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8090 -j DNAT --to-destination 172.17.0.2:80', '-A DOCKER -d 127.0.0.1/32 ! -i docker0 -p udp -m udp --dport 53 -j DNAT --to-destination 172.17.0.3:53'].join('\n');
    assert.deepEqual(parseDockerDnat(docker), [{ proto: 'tcp', address: '0.0.0.0', port: 8090 }, { proto: 'udp', address: '127.0.0.1', port: 53 }]);
    assert.deepEqual(parseDockerDnat('-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8090 -j DNAT --to-destination [fd00::2]:80', 6), [{ proto: 'tcp', address: '::', port: 8090 }], 'ip6tables: every IPv6 address');
  });

  it("reads the ports Docker 29's nftables firewall publishes from its docker-bridges table (as nft -j prints them)", () => {
    // nft 1.0.6's JSON of rules as Docker writes them (moby's nftablesdoc): every address, one address, a range.
    const rule = (family: string, expr: unknown[]) => ({ rule: { family, table: 'docker-bridges', chain: 'nat-prerouting-and-output', handle: 2, comment: 'DNAT', expr } });
    const notFrom = { match: { op: '!=', left: { meta: { key: 'iifname' } }, right: 'bridge1' } };
    const dport = (protocol: string, right: unknown) => ({ match: { op: '==', left: { payload: { protocol, field: 'dport' } }, right } });
    const json = (family: string, rules: unknown[]) => JSON.stringify({ nftables: [{ metainfo: { version: '1.0.6', json_schema_version: 1 } }, { table: { family, name: 'docker-bridges', handle: 1 } }, ...rules] });
    const v4 = json('ip', [
      rule('ip', [notFrom, dport('tcp', 8080), { counter: { packets: 0, bytes: 0 } }, { dnat: { addr: '192.0.2.2', port: 80 } }]),
      rule('ip', [{ match: { op: '==', left: { payload: { protocol: 'ip', field: 'daddr' } }, right: '10.9.9.9' } }, notFrom, dport('udp', 5353), { dnat: { addr: '192.0.2.3', port: 53 } }]),
      rule('ip', [notFrom, dport('tcp', { range: [9000, 9002] }), { dnat: { addr: '192.0.2.4' } }]),
      // Not a DNAT: the table's other rules.
      rule('ip', [{ match: { op: '==', left: { payload: { protocol: 'ip', field: 'daddr' } }, right: '192.0.2.2' } }, { drop: null }]),
    ]);
    assert.deepEqual(parseNftDockerDnat(v4), [
      { proto: 'tcp', address: '0.0.0.0', port: 8080 },
      { proto: 'udp', address: '10.9.9.9', port: 5353 },
      { proto: 'tcp', address: '0.0.0.0', port: 9000 },
      { proto: 'tcp', address: '0.0.0.0', port: 9001 },
      { proto: 'tcp', address: '0.0.0.0', port: 9002 },
    ]);
    assert.deepEqual(parseNftDockerDnat(json('ip6', [rule('ip6', [notFrom, dport('tcp', 8443), { dnat: { addr: 'fd00:1::2', port: 443 } }])])), [{ proto: 'tcp', address: '::', port: 8443 }]);
    // No table (iptables firewall, or nft missing): nothing, not an error.
    assert.deepEqual(parseNftDockerDnat(''), []);
    assert.deepEqual(parseNftDockerDnat('Error: No such file or directory'), []);
  });
});

describe('published ports: the driver', () => {
  const createReq = (generic: Record<string, string> = { vlan: '860' }): CreateNetworkRequest => ({
    networkId: NET,
    generic,
    ipv6: false,
    internal: false,
    ipv4Data: [{ addressSpace: 'local', pool: '10.13.160.0/24', gateway: '10.13.160.1/24', auxAddresses: {} }],
    ipv6Data: [],
  });
  async function started(generic?: Record<string, string>) {
    const w = await world();
    await w.network.createNetwork(createReq(generic));
    for (const [endpointId, address] of [[EP, '10.13.160.2/24'], [EP2, '10.13.160.3/24']] as const) {
      await w.network.createEndpoint({ networkId: NET, endpointId, address, addressIpv6: '', macAddress: '', optionMac: '' });
      await w.network.join({ networkId: NET, endpointId, sandboxKey: '/x', options: {} });
    }
    return w;
  }
  const program = (w: Awaited<ReturnType<typeof world>>, endpointId: string, portmap: unknown[]) =>
    w.network.programExternalConnectivity({ networkId: NET, endpointId, options: { 'com.docker.network.portmap': portmap } });

  it('publishes: records the host ports and DNATs them to the container, lets them past isolation, masquerades hairpin traffic', async () => {
    const w = await started();
    await program(w, EP, [tcp(80, 8080, 8080)]);
    assert.deepEqual(w.state.endpoints.get(EP)!.ports, [{ proto: 'tcp', hostIp: '', hostPort: 8080, port: 80 }]);
    const rules = w.firewall.current!;
    assert.deepEqual(rules.v4.dnat.map((r) => r.join(' ')), ['-p tcp -m tcp --dport 8080 -m comment --comment ovsnet:111111111111 -j DNAT --to-destination 10.13.160.2:80']);
    // Nothing new enters a nat network but what was DNATed (a published port); what isolation leaves is accepted.
    assert.deepEqual(rules.v4.isolate.filter((r) => r.join(' ').startsWith('-o ovsgw1111111111')).map((r) => r.join(' ')), [
      '-o ovsgw1111111111 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -m comment --comment ovsnet:111111111111 -j DROP',
    ]);
    assert.ok(rules.v4.filter.some((r) => r.join(' ') === '-o ovsgw1111111111 -m comment --comment ovsnet:111111111111 -j ACCEPT'));
    assert.match(rules.v4.nat[0]!.join(' '), /^-s 10\.13\.160\.0\/24 -d 10\.13\.160\.2\/32 -o ovsgw1111111111 .* -j MASQUERADE$/);
    await program(w, EP, [tcp(80, 8080, 8080)]);
    assert.equal(w.firewall.current!.v4.dnat.length, 1, 'the same request again changes nothing');
  });

  it('refuses a port another container holds, naming it, and keeps nothing of the refused request', async () => {
    const w = await started();
    await program(w, EP, [tcp(80, 8080, 8080)]);
    await assert.rejects(program(w, EP2, [tcp(81, 9090, 9090), tcp(80, 8080, 8080)]), (err: Error & { code?: string }) =>
      err.code === 'PortInUse' && /^host port 8080\/tcp is already in use: published by this plugin for endpoint eeeeeeeeeeee on this network \(\*:8080->80\/tcp\)/.test(err.message));
    assert.equal(w.state.endpoints.get(EP2)!.ports, undefined);
    assert.equal(w.firewall.current!.v4.dnat.length, 1);
    w.hostPorts.held.push({ proto: 'tcp', address: '', port: 9091, holder: "published by Docker's own bridge network (a DNAT rule in iptables' DOCKER chain)" });
    await assert.rejects(program(w, EP2, [tcp(80, 9091, 9091)]), /host port 9091\/tcp is already in use: published by Docker's own bridge network/);
    await assert.rejects(program(w, EP2, [tcp(80, 9092, 9092, '192.0.2.77')]), /cannot publish on 192\.0\.2\.77: it is not an address of this host; give one of /);
    await assert.rejects(program(w, EP2, [tcp(80, 9092, 9092, '127.0.0.1')]), /cannot publish on 127\.0\.0\.1: a published port is not reachable through a loopback address/);
  });

  it("publishes on IPv4 only when another network of the container is its IPv6 gateway (Docker's no_proxy_6to4)", async () => {
    const w = await started();
    await w.network.programExternalConnectivity({
      networkId: NET,
      endpointId: EP,
      options: { 'com.docker.network.portmap': [tcp(80, 8080, 8080), tcp(443, 8443, 8443, '::'), tcp(81, 8081, 8081, '0.0.0.0')], 'com.docker.network.driver.private.no_proxy_6to4': true },
    });
    assert.deepEqual(w.state.endpoints.get(EP)!.ports, [
      { proto: 'tcp', hostIp: '0.0.0.0', hostPort: 8080, port: 80 },
      { proto: 'tcp', hostIp: '0.0.0.0', hostPort: 8081, port: 81 },
    ]);
    assert.deepEqual(w.firewall.current!.v6.dnat, []);
  });

  it('gives two containers starting at once different free ports', async () => {
    const w = await started();
    await Promise.all([program(w, EP, [tcp(80)]), program(w, EP2, [tcp(80)])]);
    const ports = [EP, EP2].map((e) => w.state.endpoints.get(e)!.ports![0]!.hostPort).sort();
    assert.deepEqual(ports, [32768, 32769]);
  });

  it('withdraws the rules at Revoke and with the endpoint, and refuses networks without a gateway on the host', async () => {
    const w = await started();
    await program(w, EP, [tcp(80, 8080, 8080)]);
    await program(w, EP2, [tcp(80)]);
    assert.equal(w.state.endpoints.get(EP2)!.ports![0]!.hostPort, 32768, 'no host port: the first free ephemeral one');
    await w.network.revokeExternalConnectivity({ networkId: NET, endpointId: EP });
    assert.equal(w.state.endpoints.get(EP)!.ports, undefined);
    await w.network.deleteEndpoint({ networkId: NET, endpointId: EP2 });
    assert.deepEqual(w.firewall.current!.v4.dnat, []);

    const ext = await world();
    await ext.network.createNetwork(createReq({ vlan: '860', gateway_mode: 'external' }));
    await ext.network.createEndpoint({ networkId: NET, endpointId: EP, address: '10.13.160.2/24', addressIpv6: '', macAddress: '', optionMac: '' });
    await ext.network.join({ networkId: NET, endpointId: EP, sandboxKey: '/x', options: {} });
    await assert.rejects(program(ext, EP, [tcp(80, 8080)]), /^PluginError: publishing ports \(-p, -P\) needs the network's gateway on the host \(gateway_mode nat or routed\): with gateway_mode=external the network has no gateway on the host$/);
    await program(ext, EP, []);
  });
});
