/**
 * The desired host and the one diff against the observed host: ports are
 * compared by everything the plugin sets, every difference carries the
 * command that fixes it, and a scoped diff stays inside its networks.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { diffHost, scopeOf } from '../../src/domain/host-diff.js';
import { LAST_REPAIRS } from '../../src/domain/repairs.js';
import { baseFlows, cookieMatches, guardFor, linkLocalOf, portCookiePrefix, portFlows } from '../../src/domain/flows.js';
import { type DesiredPort, type ObservedHost, type ObservedPort, desiredHost, endpointPort, gatewayPort, tunnelPort } from '../../src/domain/host.js';
import { parseNetworkOptions } from '../../src/domain/options.js';
import type { EndpointRecord, NetworkRecord } from '../../src/domain/records.js';
import { firewallRules } from '../../src/domain/firewall.js';

const id = (c: string) => c.repeat(64).slice(0, 64);
const NOW = Date.parse('2026-12-01T12:00:00Z');
const LONG_AGO = '2026-12-01T11:00:00.000Z';

function network(o: { id?: string; generic?: Record<string, string>; state?: 'ready' | 'creating'; localTag?: number } = {}): NetworkRecord {
  const netId = o.id ?? id('1');
  const spec = parseNetworkOptions(o.generic ?? { vlan: '860' }, { internal: false, ipv6: false }, { bridge: 'ovs0' });
  return {
    id: netId,
    spec,
    ipv4: [{ addressSpace: 'local', pool: '10.13.160.0/24', gateway: '10.13.160.1', auxAddresses: {} }],
    ipv6: [],
    gatewayPort: spec.mode === 'vlan' ? `ovsgw${netId.slice(0, 10)}` : undefined,
    localTag: o.localTag ?? (spec.mode === 'ovn' ? undefined : spec.vlan) ?? (spec.mode === 'vlan' ? undefined : 4094),
    mtu: 1500,
    datapath: 'netdev',
    state: o.state ?? 'ready',
    createdAt: LONG_AGO,
  };
}

function endpoint(o: Partial<EndpointRecord> = {}): EndpointRecord {
  const epId = o.id ?? id('e');
  return {
    id: epId,
    networkId: id('1'),
    address: '10.13.160.2/24',
    addressIpv6: '',
    mac: '02:42:0a:0d:a0:02',
    hostIf: `ovs${epId.slice(0, 12)}`,
    peerIf: `ovc${epId.slice(0, 12)}`,
    joined: true,
    sandboxKey: '',
    createdAt: LONG_AGO,
    ...o,
  };
}

const observedPort = (p: DesiredPort, changes: Partial<ObservedPort> = {}): ObservedPort => ({ ...p, ofport: 1, error: undefined, ...changes });

/** A host where everything the records call for is in place. */
function healthy(networks: NetworkRecord[], endpoints: EndpointRecord[]): { observed: ObservedHost; ports: Map<string, ObservedPort> } {
  const desired = desiredHost(networks, endpoints, { datapath: 'netdev' });
  const ports = new Map([...desired.ports.values()].map((p) => [p.name, observedPort(p)]));
  const links = new Map<string, { kind: string; mtu: number; up: boolean }>();
  const addresses = new Map<string, string[]>();
  for (const e of endpoints) {
    links.set(e.hostIf, { kind: 'veth', mtu: 1500, up: true });
    links.set(e.peerIf, { kind: 'veth', mtu: 1500, up: true });
  }
  for (const g of desired.gateways.values()) {
    links.set(g.port, { kind: 'openvswitch', mtu: g.mtu, up: true });
    addresses.set(g.port, [...g.addresses]);
  }
  const text = (rules: readonly (readonly string[])[]) => rules.map((r) => r.join(' '));
  const rules = firewallRules(networks);
  return {
    ports,
    observed: {
      bridges: new Map([['ovs0', { name: 'ovs0', datapathType: 'netdev', failMode: 'secure', externalIds: { 'ovsnet-owner': 'ovsnet' }, ports: ['ovs0', ...ports.keys()] }]]),
      ports,
      links,
      addresses,
      firewall: {
        filter4: text(rules.v4.filter), nat4: text(rules.v4.nat), dnat4: text(rules.v4.dnat), isolate4: text(rules.v4.isolate), input4: text(rules.v4.input), raw4: text(rules.v4.raw),
        filter6: text(rules.v6.filter), nat6: text(rules.v6.nat), dnat6: text(rules.v6.dnat), isolate6: text(rules.v6.isolate), input6: text(rules.v6.input), raw6: text(rules.v6.raw),
        jumps: true,
      },
      ipv4Forwarding: true,
      routerAdvice: new Map([...desired.gateways.keys()].map((port) => [port, { acceptRa: false, acceptRedirects: false }])),
    },
  };
}

