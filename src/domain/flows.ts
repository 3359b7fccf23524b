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

/** The priorities of the guard's flows; the bridge's own forwarding (priority 0, NORMAL) comes below. */
const P = { routerAdvert: 36030, neighbourAllow: 36020, neighbourDrop: 36015, allow: 36010, rest: 36000 } as const;

const ZERO_MAC = '00:00:00:00:00:00';
const LINK_LOCAL = 'fe80::/10';

export interface RateLimit {
  /** Megabits per second. */
  readonly mbit: number;
  /** Kilobits the container may send at once above the rate. */
  readonly burstKbit: number;
}

/** What one endpoint port is held to. Absent when it is held to nothing. */
export interface PortGuard {
  readonly antiSpoofing: boolean;
  readonly mac: string;
  /** Plain addresses, no prefix. */
  readonly ipv4: string | undefined;
  readonly ipv6: string | undefined;
  readonly rate: RateLimit | undefined;
}

/**
 * One field a flow matches, as OpenFlow 1.3 names it (OXM); the adapter encodes it.
 * `vlan_vid` none matches frames without a VLAN tag.
 */
export type MatchField =
  | { readonly field: 'in_port'; readonly value: number }
  | { readonly field: 'vlan_vid'; readonly value: 'none' }
  | { readonly field: 'eth_type' | 'ip_proto' | 'icmpv6_type'; readonly value: number }
  | { readonly field: 'eth_src' | 'arp_sha' | 'ipv6_nd_sll' | 'ipv6_nd_tll'; readonly value: string }
  | { readonly field: 'ipv4_src' | 'arp_spa'; readonly value: string }
  | { readonly field: 'ipv6_src' | 'ipv6_nd_target'; readonly value: string; readonly prefix?: number };

export interface FlowSpec {
  /** "0x6f76..." */
  readonly cookie: string;
  /** As `ovs-ofctl add-flow` takes it, without the cookie: what a person reads, and what the cookie digests. */
  readonly text: string;
  readonly priority: number;
  /** In the order OpenFlow needs them: every field after the fields it presupposes. */
  readonly match: readonly MatchField[];
  /** `pass`: through the meter (when there is one) to the bridge's normal forwarding. */
  readonly action: 'pass' | 'drop';
  readonly meter: number | undefined;
}

export interface MeterSpec {
  readonly id: number;
  readonly kbps: number;
  readonly burstKbit: number;
}

/** The flows and meter of one port with that ofport. */
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

export function guardFor(options: { antiSpoofing: boolean; rate: RateLimit | undefined }, endpoint: { mac: string; address: string; addressIpv6: string }): PortGuard | undefined {
  if (!options.antiSpoofing && !options.rate) return undefined;
  return {
    antiSpoofing: options.antiSpoofing,
    mac: endpoint.mac.toLowerCase(),
    ipv4: plain(endpoint.address),
    ipv6: plain(endpoint.addressIpv6),
    rate: options.rate,
  };
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
 * A port's flows when it has ofport `ofport`. With anti-spoofing, what the
 * container sends passes only untagged and from its MAC and addresses: IPv4 with its
 * address, ARP that claims only its pair, IPv6 from its address or a link-local
 * one, neighbour discovery that advertises only its own addresses and MAC,
 * duplicate address detection; router advertisements and everything else are
 * dropped. With a rate, what passes goes through the port's meter (its id is
 * the ofport, unique on the bridge).
 */
