/**
 * The pure parts of `ovsnet trace`: the iptables evaluator against the rules the plugin writes (read back as
 * the kernel prints them), the readers of ofproto/trace, dpif/show and ovn-trace output (samples taken from
 * Open vSwitch 3.1 and OVN 23.03 on these machines), the guard's words, and the request's checks.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { firewallRules } from '../../src/domain/firewall.js';
import { guardFor, portFlows } from '../../src/domain/flows.js';
import { guardSays, linkMac } from '../../src/domain/trace.js';
import { evaluateChain, ruleMatches, ruleWords } from '../../src/domain/trace-iptables.js';
import { datapathOutputs, ofprotoFlow, parseDpifShow, parseOfprotoTrace } from '../../src/domain/trace-ofproto.js';
import { ovnMicroflow, parseOvnTrace, stageSays } from '../../src/domain/trace-ovn.js';
import { decodeTraceRequest } from '../../src/protocol/trace.js';
import { parseDestination } from '../../src/cli/trace.js';
import { isPluginError } from '../../src/errors.js';
import { type OvnTrip, type OvnTraceContext, traceOvn } from '../../src/driver/trace-ovn.js';
import type { EndpointRecord, NetworkRecord } from '../../src/domain/records.js';
import type { TraceReport, TraceStep } from '../../src/domain/trace.js';

const OFPROTO_ADMIT = `Flow: tcp,in_port=5,vlan_tci=0x0000,dl_src=02:42:0a:4d:00:02,dl_dst=02:42:0a:4d:00:03,nw_src=10.77.0.2,nw_dst=10.77.0.3,nw_tos=0,nw_ecn=0,nw_ttl=64,nw_frag=no,tp_src=0,tp_dst=80,tcp_flags=0

bridge("ovs0")
--------------
 0. ip,in_port=5,vlan_tci=0x0000/0x1fff,dl_src=02:42:0a:4d:00:02,nw_src=10.77.0.2, priority 36010, cookie 0x6f7638f4c645aae3
    NORMAL
     -> no learned MAC for destination, flooding

Final flow: unchanged
Megaflow: recirc_id=0,eth,tcp,in_port=5,dl_src=02:42:0a:4d:00:02,dl_dst=02:42:0a:4d:00:03,nw_src=10.77.0.2,nw_frag=no
Datapath actions: push_vlan(vid=77,pcp=0),1,pop_vlan,2,7`;

const DPIF = `netdev@ovs-netdev: hit:2 missed:3
  ovs0:
    ovp03230251c77e 5/6: (system)
    ovpfa2ef8b1eedb 6/7: (system)
    ovs0 65534/1: (tap)
    ovsgw93e7da073f 1/2: (tap)`;

const OVN_DROP = `# tcp,reg14=0x1,vlan_tci=0x0000,dl_src=0a:00:00:00:01:02,dl_dst=0a:00:00:00:01:03,nw_src=10.1.0.99,nw_dst=10.1.0.3,nw_tos=0,nw_ecn=0,nw_ttl=64,nw_frag=no,tp_src=0,tp_dst=80,tcp_flags=0

ingress(dp="sw1", inport="p1")
------------------------------
 0. ls_in_check_port_sec (northd.c:8432): 1, priority 50, uuid 2384e322
    reg0[15] = check_in_port_sec();
    next;
 1. ls_in_apply_port_sec (northd.c:8435): reg0[15] == 1, priority 50, uuid 23f33190
    drop;`;

const OVN_SNAT = `ingress(dp="sw1", inport="p1")
------------------------------
25. ls_in_l2_lkup (northd.c:9193): eth.dst == 0a:00:00:00:ff:01, priority 50, uuid cc4c42e0
    outport = "sw1-lr1";
    output;

egress(dp="sw1", inport="p1", outport="sw1-lr1")
------------------------------------------------
 9. ls_out_apply_port_sec (northd.c:5777): 1, priority 0, uuid 6a387d84
    output;
    /* output to "sw1-lr1", type "patch" */

