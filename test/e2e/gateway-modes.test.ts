/**
 * The four gateway modes and --internal on a real host: where the gateway
 * lives, whether traffic leaves the host masqueraded or routed, whether
 * anything may come in, and what containers get as default route. A
 * namespace "wan" stands in for the world beyond the host; a namespace "rtr"
 * stands in for a router on the VLAN (external mode), attached by a port the
 * plugin did not create and must never touch.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { cmd } from './harness/proc.js';
import { SimHost, type OutsideNamespace } from './harness/sim-host.js';
import { assertPluginSaid, audit, containerAddress, httpGet, inspect, ping, runContainer, startHttp, startWhoAmI, tcpSay } from './support.js';
import { assertUnrouted } from './harness/addresses.js';

describe('gateway modes end to end', () => {
  let host: SimHost;
  let d: string;
  let wan: OutsideNamespace;
  let whoami: { stop: () => void };
  const create = (name: string, ...args: string[]) => host.docker(['network', 'create', '-d', d, '--ipam-driver', d, ...args, name]);
  const routes = async (container: string) => (await host.docker(['exec', container, 'ip', 'route'])).stdout;

  before(async () => {
    host = await SimHost.start({ name: 'gw' });
    d = host.driver;
    wan = await host.addOutside('gw-wan', { hostAddress: '198.18.0.1', address: '198.18.0.2', prefix: 30 });
    whoami = await startWhoAmI(wan.ns, 9000);
  });
  after(async () => {
    whoami?.stop();
    await host?.stop();
  });

  it('nat: the gateway is on the host, traffic leaves masqueraded, nothing unsolicited comes in', async () => {
    await create('natnet', '--subnet', '10.30.0.0/24', '--gateway', '10.30.0.1', '-o', 'vlan=30');
    await runContainer(host, 'n1', 'natnet');
    assert.match(await routes('n1'), /^default via 10\.30\.0\.1 dev eth0/m);
    const gw = (await audit(host)).gatewayPorts;
    assert.equal(gw.length, 1);
    const addr = await host.exec('ip', ['-br', 'address', 'show', 'dev', gw[0]!]);
    assert.match(addr.stdout, /10\.30\.0\.1\/24/);
    assert.equal((await host.exec('cat', ['/proc/sys/net/ipv4/ip_forward'])).stdout.trim(), '1');
    assert.equal(await tcpSay(host, 'n1', wan.address, 9000), wan.hostAddress, 'the world sees the host address');
    assert.ok(await ping(host, 'n1', wan.address));
    // Even with a route to the subnet, the world cannot open connections to a nat network.
    await cmd('ip', ['-n', wan.ns, 'route', 'add', '10.30.0.0/24', 'via', wan.hostAddress]);
    await startHttp(host, 'n1');
    const n1 = await containerAddress(host, 'n1', 'natnet');
    const inbound = await cmd('ip', ['netns', 'exec', wan.ns, 'timeout', '3', 'busybox', 'nc', n1.ip, '8080'], { check: false, input: '' });
    assert.notEqual(inbound.exitCode, 0, 'inbound connection must fail');
    // The host itself reaches its containers (as with Docker's bridge).
    assert.ok((await host.exec('ping', ['-c', '1', '-W', '1', n1.ip], { check: false })).exitCode === 0);
  });

  it('routed: the gateway is on the host, no masquerade, the world reaches containers directly', async () => {
    await create('routednet', '--subnet', '10.31.0.0/24', '-o', 'vlan=31', '-o', 'gateway_mode=routed');
    await runContainer(host, 'o1', 'routednet');
    const o1 = await containerAddress(host, 'o1', 'routednet');
    await cmd('ip', ['-n', wan.ns, 'route', 'add', '10.31.0.0/24', 'via', wan.hostAddress]);
    assert.equal(await tcpSay(host, 'o1', wan.address, 9000), o1.ip, 'the world sees the container address');
    await startHttp(host, 'o1');
    const inbound = await cmd('ip', ['netns', 'exec', wan.ns, 'timeout', '3', 'busybox', 'wget', '-q', '-O', '-', `http://${o1.ip}:8080/hostname`], { check: false });
    assert.equal(inbound.exitCode, 0, `inbound TCP to a routed network works: ${inbound.stderr}`);
    assert.equal((await host.chainRules('nat', 'OVSNET-POSTROUTING')).filter((r) => r.includes('10.31.0.0/24')).length, 0);
  });

  it('keeps networks apart even though their gateways share the host', async () => {
    const o1 = await containerAddress(host, 'o1', 'routednet');
    const n1 = await containerAddress(host, 'n1', 'natnet');
    assert.equal(await ping(host, 'n1', o1.ip), false, 'nat -> routed through the host is dropped');
    assert.equal(await ping(host, 'o1', n1.ip), false, 'routed -> nat through the host is dropped');
    assert.equal(await httpGet(host, 'n1', o1.ip), undefined);
  });

  it('external: a router on the VLAN owns the gateway; the plugin puts nothing on the host', async () => {
    // The router: a namespace on a port of the bridge the plugin did not create.
    const rtr = await host.newNamespace('gw-rtr');
    await host.exec('ip', ['link', 'add', 'name', 'rtr-port', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', rtr]);
    await host.exec('ethtool', ['-K', 'rtr-port', 'tx', 'off']);
    await cmd('ip', ['netns', 'exec', rtr, 'ethtool', '-K', 'eth0', 'tx', 'off']);
    await host.exec('ip', ['link', 'set', 'rtr-port', 'up']);
    await assertUnrouted(['10.32.0.1/24', '203.0.113.7'], 'the router on the VLAN');
    await cmd('ip', ['-n', rtr, 'address', 'add', '10.32.0.1/24', 'dev', 'eth0']);
    await cmd('ip', ['-n', rtr, 'address', 'add', '203.0.113.7/32', 'dev', 'lo']);
    await cmd('ip', ['-n', rtr, 'link', 'set', 'eth0', 'up']);
    await cmd('ip', ['-n', rtr, 'link', 'set', 'lo', 'up']);
    const before = (await audit(host)).gatewayPorts.length;
    await create('extnet', '--subnet', '10.32.0.0/24', '--gateway', '10.32.0.1', '-o', 'vlan=32', '-o', 'gateway_mode=external');
    await host.vsctl(['add-port', 'ovs0', 'rtr-port', 'tag=32']);
    assert.equal((await audit(host)).gatewayPorts.length, before, 'no gateway port on the host');
    await runContainer(host, 'e1', 'extnet');
    assert.match(await routes('e1'), /^default via 10\.32\.0\.1 dev eth0/m);
    assert.ok(await ping(host, 'e1', '10.32.0.1'), 'the router answers on the VLAN');
    assert.ok(await ping(host, 'e1', '203.0.113.7'), 'an address behind the router is reached through the default route');
    const hostAddrs = await host.exec('ip', ['-br', 'address']);
    assert.doesNotMatch(hostAddrs.stdout, /10\.32\.0\./, 'the host holds no address of the network');
  });

  it('isolated: no default route, containers still reach each other', async () => {
    await create('isonet', '--subnet', '10.33.0.0/24', '-o', 'vlan=33', '-o', 'gateway_mode=isolated');
    await runContainer(host, 'i1', 'isonet');
    await runContainer(host, 'i2', 'isonet');
    assert.doesNotMatch(await routes('i1'), /default/);
    assert.ok(await ping(host, 'i1', (await containerAddress(host, 'i2', 'isonet')).ip));
    assert.equal(await tcpSay(host, 'i1', wan.address, 9000), undefined);
    const networks = Object.keys((await inspect(host, 'container', 'i1')).NetworkSettings.Networks);
    assert.deepEqual(networks, ['isonet'], 'no docker_gwbridge attached');
  });

  it('--internal: no route out, even with the gateway on the host', async () => {
    await create('intnet', '--internal', '--subnet', '10.34.0.0/24', '-o', 'vlan=34');
    await runContainer(host, 't1', 'intnet');
    await runContainer(host, 't2', 'intnet');
    assert.doesNotMatch(await routes('t1'), /default/);
    assert.ok(await ping(host, 't1', (await containerAddress(host, 't2', 'intnet')).ip));
    const pid = (await inspect(host, 'container', 't1')).State.Pid;
    await cmd('nsenter', [`--net=/proc/${pid}/ns/net`, 'ip', 'route', 'add', 'default', 'via', '10.34.0.1']);
    assert.equal(await tcpSay(host, 't1', wan.address, 9000), undefined, 'forwarding is dropped even with a hand-made route');
  });

  it('refuses published ports (-p) on a network without a gateway on the host, saying why', async () => {
    const result = await host.docker(['run', '-d', '--name', 'pub', '--net', 'extnet', '-p', '8080:80', 'local/busybox', 'sleep', '1d'], { check: false });
    assert.notEqual(result.exitCode, 0);
    assertPluginSaid(result.stderr, 'NetworkDriver.ProgramExternalConnectivity', "publishing ports (-p, -P) needs the network's gateway on the host (gateway_mode nat or routed): with gateway_mode=external the network has no gateway on the host");
    await host.docker(['rm', '-f', 'pub']);
    assert.equal((await audit(host)).endpoints, 7, 'the refused start left no endpoint');
  });

  it('removes what each mode put on the host, and never the foreign port', async () => {
    await host.docker(['rm', '-f', 'n1', 'o1', 'e1', 'i1', 'i2', 't1', 't2']);
    await host.docker(['network', 'rm', 'natnet', 'routednet', 'extnet', 'isonet', 'intnet']);
    const a = await audit(host);
    assert.deepEqual([a.networks, a.gatewayPorts.length, a.forwardRules, a.natRules, a.pools], [0, 0, 0, 0, 0]);
    const ports = (await host.vsctl(['list-ports', 'ovs0'])).stdout.trim();
    assert.equal(ports, 'rtr-port', 'the router port survives, and with it the bridge');
  });
});
