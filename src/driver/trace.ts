/**
 * `ovsnet trace`: follows one packet from a container's port as Open vSwitch, the host and OVN would treat it,
 * and says what each step did in the operator's words (domain/trace.ts). The steps:
 *   1. the container's bridge (ofproto/trace from its port): the guard's flow that admits or drops it, by
 *      its cookie, then where normal switching sends it (containers, the gateway port, the uplink, tunnels);
 *   2. through the gateway port into the host: its route, the plugin's iptables chains in the kernel's order
 *      (published ports' DNAT, isolation, --internal, forwarding, masquerading), then, when the route is
 *      another network's gateway port, that network's bridge as in 1;
 *   3. on an OVN network: OVN's logical pipeline (ovn-trace), its ports named after containers and hosts.
 * Nothing is sent; every answer is read from the programs that decide.
 */
import { badRequest, notFound } from '../errors.js';
import { prefixHolds } from '../domain/cidr.js';
import { type FlowSpec, type PortGuard, baseFlows, isOwnedCookie, portFlows } from '../domain/flows.js';
import { endpointPort } from '../domain/host.js';
import { routerMac } from '../domain/ovn-router.js';
import { ENDPOINT_KEY, GATEWAY_PREFIX, NETWORK_KEY, PEER_KEY, ROLE_KEY } from '../domain/names.js';
import type { EndpointRecord, NetworkRecord } from '../domain/records.js';
import { OUTSIDE, type Outcome, type PortRef, type TraceReport, type TraceRequest, type TraceStep, describePort, guardSays, linkMac } from '../domain/trace.js';
import { evaluateChain, type NetfilterPacket } from '../domain/trace-iptables.js';
import { type Probe, datapathOutputs, ofprotoFlow, parseDpifShow, parseOfprotoTrace } from '../domain/trace-ofproto.js';
import type { DockerView, Firewall, Links, Ovs, Tracing } from './ports.js';
import type { State } from './state.js';
import { type OvnTraceContext, traceOvn } from './trace-ovn.js';

export interface TracerOptions {
  state: State;
  ovs: Pick<Ovs, 'snapshot' | 'ofport'>;
  links: Pick<Links, 'routeTo'>;
  firewall: Pick<Firewall, 'read'>;
  tracing: Tracing;
  docker?: Pick<DockerView, 'containerNames'>;
  ovn?: OvnTraceContext;
  /** This host's name as its steps give it (in OVN mode, the name the northbound database's ports carry). */
  hostname: () => Promise<string>;
}

const BROADCAST = 'ff:ff:ff:ff:ff:ff';

/** What a trace learned about the host once: ports by datapath number, owned ports, MACs, container names. */
interface HostView {
  readonly dp: ReturnType<typeof parseDpifShow>;
  readonly owned: Map<string, Readonly<Record<string, string>>>;
  readonly ofports: Map<string, number | undefined>;
  readonly macs: Map<string, string>;
  readonly names: Map<string, string>;
}

export class Tracer {
  /** This host's name, as the last trace asked it (the same for every trace). */
  private here = '';

  constructor(private readonly o: TracerOptions) {}

