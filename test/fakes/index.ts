/**
 * In-memory implementations of the drivers' ports, for unit tests. Each one
 * records what it was asked to do and can be told to fail.
 */
import type { HostRoute } from '../../src/domain/admission.js';
import type { FirewallRules } from '../../src/domain/firewall.js';
import { type ObservedFlows, type PortFlows, cookieMatches, isOwnedCookie } from '../../src/domain/flows.js';
import type { PortHolder } from '../../src/domain/published.js';
import type { AddressRecord, Datapath } from '../../src/domain/records.js';
import type { BridgeSpec, ObservedFirewall, ObservedLink } from '../../src/domain/host.js';
import { type NbAcl, type NbAclSpec, type NbPort, type NbPortSpec, type NbSwitch } from '../../src/domain/ovn.js';
import { type NbView } from '../../src/domain/ovn-diff.js';
import { type NbRouter, type RouterAttachment, type RouterPolicy, attachmentGaps, externalPortName, gatewayPortNames, hasGaps } from '../../src/domain/ovn-router.js';
import { canonicalJson } from '../../src/domain/options.js';
import type {
  DatapathProbe,
  HostPorts,
  DockerNetwork,
  DockerView,
  Firewall,
  Links,
  NbScope,
  Northbound,
  Southbound,
  RouterGateway,
  ObservedBridge,
  ObservedPort,
  Ovs,
  PortSpec,
  Snapshot,
  Store,
  StoreOp,
  Sysctl,
} from '../../src/driver/ports.js';
import { storeKey } from '../../src/driver/ports.js';
import { conflict, internal } from '../../src/errors.js';
import { OWNER_KEY, OWNER_VALUE, VETH_GROUP } from '../../src/domain/names.js';

export class MemoryStore implements Store {
  readonly data = new Map<string, unknown>();
  commits = 0;
  failNext: Error | undefined;

  async load(): Promise<Snapshot> {
    const of = <T>(kind: string) => [...this.data].filter(([k]) => k.startsWith(`${kind}:`)).map(([, v]) => structuredClone(v) as T);
    const addresses = of<AddressRecord>('address');
    return { networks: of('network'), endpoints: of('endpoint'), pools: of('pool'), addresses: (async function* () { yield addresses; })(), names: of('name') };
  }

  async commit(ops: readonly StoreOp[]): Promise<void> {
    if (this.failNext) {
      const err = this.failNext;
      this.failNext = undefined;
      throw err;
    }
    this.commits++;
    for (const op of ops) {
      if (op.type === 'del') {
        this.data.delete(`${op.kind}:${op.key}`);
      } else {
        this.data.set(`${op.kind}:${storeKey(op)}`, structuredClone(op.value));
      }
    }
  }

  async close(): Promise<void> {}

  count(kind: string): number {
    return [...this.data.keys()].filter((k) => k.startsWith(`${kind}:`)).length;
  }
}

/** A port as a test writes it: the fields a real port always has may be left out. */
export type FakePort = Pick<PortSpec, 'bridge' | 'name' | 'type' | 'tag' | 'externalIds'> & Partial<PortSpec> & { error?: string };

/** A bridge as a test writes it; its port list is worked out from the ports. */
export type FakeBridge = Omit<ObservedBridge, 'ports' | 'failMode'> & { ports?: readonly string[]; failMode?: string };

export class FakeOvs implements Ovs {
  readonly bridges = new Map<string, FakeBridge>();
  readonly ports = new Map<string, FakePort>();
  readonly calls: string[] = [];
  /** Port names whose addPort fails. */
  readonly failAddPort = new Set<string>();
  /** While set, deletePort waits for it (an ovsdb-server slow to answer). */
  deleteGate: Promise<void> | undefined;
  /** OpenFlow port numbers, given out in order as ovs-vswitchd does. */
  readonly ofports = new Map<string, number>();
  private nextOfport = 1;
  /** Per bridge: flows by (priority, match), each with its cookie and text. */
  readonly flowTables = new Map<string, Map<string, { cookie: string; text: string }>>();
  readonly meterTables = new Map<string, Map<number, { kbps: number; burstKbit: number }>>();

