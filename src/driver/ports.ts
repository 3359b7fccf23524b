/**
 * The side effects the drivers need, one narrow interface each. Adapters in
 * src/adapters implement them for real; test/fakes implement them in memory,
 * and the contract tests (test/contract) hold both to the same behaviour.
 */
import type { FirewallRules } from '../domain/firewall.js';
import type { ObservedFlows, PortFlows } from '../domain/flows.js';
import type { PortHolder } from '../domain/published.js';
import type { DockerNetwork } from '../domain/drift.js';
import type { BridgeSpec, ObservedBridge, ObservedFirewall, ObservedLink, ObservedPort, PortSpec } from '../domain/host.js';
import type { HostRoute } from '../domain/admission.js';
import type { Registration } from '../domain/ovn-identity.js';
import type { NbAclSpec, NbPort, NbPortSpec, NbSwitch } from '../domain/ovn.js';
import type { NbView } from '../domain/ovn-diff.js';
import type { NbRouter, RouterAttachment } from '../domain/ovn-router.js';
import { type AddressRecord, type Datapath, type EndpointRecord, type NameRecord, type NetworkRecord, type PoolRecord, addressKey, nameKey } from '../domain/records.js';

export type { DockerNetwork, ObservedBridge, ObservedPort, PortSpec };

export interface Snapshot {
  networks: NetworkRecord[];
  endpoints: EndpointRecord[];
  pools: PoolRecord[];
  /**
   * The held addresses in batches, read as they are taken: there can be tens of thousands, and as one list
   * they all outlived young-generation collections while the plugin started (measured at 60 000: 40 MiB more
   * heap after the start, and a quarter more time).
   */
  addresses: AsyncIterable<readonly AddressRecord[]>;
  names: NameRecord[];
}

export type StoreOp =
  | { type: 'put'; kind: 'network'; value: NetworkRecord }
  | { type: 'put'; kind: 'endpoint'; value: EndpointRecord }
  | { type: 'put'; kind: 'pool'; value: PoolRecord }
  | { type: 'put'; kind: 'address'; value: AddressRecord }
  | { type: 'put'; kind: 'name'; value: NameRecord }
  | { type: 'del'; kind: 'network' | 'endpoint' | 'pool' | 'address' | 'name'; key: string };

export type StoreKind = StoreOp['kind'];

/** The key a record is stored under. */
export function storeKey(op: Extract<StoreOp, { type: 'put' }>): string {
  switch (op.kind) {
    case 'address':
      return addressKey(op.value.poolId, op.value.address);
    case 'name':
      return nameKey(op.value.poolId, op.value.name);
    default:
      return op.value.id;
  }
}

/** Durable state. `commit` is atomic: all ops land or none. */
export interface Store {
  load(): Promise<Snapshot>;
  commit(ops: readonly StoreOp[]): Promise<void>;
  close(): Promise<void>;
}

