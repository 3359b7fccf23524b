/**
 * The side effects the drivers need, one narrow interface each. Adapters in
 * src/adapters implement them for real; test/fakes implement them in memory.
 */
import type { AddressRecord, Datapath, EndpointRecord, NetworkRecord, PoolRecord } from '../domain/records.js';
import type { FirewallRules } from '../domain/firewall.js';

export interface Snapshot {
  networks: NetworkRecord[];
  endpoints: EndpointRecord[];
  pools: PoolRecord[];
  addresses: AddressRecord[];
}

export type StoreOp =
  | { type: 'put'; kind: 'network'; value: NetworkRecord }
  | { type: 'put'; kind: 'endpoint'; value: EndpointRecord }
  | { type: 'put'; kind: 'pool'; value: PoolRecord }
  | { type: 'put'; kind: 'address'; value: AddressRecord }
  | { type: 'del'; kind: 'network' | 'endpoint' | 'pool' | 'address'; key: string };

/** Durable state. `commit` is atomic: all ops land or none. */
export interface Store {
  load(): Promise<Snapshot>;
  commit(ops: readonly StoreOp[]): Promise<void>;
  close(): Promise<void>;
}

export interface BridgeInfo {
  name: string;
  datapathType: string;
  externalIds: Record<string, string>;
  /** Names of all ports, including the bridge's own local port. */
  ports: string[];
}

export interface PortSpec {
  bridge: string;
  name: string;
  /** OVS interface type: "" for a kernel device (veth), "internal", "vxlan", ... */
  type: string;
  tag: number | undefined;
  externalIds: Record<string, string>;
  mtuRequest?: number;
  /** Interface options, e.g. remote_ip and key of a tunnel. */
  options?: Record<string, string>;
  /** VLANs a trunk port carries (0 means untagged frames). */
  trunks?: readonly number[];
  /** Protected ports never forward to each other (split horizon between tunnels). */
  protected?: boolean;
}

export interface PortInfo {
  name: string;
  bridge: string | undefined;
  type: string;
  tag: number | undefined;
  trunks: number[];
  options: Record<string, string>;
  externalIds: Record<string, string>;
  ofport: number | undefined;
  error: string | undefined;
}

export interface Ovs {
  bridge(name: string): Promise<BridgeInfo | undefined>;
  /** Creates the bridge if missing; an existing bridge is used as it is. */
  ensureBridge(name: string, options: { datapathType: Datapath; externalIds: Record<string, string> }): Promise<{ created: boolean; info: BridgeInfo }>;
  /** Deletes a bridge only if the plugin created it (owner in external_ids). */
  deleteOwnedBridge(name: string): Promise<boolean>;
  /** Adds a port and waits until ovs-vswitchd has it; an owned port of that name is replaced. */
  addPort(spec: PortSpec): Promise<void>;
  /** Deletes a port if it exists; refuses a port the plugin does not own. Returns whether it existed. */
  deletePort(name: string): Promise<boolean>;
  /** Sets the VLANs an owned trunk port carries. */
  setTrunks(name: string, trunks: readonly number[]): Promise<void>;
  /** Any port of that name, owned or not (to refuse taking over someone else's). */
  portExists(name: string): Promise<boolean>;
  listOwnedPorts(): Promise<PortInfo[]>;
  /** Names of all bridges. */
  bridgeNames(): Promise<string[]>;
}

export interface LinkInfo {
  name: string;
  kind: string;
  up: boolean;
  mtu: number;
}

export interface Links {
  createVeth(options: { host: string; peer: string; mtu: number; peerMac: string }): Promise<void>;
  /** Turns TX checksum offload off (the userspace datapath forwards partial checksums as they are). */
  disableTxOffload(names: readonly string[]): Promise<void>;
  /** Deletes a link; returns false if it did not exist. */
  deleteLink(name: string): Promise<boolean>;
  /** Brings a device up with an MTU and exactly these addresses ("10.0.0.1/24"). */
  configureAddresses(name: string, options: { mtu: number; addresses: readonly string[] }): Promise<void>;
  list(): Promise<LinkInfo[]>;
  /** Destinations of the host's routes in all tables, as CIDR text. */
  routes(family: 4 | 6): Promise<string[]>;
  /** How the host reaches an address: the output device, or undefined without a route. `local` when the address is the host's own. */
  routeTo(address: string): Promise<{ dev: string; local: boolean } | undefined>;
  /** Global addresses on a device ("192.168.1.5/24"). */
  addressesOf(name: string): Promise<string[]>;
  /** Devices that carry a default route. */
  defaultRouteDevices(): Promise<string[]>;
}

export interface Firewall {
  /** Makes the plugin's own chains exactly `rules`; touches nothing else but the jumps into them. */
  sync(rules: FirewallRules): Promise<void>;
  /** The rules now in the plugin's chains, as `iptables -S` prints them (without "-A CHAIN "). */
  read(): Promise<{ filter4: string[]; nat4: string[]; filter6: string[] }>;
}

export interface Sysctl {
  enableIpv4Forwarding(): Promise<void>;
  ipv4Forwarding(): Promise<boolean>;
}

export interface DatapathProbe {
  /** The datapath new bridges get when the setting is `auto`. */
  detect(): Promise<Datapath>;
}

export interface DockerNetwork {
  id: string;
  name: string;
  /** Subnets of its IPAM configuration, as Docker shows them. */
  subnets: string[];
  auxAddresses: string[];
  /** endpoint id -> the addresses Docker holds for it (no prefix length) */
  endpoints: Map<string, { addresses: string[] }>;
}

/** What Docker knows; consulted only by the reconciler, in the background. */
export interface DockerView {
  /** Every network of the Docker engine (all drivers). Throws when Docker cannot be asked. */
  networks(): Promise<DockerNetwork[]>;
}