  async snapshot(): Promise<{ bridges: ObservedBridge[]; ports: ObservedPort[] }> {
    const bridges = [...this.bridges.values()].map((b) => ({
      name: b.name,
      datapathType: b.datapathType,
      failMode: b.failMode ?? '',
      externalIds: { ...b.externalIds },
      ports: [b.name, ...[...this.ports.values()].filter((p) => p.bridge === b.name).map((p) => p.name)],
    }));
    const ports = [...this.ports.values()]
      .filter((p) => p.externalIds[OWNER_KEY] === OWNER_VALUE)
      .map((p) => ({
        name: p.name,
        bridge: this.bridges.has(p.bridge) ? p.bridge : '',
        type: p.type,
        tag: p.tag,
        trunks: [...(p.trunks ?? [])].sort((a, b) => a - b),
        vlanMode: p.vlanMode,
        options: { ...(p.options ?? {}) },
        protected: p.protected ?? false,
        mtuRequest: p.mtuRequest,
        externalIds: { ...p.externalIds },
        interfaceExternalIds: { ...(p.interfaceExternalIds ?? {}), ...(this.installed.has(p.name) ? { 'ovn-installed': 'true' } : {}) },
        ofport: this.ofports.get(p.name) ?? 1,
        error: p.error,
      }));
    return { bridges, ports };
  }

  /** The Open_vSwitch row's external_ids. */
  readonly system: Record<string, string> = { 'system-id': 'chassis-test', hostname: 'host-test' };
  /** Ports ovn-controller has installed (their interface says ovn-installed=true); `autoInstall` marks every new port. */
  readonly installed = new Set<string>();
  autoInstall = true;

  async systemIds(): Promise<Record<string, string>> {
    return { ...this.system };
  }

  async interfaceIds(name: string): Promise<Record<string, string> | undefined> {
    const port = this.ports.get(name);
    if (!port) return undefined;
    return { ...(port.interfaceExternalIds ?? {}), ...(this.installed.has(name) ? { 'ovn-installed': 'true' } : {}) };
  }

  async ensureBridge(spec: BridgeSpec): Promise<{ created: boolean; datapathType: string }> {
    this.calls.push(`ensureBridge ${spec.name}`);
    const existing = this.bridges.get(spec.name);
    if (existing) return { created: false, datapathType: existing.datapathType };
    this.bridges.set(spec.name, { name: spec.name, datapathType: spec.datapath, externalIds: { ...spec.externalIds }, ...(spec.failMode ? { failMode: spec.failMode } : {}) });
    return { created: true, datapathType: spec.datapath };
  }

  async secureBridge(name: string): Promise<boolean> {
    this.calls.push(`secureBridge ${name}`);
    const b = this.bridges.get(name);
    if (!b || b.externalIds[OWNER_KEY] !== OWNER_VALUE) return false;
    b.failMode = 'secure';
    return true;
  }

  async deleteOwnedBridge(name: string): Promise<boolean> {
    this.calls.push(`deleteBridge ${name}`);
    const b = this.bridges.get(name);
    if (!b || b.externalIds[OWNER_KEY] !== OWNER_VALUE) return false;
    this.bridges.delete(name);
    for (const [portName, port] of this.ports) if (port.bridge === name) this.ports.delete(portName);
    return true;
  }

  async ofport(name: string): Promise<number | undefined> {
    return this.ports.has(name) ? this.ofports.get(name) : undefined;
  }

  async flows(bridge: string): Promise<ObservedFlows> {
    if (!this.bridges.has(bridge)) throw internal('CommandFailed', `ovs-ofctl: ${bridge} is not a bridge or a socket`);
    return {
      cookies: [...(this.flowTables.get(bridge)?.values() ?? [])].map((f) => f.cookie).filter(isOwnedCookie),
      meters: new Map(this.meterTables.get(bridge) ?? []),
    };
  }

  /** Packets a flow has matched, by cookie (0 unless a test sets it). */
  readonly packets = new Map<string, number>();

  async flowPackets(bridge: string): Promise<Map<string, number>> {
    const { cookies } = await this.flows(bridge);
    return new Map(cookies.map((c) => [c, this.packets.get(c) ?? 0]));
  }

  async setPortFlows(flows: PortFlows, options: { before?: readonly string[]; after?: readonly string[] }): Promise<void> {
    this.calls.push(`setPortFlows ${flows.port}`);
    if (!this.bridges.has(flows.bridge)) throw internal('CommandFailed', `ovs-ofctl: ${flows.bridge} is not a bridge or a socket`);
    const table = this.flowTables.get(flows.bridge) ?? new Map<string, { cookie: string; text: string }>();
    this.flowTables.set(flows.bridge, table);
    const drop = (selectors: readonly string[]) => {
      for (const [key, f] of table) if (selectors.some((s) => cookieMatches(f.cookie, s))) table.delete(key);
    };
    if (flows.meter) {
      const meters = this.meterTables.get(flows.bridge) ?? new Map<number, { kbps: number; burstKbit: number }>();
      meters.set(flows.meter.id, { kbps: flows.meter.kbps, burstKbit: flows.meter.burstKbit });
      this.meterTables.set(flows.bridge, meters);
    }
    drop(options.before ?? []);
    for (const f of flows.flows) table.set(f.text.split(',actions=')[0]!, { cookie: f.cookie, text: f.text });
    drop(options.after ?? []);
  }

