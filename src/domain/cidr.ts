/**
 * Address math for both families on bigint values. Parsing and validation
 * go through ip-cidr; everything after parsing works on canonical values, so
 * the rest of the code never compares address strings.
 */
import IPCIDR from 'ip-cidr';

export type Family = 4 | 6;

export interface Ip {
  readonly family: Family;
  readonly value: bigint;
}

/** A canonical prefix: no host bits set. */
export interface Cidr {
  readonly family: Family;
  readonly network: bigint;
  readonly prefix: number;
}

const BITS: Record<Family, number> = { 4: 32, 6: 128 };

export function familyBits(family: Family): number {
  return BITS[family];
}

function familyOf(text: string): Family {
  return text.includes(':') ? 6 : 4;
}

/** Parses a plain address ("10.0.0.1", "fd00::1"); returns undefined when it is not one. */
export function parseIp(text: string): Ip | undefined {
  if (typeof text !== 'string') return undefined;
  // Every RequestAddress parses its pool, ip-range, cursor and address: ip-cidr builds big-number objects for
  // each (half of the call's time, measured at 60 000 addresses), so the canonical dotted quad that the records
  // and Docker use is read directly. Any other form still goes through ip-cidr, which decides what is valid.
  const v4 = canonicalV4(text);
  if (v4 !== undefined) return { family: 4, value: BigInt(v4) };
  // Likewise IPv6 in hex groups (no dotted tail, no zone): every container port's guard flows parse its
  // addresses, and ip-cidr's big-number path was a sixth of the plugin's CPU in a burst of 50 starts.
  const v6 = hexV6(text);
  if (v6 !== undefined) return { family: 6, value: v6 };
  if (text.includes('/') || text.includes('%') || !IPCIDR.isValidAddress(text)) {
    return undefined;
  }
  const family = familyOf(text);
  try {
    const value = new IPCIDR(`${text}/${BITS[family]}`).start<bigint>({ type: 'bigInteger' });
    return { family, value: BigInt(value) };
  } catch {
    return undefined; // ip-cidr throws on forms it validated but cannot build, such as ::ffff:1.2.3.4
  }
}

export interface ParsedCidr {
  readonly cidr: Cidr;
  /** The address as written, which may have host bits (e.g. a gateway "10.0.0.1/24"). */
  readonly ip: Ip;
}

/** Parses "addr/len"; returns undefined when it is not a prefix. Host bits are kept in `ip`. */
export function parseCidrWithHost(text: string): ParsedCidr | undefined {
  if (typeof text !== 'string') return undefined;
  const slash = text.lastIndexOf('/');
  const v4 = slash > 0 ? canonicalV4(text.slice(0, slash)) : undefined;
  const length = v4 !== undefined ? decimal(text, slash + 1, text.length) : undefined;
  if (v4 !== undefined && length !== undefined && length <= 32) {
    const ip: Ip = { family: 4, value: BigInt(v4) };
    return { ip, cidr: { family: 4, prefix: length, network: ip.value & mask(4, length) } };
  }
  if (text.includes('%') || !IPCIDR.isValidCIDR(text)) return undefined;
  const ip = parseIp(text.slice(0, slash));
  if (!ip) return undefined;
  const prefix = Number(text.slice(slash + 1));
  return { ip, cidr: { family: ip.family, prefix, network: ip.value & mask(ip.family, prefix) } };
}

/** Parses a canonical prefix; returns undefined when it is not one or when host bits are set. */
export function parseCidr(text: string): Cidr | undefined {
  const parsed = parseCidrWithHost(text);
  if (!parsed || parsed.ip.value !== parsed.cidr.network) return undefined;
  return parsed.cidr;
}

export function mask(family: Family, prefix: number): bigint {
  const bits = BITS[family];
  const all = (1n << BigInt(bits)) - 1n;
  return prefix === 0 ? 0n : (all >> BigInt(bits - prefix)) << BigInt(bits - prefix);
}

export function size(cidr: Cidr): bigint {
  return 1n << BigInt(BITS[cidr.family] - cidr.prefix);
}

export function lastValue(cidr: Cidr): bigint {
  return cidr.network + size(cidr) - 1n;
}

export function contains(cidr: Cidr, ip: Ip): boolean {
  return ip.family === cidr.family && (ip.value & mask(cidr.family, cidr.prefix)) === cidr.network;
}

export function containsCidr(outer: Cidr, inner: Cidr): boolean {
  return outer.family === inner.family && inner.prefix >= outer.prefix && contains(outer, { family: inner.family, value: inner.network });
}

