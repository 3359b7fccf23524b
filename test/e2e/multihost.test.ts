/**
 * Overlays across three simulated hosts, each with its own OVS, dockerd and
 * plugin, cabled together by an underlay (10.250.0.0/24, MTU 1500): VXLAN
 * and GRE reachability with a full-size TCP stream at the derived MTU,
 * isolation from another VNI and from a VLAN on the same addresses, a full
 * mesh, changing peers without recreating, and routed subnets between hosts.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { tunnelPortName } from '../../src/domain/names.js';
import { cmd, waitFor } from './harness/proc.js';
import { REPO_ROOT, SimHost } from './harness/sim-host.js';
import { Underlay } from './harness/underlay.js';
import { assertPluginSaid, containerAddress, dockerError, httpGet, inspect, ping, runContainer, startHttp } from './support.js';

const CLI = `${REPO_ROOT}/dist/src/cli/main.js`;
const ADDR = { mh1: '10.250.0.1', mh2: '10.250.0.2', mh3: '10.250.0.3' } as const;
type Name = keyof typeof ADDR;

describe('overlays across hosts', () => {
  const hosts = {} as Record<Name, SimHost>;
  let underlay: Underlay;

  const create = (h: Name, name: string, ...args: string[]) =>
    hosts[h].docker(['network', 'create', '-d', hosts[h].driver, '--ipam-driver', hosts[h].driver, ...args, name]);
  /**
   * Tunnels lose the very first packet while OVS learns the peer's MAC, and three userspace switches on two
   * cores answer slowly at times: reachability is retried for a while. Unreachability is checked strictly.
   */
  const reaches = (h: Name, container: string, ip: string) =>
    waitFor(`${container} to reach ${ip}`, () => ping(hosts[h], container, ip, 2), 15_000, 0).then(() => true, () => false);
  const mtuOf = async (h: Name, container: string) => Number((await hosts[h].docker(['exec', container, 'cat', '/sys/class/net/eth0/mtu'])).stdout.trim());

  before(async () => {
    underlay = await Underlay.create('mh-ul');
    for (const name of Object.keys(ADDR) as Name[]) {
      hosts[name] = await SimHost.start({ name });
      await underlay.attach(hosts[name], `${ADDR[name]}/24`);
    }
  });
  after(async () => {
    for (const host of Object.values(hosts)) await host?.stop();
    await underlay?.destroy();
  });

  it('VXLAN: containers on two hosts reach each other by ping and TCP, with the MTU derived from the underlay', async () => {
    await create('mh1', 'blue', '--subnet', '192.168.0.0/24', '--ip-range', '192.168.0.0/25', '-o', 'mode=vxlan', '-o', 'vni=5001', '-o', `peers=${ADDR.mh2}`);
    await create('mh2', 'blue', '--subnet', '192.168.0.0/24', '--ip-range', '192.168.0.128/25', '-o', 'mode=vxlan', '-o', 'vni=5001', '-o', `peers=${ADDR.mh1}`);
    await runContainer(hosts.mh1, 'b1', 'blue');
    await runContainer(hosts.mh2, 'b2', 'blue');
    const b1 = await containerAddress(hosts.mh1, 'b1', 'blue');
    const b2 = await containerAddress(hosts.mh2, 'b2', 'blue');
    assert.match(b1.ip, /^192\.168\.0\.([0-9]|[1-9][0-9]|1[01][0-9]|12[0-7])$/, 'host 1 hands out the lower half');
    assert.match(b2.ip, /^192\.168\.0\.(12[89]|1[3-9][0-9]|2[0-4][0-9]|25[0-4])$/, 'host 2 the upper half');
    assert.equal(await mtuOf('mh1', 'b1'), 1450, '1500 on the underlay minus 50 bytes of VXLAN');
    assert.ok(await reaches('mh1', 'b1', b2.ip), 'b1 -> b2');
    assert.ok(await reaches('mh2', 'b2', b1.ip), 'b2 -> b1');
    await startHttp(hosts.mh2, 'b2');
    assert.equal(await httpGet(hosts.mh1, 'b1', b2.ip), (await hosts.mh2.docker(['exec', 'b2', 'hostname'])).stdout.trim());
  });

  it('VXLAN: a full-size TCP stream passes at the derived MTU', async () => {
    const b2 = await containerAddress(hosts.mh2, 'b2', 'blue');
    await hosts.mh2.docker(['exec', 'b2', 'dd', 'if=/dev/urandom', 'of=/etc/big', 'bs=1024', 'count=2048']);
    const want = (await hosts.mh2.docker(['exec', 'b2', 'md5sum', '/etc/big'])).stdout.split(' ')[0];
    const got = await hosts.mh1.docker(['exec', 'b1', 'sh', '-c', `timeout 20 wget -q -O - http://${b2.ip}:8080/big | md5sum`], { timeoutMs: 30_000 });
    assert.equal(got.stdout.split(' ')[0], want, '2 MB arrive intact');
    // And the largest packet that fits the container MTU crosses whole.
    assert.ok(await hosts.mh1.docker(['exec', 'b1', 'ping', '-c', '2', '-s', String(1450 - 28), b2.ip], { check: false }).then((r) => r.exitCode === 0));
  });

  it('tags tunnel ports with owner, network and peer', async () => {
    const id = (await inspect(hosts.mh1, 'network', 'blue')).Id;
    const tunnels = (await hosts.mh1.ownedPorts()).filter((p) => p.externalIds['ovsnet-role'] === 'tunnel');
    assert.equal(tunnels.length, 1);
    assert.equal(tunnels[0]!.name, tunnelPortName(id, ADDR.mh2));
    assert.equal(tunnels[0]!.externalIds['ovsnet-network'], id);
    assert.equal(tunnels[0]!.externalIds['ovsnet-peer'], ADDR.mh2);
    const options = (await hosts.mh1.vsctl(['get', 'interface', tunnels[0]!.name, 'type', 'options'])).stdout;
    assert.match(options, /vxlan/);
    assert.match(options, /key="5001"/);
    assert.match(options, /remote_ip="10\.250\.0\.2"/);
  });

  it('keeps another VNI and a VLAN network out, even on the same addresses', async () => {
    const b2 = await containerAddress(hosts.mh2, 'b2', 'blue');
    // Docker's own IPAM, so the same subnet as blue can be used: only the segment keeps them apart.
    for (const [h, peer] of [['mh1', ADDR.mh2], ['mh2', ADDR.mh1]] as const) {
      await hosts[h].docker(['network', 'create', '-d', hosts[h].driver, '--subnet', '192.168.0.0/24', '--ip-range', `192.168.0.${h === 'mh1' ? 64 : 192}/27`, '-o', 'mode=vxlan', '-o', 'vni=5002', '-o', `peers=${peer}`, 'green']);
    }
    await hosts.mh1.docker(['network', 'create', '-d', hosts.mh1.driver, '--subnet', '192.168.0.0/24', '--ip-range', '192.168.0.96/27', '-o', 'vlan=100', '-o', 'gateway_mode=isolated', 'vlan100']);
    await runContainer(hosts.mh1, 'g1', 'green');
    await runContainer(hosts.mh2, 'g2', 'green');
    await runContainer(hosts.mh1, 'v1', 'vlan100');
    const g2 = await containerAddress(hosts.mh2, 'g2', 'green');
    assert.ok(await reaches('mh1', 'g1', g2.ip), 'green works on its own');
    assert.equal(await ping(hosts.mh1, 'g1', b2.ip, 2), false, 'green does not reach blue');
    assert.equal(await ping(hosts.mh1, 'v1', b2.ip, 2), false, 'the VLAN network does not reach blue');
    assert.equal(await ping(hosts.mh1, 'v1', g2.ip, 2), false, 'the VLAN network does not reach green');
    assert.equal(await ping(hosts.mh2, 'b2', g2.ip, 2), false, 'blue does not reach green on the same host');
  });

  it('GRE: the same with a key instead of a VNI, and its own overhead', async () => {
    await create('mh1', 'red', '--subnet', '192.168.7.0/24', '--ip-range', '192.168.7.0/25', '-o', 'mode=gre', '-o', 'key=77', '-o', `peers=${ADDR.mh2}`);
    await create('mh2', 'red', '--subnet', '192.168.7.0/24', '--ip-range', '192.168.7.128/25', '-o', 'mode=gre', '-o', 'key=77', '-o', `peers=${ADDR.mh1}`);
    await runContainer(hosts.mh1, 'r1', 'red');
    await runContainer(hosts.mh2, 'r2', 'red');
    const r2 = await containerAddress(hosts.mh2, 'r2', 'red');
    assert.equal(await mtuOf('mh1', 'r1'), 1458, '1500 minus 42 bytes of GRE with a key');
    assert.ok(await reaches('mh1', 'r1', r2.ip));
    await startHttp(hosts.mh2, 'r2');
    await hosts.mh2.docker(['exec', 'r2', 'dd', 'if=/dev/urandom', 'of=/etc/big', 'bs=1024', 'count=1024']);
    const want = (await hosts.mh2.docker(['exec', 'r2', 'md5sum', '/etc/big'])).stdout.split(' ')[0];
    const got = await hosts.mh1.docker(['exec', 'r1', 'sh', '-c', `timeout 20 wget -q -O - http://${r2.ip}:8080/big | md5sum`], { timeoutMs: 30_000 });
    assert.equal(got.stdout.split(' ')[0], want);
    const b2 = await containerAddress(hosts.mh2, 'b2', 'blue');
    assert.equal(await ping(hosts.mh1, 'r1', b2.ip, 2), false, 'GRE and VXLAN overlays stay apart');
  });

  it('carries a VLAN tag inside the tunnel, four bytes off the MTU', async () => {
    await create('mh1', 'tagged', '--subnet', '192.168.8.0/24', '--ip-range', '192.168.8.0/25', '-o', 'mode=vxlan', '-o', 'vni=5300', '-o', 'vlan=300', '-o', `peers=${ADDR.mh2}`);
    await create('mh2', 'tagged', '--subnet', '192.168.8.0/24', '--ip-range', '192.168.8.128/25', '-o', 'mode=vxlan', '-o', 'vni=5300', '-o', 'vlan=300', '-o', `peers=${ADDR.mh1}`);
    await runContainer(hosts.mh1, 't1', 'tagged');
    await runContainer(hosts.mh2, 't2', 'tagged');
    assert.equal(await mtuOf('mh1', 't1'), 1446, '1500 minus 50 bytes of VXLAN minus the 4-byte tag inside');
    const id = (await inspect(hosts.mh1, 'network', 'tagged')).Id;
    const tunnel = (await hosts.mh1.ownedPorts()).find((p) => p.externalIds['ovsnet-role'] === 'tunnel' && p.externalIds['ovsnet-network'] === id);
    assert.equal((await hosts.mh1.vsctl(['get', 'port', tunnel!.name, 'trunks'])).stdout.trim(), '[300]', 'a trunk of VLAN 300');
    const t2 = await containerAddress(hosts.mh2, 't2', 'tagged');
    assert.ok(await reaches('mh1', 't1', t2.ip));
    assert.ok((await hosts.mh1.docker(['exec', 't1', 'ping', '-c', '2', '-s', String(1446 - 28), t2.ip], { check: false })).exitCode === 0, 'a full-size packet crosses');
    await hosts.mh1.docker(['rm', '-f', 't1']);
    await hosts.mh2.docker(['rm', '-f', 't2']);
    await hosts.mh1.docker(['network', 'rm', 'tagged']);
    await hosts.mh2.docker(['network', 'rm', 'tagged']);
  });

  it('refuses an MTU larger than the tunnel path allows, saying the maximum', async () => {
    const err = await dockerError(hosts.mh1, ['network', 'create', '-d', hosts.mh1.driver, '--ipam-driver', hosts.mh1.driver, '--subnet', '192.168.9.0/24', '-o', 'mode=vxlan', '-o', 'vni=9', '-o', `peers=${ADDR.mh2}`, '-o', 'mtu=1500', 'toobig']);
    assertPluginSaid(err, 'NetworkDriver.CreateNetwork', `invalid value "1500" for option mtu: at most 1450 (the path to ${ADDR.mh2} (MTU 1500 on br-phy) minus VXLAN encapsulation takes 50 bytes)`);
  });

  it('a full mesh of three hosts', async () => {
    const ranges = { mh1: '192.168.3.0/26', mh2: '192.168.3.64/26', mh3: '192.168.3.128/26' };
    for (const h of Object.keys(ADDR) as Name[]) {
      const peers = (Object.keys(ADDR) as Name[]).filter((o) => o !== h).map((o) => ADDR[o]).join(',');
      await create(h, 'purple', '--subnet', '192.168.3.0/24', '--ip-range', ranges[h], '-o', 'mode=vxlan', '-o', 'vni=6001', '-o', `peers=${peers}`);
      await runContainer(hosts[h], `p-${h}`, 'purple');
    }
    const ips = {} as Record<Name, string>;
    for (const h of Object.keys(ADDR) as Name[]) ips[h] = (await containerAddress(hosts[h], `p-${h}`, 'purple')).ip;
    for (const from of Object.keys(ADDR) as Name[]) {
      for (const to of Object.keys(ADDR) as Name[]) {
        if (from !== to) assert.ok(await reaches(from, `p-${from}`, ips[to]), `${from} -> ${to}`);
      }
    }
  });

  it('removes and adds a peer without recreating the network', async () => {
    const id = (await inspect(hosts.mh1, 'network', 'purple')).Id;
    const p3 = (await containerAddress(hosts.mh3, 'p-mh3', 'purple')).ip;
    const p2 = (await containerAddress(hosts.mh2, 'p-mh2', 'purple')).ip;
    // The operator's way: the ovsnet CLI, by Docker network name.
    const cli = (...args: string[]) =>
      cmd(process.execPath, [CLI, ...args], { env: { OVSNET_SOCKET: hosts.mh1.socket, DOCKER_HOST: hosts.mh1.dockerHost } });
    assert.deepEqual((await cli('peers', 'purple')).stdout.split('\n'), [ADDR.mh2, ADDR.mh3]);
    assert.equal((await cli('peers', 'purple', 'remove', ADDR.mh3)).stdout, ADDR.mh2);
    assert.equal(await ping(hosts.mh1, 'p-mh1', p3, 2), false, 'no tunnel to host 3 any more');
    assert.ok(await reaches('mh1', 'p-mh1', p2), 'host 2 still reached');
    assert.ok(!(await hosts.mh1.ownedPorts()).some((p) => p.name === tunnelPortName(id, ADDR.mh3)));
    assert.equal((await cli('peers', 'purple', 'add', ADDR.mh3)).stdout, `${ADDR.mh2}\n${ADDR.mh3}`);
    assert.ok(await reaches('mh1', 'p-mh1', p3), 'host 3 reached again');
    const refused = await cmd(process.execPath, [CLI, 'peers', 'purple', 'add', '10.250.0.1'], {
      env: { OVSNET_SOCKET: hosts.mh1.socket, DOCKER_HOST: hosts.mh1.dockerHost },
      check: false,
    });
    assert.equal(refused.exitCode, 1);
    assert.match(refused.stderr, /the plugin refused: invalid peer 10\.250\.0\.1: it is an address of this host/);
    // The API under the CLI, as scripts would use it.
    const bad = await hosts.mh1.pluginRequest('PUT', `/ovsnet/networks/${id}/peers`, JSON.stringify({ Peers: ['10.250.0.1'] }));
    assert.equal(bad.status, 400);
    assert.match(JSON.parse(bad.body).Err, /invalid peer 10\.250\.0\.1: it is an address of this host/);
  });

  it('docker network rm on one host leaves the other hosts working', async () => {
    const id = (await inspect(hosts.mh1, 'network', 'purple')).Id;
    await hosts.mh1.docker(['rm', '-f', 'p-mh1']);
    await hosts.mh1.docker(['network', 'rm', 'purple']);
    const left = (await hosts.mh1.ownedPorts()).filter((p) => p.externalIds['ovsnet-network'] === id);
    assert.deepEqual(left, [], 'no tunnel port of the network is left on host 1');
    const p3 = (await containerAddress(hosts.mh3, 'p-mh3', 'purple')).ip;
    assert.ok(await reaches('mh2', 'p-mh2', p3), 'hosts 2 and 3 still talk');
  });

  it('routed subnets: each host routes its own subnet, host routes join them', async () => {
    await create('mh1', 'routed1', '--subnet', '192.168.1.0/24', '-o', 'vlan=11', '-o', 'gateway_mode=routed');
    await create('mh2', 'routed2', '--subnet', '192.168.2.0/24', '-o', 'vlan=12', '-o', 'gateway_mode=routed');
    await hosts.mh1.exec('ip', ['route', 'add', '192.168.2.0/24', 'via', ADDR.mh2]);
    await hosts.mh2.exec('ip', ['route', 'add', '192.168.1.0/24', 'via', ADDR.mh1]);
    await runContainer(hosts.mh1, 'o1', 'routed1');
    await runContainer(hosts.mh2, 'o2', 'routed2');
    const o1 = await containerAddress(hosts.mh1, 'o1', 'routed1');
    const o2 = await containerAddress(hosts.mh2, 'o2', 'routed2');
    assert.ok(await ping(hosts.mh1, 'o1', o2.ip, 2), 'o1 -> o2 across the hosts');
    assert.ok(await ping(hosts.mh2, 'o2', o1.ip, 2), 'o2 -> o1 across the hosts');
    await startHttp(hosts.mh2, 'o2');
    assert.equal(await httpGet(hosts.mh1, 'o1', o2.ip), (await hosts.mh2.docker(['exec', 'o2', 'hostname'])).stdout.trim());
  });
});