  async countFlows(bridge: string, selector: string): Promise<number> {
    return [...(this.flowTables.get(bridge)?.values() ?? [])].filter((f) => cookieMatches(f.cookie, selector)).length;
  }

  /** What the plugin wrote here; a test that deletes flows behind its back sets `expected` to say what it had. */
  expected = new Map<string, number>();
  expectedFlows(bridge: string): number {
    return this.expected.get(bridge) ?? [...(this.flowTables.get(bridge)?.values() ?? [])].filter((f) => isOwnedCookie(f.cookie)).length;
  }

  watchedBridges(): string[] {
    return [...this.watched];
  }

  watched: string[] = [];
  watchFlows(bridges: readonly string[], _onLost: (bridge: string) => void, options: { add?: boolean } = {}): void {
    this.watched = options.add ? [...new Set([...this.watched, ...bridges])] : [...bridges];
  }

  async deleteFlows(bridge: string, cookies: readonly string[], meters: readonly number[] = []): Promise<void> {
    this.calls.push(`deleteFlows ${bridge} ${cookies.join(' ')}`);
    const table = this.flowTables.get(bridge);
    if (table) for (const [key, f] of table) if (cookies.some((s) => cookieMatches(f.cookie, s))) table.delete(key);
    for (const id of meters) this.meterTables.get(bridge)?.delete(id);
  }

  async addPort(spec: PortSpec): Promise<number> {
    this.calls.push(`addPort ${spec.name}`);
    if (!this.bridges.has(spec.bridge)) throw conflict('BridgeMissing', `OVS bridge ${spec.bridge} does not exist`);
    if (this.failAddPort.has(spec.name)) throw internal('PortFailed', `OVS could not add port ${spec.name}`);
    const existing = this.ports.get(spec.name);
    if (existing && existing.externalIds[OWNER_KEY] !== OWNER_VALUE) throw conflict('NotOwned', `OVS port ${spec.name} was not created by ovsnet; leaving it alone`);
    this.ports.set(spec.name, structuredClone({ ...spec }));
    // A port made again keeps its number, as ovs-vswitchd keeps an interface's ofport.
    if (!this.ofports.has(spec.name)) this.ofports.set(spec.name, this.nextOfport++);
    if (this.autoInstall && spec.interfaceExternalIds['iface-id']) this.installed.add(spec.name);
    return this.ofports.get(spec.name)!;
  }

  async updatePort(spec: PortSpec): Promise<number> {
    this.calls.push(`updatePort ${spec.name}`);
    const port = this.ports.get(spec.name);
    if (!port || port.externalIds[OWNER_KEY] !== OWNER_VALUE) throw conflict('NotOwned', `OVS port ${spec.name} is not an ovsnet port`);
    this.ports.set(spec.name, {
      ...port,
      tag: spec.tag,
      trunks: [...spec.trunks],
      vlanMode: spec.vlanMode,
      protected: spec.protected,
      options: { ...spec.options },
      mtuRequest: spec.mtuRequest,
      externalIds: { ...port.externalIds, ...spec.externalIds },
      interfaceExternalIds: { ...(port.interfaceExternalIds ?? {}), ...spec.interfaceExternalIds },
    });
    if (this.autoInstall && spec.interfaceExternalIds['iface-id']) this.installed.add(spec.name);
    return this.ofports.get(spec.name)!;
  }

  async deletePort(name: string): Promise<boolean> {
    this.calls.push(`deletePort ${name}`);
    if (this.deleteGate) await this.deleteGate;
    const port = this.ports.get(name);
    if (!port) return false;
    if (port.externalIds[OWNER_KEY] !== OWNER_VALUE) throw conflict('NotOwned', `OVS port ${name} was not created by ovsnet; leaving it alone`);
    this.ports.delete(name);
    return true;
  }
}

export interface FakeLink {
  kind: string;
  mtu: number;
  group?: number;
  up?: boolean;
  mac?: string;
  peer?: string;
  addresses: string[];
  txOff: boolean;
}

