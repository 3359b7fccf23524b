import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Reconciler } from '../../src/driver/reconcile.js';
import { silentLogger } from '../../src/log.js';
import type { CreateNetworkRequest } from '../../src/protocol/network.js';
import { FakeDocker } from '../fakes/index.js';
import { id, world } from './setup.js';

const NET = id('1');
const EP = id('e');
const EP2 = id('f');

const createReq = (networkId = NET, pool = '10.13.160.0/24'): CreateNetworkRequest => ({
  networkId,
  generic: { vlan: '860' },
  ipv6: false,
  internal: false,
  ipv4Data: [{ addressSpace: 'local', pool, gateway: pool.replace('.0/24', '.1/24'), auxAddresses: {} }],
  ipv6Data: [],
});

async function setup(options: { grace?: number; now?: () => number } = {}) {
  const w = await world({ now: options.now });
  const docker = new FakeDocker();
  const reconciler = new Reconciler({
    state: w.state,
    network: w.network,
    ipam: w.ipam,
    docker,
    graceMs: options.grace ?? 0,
    log: silentLogger,
    now: options.now,
  });
  return { ...w, docker, reconciler };
}

async function withEndpoint(s: Awaited<ReturnType<typeof setup>>) {
  const pool = await s.ipam.requestPool({ addressSpace: 'local', pool: '10.13.160.0/24', subPool: '', options: {}, v6: false });
  await s.ipam.requestAddress({ poolId: pool.PoolID, address: '10.13.160.1', gateway: true });
  await s.ipam.requestAddress({ poolId: pool.PoolID, address: '10.13.160.2', gateway: false });
  await s.network.createNetwork(createReq());
  await s.network.createEndpoint({ networkId: NET, endpointId: EP, address: '10.13.160.2/24', addressIpv6: '', macAddress: '', optionMac: '' });
  await s.network.join({ networkId: NET, endpointId: EP, sandboxKey: '', options: {} });
  return pool.PoolID;
}

describe('reconciler: local repair', () => {
  it('undoes a network whose creation never finished', async () => {
    const s = await setup();
    await s.network.createNetwork(createReq());
    // As if the plugin had died before CreateNetwork finished.
    await s.state.commit([{ type: 'put', kind: 'network', value: { ...s.state.networks.get(NET)!, state: 'creating' } }]);
    const changes = await s.reconciler.repair('test');
    assert.equal(changes.networksUndone, 1);
    assert.equal(s.state.networks.size, 0);
    assert.equal(s.ovs.ports.size, 0);
    assert.equal(s.ovs.bridges.size, 0);
  });

  it('puts back a gateway port and its address that went missing', async () => {
    const s = await setup();
    await s.network.createNetwork(createReq());
    s.ovs.ports.delete('ovsgw1111111111');
    s.links.links.delete('ovsgw1111111111');
    await s.reconciler.repair('test');
    assert.ok(s.ovs.ports.has('ovsgw1111111111'));
    assert.deepEqual(s.links.links.get('ovsgw1111111111')?.addresses, ['10.13.160.1/24']);
  });

  it('removes ports and veths no record accounts for, and never a foreign port', async () => {
    const s = await setup();
    await withEndpoint(s);
    const owner = { 'ovsnet-owner': 'ovsnet' };
    s.ovs.ports.set('ovs999999999999', { bridge: 'ovs0', name: 'ovs999999999999', type: '', tag: 860, externalIds: { ...owner, 'ovsnet-role': 'endpoint', 'ovsnet-endpoint': id('9') } });
    s.ovs.ports.set('ovsgw2222222222', { bridge: 'ovs0', name: 'ovsgw2222222222', type: 'internal', tag: 5, externalIds: { ...owner, 'ovsnet-role': 'gateway', 'ovsnet-network': id('2') } });
    s.ovs.ports.set('foreign0', { bridge: 'ovs0', name: 'foreign0', type: 'internal', tag: undefined, externalIds: {} });
    s.links.links.set('ovc888888888888', { kind: 'veth', mtu: 1500, addresses: [], txOff: false });
    s.links.links.set('ovs777777777777', { kind: 'veth', mtu: 1500, addresses: [], txOff: false });
    const changes = await s.reconciler.repair('test');
    assert.deepEqual(changes, { portsRemoved: 1, vethsRemoved: 2 });
    assert.ok(s.ovs.ports.has('ovsgw2222222222'), 'a port of an unknown network waits for Docker to say it is debris');
    assert.ok(s.links.links.has('ovseeeeeeeeeeee'), 'the live endpoint keeps its veth');
  });

  it('removes a port of a network Docker lacks too, but never one of a network Docker has (lost state)', async () => {
    const s = await setup();
    await withEndpoint(s);
    s.docker.add(NET, '10.13.160.0/24', { [EP]: '10.13.160.2' });
    const owner = { 'ovsnet-owner': 'ovsnet' };
    s.ovs.ports.set('ovsgw2222222222', { bridge: 'ovs0', name: 'ovsgw2222222222', type: 'internal', tag: 5, externalIds: { ...owner, 'ovsnet-role': 'gateway', 'ovsnet-network': id('2') } });
    s.ovs.ports.set('ovsgw3333333333', { bridge: 'ovs0', name: 'ovsgw3333333333', type: 'internal', tag: 6, externalIds: { ...owner, 'ovsnet-role': 'gateway', 'ovsnet-network': id('3') } });
    s.docker.add(id('3'), '10.60.0.0/24');
    const lost = (await s.reconciler.drift(true)).find((d) => d.kind === 'network-unknown-to-plugin');
    assert.equal(lost?.port, 'ovsgw3333333333');
    assert.match(lost!.fix, /OVSNET_STATE_DIR/);
    await s.reconciler.reconcile('test');
    assert.ok(!s.ovs.ports.has('ovsgw2222222222'), 'debris of a network nobody has is removed');
    assert.ok(s.ovs.ports.has('ovsgw3333333333'), 'a network Docker has keeps its port');
  });

  it('adds back the port of an endpoint whose veth is still there', async () => {
    const s = await setup();
    await withEndpoint(s);
    s.ovs.ports.delete('ovseeeeeeeeeeee');
    assert.deepEqual(await s.reconciler.repair('test'), { portsRestored: 1 });
    assert.equal(s.ovs.ports.get('ovseeeeeeeeeeee')?.tag, 860);
  });
});

