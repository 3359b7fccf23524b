/**
 * What guards a container's port, as OpenFlow: anti-spoofing (the port admits
 * only the endpoint's own MAC and addresses, ARP and IPv6 neighbour discovery
 * included) and a rate limit (an OpenFlow meter on what the container sends).
 *
 * Every flow carries a cookie that marks it as the plugin's: the top 16 bits
 * are the mark, the next 32 name the port, the last 16 are a digest of the
 * flow itself. The plugin reads, replaces and deletes only flows with its mark,
 * a port's flows by their port bits, and a flow changed in any way (by hand, or
 * a port that came back with another ofport) no longer has the cookie it should.
 */
import { createHash } from 'node:crypto';
import { formatIp, parseCidrWithHost } from './cidr.js';

export const COOKIE_MARK = 0x6f76n; // "ov"
const MARK_SHIFT = 48n;
const PORT_SHIFT = 16n;
const MARK_MASK = 0xffff000000000000n;
const PORT_MASK = 0xffffffffffff0000n;

/**
 * The priorities of the guard's flows. The bridge's own forwarding comes below them: the plugin's base flow
 * (priority 1, NORMAL) on its bridges, or OVS's own (priority 0) on a bridge it did not make.
 */
const P = { firstHop: 36040, neighbourAllow: 36030, neighbourDrop: 36020, allow: 36010, rest: 36000 } as const;

const ZERO_MAC = '00:00:00:00:00:00';
const UNSPECIFIED = '::';

export interface RateLimit {
  /** Megabits per second. */
  readonly mbit: number;
  /** Kilobits the container may send at once above the rate. */
  readonly burstKbit: number;
}

/** What one endpoint port is held to. Absent when it is held to nothing. */
export interface PortGuard {
  readonly antiSpoofing: boolean;
  /**
   * What a container may send as if it were the network's router or DHCP server, whatever anti_spoofing
   * says: router advertisements and redirects (-o allow_ra), DHCP and DHCPv6 server messages (-o allow_dhcp_server).
   */
  readonly allowRa: boolean;
  readonly allowDhcpServer: boolean;
  readonly mac: string;
  /** Plain addresses, no prefix. */
  readonly ipv4: string | undefined;
  readonly ipv6: string | undefined;
  /** The one link-local address the container may use: the one its interface has. */
  readonly linkLocal: string;
  readonly rate: RateLimit | undefined;
  /**
   * What forwards what the guard lets through: the bridge's normal forwarding, or (OVN's integration bridge)
   * ovn-controller's pipeline, which the guard leaves alone but for its drops.
   */
  readonly pipeline: 'normal' | 'ovn';
}

/** What a network (or an endpoint's own options) asks of its ports' guard. */
export interface GuardOptions {
  readonly antiSpoofing: boolean;
  readonly allowRa: boolean;
  readonly allowDhcpServer: boolean;
  readonly rate: RateLimit | undefined;
  /** Default `normal`. On `ovn` only the first-hop drops apply (port security is OVN's). */
  readonly pipeline?: 'normal' | 'ovn';
}

/**
 * One field a flow matches, as OpenFlow 1.3 names it (OXM); the adapter encodes it.
 * `vlan_vid` none matches frames without a VLAN tag.
 */
export type MatchField =
  | { readonly field: 'in_port'; readonly value: number }
  | { readonly field: 'vlan_vid'; readonly value: 'none' }
  | { readonly field: 'eth_type' | 'ip_proto' | 'icmpv4_type' | 'icmpv6_type' | 'udp_src' | 'udp_dst'; readonly value: number }
  | { readonly field: 'eth_src' | 'arp_sha' | 'ipv6_nd_sll' | 'ipv6_nd_tll'; readonly value: string }
  | { readonly field: 'ipv4_src' | 'arp_spa'; readonly value: string }
  | { readonly field: 'ipv6_src' | 'ipv6_nd_target'; readonly value: string; readonly prefix?: number };

export interface FlowSpec {
  /** "0x6f76..." */
  readonly cookie: string;
  readonly table: number;
  /** As `ovs-ofctl add-flow` takes it, without the cookie: what a person reads, and what the cookie digests. */
  readonly text: string;
  readonly priority: number;
  /** In the order OpenFlow needs them: every field after the fields it presupposes. */
  readonly match: readonly MatchField[];
  /** `pass`: through the meter (when there is one) to the bridge's normal forwarding. */
  readonly action: 'pass' | 'drop';
  readonly meter: number | undefined;
  /** What a container tried that a drop flow stops (drop flows of a port only). */
  readonly reason?: DropReason;
}