function diff(networks: NetworkRecord[], endpoints: EndpointRecord[], observed: ObservedHost, extra: Partial<Parameters<typeof diffHost>[2]> = {}) {
  const desired = desiredHost(networks.filter((n) => n.state === 'ready'), endpoints, { datapath: 'netdev' });
  return diffHost(desired, observed, { records: { networks, endpoints }, now: NOW, graceMs: 60_000, ...extra });
}

describe('desired host', () => {
  it('builds every port with its external_ids in one place', () => {
    const vlan = network();
    const ep = endpoint();
    assert.deepEqual(endpointPort(vlan, ep).externalIds, { 'ovsnet-owner': 'ovsnet', 'ovsnet-network': vlan.id, 'ovsnet-endpoint': ep.id, 'ovsnet-role': 'endpoint' });
    assert.deepEqual(gatewayPort(vlan as NetworkRecord & { gatewayPort: string }).externalIds, { 'ovsnet-owner': 'ovsnet', 'ovsnet-network': vlan.id, 'ovsnet-role': 'gateway' });
    const overlay = network({ id: id('2'), generic: { mode: 'vxlan', vni: '9', peers: '10.0.0.2' } });
    assert.deepEqual(tunnelPort(overlay, '10.0.0.2').externalIds, { 'ovsnet-owner': 'ovsnet', 'ovsnet-network': overlay.id, 'ovsnet-role': 'tunnel', 'ovsnet-peer': '10.0.0.2' });
  });

  it('trunks an uplink with the tags of every VLAN network that names it', () => {
    const a = network({ generic: { vlan: '100', uplink: 'eth1' } });
    const b = network({ id: id('2'), generic: { uplink: 'eth1' } });
    const uplink = desiredHost([a, b], [], { datapath: 'netdev' }).ports.get('eth1')!;
    assert.deepEqual(uplink.trunks, [0, 100]);
    assert.equal(uplink.role, 'uplink');
  });
});