describe('reconciler: with Docker', () => {
  it('removes networks, endpoints, pools and addresses Docker does not hold', async () => {
    const s = await setup();
    const poolId = await withEndpoint(s);
    await s.network.createEndpoint({ networkId: NET, endpointId: EP2, address: '10.13.160.3/24', addressIpv6: '', macAddress: '', optionMac: '' });
    await s.ipam.requestAddress({ poolId, address: '10.13.160.3', gateway: false });
    await s.ipam.requestAddress({ poolId, address: '10.13.160.99', gateway: false }); // answered, but Docker never used it
    const orphanPool = await s.ipam.requestPool({ addressSpace: 'local', pool: '10.50.0.0/24', subPool: '', options: {}, v6: false });
    s.docker.add(NET, '10.13.160.0/24', { [EP]: '10.13.160.2' }); // EP2 is unknown to Docker
    const changes = await s.reconciler.reconcile('test');
    assert.deepEqual(changes, { endpointsRemoved: 1, poolsReleased: 1, addressesReleased: 1 }, "the endpoint's address stays while the endpoint does");
    assert.deepEqual([...s.state.endpoints.keys()], [EP]);
    assert.ok(!s.state.pools.has(orphanPool.PoolID));
    assert.deepEqual(await s.reconciler.reconcile('test'), { addressesReleased: 1 }, 'and goes with the next pass');
    assert.deepEqual([...s.state.addressesOf(poolId).keys()].sort(), ['10.13.160.1', '10.13.160.2'], 'the gateway and the live address stay');
    s.docker.list.length = 0;
    assert.deepEqual(await s.reconciler.reconcile('test'), { networksRemoved: 1, poolsReleased: 1 }, 'then the network Docker removed, and its pool in the same pass');
    assert.equal(s.state.networks.size, 0);
    assert.equal(s.state.pools.size, 0);
    assert.equal(s.ovs.ports.size, 0);
  });

  it('keeps aux addresses Docker shows', async () => {
    const s = await setup();
    const poolId = await withEndpoint(s);
    await s.ipam.requestAddress({ poolId, address: '10.13.160.5', gateway: false });
    s.docker.add(NET, '10.13.160.0/24', { [EP]: '10.13.160.2' }, ['10.13.160.5']);
    assert.deepEqual(await s.reconciler.reconcile('test'), {});
  });

  it('leaves young records alone: an operation may still be in flight', async () => {
    let now = Date.now();
    const s = await setup({ grace: 60_000, now: () => now });
    await withEndpoint(s);
    assert.deepEqual(await s.reconciler.reconcile('test'), {}, 'Docker does not know the network yet, but it is young');
    now += 61_000;
    assert.equal((await s.reconciler.reconcile('test')).networksRemoved, 1);
  });

  it('only repairs when Docker cannot be asked', async () => {
    const s = await setup();
    await withEndpoint(s);
    s.docker.down = true;
    assert.deepEqual(await s.reconciler.reconcile('test'), {});
    assert.equal(s.state.networks.size, 1);
  });

  it('survives a pass that cannot finish (OVSDB down) and reports it instead of throwing', async () => {
    const s = await setup();
    await withEndpoint(s);
    s.ovs.snapshot = async () => {
      throw new Error('cannot reach OVSDB');
    };
    assert.deepEqual(await s.reconciler.run('test', true), {});
  });

  it('never runs two passes at once, and coalesces the waiting ones', async () => {
    const s = await setup();
    await withEndpoint(s);
    s.docker.add(NET, '10.13.160.0/24', { [EP]: '10.13.160.2' });
    const results = await Promise.all([s.reconciler.run('a', true), s.reconciler.run('b', true), s.reconciler.run('c', false)]);
    assert.equal(results.length, 3);
    assert.equal(s.state.endpoints.size, 1);
    assert.equal(results[1], results[2], 'the requests made while a pass ran share the one pass that served them, and its changes');
    // What went missing while a pass ran is repaired by that pass or the next, and the changes say so.
    const first = s.reconciler.run('d', false);
    s.ovs.bridges.delete('ovs0');
    const [d, e, f] = await Promise.all([first, s.reconciler.run('e', false), s.reconciler.run('f', false)]);
    assert.equal(e, f);
    assert.ok((d.bridgesRestored ?? 0) + (e.bridgesRestored ?? 0) >= 1, `one of the two passes made the bridge again, and said so: ${JSON.stringify([d, e])}`);
  });
});