/**
 * Why a guard flow drops what a container sends: `router-advertisement`, `redirect` (ICMP or ICMPv6),
 * `dhcp-server` (DHCP or DHCPv6 server messages), `neighbour-spoof` (a neighbour solicitation or
 * advertisement not of its own MAC and addresses), `source` (anything else not from its own MAC and
 * addresses, or a tagged frame).
 */
export type DropReason = 'router-advertisement' | 'redirect' | 'dhcp-server' | 'neighbour-spoof' | 'source';
export const DROP_REASONS: readonly DropReason[] = ['router-advertisement', 'redirect', 'dhcp-server', 'neighbour-spoof', 'source'];

export interface MeterSpec {
  readonly id: number;
  readonly kbps: number;
  readonly burstKbit: number;
}

/** The flows and meter of one port with that ofport (or of the bridge itself: BRIDGE_FLOWS_KEY, ofport 0). */
export interface PortFlows {
  readonly bridge: string;
  readonly port: string;
  readonly ofport: number;
  /** The cookie and mask that select every flow of this port. */
  readonly prefix: string;
  readonly flows: readonly FlowSpec[];
  readonly meter: MeterSpec | undefined;
}

/** The flows and meters the plugin has on one bridge. */
export interface ObservedFlows {
  /** Cookies of the plugin's flows, one per flow. */
  readonly cookies: readonly string[];
  readonly meters: ReadonlyMap<number, { readonly kbps: number; readonly burstKbit: number }>;
}

/**
 * The guard of an endpoint's port; undefined when nothing is asked of it. The link-local address is the
 * one learned from the container's interface, else the one the kernel gives an interface with that MAC
 * (EUI-64, which a new network namespace uses unless told otherwise).
 */
export function guardFor(options: GuardOptions, endpoint: { mac: string; address: string; addressIpv6: string; linkLocal?: string }): PortGuard | undefined {
  if (!options.antiSpoofing && !options.rate && options.allowRa && options.allowDhcpServer) return undefined;
  const mac = endpoint.mac.toLowerCase();
  return {
    antiSpoofing: options.antiSpoofing,
    allowRa: options.allowRa,
    allowDhcpServer: options.allowDhcpServer,
    mac,
    ipv4: plain(endpoint.address),
    ipv6: plain(endpoint.addressIpv6),
    linkLocal: endpoint.linkLocal ?? linkLocalOf(mac),
    rate: options.rate,
    pipeline: options.pipeline ?? 'normal',
  };
}

/** The EUI-64 link-local address of an interface with this MAC (RFC 4291, appendix A). */
export function linkLocalOf(mac: string): string {
  const b = mac.split(':').map((x) => parseInt(x, 16));
  const groups = [((b[0]! ^ 0x02) << 8) | b[1]!, (b[2]! << 8) | 0xff, 0xfe00 | b[3]!, (b[4]! << 8) | b[5]!];
  return `fe80::${groups.map((g) => g.toString(16)).join(':')}`;
}

function plain(address: string): string | undefined {
  if (!address) return undefined;
  const parsed = parseCidrWithHost(address);
  return parsed ? formatIp(parsed.ip) : address.split('/')[0];
}

function hex(value: bigint): string {
  return `0x${value.toString(16).padStart(16, '0')}`;
}

function digest(text: string, bytes: number): bigint {
  return BigInt(`0x${createHash('sha256').update(text).digest('hex').slice(0, bytes * 2)}`);
}

/** The 32 port bits of a port's cookies. */
export function portBits(port: string): bigint {
  return digest(`port|${port}`, 4);
}

/** Cookie/mask that select every flow of one port: `cookie=<this>` in ovs-ofctl. */
export function portCookiePrefix(port: string): string {
  return cookiePrefixOfBits(portBits(port));
}

/** Cookie/mask that select every flow of a port, from its port bits. */
export function cookiePrefixOfBits(bits: bigint): string {
  return `${hex((COOKIE_MARK << MARK_SHIFT) | (bits << PORT_SHIFT))}/${hex(PORT_MASK)}`;
}

