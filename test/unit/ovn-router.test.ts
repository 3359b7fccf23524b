/** OVN routers on fakes: made with the first network that names one, SNAT on the way out, removed with the last network. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { OvnExternal } from '../../src/domain/ovn-router.js';
import type { CreateNetworkRequest } from '../../src/protocol/network.js';
import { Reconciler } from '../../src/driver/reconcile.js';
import { silentLogger } from '../../src/log.js';
import { FakeDocker, FakeNorthbound } from '../fakes/index.js';
import { id, world } from './setup.js';

const EXTERNAL: OvnExternal = { physnet: 'physnet', subnet: '192.0.2.0/24', nexthop: '192.0.2.1', gateways: [{ chassis: 'chassis-a', priority: 20 }, { chassis: 'chassis-b', priority: 10 }] };

async function net(w: Awaited<ReturnType<typeof world>>, o: { id: string; subnet: string; generic: Record<string, string>; internal?: boolean }) {
  const gateway = o.subnet.replace('.0/24', '.1');
  const pool = await w.ipam.requestPool({ addressSpace: 'local', pool: o.subnet, subPool: '', options: {}, v6: false });
  await w.ipam.requestAddress({ poolId: pool.PoolID, address: gateway, gateway: true });
  const req: CreateNetworkRequest = { networkId: o.id, generic: { mode: 'ovn', ...o.generic }, ipv6: false, internal: o.internal ?? false, ipv4Data: [{ addressSpace: 'local', pool: o.subnet, gateway: `${gateway}/24`, auxAddresses: {} }], ipv6Data: [] };
  await w.network.createNetwork(req);
  return { poolId: pool.PoolID };
}

describe('OVN routers', () => {
  it('connects networks to a router made by the first of them, with SNAT to its outside address, and gives containers the router as gateway', async () => {
    const nb = new FakeNorthbound();
    const w = await world({ ovn: { nb, external: EXTERNAL } });
    const a = await net(w, { id: id('1'), subnet: '10.70.0.0/24', generic: { ovn_router: 'r1' } });
    await net(w, { id: id('2'), subnet: '10.71.0.0/24', generic: { ovn_router: 'r1', gateway_mode: 'routed' } });
    const router = await nb.findRouter('r1');
    assert.ok(router);
    const gateway = router.ports.find((p) => p.name === 'ovsnet-gw-r1')!;
    assert.match(gateway.networks[0]!, /^192\.0\.2\.\d+\/24$/);
    const outside = gateway.networks[0]!.split('/')[0]!;
    assert.deepEqual(router.ports.map((p) => [p.name, p.networks]).sort(), [
      ['ovsnet-gw-r1', [`${outside}/24`]],
      ['ovsnet-rp-10.70.0.0_24', ['10.70.0.1/24']],
      ['ovsnet-rp-10.71.0.0_24', ['10.71.0.1/24']],
    ]);
    assert.deepEqual(router.nat.map((n) => [n.type, n.logicalIp, n.externalIp]), [['snat', '10.70.0.0/24', outside]], 'SNAT for the nat network only');
    assert.ok(nb.named(`ovsnet-ext-physnet-${outside}`), "the outside switch's port holds the router's address");
    assert.ok(nb.named('ovsnet-localnet-physnet'));
    const { Address } = await w.ipam.requestAddress({ poolId: a.poolId, address: '', gateway: false });
    await w.network.createEndpoint({ networkId: id('1'), endpointId: id('e'), address: Address, addressIpv6: '', macAddress: '', optionMac: '' });
    const join = await w.network.join({ networkId: id('1'), endpointId: id('e'), sandboxKey: '', options: {} });
    assert.deepEqual(join, { InterfaceName: { SrcName: 'ovceeeeeeeeeeee', DstPrefix: 'eth' }, Gateway: '10.70.0.1' }, 'the router is the gateway: no docker_gwbridge');
  });

  it('takes outside addresses from the range given for routers only', async () => {
    const nb = new FakeNorthbound();
    const w = await world({ ovn: { nb, external: { ...EXTERNAL, routerRange: '192.0.2.100-192.0.2.101' } } });
    await net(w, { id: id('1'), subnet: '10.70.0.0/24', generic: { ovn_router: 'r1' } });
    await net(w, { id: id('2'), subnet: '10.72.0.0/24', generic: { ovn_router: 'r2' } });
    const outside = async (name: string) => (await nb.findRouter(name))!.ports.find((p) => p.name === `ovsnet-gw-${name}`)!.networks[0];
    assert.deepEqual([await outside('r1'), await outside('r2')].sort(), ['192.0.2.100/24', '192.0.2.101/24']);
    await assert.rejects(net(w, { id: id('3'), subnet: '10.73.0.0/24', generic: { ovn_router: 'r3' } }), {
      code: 'OvnNoOutsideAddress',
      message: "no free address left for OVN router r3 in 192.0.2.100-192.0.2.101 (OVSNET_OVN_EXTERNAL): every one is another router's or the next hop",
    });
  });

  it('gives two routers different outside addresses, and removes a router with its last network', async () => {
    const nb = new FakeNorthbound();
    const w = await world({ ovn: { nb, external: EXTERNAL } });
    await net(w, { id: id('1'), subnet: '10.70.0.0/24', generic: { ovn_router: 'r1' } });
    await net(w, { id: id('2'), subnet: '10.72.0.0/24', generic: { ovn_router: 'r2' } });
    const outside = async (name: string) => (await nb.findRouter(name))!.ports.find((p) => p.name === `ovsnet-gw-${name}`)!.networks[0];
    assert.notEqual(await outside('r1'), await outside('r2'));
    await w.network.deleteNetwork(id('1'));
    assert.equal(await nb.findRouter('r1'), undefined);
    assert.ok(await nb.findRouter('r2'));
    await w.network.deleteNetwork(id('2'));
    assert.equal(nb.routers.size, 0);
    assert.equal([...nb.portRows.values()].filter((p) => p.name.startsWith('ovsnet-ext-')).length, 0, 'the outside addresses are free again');
  });

  it('refuses what a router cannot do, saying what to give', async () => {
    const nb = new FakeNorthbound();
    const w = await world({ ovn: { nb } });
    await assert.rejects(net(w, { id: id('1'), subnet: '10.70.0.0/24', generic: { ovn_router: 'r1' } }), { code: 'OvnNoExternal', message: /^gateway_mode=nat on OVN router r1 needs a way out: set OVSNET_OVN_EXTERNAL/ });
    await assert.rejects(net(w, { id: id('2'), subnet: '10.71.0.0/24', generic: { ovn_router: 'r1', gateway_mode: 'isolated' } }), /option ovn_router does not go with gateway_mode=isolated: an isolated network has no router port/);
    await assert.rejects(net(w, { id: id('3'), subnet: '10.73.0.0/24', generic: { gateway_mode: 'routed' } }), /routed needs -o ovn_router/);
    await net(w, { id: id('4'), subnet: '10.74.0.0/24', generic: { ovn_router: 'r1', gateway_mode: 'routed' } });
    assert.equal((await nb.findRouter('r1'))?.ports.length, 1, 'a router between networks only: no way out');
    const other = await world({ ovn: { nb, chassis: 'chassis-b', external: EXTERNAL } });
    await assert.rejects(net(other, { id: id('5'), subnet: '10.75.0.0/24', generic: { ovn_router: 'r1', gateway_mode: 'routed' } }), { code: 'OvnRouterDiffers', message: /^OVN router r1 was made with OVSNET_OVN_EXTERNAL\/OVSNET_OVN_GATEWAYS \(none\); this host has physnet,192\.0\.2\.0\/24,192\.0\.2\.1 with gateways chassis-a:20,chassis-b:10: give every host the same$/ });
  });

  it('--internal on a router: its containers reach the router\'s other networks and nothing beyond (no SNAT, a drop policy)', async () => {
    const nb = new FakeNorthbound();
    const w = await world({ ovn: { nb, external: EXTERNAL } });
    const a = await net(w, { id: id('1'), subnet: '10.70.0.0/24', generic: { ovn_router: 'r1' }, internal: true });
    await net(w, { id: id('2'), subnet: '10.71.0.0/24', generic: { ovn_router: 'r1' } });
    const router = nb.routers.get((await nb.findRouter('r1'))!.uuid)!;
    assert.deepEqual(router.nat.map((n) => n.logicalIp), ['10.71.0.0/24'], 'SNAT only for the network that goes out');
    assert.deepEqual(router.policies.map((p) => [p.priority, p.match, p.action]), [
      [1001, 'ip4.dst == 10.70.0.0/24', 'allow'],
      [1000, 'ip4.src == 10.70.0.0/24', 'drop'],
      [1001, 'ip4.dst == 10.71.0.0/24', 'allow'],
    ]);
    const { Address } = await w.ipam.requestAddress({ poolId: a.poolId, address: '', gateway: false });
    await w.network.createEndpoint({ networkId: id('1'), endpointId: id('e'), address: Address, addressIpv6: '', macAddress: '', optionMac: '' });
    assert.deepEqual(await w.network.join({ networkId: id('1'), endpointId: id('e'), sandboxKey: '', options: {} }), { InterfaceName: { SrcName: 'ovceeeeeeeeeeee', DstPrefix: 'eth' }, Gateway: '10.70.0.1' }, 'the router is its gateway');
    await w.network.deleteEndpoint({ networkId: id('1'), endpointId: id('e') });
    await w.network.deleteNetwork(id('1'));
    assert.deepEqual(router.policies.map((p) => p.match), ['ip4.dst == 10.71.0.0/24'], "a network's policies go with it");
  });

  it('doctor reports a network off its router, a piece of the connection missing, or the router gone, and reconcile puts each back', async () => {
    const nb = new FakeNorthbound();
    const w = await world({ ovn: { nb, external: EXTERNAL } });
    await net(w, { id: id('1'), subnet: '10.70.0.0/24', generic: { ovn_router: 'r1' } });
    const reconciler = new Reconciler({ state: w.state, network: w.network, ipam: w.ipam, docker: new FakeDocker(), graceMs: 0, log: silentLogger });
    assert.deepEqual(await reconciler.drift(false), []);
    const router = nb.routers.get((await nb.findRouter('r1'))!.uuid)!;
    router.ports = router.ports.filter((p) => p.name !== 'ovsnet-rp-10.70.0.0_24');
    assert.deepEqual((await reconciler.drift(false)).map((d) => [d.kind, d.subject, d.detail]), [['ovn-router-missing', 'r1', `network ${id('1').slice(0, 12)} is not connected to its OVN router r1`]]);
    await reconciler.repair('test');
    assert.deepEqual(await reconciler.drift(false), []);
    assert.ok((await nb.findRouter('r1'))!.ports.some((p) => p.name === 'ovsnet-rp-10.70.0.0_24'));

    router.nat = [];
    router.policies = [];
    assert.deepEqual((await reconciler.drift(false)).map((d) => [d.kind, d.detail]), [['ovn-router-differs', `the connection of network ${id('1').slice(0, 12)} to its OVN router r1 lacks SNAT of 10.70.0.0/24, 1 router policies`]]);
    await reconciler.repair('test');
    assert.deepEqual(await reconciler.drift(false), []);
    assert.equal(router.nat.length, 1);

    // The router's way out lost (its gateway port deleted by hand).
    router.ports = router.ports.filter((p) => p.name !== 'ovsnet-gw-r1');
    assert.deepEqual((await reconciler.drift(false)).map((d) => [d.kind, d.detail]), [['ovn-router-differs', 'OVN router r1 has no way out: its gateway port to physnet is missing']]);

    nb.routers.clear();
    nb.groups.clear();
    assert.deepEqual((await reconciler.drift(false)).map((d) => d.kind), ['ovn-router-missing']);
    await reconciler.repair('test');
    assert.deepEqual(await reconciler.drift(false), []);
    assert.equal((await nb.findRouter('r1'))!.ports.length, 2, 'made again, with its way out');
  });
});
