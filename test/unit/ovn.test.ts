/**
 * OVN mode on fakes: hosts share a fake northbound database (each host is a
 * world with its own store, OVS and chassis name).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { unavailable } from '../../src/errors.js';
import { Reconciler } from '../../src/driver/reconcile.js';
import { silentLogger } from '../../src/log.js';
import type { CreateNetworkRequest } from '../../src/protocol/network.js';
import { FakeDocker, FakeNorthbound } from '../fakes/index.js';
import { id, world } from './setup.js';

const NET_A = id('a');
const NET_B = id('b');
const EP = id('e');

/** A host of the OVN network 10.60.0.0/24: its pool and gateway, as dockerd asks before CreateNetwork. */
async function host(nb: FakeNorthbound, chassis: string, o: { gateway?: string; range?: string; generic?: Record<string, string> } = {}) {
  const w = await world({ ovn: { nb, chassis } });
  const pool = await w.ipam.requestPool({ addressSpace: 'local', pool: '10.60.0.0/24', subPool: o.range ?? '', options: {}, v6: false });
  const gateway = o.gateway ?? '10.60.0.1';
  await w.ipam.requestAddress({ poolId: pool.PoolID, address: gateway, gateway: true });
  const req: CreateNetworkRequest = {
    networkId: chassis === 'chassis-a' ? NET_A : NET_B,
    generic: { mode: 'ovn', ...o.generic },
    ipv6: false,
    internal: false,
    ipv4Data: [{ addressSpace: 'local', pool: '10.60.0.0/24', gateway: `${gateway}/24`, auxAddresses: {} }],
    ipv6Data: [],
  };
  return { ...w, poolId: pool.PoolID, req, networkId: req.networkId };
}