export class FakeLinks implements Links {
  readonly links = new Map<string, FakeLink>();
  readonly calls: string[] = [];
  hostRoutes: Record<4 | 6, string[]> = { 4: [], 6: [] };
  /** Routes with their device, next hop or table, beside the bare destinations of hostRoutes. */
  hostRouteDetails: HostRoute[] = [];
  /** Where routeTo sends each address; `local` ones are the host's own. */
  readonly routeTable = new Map<string, { dev: string; local: boolean }>();
  readonly defaultDevices: string[] = [];
  failCreate: Error | undefined;
  /** While set, deleteLink waits for it (a kernel slow to delete). */
  deleteGate: Promise<void> | undefined;

  async createVeth(options: { host: string; peer: string; mtu: number; peerMac: string; txOffloadOff?: boolean }): Promise<void> {
    this.calls.push(`createVeth ${options.host} ${options.peer}${options.txOffloadOff ? ' txOff' : ''}`);
    if (this.failCreate) throw this.failCreate;
    this.links.delete(options.host);
    this.links.delete(options.peer);
    const txOff = options.txOffloadOff ?? false;
    this.links.set(options.host, { kind: 'veth', mtu: options.mtu, up: true, group: VETH_GROUP, peer: options.peer, addresses: [], txOff });
    this.links.set(options.peer, { kind: 'veth', mtu: options.mtu, mac: options.peerMac, peer: options.host, addresses: [], txOff });
  }

  async disableTxOffload(names: readonly string[]): Promise<void> {
    for (const name of names) {
      this.calls.push(`txOff ${name}`);
      const link = this.links.get(name);
      if (link) link.txOff = true;
    }
  }

  /** Link-local addresses of containers' interfaces, by sandbox key and MAC (what linkLocalIn finds). */
  readonly sandboxes = new Map<string, Map<string, string>>();

  async linkLocalIn(sandbox: string, mac: string): Promise<string | undefined | null> {
    const found = this.sandboxes.get(sandbox);
    return found ? found.get(mac) : null;
  }

  async isolateVeth(name: string): Promise<void> {
    this.calls.push(`isolateVeth ${name}`);
    const link = this.links.get(name);
    if (link) link.group = VETH_GROUP;
  }

  async deleteLink(name: string): Promise<boolean> {
    this.calls.push(`deleteLink ${name}`);
    if (this.deleteGate) await this.deleteGate;
    const link = this.links.get(name);
    if (!link) return false;
    this.links.delete(name);
    if (link.peer) this.links.delete(link.peer);
    return true;
  }

  async configureAddresses(name: string, options: { mtu: number; addresses: readonly string[] }): Promise<void> {
    this.calls.push(`configure ${name} ${options.addresses.join(',')}`);
    this.links.set(name, { kind: 'internal', mtu: options.mtu, up: true, addresses: [...options.addresses], txOff: false });
  }

  async list(): Promise<Map<string, ObservedLink>> {
    return new Map([...this.links].map(([name, l]) => [name, { kind: l.kind, up: l.up ?? true, mtu: l.mtu, group: l.group ?? 0 }]));
  }

  async addresses(): Promise<Map<string, string[]>> {
    return new Map([...this.links].filter(([, l]) => l.addresses.length > 0).map(([name, l]) => [name, [...l.addresses]]));
  }

  async routes(family: 4 | 6): Promise<HostRoute[]> {
    return [...this.hostRoutes[family].map((dst) => ({ dst })), ...this.hostRouteDetails.filter((r) => r.dst.includes(':') === (family === 6))];
  }

  async routeTo(address: string): Promise<{ dev: string; local: boolean } | undefined> {
    return this.routeTable.get(address);
  }

  async defaultRouteDevices(): Promise<string[]> {
    return [...this.defaultDevices];
  }
}

export class FakeFirewall implements Firewall {
  current: FirewallRules | undefined;
  syncs = 0;

  async sync(rules: FirewallRules): Promise<void> {
    this.syncs++;
    this.current = rules;
  }

  async read(): Promise<ObservedFirewall> {
    const text = (rules: readonly (readonly string[])[] | undefined) => (rules ?? []).map((r) => r.join(' '));
    const c = this.current;
    return {
      filter4: text(c?.v4.filter),
      nat4: text(c?.v4.nat),
      dnat4: text(c?.v4.dnat),
      filter6: text(c?.v6.filter),
      nat6: text(c?.v6.nat),
      dnat6: text(c?.v6.dnat),
      isolate4: text(c?.v4.isolate),
      input4: text(c?.v4.input),
      isolate6: text(c?.v6.isolate),
      input6: text(c?.v6.input),
      raw4: text(c?.v4.raw),
      raw6: text(c?.v6.raw),
      jumps: c !== undefined,
    };
  }
}

export class FakeSysctl implements Sysctl {
  forwarding = false;
  /** Interfaces that take router advertisements and redirects (every interface the kernel makes does). */
  readonly refused = new Set<string>();

