/**
 * OVN networks in the northbound database, as pure decisions: the names of
 * switches and ports, the configuration every host of a subnet must agree
 * on, the logical port that holds an address, and the comparison of this
 * host's records with what the northbound database has (ovn-diff.ts, for the
 * reconciler and `ovsnet doctor`); routers and the outside network are in ovn-router.ts.
 *
 * One logical switch per network, identified by its first subnet (hosts
 * agree on a network by its subnet). One logical port per address held: its
 * name is made of the subnet and the address, and the database's unique
 * index on port names is what makes an address held by one host only.
 */
import { badRequest, conflict } from '../errors.js';
import { OWNER_KEY, OWNER_VALUE, macForIpv4 } from './names.js';
import { canonicalJson, type OvnSpec } from './options.js';
import type { EndpointRecord, OvnRecord, SubnetRecord } from './records.js';

/**
 * Bytes Geneve adds around a container's frame, by underlay family: outer IP (20 or 40) + UDP 8 +
 * Geneve 8 + OVN's option 8 + inner Ethernet 14 (OVN's own GENEVE_TUNNEL_OVERHEAD is 38 plus the IP header).
 */
export const GENEVE_OVERHEAD = { 4: 58, 6: 78 } as const;

/**
 * The largest MTU a container of an OVN network can have: the MTU of the device that holds this host's
 * encapsulation address (or `fallback` when none does) minus Geneve's overhead, with why.
 */
export function geneveLimit(encapIp: string, observed: { addresses: ReadonlyMap<string, readonly string[]>; links: ReadonlyMap<string, { mtu: number }> }, fallback: number): { max: number; why: string } {
  const overhead = GENEVE_OVERHEAD[encapIp.includes(':') ? 6 : 4];
  const dev = [...observed.addresses].find(([, list]) => list.some((a) => a.split('/')[0] === encapIp))?.[0];
  const underlay = (dev && observed.links.get(dev)?.mtu) || fallback;
  return {
    max: underlay - overhead,
    why: dev
      ? `the underlay (MTU ${underlay} on ${dev}, which holds the encapsulation address ${encapIp}) minus Geneve encapsulation takes ${overhead} bytes`
      : `an underlay MTU of ${underlay} is assumed (no device holds the encapsulation address ${encapIp}) and Geneve encapsulation takes ${overhead} bytes`,
  };
}

/** external_ids keys in the northbound database (beside the owner mark). */
export const NB = {
  subnet: 'ovsnet-subnet',
  config: 'ovsnet-config',
  createdBy: 'ovsnet-created-by',
  /** Prefix of a switch key per host that uses the network: `ovsnet-host:<chassis>` = its hostname. */
  hostPrefix: 'ovsnet-host:',
  address: 'ovsnet-address',
  chassis: 'ovsnet-chassis',
  hostname: 'ovsnet-hostname',
  /** The host id (domain/ovn-identity.ts) of the host that made a claim. */
  hostId: 'ovsnet-host-id',
  network: 'ovsnet-network',
  createdAt: 'ovsnet-created-at',
} as const;

/** external_ids keys of the plugin's routers. */
export const ROUTER = {
  name: 'ovsnet-router',
  /** What every host must agree on for a router: its way out. */
  config: 'ovsnet-router-config',
} as const;

/** This host as OVN knows it: the chassis name (OVS system-id) and its hostname. */
export interface Chassis {
  readonly name: string;
  readonly hostname: string;
  /** The host id it registered its name with (domain/ovn-identity.ts). */
  readonly hostId?: string;
}

/** A logical switch as read from the northbound database. */
export interface NbSwitch {
  readonly uuid: string;
  readonly name: string;
  readonly externalIds: Readonly<Record<string, string>>;
  /** The plugin's ACLs on it (its containers' first-hop guard), by uuid; absent when not read. */
  readonly guard?: readonly NbAcl[];
}

