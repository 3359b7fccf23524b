/**
 * What the plugin persists. Records hold canonical text (addresses already
 * parsed and re-formatted) so that equality of text is equality of meaning.
 */
import type { RateLimit } from './flows.js';
import type { PortRequest, PublishedPort } from './published.js';
import { type NetworkSpec, type OvnSpec, normaliseSpec } from './options.js';
import { internal } from '../errors.js';

export type Datapath = 'system' | 'netdev';
/** The datapath setting: a datapath, or `auto` (system when the kernel module is loaded). */
export type DatapathSetting = 'auto' | Datapath;

export interface SubnetRecord {
  /** Address space as Docker sent it ("local", "global", or "LocalDefault" for Docker's own IPAM). */
  readonly addressSpace: string;
  /** Canonical CIDR of the pool. */
  readonly pool: string;
  /** Gateway address without prefix length, if any. */
  readonly gateway: string | undefined;
  readonly auxAddresses: Readonly<Record<string, string>>;
}

export type NetworkState = 'creating' | 'ready';

/** Where an OVN network lives in the northbound database. */
export interface OvnRecord {
  /** Name of its logical switch: the same on every host of the subnet. */
  readonly switchName: string;
  /** What identifies it there: its first subnet (IPv4 if it has one). */
  readonly subnet: string;
}

export interface NetworkRecord {
  readonly id: string;
  readonly spec: NetworkSpec;
  readonly ipv4: readonly SubnetRecord[];
  readonly ipv6: readonly SubnetRecord[];
  /** Name of the OVS internal port holding the gateway addresses, when the gateway lives on the host. */
  readonly gatewayPort: string | undefined;
  /** Tag of the network's ports on the bridge: its vlan, or for an overlay without one, a tag of its own. */
  readonly localTag: number | undefined;
  /** MTU of the containers' interfaces: asked for, or derived from the underlay for overlays. */
  readonly mtu: number;
  /** Datapath of the bridge when the network was set up. */
  readonly datapath: Datapath | undefined;
  readonly state: NetworkState;
  readonly createdAt: string;
  /** Set for OVN networks. */
  readonly ovn?: OvnRecord;
}

/** The record of an OVN network: its spec says so, and it has its switch. */
export type OvnNetworkRecord = NetworkRecord & { readonly spec: OvnSpec; readonly ovn: OvnRecord };

export function isOvnNetwork(network: NetworkRecord): network is OvnNetworkRecord {
  return network.spec.mode === 'ovn' && network.ovn !== undefined;
}

/** A network the OVN backend was handed, as the OVN network it must be (anything else is its caller's bug). */
export function ovnNetwork(network: NetworkRecord): OvnNetworkRecord {
  if (!isOvnNetwork(network)) throw internal('NotOvn', `network ${network.id.slice(0, 12)} (mode=${network.spec.mode}) reached the OVN backend, which serves mode=ovn networks with their switch only`);
  return network;
}

export interface EndpointRecord {
  readonly id: string;
  readonly networkId: string;
  /** "10.0.0.5/24", or "" when the endpoint has no IPv4 address. */
  readonly address: string;
  readonly addressIpv6: string;
  readonly mac: string;
  readonly hostIf: string;
  readonly peerIf: string;
  /** True between a successful Join and the matching Leave. */
  readonly joined: boolean;
  /** When it last joined: Docker lists an endpoint only once its container is up, some time after that. */
  readonly joinedAt?: string;
  readonly sandboxKey: string;
  readonly createdAt: string;
  /** Its own rate limit (--driver-opt rate), instead of its network's. */
  readonly rate?: RateLimit;
  /**
   * The link-local address its container's interface has, read once it had it; until then (and when it
   * cannot be read) the one an interface with its MAC gets (EUI-64), which is the one it has unless its
   * container asks for another (net.ipv6.conf.*.addr_gen_mode).
   */
  readonly linkLocal?: string;
  /** Ports published to it (-p, -P) while it is its container's gateway, with the host ports they got. */
  readonly ports?: readonly PublishedPort[];
  /** What Docker asked for, to know a repeated ProgramExternalConnectivity. */
  readonly portRequests?: readonly PortRequest[];
}

export interface PoolRecord {
  /** "<address space>/<canonical cidr>", opaque to Docker. */
  readonly id: string;
  readonly addressSpace: string;
  readonly pool: string;
  /** The sub-pool that dynamic addresses come from (the pool itself without --ip-range). */
  readonly range: string;
  readonly v6: boolean;
  /** Chosen by the plugin (no --subnet). */
  readonly auto: boolean;
  /** Last address handed out dynamically; the round-robin walk starts after it. */
  readonly cursor: string | undefined;
  /**
   * Addresses containers asked for by name (`--ip`), kept after their release:
   * dynamic allocation leaves them to their owners while other addresses are free.
   */
  readonly statics?: readonly string[];
  readonly createdAt: string;
}

/** A network's gateway, or any other address (containers' and aux addresses look alike to IPAM). */
export type AddressKind = 'gateway' | 'address';

export interface AddressRecord {
  readonly poolId: string;
  /** Canonical address without prefix length. */
  readonly address: string;
  readonly kind: AddressKind;
  readonly createdAt: string;
}

/** "<address space>/<canonical cidr>": the PoolID Docker gets, opaque to it. */
export function poolIdOf(addressSpace: string, pool: string): string {
  return `${addressSpace}/${pool}`;
}

export function addressKey(poolId: string, address: string): string {
  return `${poolId}|${address}`;
}

/**
 * The address a pool last gave a named endpoint (Docker 29 names the endpoint
 * in every RequestAddress: for a container, its name), so that the container
 * gets it again when it asks again, after a dockerd restart say.
 */
export interface NameRecord {
  readonly poolId: string;
  /** The endpoint's name as Docker sends it. */
  readonly name: string;
  readonly address: string;
  /** When it was last handed out; the least recently used go first when a pool has too many. */
  readonly usedAt: string;
}

export function nameKey(poolId: string, name: string): string {
  return `${poolId}|${name}`;
}

/** The address spaces the ovs IPAM driver serves; pools in any other belong to another IPAM driver. */
export const LOCAL_SPACE = 'local';
export const GLOBAL_SPACE = 'global';

export function isOwnAddressSpace(space: string): boolean {
  return space === LOCAL_SPACE || space === GLOBAL_SPACE;
}

/** A network record as stored by any earlier version, in the current shape. */
export function upgradeNetworkRecord(stored: NetworkRecord): NetworkRecord {
  return { ...stored, spec: normaliseSpec(stored.spec) };
}
