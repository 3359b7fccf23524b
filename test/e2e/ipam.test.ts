/**
 * Addressing on a real dockerd: --subnet, --gateway, --ip-range, --aux-address,
 * --ip, automatic pools, overlaps, exhaustion, IPv6, Docker's own IPAM, MTU,
 * and bad options with their messages exactly as the docker CLI prints them.
 * Every refusal is checked to leave nothing held.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { SimHost } from './harness/sim-host.js';
import { assertAccountedFor, assertPluginSaid, audit, containerAddress, dockerError, endpointPortName, httpGet, inspect, ping, runContainer, startHttp } from './support.js';

describe('addressing end to end', () => {
  let host: SimHost;
  let d: string;
  const create = (name: string, ...args: string[]) => host.docker(['network', 'create', '-d', d, '--ipam-driver', d, ...args, name]);

  before(async () => {
    host = await SimHost.start({ name: 'ipam' });
    d = host.driver;
  });
  after(async () => {
    await host?.stop();
  });

  it('hands dynamic addresses from the ip-range and keeps aux addresses out of use', async () => {
    await create('ranged', '--subnet', '10.20.0.0/24', '--gateway', '10.20.0.1', '--ip-range', '10.20.0.128/29', '--aux-address', 'router=10.20.0.129', '-o', 'vlan=20');
    await runContainer(host, 'r1', 'ranged');
    await runContainer(host, 'r2', 'ranged');
    const addresses = [(await containerAddress(host, 'r1', 'ranged')).ip, (await containerAddress(host, 'r2', 'ranged')).ip];
    assert.deepEqual(addresses, ['10.20.0.128', '10.20.0.130'], 'the aux address .129 is skipped');
    const err = await dockerError(host, ['run', '-d', '--name', 'r3', '--net', 'ranged', '--ip', '10.20.0.129', 'local/busybox', 'sleep', '1d']);
    assertPluginSaid(err, 'NetworkDriver.CreateEndpoint', 'address 10.20.0.129 is already in use on this network (as auxiliary address "router")');
    await host.docker(['rm', '-f', 'r3']);
    assert.ok(await ping(host, 'r1', '10.20.0.130'));
  });

  it('refuses a static address another container holds, and the holder keeps it', async () => {
    await runContainer(host, 's1', 'ranged', { ip: '10.20.0.50' });
    const err = await dockerError(host, ['run', '-d', '--name', 's2', '--net', 'ranged', '--ip', '10.20.0.50', 'local/busybox', 'sleep', '1d']);
    assertPluginSaid(err, 'NetworkDriver.CreateEndpoint', /^address 10\.20\.0\.50 is already in use on this network \(by another container, endpoint [0-9a-f]{12}\)$/);
    await host.docker(['rm', '-f', 's2']);
    const state = await host.pluginState();
    assert.ok(state.addresses.some((a) => a.address === '10.20.0.50'), 'still held for s1');
    await startHttp(host, 's1');
    assert.equal(await httpGet(host, 'r1', '10.20.0.50'), (await host.docker(['exec', 's1', 'hostname'])).stdout.trim());
    const gw = await dockerError(host, ['run', '-d', '--name', 's3', '--net', 'ranged', '--ip', '10.20.0.1', 'local/busybox', 'sleep', '1d']);
    assertPluginSaid(gw, 'IpamDriver.RequestAddress', 'address 10.20.0.1 is the gateway of subnet 10.20.0.0/24');
    await host.docker(['rm', '-f', 's3']);
    await assertAccountedFor(host, { endpoints: 3, networks: 1 });
  });

  it('reports an exhausted range as such, and the failed start holds nothing', async () => {
    // 10.20.0.128/29 has .128-.135; .129 is aux, .128 and .130 are taken: five more fit
    for (let i = 0; i < 5; i++) await runContainer(host, `x${i}`, 'ranged');
    const err = await dockerError(host, ['run', '-d', '--name', 'x5', '--net', 'ranged', 'local/busybox', 'sleep', '1d']);
    assertPluginSaid(err, 'IpamDriver.RequestAddress', 'no free address left in ip-range 10.20.0.128/29 of subnet 10.20.0.0/24: all 8 usable addresses are in use');
    await host.docker(['rm', '-f', 'x0', 'x1', 'x2', 'x3', 'x4', 'x5']);
    await assertAccountedFor(host, { endpoints: 3, networks: 1 });
  });

  it('refuses overlapping and duplicate subnets, and the existing network keeps working', async () => {
    const overlap = await dockerError(host, ['network', 'create', '-d', d, '--ipam-driver', d, '--subnet', '10.20.0.0/16', 'wide']);
    assertPluginSaid(overlap, 'IpamDriver.RequestPool', 'subnet 10.20.0.0/16 overlaps subnet 10.20.0.0/24, which is already in use');
    const same = await dockerError(host, ['network', 'create', '-d', d, '--ipam-driver', d, '--subnet', '10.20.0.0/24', '--ip-range', '10.20.0.128/29', 'again']);
    assertPluginSaid(same, 'NetworkDriver.CreateNetwork', /^subnet 10\.20\.0\.0\/24 is already used by network [0-9a-f]{12}; choose another --subnet$/);
    const state = await host.pluginState();
    assert.equal(state.pools.length, 1);
    assert.ok(state.addresses.some((a) => a.address === '10.20.0.1' && a.kind === 'gateway'), 'the gateway survived the rollback');
    assert.ok(state.addresses.some((a) => a.address === '10.20.0.129'), 'the aux address survived the rollback');
    assert.ok(await ping(host, 'r1', '10.20.0.50'));
  });

  it('chooses a free automatic subnet that avoids host routes', async () => {
    await host.exec('ip', ['route', 'add', 'blackhole', '10.200.0.0/24']);
    await create('auto1', '-o', 'vlan=21');
    await create('auto2', '-o', 'vlan=22');
    const subnets = [];
    for (const name of ['auto1', 'auto2']) {
      const config = (await inspect(host, 'network', name)).IPAM.Config[0];
      subnets.push(config.Subnet);
      assert.equal(config.Gateway, config.Subnet.replace('.0/24', '.1'));
    }
    assert.deepEqual(subnets, ['10.200.1.0/24', '10.200.2.0/24']);
    await runContainer(host, 'a1', 'auto1');
    assert.match((await containerAddress(host, 'a1', 'auto1')).ip, /^10\.200\.1\./);
    await host.docker(['rm', '-f', 'a1']);
    await host.docker(['network', 'rm', 'auto1', 'auto2']);
  });

  it('carries IPv6 pools', async () => {
    await create('dual', '--ipv6', '--subnet', '10.23.0.0/24', '--subnet', 'fd00:23::/64', '-o', 'vlan=23');
    await runContainer(host, 'v1', 'dual');
    await runContainer(host, 'v2', 'dual');
    const v2 = await containerAddress(host, 'v2', 'dual');
    assert.match(v2.ipv6, /^fd00:23::/);
    assert.ok(await ping(host, 'v1', v2.ipv6), 'IPv6 between containers');
    assert.ok(await ping(host, 'v1', v2.ip));
    await host.docker(['rm', '-f', 'v1', 'v2']);
    await host.docker(['network', 'rm', 'dual']);
  });

  it("works with Docker's default IPAM", async () => {
    await host.docker(['network', 'create', '-d', d, '--subnet', '10.24.0.0/24', '-o', 'vlan=24', 'plain']);
    await runContainer(host, 'p1', 'plain');
    await runContainer(host, 'p2', 'plain', { ip: '10.24.0.77' });
    assert.ok(await ping(host, 'p1', '10.24.0.77'));
    const ports = await host.ownedPorts();
    assert.equal(ports.filter((p) => p.tag === 24).length, 3, 'two containers and the gateway on VLAN 24');
    await host.docker(['rm', '-f', 'p1', 'p2']);
    await host.docker(['network', 'rm', 'plain']);
  });

  it('applies -o mtu to both veth ends', async () => {
    await create('small-mtu', '--subnet', '10.25.0.0/24', '-o', 'mtu=1400', '-o', 'vlan=25');
    await runContainer(host, 'm1', 'small-mtu');
    const inside = await host.docker(['exec', 'm1', 'cat', '/sys/class/net/eth0/mtu']);
    assert.equal(inside.stdout.trim(), '1400');
    const { endpointId } = await containerAddress(host, 'm1', 'small-mtu');
    const portName = await endpointPortName(host, endpointId);
    const hostEnd = (await host.links()).find((l) => l.name === portName);
    assert.equal(hostEnd?.mtu, 1400);
    await host.docker(['rm', '-f', 'm1']);
    await host.docker(['network', 'rm', 'small-mtu']);
  });

  const refusals: Array<[string[], string, string]> = [
    [['-o', 'vlan=5000'], 'NetworkDriver.CreateNetwork', 'invalid value "5000" for option vlan: must be an integer from 1 to 4094 (leave vlan out for an untagged network)'],
    [['-o', 'vlan=abc'], 'NetworkDriver.CreateNetwork', 'invalid value "abc" for option vlan: must be an integer from 1 to 4094 (leave vlan out for an untagged network)'],
    [['-o', 'mtu=10'], 'NetworkDriver.CreateNetwork', 'invalid value "10" for option mtu: must be an integer from 68 to 65535'],
    [['-o', 'gateway_mode=bridge'], 'NetworkDriver.CreateNetwork', 'invalid value "bridge" for option gateway_mode: valid values are nat, routed, external, isolated'],
    [['-o', 'bridge=br/x'], 'NetworkDriver.CreateNetwork', "invalid value \"br/x\" for option bridge: an OVS bridge name is 1 to 15 characters from letters, digits, '_', '-' and '.', starting with a letter or digit"],
    [['-o', 'bridge=lo'], 'NetworkDriver.CreateNetwork', 'invalid value "lo" for option bridge: a network interface with that name exists and is not an OVS bridge'],
    [['-o', 'colour=blue'], 'NetworkDriver.CreateNetwork', 'unknown option colour=blue; valid options: allow_dhcp_server, allow_host_overlap, allow_ra, anti_spoofing, bridge, burst, gateway_mode, key, mode, mtu, ovn_network, ovn_router, peers, rate, uplink, vlan, vni'],
    [['--ipam-opt', 'x=y'], 'IpamDriver.RequestPool', 'unknown IPAM option x=y; the ovs IPAM driver takes no --ipam-opt options'],
  ];
  for (const [args, call, message] of refusals) {
    it(`refuses ${args.join(' ')} with a message that says what is valid, and keeps nothing`, async () => {
      const before = await audit(host);
      const err = await dockerError(host, ['network', 'create', '-d', d, '--ipam-driver', d, '--subnet', '10.26.0.0/24', ...args, 'refused']);
      assertPluginSaid(err, call, message);
      assert.deepEqual(await audit(host), before);
    });
  }

  it('refuses a subnet with host bits, saying what was meant, and keeps nothing', async () => {
    // Docker 20.10 asks the plugin, which refuses; since 25 dockerd refuses it itself, before asking.
    const before = await audit(host);
    await dockerError(host, ['network', 'create', '-d', d, '--ipam-driver', d, '--subnet', '10.27.0.1/24', 'hostbits']);
    assert.deepEqual(await audit(host), before);
    const answer = await host.pluginRequest('POST', '/IpamDriver.RequestPool', JSON.stringify({ AddressSpace: 'local', Pool: '10.27.0.1/24', SubPool: '', Options: {}, V6: false }) + '\n');
    assert.equal(answer.status, 400);
    assert.equal(JSON.parse(answer.body).Error, 'invalid subnet "10.27.0.1/24": host bits are set; did you mean 10.27.0.0/24?');
  });

  it('leaves nothing once everything is removed', async () => {
    await host.docker(['rm', '-f', 'r1', 'r2', 's1']);
    await host.docker(['network', 'rm', 'ranged']);
    const a = await audit(host);
    assert.deepEqual([a.endpoints, a.networks, a.pools, a.gatewayPorts.length, a.endpointPorts.length, a.veths.length], [0, 0, 0, 0, 0, 0]);
    assert.deepEqual(a.addresses, {});
  });
});