describe('flow watch', () => {
  it('tells a loss again when the flows go again after its repair, before any check saw them whole', async () => {
    const s = await setup();
    await withEndpoint(s);
    s.ovs.watched = ['ovs0'];
    const table = s.ovs.flowTables.get('ovs0')!;
    const written = new Map(table);
    assert.ok(written.size > 2, 'the port is guarded and the bridge has its base flow');
    s.ovs.expected.set('ovs0', written.size);
    const portFlows = [...table.keys()].filter((k) => k.includes('in_port='));
    let told = 0;
    const second = new Promise<void>((resolve) => {
      s.host.onFlowsLost = async () => {
        told += 1;
        if (told === 2) resolve();
        for (const [k, v] of written) table.set(k, v); // the repair puts them back,
        if (told === 1) for (const k of portFlows) table.delete(k); // and the port's guard is deleted again at once
        return true;
      };
    });
    table.clear();
    s.host.startFlowWatch(5);
    try {
      await Promise.race([second, new Promise((_, reject) => setTimeout(() => reject(new Error(`told ${told} time(s), not twice`)), 2_000))]);
    } finally {
      s.host.stopFlowWatch();
    }
    assert.equal(told, 2);
  });

  it('resolves a trigger with what the pass it asked for changed', async () => {
    const s = await setup();
    await withEndpoint(s);
    s.ovs.bridges.delete('ovs0');
    const changes = await s.reconciler.trigger('the bridge went');
    assert.ok(Object.keys(changes).length > 0, `the pass repaired something: ${JSON.stringify(changes)}`);
  });
});

describe('reconciler: drift for metrics', () => {
  it('tells what a pass with Docker leaves differing, only when asked and only after such a pass', async () => {
    const s = await setup();
    await withEndpoint(s);
    s.docker.add(NET, '10.13.160.0/24', { [EP]: '10.13.160.2' });
    // A port of a network Docker has and the records lack (a wrong state directory): reported, never repaired.
    const other = id('9');
    const port = s.ovs.ports.get(s.state.endpoints.get(EP)!.hostIf)!;
    s.ovs.ports.set('ovs9999999999999', { ...port, name: 'ovs9999999999999', externalIds: { ...port.externalIds, 'ovsnet-network': other, 'ovsnet-endpoint': id('8') } });
    s.docker.add(other, '10.14.0.0/24');
    const told: string[][] = [];
    await s.reconciler.run('periodic', true);
    assert.equal(told.length, 0, 'nothing is looked for unless asked');
    s.reconciler.onDrift = (drift) => told.push(drift.map((d) => `${d.kind} ${d.subject}`));
    await s.reconciler.run('event', false);
    assert.equal(told.length, 0, 'a local repair pass does not look');
    await s.reconciler.run('periodic', true);
    assert.deepEqual(told, [['network-unknown-to-plugin ovs9999999999999']]);
    s.ovs.ports.delete('ovs9999999999999');
    await s.reconciler.run('periodic', true);
    assert.deepEqual(told.at(-1), [], 'and nothing once it is gone');
  });
});