export interface Ovs {
  /** Every bridge with all its port names, and every port carrying the plugin's owner mark: one read. */
  snapshot(): Promise<{ bridges: ObservedBridge[]; ports: ObservedPort[] }>;
  /** Creates the bridge if missing; an existing bridge is used as it is. Returns its datapath type. */
  ensureBridge(spec: BridgeSpec): Promise<{ created: boolean; datapathType: string }>;
  /** Sets an owned bridge's fail_mode to secure and waits until ovs-vswitchd has it; false when it is not the plugin's (or gone). */
  secureBridge(name: string): Promise<boolean>;
  /** Deletes a bridge only if the plugin created it (owner in external_ids). */
  deleteOwnedBridge(name: string): Promise<boolean>;
  /** Adds a port and waits until ovs-vswitchd has it; an owned port of that name is replaced, a foreign one refused. Returns its ofport. */
  addPort(spec: PortSpec): Promise<number>;
  /** Sets an owned port's tag, trunks, VLAN mode, protection, interface options, MTU and external_ids to the spec's, and waits until ovs-vswitchd has them. Returns its ofport. */
  updatePort(spec: PortSpec): Promise<number>;
  /** Deletes a port if it exists; refuses a port the plugin does not own. Returns whether it existed. */
  deletePort(name: string): Promise<boolean>;
  /** The Open_vSwitch row's external_ids: system-id (OVN's chassis name), hostname, ovn-encap-ip, ... */
  systemIds(): Promise<Record<string, string>>;
  /** A port's OpenFlow port number; undefined when there is no such interface or it has none yet. */
  ofport(name: string): Promise<number | undefined>;
  /** The plugin's flows (by the cookie mark) and the meters of a bridge. */
  flows(bridge: string): Promise<ObservedFlows>;
  /** How many packets each of the plugin's flows of a bridge has matched, by cookie (one `ovs-ofctl` run). */
  flowPackets(bridge: string): Promise<Map<string, number>>;
  /** Deletes flows by `before` (cookie/mask each), sets the port's meter and adds its flows, then deletes flows by `after`. */
  setPortFlows(flows: PortFlows, options: { before?: readonly string[]; after?: readonly string[] }): Promise<void>;
  /** How many flows of a bridge have a cookie selected by `selector` (cookie/mask): a small OpenFlow question, no program run. */
  countFlows(bridge: string, selector: string): Promise<number>;
  /** How many of the plugin's flows the bridge should have: what this process wrote and did not delete, or last read. */
  expectedFlows(bridge: string): number;
  /** The bridges watched now (watchFlows). */
  watchedBridges(): string[];
  /** Deletes a bridge's flows by cookie/mask, then the meters of these ids; a missing bridge or meter is no error. */
  deleteFlows(bridge: string, cookies: readonly string[], meters?: readonly number[]): Promise<void>;
  /**
   * Keeps watch on these bridges (and no others; with `add`, as well as the others): `onLost` is told when
   * one comes back after ovs-vswitchd dropped it (a restart, which keeps no flows), so its guard flows can be
   * put back at once.
   */
  watchFlows(bridges: readonly string[], onLost: (bridge: string) => void, options?: { add?: boolean }): void;
  /** An interface's external_ids (ovn-controller marks an installed port `ovn-installed`); undefined when there is no such interface. */
  interfaceIds(name: string): Promise<Record<string, string> | undefined>;
}

export interface Links {
  /**
   * Makes a veth pair, both ends with the MTU, the host end up, in the plugin's device group, without ARP and
   * without an IPv6 link-local address; `txOffloadOff` also turns TX checksum offload off on both.
   */
  createVeth(options: { host: string; peer: string; mtu: number; peerMac: string; txOffloadOff?: boolean }): Promise<void>;
  /** Turns TX checksum offload off (the userspace datapath forwards partial checksums as they are). */
  disableTxOffload(names: readonly string[]): Promise<void>;
  /** Puts an existing host end of a veth pair in the plugin's device group, without ARP or IPv6 link-local address (as createVeth makes it). */
  isolateVeth(name: string): Promise<void>;
  /** Deletes a link; returns false if it did not exist. */
  deleteLink(name: string): Promise<boolean>;
  /** Brings a device up with an MTU and exactly these addresses ("10.0.0.1/24"). */
  configureAddresses(name: string, options: { mtu: number; addresses: readonly string[] }): Promise<void>;
  list(): Promise<Map<string, ObservedLink>>;
  /** Global addresses ("192.168.1.5/24") of every device that has any. */
  addresses(): Promise<Map<string, string[]>>;
  /**
   * The IPv6 link-local address of the interface with this MAC in a container's network namespace (its
   * sandbox key, a path); undefined while it has none there; null when the namespace cannot be entered
   * (gone, or not reachable from where the plugin runs).
   */
  linkLocalIn(sandbox: string, mac: string): Promise<string | undefined | null>;
  /** The host's routes in all tables (unicast, local and blocking ones; its default routes as 0.0.0.0/0 or ::/0). */
  routes(family: 4 | 6): Promise<HostRoute[]>;
  /** How the host reaches an address: the output device, or undefined without a route. `local` when the address is the host's own. */
  routeTo(address: string): Promise<{ dev: string; local: boolean } | undefined>;
  /** Devices that carry a default route. */
  defaultRouteDevices(): Promise<string[]>;
}

export interface Firewall {
  /** Makes the plugin's own chains exactly `rules`; touches nothing else but the jumps into them. */
  sync(rules: FirewallRules): Promise<void>;
  /** The rules now in the plugin's chains, and whether the jumps into them are there. */
  read(): Promise<ObservedFirewall>;
}