ingress(dp="lr1", inport="lr1-sw1")
-----------------------------------
20. lr_in_gw_redirect (northd.c:12830): outport == "lr1-ext", priority 50, uuid a26d447a
    outport = "cr-lr1-ext";
    next;
21. lr_in_arp_request (northd.c:12948): 1, priority 0, uuid 05f21982
    output;
    /* Replacing type "chassisredirect" outport "cr-lr1-ext" with distributed port "lr1-ext". */

egress(dp="lr1", inport="lr1-sw1", outport="lr1-ext")
-----------------------------------------------------
 3. lr_out_snat (northd.c:13958): ip && ip4.src == 10.1.0.0/24 && outport == "lr1-ext" && is_chassis_resident("cr-lr1-ext"), priority 153, uuid f0876bee
    ct_snat_in_czone(192.0.2.100);

ct_snatin_czone(ip4.src=192.0.2.100) /* default (use --ct to customize) */
--------------------------------------------------------------------------
 6. lr_out_delivery (northd.c:12995): outport == "lr1-ext", priority 100, uuid 7915d49b
    output;
    /* output to "lr1-ext", type "patch" */

ingress(dp="ext", inport="ext-lr1")
-----------------------------------
26. ls_in_l2_unknown (northd.c:8377): outport == "none", priority 50, uuid e3ab888c
    outport = "_MC_unknown";
    output;