/** An ACL as the plugin writes it. */
export interface NbAclSpec {
  readonly direction: 'from-lport';
  readonly priority: number;
  readonly match: string;
  readonly action: 'drop';
  readonly externalIds: Readonly<Record<string, string>>;
}

export interface NbAcl extends NbAclSpec {
  readonly uuid: string;
}

/** Above any ACL an operator is likely to write, below OVN's limit (32767). */
const GUARD_PRIORITY = 32000;

/**
 * The ACLs that hold an OVN network's containers to what port security leaves open: no router
 * advertisement or redirect (ICMPv6 or ICMP), no DHCP or DHCPv6 server message, unless the network allows them
 * (-o allow_ra, -o allow_dhcp_server). Port security holds their MAC and addresses and neighbour
 * discovery (its link-local address is the one of its MAC, EUI-64); these are the rest.
 */
export function guardAcls(network: OvnRecord, options: { allowRa: boolean; allowDhcpServer: boolean }): NbAclSpec[] {
  // No port is named: ovn-controller installs nothing of a match that names a port it does not know (a
  // router port before its router is attached), and the plugin's router ports send neither.
  const matches = [
    ...(options.allowRa ? [] : ['icmp6 && (icmp6.type == 134 || icmp6.type == 137)', 'icmp4 && icmp4.type == 5']),
    // A server's messages: from its port, and to a client's (a client takes an offer from any source port).
    ...(options.allowDhcpServer ? [] : ['(ip4 && udp.src == 67) || (ip6 && udp.src == 547)', '(ip4 && udp.dst == 68) || (ip6 && udp.dst == 546)']),
  ];
  return matches.map((match) => ({ direction: 'from-lport', priority: GUARD_PRIORITY, match, action: 'drop', externalIds: { [OWNER_KEY]: OWNER_VALUE, [NB.subnet]: network.subnet } }));
}

/** Whether a switch carries exactly these guard ACLs (by match). */
export function sameGuard(sw: NbSwitch, want: readonly NbAclSpec[]): boolean {
  const key = (list: readonly Pick<NbAclSpec, 'match' | 'priority' | 'action' | 'direction'>[]) => list.map((a) => `${a.direction}|${a.priority}|${a.action}|${a.match}`).sort().join('\n');
  return key(sw.guard ?? []) === key(want);
}

/** A logical switch port as read from the northbound database. */
export interface NbPort {
  readonly uuid: string;
  readonly name: string;
  readonly addresses: readonly string[];
  readonly portSecurity: readonly string[];
  readonly externalIds: Readonly<Record<string, string>>;
  readonly up: boolean | undefined;
}

/** A port as the plugin writes it. */
export interface NbPortSpec {
  readonly name: string;
  readonly addresses: readonly string[];
  readonly portSecurity: readonly string[];
  readonly externalIds: Readonly<Record<string, string>>;
}

// ---- names ----

/** The subnet that identifies a network: its first IPv4 subnet, or its first IPv6 one. */
export function identifyingSubnet(ipv4: readonly SubnetRecord[], ipv6: readonly SubnetRecord[]): string {
  const first = ipv4[0] ?? ipv6[0];
  if (!first) throw badRequest('NoSubnet', 'an OVN network needs a subnet');
  return first.pool;
}

/** A subnet as it goes into names of the northbound database's rows. */
export const keyOf = (subnet: string) => subnet.replace(/[/:]/g, '_');

export function defaultSwitchName(subnet: string): string {
  return `ovsnet-${keyOf(subnet)}`;
}

/** The logical port that holds `address` of a network: also the iface-id its OVS interface carries. */
export function portName(network: OvnRecord, address: string): string {
  return `ovsnet-${keyOf(network.subnet)}-${address}`;
}

/** The address that names an endpoint's logical port: its IPv4 address, or its IPv6 one. */
export function primaryAddress(endpoint: Pick<EndpointRecord, 'address' | 'addressIpv6'>): string {
  return (endpoint.address || endpoint.addressIpv6).split('/')[0]!;
}

