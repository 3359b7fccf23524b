import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { cookieMatches, portCookiePrefix } from '../../src/domain/flows.js';
import { sparePort } from '../../src/domain/host.js';
import { unavailable } from '../../src/errors.js';
import type { CreateNetworkRequest } from '../../src/protocol/network.js';
import { FakeLinks, FakeNorthbound, FakeOvs } from '../fakes/index.js';
import { SparePairs } from '../../src/driver/spares.js';
import type { NetworkRecord } from '../../src/domain/records.js';
import { silentLogger } from '../../src/log.js';
import { id, world } from './setup.js';

const NET = id('1');
const NET2 = id('2');
const EP = id('e');

const createReq = (networkId = NET, o: { pool?: string; mtu?: string; vlan?: string } = {}): CreateNetworkRequest => {
  const pool = o.pool ?? '10.13.160.0/24';
  return {
    networkId,
    generic: { vlan: o.vlan ?? '860', ...(o.mtu ? { mtu: o.mtu } : {}) },
    ipv6: false,
    internal: false,
    ipv4Data: [{ addressSpace: 'local', pool, gateway: pool.replace('.0/24', '.1/24'), auxAddresses: {} }],
    ipv6Data: [],
  };
};

const endpointReq = (endpointId = EP, address = '10.13.160.2/24') => ({ networkId: NET, endpointId, address, addressIpv6: '', macAddress: '', optionMac: '' });
const OPTIONS = { docker: [], now: Date.now(), graceMs: 0 };

async function until(what: string, check: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !check(); i++) await new Promise((r) => setTimeout(r, 5));
  assert.ok(check(), what);
}

const spareLinks = (links: Map<string, unknown>) => [...links.keys()].filter((n) => /^ov[pq][0-9a-f]{12}$/.test(n)).sort();