  async routerAdvice(name: string): Promise<{ acceptRa: boolean; acceptRedirects: boolean } | undefined> {
    const taken = !this.refused.has(name);
    return { acceptRa: taken, acceptRedirects: taken };
  }

  async refuseRouterAdvice(name: string): Promise<void> {
    this.refused.add(name);
  }

  async enableIpv4Forwarding(): Promise<void> {
    this.forwarding = true;
  }

  async ipv4Forwarding(): Promise<boolean> {
    return this.forwarding;
  }
}

export class FakeHostPorts implements HostPorts {
  /** Ports held on the host by others (listening programs, Docker's bridge). */
  readonly held: PortHolder[] = [];
  range: [number, number] = [32768, 60999];

  async inUse(): Promise<PortHolder[]> {
    return [...this.held];
  }

  async ephemeralRange(): Promise<[number, number]> {
    return this.range;
  }
}

export class FakeProbe implements DatapathProbe {
  constructor(public datapath: Datapath = 'netdev') {}

  async detect(): Promise<Datapath> {
    return this.datapath;
  }
}

type FakeDockerNetwork = Omit<DockerNetwork, 'endpoints'> & { endpoints: Map<string, { addresses: string[] }> };

export class FakeDocker implements DockerView {
  readonly list: FakeDockerNetwork[] = [];
  down = false;

  async networks(): Promise<DockerNetwork[]> {
    if (this.down) throw new Error('connect ENOENT /var/run/docker.sock');
    return this.list.map((n) => ({ ...n, endpoints: new Map(n.endpoints) }));
  }

  version = '28.5.2';
  firewallBackend: string | undefined = undefined;

  async engine(): Promise<{ version: string; firewallBackend: string | undefined }> {
    if (this.down) throw new Error('connect ENOENT /var/run/docker.sock');
    return { version: this.version, firewallBackend: this.firewallBackend };
  }

  /** Container names by endpoint id, as a test sets them. */
  readonly names = new Map<string, string>();

  async containerNames(networkId: string): Promise<Map<string, string>> {
    if (this.down) throw new Error('connect ENOENT /var/run/docker.sock');
    const network = this.list.find((n) => n.id === networkId);
    return new Map([...(network?.endpoints.keys() ?? [])].filter((ep) => this.names.has(ep)).map((ep) => [ep, this.names.get(ep)!]));
  }

  /** Docker's view as it would be after the given creations, by subnet. */
  add(id: string, subnet: string, endpoints: Record<string, string> = {}, aux: string[] = []): FakeDockerNetwork {
    const network: FakeDockerNetwork = {
      id,
      name: `net-${id.slice(0, 4)}`,
      subnets: [subnet],
      auxAddresses: aux,
      endpoints: new Map(Object.entries(endpoints).map(([ep, address]) => [ep, { addresses: [address] }])),
    };
    this.list.push(network);
    return network;
  }
}

/** The southbound database's chassis, as set by a test. */
export class FakeSouthbound implements Southbound {
  readonly present = new Map<string, { hostname: string; encaps: string[] }>();
  /** The remotes it was opened with (by the OVN backend, from ovn-remote). */
  opened: string[] = [];

  async chassis(): Promise<Map<string, { hostname: string; encaps: string[] }>> {
    return new Map([...this.present].map(([name, c]) => [name, { hostname: c.hostname, encaps: [...c.encaps] }]));
  }

  /** Logical ports bound to chassis, as set by a test. */
  readonly bindings = new Map<string, string>();

  async residents(ports: readonly string[]): Promise<Map<string, { chassis: string; hostname: string }>> {
    const out = new Map<string, { chassis: string; hostname: string }>();
    for (const port of ports) {
      const chassis = this.bindings.get(port);
      if (chassis && this.present.has(chassis)) out.set(port, { chassis, hostname: this.present.get(chassis)!.hostname });
    }
    return out;
  }

  close(): void {}
}

/**
 * An in-memory northbound database with the guarantees the plugin relies on: unique port names,
 * one switch per subnet when created through createSwitch, and a conditional delete. Several
 * "hosts" (worlds) can share one.
 */
export class FakeNorthbound implements Northbound {
  readonly switches = new Map<string, { uuid: string; name: string; externalIds: Record<string, string>; ports: Set<string>; guard: NbAcl[] }>();
  readonly portRows = new Map<string, NbPort>();
  /** When set, every call fails as a cluster without quorum does. */
  down: Error | undefined;
  private next = 1;

  private check(): void {
    if (this.down) throw this.down;
  }

