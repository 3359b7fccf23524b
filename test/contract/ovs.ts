/**
 * What every implementation of the Ovs port must do, run against the
 * in-memory fake (unit tier) and the real OVSDB client on a scratch
 * ovsdb-server and ovs-vswitchd (integration tier), so the fake cannot drift
 * from the real thing: ownership, replacing, refusing, and reading back
 * exactly what was written.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { guardFor, ownedCookies, portCookiePrefix, portFlows } from '../../src/domain/flows.js';
import { endpointPort, gatewayPort, ownedBridge, tunnelPort, uplinkPort } from '../../src/domain/host.js';
import { parseNetworkOptions } from '../../src/domain/options.js';
import type { NetworkRecord } from '../../src/domain/records.js';
import type { Ovs } from '../../src/driver/ports.js';

export interface OvsSubject {
  ovs: Ovs;
  /** A bridge made by someone else. */
  foreignBridge(name: string): Promise<void>;
  /** An internal port made by someone else. */
  foreignPort(bridge: string, name: string): Promise<void>;
  /** A veth (or a stand-in) the port can be made on. */
  device(name: string): Promise<void>;
  /** A flow someone else added to a bridge, with this cookie. */
  foreignFlow(bridge: string, cookie: string): Promise<void>;
  /** Cookies of every flow of a bridge, the plugin's and others'. */
  allCookies(bridge: string): Promise<string[]>;
}

const NET = '1'.repeat(64);
const EP = 'e'.repeat(64);

function record(generic: Record<string, string>): NetworkRecord {
  const spec = parseNetworkOptions(generic, { internal: false, ipv6: false }, { bridge: 'ctbr0' });
  return {
    id: NET,
    spec,
    ipv4: [{ addressSpace: 'local', pool: '10.9.0.0/24', gateway: '10.9.0.1', auxAddresses: {} }],
    ipv6: [],
    gatewayPort: 'ovsgw1111111111',
    localTag: (spec.mode === 'ovn' ? undefined : spec.vlan) ?? 4094,
    mtu: 1400,
    datapath: 'netdev',
    state: 'ready',
    createdAt: new Date(0).toISOString(),
  };
}