describe('veth pairs made ahead of need', () => {
  it('keeps a few per network shape, made with its MTU and offload setting, parked on its bridge', async () => {
    const { network, links, ovs, state } = await world({ sparePairs: 2 });
    await network.createNetwork(createReq());
    await until('two spare pairs', () => network.spares().length === 2);
    for (const { host, peer } of network.spares()) {
      assert.equal(links.links.get(host)?.mtu, 1500);
      assert.ok(links.links.get(host)?.txOff && links.links.get(peer)?.txOff, 'netdev: TX offload off on both ends');
      const port = ovs.ports.get(host);
      assert.equal(port?.bridge, state.networks.get(NET)!.spec.bridge, "its host end is a port of the network's bridge");
      assert.deepEqual([port?.tag, port?.externalIds['ovsnet-role'], port?.externalIds['ovsnet-network']], [4095, 'spare', undefined], 'parked on a VLAN no network has, and nobody\'s');
      assert.ok(!ovs.ports.has(peer), 'the other end is no port');
    }
    await network.createNetwork(createReq(NET2, { pool: '10.13.161.0/24', vlan: '861', mtu: '1400' }));
    await until('two more for the other MTU', () => network.spares().length === 4);
    assert.deepEqual(network.spares().map((p) => links.links.get(p.host)?.mtu).sort(), [1400, 1400, 1500, 1500]);
  });

  it('gives one to a new endpoint, whose Join then makes no veth, and makes another', async () => {
    const { network, links, ovs, state } = await world({ sparePairs: 1 });
    await network.createNetwork(createReq());
    await until('a spare', () => network.spares().length === 1);
    const [spare] = network.spares();
    links.calls.length = 0;
    ovs.calls.length = 0;
    const ofport = await ovs.ofport(spare!.host);
    await network.createEndpoint(endpointReq());
    const record = state.endpoints.get(EP)!;
    assert.deepEqual([record.hostIf, record.peerIf], [spare!.host, spare!.peer], "the endpoint's devices are the spare's");
    await network.join({ networkId: NET, endpointId: EP, sandboxKey: '', options: {} });
    const port = ovs.ports.get(spare!.host);
    assert.deepEqual([port?.tag, port?.externalIds['ovsnet-role'], port?.externalIds['ovsnet-endpoint']], [860, 'endpoint', EP], 'its host end is the tagged port, marked as the endpoint\'s');
    assert.equal(await ovs.ofport(spare!.host), ofport, 'the same port');
    assert.ok(!links.calls.some((c) => c.startsWith(`createVeth ${spare!.host}`)), 'no veth made on the start path');
    assert.ok(!ovs.calls.includes(`addPort ${spare!.host}`), 'no port added on the start path');
    assert.ok(ovs.calls.includes(`setPortFlows ${spare!.host}`), 'its guard flows set');
    await until('a new spare', () => network.spares().length === 1 && network.spares()[0]!.host !== spare!.host);
    await network.deleteEndpoint({ networkId: NET, endpointId: EP });
    await network.retired();
    assert.ok(!links.links.has(spare!.host), 'removed with its endpoint like any other');
  });

  it("guards a taken spare for the OpenFlow number its port has now, and adds its port again when it is gone", async () => {
    const { network, ovs, state } = await world({ sparePairs: 2 });
    await network.createNetwork(createReq());
    await until('two spares', () => network.spares().length === 2);
    const [first, second] = network.spares();
    const bridge = state.networks.get(NET)!.spec.bridge;
    // Renumbered since it was made (the bridge made again, say): the flows follow the number it has now.
    ovs.ofports.set(second!.host, 99);
    await network.createEndpoint(endpointReq());
    await network.join({ networkId: NET, endpointId: EP, sandboxKey: '', options: {} });
    assert.equal(state.endpoints.get(EP)!.hostIf, second!.host);
    // The bridge's own base flow (its normal forwarding) is no port's.
    const flows = [...ovs.flowTables.get(bridge)!.values()].map((f) => f.text).filter((f) => f.includes('in_port='));
    assert.ok(flows.length > 0 && flows.every((f) => f.includes('in_port=99')), `flows for port 99 only: ${flows.join(' | ')}`);
    // Its port deleted behind the plugin's back: Join adds it again rather than failing.
    ovs.ports.delete(first!.host);
    const EP2 = id('f');
    await network.createEndpoint({ ...endpointReq(EP2, '10.13.160.3/24') });
    await network.join({ networkId: NET, endpointId: EP2, sandboxKey: '', options: {} });
    assert.equal(state.endpoints.get(EP2)!.hostIf, first!.host);
    assert.equal(ovs.ports.get(first!.host)?.externalIds['ovsnet-endpoint'], EP2, 'its port is there again, the endpoint\'s');
  });

  it('tries a shape whose bridge is not there yet with one pair at a time, and fills it once one is made', async () => {
    const ovs = new FakeOvs();
    const links = new FakeLinks();
    const spares = new SparePairs({ links, ovs, size: 4, refillDelayMs: 0, log: silentLogger });
    const network = { state: 'ready', mtu: 1500, datapath: 'netdev', spec: { bridge: 'br-int' } } as unknown as NetworkRecord;
    const addPorts = () => ovs.calls.filter((c) => c.startsWith('addPort')).length;
    const filled = async () => until('the fill is over', () => spares.quiet());
    await spares.want([network]);
    await filled();
    assert.equal(addPorts(), 4, 'the first fill tries all four');
    assert.deepEqual([spares.list().length, [...links.links.keys()].length], [0, 0], 'and leaves nothing of them');
    await spares.want([network]);
    await filled();
    assert.equal(addPorts(), 5, 'the next tries one');
    await ovs.ensureBridge({ name: 'br-int', datapath: 'netdev', externalIds: {} } as unknown as Parameters<FakeOvs['ensureBridge']>[0]);
    await spares.want([network]);
    await filled();
    assert.equal(spares.list().length, 1, 'one made while the shape was failing');
    await spares.want([network]);
    await filled();
    assert.equal(spares.list().length, 4, 'then the rest together');
    await spares.stop();
  });

  it('a reconcile pass that saw a taken spare still parked leaves it to Join, which retagged it since', async () => {
    const { network, host } = await world({ sparePairs: 1 });
    await network.createNetwork(createReq());
    await until('a spare', () => network.spares().length === 1);
    await network.createEndpoint(endpointReq());
    // The pass observes the host before Join has retagged the port, and goes on after it has.
    const observe = host.observe.bind(host);
    let joined = false;
    host.observe = async (options) => {
      const seen = await observe(options);
      if (!joined) {
        joined = true;
        await network.join({ networkId: NET, endpointId: EP, sandboxKey: '/var/run/docker/netns/x', options: {} });
      }
      return seen;
    };
    const results = await network.converge(OPTIONS);
    assert.ok(joined);
    assert.deepEqual(results.filter((r) => r.done).map((r) => r.drift.kind), [], 'nothing set back that Join had just made');
    host.observe = observe;
    assert.deepEqual(await network.drift(OPTIONS), [], 'and nothing is amiss');
  });

  it('makes the pair itself when none is ready', async () => {
    const { network, state } = await world({ sparePairs: 0 });
    await network.createNetwork(createReq());
    await network.createEndpoint(endpointReq());
    assert.match(state.endpoints.get(EP)!.hostIf, /^ovs[0-9a-f]{12}$/);
  });

  it('are never drift nor repaired away; a dead process\'s spares are, and a network\'s last removal takes its own', async () => {
    const { network, links, ovs } = await world({ sparePairs: 2 });
    await network.createNetwork(createReq());
    await until('two spares', () => network.spares().length === 2);
    assert.deepEqual(await network.drift(OPTIONS), [], 'spares are no drift');
    // Two left by a process that died (same naming, not held by this one): one parked, one not yet.
    await links.createVeth({ host: 'ovp0123456789ab', peer: 'ovq0123456789ab', mtu: 1500, peerMac: '02:00:00:00:00:01' });
    await links.createVeth({ host: 'ovp0123456789ac', peer: 'ovq0123456789ac', mtu: 1500, peerMac: '02:00:00:00:00:02' });
    const bridge = ovs.ports.get(network.spares()[0]!.host)!.bridge;
    await ovs.addPort(sparePort(bridge, 'ovp0123456789ab'));
    const drift = await network.drift(OPTIONS);
    assert.deepEqual(drift.map((d) => [d.kind, d.subject]).sort(), [
      ['orphan-port', 'ovp0123456789ab'],
      ['orphan-veth', 'ovp0123456789ac'],
      ['orphan-veth', 'ovq0123456789ab'],
      ['orphan-veth', 'ovq0123456789ac'],
    ]);
    await network.converge(OPTIONS);
    assert.deepEqual(spareLinks(links.links), network.spares().flatMap((p) => [p.host, p.peer]).sort(), 'only the live spares are left');
    assert.deepEqual([...ovs.ports.values()].filter((p) => p.externalIds['ovsnet-role'] === 'spare').map((p) => p.name).sort(), network.spares().map((p) => p.host).sort(), 'and their ports');
    await network.deleteNetwork(NET);
    assert.deepEqual(spareLinks(links.links), [], 'none once no network needs them');
    assert.deepEqual([...ovs.ports.keys()], [], 'no port left');
    assert.ok(!ovs.bridges.has(bridge), 'so the bridge the plugin made went too');
    assert.deepEqual(network.spares(), []);
  });

  it('a taken pair goes when its endpoint cannot be made (the northbound database fails the bind)', async () => {
    const nb = new FakeNorthbound();
    const { network, links, ipam, state } = await world({ ovn: { nb }, sparePairs: 1 });
    const pool = await ipam.requestPool({ addressSpace: 'local', pool: '10.60.0.0/24', subPool: '', options: {}, v6: false });
    await ipam.requestAddress({ poolId: pool.PoolID, address: '10.60.0.1', gateway: true });
    await network.createNetwork({ networkId: NET, generic: { mode: 'ovn' }, ipv6: false, internal: false, ipv4Data: [{ addressSpace: 'local', pool: '10.60.0.0/24', gateway: '10.60.0.1/24', auxAddresses: {} }], ipv6Data: [] });
    await until('a spare', () => network.spares().length === 1);
    const [spare] = network.spares();
    const { Address } = await ipam.requestAddress({ poolId: pool.PoolID, address: '', gateway: false });
    nb.down = unavailable('NoQuorum', 'no quorum');
    // A MAC of its own needs the logical port written again: that is what fails.
    await assert.rejects(network.createEndpoint({ networkId: NET, endpointId: EP, address: Address, addressIpv6: '', macAddress: '02:00:00:00:12:34', optionMac: '' }), { code: 'NoQuorum' });
    nb.down = undefined;
    assert.equal(state.endpoints.size, 0, 'no record');
    await until('the pair deleted', () => !links.links.has(spare!.host));
    await until('and another made', () => network.spares().length === 1);
    assert.deepEqual(spareLinks(links.links), network.spares().flatMap((p) => [p.host, p.peer]).sort(), 'no veth without a record or the pool');
  });

  it("deletes an endpoint's flows, port and veth pair after DeleteEndpoint answers, holding them until they are gone", async () => {
    const { network, links, ovs, state } = await world({ sparePairs: 0 });
    await network.createNetwork(createReq());
    await network.createEndpoint(endpointReq());
    await network.join({ networkId: NET, endpointId: EP, sandboxKey: '', options: {} });
    const { hostIf, peerIf } = state.endpoints.get(EP)!;
    const guardFlows = () => [...ovs.flowTables.get('ovs0')!.values()].filter((f) => cookieMatches(f.cookie, portCookiePrefix(hostIf))).length;
    assert.ok(guardFlows() > 0, 'the port is guarded');
    let open!: () => void;
    ovs.deleteGate = new Promise((r) => (open = r));
    ovs.calls.length = 0;
    await network.deleteEndpoint({ networkId: NET, endpointId: EP });
    assert.equal(state.endpoints.size, 0, 'the record is gone');
    await until('its deletion under way', () => ovs.calls.includes(`deletePort ${hostIf}`));
    assert.ok(ovs.ports.has(hostIf) && links.links.has(hostIf) && links.links.has(peerIf), 'the port and the pair are still being deleted');
    assert.ok(network.sparesBusy(), 'which the state view tells');
    assert.deepEqual(await network.drift(OPTIONS), [], 'a port, its flows and a pair being deleted are no drift');
    await network.converge(OPTIONS);
    assert.equal(ovs.calls.filter((c) => c === `deletePort ${hostIf}`).length, 1, 'the reconciler left them to their deletion');
    assert.ok(ovs.calls.indexOf(`deleteFlows ovs0 ${portCookiePrefix(hostIf)}`) >= 0, 'its flows went first');
    assert.ok(ovs.calls.indexOf(`deleteFlows ovs0 ${portCookiePrefix(hostIf)}`) < ovs.calls.indexOf(`deletePort ${hostIf}`), 'before the port, whose number a new port may take');
    open();
    ovs.deleteGate = undefined;
    await network.retired();
    assert.ok(!ovs.ports.has(hostIf) && !links.links.has(hostIf) && !links.links.has(peerIf), 'port and pair deleted');
    assert.equal(guardFlows(), 0, 'and its guard flows');
    assert.ok(!network.sparesBusy(), 'nothing held');
    // A crash in between leaves the pair to the next pass.
    await links.createVeth({ host: hostIf, peer: peerIf, mtu: 1500, peerMac: '02:00:00:00:00:03' });
    assert.deepEqual((await network.drift(OPTIONS)).map((d) => [d.kind, d.subject]).sort(), [['orphan-veth', hostIf], ['orphan-veth', peerIf]].sort());
  });

  it('DeleteNetwork waits for the devices of endpoints deleted just before, and leaves no bridge behind', async () => {
    const { network, links, ovs, state } = await world({ sparePairs: 0 });
    await network.createNetwork(createReq());
    await network.createEndpoint(endpointReq());
    await network.join({ networkId: NET, endpointId: EP, sandboxKey: '', options: {} });
    const { hostIf } = state.endpoints.get(EP)!;
    let open!: () => void;
    links.deleteGate = new Promise((r) => (open = r));
    await network.deleteEndpoint({ networkId: NET, endpointId: EP });
    const deleted = network.deleteNetwork(NET);
    await new Promise((r) => setTimeout(r, 20));
    assert.ok(state.networks.has(NET), 'the network waits');
    open();
    links.deleteGate = undefined;
    await deleted;
    assert.ok(!ovs.ports.has(hostIf) && !links.links.has(hostIf));
    assert.ok(!ovs.bridges.has('ovs0'), 'the bridge went with the network');
  });

  it('are deleted when the plugin stops', async () => {
    const { network, links, ovs } = await world({ sparePairs: 3 });
    await network.createNetwork(createReq());
    await until('three spares', () => network.spares().length === 3);
    await network.stopSpares();
    assert.deepEqual(spareLinks(links.links), []);
    assert.deepEqual([...ovs.ports.values()].filter((p) => p.externalIds['ovsnet-role'] === 'spare'), [], 'nor their ports');
  });
});