/** Cookie/mask that select every flow of the plugin. */
export function ownedCookies(): string {
  return `${hex(COOKIE_MARK << MARK_SHIFT)}/${hex(MARK_MASK)}`;
}

/** The port bits of one of the plugin's cookies, as the key portBits gives. */
export function cookiePortBits(cookie: string): bigint {
  return (BigInt(cookie) >> PORT_SHIFT) & 0xffffffffn;
}

export function isOwnedCookie(cookie: string): boolean {
  return (BigInt(cookie) & MARK_MASK) === COOKIE_MARK << MARK_SHIFT;
}

/**
 * A port's flows when it has ofport `ofport`. Whatever anti_spoofing says, the
 * container sends no router advertisement or redirect and no DHCP or DHCPv6
 * server message unless its network allows it. With anti-spoofing, what it
 * sends passes only untagged and from its MAC and addresses: IPv4 with its
 * address, ARP that claims only its pair, IPv6 from its address or its one
 * link-local address, neighbour solicitations that carry its MAC, neighbour
 * advertisements for its own addresses only, duplicate address detection for
 * its own addresses only; everything else is dropped. With a rate, what
 * passes goes through the port's meter (its id is the ofport, unique on the
 * bridge).
 *
 * A neighbour discovery message with a link-layer option twice is not parsed
 * by ovs-vswitchd (its target and options read as zero), so it matches none
 * of the forms allowed here.
 */
