import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { CreateNetworkRequest } from '../../src/protocol/network.js';
import { MemoryStore } from '../fakes/index.js';
import { id, world } from './setup.js';

const NET = id('1');
const NET2 = id('2');
const EP = id('e');
const EP2 = id('f');

function createReq(o: Partial<CreateNetworkRequest> & { pool?: string; gateway?: string } = {}): CreateNetworkRequest {
  const pool = o.pool ?? '10.13.160.0/24';
  return {
    networkId: NET,
    generic: { vlan: '860' },
    ipv6: false,
    internal: false,
    ipv4Data: [{ addressSpace: 'local', pool, gateway: o.gateway ?? '10.13.160.1/24', auxAddresses: {} }],
    ipv6Data: [],
    ...o,
  };
}

const endpointReq = (o: Partial<{ endpointId: string; networkId: string; address: string; macAddress: string }> = {}) => ({
  networkId: NET,
  endpointId: EP,
  address: '10.13.160.2/24',
  addressIpv6: '',
  macAddress: '',
  optionMac: '',
  ...o,
});

describe('network driver: networks', () => {
  it('is a driver of local data scope whose networks reach other hosts (connectivity scope global, as swarm needs)', async () => {
    const { network } = await world();
    assert.deepEqual(network.capabilities(), { Scope: 'local', ConnectivityScope: 'global' });
  });

  it("takes a swarm network's id, and a swarm network it refuses is drift until it is made (doctor says it while swarm keeps trying)", async () => {
    const { network, ovs } = await world();
    const SWARM = 'q8ztcl8r4x0xw1kmvfj5o2e7n';
    await assert.rejects(network.createNetwork(createReq({ networkId: SWARM, generic: { vlan: '860', colour: 'blue' } })), /unknown option colour=blue/);
    await assert.rejects(network.createNetwork(createReq({ networkId: NET2, generic: { colour: 'blue' } })), /unknown option colour=blue/);
    const refused = (await network.drift({ docker: undefined, now: Date.now(), graceMs: 0 })).filter((d) => d.kind === 'swarm-network-refused');
    assert.deepEqual(refused.map((d) => d.networkId), [SWARM], "only the swarm network's: Docker itself reports a refusal of docker network create");
    assert.match(refused[0]!.detail, /could not be made on this host when a task came .*: unknown option colour=blue/);
    await network.createNetwork(createReq({ networkId: SWARM }));
    assert.equal(ovs.ports.get('ovsgwq8ztcl8r4x')?.externalIds['ovsnet-network'], SWARM, "the gateway port is named after the swarm id's start");
    assert.deepEqual((await network.drift({ docker: undefined, now: Date.now(), graceMs: 0 })).filter((d) => d.kind === 'swarm-network-refused'), []);
  });

  it('creates the bridge, a tagged gateway port with the gateway address, forwarding and NAT', async () => {
    const { network, ovs, links, sysctl, firewall, state } = await world();
    await network.createNetwork(createReq());
    const bridge = ovs.bridges.get('ovs0');
    assert.equal(bridge?.datapathType, 'netdev');
    assert.equal(bridge?.externalIds['ovsnet-owner'], 'ovsnet');
    const gw = ovs.ports.get('ovsgw1111111111');
    assert.equal(gw?.type, 'internal');
    assert.equal(gw?.tag, 860);
    assert.equal(gw?.externalIds['ovsnet-network'], NET);
    assert.deepEqual(links.links.get('ovsgw1111111111')?.addresses, ['10.13.160.1/24']);
    assert.ok(links.links.get('ovsgw1111111111')?.txOff, 'netdev: checksum offload off on the gateway port too');
    assert.ok(sysctl.forwarding);
    assert.equal(firewall.current?.v4.nat.length, 1);
    assert.equal(state.networks.get(NET)?.state, 'ready');
  });

  it('puts nothing on the host for external and isolated networks', async () => {
    for (const mode of ['external', 'isolated']) {
      const { network, ovs, sysctl, firewall } = await world();
      await network.createNetwork(createReq({ generic: { vlan: '5', gateway_mode: mode } }));
      assert.deepEqual([...ovs.ports.keys()], []);
      assert.equal(sysctl.forwarding, false);
      const read = await firewall.read();
      assert.deepEqual({ ...read, raw4: [], raw6: [] }, { filter4: [], nat4: [], dnat4: [], isolate4: [], input4: [], raw4: [], filter6: [], nat6: [], dnat6: [], isolate6: [], input6: [], raw6: [], jumps: true }, 'no rule but the one that keeps veths from the host');
      assert.equal(read.raw4?.length, 1);
    }
  });

  it('rejects bad options and keeps nothing', async () => {
    const { network, ovs, store } = await world();
    await assert.rejects(network.createNetwork(createReq({ generic: { vlan: '5000' } })), { kind: 'BadRequest' });
    await assert.rejects(network.createNetwork(createReq({ generic: { color: 'red' } })), /unknown option color=red/);
    assert.equal(store.data.size, 0);
    assert.equal(ovs.bridges.size, 0);
  });

  it("refuses a subnet that overlaps the host's own routes or holds its default gateway, naming the route, unless allow_host_overlap; its own networks' routes do not count", async () => {
    const { network, links, ovs, state } = await world();
    links.hostRouteDetails = [
      { dst: '10.13.0.0/16', dev: 'eth1' },
      { dst: '0.0.0.0/0', isDefault: true, via: '10.14.0.1', dev: 'eth2' },
      { dst: 'fe80::/64', dev: 'eth1' },
    ];
    await assert.rejects(network.createNetwork(createReq()), {
      kind: 'Conflict',
      code: 'HostRouteOverlap',
      message: /^subnet 10\.13\.160\.0\/24 overlaps the host's route 10\.13\.0\.0\/16 dev eth1: .* or give -o allow_host_overlap=true if it is meant/,
    });
    await assert.rejects(network.createNetwork(createReq({ pool: '10.14.0.0/24', gateway: '10.14.0.254/24' })), { message: /^subnet 10\.14\.0\.0\/24 holds the host's default gateway \(route default via 10\.14\.0\.1 dev eth2\)/ });
    assert.equal(state.networks.size, 0);
    assert.equal(ovs.bridges.size, 0, 'nothing made');
    await network.createNetwork(createReq({ generic: { vlan: '860', allow_host_overlap: 'true' } }));
    assert.equal(state.networks.get(NET)?.spec.allowHostOverlap, true);
    // A route through one of the plugin's own gateway ports is its network's: another network may be compared with it by admission, not refused here.
    links.hostRouteDetails = [{ dst: '10.15.0.0/24', dev: state.networks.get(NET)!.gatewayPort! }];
    await network.createNetwork(createReq({ networkId: id('9'), pool: '10.15.0.0/24', gateway: '10.15.0.1/24', generic: { vlan: '861' } }));
    await assert.rejects(network.createNetwork(createReq({ networkId: id('8'), generic: { vlan: '862', allow_host_overlap: 'yes' } })), { message: /invalid value "yes" for option allow_host_overlap: valid values are true and false/ });
  });

  it('refuses a bridge name that is an existing non-OVS interface', async () => {
    const { network, links } = await world();
    links.links.set('eth0', { kind: 'device', mtu: 1500, addresses: ['192.168.0.2/24'], txOff: false });
    await assert.rejects(network.createNetwork(createReq({ generic: { bridge: 'eth0' } })), {
      message: 'invalid value "eth0" for option bridge: a network interface with that name exists and is not an OVS bridge',
    });
  });

  it('refuses a second network on the same pool, and shields the pool from the rollback', async () => {
    const { network, ipam, state } = await world();
    const p = await ipam.requestPool({ addressSpace: 'local', pool: '10.13.160.0/24', subPool: '', options: {}, v6: false });
    await ipam.requestAddress({ poolId: p.PoolID, address: '10.13.160.1', gateway: true });
    await network.createNetwork(createReq());
    await ipam.requestPool({ addressSpace: 'local', pool: '10.13.160.0/24', subPool: '', options: {}, v6: false });
    await ipam.requestAddress({ poolId: p.PoolID, address: '10.13.160.1', gateway: true });
    await assert.rejects(network.createNetwork(createReq({ networkId: NET2 })), {
      kind: 'Conflict',
      message: 'subnet 10.13.160.0/24 is already used by network 111111111111; choose another --subnet',
    });
    await ipam.releaseAddress({ poolId: p.PoolID, address: '10.13.160.1' });
    await ipam.releasePool(p.PoolID);
    assert.ok(state.pools.has(p.PoolID));
    assert.ok(state.addressesOf(p.PoolID).has('10.13.160.1'));
  });

  it('refuses overlapping subnets that would both be routed on the host', async () => {
    const { network } = await world();
    await network.createNetwork(createReq({ pool: '10.13.0.0/16', gateway: '10.13.0.1/16' }));
    await assert.rejects(network.createNetwork(createReq({ networkId: NET2, generic: { vlan: '861' } })), /overlaps subnet 10.13.0.0\/16 of network 111111111111 \(both would be routed on this host\)/);
    // the same subnet on another VLAN is fine when no gateway is on the host
    await network.createNetwork(createReq({ networkId: id('3'), generic: { vlan: '862', gateway_mode: 'external' }, ipv4Data: [{ addressSpace: 'LocalDefault', pool: '10.14.0.0/24', gateway: '10.14.0.1/24', auxAddresses: {} }] }));
    await network.createNetwork(createReq({ networkId: id('4'), generic: { vlan: '863', gateway_mode: 'external' }, ipv4Data: [{ addressSpace: 'LocalDefault', pool: '10.14.0.0/24', gateway: '10.14.0.1/24', auxAddresses: {} }] }));
  });

  it('rolls back everything when setting up the gateway fails', async () => {
    const { network, ovs, state, firewall } = await world();
    ovs.failAddPort.add('ovsgw1111111111');
    await assert.rejects(network.createNetwork(createReq()), /could not add port/);
    assert.equal(state.networks.size, 0);
    assert.equal(ovs.bridges.size, 0, 'the bridge it created is removed again');
    assert.deepEqual((await firewall.read()).nat4, [], 'no NAT rule left');
  });

  it('is idempotent for a repeated CreateNetwork and refuses a different one with the same id', async () => {
    const { network } = await world();
    await network.createNetwork(createReq());
    await network.createNetwork(createReq());
    await assert.rejects(network.createNetwork(createReq({ generic: { vlan: '861' } })), /already exists with a different configuration/);
  });

  it('deletes everything of a network, and the bridge once unused', async () => {
    const { network, ovs, firewall, state } = await world();
    await network.createNetwork(createReq());
    await network.createNetwork(createReq({ networkId: NET2, pool: '10.13.161.0/24', gateway: '10.13.161.1/24', generic: { vlan: '861' } }));
    await network.deleteNetwork(NET);
    assert.ok(ovs.bridges.has('ovs0'), 'still used by the other network');
    await network.deleteNetwork(NET2);
    await network.deleteNetwork(NET2);
    assert.equal(ovs.ports.size, 0);
    assert.equal(ovs.bridges.size, 0);
    assert.deepEqual(firewall.current?.v4, { filter: [], nat: [], dnat: [], isolate: [], input: [], raw: [] });
    assert.equal(state.networks.size, 0);
  });

  it('never deletes a bridge it did not create', async () => {
    const { network, ovs } = await world();
    ovs.bridges.set('ovs0', { name: 'ovs0', datapathType: 'netdev', externalIds: {}, ports: ['ovs0'] });
    await network.createNetwork(createReq());
    await network.deleteNetwork(NET);
    assert.ok(ovs.bridges.has('ovs0'));
  });
});

describe('network driver: endpoints', () => {
  async function withNetwork(generic: Record<string, string> = { vlan: '860' }) {
    const w = await world();
    await w.network.createNetwork(createReq({ generic }));
    return w;
  }

  it('derives the MAC from the address and returns it when Docker gave none', async () => {
    const { network } = await withNetwork();
    assert.deepEqual(await network.createEndpoint(endpointReq()), { Interface: { MacAddress: '02:42:0a:0d:a0:02' } });
    assert.deepEqual(await network.createEndpoint(endpointReq({ endpointId: EP2, address: '10.13.160.3/24', macAddress: '02:aa:bb:cc:dd:ee' })), {});
  });

  it('joins: a veth pair with checksum offload off, a tagged owned port, and the gateway', async () => {
    const { network, ovs, links, state } = await withNetwork();
    await network.createEndpoint(endpointReq());
    const answer = await network.join({ networkId: NET, endpointId: EP, sandboxKey: '/var/run/docker/netns/x', options: {} });
    assert.deepEqual(answer, { InterfaceName: { SrcName: 'ovceeeeeeeeeeee', DstPrefix: 'eth' }, Gateway: '10.13.160.1' });
    const port = ovs.ports.get('ovseeeeeeeeeeee');
    assert.equal(port?.tag, 860);
    assert.deepEqual(port?.externalIds, { 'ovsnet-owner': 'ovsnet', 'ovsnet-network': NET, 'ovsnet-endpoint': EP, 'ovsnet-role': 'endpoint' });
    assert.equal(links.links.get('ovceeeeeeeeeeee')?.mac, '02:42:0a:0d:a0:02');
    assert.ok(links.links.get('ovseeeeeeeeeeee')?.txOff && links.links.get('ovceeeeeeeeeeee')?.txOff);
    assert.equal(state.endpoints.get(EP)?.joined, true);
  });

  it('gives no default route on isolated and internal networks, and no docker_gwbridge either', async () => {
    for (const generic of [{ gateway_mode: 'isolated' }]) {
      const { network } = await withNetwork(generic);
      await network.createEndpoint(endpointReq());
      const answer = await network.join({ networkId: NET, endpointId: EP, sandboxKey: '', options: {} });
      assert.deepEqual(answer, { InterfaceName: { SrcName: 'ovceeeeeeeeeeee', DstPrefix: 'eth' }, DisableGatewayService: true });
    }
    const w = await world();
    await w.network.createNetwork(createReq({ internal: true }));
    await w.network.createEndpoint(endpointReq());
    assert.equal((await w.network.join({ networkId: NET, endpointId: EP, sandboxKey: '', options: {} })).Gateway, undefined);
  });

  it('hands the external router as gateway in external mode', async () => {
    const { network } = await withNetwork({ gateway_mode: 'external' });
    await network.createEndpoint(endpointReq());
    assert.equal((await network.join({ networkId: NET, endpointId: EP, sandboxKey: '', options: {} })).Gateway, '10.13.160.1');
  });

  it("learns the link-local address the container's interface really has, pins the port to it, and keeps the guard on meanwhile", async () => {
    const { network, state, ovs, links } = await world();
    await network.createNetwork(createReq({ ipv6: true, ipv6Data: [{ addressSpace: 'local', pool: 'fd13::/64', gateway: 'fd13::1/64', auxAddresses: {} }] }));
    await network.createEndpoint({ ...endpointReq(), addressIpv6: 'fd13::2/64' });
    const mac = state.endpoints.get(EP)!.mac;
    links.sandboxes.set('/run/test/netns/abc', new Map());
    await network.join({ networkId: NET, endpointId: EP, sandboxKey: '/run/test/netns/abc', options: {} });
    const v6Sources = () => [...ovs.flowTables.get('ovs0')!.values()].map((f) => /,ipv6,ipv6_src=([^,]+)/.exec(f.text)?.[1]).filter(Boolean).sort();
    assert.deepEqual(v6Sources(), ['fd13::2', 'fe80::42:aff:fe0d:a002'], 'until the interface is seen: the link-local address of its MAC');
    // The interface shows up in the container's namespace with another link-local address (addr_gen_mode).
    links.sandboxes.get('/run/test/netns/abc')!.set(mac, 'fe80::1:2:3:4');
    for (let i = 0; i < 50 && state.endpoints.get(EP)!.linkLocal === undefined; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(state.endpoints.get(EP)!.linkLocal, 'fe80::1:2:3:4', 'kept on its record');
    assert.deepEqual(v6Sources(), ['fd13::2', 'fe80::1:2:3:4'], 'the port now admits that one, and no other');
  });

  it('reports a device failure at Join and cleans up what was made', async () => {
    const { network, ovs, links } = await withNetwork();
    ovs.failAddPort.add('ovseeeeeeeeeeee');
    await network.createEndpoint(endpointReq());
    await assert.rejects(network.join({ networkId: NET, endpointId: EP, sandboxKey: '', options: {} }), /could not add port/);
    await network.retired();
    assert.ok(!links.links.has('ovseeeeeeeeeeee') && !links.links.has('ovceeeeeeeeeeee'));
    assert.ok(!ovs.ports.has('ovseeeeeeeeeeee'));
  });

  it('makes the devices right after CreateEndpoint, and DeleteEndpoint without Join removes them', async () => {
    const { network, ovs, links, state } = await withNetwork();
    await network.createEndpoint(endpointReq());
    await network.deleteEndpoint({ networkId: NET, endpointId: EP });
    await network.retired();
    assert.ok(!ovs.ports.has('ovseeeeeeeeeeee') && !links.links.has('ovseeeeeeeeeeee'));
    assert.ok(links.calls.some((c) => c.startsWith('createVeth ovseeeeeeeeeeee ovceeeeeeeeeeee')), 'the devices were made');
    assert.equal(state.endpoints.size, 0);
  });

  it('keeps devices on Leave (Docker moves the container end back) and removes them on DeleteEndpoint', async () => {
    const { network, ovs, links, state } = await withNetwork();
    await network.createEndpoint(endpointReq());
    await network.join({ networkId: NET, endpointId: EP, sandboxKey: '', options: {} });
    await network.leave({ networkId: NET, endpointId: EP });
    assert.ok(ovs.ports.has('ovseeeeeeeeeeee'));
    await network.deleteEndpoint({ networkId: NET, endpointId: EP });
    assert.equal(state.endpoints.size, 0);
    await network.retired();
    assert.ok(!ovs.ports.has('ovseeeeeeeeeeee') && !links.links.has('ovseeeeeeeeeeee'));
    await network.deleteEndpoint({ networkId: NET, endpointId: EP });
  });

  it('refuses an address another endpoint holds and shields it from the rollback', async () => {
    const { network, ipam, state } = await world();
    const p = await ipam.requestPool({ addressSpace: 'local', pool: '10.13.160.0/24', subPool: '', options: {}, v6: false });
    await network.createNetwork(createReq());
    await ipam.requestAddress({ poolId: p.PoolID, address: '10.13.160.50', gateway: false });
    await network.createEndpoint(endpointReq({ address: '10.13.160.50/24' }));
    await ipam.requestAddress({ poolId: p.PoolID, address: '10.13.160.50', gateway: false });
    await assert.rejects(network.createEndpoint(endpointReq({ endpointId: EP2, address: '10.13.160.50/24' })), {
      kind: 'Conflict',
      message: 'address 10.13.160.50 is already in use on this network (by another container, endpoint eeeeeeeeeeee)',
    });
    await ipam.releaseAddress({ poolId: p.PoolID, address: '10.13.160.50' });
    assert.ok(state.addressesOf(p.PoolID).has('10.13.160.50'), 'the first container keeps its address');
  });

  it('retires an endpoint whose veth is gone when its address is asked for again', async () => {
    const { network, ipam, state, links, ovs } = await world();
    const p = await ipam.requestPool({ addressSpace: 'local', pool: '10.13.160.0/24', subPool: '', options: {}, v6: false });
    await network.createNetwork(createReq());
    await ipam.requestAddress({ poolId: p.PoolID, address: '10.13.160.50', gateway: false });
    await network.createEndpoint(endpointReq({ address: '10.13.160.50/24' }));
    await network.join({ networkId: NET, endpointId: EP, sandboxKey: '/var/run/docker/netns/x', options: {} });
    // A live container keeps its address.
    await assert.rejects(network.createEndpoint(endpointReq({ endpointId: EP2, address: '10.13.160.50/24' })), { kind: 'Conflict' });
    // Its namespace goes without Docker saying so (dockerd killed, power cut): the pair goes with it.
    links.links.delete('ovseeeeeeeeeeee');
    links.links.delete('ovceeeeeeeeeeee');
    await network.createEndpoint(endpointReq({ endpointId: EP2, address: '10.13.160.50/24' }));
    assert.deepEqual([...state.endpoints.keys()], [EP2]);
    await network.retired();
    assert.ok(!ovs.ports.has('ovseeeeeeeeeeee'), 'the dead endpoint\'s port is gone');
    assert.ok(state.addressesOf(p.PoolID).has('10.13.160.50'), 'the address stays held, now for the new endpoint');
  });

  it('retires an endpoint left unjoined by a dockerd that lost it, but not one whose devices are being made', async () => {
    const store = new MemoryStore();
    const first = await world({ store });
    await first.ipam.requestPool({ addressSpace: 'local', pool: '10.13.160.0/24', subPool: '', options: {}, v6: false });
    await first.network.createNetwork(createReq());
    await first.network.createEndpoint(endpointReq({ address: '10.13.160.50/24' }));
    await assert.rejects(first.network.createEndpoint(endpointReq({ endpointId: EP2, address: '10.13.160.50/24' })), { kind: 'Conflict' });
    // The plugin and the host restart: the record stays, the devices are gone.
    const { network, state, links } = await world({ store });
    assert.ok(!links.links.has('ovseeeeeeeeeeee'));
    await network.createEndpoint(endpointReq({ endpointId: EP2, address: '10.13.160.50/24' }));
    assert.deepEqual([...state.endpoints.keys()], [EP2]);
  });

  it('refuses an endpoint address outside the network', async () => {
    const { network } = await withNetwork();
    await assert.rejects(network.createEndpoint(endpointReq({ address: '10.99.0.2/24' })), /must be an IPv4 address with prefix length inside one of the network's subnets \(10.13.160.0\/24\)/);
  });

  it('answers unknown networks and endpoints with NotFound', async () => {
    const { network } = await world();
    await assert.rejects(network.createEndpoint(endpointReq()), { kind: 'NotFound' });
    assert.throws(() => network.endpointOperInfo({ networkId: NET, endpointId: EP }), { kind: 'NotFound' });
    await network.leave({ networkId: NET, endpointId: EP });
  });

  it('remembers endpoints across a restart', async () => {
    const store = new MemoryStore();
    const first = await world({ store });
    await first.network.createNetwork(createReq());
    await first.network.createEndpoint(endpointReq());
    const second = await world({ store });
    assert.deepEqual(second.network.endpointOperInfo({ networkId: NET, endpointId: EP }).Value, {
      bridge: 'ovs0',
      vlan: 860,
      port: 'ovseeeeeeeeeeee',
      mac: '02:42:0a:0d:a0:02',
      address: '10.13.160.2/24',
      addressIpv6: '',
    });
  });

  it('removes endpoints left on a deleted network', async () => {
    const { network, ovs, state } = await withNetwork();
    await network.createEndpoint(endpointReq());
    await network.join({ networkId: NET, endpointId: EP, sandboxKey: '', options: {} });
    await network.deleteNetwork(NET);
    assert.equal(state.endpoints.size, 0);
    assert.equal(ovs.ports.size, 0);
  });
});
