/**
 * OVN networks in the northbound database, as pure decisions: the names of
 * switches and ports, the configuration every host of a subnet must agree
 * on, the logical port that holds an address, and the comparison of this
 * host's records with what the northbound database has (for the reconciler
 * and `ovsnet doctor`).
 *
 * One logical switch per network, identified by its first subnet (hosts
 * agree on a network by its subnet). One logical port per address held: its
 * name is made of the subnet and the address, and the database's unique
 * index on port names is what makes an address held by one host only.
 */
import { badRequest, conflict } from '../errors.js';
import type { Drift } from './drift.js';
import { REPAIR } from './drift.js';
import { OWNER_KEY, OWNER_VALUE, macForIpv4, short } from './names.js';
import { type Bounds, usableBounds } from './allocator.js';
import { parseCidr, parseIp } from './cidr.js';
import { canonicalJson, type OvnSpec } from './options.js';
import { type AddressRecord, type EndpointRecord, type NetworkRecord, type OvnNetworkRecord, type OvnRecord, type PoolRecord, type SubnetRecord, isOvnNetwork } from './records.js';

/**
 * Bytes Geneve adds around a container's frame, by underlay family: outer IP (20 or 40) + UDP 8 +
 * Geneve 8 + OVN's option 8 + inner Ethernet 14 (OVN's own GENEVE_TUNNEL_OVERHEAD is 38 plus the IP header).
 */
export const GENEVE_OVERHEAD = { 4: 58, 6: 78 } as const;

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

/** The outside network OVN routers SNAT onto, and the chassis that carry it (OVSNET_OVN_EXTERNAL, OVSNET_OVN_GATEWAYS). */
export interface OvnExternal {
  /** The physical network's name in the gateway chassis' ovn-bridge-mappings. */
  readonly physnet: string;
  readonly subnet: string;
  readonly nexthop: string;
  /** The addresses routers may take ("192.0.2.100-192.0.2.150"); undefined: any of the subnet. */
  readonly routerRange?: string;
  /** Highest priority first: the active one; the others stand by. */
  readonly gateways: ReadonlyArray<{ readonly chassis: string; readonly priority: number }>;
}

/** The addresses routers may take on the outside network: its range, or the usable addresses of its subnet. */
export function routerBounds(external: OvnExternal): Bounds {
  if (external.routerRange) {
    const [first, last] = external.routerRange.split('-').map((a) => parseIp(a)!.value);
    return { family: 4, first: first!, last: last! };
  }
  return usableBounds(parseCidr(external.subnet)!);
}

/** How the settings name an outside network, for messages. */
export function describeExternal(external: OvnExternal | null | undefined): string {
  if (!external) return '(none)';
  const range = external.routerRange ? `,${external.routerRange}` : '';
  return `${external.physnet},${external.subnet},${external.nexthop}${range} with gateways ${external.gateways.map((g) => `${g.chassis}:${g.priority}`).join(',')}`;
}

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

const keyOf = (subnet: string) => subnet.replace(/[/:]/g, '_');

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

// ---- the comparison with the northbound database ----

export type NbRepair =
  /** Make the network's switch (or take the one there) and list this host on it. */
  | { readonly type: 'ensure-switch'; readonly networkId: string }
  /** Hold an address again that this host holds but the database lost. */
  | { readonly type: 'claim'; readonly networkId: string; readonly address: string }
  /** Give an endpoint's port its addresses and port security. */
  | { readonly type: 'bind'; readonly networkId: string; readonly endpointId: string }
  /** `asRead`: the port's external_ids the decision was made on (it is deleted only while they are so). */
  | { readonly type: 'delete-port'; readonly switchUuid: string; readonly name: string; readonly asRead: Readonly<Record<string, string>> }
  /** Take this host off a switch it has no network of (and remove the switch if it was the last). */
  | { readonly type: 'leave-switch'; readonly switchUuid: string };

export interface NbDifference {
  readonly drift: Drift;
  readonly repair: NbRepair | undefined;
}

export interface NbView {
  readonly switches: readonly NbSwitch[];
  /** Ports of the plugin's switches, by switch uuid. */
  readonly ports: ReadonlyMap<string, readonly NbPort[]>;
  /** The plugin's routers. */
  readonly routers: readonly NbRouter[];
}

export interface NbRecords {
  readonly networks: readonly NetworkRecord[];
  readonly endpoints: readonly EndpointRecord[];
  readonly pools: readonly PoolRecord[];
  readonly addresses: readonly AddressRecord[];
}

/**
 * Every difference between this host's records and the northbound database: switches and this
 * host's listing on them, the addresses it holds, its endpoints' ports, and ports it made that
 * nothing here holds any more (once older than the grace period: a call may be in flight).
 */