export function overlaps(a: Cidr, b: Cidr): boolean {
  return containsCidr(a, b) || containsCidr(b, a);
}

export function formatIp(ip: Ip): string {
  return ip.family === 4 ? formatV4(ip.value) : formatV6(ip.value);
}

export function formatCidr(cidr: Cidr): string {
  return `${formatIp({ family: cidr.family, value: cidr.network })}/${cidr.prefix}`;
}

/** "10.0.0.5/24" style: an address with the prefix length of its subnet. */
export function formatIpWithPrefix(ip: Ip, prefix: number): string {
  return `${formatIp(ip)}/${prefix}`;
}

export function ipEquals(a: Ip, b: Ip): boolean {
  return a.family === b.family && a.value === b.value;
}

/** Canonical text of an address, or undefined if it is not one. */
export function canonicalIp(text: string): string | undefined {
  const ip = parseIp(text);
  return ip && formatIp(ip);
}

/**
 * The value of an IPv4 address in canonical dotted-quad form (four decimal numbers up to 255, no leading
 * zeros), or undefined for any other text.
 */
function canonicalV4(text: string): number | undefined {
  let value = 0;
  let start = 0;
  for (let part = 0; part < 4; part++) {
    const end = part < 3 ? text.indexOf('.', start) : text.length;
    if (end < 0) return undefined;
    const octet = decimal(text, start, end);
    if (octet === undefined || octet > 255) return undefined;
    value = value * 256 + octet;
    start = end + 1;
  }
  return value;
}

/**
 * IPv6 written as hex groups: eight of one to four digits, or fewer around one `::`. Undefined for any
 * other text, valid or not (a dotted IPv4 tail, a zone), which ip-cidr then decides.
 */
function hexV6(text: string): bigint | undefined {
  const length = text.length;
  if (length < 2 || length > 39) return undefined;
  const gap = text.indexOf('::');
  if (gap >= 0 && text.indexOf('::', gap + 1) >= 0) return undefined;
  const head = gap < 0 ? text : text.slice(0, gap);
  const tail = gap < 0 ? '' : text.slice(gap + 2);
  const before = head === '' ? [] : head.split(':');
  const after = tail === '' ? [] : tail.split(':');
  const groups = before.length + after.length;
  if (gap < 0 ? groups !== 8 : groups > 7) return undefined;
  let value = 0n;
  for (const group of before) {
    const g = hexGroup(group);
    if (g === undefined) return undefined;
    value = (value << 16n) | BigInt(g);
  }
  value <<= BigInt(16 * (8 - groups));
  for (const group of after) {
    const g = hexGroup(group);
    if (g === undefined) return undefined;
    value = (value << 16n) | BigInt(g);
  }
  return value;
}

/** One to four hex digits; undefined otherwise. */
function hexGroup(group: string): number | undefined {
  if (group.length < 1 || group.length > 4) return undefined;
  let value = 0;
  for (let i = 0; i < group.length; i++) {
    const c = group.charCodeAt(i);
    const digit = c >= 48 && c <= 57 ? c - 48 : c >= 97 && c <= 102 ? c - 87 : c >= 65 && c <= 70 ? c - 55 : -1;
    if (digit < 0) return undefined;
    value = value * 16 + digit;
  }
  return value;
}

/** A decimal number of one to three digits without a leading zero, in text[start, end); undefined otherwise. */
function decimal(text: string, start: number, end: number): number | undefined {
  const digits = end - start;
  if (digits < 1 || digits > 3 || (digits > 1 && text.charCodeAt(start) === 48)) return undefined;
  let value = 0;
  for (let i = start; i < end; i++) {
    const c = text.charCodeAt(i) - 48;
    if (c < 0 || c > 9) return undefined;
    value = value * 10 + c;
  }
  return value;
}

function formatV4(value: bigint): string {
  const n = Number(value);
  return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

/** RFC 5952 text: lower case, no leading zeros, the longest run of two or more zero groups as "::". */
function formatV6(value: bigint): string {
  const groups: number[] = [];
  for (let i = 7; i >= 0; i--) groups.push(Number((value >> BigInt(i * 16)) & 0xffffn));
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLength).join(':')}`;
}

/** Whether an address lies in a prefix (host bits allowed, "10.0.0.1/24"); false when either is not one. */
export function prefixHolds(prefix: string, address: string): boolean {
  const cidr = parseCidrWithHost(prefix)?.cidr;
  const ip = parseIp(address);
  return !!cidr && !!ip && contains(cidr, ip);
}