  async trace(request: TraceRequest): Promise<TraceReport> {
    const { state } = this.o;
    this.here = await this.o.hostname();
    const endpoint = state.endpoints.get(request.endpointId);
    if (!endpoint) throw notFound('UnknownEndpoint', `no endpoint ${request.endpointId.slice(0, 12)} on this host: trace a container of an ovs network running here`);
    const network = state.networks.get(endpoint.networkId);
    if (!network || network.state !== 'ready') throw notFound('UnknownNetwork', `the network of endpoint ${endpoint.id.slice(0, 12)} is not ready on this host`);
    const family = request.destination ? (request.destination.includes(':') ? 6 : 4) : endpoint.address ? 4 : 6;
    const own = plain(family === 4 ? endpoint.address : endpoint.addressIpv6);
    const src = request.source ?? own;
    if (!src) throw badRequest('WrongFamily', `the container has no IPv${family} address on this network, so it sends nothing to ${request.destination ?? 'outside'}; give an IPv${family === 4 ? 6 : 4} destination, or --source`);
    if ((src.includes(':') ? 6 : 4) !== family) throw badRequest('WrongFamily', `source ${src} and destination ${request.destination} are of different families`);
    const dst = request.destination ?? OUTSIDE[family];
    const host = await this.hostView(network.id);
    const subnets = family === 4 ? network.ipv4 : network.ipv6;
    const onLink = subnets.some((s) => prefixHolds(s.pool, dst)) || !!linkMac(dst);
    const target = [...state.endpoints.values()].find((e) => plain(family === 4 ? e.address : e.addressIpv6) === dst);
    if (target && !host.names.has(target.id)) await this.learnNames(host, target.networkId);
    const steps: TraceStep[] = [];
    const gateway = subnets.find((s) => s.gateway)?.gateway;
    // The gateway's own address on the host is the host's: through the gateway port, as off the subnet.
    const toHost = !!network.gatewayPort && subnets.some((s) => s.gateway === dst);
    let dstMac: string;
    if (onLink && !toHost) {
      dstMac = linkMac(dst) ?? (target?.networkId === network.id ? target.mac : BROADCAST);
    } else if (network.ovn && gateway) {
      // The router port's MAC, which the plugin derives from the network's IPv4 gateway (domain/ovn-router.ts).
      dstMac = routerMac(network.ipv4[0]?.gateway ?? '0.0.0.0');
    } else if (network.gatewayPort && host.macs.get(network.gatewayPort)) {
      dstMac = host.macs.get(network.gatewayPort)!;
    } else {
      dstMac = BROADCAST;
    }
    const probe: Probe = { family, protocol: request.protocol, srcMac: request.sourceMac ?? endpoint.mac, dstMac, src, dst, ...(request.port !== undefined ? { dport: request.port } : {}), ...(request.icmpType !== undefined ? { icmpType: request.icmpType } : {}), ...(request.vlan !== undefined ? { vlan: request.vlan } : {}) };
    const from = { ...this.ref(endpoint.hostIf, host), address: src };
    const to = { address: dst, ...(request.port !== undefined ? { port: request.port } : {}), protocol: request.protocol, outside: request.destination === undefined, ...(target ? { container: this.ref(target.hostIf, host) } : {}) };
    const report = (outcome: Outcome, says: string): TraceReport => ({ from, to, packet: probe, steps, verdict: { outcome, says } });

    if (!onLink && !gateway && !network.ovn) steps.push(this.step('route', `the container has no gateway on network ${network.id.slice(0, 12)}: ${dst} is off its subnet`, {}));
    if (!onLink && dstMac === BROADCAST && gateway) steps.push(this.step('ovs', `the gateway ${gateway} is not on this host (gateway_mode=${network.spec.gatewayMode}); its MAC is unknown here, so the frame is traced as to an address not learned`, { gateway }));

    // 1. The container's bridge.
    const first = await this.bridge(network, endpoint.hostIf, probe, host, steps, endpoint);
    if (first.dropped) return report('dropped', first.dropped);
    if (network.ovn && this.o.ovn) return this.throughOvn(this.o.ovn, network, endpoint, probe, host, steps, report);
    const delivered = target && first.outputs.find((p) => p.role === 'container' && p.endpointId === target.id);
    if (delivered) return report('delivered', `delivered to ${describePort(delivered)}`);
    const gatewayOut = first.outputs.find((p) => p.role === 'gateway' && p.networkId === network.id);
    if ((!onLink || toHost) && gatewayOut) return this.throughHost(network, endpoint, probe, host, steps, report);
    const away = first.outputs.filter((p) => p.role === 'uplink' || p.role === 'tunnel');
    if (away.length > 0) return report('leaves', `leaves this host by ${away.map(describePort).join(' and ')}${onLink ? '' : ` towards the gateway ${gateway ?? '(none)'}`}`);
    if (first.outputs.length === 0) return report('dropped', `dropped by Open vSwitch: no port of the network takes it`);
    if (target) return report('dropped', `not delivered to ${describePort(this.ref(target.hostIf, host))}: ${target.networkId === network.id ? 'Open vSwitch sends it elsewhere' : 'it is on another network, reached through a gateway'} (${first.outputs.map(describePort).join(', ')})`);
    return report('delivered', `sent to ${first.outputs.map(describePort).join(', ')}`);
  }