export function diffNorthbound(
  records: NbRecords,
  view: NbView,
  chassis: Chassis,
  options: { now: number; graceMs: number; external?: OvnExternal | undefined },
): NbDifference[] {
  const { external } = options;
  const out: NbDifference[] = [];
  const noWayOut = new Set<string>();
  const bySubnet = new Map(view.switches.map((s) => [s.externalIds[NB.subnet] ?? '', s]));
  const mine = (p: NbPort) => p.externalIds[NB.chassis] === chassis.name;
  const networks = records.networks.filter((n): n is OvnNetworkRecord => isOvnNetwork(n) && n.state === 'ready');
  const served = new Set<string>();

  for (const network of networks) {
    const { ovn } = network;
    const sw = bySubnet.get(ovn.subnet);
    const net = short(network.id);
    if (!sw) {
      out.push({
        drift: { kind: 'ovn-switch-missing', subject: ovn.switchName, networkId: network.id, detail: `the OVN logical switch ${ovn.switchName} of network ${net} (subnet ${ovn.subnet}) is not in the northbound database`, fix: REPAIR },
        repair: { type: 'ensure-switch', networkId: network.id },
      });
      continue;
    }
    served.add(sw.uuid);
    const routerName = network.spec.ovnRouter;
    if (routerName) {
      const router = view.routers.find((r) => r.externalIds[ROUTER.name] === routerName);
      if (router && external && !outsideAddress(router, routerName) && !noWayOut.has(routerName)) {
        noWayOut.add(routerName);
        out.push({
          drift: { kind: 'ovn-router-differs', subject: routerName, networkId: network.id, detail: `OVN router ${routerName} has no way out: its gateway port to ${external.physnet} is missing`, fix: REPAIR },
          repair: { type: 'ensure-switch', networkId: network.id },
        });
      }
      const attachment = routerAttachment({ spec: network.spec, ovn, ipv4: network.ipv4, ipv6: network.ipv6 }, router && outsideAddress(router, routerName));
      const gaps = router && attachmentGaps(router, (view.ports.get(sw.uuid) ?? []).some((p) => p.name === attachment.lsp), attachment);
      if (!router || gaps!.lrp) {
        out.push({
          drift: { kind: 'ovn-router-missing', subject: routerName, networkId: network.id, detail: `network ${net} is not connected to its OVN router ${routerName}${router ? '' : ' (the router is missing)'}`, fix: REPAIR },
          repair: { type: 'ensure-switch', networkId: network.id },
        });
      } else if (hasGaps(gaps!)) {
        out.push({
          drift: { kind: 'ovn-router-differs', subject: routerName, networkId: network.id, detail: `the connection of network ${net} to its OVN router ${routerName} lacks ${describeGaps(gaps!)}`, fix: REPAIR },
          repair: { type: 'ensure-switch', networkId: network.id },
        });
      }
    }
    const guard = guardAcls(ovn, network.spec);
    if (sw.guard && !sameGuard(sw, guard)) {
      out.push({
        drift: {
          kind: 'ovn-guard-differs',
          subject: sw.name,
          networkId: network.id,
          detail: `the OVN logical switch ${sw.name} has ${sw.guard.length} of the plugin's guard ACLs where ${guard.length} belong (no router advertisements, redirects or DHCP server messages from containers${guard.length < 2 ? ', but what the network allows' : ''})`,
          fix: REPAIR,
        },
        repair: { type: 'ensure-switch', networkId: network.id },
      });
    }
    if (!switchHosts(sw).has(chassis.name)) {
      out.push({
        drift: { kind: 'ovn-host-not-listed', subject: sw.name, networkId: network.id, detail: `this host (${chassis.name}) is not listed on the OVN logical switch ${sw.name}, so another host could remove it`, fix: REPAIR },
        repair: { type: 'ensure-switch', networkId: network.id },
      });
    }
    const ports = new Map((view.ports.get(sw.uuid) ?? []).map((p) => [p.name, p]));
    const pools = new Set(records.pools.filter((p) => [...network.ipv4, ...network.ipv6].some((s) => s.pool === p.pool && s.addressSpace === p.addressSpace)).map((p) => p.id));
    const gateways = new Set([...network.ipv4, ...network.ipv6].map((s) => s.gateway));
    const aux = new Set([...network.ipv4, ...network.ipv6].flatMap((s) => Object.values(s.auxAddresses)));
    const held = records.addresses.filter((a) => pools.has(a.poolId) && a.kind === 'address' && !aux.has(a.address) && !gateways.has(a.address));
    const heldNames = new Set<string>();
    for (const a of held) {
      const name = portName(ovn, a.address);
      heldNames.add(name);
      const port = ports.get(name);
      if (!port) {
        out.push({
          drift: { kind: 'ovn-port-missing', subject: name, networkId: network.id, address: a.address, detail: `address ${a.address} is held here, but the northbound database has no logical port ${name} for it`, fix: REPAIR },
          repair: { type: 'claim', networkId: network.id, address: a.address },
        });
      } else if (!mine(port)) {
        out.push({
          drift: { kind: 'ovn-address-conflict', subject: name, networkId: network.id, address: a.address, detail: `address ${a.address} is held here and by ${holderOf(port)}`, fix: `docker restart <the container with ${a.address} on this host>` },
          repair: undefined,
        });
      }
    }
    for (const endpoint of records.endpoints.filter((e) => e.networkId === network.id)) {
      const name = portName(ovn, primaryAddress(endpoint));
      const port = ports.get(name);
      if (!port || !mine(port)) continue; // reported above
      const want = boundAddresses(endpoint);
      if (canonicalJson([port.addresses, port.portSecurity]) !== canonicalJson([want, want])) {
        out.push({
          drift: {
            kind: 'ovn-port-differs',
            subject: name,
            networkId: network.id,
            endpointId: endpoint.id,
            detail: `logical port ${name} of endpoint ${short(endpoint.id)} has addresses [${port.addresses.join(', ')}] and port security [${port.portSecurity.join(', ')}] where [${want.join(', ')}] belong`,
            fix: `ovn-nbctl lsp-set-addresses ${name} "${want[0]}" -- lsp-set-port-security ${name} "${want[0]}"`,
          },
          repair: { type: 'bind', networkId: network.id, endpointId: endpoint.id },
        });
      }
    }
    for (const port of ports.values()) {
      if (!mine(port) || heldNames.has(port.name)) continue;
      const made = Date.parse(port.externalIds[NB.createdAt] ?? '');
      if (Number.isFinite(made) && options.now - made < options.graceMs) continue;
      out.push({
        drift: { kind: 'ovn-port-orphan', subject: port.name, networkId: network.id, address: port.externalIds[NB.address], detail: `logical port ${port.name} was made by this host, which holds its address no more`, fix: `ovn-nbctl lsp-del ${port.name}` },
        repair: { type: 'delete-port', switchUuid: sw.uuid, name: port.name, asRead: port.externalIds },
      });
    }
  }

  for (const sw of view.switches) {
    if (served.has(sw.uuid) || !sw.externalIds[NB.subnet]) continue;
    const listed = switchHosts(sw).has(chassis.name);
    const leftovers = (view.ports.get(sw.uuid) ?? []).filter(mine);
    if (!listed && leftovers.length === 0) continue;
    out.push({
      drift: {
        kind: 'ovn-switch-unused-here',
        subject: sw.name,
        detail: `this host ${listed ? 'is listed on' : 'has ports on'} the OVN logical switch ${sw.name} (subnet ${sw.externalIds[NB.subnet]}), but has no network of it`,
        fix: REPAIR,
      },
      repair: { type: 'leave-switch', switchUuid: sw.uuid },
    });
  }
  return out;
}