/** Who else holds host ports, and where free ones are chosen from (published ports). */
export interface HostPorts {
  /** Sockets listening on the host (TCP) or bound there (UDP), and the ports Docker's own bridge publishes (its DNAT rules). */
  inUse(): Promise<PortHolder[]>;
  /** The kernel's local port range, where a host port is chosen when none is given (as Docker's own allocator does). */
  ephemeralRange(): Promise<[number, number]>;
}

export interface Sysctl {
  enableIpv4Forwarding(): Promise<void>;
  ipv4Forwarding(): Promise<boolean>;
  /**
   * Whether an interface takes router advertisements (IPv6) and redirects (IPv4 or IPv6), which would let
   * what sends them change the host's routes; undefined when there is no such interface.
   */
  routerAdvice(name: string): Promise<{ acceptRa: boolean; acceptRedirects: boolean } | undefined>;
  /** Makes an interface take no router advertisements and no redirects. */
  refuseRouterAdvice(name: string): Promise<void>;
}

export interface DatapathProbe {
  /** The datapath new bridges get when the setting is `auto`. */
  detect(): Promise<Datapath>;
}

/** What OVN mode needs of the northbound database; every row it writes carries the owner mark. */
export interface Northbound {
  /** The plugin's switches (owner mark), with the guard ACLs and ports in scope; and its routers when asked. */
  view(scope?: NbScope): Promise<NbView>;
  /** The plugin's switch of a subnet. */
  findSwitch(subnet: string): Promise<NbSwitch | undefined>;
  /** Makes the switch, with its guard ACLs, unless one of that subnet exists (made by another host meanwhile): then that one, with created false. */
  createSwitch(subnet: string, row: { name: string; externalIds: Record<string, string>; guard: readonly NbAclSpec[] }): Promise<{ created: boolean; sw: NbSwitch }>;
  /** Replaces the plugin's guard ACLs of a switch (as read: `sw.guard`) with `guard`; false when the switch is gone. */
  setGuard(sw: NbSwitch, guard: readonly NbAclSpec[]): Promise<boolean>;
  /** Sets and removes keys of a switch's external_ids (only while they are still `ifIds`, when given); false when the switch is gone or changed. */
  updateSwitchIds(uuid: string, set: Record<string, string>, remove: readonly string[], ifIds?: Readonly<Record<string, string>>): Promise<boolean>;
  /** Deletes a switch (and its ports) only while its external_ids are still `expected`: nobody joined meanwhile. */
  deleteSwitchIf(uuid: string, expected: Readonly<Record<string, string>>): Promise<boolean>;
  /** Adds a port to a switch. `taken`: a port of that name exists (and which); `no-switch`: the switch is gone. */
  addPort(switchUuid: string, port: NbPortSpec): Promise<{ added: true } | { added: false; reason: 'taken'; holder: NbPort | undefined } | { added: false; reason: 'no-switch' }>;
  port(name: string): Promise<NbPort | undefined>;
  /** Sets a port's addresses and port security and some external_ids, if the port carries `owner` (chassis) in ovsnet-chassis; false otherwise. */
  updatePort(name: string, chassis: string, changes: { addresses: readonly string[]; portSecurity: readonly string[]; externalIds: Record<string, string> }): Promise<boolean>;
  /**
   * Deletes a port of a switch if it carries `chassis`, and only while its external_ids are as read (`asRead`,
   * when given: what a decision to delete it was made on; else as this call reads them), so that a claim made
   * meanwhile is never deleted; false when it is not there, not this host's, or changed.
   */
  deletePort(switchUuid: string, name: string, chassis: string, asRead?: Readonly<Record<string, string>>): Promise<boolean>;

  // ---- which host a chassis name is (domain/ovn-identity.ts) ----

  /** The registration of a chassis name (its Chassis_Template_Var row), if there is one. */
  registration(chassis: string): Promise<Registration | undefined>;
  /**
   * Sets and removes keys of a chassis' registration, only while its external_ids are as read (`asRead`;
   * undefined: only while there is no row, which is then made); false when it changed meanwhile.
   */
  writeRegistration(chassis: string, set: Record<string, string>, remove: readonly string[], asRead: Readonly<Record<string, string>> | undefined): Promise<boolean>;

  // ---- routers ----

