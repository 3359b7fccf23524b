import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DROP_REASONS, parseFlowPackets, portFlows } from '../../src/domain/flows.js';
import { GuardDropReader } from '../../src/driver/guard-drops.js';
import type { CreateNetworkRequest } from '../../src/protocol/network.js';
import { FakeDocker } from '../fakes/index.js';
import { id, world } from './setup.js';

const NET = id('1');
const EP = id('e');
const EP2 = id('f');

const createReq = (generic: Record<string, string> = {}): CreateNetworkRequest => ({
  networkId: NET,
  generic: { vlan: '860', ...generic },
  ipv6: false,
  internal: false,
  ipv4Data: [{ addressSpace: 'local', pool: '10.13.160.0/24', gateway: '10.13.160.1/24', auxAddresses: {} }],
  ipv6Data: [],
});
const endpointReq = (endpointId: string, address: string) => ({ networkId: NET, endpointId, address, addressIpv6: '', macAddress: '', optionMac: '' });

describe("guard drops: what each container's guard dropped, by reason", () => {
  it('gives every drop flow of a port a reason, and no flow that passes', () => {
    const guard = { antiSpoofing: true, allowRa: false, allowDhcpServer: false, mac: '02:42:0a:00:00:02', ipv4: '10.0.0.2', ipv6: 'fd00::2', linkLocal: 'fe80::42:aff:fe00:2', rate: undefined, pipeline: 'normal' as const };
    const { flows } = portFlows('ovs0', 'ovsaaaa', 7, guard);
    assert.ok(flows.filter((f) => f.action === 'drop').every((f) => f.reason && DROP_REASONS.includes(f.reason)));
    assert.ok(flows.filter((f) => f.action === 'pass').every((f) => f.reason === undefined));
    assert.deepEqual([...new Set(flows.map((f) => f.reason).filter(Boolean))].sort(), [...DROP_REASONS].sort(), 'each reason has its flows');
    const ovn = portFlows('br-int', 'ovsaaaa', 7, { ...guard, pipeline: 'ovn' });
    assert.deepEqual([...new Set(ovn.flows.map((f) => f.reason))].sort(), ['dhcp-server', 'neighbour-spoof', 'redirect', 'router-advertisement']);
  });

  it("reads each flow's packets from ovs-ofctl dump-flows", () => {
    const text = [
      'OFPST_FLOW reply (OF1.3) (xid=0x2):',
      ' cookie=0x6f76aaaabbbb0001, duration=12.3s, table=0, n_packets=42, n_bytes=4200, priority=36000,in_port=7 actions=drop',
      ' cookie=0x6f76aaaabbbb0002, duration=12.3s, table=0, n_packets=0, n_bytes=0, priority=36010,ip,in_port=7,nw_src=10.0.0.2 actions=NORMAL',
    ].join('\n');
    assert.deepEqual([...parseFlowPackets(text)], [['0x6f76aaaabbbb0001', 42], ['0x6f76aaaabbbb0002', 0]]);
  });

  it('sums the packets of a port\'s drop flows per reason, names the container, and counts no unguarded port', async () => {
    const { network, ovs, state } = await world();
    await network.createNetwork(createReq());
    await network.createEndpoint(endpointReq(EP, '10.13.160.2/24'));
    await network.join({ networkId: NET, endpointId: EP, sandboxKey: '', options: {} });
    await network.createEndpoint(endpointReq(EP2, '10.13.160.3/24'));
    await network.join({ networkId: NET, endpointId: EP2, sandboxKey: '', options: {} });
    const docker = new FakeDocker();
    docker.add(NET, '10.13.160.0/24', { [EP]: '10.13.160.2', [EP2]: '10.13.160.3' });
    docker.names.set(EP, 'attacker');
    const reader = new GuardDropReader({ state, ovs, docker });
    const port = state.endpoints.get(EP)!.hostIf;
    const ofport = (await ovs.ofport(port))!;
    const record = state.endpoints.get(EP)!;
    const flows = portFlows('ovs0', port, ofport, { antiSpoofing: true, allowRa: false, allowDhcpServer: false, mac: record.mac, ipv4: '10.13.160.2', ipv6: undefined, linkLocal: record.linkLocal ?? '', rate: undefined, pipeline: 'normal' }).flows;
    // The fake holds the flows the plugin set: the drop of anything else (source) and the DHCP server drops.
    const set = new Set((await ovs.flows('ovs0')).cookies);
    const source = flows.find((f) => f.reason === 'source' && set.has(f.cookie))!;
    const dhcp = flows.filter((f) => f.reason === 'dhcp-server' && set.has(f.cookie));
    assert.ok(source && dhcp.length === 4, 'the port has the flows computed here');
    ovs.packets.set(source.cookie, 5);
    ovs.packets.set(dhcp[0]!.cookie, 2);
    ovs.packets.set(dhcp[3]!.cookie, 1);
    const pass = flows.find((f) => f.action === 'pass' && set.has(f.cookie))!;
    ovs.packets.set(pass.cookie, 1000);
    const drops = await reader.read();
    const of = (endpointId: string) => Object.fromEntries(drops.filter((d) => d.endpointId === endpointId).map((d) => [d.reason, d.packets]));
    assert.deepEqual(of(EP), { 'router-advertisement': 0, redirect: 0, 'dhcp-server': 3, 'neighbour-spoof': 0, source: 5 }, 'what passes is no drop');
    assert.deepEqual(of(EP2), { 'router-advertisement': 0, redirect: 0, 'dhcp-server': 0, 'neighbour-spoof': 0, source: 0 });
    assert.deepEqual([...new Set(drops.map((d) => `${d.endpointId === EP ? 'EP' : 'EP2'} ${d.container} ${d.port === port}`))].sort(), ['EP attacker true', 'EP2 undefined false']);

    // A network that allows everything has no drop flow: nothing to count. Docker down: no names, still counts.
    docker.down = true;
    const open = await world();
    await open.network.createNetwork(createReq({ anti_spoofing: 'false', allow_ra: 'true', allow_dhcp_server: 'true' }));
    await open.network.createEndpoint(endpointReq(EP, '10.13.160.2/24'));
    await open.network.join({ networkId: NET, endpointId: EP, sandboxKey: '', options: {} });
    assert.deepEqual(await new GuardDropReader({ state: open.state, ovs: open.ovs, docker }).read(), []);
  });
});