// ---- routers (layer 3) ----

/** external_ids keys of the plugin's routers. */
export const ROUTER = {
  name: 'ovsnet-router',
  /** What every host must agree on for a router: its way out. */
  config: 'ovsnet-router-config',
} as const;

/** A logical router as read from the northbound database. */
export interface NbRouter {
  readonly uuid: string;
  readonly name: string;
  readonly externalIds: Readonly<Record<string, string>>;
  readonly ports: ReadonlyArray<{ readonly uuid: string; readonly name: string; readonly networks: readonly string[] }>;
  readonly nat: ReadonlyArray<{ readonly uuid: string; readonly type: string; readonly logicalIp: string; readonly externalIp: string }>;
  readonly policies: ReadonlyArray<RouterPolicy & { readonly uuid: string }>;
}

/** A routing policy of a router (Logical_Router_Policy), kept with the network it is for. */
export interface RouterPolicy {
  readonly priority: number;
  readonly match: string;
  readonly action: 'allow' | 'drop';
}

/**
 * A network's policies on its router: traffic to it is routed, whoever sends it; an --internal
 * network's own traffic to anywhere else (the outside) is dropped, so that it reaches the router's
 * other networks and nothing beyond them.
 */
export function routerPolicies(subnet: string, internal: boolean): RouterPolicy[] {
  const family = subnet.includes(':') ? 'ip6' : 'ip4';
  const policies: RouterPolicy[] = [{ priority: 1001, match: `${family}.dst == ${subnet}`, action: 'allow' }];
  if (internal) policies.push({ priority: 1000, match: `${family}.src == ${subnet}`, action: 'drop' });
  return policies;
}