describe('host diff', () => {
  it('finds nothing on a healthy host', () => {
    const nets = [network()];
    const eps = [endpoint()];
    assert.deepEqual(diff(nets, eps, healthy(nets, eps).observed), []);
  });

  it('reports a port whose tag, trunks, options, protection or MTU changed, with the ovs-vsctl that sets it back', () => {
    const vlan = network();
    const overlay = network({ id: id('2'), generic: { mode: 'vxlan', vni: '9', peers: '10.0.0.2' }, localTag: 4094 });
    const nets = [vlan, overlay];
    const eps = [endpoint()];
    const { observed, ports } = healthy(nets, eps);
    const ep = ports.get(endpoint().hostIf)!;
    ports.set(ep.name, { ...ep, tag: 999 });
    const tunnel = [...ports.values()].find((p) => p.type === 'vxlan')!;
    ports.set(tunnel.name, { ...tunnel, options: { ...tunnel.options, remote_ip: '10.0.0.9' }, protected: false });
    const gw = ports.get(vlan.gatewayPort!)!;
    ports.set(gw.name, { ...gw, mtuRequest: 9000, trunks: [5] });
    const found = diff(nets, eps, observed);
    const byPort = new Map(found.map((d) => [d.drift.subject, d]));
    assert.deepEqual(found.map((d) => d.drift.kind), ['port-differs', 'port-differs', 'port-differs']);
    assert.equal(byPort.get(ep.name)!.drift.fix, `ovs-vsctl set port ${ep.name} tag=860`);
    assert.equal(byPort.get(ep.name)!.endpointId, endpoint().id, 'an endpoint port is repaired under its endpoint lock');
    assert.equal(byPort.get(tunnel.name)!.drift.fix, `ovs-vsctl set port ${tunnel.name} protected=true -- set interface ${tunnel.name} options:remote_ip=10.0.0.2`);
    assert.equal(byPort.get(gw.name)!.drift.fix, `ovs-vsctl clear port ${gw.name} trunks -- set interface ${gw.name} mtu_request=1500`);
    assert.deepEqual(found.map((d) => d.repairs.map((r) => r.type)), [['update-port'], ['update-port'], ['update-port']]);
  });

  it('makes a port on the wrong bridge or of the wrong type again', () => {
    const nets = [network()];
    const { observed, ports } = healthy(nets, []);
    const gw = ports.get(nets[0]!.gatewayPort!)!;
    ports.set(gw.name, { ...gw, type: 'vxlan' });
    const [item] = diff(nets, [], observed);
    assert.equal(item?.drift.kind, 'port-differs');
    assert.equal(item?.drift.fix, 'ovsnet reconcile');
    assert.deepEqual(item?.repairs.map((r) => r.type), ['add-port']);
  });

  it('reports gateway addresses missing or extra, and a gateway link that is down or has the wrong MTU', () => {
    const nets = [network()];
    const { observed } = healthy(nets, []);
    const port = nets[0]!.gatewayPort!;
    (observed.addresses as Map<string, string[]>).set(port, ['10.99.0.1/24']);
    (observed.links as Map<string, { kind: string; mtu: number; up: boolean }>).set(port, { kind: 'openvswitch', mtu: 1400, up: false });
    const found = diff(nets, [], observed);
    assert.deepEqual(found.map((d) => [d.drift.kind, d.drift.fix]), [
      ['gateway-address-missing', `ip address add 10.13.160.1/24 dev ${port} && ip link set ${port} up`],
      ['gateway-address-extra', `ip address del 10.99.0.1/24 dev ${port}`],
      ['gateway-link-differs', `ip link set dev ${port} mtu 1500 up`],
    ]);
    assert.ok(found.every((d) => d.repairs[0]?.type === 'configure-gateway'));
  });

  it('leaves ports of a network being created alone, and asks Docker before calling a port of an unknown network debris', () => {
    const ready = network();
    const creating = network({ id: id('2'), generic: { vlan: '5' }, state: 'creating' });
    const { observed: both, ports } = healthy([ready, creating], []);
    const observed = { ...both, firewall: healthy([ready], []).observed.firewall }; // a network being created has no rules yet
    const unknown = gatewayPort({ ...network({ id: id('3'), generic: { vlan: '6' } }), gatewayPort: 'ovsgw3333333333' });
    ports.set(unknown.name, observedPort(unknown));
    assert.deepEqual(diff([ready, creating], [], observed), [], 'without Docker, a port of an unknown network is left alone');
    const known = diff([ready, creating], [], observed, { docker: [{ id: id('3'), name: 'theirs', subnets: [], auxAddresses: [], endpoints: new Map() }] });
    assert.deepEqual(known.map((d) => d.drift.kind), ['network-unknown-to-plugin']);
    const gone = diff([ready, creating], [], observed, { docker: [] });
    assert.deepEqual(gone.map((d) => [d.drift.kind, d.drift.fix]), [['orphan-port', 'ovs-vsctl --if-exists del-port ovsgw3333333333']]);
  });

  it('keeps a scoped diff to its networks: their ports, their bridge, what they share', () => {
    const a = network();
    const b = network({ id: id('2'), generic: { vlan: '861' } });
    const { observed, ports } = healthy([a, b], []);
    ports.delete(b.gatewayPort!);
    (observed.bridges.get('ovs0')!.ports as string[]).splice(0);
    // Removing `a`: its port is debris, b's missing gateway port is none of this diff's business.
    const desired = desiredHost([b], [], { datapath: 'netdev' });
    const found = diffHost(desired, observed, { records: { networks: [b], endpoints: [] }, scope: scopeOf([a]), now: NOW, graceMs: 0 });
    assert.deepEqual(found.map((d) => [d.drift.kind, d.drift.subject]), [
      ['orphan-port', a.gatewayPort],
      ['firewall-drift', `ovsnet:${a.id.slice(0, 12)}`],
      ['firewall-drift', `ovsnet:${a.id.slice(0, 12)}`],
      ['firewall-drift', `ovsnet:${a.id.slice(0, 12)}`],
    ]);
  });

  it('removes a bridge the plugin made once nothing is left on it, never a foreign one', () => {
    const { observed } = healthy([], []);
    const bridges = observed.bridges as Map<string, ObservedHost['bridges'] extends ReadonlyMap<string, infer B> ? B : never>;
    bridges.set('br-foreign', { name: 'br-foreign', datapathType: 'netdev', failMode: '', externalIds: {}, ports: ['br-foreign'] });
    bridges.set('ovs0', { name: 'ovs0', datapathType: 'netdev', failMode: 'secure', externalIds: { 'ovsnet-owner': 'ovsnet' }, ports: ['ovs0'] });
    bridges.set('ovs1', { name: 'ovs1', datapathType: 'netdev', failMode: 'secure', externalIds: { 'ovsnet-owner': 'ovsnet' }, ports: ['ovs1', 'foreign0'] });
    assert.deepEqual(diff([], [], observed).map((d) => [d.drift.kind, d.drift.subject]), [['orphan-bridge', 'ovs0']]);
  });

  it('adds back an endpoint port only while its veth is there; a joined endpoint that lost its veth is only reported', () => {
    const nets = [network()];
    const eps = [endpoint()];
    const { observed, ports } = healthy(nets, eps);
    ports.delete(eps[0]!.hostIf);
    const [missing] = diff(nets, eps, observed);
    assert.equal(missing?.drift.kind, 'endpoint-port-missing');
    assert.match(missing!.drift.fix, /^ovs-vsctl add-port ovs0 ovseeeeeeeeeeee tag=860 vlan_mode=access -- set port ovseeeeeeeeeeee external_ids:ovsnet-owner=ovsnet /);
    (observed.links as Map<string, unknown>).delete(eps[0]!.hostIf);
    const [lost] = diff(nets, eps, observed);
    assert.deepEqual([lost?.drift.kind, lost?.repairs], ['endpoint-veth-missing', []]);
    assert.deepEqual(diff(nets, [{ ...eps[0]!, createdAt: new Date(NOW).toISOString() }], observed), [], 'a young endpoint may still be being made');
  });

  it("rewrites the firewall when a jump into the plugin's chains is gone", () => {
    const nets = [network()];
    const { observed } = healthy(nets, []);
    const item = diff(nets, [], { ...observed, firewall: { ...observed.firewall!, jumps: false } });
    assert.deepEqual(item.map((d) => [d.drift.kind, d.repairs[0]?.type]), [['firewall-drift', 'sync-firewall']]);
  });
});