export function chassisKey(chassis: string): string {
  return `${NB.hostPrefix}${chassis}`;
}

/** The hosts that use a switch: chassis name -> hostname. */
export function switchHosts(sw: Pick<NbSwitch, 'externalIds'>): Map<string, string> {
  const hosts = new Map<string, string>();
  for (const [key, value] of Object.entries(sw.externalIds)) if (key.startsWith(NB.hostPrefix)) hosts.set(key.slice(NB.hostPrefix.length), value);
  return hosts;
}

// ---- what hosts must agree on ----

/** The configuration every host of an OVN network gives the same: its identity across hosts. */
export interface SharedConfig {
  readonly name: string;
  /** The router it is connected to (absent in configs written before routers). */
  readonly router?: string | null;
  readonly subnets: ReadonlyArray<{ readonly pool: string; readonly gateway: string | null; readonly range: string; readonly aux: Readonly<Record<string, string>> }>;
  readonly gatewayMode: string;
  readonly internal: boolean;
  readonly mtu: number | null;
  /** What its containers may send as routers and DHCP servers (absent in configs written before: false). */
  readonly allowRa?: boolean;
  readonly allowDhcpServer?: boolean;
}

/** The shared configuration of a network about to be made here; `ranges` are the IPAM pools' ip-ranges by subnet. */
export function sharedConfig(spec: OvnSpec, name: string, subnets: readonly SubnetRecord[], ranges: ReadonlyMap<string, string>): SharedConfig {
  return {
    name,
    router: spec.ovnRouter ?? null,
    subnets: subnets.map((s) => ({ pool: s.pool, gateway: s.gateway ?? null, range: ranges.get(s.pool) ?? s.pool, aux: { ...s.auxAddresses } })),
    gatewayMode: spec.gatewayMode,
    internal: spec.internal,
    mtu: spec.mtu ?? null,
    allowRa: spec.allowRa,
    allowDhcpServer: spec.allowDhcpServer,
  };

}

export function encodeConfig(config: SharedConfig): string {
  return canonicalJson(config);
}

/**
 * Refuses a network whose configuration differs from the one the subnet already has in OVN,
 * naming the first difference with both values and who made the switch.
 */
export function checkSameConfig(existing: SharedConfig, mine: SharedConfig, madeBy: string): void {
  const refuse = (what: string, theirs: unknown, ours: unknown, flag: string) => {
    throw conflict(
      'OvnNetworkDiffers',
      `subnet ${mine.subnets[0]?.pool} is already the OVN network ${existing.name} (made by host ${madeBy}) with ${what} ${show(theirs)}; this host asked for ${show(ours)}: give the same ${flag} on every host of the network`,
    );
  };
  if (existing.name !== mine.name) refuse('the name', existing.name, mine.name, '-o ovn_network');
  if ((existing.router ?? null) !== (mine.router ?? null)) refuse('the router', existing.router ?? null, mine.router ?? null, '-o ovn_router (or none)');
  const theirs = new Map(existing.subnets.map((s) => [s.pool, s]));
  const pools = (list: SharedConfig['subnets']) => list.map((s) => s.pool).sort().join(', ');
  if (pools(existing.subnets) !== pools(mine.subnets)) refuse('the subnets', pools(existing.subnets), pools(mine.subnets), '--subnet');
  for (const s of mine.subnets) {
    const t = theirs.get(s.pool)!;
    if (t.gateway !== s.gateway) refuse(`the gateway of ${s.pool}`, t.gateway, s.gateway, '--gateway');
    if (t.range !== s.range) refuse(`the ip-range of ${s.pool}`, t.range, s.range, '--ip-range');
    if (canonicalJson(t.aux) !== canonicalJson(s.aux)) refuse(`the aux addresses of ${s.pool}`, t.aux, s.aux, '--aux-address');
  }
  if (existing.gatewayMode !== mine.gatewayMode) refuse('gateway_mode', existing.gatewayMode, mine.gatewayMode, '-o gateway_mode');
  if (existing.internal !== mine.internal) refuse('--internal', existing.internal, mine.internal, '--internal (or none)');
  if (existing.mtu !== mine.mtu) refuse('mtu', existing.mtu ?? 'derived', mine.mtu ?? 'derived', '-o mtu (or none)');
  if ((existing.allowRa ?? false) !== (mine.allowRa ?? false)) refuse('allow_ra', existing.allowRa ?? false, mine.allowRa ?? false, '-o allow_ra');
  if ((existing.allowDhcpServer ?? false) !== (mine.allowDhcpServer ?? false)) {
    refuse('allow_dhcp_server', existing.allowDhcpServer ?? false, mine.allowDhcpServer ?? false, '-o allow_dhcp_server');
  }
}

