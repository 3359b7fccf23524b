/**
 * Issue 2's scenario on a real dockerd and Open vSwitch: two VLAN networks,
 * reachability inside a VLAN, isolation across VLANs (ping and TCP, both
 * ways), the OVS ports and their tags and external_ids, and every lifecycle
 * command leaving nothing behind.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { SimHost } from './harness/sim-host.js';
import {
  assertAccountedFor,
  audit,
  containerAddress,
  containerHostname,
  httpGet,
  inspect,
  ping,
  runContainer,
  startHttp,
  endpointPortName,
  PLUGIN_VETH,
} from './support.js';

describe('VLAN networks end to end', () => {
  let host: SimHost;
  let d: string;

  before(async () => {
    host = await SimHost.start({ name: 'vlan' });
    d = host.driver;
  });
  after(async () => {
    await host?.stop();
  });

  it('creates two VLAN networks and places containers on them', async () => {
    await host.docker(['network', 'create', '-d', d, '--ipam-driver', d, '--subnet', '10.13.160.0/24', '--gateway', '10.13.160.1', '-o', 'vlan=860', 'app860']);
    await host.docker(['network', 'create', '-d', d, '--ipam-driver', d, '--subnet', '10.13.161.0/24', '-o', 'vlan=861', 'app861']);
    await runContainer(host, 'ca', 'app860');
    await runContainer(host, 'cb', 'app860', { ip: '10.13.160.50' });
    await runContainer(host, 'cc', 'app861');
    assert.equal((await containerAddress(host, 'cb', 'app860')).ip, '10.13.160.50');
    for (const c of ['ca', 'cb', 'cc']) await startHttp(host, c);
  });

  it('lets containers on one VLAN reach each other by ping and TCP', async () => {
    const a = await containerAddress(host, 'ca', 'app860');
    assert.ok(await ping(host, 'ca', '10.13.160.50'), 'ca pings cb');
    assert.ok(await ping(host, 'cb', a.ip), 'cb pings ca');
    assert.equal(await httpGet(host, 'ca', '10.13.160.50'), await containerHostname(host, 'cb'));
    assert.equal(await httpGet(host, 'cb', a.ip), await containerHostname(host, 'ca'));
  });

  it('keeps the other VLAN out, both ways, by ping and TCP', async () => {
    const a = await containerAddress(host, 'ca', 'app860');
    const c = await containerAddress(host, 'cc', 'app861');
    for (const target of [a.ip, '10.13.160.50']) {
      assert.equal(await ping(host, 'cc', target), false, `cc must not ping ${target}`);
      assert.equal(await httpGet(host, 'cc', target), undefined, `cc must not connect to ${target}`);
    }
    for (const source of ['ca', 'cb']) {
      assert.equal(await ping(host, source, c.ip), false, `${source} must not ping cc`);
      assert.equal(await httpGet(host, source, c.ip), undefined, `${source} must not connect to cc`);
    }
  });

  it('gives each container one tagged access port naming owner, network and endpoint', async () => {
    const ports = await host.ownedPorts();
    const net860 = (await inspect(host, 'network', 'app860')).Id;
    const net861 = (await inspect(host, 'network', 'app861')).Id;
    for (const [container, network, id, tag] of [['ca', 'app860', net860, 860], ['cb', 'app860', net860, 860], ['cc', 'app861', net861, 861]] as const) {
      const { endpointId } = await containerAddress(host, container, network);
      const mine = ports.filter((p) => p.externalIds['ovsnet-endpoint'] === endpointId);
      assert.equal(mine.length, 1, `${container} has exactly one port`);
      const port = mine[0]!;
      assert.equal(port.tag, tag);
      assert.equal(port.externalIds['ovsnet-owner'], 'ovsnet');
      assert.equal(port.externalIds['ovsnet-network'], id);
      assert.match(port.name, PLUGIN_VETH, 'a veth named for its endpoint, or for the spare pair it took');
    }
    const bridge = await host.vsctl(['get', 'bridge', 'ovs0', 'datapath_type']);
    assert.equal(bridge.stdout.trim(), 'netdev', 'without the kernel module the bridge uses the userspace datapath');
    await assertAccountedFor(host, { endpoints: 3, networks: 2 });
  });

  it('turns TX checksum offload off on both veth ends (userspace datapath)', async () => {
    const { endpointId } = await containerAddress(host, 'ca', 'app860');
    const hostEnd = await host.exec('ethtool', ['-k', await endpointPortName(host, endpointId)]);
    assert.match(hostEnd.stdout, /tx-checksumming: off/);
    const inside = await host.docker(['exec', 'ca', 'cat', '/sys/class/net/eth0/features']).catch(() => undefined);
    const pid = (await inspect(host, 'container', 'ca')).State.Pid;
    const containerEnd = await host.exec('nsenter', [`--net=/proc/${pid}/ns/net`, 'ethtool', '-k', 'eth0']);
    assert.match(containerEnd.stdout, /tx-checksumming: off/, inside?.stdout);
  });

  it('survives docker stop/start with a new endpoint and nothing left of the old one', async () => {
    const before = await containerAddress(host, 'cb', 'app860');
    await host.docker(['stop', '-t', '1', 'cb']);
    await assertAccountedFor(host, { endpoints: 2, networks: 2 });
    await host.docker(['start', 'cb']);
    const after = await containerAddress(host, 'cb', 'app860');
    assert.notEqual(after.endpointId, before.endpointId);
    assert.equal(after.ip, '10.13.160.50', 'a static address comes back');
    await startHttp(host, 'cb');
    assert.ok(await ping(host, 'ca', '10.13.160.50'));
    assert.equal(await httpGet(host, 'ca', '10.13.160.50'), await containerHostname(host, 'cb'));
    await assertAccountedFor(host, { endpoints: 3, networks: 2 });
  });

  it('connects and disconnects a running container to a second network', async () => {
    await host.docker(['network', 'connect', 'app860', 'cc']);
    const c860 = await containerAddress(host, 'cc', 'app860');
    assert.ok(await ping(host, 'cc', '10.13.160.50'), 'cc reaches cb once connected to app860');
    assert.ok(await ping(host, 'ca', c860.ip));
    await assertAccountedFor(host, { endpoints: 4, networks: 2 });
    await host.docker(['network', 'disconnect', 'app860', 'cc']);
    assert.equal(await ping(host, 'cc', '10.13.160.50'), false, 'cc is cut off again after disconnect');
    await assertAccountedFor(host, { endpoints: 3, networks: 2 });
  });

  it('leaves nothing behind after docker rm -f and docker network rm', async () => {
    await host.docker(['rm', '-f', 'ca', 'cb', 'cc']);
    const afterRm = await assertAccountedFor(host, { endpoints: 0, networks: 2 });
    assert.equal(afterRm.gatewayPorts.length, 2, 'gateways stay while their networks exist');
    await host.docker(['network', 'rm', 'app860', 'app861']);
    const empty = await audit(host);
    assert.deepEqual(
      { ...empty },
      { endpointPorts: [], gatewayPorts: [], veths: [], spares: [], endpoints: 0, networks: 0, pools: 0, addresses: {}, forwardRules: 0, natRules: 0, auxAddresses: 0 },
    );
    const bridges = (await host.vsctl(['list-br'])).stdout.trim();
    assert.equal(bridges, '', 'the bridge the plugin created goes with its last network');
  });
});