multicast(dp="ext", mcgroup="_MC_unknown")
------------------------------------------

    egress(dp="ext", inport="ext-lr1", outport="ext-localnet")
    ----------------------------------------------------------
         9. ls_out_apply_port_sec (northd.c:5777): 1, priority 0, uuid 6a387d84
            output;
            /* output to "ext-localnet", type "localnet" */`;

describe('trace: the iptables evaluator', () => {
  const network = {
    id: 'a'.repeat(64),
    spec: { mode: 'vlan', vlan: 71, bridge: 'ovs0', gatewayMode: 'nat', internal: false },
    ipv4: [{ addressSpace: 'local', pool: '10.71.0.0/24', gateway: '10.71.0.1', auxAddresses: {} }],
    ipv6: [],
    gatewayPort: 'ovsgwaaaaaaaaaa',
  } as any;
  const internal = { ...network, id: 'b'.repeat(64), spec: { ...network.spec, internal: true }, ipv4: [{ ...network.ipv4[0], pool: '10.72.0.0/24' }], gatewayPort: 'ovsgwbbbbbbbbbb' };
  // As `iptables -S` prints them: the comment quoted.
  const printed = (rules: readonly (readonly string[])[]) => rules.map((r) => r.map((w) => (w.startsWith('ovsnet:') ? `"${w}"` : w)).join(' '));
  const rules = firewallRules([network, internal], [], ['docker0']).v4;
  const packet = { family: 4 as const, in: 'ovsgwaaaaaaaaaa', out: 'eth0', src: '10.71.0.5', dst: '198.51.100.7', protocol: 'tcp' as const, dport: 443, ctstate: ['NEW'] };

  it('reads words as iptables -S prints them, quotes and all', () => {
    assert.deepEqual(ruleWords('-s 10.0.0.0/24 ! -o gw -m comment --comment "ovsnet:abc def" -j MASQUERADE'), ['-s', '10.0.0.0/24', '!', '-o', 'gw', '-m', 'comment', '--comment', 'ovsnet:abc def', '-j', 'MASQUERADE']);
  });

  it('a nat network: not isolated towards the uplink, accepted, masqueraded; towards another network of the plugin, dropped', () => {
    assert.equal(evaluateChain(printed(rules.isolate), packet).hit, undefined);
    assert.equal(evaluateChain(printed(rules.filter), packet).hit?.target, 'ACCEPT');
    const nat = evaluateChain(printed(rules.nat), packet).hit;
    assert.equal(nat?.target, 'MASQUERADE');
    assert.equal(nat?.comment, `ovsnet:${'a'.repeat(12)}`);
    const across = evaluateChain(printed(rules.isolate), { ...packet, out: 'ovsgwcccccccccc' }).hit;
    assert.equal(across?.target, 'DROP');
    assert.equal(across?.number, 1);
    assert.equal(evaluateChain(printed(rules.isolate), { ...packet, out: 'ovsgwcccccccccc', ctstate: ['ESTABLISHED'] }).hit, undefined, 'replies pass');
    assert.equal(evaluateChain(printed(rules.isolate), { ...packet, in: 'ovsgwcccccccccc', out: 'docker0' }).hit?.comment, 'ovsnet:foreign');
  });

  it('an --internal network: dropped out of it and into the host', () => {
    const out = { ...packet, in: 'ovsgwbbbbbbbbbb', src: '10.72.0.5' };
    assert.equal(evaluateChain(printed(rules.isolate), out).hit?.target, 'DROP');
    assert.equal(evaluateChain(printed(rules.input), { ...out, out: undefined }).hit?.target, 'DROP');
  });

  it('`!` negates the next match only; a match it does not know is reported, never guessed', () => {
    assert.equal(ruleMatches('-s 10.71.0.0/24 ! -o ovsgwaaaaaaaaaa -j MASQUERADE', packet), true);
    assert.equal(ruleMatches('-s 10.71.0.0/24 ! -o ovsgwaaaaaaaaaa -j MASQUERADE', { ...packet, out: 'ovsgwaaaaaaaaaa' }), false);
    assert.equal(ruleMatches('! -s 10.71.0.0/24 -j DROP', packet), false);
    assert.match(String(ruleMatches('-m addrtype --dst-type LOCAL -j DROP', packet)), /--dst-type/);
    const result = evaluateChain(['-m addrtype --dst-type LOCAL -j DROP', '-i ovsgw+ -j ACCEPT'], packet);
    assert.equal(result.hit?.number, 2);
    assert.equal(result.unknown[0]?.number, 1);
  });

  it('a published port: DNAT to the container, with its port; a port range matches inside it only', () => {
    const dnat = evaluateChain(['-p tcp -m tcp --dport 8080 -m comment --comment "ovsnet:aaaa" -j DNAT --to-destination 10.71.0.9:80'], { ...packet, dst: '10.71.0.1', dport: 8080 }).hit;
    assert.equal(dnat?.toDestination, '10.71.0.9:80');
    assert.equal(evaluateChain(['-p udp -m udp --dport 8080 -j DNAT --to-destination 10.71.0.9:80'], { ...packet, dport: 8080 }).hit, undefined);
    assert.equal(ruleMatches('-p tcp --dport 8000:8100 -j ACCEPT', { ...packet, dport: 8080 }), true);
    assert.equal(ruleMatches('-p tcp --dport 8000:8100 -j ACCEPT', { ...packet, dport: 8101 }), false);
  });
});

describe('trace: what Open vSwitch says', () => {
  it('the microflow: ICMPv6 and UDP fields by their own names, a tag when asked', () => {
    const base = { family: 4 as const, srcMac: '02:00:00:00:00:01', dstMac: '02:00:00:00:00:02', src: '10.0.0.2', dst: '10.0.0.3' };
    assert.equal(ofprotoFlow(5, { ...base, protocol: 'udp', dport: 68 }), 'udp,in_port=5,dl_src=02:00:00:00:00:01,dl_dst=02:00:00:00:00:02,nw_src=10.0.0.2,nw_dst=10.0.0.3,nw_ttl=64,udp_src=40000,udp_dst=68');
    assert.equal(ofprotoFlow(5, { ...base, family: 6, src: 'fe80::1', dst: 'ff02::1', protocol: 'icmp', icmpType: 134 }), 'icmp6,in_port=5,dl_src=02:00:00:00:00:01,dl_dst=02:00:00:00:00:02,ipv6_src=fe80::1,ipv6_dst=ff02::1,nw_ttl=64,icmpv6_type=134,icmpv6_code=0');
    assert.match(ofprotoFlow(5, { ...base, protocol: 'icmp', vlan: 12 }), /^icmp,in_port=5,dl_vlan=12,.*icmp_type=8,icmp_code=0$/);
  });

  it('reads the first flow with its cookie, what normal switching did, and the outputs by port name with their tags', () => {
    const trace = parseOfprotoTrace(OFPROTO_ADMIT);
    assert.equal(trace.steps.length, 1);
    assert.deepEqual([trace.steps[0]!.bridge, trace.steps[0]!.priority, trace.steps[0]!.cookie], ['ovs0', 36010, '0x6f7638f4c645aae3']);
    assert.deepEqual(trace.forwarding, ['no learned MAC for destination, flooding']);
    const ports = parseDpifShow(DPIF);
    assert.deepEqual(ports.get(2), { bridge: 'ovs0', port: 'ovsgw93e7da073f', ofport: 1 });
    const { outputs, drop } = datapathOutputs(trace.datapathActions, ports);
    assert.equal(drop, false);
    assert.deepEqual(outputs, [{ dpPort: 1, port: 'ovs0', vlan: 77 }, { dpPort: 2, port: 'ovsgw93e7da073f' }, { dpPort: 7, port: 'ovpfa2ef8b1eedb' }]);
  });

  it('tunnels by their remote end; a drop; recirculation left to a later pass', () => {
    const tnl = datapathOutputs('tnl_push(tnl_port(4),header(size=50,type=4,eth(dst=aa:bb:cc:dd:ee:ff,src=11:22:33:44:55:66,dl_type=0x0800),ipv4(src=172.16.0.1,dst=172.16.0.2,proto=17,tos=0,ttl=64,frag=0x4000),udp(src=0,dst=4789,csum=0x0),vxlan(flags=0x8000000,vni=0x64)),out_port(3))', new Map([[4, { port: 'vxlan_sys_4789' }]]));
    assert.deepEqual(tnl.outputs, [{ dpPort: 4, port: 'vxlan_sys_4789', remote: '172.16.0.2' }]);
    assert.equal(datapathOutputs('drop', new Map()).drop, true);
    const kernel = datapathOutputs('set(tunnel(tun_id=0x64,dst=172.16.0.3,ttl=64,flags(df|key))),4', new Map());
    assert.equal(kernel.outputs[0]?.remote, '172.16.0.3');
    assert.deepEqual(datapathOutputs('ct(zone=5),recirc(0x12)', new Map()), { drop: false, outputs: [], continues: true });
  });

  it('the guard in words: which of the packet\'s fields the container does not own', () => {
    const guard = guardFor({ antiSpoofing: true, allowRa: false, allowDhcpServer: false, rate: undefined }, { mac: '02:42:0a:47:00:02', address: '10.71.0.2/24', addressIpv6: '' })!;
    const flows = portFlows('ovs0', 'ovpx', 5, guard).flows;
    const source = flows.find((f) => f.reason === 'source')!;
    const probe = { family: 4 as const, protocol: 'icmp' as const, srcMac: '02:42:0a:47:00:02', dstMac: 'ff:ff:ff:ff:ff:ff', src: '10.71.0.2', dst: '10.71.0.3' };
    assert.match(guardSays(source, guard, { ...probe, src: '10.71.0.200' }), /source address 10\.71\.0\.200 is not the container's \(10\.71\.0\.2, fe80::/);
    assert.match(guardSays(source, guard, { ...probe, srcMac: '02:00:00:00:00:99' }), /source MAC 02:00:00:00:00:99 is not the container's \(02:42:0a:47:00:02\)/);
    assert.match(guardSays(source, guard, { ...probe, vlan: 7 }), /tagged with VLAN 7/);
    assert.match(guardSays(flows.find((f) => f.reason === 'router-advertisement')!, guard, probe), /^dropped by the guard \(router-advertisement\)/);
    assert.match(guardSays(flows.find((f) => f.action === 'pass')!, guard, probe), /^admitted by the guard: from the container's own MAC/);
    assert.equal(linkMac('ff02::1'), '33:33:00:00:00:01');
    assert.equal(linkMac('ff02::1:ff00:5'), '33:33:ff:00:00:05');
    assert.equal(linkMac('10.0.0.1'), undefined);
  });
});

describe("trace: what OVN says", () => {
  it('the microflow names the logical port and the packet', () => {
    assert.equal(
      ovnMicroflow('ovsnet-x-10.1.0.2', { family: 4, protocol: 'tcp', srcMac: '0a:00:00:00:01:02', dstMac: '0a:00:00:00:01:03', src: '10.1.0.2', dst: '10.1.0.3', dport: 80 }),
      'inport == "ovsnet-x-10.1.0.2" && eth.src == 0a:00:00:00:01:02 && eth.dst == 0a:00:00:00:01:03 && ip4.src == 10.1.0.2 && ip4.dst == 10.1.0.3 && ip.ttl == 64 && tcp.dst == 80',
    );
  });

  it('a drop: the stage that drops it and why, in words', () => {
    const trace = parseOvnTrace(OVN_DROP);
    assert.deepEqual(trace.drop, { datapath: 'sw1', direction: 'ingress', stage: 'ls_in_apply_port_sec', match: 'reg0[15] == 1' });
    assert.match(stageSays(trace.drop!.stage), /port security/);
    assert.deepEqual(trace.outputs, []);
  });

  it('through a router to the outside: the datapaths, SNAT, the gateway port and the localnet output', () => {
    const trace = parseOvnTrace(OVN_SNAT);
    assert.deepEqual(trace.hops.filter((h) => h.direction === 'ingress').map((h) => h.datapath), ['sw1', 'lr1', 'ext']);
    assert.equal(trace.snat, '192.0.2.100');
    assert.equal(trace.gatewayPort, 'cr-lr1-ext');
    assert.deepEqual(trace.outputs.at(-1), { port: 'ext-localnet', type: 'localnet' });
    assert.equal(trace.drop, undefined);
    assert.equal(trace.resolving, false);
  });

  it('what ovn-trace says instead of a trace is kept', () => {
    assert.equal(parseOvnTrace('unknown datapath "nosuchdp"').error, 'unknown datapath "nosuchdp"');
  });
});

describe('trace: requests', () => {
  const id = 'e'.repeat(64);
  const refused = (body: unknown, message: RegExp) =>
    assert.throws(() => decodeTraceRequest(body), (err: unknown) => isPluginError(err, 'BadRequest') && message.test((err as Error).message));

  it('the plugin takes a request with its defaults, and refuses each bad field naming it and what is valid', () => {
    assert.deepEqual(decodeTraceRequest({ EndpointID: id, Destination: '10.0.0.3' }), { endpointId: id, destination: '10.0.0.3', protocol: 'icmp', port: undefined, icmpType: undefined, source: undefined, sourceMac: undefined, vlan: undefined });
    refused({ EndpointID: 'x' }, /field EndpointID must be a Docker id/);
    refused({ EndpointID: id, Protocol: 'sctp' }, /field Protocol is "sctp": one of tcp, udp, icmp/);
    refused({ EndpointID: id, Protocol: 'tcp', Port: 0 }, /field Port is 0: a TCP or UDP port, a whole number from 1 to 65535/);
    refused({ EndpointID: id, Port: 80 }, /ICMP has no ports/);
    refused({ EndpointID: id, Destination: '10.0.0.300' }, /field Destination is "10\.0\.0\.300": an IPv4 or IPv6 address/);
    refused({ EndpointID: id, Destination: '10.0.0.3', Source: 'fd00::1' }, /field Source is "fd00::1": an address of the destination's family/);
    refused({ EndpointID: id, SourceMac: '01:00:5e:00:00:01' }, /field SourceMac is "01:00:5e:00:00:01": a unicast MAC address/);
    refused({ EndpointID: id, Vlan: 4096 }, /field Vlan is 4096: a VLAN id, a whole number from 0 to 4095/);
    refused({ EndpointID: id, Protocol: 'udp', Port: 53, IcmpType: 8 }, /field IcmpType is 8: only with Protocol icmp/);
  });

  it('the command line reads DESTINATION[:PORT[/PROTOCOL]], IPv6 in brackets with a port', () => {
    assert.deepEqual(parseDestination('web'), { target: 'web', port: undefined, protocol: 'icmp' });
    assert.deepEqual(parseDestination('web:80'), { target: 'web', port: 80, protocol: 'tcp' });
    assert.deepEqual(parseDestination('10.0.0.3:53/udp'), { target: '10.0.0.3', port: 53, protocol: 'udp' });
    assert.deepEqual(parseDestination('fd00::5'), { target: 'fd00::5', port: undefined, protocol: 'icmp' });
    assert.deepEqual(parseDestination('[fd00::5]:443'), { target: 'fd00::5', port: 443, protocol: 'tcp' });
    assert.deepEqual(parseDestination('outside:443/tcp'), { target: 'outside', port: 443, protocol: 'tcp' });
    assert.throws(() => parseDestination('web:80/icmp'), /ICMP has no ports/);
    assert.throws(() => parseDestination('web/udp'), /udp needs a port/);
  });
});

describe('trace: an OVN path that cannot be followed', () => {
  const network = {
    id: 'n'.repeat(64), state: 'ready', createdAt: '', mtu: 1500, ipv4: [{ pool: '10.3.0.0/24', gateway: '10.3.0.1' }], ipv6: [],
    spec: { mode: 'ovn', bridge: 'br-int', gatewayMode: 'nat' }, ovn: { switchName: 'ovsnet-10.3.0.0_24', subnet: '10.3.0.0/24' },
  } as unknown as NetworkRecord;
  const endpoint = { id: 'e'.repeat(64), networkId: network.id, address: '10.3.0.2/24', addressIpv6: '', mac: '02:42:0a:03:00:02', hostIf: 'ovseeeeeeeeeeee', joined: true, createdAt: '' } as unknown as EndpointRecord;
  const trip = (): OvnTrip => {
    const steps: TraceStep[] = [];
    return {
      network, endpoint, steps, hostname: 'h1', names: new Map(),
      probe: { family: 4, protocol: 'icmp', srcMac: endpoint.mac, dstMac: '0a:00:0a:03:00:01', src: '10.3.0.2', dst: '10.3.1.2' },
      report: (outcome, says) => ({ from: { address: '10.3.0.2' }, to: { address: '10.3.1.2', protocol: 'icmp', outside: false }, packet: {}, steps, verdict: { outcome, says } }) as unknown as TraceReport,
      step: (at, says, detail) => ({ at, says, detail }) as unknown as TraceStep,
      datapath: (name) => name,
      local: () => undefined,
    };
  };
  const context = (southbound: string | undefined, ovnTrace: () => Promise<string>): OvnTraceContext => ({
    tracing: { ovnTrace } as unknown as OvnTraceContext['tracing'],
    southbound: async () => southbound,
    port: async () => undefined,
    residents: async () => new Map(),
  });
  const failed = (message: RegExp) => (err: unknown) => isPluginError(err, 'Unavailable') && (err as { code: string }).code === 'TraceFailed' && message.test((err as Error).message);

  it('is an error of the call, not a DROPPED verdict that would blame the network', async () => {
    await assert.rejects(traceOvn(context(undefined, async () => ''), trip()), failed(/no external_ids:ovn-remote/));
    await assert.rejects(traceOvn(context('tcp:192.168.50.1:6642', async () => { throw new Error('ovn-trace: connection refused'); }), trip()), failed(/ovn-trace could not follow the packet: ovn-trace: connection refused/));
    await assert.rejects(traceOvn(context('tcp:192.168.50.1:6642', async () => 'ovn-trace: unknown datapath "ovsnet-10.3.0.0_24"\n'), trip()), failed(/unknown datapath/));
  });
});