export function portFlows(bridge: string, port: string, ofport: number, guard: PortGuard): PortFlows {
  const meter = guard.rate ? { id: ofport, kbps: Math.round(guard.rate.mbit * 1000), burstKbit: guard.rate.burstKbit } : undefined;
  const at = term(`in_port=${ofport}`, { field: 'in_port', value: ofport });
  const icmp6 = (type: number) => [term('icmp6', { field: 'eth_type', value: ETH_IPV6 }, { field: 'ip_proto', value: IPPROTO_ICMPV6 }), term(`icmp_type=${type}`, { field: 'icmpv6_type', value: type })];
  const udp = (family: 'ip' | 'ipv6', end: 'src' | 'dst', port: number) => [
    term(`udp${family === 'ipv6' ? '6' : ''}`, { field: 'eth_type', value: family === 'ip' ? ETH_IPV4 : ETH_IPV6 }, { field: 'ip_proto', value: IPPROTO_UDP }),
    term(`tp_${end}=${port}`, { field: end === 'src' ? 'udp_src' : 'udp_dst', value: port }),
  ];
  const rules: Array<[number, Term[], 'pass' | 'drop', DropReason?]> = [];
  if (!guard.allowRa) {
    rules.push([P.firstHop, [at, ...icmp6(ICMP6.routerAdvert)], 'drop', 'router-advertisement']);
    rules.push([P.firstHop, [at, ...icmp6(ICMP6.redirect)], 'drop', 'redirect']);
    rules.push([P.firstHop, [at, term('icmp', { field: 'eth_type', value: ETH_IPV4 }, { field: 'ip_proto', value: IPPROTO_ICMP }), term(`icmp_type=${ICMP4_REDIRECT}`, { field: 'icmpv4_type', value: ICMP4_REDIRECT })], 'drop', 'redirect']);
  }
  if (!guard.allowDhcpServer) {
    // A server's messages: from its port, and to a client's (a client takes an offer from any source port).
    rules.push([P.firstHop, [at, ...udp('ip', 'src', DHCP_SERVER_PORT)], 'drop', 'dhcp-server']);
    rules.push([P.firstHop, [at, ...udp('ip', 'dst', DHCP_CLIENT_PORT)], 'drop', 'dhcp-server']);
    rules.push([P.firstHop, [at, ...udp('ipv6', 'src', DHCPV6_SERVER_PORT)], 'drop', 'dhcp-server']);
    rules.push([P.firstHop, [at, ...udp('ipv6', 'dst', DHCPV6_CLIENT_PORT)], 'drop', 'dhcp-server']);
  }
  if (guard.pipeline === 'ovn') {
    // ovn-controller forwards the rest; its port security holds the port's MAC and addresses, but takes a
    // solicitation with no link-layer option (how ovs-vswitchd reads one with two) for duplicate address
    // detection: from an address of the container's own, one always carries its MAC.
    for (const source of [...(guard.ipv6 ? [guard.ipv6] : []), guard.linkLocal]) {
      rules.push([P.neighbourDrop, [at, ...icmp6(ICMP6.neighbourSolicit), term(`ipv6_src=${source}`, { field: 'ipv6_src', value: source }), term(`nd_sll=${ZERO_MAC}`, { field: 'ipv6_nd_sll', value: ZERO_MAC })], 'drop', 'neighbour-spoof']);
    }
  } else if (!guard.antiSpoofing) {
    rules.push([P.rest, [at], 'pass']);
  } else {
    // Untagged frames only: a tagged frame from the container must never reach a VLAN of the bridge.
    const src = [at, term('vlan_tci=0x0000/0x1fff', { field: 'vlan_vid', value: 'none' }), term(`dl_src=${guard.mac}`, { field: 'eth_src', value: guard.mac })];
    const v6 = (name: 'ipv6_src' | 'nd_target', address: string) => term(`${name}=${address}`, { field: name === 'ipv6_src' ? 'ipv6_src' : 'ipv6_nd_target', value: address });
    const mac = (name: 'nd_sll' | 'nd_tll', value: string) => term(`${name}=${value}`, { field: name === 'nd_sll' ? 'ipv6_nd_sll' : 'ipv6_nd_tll', value });
    const own = [...(guard.ipv6 ? [guard.ipv6] : []), guard.linkLocal];
    // Solicitations carry the container's MAC (Linux always includes it from an address it has); a
    // duplicate address check, from the unspecified address and without it, only for its own addresses.
    for (const source of own) rules.push([P.neighbourAllow, [...src, ...icmp6(ICMP6.neighbourSolicit), v6('ipv6_src', source), mac('nd_sll', guard.mac)], 'pass']);
    for (const target of own) rules.push([P.neighbourAllow, [...src, ...icmp6(ICMP6.neighbourSolicit), v6('ipv6_src', UNSPECIFIED), v6('nd_target', target), mac('nd_sll', ZERO_MAC)], 'pass']);
    // Advertisements only for its own addresses, with its MAC or none (an answer to a unicast solicitation).
    for (const source of own) {
      for (const target of own) {
        for (const tll of [guard.mac, ZERO_MAC]) rules.push([P.neighbourAllow, [...src, ...icmp6(ICMP6.neighbourAdvert), v6('ipv6_src', source), v6('nd_target', target), mac('nd_tll', tll)], 'pass']);
      }
    }
    // The multicast listener report that goes with duplicate address detection comes from the unspecified address.
    rules.push([P.neighbourAllow, [...src, ...icmp6(ICMP6.listenerReportV2), v6('ipv6_src', UNSPECIFIED)], 'pass']);
    rules.push([P.neighbourDrop, [at, ...icmp6(ICMP6.neighbourSolicit)], 'drop', 'neighbour-spoof']);
    rules.push([P.neighbourDrop, [at, ...icmp6(ICMP6.neighbourAdvert)], 'drop', 'neighbour-spoof']);
    const ipv6 = term('ipv6', { field: 'eth_type', value: ETH_IPV6 });
    for (const source of own) rules.push([P.allow, [...src, ipv6, v6('ipv6_src', source)], 'pass']);
    if (guard.ipv4) {
      rules.push([P.allow, [...src, term('ip', { field: 'eth_type', value: ETH_IPV4 }), term(`nw_src=${guard.ipv4}`, { field: 'ipv4_src', value: guard.ipv4 })], 'pass']);
      rules.push([P.allow, [...src, term('arp', { field: 'eth_type', value: ETH_ARP }), term(`arp_spa=${guard.ipv4}`, { field: 'arp_spa', value: guard.ipv4 }), term(`arp_sha=${guard.mac}`, { field: 'arp_sha', value: guard.mac })], 'pass']);
    }
    rules.push([P.rest, [at], 'drop', 'source']);
  }
  const bits = (COOKIE_MARK << MARK_SHIFT) | (portBits(port) << PORT_SHIFT);
  const flows = rules.map(([priority, terms, action, reason]): FlowSpec => {
    const actions = action === 'drop' ? 'drop' : meter ? `meter:${meter.id},NORMAL` : 'NORMAL';
    const text = `table=0,priority=${priority},${terms.map((t) => t.text).join(',')},actions=${actions}`;
    return { cookie: hex(bits | digest(text, 2)), table: 0, text, priority, match: terms.flatMap((t) => t.fields), action, meter: action === 'pass' ? meter?.id : undefined, ...(reason ? { reason } : {}) };
  });
  return { bridge, port, ofport, prefix: portCookiePrefix(port), flows, meter };
}

