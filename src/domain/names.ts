/**
 * Names of what the plugin creates in OVS and the kernel. Interface names are
 * at most 15 characters (IFNAMSIZ - 1) and derived from Docker ids, so the same
 * endpoint always maps to the same devices and a retried call finds its own work.
 */
import { createHash } from 'node:crypto';
import { badRequest } from '../errors.js';

/** external_ids keys on every bridge and port the plugin creates. */
export const OWNER_KEY = 'ovsnet-owner';
export const OWNER_VALUE = 'ovsnet';
export const NETWORK_KEY = 'ovsnet-network';
export const ENDPOINT_KEY = 'ovsnet-endpoint';
export const ROLE_KEY = 'ovsnet-role';
export const PEER_KEY = 'ovsnet-peer';

/** `spare`: the host end of a veth pair made ahead of need, parked on a bridge (driver/spares.ts). */
export type PortRole = 'endpoint' | 'gateway' | 'tunnel' | 'uplink' | 'spare';

/** Prefixes are distinct so a name alone says what a device is ("ovsgw+" also matches in iptables). */
export const HOST_VETH_PREFIX = 'ovs';
export const PEER_VETH_PREFIX = 'ovc';
export const GATEWAY_PREFIX = 'ovsgw';
/** Veth pairs made ahead of need (driver/spares.ts): named for no endpoint until one takes them, and keep the name then. */
export const SPARE_HOST_PREFIX = 'ovp';
export const SPARE_PEER_PREFIX = 'ovq';
export const TUNNEL_PREFIX = 'ovt';

/**
 * The device group of the host ends of the plugin's veth pairs. On the userspace datapath a port's device
 * is no bridge port to the kernel: what a container sends arrives at the host's own stack on its host end
 * too (router advertisements, packets to the host's addresses, packets to forward past the guard and the
 * firewall). The firewall drops everything IP arriving from this group (raw table), before anything else.
 */
export const VETH_GROUP = 0x6f76;

const ID = /^[0-9a-f]{64}$/;
/** A swarm object's id (swarmkit's identity.NewID): 25 characters of base 36, which a swarm-scoped network keeps on every node. */
const SWARM_ID = /^[0-9a-z]{25}$/;

export function isDockerId(id: unknown): id is string {
  return typeof id === 'string' && ID.test(id);
}

/** A swarm network's id, as each node's dockerd gives it to the plugin. */
export function isSwarmId(id: unknown): id is string {
  return typeof id === 'string' && SWARM_ID.test(id);
}

/** A network's id: Docker's own (64 hex digits), or the swarm's for a network of `--scope swarm`. */
export function isNetworkId(id: unknown): id is string {
  return typeof id === 'string' && (ID.test(id) || SWARM_ID.test(id));
}

/** What every name derived from a network id is made of (the start of either kind of id). */
export const NETWORK_ID_CHARS = '[0-9a-z]';

/** Host end of an endpoint's veth pair: this one becomes the OVS port. */
export function hostVethName(endpointId: string): string {
  return HOST_VETH_PREFIX + endpointId.slice(0, 12);
}

/** Container end, until Docker moves it into the sandbox and renames it eth<N>. */
export function peerVethName(endpointId: string): string {
  return PEER_VETH_PREFIX + endpointId.slice(0, 12);
}

/** The OVS internal port that carries a network's gateway addresses on the host. */
export function gatewayPortName(networkId: string): string {
  return GATEWAY_PREFIX + networkId.slice(0, 10);
}

/** A tunnel port of a network towards one peer. */
export function tunnelPortName(networkId: string, peer: string): string {
  return TUNNEL_PREFIX + createHash('sha256').update(`${networkId}|${peer}`).digest('hex').slice(0, 12);
}

/** The host end of an endpoint's veth pair: named for its endpoint, or made ahead as a spare. */
export function isHostVethName(name: string): boolean {
  return name.length === 15 && (name.startsWith(HOST_VETH_PREFIX) || name.startsWith(SPARE_HOST_PREFIX)) && /^[0-9a-f]{12}$/.test(name.slice(3));
}

export function isPeerVethName(name: string): boolean {
  return name.length === 15 && (name.startsWith(PEER_VETH_PREFIX) || name.startsWith(SPARE_PEER_PREFIX)) && /^[0-9a-f]{12}$/.test(name.slice(3));
}

/** Both ends of a spare pair, from its 12 hex digits. */
export function sparePairNames(hex: string): { host: string; peer: string } {
  return { host: SPARE_HOST_PREFIX + hex, peer: SPARE_PEER_PREFIX + hex };
}

/** A host end made ahead as a spare (whether or not an endpoint took it since). */
export function isSpareHostName(name: string): boolean {
  return isHostVethName(name) && name.startsWith(SPARE_HOST_PREFIX);
}

const IFNAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$/;

export function isValidInterfaceName(name: string): boolean {
  return typeof name === 'string' && IFNAME.test(name);
}

export const INTERFACE_NAME_RULE =
  "1 to 15 characters from letters, digits, '_', '-' and '.', starting with a letter or digit";

/** Every name that reaches ovs-vsctl, ip, ethtool or iptables passes here first. */
export function assertInterfaceName(name: string, what: string): string {
  if (!isValidInterfaceName(name)) {
    throw badRequest('InvalidName', `invalid ${what} "${name}": must be ${INTERFACE_NAME_RULE}`);
  }
  return name;
}

/**
 * The MAC Docker's bridge driver would give: 02:42 and the IPv4 address. It
 * stays the same when a container with a static address restarts, so its
 * peers' ARP caches stay right.
 */
export function macForIpv4(address: string): string {
  const octets = address.split('/')[0]!.split('.').map((o) => Number(o).toString(16).padStart(2, '0'));
  return ['02', '42', ...octets].join(':');
}

/** A locally administered unicast MAC derived from the endpoint id, for endpoints without IPv4. */
export function macForEndpoint(endpointId: string): string {
  const bytes = ['02'];
  for (let i = 0; i < 10; i += 2) bytes.push(endpointId.slice(i, i + 2));
  return bytes.join(':');
}

const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

export function normaliseMac(text: string): string | undefined {
  const mac = text.toLowerCase();
  if (!MAC.test(mac)) return undefined;
  const first = parseInt(mac.slice(0, 2), 16);
  if (first & 1) return undefined; // multicast bit: not a valid interface address
  if (mac === '00:00:00:00:00:00') return undefined;
  return mac;
}

/** The 12 characters of an id that Docker shows (`docker network ls`), for messages. */
export function short(id: string): string {
  return id.slice(0, 12);
}

/** A stable 32-bit hash of a name: where a host's or a router's search for a free address starts. */
export function hashOf(text: string): number {
  let hash = 0;
  for (const c of text) hash = (hash * 31 + c.charCodeAt(0)) >>> 0;
  return hash;
}