describe('OVN mode', () => {
  it('is refused when OVSNET_OVN_NB is not set, saying which setting to give', async () => {
    const { network, state } = await world();
    await assert.rejects(
      network.createNetwork({ networkId: NET_A, generic: { mode: 'ovn' }, ipv6: false, internal: false, ipv4Data: [{ addressSpace: 'local', pool: '10.60.0.0/24', gateway: '10.60.0.1/24', auxAddresses: {} }], ipv6Data: [] }),
      { kind: 'BadRequest', code: 'OvnOff', message: /^mode=ovn is off on this host: set OVSNET_OVN_NB to the northbound database's remotes/ },
    );
    assert.equal(state.networks.size, 0);
  });

  it('makes one logical switch for a subnet, listed with every host that uses it, with the Geneve MTU', async () => {
    const nb = new FakeNorthbound();
    const a = await host(nb, 'chassis-a');
    const b = await host(nb, 'chassis-b');
    await a.network.createNetwork(a.req);
    await b.network.createNetwork(b.req);
    assert.equal(nb.switches.size, 1, 'one switch for the subnet');
    const sw = [...nb.switches.values()][0]!;
    assert.equal(sw.name, 'ovsnet-10.60.0.0_24');
    assert.equal(sw.externalIds['ovsnet-owner'], 'ovsnet');
    assert.equal(sw.externalIds['ovsnet-created-by'], 'host-chassis-a');
    assert.deepEqual([sw.externalIds['ovsnet-host:chassis-a'], sw.externalIds['ovsnet-host:chassis-b']], ['host-chassis-a', 'host-chassis-b']);
    const record = a.state.networks.get(NET_A)!;
    assert.deepEqual(record.ovn, { subnet: '10.60.0.0/24', switchName: 'ovsnet-10.60.0.0_24' });
    assert.equal(record.mtu, 1442, '1500 on the device with the encapsulation address, minus 58 for Geneve');
    assert.equal(record.gatewayPort, undefined, 'nothing on the host holds the gateway');
    assert.deepEqual(await a.network.ovnHosts(), { [NET_A]: ['host-chassis-a', 'host-chassis-b'] });
  });

  it("guards what port security leaves open: the switch's ACLs drop DHCP servers and redirects, the port's flows drop advertisements too; a host that allows otherwise is refused", async () => {
    const nb = new FakeNorthbound();
    const a = await host(nb, 'chassis-a');
    await a.network.createNetwork(a.req);
    const sw = [...nb.switches.values()][0]!;
    assert.deepEqual(sw.guard.map((acl) => [acl.direction, acl.priority, acl.action, acl.match]).sort(), [
      ['from-lport', 32000, 'drop', '(ip4 && udp.dst == 68) || (ip6 && udp.dst == 546)'],
      ['from-lport', 32000, 'drop', '(ip4 && udp.src == 67) || (ip6 && udp.src == 547)'],
      ['from-lport', 32000, 'drop', 'icmp4 && icmp4.type == 5'],
      ['from-lport', 32000, 'drop', 'icmp6 && (icmp6.type == 134 || icmp6.type == 137)'],
    ]);
    const { Address } = await a.ipam.requestAddress({ poolId: a.poolId, address: '', gateway: false });
    await a.network.createEndpoint({ networkId: NET_A, endpointId: EP, address: Address, addressIpv6: '', macAddress: '', optionMac: '' });
    await a.network.join({ networkId: NET_A, endpointId: EP, sandboxKey: '', options: {} });
    const flows = [...a.ovs.flowTables.get('br-int')!.values()].map((f) => f.text);
    for (const m of ['icmp6,icmp_type=134', 'icmp6,icmp_type=137', 'udp,tp_src=67', 'udp6,tp_src=547']) assert.ok(flows.some((f) => f.includes(m) && f.endsWith('actions=drop')), m);
    assert.ok(!flows.some((f) => f.includes('NORMAL')), "nothing passes to NORMAL: what the guard lets through is ovn-controller's");
    assert.ok(flows.includes('table=250,priority=0,actions=drop'), "and the marker whose absence says ovn-controller cleared the bridge");
    // Deleted by hand: doctor reports it, the reconciler puts it back.
    nb.switches.get(sw.uuid)!.guard = [];
    const reconciler = new Reconciler({ state: a.state, network: a.network, ipam: a.ipam, docker: new FakeDocker(), graceMs: 0, log: silentLogger });
    assert.deepEqual((await reconciler.drift(false)).map((d) => d.kind), ['ovn-guard-differs']);
    await reconciler.repair('test');
    assert.equal(nb.switches.get(sw.uuid)!.guard.length, 4);
    const b = await host(nb, 'chassis-b', { generic: { allow_dhcp_server: 'true' } });
    await assert.rejects(b.network.createNetwork(b.req), { kind: 'Conflict', message: /with allow_dhcp_server false; this host asked for true: give the same -o allow_dhcp_server on every host of the network/ });
  });

  it('refuses a host that gives a subnet another gateway, ip-range or name, naming both values and who made it', async () => {
    const nb = new FakeNorthbound();
    const a = await host(nb, 'chassis-a', { range: '10.60.0.0/25' });
    await a.network.createNetwork(a.req);
    const gateway = await host(nb, 'chassis-b', { gateway: '10.60.0.254', range: '10.60.0.0/25' });
    await assert.rejects(gateway.network.createNetwork(gateway.req), {
      kind: 'Conflict',
      message: 'subnet 10.60.0.0/24 is already the OVN network ovsnet-10.60.0.0_24 (made by host host-chassis-a) with the gateway of 10.60.0.0/24 10.60.0.1; this host asked for 10.60.0.254: give the same --gateway on every host of the network',
    });
    const range = await host(nb, 'chassis-c', { range: '10.60.0.128/25' });
    await assert.rejects(range.network.createNetwork(range.req), /with the ip-range of 10\.60\.0\.0\/24 10\.60\.0\.0\/25; this host asked for 10\.60\.0\.128\/25/);
    const name = await host(nb, 'chassis-d', { range: '10.60.0.0/25', generic: { ovn_network: 'web' } });
    await assert.rejects(name.network.createNetwork(name.req), /with the name ovsnet-10\.60\.0\.0_24; this host asked for web: give the same -o ovn_network/);
    assert.equal(gateway.state.networks.size + range.state.networks.size + name.state.networks.size, 0, 'nothing kept');
    assert.deepEqual(Object.keys([...nb.switches.values()][0]!.externalIds).filter((k) => k.startsWith('ovsnet-host:')), ['ovsnet-host:chassis-a']);
  });

  it('holds every address in the northbound database: two hosts never hand out the same, and --ip names the host that holds it', async () => {
    const nb = new FakeNorthbound();
    const a = await host(nb, 'chassis-a');
    const b = await host(nb, 'chassis-b');
    await a.network.createNetwork(a.req);
    await b.network.createNetwork(b.req);
    const given = new Set<string>();
    for (let i = 0; i < 20; i++) {
      for (const h of [a, b]) given.add((await h.ipam.requestAddress({ poolId: h.poolId, address: '', gateway: false })).Address);
    }
    assert.equal(given.size, 40, 'forty distinct addresses');
    assert.ok(![...given].includes('10.60.0.1/24'), 'never the gateway');
    const heldByA = [...a.state.addressesOf(a.poolId).values()].find((r) => r.kind === 'address')!.address;
    await assert.rejects(b.ipam.requestAddress({ poolId: b.poolId, address: heldByA, gateway: false }), {
      kind: 'Conflict',
      message: `address ${heldByA} of subnet 10.60.0.0/24 is held by host host-chassis-a (chassis chassis-a); choose another --ip, or leave --ip out for a free one`,
    });
    const port = nb.named(`ovsnet-10.60.0.0_24-${heldByA}`)!;
    assert.equal(port.externalIds['ovsnet-chassis'], 'chassis-a');
    await a.ipam.releaseAddress({ poolId: a.poolId, address: heldByA });
    assert.equal(nb.named(`ovsnet-10.60.0.0_24-${heldByA}`), undefined, 'released in the database too');
    assert.equal((await b.ipam.requestAddress({ poolId: b.poolId, address: heldByA, gateway: false })).Address, `${heldByA}/24`);
  });

  it("binds an endpoint's port to its logical port, with port security, and answers Join once ovn-controller installed it", async () => {
    const nb = new FakeNorthbound();
    const a = await host(nb, 'chassis-a');
    await a.network.createNetwork(a.req);
    const { Address } = await a.ipam.requestAddress({ poolId: a.poolId, address: '', gateway: false });
    await a.network.createEndpoint({ networkId: NET_A, endpointId: EP, address: Address, addressIpv6: '', macAddress: '', optionMac: '' });
    const ip = Address.split('/')[0]!;
    const lsp = nb.named(`ovsnet-10.60.0.0_24-${ip}`)!;
    const mac = `02:42:0a:3c:00:${Number(ip.split('.')[3]).toString(16).padStart(2, '0')}`;
    assert.deepEqual([lsp.addresses, lsp.portSecurity], [[`${mac} ${ip}`], [`${mac} ${ip}`]], 'bound to the MAC derived from the address when the address was claimed');
    const join = await a.network.join({ networkId: NET_A, endpointId: EP, sandboxKey: '', options: {} });
    assert.deepEqual(join, { InterfaceName: { SrcName: 'ovceeeeeeeeeeee', DstPrefix: 'eth' } }, 'outbound through docker_gwbridge, as for overlays in nat mode');
    const port = a.ovs.ports.get('ovseeeeeeeeeeee')!;
    assert.deepEqual([port.bridge, port.tag, port.interfaceExternalIds], ['br-int', undefined, { 'iface-id': lsp.name, 'attached-mac': mac }]);
    assert.equal(a.links.links.get('ovseeeeeeeeeeee')?.mtu, 1442);
  });

  it('tells how long each Join waited for ovn-controller to install its port (metrics)', async () => {
    const nb = new FakeNorthbound();
    const a = await host(nb, 'chassis-a');
    const waits: number[] = [];
    a.ovn!.onInstalled = (seconds) => waits.push(seconds);
    await a.network.createNetwork(a.req);
    const { Address } = await a.ipam.requestAddress({ poolId: a.poolId, address: '', gateway: false });
    await a.network.createEndpoint({ networkId: NET_A, endpointId: EP, address: Address, addressIpv6: '', macAddress: '', optionMac: '' });
    await a.network.join({ networkId: NET_A, endpointId: EP, sandboxKey: '', options: {} });
    assert.equal(waits.length, 1);
    assert.ok(waits[0]! >= 0 && waits[0]! < 1, `${waits[0]} s`);
  });

  it('binds a MAC the engine set (--mac-address) on its logical port', async () => {
    const nb = new FakeNorthbound();
    const a = await host(nb, 'chassis-a');
    await a.network.createNetwork(a.req);
    const { Address } = await a.ipam.requestAddress({ poolId: a.poolId, address: '', gateway: false });
    await a.network.createEndpoint({ networkId: NET_A, endpointId: EP, address: Address, addressIpv6: '', macAddress: '02:42:aa:bb:cc:dd', optionMac: '' });
    const ip = Address.split('/')[0]!;
    assert.deepEqual(nb.named(`ovsnet-10.60.0.0_24-${ip}`)?.portSecurity, [`02:42:aa:bb:cc:dd ${ip}`]);
  });

  it('fails Join with a clear error when ovn-controller does not install the port in time, and leaves no device', async () => {
    const nb = new FakeNorthbound();
    const a = await host(nb, 'chassis-a');
    a.ovs.autoInstall = false;
    await a.network.createNetwork(a.req);
    const { Address } = await a.ipam.requestAddress({ poolId: a.poolId, address: '', gateway: false });
    await a.network.createEndpoint({ networkId: NET_A, endpointId: EP, address: Address, addressIpv6: '', macAddress: '', optionMac: '' });
    await assert.rejects(a.network.join({ networkId: NET_A, endpointId: EP, sandboxKey: '', options: {} }), {
      kind: 'Unavailable',
      code: 'OvnNotInstalled',
      message: /^ovn-controller on this host did not install logical port ovsnet-10\.60\.0\.0_24-10\.60\.0\.\d+ within 1000 ms: is it running and connected to the southbound database\?/,
    });
    assert.ok(!a.ovs.ports.has('ovseeeeeeeeeeee'), 'the port, which names the logical port, goes before the answer');
    await a.network.retired();
    assert.ok(!a.links.links.has('ovseeeeeeeeeeee'), 'and the pair after it');
  });

  it('the last host to remove its network removes the switch; the others only leave it', async () => {
    const nb = new FakeNorthbound();
    const a = await host(nb, 'chassis-a');
    const b = await host(nb, 'chassis-b');
    await a.network.createNetwork(a.req);
    await b.network.createNetwork(b.req);
    await a.ipam.requestAddress({ poolId: a.poolId, address: '', gateway: false });
    await a.network.deleteNetwork(NET_A);
    const sw = [...nb.switches.values()][0]!;
    assert.deepEqual(Object.keys(sw.externalIds).filter((k) => k.startsWith('ovsnet-host:')), ['ovsnet-host:chassis-b']);
    assert.equal(sw.ports.size, 0, "the leaving host's ports went with it");
    await b.network.deleteNetwork(NET_B);
    assert.equal(nb.switches.size, 0);
  });

  it('fails fast, changing nothing, when the northbound database cannot be asked', async () => {
    const nb = new FakeNorthbound();
    const a = await host(nb, 'chassis-a');
    nb.down = unavailable('NoQuorum', 'the OVN northbound database has no quorum: no member can reach a majority of its cluster');
    await assert.rejects(a.network.createNetwork(a.req), { code: 'NoQuorum' });
    assert.equal(a.state.networks.size, 0);
    nb.down = undefined;
    await a.network.createNetwork(a.req);
    nb.down = unavailable('NoQuorum', 'no quorum');
    await assert.rejects(a.ipam.requestAddress({ poolId: a.poolId, address: '', gateway: false }), { code: 'NoQuorum' });
    assert.equal([...a.state.addressesOf(a.poolId).values()].filter((r) => r.kind === 'address').length, 0, 'no address held without the database');
  });

  it('reconciles with the northbound database: a lost port and a lost listing come back, a stray port of this host goes', async () => {
    const nb = new FakeNorthbound();
    const a = await host(nb, 'chassis-a');
    await a.network.createNetwork(a.req);
    const { Address } = await a.ipam.requestAddress({ poolId: a.poolId, address: '', gateway: false });
    await a.network.createEndpoint({ networkId: NET_A, endpointId: EP, address: Address, addressIpv6: '', macAddress: '', optionMac: '' });
    await a.network.join({ networkId: NET_A, endpointId: EP, sandboxKey: '', options: {} });
    const reconciler = new Reconciler({ state: a.state, network: a.network, ipam: a.ipam, docker: new FakeDocker(), graceMs: 0, log: silentLogger });
    assert.deepEqual((await reconciler.drift(false)).map((d) => d.kind), []);

    const ip = Address.split('/')[0]!;
    const sw = [...nb.switches.values()][0]!;
    const lsp = nb.named(`ovsnet-10.60.0.0_24-${ip}`)!;
    sw.ports.delete(lsp.uuid);
    nb.portRows.delete(lsp.uuid);
    delete sw.externalIds['ovsnet-host:chassis-a'];
    await nb.addPort(sw.uuid, { name: 'ovsnet-10.60.0.0_24-10.60.0.99', addresses: [], portSecurity: [], externalIds: { 'ovsnet-owner': 'ovsnet', 'ovsnet-chassis': 'chassis-a', 'ovsnet-address': '10.60.0.99' } });
    const kinds = (await reconciler.drift(false)).map((d) => d.kind).sort();
    assert.deepEqual(kinds, ['ovn-host-not-listed', 'ovn-port-missing', 'ovn-port-orphan']);
    const changes = await reconciler.repair('test');
    assert.deepEqual(changes, { ovnSwitchesRestored: 1, ovnPortsRestored: 1, ovnPortsRemoved: 1 });
    assert.deepEqual(await reconciler.drift(false), []);
    const back = nb.named(`ovsnet-10.60.0.0_24-${ip}`)!;
    assert.equal(back.portSecurity.length, 1, 'back with its port security');
    // An endpoint with a MAC of its own (--mac-address) is bound again when its port differs.
    await nb.updatePort(back.name, 'chassis-a', { addresses: [], portSecurity: [], externalIds: {} });
    assert.deepEqual((await reconciler.drift(false)).map((d) => d.kind), ['ovn-port-differs']);
    assert.deepEqual(await reconciler.repair('test'), { ovnPortsRepaired: 1 });
    assert.deepEqual(await reconciler.drift(false), []);
  });

  it('removes a stray port of this host only as it was read when found: one claimed again meanwhile stays', async () => {
    const nb = new FakeNorthbound();
    const a = await host(nb, 'chassis-a');
    await a.network.createNetwork(a.req);
    const sw = [...nb.switches.values()][0]!;
    const name = 'ovsnet-10.60.0.0_24-10.60.0.98';
    await nb.addPort(sw.uuid, { name, addresses: [], portSecurity: [], externalIds: { 'ovsnet-owner': 'ovsnet', 'ovsnet-chassis': 'chassis-a', 'ovsnet-address': '10.60.0.98' } });
    const found = nb.named(name)!.externalIds;
    // Between the look that found it stray and the repair, this host claims the address again.
    await nb.updatePort(name, 'chassis-a', { addresses: [], portSecurity: [], externalIds: { 'ovsnet-endpoint': 'e2' } });
    assert.equal(await a.ovn!.repair({ type: 'delete-port', switchUuid: sw.uuid, name, asRead: found }), false);
    assert.ok(nb.named(name), 'the new claim stays');
    assert.equal(await a.ovn!.repair({ type: 'delete-port', switchUuid: sw.uuid, name, asRead: nb.named(name)!.externalIds }), true);
    assert.equal(nb.named(name), undefined);
  });

  it("a named endpoint (Docker 29) gets its last address back only by holding it in the database again; if another host took it, another one", async () => {
    const nb = new FakeNorthbound();
    const a = await host(nb, 'chassis-a');
    const b = await host(nb, 'chassis-b');
    await a.network.createNetwork(a.req);
    await b.network.createNetwork(b.req);
    const first = await a.ipam.requestAddress({ poolId: a.poolId, address: '', gateway: false, endpointName: 'web' });
    const ip = first.Address.split('/')[0]!;
    await a.ipam.releaseAddress({ poolId: a.poolId, address: ip });
    assert.equal(nb.named(`ovsnet-10.60.0.0_24-${ip}`), undefined, 'released in the database');
    const again = await a.ipam.requestAddress({ poolId: a.poolId, address: '', gateway: false, endpointName: 'web' });
    assert.equal(again.Address, first.Address, 'the same address');
    assert.equal(nb.named(`ovsnet-10.60.0.0_24-${ip}`)?.externalIds['ovsnet-chassis'], 'chassis-a', 'held in the database again');
    await a.ipam.releaseAddress({ poolId: a.poolId, address: ip });
    await b.ipam.requestAddress({ poolId: b.poolId, address: ip, gateway: false });
    const third = await a.ipam.requestAddress({ poolId: a.poolId, address: '', gateway: false, endpointName: 'web' });
    assert.notEqual(third.Address, first.Address, 'another host holds it now: another address');
    assert.equal(nb.named(`ovsnet-10.60.0.0_24-${ip}`)?.externalIds['ovsnet-chassis'], 'chassis-b');
  });
});