  /** Step 3: OVN's logical pipeline, its datapaths and ports named as the operator knows them. */
  private throughOvn(ovn: OvnTraceContext, network: NetworkRecord, endpoint: EndpointRecord, probe: Probe, host: HostView, steps: TraceStep[], report: (o: Outcome, s: string) => TraceReport): Promise<TraceReport> {
    const networks = [...this.o.state.networks.values()];
    return traceOvn(ovn, {
      network,
      endpoint,
      probe,
      steps,
      report,
      hostname: this.here,
      names: host.names,
      step: this.step.bind(this),
      datapath: (name) => {
        const on = networks.find((n) => n.ovn?.switchName === name);
        if (on) return `the switch of network ${on.id.slice(0, 12)}`;
        if (networks.some((n) => n.spec.mode === 'ovn' && n.spec.ovnRouter === name)) return `router ${name}`;
        return name.startsWith('ovsnet-external-') ? `the outside network (${name})` : name;
      },
      local: (address) => {
        const e = [...this.o.state.endpoints.values()].find((x) => x.networkId === network.id && (plain(x.address) === address || plain(x.addressIpv6) === address));
        return e ? this.ref(e.hostIf, host) : undefined;
      },
    });
  }

  /** Step 1 on one bridge: the flow that takes the packet first (the guard's, or the bridge's), then where it goes. */
  private async bridge(network: NetworkRecord, port: string, probe: Probe, host: HostView, steps: TraceStep[], endpoint?: EndpointRecord): Promise<{ dropped?: string; outputs: PortRef[] }> {
    const bridge = network.spec.bridge;
    const ofport = host.ofports.get(port) ?? (await this.o.ovs.ofport(port));
    if (!ofport || ofport < 0) throw notFound('UnknownEndpoint', `port ${port} has no OpenFlow port number on bridge ${bridge}: it is not (or no longer) in Open vSwitch; ovsnet doctor says more`);
    const flow = ofprotoFlow(ofport, probe);
    const trace = parseOfprotoTrace(await this.o.tracing.ofprotoTrace(bridge, flow));
    const firstStep = trace.steps[0];
    const guard = endpoint && endpointPort(network, endpoint).guard;
    const ours = firstStep?.cookie && isOwnedCookie(firstStep.cookie) ? this.flowOf(firstStep.cookie, network, port, ofport, guard) : undefined;
    const at = { bridge, port, ofport, flow: firstStep ? `${firstStep.match}, priority ${firstStep.priority}` : undefined, cookie: firstStep?.cookie };
    if (ours?.kind === 'guard' && guard) {
      const says = guardSays(ours.flow, guard, probe);
      steps.push(this.step('ovs', `bridge ${bridge}, ${describePort(this.ref(port, host))}: ${says}`, { ...at, rule: ours.flow.text, ...(ours.flow.reason ? { reason: ours.flow.reason } : {}) }));
      if (ours.flow.action === 'drop') return { dropped: says, outputs: [] };
    } else if (endpoint && network.spec.mode !== 'ovn') {
      steps.push(this.step('ovs', `bridge ${bridge}, ${describePort(this.ref(port, host))}: no guard flow of the port takes it (${guard ? 'the guard does not hold this port now: ovsnet doctor says why' : 'the network guards nothing: anti_spoofing off, allow_ra and allow_dhcp_server on, no rate'})${ours?.kind === 'base' ? "; the bridge's normal forwarding" : firstStep ? `; a flow not the plugin's: ${at.flow}` : ''}`, at));
    } else if (endpoint) {
      steps.push(this.step('ovs', `bridge ${bridge}, ${describePort(this.ref(port, host))}: the guard drops none of it (port security is OVN's); OVN's pipeline takes it`, at));
    }
    const { outputs, drop, continues } = datapathOutputs(trace.datapathActions, host.dp);
    if (network.spec.mode === 'ovn') return { outputs: [] };
    const refs = outputs.map((o) => ({ ...this.ref(o.port ?? `datapath port ${o.dpPort}`, host), ...(o.vlan !== undefined ? { vlan: o.vlan } : {}), ...(o.remote ? { remote: o.remote } : {}) })).filter((r) => r.port !== port);
    const how = trace.forwarding.find((f) => /learned|flood|drop/i.test(f));
    if (drop || (refs.length === 0 && !continues)) {
      steps.push(this.step('ovs', `bridge ${bridge}: normal forwarding sends it nowhere${how ? ` (${how})` : ''}`, { bridge, datapathActions: trace.datapathActions }));
      return { dropped: `dropped by Open vSwitch on bridge ${bridge}: no port of the network takes it${how ? ` (${how})` : ''}`, outputs: [] };
    }
    steps.push(this.step('ovs', `bridge ${bridge}: normal forwarding${how ? ` (${how})` : ''} sends it to ${refs.map(describePort).join(', ')}`, { bridge, datapathActions: trace.datapathActions, outputs: refs }));
    return { outputs: refs };
  }

  /** Which of the plugin's flows a cookie is: one of the port's guard flows, or the bridge's base flow. */
  private flowOf(cookie: string, network: NetworkRecord, port: string, ofport: number, guard: PortGuard | undefined): { kind: 'guard' | 'base'; flow: FlowSpec } | undefined {
    const wanted = BigInt(cookie);
    if (guard) {
      const flow = portFlows(network.spec.bridge, port, ofport, guard).flows.find((f) => BigInt(f.cookie) === wanted);
      if (flow) return { kind: 'guard', flow };
    }
    const base = baseFlows(network.spec.bridge).flows.find((f) => BigInt(f.cookie) === wanted);
    return base ? { kind: 'base', flow: base } : undefined;
  }

  /** Step 2: into the host by the network's gateway port, its route and the plugin's chains, and on. */
  private async throughHost(network: NetworkRecord, endpoint: EndpointRecord, probe: Probe, host: HostView, steps: TraceStep[], report: (o: Outcome, s: string) => TraceReport): Promise<TraceReport> {
    const gw = network.gatewayPort!;
    const chains = await this.o.firewall.read();
    const v6 = probe.family === 6;
    const rules = {
      dnat: (v6 ? chains.dnat6 : chains.dnat4) ?? [],
      isolate: (v6 ? chains.isolate6 : chains.isolate4) ?? [],
      input: (v6 ? chains.input6 : chains.input4) ?? [],
      filter: v6 ? chains.filter6 : chains.filter4,
      nat: (v6 ? chains.nat6 : chains.nat4) ?? [],
    };
    let packet: NetfilterPacket = { family: probe.family, in: gw, src: probe.src, dst: probe.dst, protocol: probe.protocol, ...(probe.dport !== undefined ? { dport: probe.dport } : {}), ctstate: ['NEW'] };
    steps.push(this.step('route', `into the host by the gateway port ${gw}${this.networkOfPort(gw)}`, { dev: gw }));
    let route = await this.o.links.routeTo(packet.dst);
    if (route?.local) {
      // The nat table's PREROUTING: a published port of the host's address takes it to its container.
      const dnat = evaluateChain(rules.dnat, packet);
      if (dnat.hit?.target === 'DNAT' && dnat.hit.toDestination) {
        const to = parseTo(dnat.hit.toDestination);
        steps.push(this.iptables('nat', 'OVSNET-DNAT', dnat.hit, `a published port: ${probe.dst}:${probe.dport} is taken to ${dnat.hit.toDestination}${this.containerAt(to.address, host)}`));
        packet = { ...packet, dst: to.address, ...(to.port !== undefined ? { dport: to.port } : {}), ctstate: ['NEW', 'DNAT'] };
        route = await this.o.links.routeTo(packet.dst);
      } else {
        steps.push(this.step('route', `${probe.dst} is this host's own address: the packet is for the host itself`, { dev: route.dev }));
        const input = evaluateChain(rules.input, packet);
        if (input.hit?.target === 'DROP') {
          steps.push(this.iptables('mangle', 'OVSNET-INPUT', input.hit, 'the network is --internal: it reaches nothing on the host'));
          return report('dropped', `dropped by the plugin's rule ${input.hit.number} of OVSNET-INPUT (mangle): the network is --internal and reaches nothing outside it`);
        }
        return report('host', `delivered to the host itself (${route.dev}); the host's own INPUT rules, which are not the plugin's, are not evaluated`);
      }
    }
    if (!route) {
      steps.push(this.step('route', `the host has no route to ${packet.dst}`, {}));
      // What drops everything from an --internal network drops it wherever it would go.
      const internal = network.spec.internal ? evaluateChain(rules.isolate, packet).hit : undefined;
      if (internal?.target === 'DROP') {
        steps.push(this.iptables('mangle', 'OVSNET-ISOLATE', internal, 'the network is --internal: it reaches nothing outside it'));
        return report('dropped', `dropped by the host (no route to ${packet.dst}), and by the plugin's rule ${internal.number} of OVSNET-ISOLATE (mangle) wherever it went: the network is --internal and reaches nothing outside it`);
      }
      return report('dropped', `dropped by the host: no route to ${packet.dst}`);
    }
    packet = { ...packet, out: route.dev };
    steps.push(this.step('route', `the host routes ${packet.dst} by ${route.dev}${this.networkOfPort(route.dev)}`, { dev: route.dev }));
    const isolate = evaluateChain(rules.isolate, packet);
    this.unevaluated(steps, 'OVSNET-ISOLATE', isolate.unknown);
    if (isolate.hit?.target === 'DROP') {
      const why = network.spec.internal ? 'the network is --internal: it reaches nothing outside it' : isolate.hit.comment === 'ovsnet:foreign' ? "networks of the plugin and other container networks (Docker's bridges) never reach each other through the host" : isolate.hit.rule.startsWith('-i') || route.dev.startsWith(GATEWAY_PREFIX) ? "the plugin's networks never reach each other through the host" : 'nothing new enters a nat network but published ports';
      steps.push(this.iptables('mangle', 'OVSNET-ISOLATE', isolate.hit, why));
      return report('dropped', `dropped by the plugin's rule ${isolate.hit.number} of OVSNET-ISOLATE (mangle): ${why}`);
    }
    steps.push(this.step('iptables', 'no isolation rule of the plugin (mangle OVSNET-ISOLATE) drops it', { table: 'mangle', chain: 'OVSNET-ISOLATE' }));
    const forward = evaluateChain(rules.filter, packet);
    steps.push(
      forward.hit
        ? this.iptables('filter', 'OVSNET-FORWARD', forward.hit, `the plugin accepts it (rules of FORWARD before the plugin's jump, Docker's or the host's, are not evaluated)`)
        : this.step('iptables', "no rule of the plugin's OVSNET-FORWARD accepts it: FORWARD's other rules and its policy decide", { table: 'filter', chain: 'OVSNET-FORWARD' }),
    );
    const nat = evaluateChain(rules.nat, packet);
    let source = packet.src;
    if (nat.hit?.target === 'MASQUERADE') {
      source = `the address of ${route.dev}`;
      steps.push(this.iptables('nat', 'OVSNET-POSTROUTING', nat.hit, `masqueraded: it leaves with ${source} as its source (gateway_mode=nat)`));
    } else {
      steps.push(this.step('iptables', `not masqueraded: it leaves with its own source ${packet.src}`, { table: 'nat', chain: 'OVSNET-POSTROUTING' }));
    }
    const next = [...this.o.state.networks.values()].find((n) => n.gatewayPort === route!.dev && n.state === 'ready');
    if (!next) return report('leaves', `leaves this host by ${route.dev} to ${packet.dst}${packet.dport !== undefined ? `:${packet.dport}` : ''}, from ${source}`);
    // Into another network of the plugin (routed between networks, or a published port's hairpin).
    const target = [...this.o.state.endpoints.values()].find((e) => e.networkId === next.id && plain(probe.family === 4 ? e.address : e.addressIpv6) === packet.dst);
    if (target && !host.names.has(target.id)) await this.learnNames(host, next.id);
    const into: Probe = { ...probe, vlan: undefined, srcMac: host.macs.get(route.dev) ?? BROADCAST, dstMac: target?.mac ?? BROADCAST, src: nat.hit?.target === 'MASQUERADE' ? (next.ipv4[0]?.gateway ?? probe.src) : probe.src, dst: packet.dst, ...(packet.dport !== undefined ? { dport: packet.dport } : {}) };
    const second = await this.bridge(next, route.dev, { ...into, vlan: undefined } as Probe, host, steps);
    if (second.dropped) return report('dropped', second.dropped);
    const delivered = target && second.outputs.find((p) => p.role === 'container' && p.endpointId === target.id);
    if (delivered) return report('delivered', `delivered to ${describePort(delivered)}`);
    return report('leaves', `sent to ${second.outputs.map(describePort).join(', ') || 'nowhere'} on network ${next.id.slice(0, 12)}`);
  }

  private iptables(table: string, chain: string, hit: { number: number; rule: string; target: string }, says: string): TraceStep {
    return this.step('iptables', `${table} ${chain}, rule ${hit.number} (-j ${hit.target}): ${says}`, { table, chain, number: hit.number, rule: hit.rule });
  }

  private unevaluated(steps: TraceStep[], chain: string, unknown: ReadonlyArray<{ number: number; rule: string; why: string }>): void {
    for (const u of unknown) steps.push(this.step('iptables', `${chain} rule ${u.number} was not evaluated: ${u.why}`, { chain, number: u.number, rule: u.rule }));
  }

  private step(at: TraceStep['at'], says: string, detail: Record<string, unknown>): TraceStep {
    return { at, host: this.here, says, detail };
  }

  private networkOfPort(dev: string): string {
    const n = [...this.o.state.networks.values()].find((x) => x.gatewayPort === dev);
    return n ? ` (the gateway port of network ${n.id.slice(0, 12)})` : '';
  }

  private containerAt(address: string, host: HostView): string {
    const e = [...this.o.state.endpoints.values()].find((x) => plain(x.address) === address || plain(x.addressIpv6) === address);
    return e ? ` (${describePort(this.ref(e.hostIf, host))})` : '';
  }

  /** A port of this host, named after what it is for. */
  private ref(port: string, host: HostView): PortRef {
    const ids = host.owned.get(port);
    const role = ids?.[ROLE_KEY];
    const endpoint = role === 'endpoint' ? this.o.state.endpoints.get(ids![ENDPOINT_KEY] ?? '') : [...this.o.state.endpoints.values()].find((e) => e.hostIf === port);
    if (endpoint) {
      const name = host.names.get(endpoint.id);
      return { port, role: 'container', networkId: endpoint.networkId, endpointId: endpoint.id, ...(name ? { name } : {}), address: plain(endpoint.address) ?? plain(endpoint.addressIpv6) ?? '', host: this.here };
    }
    const network = ids?.[NETWORK_KEY];
    switch (role) {
      case 'gateway':
        return { port, role: 'gateway', ...(network ? { networkId: network } : {}) };
      case 'uplink':
        return { port, role: 'uplink' };
      case 'tunnel':
        return { port, role: 'tunnel', ...(ids?.[PEER_KEY] ? { remote: ids[PEER_KEY] } : {}), ...(network ? { networkId: network } : {}) };
      case 'spare':
        return { port, role: 'spare' };
    }
    const gatewayOf = [...this.o.state.networks.values()].find((n) => n.gatewayPort === port);
    if (gatewayOf) return { port, role: 'gateway', networkId: gatewayOf.id };
    if ([...this.o.state.networks.values()].some((n) => n.spec.bridge === port)) return { port, role: 'bridge' };
    if ([...this.o.state.networks.values()].some((n) => n.spec.mode === 'vlan' && n.spec.uplink === port)) return { port, role: 'uplink' };
    return { port, role: 'other' };
  }

  private async hostView(networkId: string): Promise<HostView> {
    const [snapshot, dp, macs] = await Promise.all([this.o.ovs.snapshot(), this.o.tracing.datapathPorts(), this.o.tracing.macs()]);
    const view: HostView = {
      dp: parseDpifShow(dp),
      owned: new Map(snapshot.ports.map((p) => [p.name, p.externalIds])),
      ofports: new Map(snapshot.ports.map((p) => [p.name, p.ofport])),
      macs,
      names: new Map(),
    };
    await this.learnNames(view, networkId);
    return view;
  }

  private async learnNames(view: HostView, networkId: string): Promise<void> {
    const names = await this.o.docker?.containerNames(networkId).catch(() => undefined);
    for (const [endpointId, name] of names ?? []) view.names.set(endpointId, name);
  }
}

function plain(address: string | undefined): string | undefined {
  return address ? address.split('/')[0] : undefined;
}

/** DNAT's --to-destination: "10.0.0.5:80" or "[fd00::5]:80". */
function parseTo(text: string): { address: string; port: number | undefined } {
  const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(text) ?? /^([^:]+)(?::(\d+))?$/.exec(text);
  return m ? { address: m[1]!, port: m[2] ? Number(m[2]) : undefined } : { address: text, port: undefined };
}