describe('guard flows of container ports', () => {
  const base = baseFlows('ovs0').flows.map((f) => f.cookie);
  const withFlows = (observed: ObservedHost, cookies: string[], meters = new Map<number, { kbps: number; burstKbit: number }>(), bridgeFlows = base): ObservedHost => ({
    ...observed,
    flows: new Map([['ovs0', { cookies: [...bridgeFlows, ...cookies], meters }]]),
  });

  const GUARD = { antiSpoofing: true, allowRa: false, allowDhcpServer: false, rate: undefined };
  const EP = { mac: '02:42:0A:0D:A0:02', address: '10.13.160.2/24', addressIpv6: 'fd00::2/64' };
  const LL = 'fe80::42:aff:fe0d:a002';
  const SRC = 'in_port=7,vlan_tci=0x0000/0x1fff,dl_src=02:42:0a:0d:a0:02';

  it('pins a container to the link-local address of its MAC (EUI-64), or to the one learned from its interface', () => {
    assert.equal(linkLocalOf('02:42:0a:0d:a0:02'), LL);
    assert.equal(linkLocalOf('00:16:3e:00:00:01'), 'fe80::216:3eff:fe00:1');
    assert.equal(guardFor(GUARD, EP)!.linkLocal, LL);
    assert.equal(guardFor(GUARD, { ...EP, linkLocal: 'fe80::1234:5678:9abc:def0' })!.linkLocal, 'fe80::1234:5678:9abc:def0');
  });

  it('holds a port to its MAC and addresses: one link-local address, neighbour discovery only for its own addresses, the rest dropped', () => {
    const texts = portFlows('ovs0', 'ovsx', 7, guardFor(GUARD, EP)!).flows.map((f) => f.text);
    const has = (text: string) => assert.ok(texts.includes(`table=0,${text}`), `missing: ${text}\n${texts.join('\n')}`);
    has(`priority=36010,${SRC},ip,nw_src=10.13.160.2,actions=NORMAL`);
    has(`priority=36010,${SRC},arp,arp_spa=10.13.160.2,arp_sha=02:42:0a:0d:a0:02,actions=NORMAL`);
    for (const source of ['fd00::2', LL]) has(`priority=36010,${SRC},ipv6,ipv6_src=${source},actions=NORMAL`);
    assert.ok(!texts.some((t) => t.includes('fe80::/10')), 'no other link-local address than its own');
    // Solicitations carry its MAC, never none (a second option makes ovs-vswitchd read none).
    for (const source of ['fd00::2', LL]) has(`priority=36030,${SRC},icmp6,icmp_type=135,ipv6_src=${source},nd_sll=02:42:0a:0d:a0:02,actions=NORMAL`);
    assert.ok(!texts.some((t) => /icmp_type=135,ipv6_src=(fd00::2|fe80[^,]*),nd_sll=00:00/.test(t)));
    // Duplicate address detection only for its own addresses.
    for (const target of ['fd00::2', LL]) has(`priority=36030,${SRC},icmp6,icmp_type=135,ipv6_src=::,nd_target=${target},nd_sll=00:00:00:00:00:00,actions=NORMAL`);
    assert.equal(texts.filter((t) => t.includes('ipv6_src=::,nd_target=')).length, 2);
    // Advertisements from and for its own addresses only, with its MAC or none.
    assert.equal(texts.filter((t) => t.includes('icmp_type=136') && t.endsWith('NORMAL')).length, 8);
    for (const t of texts.filter((x) => x.includes('icmp_type=136') && x.endsWith('NORMAL'))) assert.match(t, /ipv6_src=(fd00::2|fe80::42:aff:fe0d:a002),nd_target=(fd00::2|fe80::42:aff:fe0d:a002),nd_tll=(02:42:0a:0d:a0:02|00:00:00:00:00:00)/);
    has('priority=36020,in_port=7,icmp6,icmp_type=135,actions=drop');
    has('priority=36020,in_port=7,icmp6,icmp_type=136,actions=drop');
    has('priority=36000,in_port=7,actions=drop');
    const v6only = portFlows('ovs0', 'ovsx', 7, guardFor(GUARD, { ...EP, address: '' })!);
    assert.ok(!v6only.flows.some((f) => /arp|nw_src/.test(f.text)), 'no IPv4 without an IPv4 address');
    for (const f of portFlows('ovs0', 'ovsx', 7, guardFor(GUARD, EP)!).flows) assert.ok(cookieMatches(f.cookie, portCookiePrefix('ovsx')));
  });

  it('drops router advertisements, redirects and DHCP server messages above everything, anti-spoofing or not, unless the network allows them', () => {
    const firstHop = ['icmp6,icmp_type=134', 'icmp6,icmp_type=137', 'icmp,icmp_type=5', 'udp,tp_src=67', 'udp,tp_dst=68', 'udp6,tp_src=547', 'udp6,tp_dst=546'].map((m) => `table=0,priority=36040,in_port=7,${m},actions=drop`);
    assert.deepEqual(portFlows('ovs0', 'ovsx', 7, guardFor(GUARD, EP)!).flows.filter((f) => f.priority === 36040).map((f) => f.text), firstHop);
    const open = guardFor({ ...GUARD, antiSpoofing: false }, EP)!;
    assert.deepEqual(portFlows('ovs0', 'ovsx', 7, open).flows.map((f) => f.text), [...firstHop, 'table=0,priority=36000,in_port=7,actions=NORMAL'], 'anti_spoofing=false keeps the first-hop guard');
    const router = portFlows('ovs0', 'ovsx', 7, guardFor({ ...GUARD, allowRa: true }, EP)!).flows.map((f) => f.text);
    assert.ok(!router.some((t) => /icmp_type=13[47]/.test(t)) && router.some((t) => t.includes('tp_src=67')), 'allow_ra lets advertisements and redirects through, not DHCP');
    const dhcp = portFlows('ovs0', 'ovsx', 7, guardFor({ ...GUARD, allowDhcpServer: true }, EP)!).flows.map((f) => f.text);
    assert.ok(!dhcp.some((t) => /tp_src=(67|547)/.test(t)) && dhcp.some((t) => t.includes('icmp_type=134')), 'allow_dhcp_server lets DHCP servers answer, not advertisements');
    const rated = portFlows('ovs0', 'ovsx', 7, guardFor({ antiSpoofing: false, allowRa: true, allowDhcpServer: true, rate: { mbit: 10, burstKbit: 2500 } }, EP)!);
    assert.deepEqual(rated.flows.map((f) => f.text), ['table=0,priority=36000,in_port=7,actions=meter:7,NORMAL']);
    assert.deepEqual(rated.meter, { id: 7, kbps: 10_000, burstKbit: 2500 });
    assert.equal(guardFor({ antiSpoofing: false, allowRa: true, allowDhcpServer: true, rate: undefined }, EP), undefined, 'nothing asked, no flows');
  });

  it('finds nothing when every guard flow and meter is there; finds missing, changed and stray ones, and repairs each', () => {
    const net = network({ generic: { vlan: '860', rate: '10' } });
    const ep = endpoint();
    const { observed } = healthy([net], [ep]);
    const want = portFlows('ovs0', ep.hostIf, 1, endpointPort(net, ep).guard!);
    const cookies = want.flows.map((f) => f.cookie);
    const meters = new Map([[1, { kbps: 10_000, burstKbit: 2500 }]]);
    assert.deepEqual(diff([net], [ep], withFlows(observed, cookies, meters)), []);
    assert.deepEqual(diff([net], [ep], observed), [], 'flows not read: not compared');

    const missing = diff([net], [ep], withFlows(observed, cookies.slice(2), meters));
    assert.deepEqual(missing.map((d) => [d.drift.kind, d.drift.port, d.endpointId, d.repairs[0]?.type]), [['port-flows-differ', ep.hostIf, ep.id, 'sync-flows']]);
    assert.match(missing[0]!.drift.detail, /2 of its \d+ guard flows missing/);

    // A port that came back with another number: every flow names the old one.
    const ports = new Map(observed.ports);
    ports.set(ep.hostIf, { ...observed.ports.get(ep.hostIf)!, ofport: 9 });
    const moved = diff([net], [ep], withFlows({ ...observed, ports }, cookies, meters));
    assert.equal(moved.length, 1);
    const repair = moved[0]!.repairs[0]!;
    assert.ok(repair.type === 'sync-flows' && repair.flows.ofport === 9 && repair.stale.length === cookies.length);

    const slow = diff([net], [ep], withFlows(observed, cookies, new Map([[1, { kbps: 1_000, burstKbit: 2500 }]])));
    assert.match(slow[0]!.drift.detail, /meter 1 at 1000 kbit\/s, burst 2500 kbit where 10000 kbit\/s, burst 2500 kbit belongs/);

    const stray = portCookiePrefix('ovs0123456789ab').split('/')[0]!;
    const orphan = diff([net], [ep], withFlows(observed, [...cookies, stray], meters));
    assert.deepEqual(orphan.map((d) => [d.drift.kind, d.repairs[0]?.type]), [['orphan-flows', 'delete-flows']]);
    assert.ok(orphan[0]!.repairs[0]!.type === 'delete-flows' && cookieMatches(stray, orphan[0]!.repairs[0]!.cookies[0]!));

    const off = network({ generic: { vlan: '860', anti_spoofing: 'false', allow_ra: 'true', allow_dhcp_server: 'true' } });
    const leftover = diff([off], [ep], withFlows(healthy([off], [ep]).observed, cookies));
    assert.deepEqual(leftover.map((d) => [d.drift.kind, d.repairs[0]?.type]), [['port-flows-differ', 'delete-flows']]);

    // The bridge's base flow: without it a bridge of the plugin (fail_mode secure) forwards nothing.
    const noBase = diff([net], [ep], withFlows(observed, cookies, meters, []));
    assert.deepEqual(noBase.map((d) => [d.drift.kind, d.drift.subject, d.repairs]), [['bridge-flows-differ', 'ovs0', [{ type: 'sync-base-flows', bridge: 'ovs0', pipeline: 'normal' }]]]);
  });

  it('makes a bridge of the plugin fail closed, its base flow first; reports one of another that fails open', () => {
    const net = network();
    const { observed } = healthy([net], []);
    const bridges = observed.bridges as Map<string, ObservedHost['bridges'] extends ReadonlyMap<string, infer B> ? B : never>;
    bridges.set('ovs0', { ...bridges.get('ovs0')!, failMode: '' });
    const open = diff([net], [], observed);
    assert.deepEqual(open.map((d) => [d.drift.kind, d.repairs.map((r) => r.type)]), [['bridge-fails-open', ['sync-base-flows', 'secure-bridge']]]);
    assert.ok(LAST_REPAIRS.has('sync-base-flows') && LAST_REPAIRS.has('secure-bridge'), 'applied after every container port is guarded');
    bridges.set('ovs0', { ...bridges.get('ovs0')!, failMode: 'standalone', externalIds: {} });
    const foreign = diff([net], [], observed);
    assert.deepEqual(foreign.map((d) => [d.drift.kind, d.repairs]), [['bridge-fails-open', []]], 'not the plugin\'s to change: only reported');
    assert.match(foreign[0]!.drift.fix, /^ovs-vsctl set bridge ovs0 fail_mode=secure/);
    bridges.delete('ovs0');
    assert.deepEqual(diff([net], [], observed).find((d) => d.drift.kind === 'bridge-missing')?.repairs.map((r) => r.type), ['add-bridge', 'sync-base-flows'], 'a bridge made secure gets its base flow');
  });

  it('converts a container port that is a trunk by accident into an access port, and says why', () => {
    const net = network({ generic: {} });
    const ep = endpoint();
    const { observed, ports } = healthy([net], [ep]);
    ports.set(ep.hostIf, { ...ports.get(ep.hostIf)!, vlanMode: undefined, tag: undefined });
    const [trunk] = diff([net], [ep], observed);
    assert.equal(trunk?.drift.kind, 'port-differs');
    assert.match(trunk!.drift.detail, /vlan_mode \(none\) where access belongs: without a tag it is a trunk of every VLAN on the bridge/);
    assert.deepEqual([trunk!.drift.fix, trunk!.repairs.map((r) => r.type)], [`ovs-vsctl set port ${ep.hostIf} vlan_mode=access`, ['update-port']]);
  });

  it('stops a gateway port from taking router advertisements and redirects', () => {
    const net = network();
    const { observed } = healthy([net], []);
    (observed.routerAdvice as Map<string, { acceptRa: boolean; acceptRedirects: boolean }>).set(net.gatewayPort!, { acceptRa: true, acceptRedirects: true });
    const [taken] = diff([net], [], observed);
    assert.deepEqual([taken?.drift.kind, taken?.repairs.map((r) => r.type)], ['gateway-accepts-ra', ['configure-gateway']]);
    assert.equal(taken!.drift.fix, `sysctl -w net.ipv6.conf.${net.gatewayPort}.accept_ra=0 net.ipv6.conf.${net.gatewayPort}.accept_redirects=0 net.ipv4.conf.${net.gatewayPort}.accept_redirects=0`);
  });
});