export function portFlows(bridge: string, port: string, ofport: number, guard: PortGuard): PortFlows {
  const meter = guard.rate ? { id: ofport, kbps: Math.round(guard.rate.mbit * 1000), burstKbit: guard.rate.burstKbit } : undefined;
  const at = term(`in_port=${ofport}`, { field: 'in_port', value: ofport });
  const rules: Array<[number, Term[], 'pass' | 'drop']> = [];
  if (!guard.antiSpoofing) {
    rules.push([P.rest, [at], 'pass']);
  } else {
    // Untagged frames only: a port without a tag is a trunk of every VLAN to OVS, and a tagged frame from the
    // container would reach another VLAN of the bridge.
    const src = [at, term('vlan_tci=0x0000/0x1fff', { field: 'vlan_vid', value: 'none' }), term(`dl_src=${guard.mac}`, { field: 'eth_src', value: guard.mac })];
    const icmp6 = (type: number) => [term('icmp6', { field: 'eth_type', value: ETH_IPV6 }, { field: 'ip_proto', value: IPPROTO_ICMPV6 }), term(`icmp_type=${type}`, { field: 'icmpv6_type', value: type })];
    const v6Sources = [...(guard.ipv6 ? [guard.ipv6] : []), LINK_LOCAL];
    const v6 = (name: 'ipv6_src' | 'nd_target', source: string) => {
      const [address, prefix] = source.split('/');
      return term(`${name}=${source}`, { field: name === 'ipv6_src' ? 'ipv6_src' : 'ipv6_nd_target', value: address!, ...(prefix ? { prefix: Number(prefix) } : {}) });
    };
    const mac = (name: 'nd_sll' | 'nd_tll', value: string) => term(`${name}=${value}`, { field: name === 'nd_sll' ? 'ipv6_nd_sll' : 'ipv6_nd_tll', value });
    rules.push([P.routerAdvert, [at, ...icmp6(134)], 'drop']);
    rules.push([P.routerAdvert, [at, ...icmp6(137)], 'drop']);
    for (const source of v6Sources) {
      for (const sll of [guard.mac, ZERO_MAC]) rules.push([P.neighbourAllow, [...src, ...icmp6(135), v6('ipv6_src', source), mac('nd_sll', sll)], 'pass']);
      for (const tll of [guard.mac, ZERO_MAC]) rules.push([P.neighbourAllow, [...src, ...icmp6(136), v6('nd_target', source), mac('nd_tll', tll)], 'pass']);
    }
    // Duplicate address detection and its multicast listener report come from the unspecified address.
    rules.push([P.neighbourAllow, [...src, ...icmp6(135), v6('ipv6_src', '::'), mac('nd_sll', ZERO_MAC)], 'pass']);
    rules.push([P.neighbourAllow, [...src, ...icmp6(143), v6('ipv6_src', '::')], 'pass']);
    rules.push([P.neighbourDrop, [at, ...icmp6(135)], 'drop']);
    rules.push([P.neighbourDrop, [at, ...icmp6(136)], 'drop']);
    const ipv6 = term('ipv6', { field: 'eth_type', value: ETH_IPV6 });
    for (const source of v6Sources) rules.push([P.allow, [...src, ipv6, v6('ipv6_src', source)], 'pass']);
    if (guard.ipv4) {
      rules.push([P.allow, [...src, term('ip', { field: 'eth_type', value: ETH_IPV4 }), term(`nw_src=${guard.ipv4}`, { field: 'ipv4_src', value: guard.ipv4 })], 'pass']);
      rules.push([P.allow, [...src, term('arp', { field: 'eth_type', value: ETH_ARP }), term(`arp_spa=${guard.ipv4}`, { field: 'arp_spa', value: guard.ipv4 }), term(`arp_sha=${guard.mac}`, { field: 'arp_sha', value: guard.mac })], 'pass']);
    }
    rules.push([P.rest, [at], 'drop']);
  }
  const bits = (COOKIE_MARK << MARK_SHIFT) | (portBits(port) << PORT_SHIFT);
  const flows = rules.map(([priority, terms, action]): FlowSpec => {
    const actions = action === 'drop' ? 'drop' : meter ? `meter:${meter.id},NORMAL` : 'NORMAL';
    const text = `table=0,priority=${priority},${terms.map((t) => t.text).join(',')},actions=${actions}`;
    return { cookie: hex(bits | digest(text, 2)), text, priority, match: terms.flatMap((t) => t.fields), action, meter: action === 'pass' ? meter?.id : undefined };
  });
  return { bridge, port, ofport, prefix: portCookiePrefix(port), flows, meter };
}

const ETH_IPV4 = 0x0800;
const ETH_ARP = 0x0806;
const ETH_IPV6 = 0x86dd;
const IPPROTO_ICMPV6 = 58;

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