  async view(scope: NbScope = {}): Promise<NbView> {
    this.check();
    const inScope = (s: { externalIds: Record<string, string> }) => !scope.subnets || scope.subnets.includes(s.externalIds['ovsnet-subnet'] ?? '');
    const mine = (p: NbPort) => scope.chassis !== undefined && p.externalIds['ovsnet-chassis'] === scope.chassis.name;
    const ports = new Map<string, NbPort[]>();
    const switches: NbSwitch[] = [];
    for (const sw of this.switches.values()) {
      // As the adapter selects them: by the subnet mark (or, facing a router, on a switch in scope), or of the chassis.
      const marked = (p: NbPort) => !scope.subnets || scope.subnets.includes(p.externalIds['ovsnet-subnet'] ?? '') || (inScope(sw) && p.addresses.includes('router'));
      const read = [...sw.ports].map((id) => this.portRows.get(id)!).filter((p) => scope.ports !== false && (marked(p) || mine(p)));
      const listed = scope.chassis?.hostname !== undefined && sw.externalIds[`ovsnet-host:${scope.chassis.name}`] === scope.chassis.hostname;
      if (!(inScope(sw) || scope.everySwitch || scope.names?.includes(sw.name) || listed || read.length > 0)) continue;
      ports.set(sw.uuid, structuredClone(read));
      switches.push({ uuid: sw.uuid, name: sw.name, externalIds: { ...sw.externalIds }, ...(inScope(sw) ? { guard: structuredClone(sw.guard) } : {}) });
    }
    return { switches, ports, routers: scope.routers ? [...this.routers.keys()].map((uuid) => this.router(uuid)!) : [] };
  }

  async findSwitch(subnet: string): Promise<NbSwitch | undefined> {
    this.check();
    const sw = [...this.switches.values()].find((s) => s.externalIds['ovsnet-subnet'] === subnet);
    return sw && { uuid: sw.uuid, name: sw.name, externalIds: { ...sw.externalIds }, guard: structuredClone(sw.guard) };
  }

  async createSwitch(subnet: string, row: { name: string; externalIds: Record<string, string>; guard: readonly NbAclSpec[] }) {
    const existing = await this.findSwitch(subnet);
    if (existing) return { created: false, sw: existing };
    const uuid = `ls-${this.next++}`;
    const guard = row.guard.map((acl) => ({ ...structuredClone(acl), uuid: `acl-${this.next++}` }));
    this.switches.set(uuid, { uuid, name: row.name, externalIds: { ...row.externalIds }, ports: new Set(), guard });
    return { created: true, sw: { uuid, name: row.name, externalIds: { ...row.externalIds }, guard: structuredClone(guard) } };
  }

  async setGuard(current: NbSwitch, guard: readonly NbAclSpec[]): Promise<boolean> {
    this.check();
    const sw = this.switches.get(current.uuid);
    if (!sw) return false;
    const old = new Set((current.guard ?? []).map((a) => a.uuid));
    sw.guard = [...sw.guard.filter((a) => !old.has(a.uuid)), ...guard.map((acl) => ({ ...structuredClone(acl), uuid: `acl-${this.next++}` }))];
    return true;
  }

  async updateSwitchIds(uuid: string, set: Record<string, string>, remove: readonly string[], ifIds?: Readonly<Record<string, string>>): Promise<boolean> {
    this.check();
    const sw = this.switches.get(uuid);
    if (!sw) return false;
    if (ifIds && JSON.stringify(Object.entries(sw.externalIds).sort()) !== JSON.stringify(Object.entries(ifIds).sort())) return false;
    for (const key of remove) delete sw.externalIds[key];
    Object.assign(sw.externalIds, set);
    return true;
  }

  async deleteSwitchIf(uuid: string, expected: Readonly<Record<string, string>>): Promise<boolean> {
    this.check();
    const sw = this.switches.get(uuid);
    if (!sw || JSON.stringify(Object.entries(sw.externalIds).sort()) !== JSON.stringify(Object.entries(expected).sort())) return false;
    for (const id of sw.ports) this.portRows.delete(id);
    this.switches.delete(uuid);
    return true;
  }

  async addPort(switchUuid: string, port: NbPortSpec) {
    this.check();
    const holder = [...this.portRows.values()].find((p) => p.name === port.name);
    if (holder) return { added: false as const, reason: 'taken' as const, holder: structuredClone(holder) };
    const sw = this.switches.get(switchUuid);
    if (!sw) return { added: false as const, reason: 'no-switch' as const };
    const uuid = `lsp-${this.next++}`;
    this.portRows.set(uuid, { uuid, name: port.name, addresses: [...port.addresses], portSecurity: [...port.portSecurity], externalIds: { ...port.externalIds }, up: false });
    sw.ports.add(uuid);
    return { added: true as const };
  }