/** The router port that connects a network's switch (its gateway address lives there), and the switch's port facing it. */
export function routerPortNames(network: OvnRecord): { lrp: string; lsp: string } {
  return { lrp: `ovsnet-rp-${keyOf(network.subnet)}`, lsp: `ovsnet-rsp-${keyOf(network.subnet)}` };
}

/** The router's port to the outside network, and its group of gateway chassis. */
export function gatewayPortNames(router: string): { lrp: string; group: string } {
  return { lrp: `ovsnet-gw-${router}`, group: `ovsnet-gw-${router}` };
}

export function externalSwitchName(physnet: string): string {
  return `ovsnet-external-${physnet}`;
}

export function localnetPortName(physnet: string): string {
  return `ovsnet-localnet-${physnet}`;
}

/** The external switch's port facing a router: named by the router's outside address, so that two routers never share one. */
export function externalPortName(physnet: string, address: string): string {
  return `ovsnet-ext-${physnet}-${address}`;
}

/** A router port's MAC, from its address (0a:58 and the address, as ovn-kubernetes does). */
export function routerMac(address: string): string {
  return ['0a', '58', ...address.split('.').map((o) => Number(o).toString(16).padStart(2, '0'))].join(':');
}

/** What every host must agree on for a router. */
export function routerConfig(external: OvnExternal | undefined): string {
  return canonicalJson(external ?? null);
}

/** What connects a network's switch to its router. */
export interface RouterAttachment {
  /** The router port: the network's gateway addresses (IPv6 too: routed between the router's networks, never NATed). */
  readonly lrp: { readonly name: string; readonly mac: string; readonly networks: readonly string[] };
  /** The switch's port facing it. */
  readonly lsp: string;
  /** The network's identity: its NAT rules and policies are kept under it. */
  readonly subnet: string;
  /** SNAT of each IPv4 subnet to the router's outside address (gateway_mode=nat, when the router has a way out). */
  readonly snat: ReadonlyArray<{ readonly logicalIp: string; readonly externalIp: string }>;
  readonly policies: readonly RouterPolicy[];
}

export function routerAttachment(network: { spec: OvnSpec; ovn: OvnRecord; ipv4: readonly SubnetRecord[]; ipv6: readonly SubnetRecord[] }, outside: string | undefined): RouterAttachment {
  const { spec } = network;
  const subnets = [...network.ipv4, ...network.ipv6];
  const v4 = network.ipv4[0];
  const names = routerPortNames(network.ovn);
  return {
    lrp: { name: names.lrp, mac: routerMac(v4?.gateway ?? '0.0.0.0'), networks: subnets.flatMap((s) => (s.gateway ? [`${s.gateway}/${s.pool.split('/')[1]}`] : [])) },
    lsp: names.lsp,
    subnet: network.ovn.subnet,
    snat: spec.gatewayMode === 'nat' && !spec.internal && outside ? network.ipv4.map((s) => ({ logicalIp: s.pool, externalIp: outside })) : [],
    policies: subnets.flatMap((s) => routerPolicies(s.pool, spec.internal)),
  };
}

/** What of an attachment a router (and the switch, `lspPresent`) lacks. */
export interface AttachmentGaps {
  readonly lrp: boolean;
  readonly lsp: boolean;
  readonly snat: RouterAttachment['snat'];
  readonly policies: readonly RouterPolicy[];
}

export function attachmentGaps(router: NbRouter, lspPresent: boolean, attachment: RouterAttachment): AttachmentGaps {
  return {
    lrp: !router.ports.some((p) => p.name === attachment.lrp.name),
    lsp: !lspPresent,
    snat: attachment.snat.filter((want) => !router.nat.some((n) => n.type === 'snat' && n.logicalIp === want.logicalIp && n.externalIp === want.externalIp)),
    policies: attachment.policies.filter((p) => !router.policies.some((q) => q.priority === p.priority && q.match === p.match && q.action === p.action)),
  };
}

export function hasGaps(gaps: AttachmentGaps): boolean {
  return gaps.lrp || gaps.lsp || gaps.snat.length > 0 || gaps.policies.length > 0;
}

function describeGaps(gaps: AttachmentGaps): string {
  return [
    gaps.lrp && 'its router port',
    gaps.lsp && "the switch's port facing the router",
    gaps.snat.length > 0 && `SNAT of ${gaps.snat.map((n) => n.logicalIp).join(', ')}`,
    gaps.policies.length > 0 && `${gaps.policies.length} router policies`,
  ]
    .filter(Boolean)
    .join(', ');
}

/** The router's outside address, from its gateway port's networks. */
export function outsideAddress(router: NbRouter, name: string): string | undefined {
  return router.ports.find((p) => p.name === gatewayPortNames(name).lrp)?.networks[0]?.split('/')[0];
}