/** Registers the contract's tests; `fresh` gives a subject with nothing on it yet. */
export function ovsContract(fresh: () => Promise<OvsSubject>): void {
  it('creates an owned bridge once, and uses an existing one as it is', async () => {
    const { ovs, foreignBridge } = await fresh();
    assert.deepEqual(await ovs.ensureBridge(ownedBridge('ctbr0', 'netdev')), { created: true, datapathType: 'netdev' });
    assert.deepEqual(await ovs.ensureBridge(ownedBridge('ctbr0', 'netdev')), { created: false, datapathType: 'netdev' });
    await foreignBridge('ctfor0');
    assert.equal((await ovs.ensureBridge(ownedBridge('ctfor0', 'netdev'))).created, false);
    const { bridges } = await ovs.snapshot();
    const owned = bridges.find((b) => b.name === 'ctbr0')!;
    assert.deepEqual([owned.datapathType, owned.externalIds['ovsnet-owner'], owned.ports], ['netdev', 'ovsnet', ['ctbr0']]);
    assert.equal(bridges.find((b) => b.name === 'ctfor0')?.externalIds['ovsnet-owner'], undefined);
  });

  it('reads back every port exactly as written: type, tag, trunks, options, protection, MTU, external_ids', async () => {
    const { ovs, device } = await fresh();
    await ovs.ensureBridge(ownedBridge('ctbr0', 'netdev'));
    const vlan = record({ vlan: '860' });
    const overlay = record({ mode: 'vxlan', vni: '77', vlan: '300', peers: '10.99.0.2' });
    const gateway = gatewayPort(vlan as NetworkRecord & { gatewayPort: string });
    const tunnel = tunnelPort(overlay, '10.99.0.2');
    await device('ovseeeeeeeeeeee');
    await device('ctup0');
    const endpoint = { ...endpointPort(vlan, { id: EP, hostIf: 'ovseeeeeeeeeeee', mac: '02:42:0a:09:00:02', address: '10.9.0.2/24', addressIpv6: '' }), interfaceExternalIds: { 'iface-id': 'lsp-1', 'attached-mac': '02:42:0a:09:00:02' } };
    const uplink = uplinkPort('ctbr0', 'ctup0', [0, 100, 200]);
    for (const port of [gateway, tunnel, endpoint, uplink]) await ovs.addPort(port);
    const { ports, bridges } = await ovs.snapshot();
    for (const want of [gateway, tunnel, endpoint, uplink]) {
      const have = ports.find((p) => p.name === want.name);
      assert.ok(have, `${want.name} is read back`);
      assert.deepEqual(
        { bridge: have.bridge, type: have.type, tag: have.tag, trunks: have.trunks, options: have.options, protected: have.protected, mtuRequest: have.mtuRequest, externalIds: have.externalIds, interfaceExternalIds: have.interfaceExternalIds },
        { bridge: want.bridge, type: want.type, tag: want.tag, trunks: want.trunks, options: want.options, protected: want.protected, mtuRequest: want.mtuRequest, externalIds: want.externalIds, interfaceExternalIds: want.interfaceExternalIds },
        want.name,
      );
    }
    assert.deepEqual([...bridges.find((b) => b.name === 'ctbr0')!.ports].sort(), ['ctbr0', gateway.name, tunnel.name, endpoint.name, uplink.name].sort());
  });

  it('lists only owned ports, and never deletes, replaces or changes a foreign one', async () => {
    const { ovs, foreignPort } = await fresh();
    await ovs.ensureBridge(ownedBridge('ctbr0', 'netdev'));
    await foreignPort('ctbr0', 'ctforeign');
    assert.deepEqual((await ovs.snapshot()).ports.map((p) => p.name), []);
    assert.ok((await ovs.snapshot()).bridges.find((b) => b.name === 'ctbr0')!.ports.includes('ctforeign'), 'but the bridge shows it');
    const gateway = { ...gatewayPort(record({ vlan: '5' }) as NetworkRecord & { gatewayPort: string }), name: 'ctforeign' };
    await assert.rejects(ovs.deletePort('ctforeign'), { kind: 'Conflict', code: 'NotOwned' });
    await assert.rejects(ovs.addPort(gateway), { kind: 'Conflict', code: 'NotOwned' });
    await assert.rejects(ovs.updatePort(gateway), { kind: 'Conflict', code: 'NotOwned' });
  });

  it('replaces an owned port of the same name, updates one in place, and deletes it once', async () => {
    const { ovs } = await fresh();
    await ovs.ensureBridge(ownedBridge('ctbr0', 'netdev'));
    const gateway = gatewayPort(record({ vlan: '5' }) as NetworkRecord & { gatewayPort: string });
    await ovs.addPort(gateway);
    await ovs.addPort({ ...gateway, tag: 6 });
    assert.equal((await ovs.snapshot()).ports.find((p) => p.name === gateway.name)?.tag, 6, 'a retried add replaces');
    await ovs.updatePort({ ...gateway, tag: undefined, trunks: [7, 8], mtuRequest: 1300 });
    const updated = (await ovs.snapshot()).ports.find((p) => p.name === gateway.name)!;
    assert.deepEqual([updated.tag, updated.trunks, updated.mtuRequest], [undefined, [7, 8], 1300]);
    assert.equal(await ovs.deletePort(gateway.name), true);
    assert.equal(await ovs.deletePort(gateway.name), false, 'a delete tolerates absence');
  });

  it('refuses a port on a missing bridge, and deletes only a bridge it owns', async () => {
    const { ovs, foreignBridge } = await fresh();
    await assert.rejects(ovs.addPort({ ...gatewayPort(record({}) as NetworkRecord & { gatewayPort: string }), bridge: 'ctnone' }), { kind: 'Conflict', code: 'BridgeMissing' });
    await foreignBridge('ctfor1');
    assert.equal(await ovs.deleteOwnedBridge('ctfor1'), false);
    assert.ok((await ovs.snapshot()).bridges.some((b) => b.name === 'ctfor1'));
    await ovs.ensureBridge(ownedBridge('ctbr1', 'netdev'));
    assert.equal(await ovs.deleteOwnedBridge('ctbr1'), true);
    assert.ok(!(await ovs.snapshot()).bridges.some((b) => b.name === 'ctbr1'));
  });

  it("sets a port's guard flows and meter, reads back only the plugin's, replaces and deletes them by cookie, and never touches another's flow", async () => {
    const { ovs, device, foreignFlow, allCookies } = await fresh();
    await ovs.ensureBridge(ownedBridge('ctbr0', 'netdev'));
    await device('ovseeeeeeeeeeee');
    const network = record({ vlan: '860', rate: '20' });
    const port = endpointPort(network, { id: EP, hostIf: 'ovseeeeeeeeeeee', mac: '02:42:0a:09:00:02', address: '10.9.0.2/24', addressIpv6: 'fd00::2/64' });
    const ofport = await ovs.addPort(port);
    assert.ok(ofport > 0, `ofport ${ofport}`);
    assert.equal(await ovs.ofport(port.name), ofport);
    await foreignFlow('ctbr0', '0x0000000000001234');
    const flows = portFlows('ctbr0', port.name, ofport, port.guard!);
    await ovs.setPortFlows(flows, { before: [portCookiePrefix(port.name)] });
    assert.equal(ovs.expectedFlows('ctbr0'), flows.flows.length, 'it knows how many of its flows the bridge should have');
    assert.equal(await ovs.countFlows('ctbr0', ownedCookies()), flows.flows.length, 'and counts them there');
    let seen = await ovs.flows('ctbr0');
    assert.deepEqual([...seen.cookies].sort(), flows.flows.map((f) => f.cookie).sort(), 'exactly the guard flows, read back by cookie');
    assert.deepEqual(seen.meters.get(ofport), { kbps: 20_000, burstKbit: 5_000 });
    assert.deepEqual([...(await ovs.flowPackets('ctbr0'))].sort(), flows.flows.map((f) => [f.cookie, 0]).sort(), "each of its flows' packets (none yet), and no other flow's");

    // The same port without its IPv6 address and another rate: new flows replace the old.
    const changed = portFlows('ctbr0', port.name, ofport, guardFor({ antiSpoofing: true, allowRa: false, allowDhcpServer: false, rate: { mbit: 5, burstKbit: 1_000 } }, { mac: '02:42:0a:09:00:02', address: '10.9.0.2/24', addressIpv6: '' })!);
    const stale = flows.flows.map((f) => f.cookie).filter((c) => !changed.flows.some((f) => f.cookie === c));
    await ovs.setPortFlows(changed, { after: stale.map((c) => `${c}/-1`) });
    assert.equal(ovs.expectedFlows('ctbr0'), changed.flows.length, 'the replaced ones are not expected any more');
    seen = await ovs.flows('ctbr0');
    assert.deepEqual([...seen.cookies].sort(), changed.flows.map((f) => f.cookie).sort());
    assert.deepEqual(seen.meters.get(ofport), { kbps: 5_000, burstKbit: 1_000 }, 'a meter that exists is changed');

    await ovs.deleteFlows('ctbr0', [portCookiePrefix(port.name)], [ofport]);
    assert.equal(ovs.expectedFlows('ctbr0'), 0);
    seen = await ovs.flows('ctbr0');
    assert.deepEqual([seen.cookies, seen.meters.has(ofport)], [[], false]);
    assert.ok((await allCookies('ctbr0')).includes('0x0000000000001234'), "another's flow stays");
    await ovs.deleteFlows('ctnone', [portCookiePrefix(port.name)], [ofport]);
  });
}