  async port(name: string): Promise<NbPort | undefined> {
    this.check();
    const port = [...this.portRows.values()].find((p) => p.name === name);
    return port && structuredClone(port);
  }

  async updatePort(name: string, chassis: string, changes: { addresses: readonly string[]; portSecurity: readonly string[]; externalIds: Record<string, string> }): Promise<boolean> {
    this.check();
    const port = [...this.portRows.values()].find((p) => p.name === name);
    if (!port || port.externalIds['ovsnet-chassis'] !== chassis || port.externalIds[OWNER_KEY] !== OWNER_VALUE) return false;
    this.portRows.set(port.uuid, { ...port, addresses: [...changes.addresses], portSecurity: [...changes.portSecurity], externalIds: { ...port.externalIds, ...changes.externalIds } });
    return true;
  }

  async deletePort(switchUuid: string, name: string, chassis: string, asRead?: Readonly<Record<string, string>>): Promise<boolean> {
    this.check();
    const port = [...this.portRows.values()].find((p) => p.name === name);
    const sw = this.switches.get(switchUuid);
    if (!port || !sw || port.externalIds['ovsnet-chassis'] !== chassis || !sw.ports.has(port.uuid)) return false;
    if (asRead && canonicalJson(port.externalIds) !== canonicalJson(asRead)) return false;
    sw.ports.delete(port.uuid);
    this.portRows.delete(port.uuid);
    return true;
  }

  // ---- which host a chassis name is ----

  /** Chassis_Template_Var rows' external_ids by chassis name. */
  readonly registered = new Map<string, Record<string, string>>();

  async registration(chassis: string): Promise<{ externalIds: Record<string, string> } | undefined> {
    this.check();
    const ids = this.registered.get(chassis);
    return ids && { externalIds: { ...ids } };
  }

  async writeRegistration(chassis: string, set: Record<string, string>, remove: readonly string[], asRead: Readonly<Record<string, string>> | undefined): Promise<boolean> {
    this.check();
    const ids = this.registered.get(chassis);
    if (!asRead) {
      if (ids) return false;
      this.registered.set(chassis, { [OWNER_KEY]: OWNER_VALUE, ...set });
      return true;
    }
    if (!ids || canonicalJson(ids) !== canonicalJson(asRead)) return false;
    for (const key of remove) delete ids[key];
    Object.assign(ids, set);
    if (Object.keys(ids).length === 0) this.registered.delete(chassis);
    return true;
  }

  /** Ports by name, for assertions. */
  named(name: string): NbPort | undefined {
    return [...this.portRows.values()].find((p) => p.name === name);
  }

  // ---- routers ----

  readonly routers = new Map<string, { uuid: string; name: string; externalIds: Record<string, string>; ports: Array<{ uuid: string; name: string; networks: string[]; chassis?: Array<{ chassis: string; priority: number }> }>; nat: Array<{ uuid: string; type: string; logicalIp: string; externalIp: string; subnet: string }>; policies: Array<RouterPolicy & { subnet: string }>; routes: string[] }>();
  readonly groups = new Set<string>();

  private router(uuid: string): NbRouter | undefined {
    const r = this.routers.get(uuid);
    return r && structuredClone({ uuid: r.uuid, name: r.name, externalIds: r.externalIds, ports: r.ports.map((p) => ({ uuid: p.uuid, name: p.name, networks: p.networks })), nat: r.nat.map(({ subnet: _, ...n }) => n), policies: r.policies.map(({ subnet: _, ...p }, i) => ({ uuid: `lrpol-${i}`, ...p })).sort((a, b) => b.priority - a.priority || a.match.localeCompare(b.match)) });
  }

  async findRouter(name: string): Promise<NbRouter | undefined> {
    this.check();
    const r = [...this.routers.values()].find((x) => x.externalIds['ovsnet-router'] === name);
    return r && this.router(r.uuid);
  }

  async createRouter(name: string, externalIds: Record<string, string>) {
    const existing = await this.findRouter(name);
    if (existing) return { created: false, router: existing };
    const uuid = `lr-${this.next++}`;
    this.routers.set(uuid, { uuid, name, externalIds: { ...externalIds }, ports: [], nat: [], policies: [], routes: [] });
    return { created: true, router: this.router(uuid)! };
  }