/**
 * The name under which a bridge's own flows are cookied: no port has it (port names are interface names,
 * which never start with a dot).
 */
export const BRIDGE_FLOWS_KEY = '.bridge';

/**
 * The plugin's base flow of a bridge. On a bridge of its own, its normal forwarding, below every guard: with
 * fail_mode secure nothing forwards without it, and it goes in after the guards of the bridge's container
 * ports, so that no port forwards unguarded (on a bridge another made, it stands beside OVS's own). On OVN's
 * integration bridge, whose flows are ovn-controller's, a flow that matches nothing (table 250, which OVN never
 * uses): ovn-controller deletes every flow when it starts, the plugin's guards included, and this one's
 * absence says so.
 */
export function baseFlows(bridge: string, pipeline: 'normal' | 'ovn' = 'normal'): PortFlows {
  const [table, priority, action] = pipeline === 'normal' ? [0, 1, 'pass' as const] : [250, 0, 'drop' as const];
  const text = `table=${table},priority=${priority},actions=${action === 'pass' ? 'NORMAL' : 'drop'}`;
  const bits = (COOKIE_MARK << MARK_SHIFT) | (portBits(BRIDGE_FLOWS_KEY) << PORT_SHIFT);
  const flow: FlowSpec = { cookie: hex(bits | digest(text, 2)), table, text, priority, match: [], action, meter: undefined };
  return { bridge, port: BRIDGE_FLOWS_KEY, ofport: 0, prefix: portCookiePrefix(BRIDGE_FLOWS_KEY), flows: [flow], meter: undefined };
}

const ICMP6 = { routerAdvert: 134, redirect: 137, neighbourSolicit: 135, neighbourAdvert: 136, listenerReportV2: 143 } as const;
const DHCP_SERVER_PORT = 67;
const DHCP_CLIENT_PORT = 68;
const DHCPV6_SERVER_PORT = 547;
const DHCPV6_CLIENT_PORT = 546;
const ICMP4_REDIRECT = 5;
const IPPROTO_ICMP = 1;
const ETH_IPV4 = 0x0800;
const ETH_ARP = 0x0806;
const ETH_IPV6 = 0x86dd;
const IPPROTO_ICMPV6 = 58;
const IPPROTO_UDP = 17;

/** Part of a match as ovs-ofctl writes it, with the OpenFlow fields it stands for. */
interface Term {
  readonly text: string;
  readonly fields: readonly MatchField[];
}

function term(text: string, ...fields: MatchField[]): Term {
  return { text, fields };
}

/** The cookies in `ovs-ofctl dump-flows` output. */
export function parseFlowCookies(text: string): string[] {
  const out: string[] = [];
  for (const m of text.matchAll(/cookie=(0x[0-9a-f]+)/g)) out.push(hex(BigInt(m[1]!)));
  return out;
}

/** Packets each flow has matched, by cookie, in `ovs-ofctl dump-flows` output (flows of one cookie summed). */
export function parseFlowPackets(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const m of text.matchAll(/cookie=(0x[0-9a-f]+)[^\n]*?\bn_packets=(\d+)/g)) {
    const cookie = hex(BigInt(m[1]!));
    out.set(cookie, (out.get(cookie) ?? 0) + Number(m[2]));
  }
  return out;
}

/** The meters in `ovs-ofctl dump-meters` output. */
export function parseMeters(text: string): Map<number, { kbps: number; burstKbit: number }> {
  const out = new Map<number, { kbps: number; burstKbit: number }>();
  for (const m of text.matchAll(/meter=(\d+)[^\n]*\n\s*type=drop rate=(\d+)(?: burst_size=(\d+))?/g)) {
    out.set(Number(m[1]), { kbps: Number(m[2]), burstKbit: Number(m[3] ?? 0) });
  }
  return out;
}

/** Whether a cookie is selected by `value/mask` (or a bare value, all bits). */
export function cookieMatches(cookie: string, selector: string): boolean {
  const [value, mask] = selector.split('/');
  const m = mask === undefined || mask === '-1' ? 0xffffffffffffffffn : BigInt(mask);
  return (BigInt(cookie) & m) === (BigInt(value!) & m);
}