function show(value: unknown): string {
  if (value === null || value === undefined) return 'none';
  return typeof value === 'string' ? value : JSON.stringify(value);
}

export function decodeConfig(text: string | undefined): SharedConfig | undefined {
  if (!text) return undefined;
  try {
    return JSON.parse(text) as SharedConfig;
  } catch {
    return undefined;
  }
}

/** The switch row a host writes when it makes the network. */
export function switchRow(network: OvnRecord, config: SharedConfig, chassis: Chassis): { name: string; externalIds: Record<string, string> } {
  return {
    name: network.switchName,
    externalIds: {
      [OWNER_KEY]: OWNER_VALUE,
      [NB.subnet]: network.subnet,
      [NB.config]: encodeConfig(config),
      [NB.createdBy]: chassis.hostname,
      [chassisKey(chassis.name)]: chassis.hostname,
      ...(config.router ? { [ROUTER.name]: config.router } : {}),
    },
  };
}

// ---- ports ----

/**
 * A port that holds an address for this host. An IPv4 address gets, at once, the MAC an endpoint
 * derives from it (as addresses and port security), so that the usual start needs no second write;
 * an endpoint with another MAC or an IPv6 address too is bound again when it is made.
 */
export function reservationPort(network: OvnRecord & { networkId: string }, address: string, chassis: Chassis, now: string): NbPortSpec {
  const bound = address.includes(':') ? [] : [`${macForIpv4(address)} ${address}`];
  return {
    name: portName(network, address),
    addresses: bound,
    portSecurity: bound,
    externalIds: {
      [OWNER_KEY]: OWNER_VALUE,
      [NB.subnet]: network.subnet,
      [NB.address]: address,
      [NB.chassis]: chassis.name,
      [NB.hostname]: chassis.hostname,
      ...(chassis.hostId ? { [NB.hostId]: chassis.hostId } : {}),
      [NB.network]: network.networkId,
      [NB.createdAt]: now,
    },
  };
}

/**
 * What an endpoint's logical port carries: its MAC and addresses, as `addresses` (so OVN delivers
 * to it) and as `port_security` (so it sends from nothing else: not another MAC, not another
 * address, in ARP and neighbour discovery too).
 */
export function boundAddresses(endpoint: Pick<EndpointRecord, 'mac' | 'address' | 'addressIpv6'>): string[] {
  const ips = [endpoint.address, endpoint.addressIpv6].filter(Boolean).map((a) => a.split('/')[0]!);
  return [[endpoint.mac, ...ips].join(' ')];
}

/** Who holds an address, for a person: "host B (chassis b1)". */
export function holderOf(port: Pick<NbPort, 'externalIds'>): string {
  const hostname = port.externalIds[NB.hostname];
  const chassis = port.externalIds[NB.chassis];
  if (!chassis) return 'a logical port the plugin did not make';
  return hostname && hostname !== chassis ? `host ${hostname} (chassis ${chassis})` : `host ${chassis}`;
}