  async ensureExternalSwitch(physnet: string): Promise<string> {
    this.check();
    const found = [...this.switches.values()].find((s) => s.externalIds['ovsnet-external'] === physnet);
    if (found) return found.uuid;
    const uuid = `ls-${this.next++}`;
    this.switches.set(uuid, { uuid, name: `ovsnet-external-${physnet}`, externalIds: { 'ovsnet-owner': 'ovsnet', 'ovsnet-external': physnet }, ports: new Set(), guard: [] });
    await this.addPort(uuid, { name: `ovsnet-localnet-${physnet}`, addresses: ['unknown'], portSecurity: [], externalIds: { 'ovsnet-owner': 'ovsnet' } });
    return uuid;
  }

  private lrpTaken(name: string): boolean {
    return [...this.routers.values()].some((r) => r.ports.some((p) => p.name === name));
  }

  async addRouterGateway(router: NbRouter, gateway: RouterGateway): Promise<'added' | 'taken' | 'exists' | 'gone'> {
    this.check();
    const lrp = gatewayPortNames(router.name).lrp;
    const r = this.routers.get(router.uuid);
    if (!r || !this.switches.has(gateway.externalSwitchUuid)) return 'gone';
    const outside = externalPortName(gateway.physnet, gateway.address);
    if ([...this.portRows.values()].some((p) => p.name === outside)) return 'taken';
    if (this.lrpTaken(lrp) || this.groups.has(lrp)) return 'exists';
    await this.addPort(gateway.externalSwitchUuid, { name: outside, addresses: ['router'], portSecurity: [], externalIds: { 'ovsnet-owner': 'ovsnet', 'ovsnet-router': router.name } });
    this.groups.add(lrp);
    r.ports.push({ uuid: `lrp-${this.next++}`, name: lrp, networks: [`${gateway.address}/${gateway.prefix}`], chassis: [...gateway.chassis] });
    r.routes.push(`0.0.0.0/0 via ${gateway.nexthop}`);
    return 'added';
  }

  async attachSwitch(routerUuid: string, switchUuid: string, attachment: RouterAttachment): Promise<'added' | 'exists' | 'router-gone'> {
    this.check();
    const r = this.routers.get(routerUuid);
    const sw = this.switches.get(switchUuid);
    if (!r) return 'router-gone';
    if (!sw) throw new Error('switch gone');
    const lsp = this.named(attachment.lsp);
    const gaps = attachmentGaps(this.router(routerUuid)!, lsp !== undefined && sw.ports.has(lsp.uuid), attachment);
    if (!hasGaps(gaps)) return 'exists';
    if (gaps.lrp) r.ports.push({ uuid: `lrp-${this.next++}`, name: attachment.lrp.name, networks: [...attachment.lrp.networks] });
    if (gaps.lsp) await this.addPort(switchUuid, { name: attachment.lsp, addresses: ['router'], portSecurity: [], externalIds: { 'ovsnet-owner': 'ovsnet' } });
    for (const snat of gaps.snat) r.nat.push({ uuid: `nat-${this.next++}`, type: 'snat', logicalIp: snat.logicalIp, externalIp: snat.externalIp, subnet: attachment.subnet });
    r.policies.push(...gaps.policies.map((p) => ({ ...p, subnet: attachment.subnet })));
    return 'added';
  }

  async detachSwitch(routerUuid: string, switchUuid: string, attachment: { lrp: string; lsp: string; subnet: string }): Promise<void> {
    this.check();
    const r = this.routers.get(routerUuid);
    if (r) {
      r.ports = r.ports.filter((p) => p.name !== attachment.lrp);
      r.nat = r.nat.filter((n) => n.subnet !== attachment.subnet);
      r.policies = r.policies.filter((p) => p.subnet !== attachment.subnet);
    }
    const port = this.named(attachment.lsp);
    const sw = this.switches.get(switchUuid);
    if (port && sw?.ports.has(port.uuid)) {
      sw.ports.delete(port.uuid);
      this.portRows.delete(port.uuid);
    }
  }

  async deleteRouterIf(router: NbRouter, physnet: string | undefined): Promise<boolean> {
    this.check();
    const r = this.routers.get(router.uuid);
    if (!r || r.ports.some((p) => p.name !== `ovsnet-gw-${router.name}`)) return false;
    const gateway = r.ports[0];
    this.routers.delete(router.uuid);
    this.groups.delete(`ovsnet-gw-${router.name}`);
    if (gateway && physnet) {
      const outside = this.named(`ovsnet-ext-${physnet}-${gateway.networks[0]!.split('/')[0]}`);
      if (outside) {
        for (const sw of this.switches.values()) sw.ports.delete(outside.uuid);
        this.portRows.delete(outside.uuid);
      }
    }
    return true;
  }
}