  /** The plugin's router of that name. */
  findRouter(name: string): Promise<NbRouter | undefined>;
  /** Makes the router unless one of that name exists (made by another host meanwhile): then that one. */
  createRouter(name: string, externalIds: Record<string, string>): Promise<{ created: boolean; router: NbRouter }>;
  /** The outside network's switch, with its localnet port: found, or made once. */
  ensureExternalSwitch(physnet: string): Promise<string>;
  /**
   * Gives a router its way out: a gateway port with `address` on the outside switch, its gateway chassis
   * group and a default route. `taken`: another router has that address; `exists`: a gateway port or chassis
   * group of that router's name is there; `gone`: the router or the outside switch was deleted meanwhile.
   */
  addRouterGateway(router: NbRouter, gateway: RouterGateway): Promise<'added' | 'taken' | 'exists' | 'gone'>;
  /**
   * Connects a switch to a router: adds whatever of the attachment is missing (the router port, the switch's
   * port facing it, the SNAT rule, policies), also when another host adds some at the same time; `exists` when
   * nothing was; `router-gone` when the router was deleted meanwhile.
   */
  attachSwitch(routerUuid: string, switchUuid: string, attachment: RouterAttachment): Promise<'added' | 'exists' | 'router-gone'>;
  /** Disconnects a switch from a router: its router port, the switch's port facing it, its SNAT rules and policies. */
  detachSwitch(routerUuid: string, switchUuid: string, names: { lrp: string; lsp: string; subnet: string }): Promise<void>;
  /** Deletes a router (with its gateway port, outside port and chassis group) only while no network is connected to it. */
  deleteRouterIf(router: NbRouter, physnet: string | undefined): Promise<boolean>;
}

/**
 * What of the northbound database a reader needs. Switches: those of `subnets`, of `names`, and those that
 * list `chassis` (under `hostname`); every switch when `subnets` is not given or `everySwitch` is set. Their
 * guard ACLs and ports: those of `subnets` (every one's when not given; none with `ports: false`), and the
 * ports of `chassis` wherever they are. Routers only when asked.
 */
export interface NbScope {
  readonly subnets?: readonly string[];
  readonly names?: readonly string[];
  readonly chassis?: { readonly name: string; readonly hostname?: string };
  readonly everySwitch?: boolean;
  readonly ports?: boolean;
  readonly routers?: boolean;
}

/** The OVN southbound database, read only. */
export interface Southbound {
  /** The chassis there now (hosts whose ovn-controller runs, or ran and did not leave), by name. */
  chassis(): Promise<Map<string, { hostname: string; encaps: string[] }>>;
  /** The chassis each of these logical ports is bound to, with its hostname (a gateway port's: the active gateway chassis); unbound ones are absent. */
  residents(ports: readonly string[]): Promise<Map<string, { chassis: string; hostname: string }>>;
  close(): void;
}

export interface RouterGateway {
  readonly physnet: string;
  readonly externalSwitchUuid: string;
  /** The router's outside address and its prefix length. */
  readonly address: string;
  readonly prefix: number;
  readonly nexthop: string;
  readonly chassis: ReadonlyArray<{ readonly chassis: string; readonly priority: number }>;
}


/** What Docker knows; consulted only by the reconciler, in the background. */
export interface DockerView {
  /** Every network of the Docker engine (all drivers). Throws when Docker cannot be asked. */
  networks(): Promise<DockerNetwork[]>;
  /** Its version and (Docker 29) firewall backend. Throws when Docker cannot be asked. */
  engine(): Promise<{ version: string; firewallBackend: string | undefined }>;
  /** The names of the containers on one network, by endpoint id (none for a network Docker lacks). Throws when Docker cannot be asked. */
  containerNames(networkId: string): Promise<Map<string, string>>;
}

/** Programs a diagnostic asks (`ovsnet trace`); nothing here changes anything. */
export interface Tracing {
  /** `ovs-appctl ofproto/trace BRIDGE FLOW`: what ovs-vswitchd would do with that packet. */
  ofprotoTrace(bridge: string, flow: string): Promise<string>;
  /** `ovs-appctl dpif/show`: every bridge's ports with their OpenFlow and datapath numbers. */
  datapathPorts(): Promise<string>;
  /** Every device's MAC, by name. */
  macs(): Promise<Map<string, string>>;
  /** `ovn-trace --detailed DATAPATH MICROFLOW` (each stage with its flow) on the southbound database at these remotes. */
  ovnTrace(southbound: string, datapath: string, microflow: string): Promise<string>;
}
