/**
 * Address ranges as users and Docker give them (subnets, ip-ranges, default
 * pools, endpoint addresses), checked in one place. Callers word the refusal
 * for their audience; what is valid is decided here only.
 */
import { badRequest, exhausted } from '../errors.js';
import { type Cidr, type Family, type Ip, contains, containsCidr, formatCidr, formatIp, overlaps, parseCidr, parseCidrWithHost } from './cidr.js';
import { subnets } from './allocator.js';
import type { SubnetRecord } from './records.js';

/** The longest prefix a network may have: room for a gateway and at least one container. */
export const MAX_PREFIX: Readonly<Record<Family, number>> = { 4: 30, 6: 126 };

export type RangeProblem =
  /** Not "address/length" at all. */
  | { readonly problem: 'not-prefix' }
  | { readonly problem: 'wrong-family'; readonly family: Family }
  /** Host bits are set; `canonical` is what was probably meant. */
  | { readonly problem: 'host-bits'; readonly canonical: Cidr }
  /** Longer than MAX_PREFIX (only checked for a network's subnet). */
  | { readonly problem: 'too-small'; readonly cidr: Cidr; readonly max: number };

export type RangeCheck = { readonly ok: true; readonly cidr: Cidr } | ({ readonly ok: false } & RangeProblem);

/**
 * The range check: `text` must be a prefix without host bits, of `family`
 * when given, and, for a network's subnet (`subnet: true`), no longer than
 * MAX_PREFIX.
 */
export function checkRange(text: string, options: { family?: Family; subnet?: boolean } = {}): RangeCheck {
  const parsed = parseCidrWithHost(text);
  if (!parsed) return { ok: false, problem: 'not-prefix' };
  if (options.family !== undefined && parsed.cidr.family !== options.family) {
    return { ok: false, problem: 'wrong-family', family: parsed.cidr.family };
  }
  if (parsed.ip.value !== parsed.cidr.network) return { ok: false, problem: 'host-bits', canonical: parsed.cidr };
  const max = MAX_PREFIX[parsed.cidr.family];
  if (options.subnet && parsed.cidr.prefix > max) return { ok: false, problem: 'too-small', cidr: parsed.cidr, max };
  return { ok: true, cidr: parsed.cidr };
}

/** A range Docker or a user gave, for automatic subnets: `base` split into prefixes of `size`. */
export interface DefaultPool {
  readonly base: Cidr;
  readonly size: number;
}

export const DEFAULT_POOL_RULE =
  'each item is <base CIDR without host bits>:<prefix length>, with the prefix length between the base\'s and /30 (IPv4) or /126 (IPv6), e.g. 10.200.0.0/16:24';

/** "10.200.0.0/16:24,fd00::/48:64"; undefined when any item breaks DEFAULT_POOL_RULE. */
export function parseDefaultPools(text: string): DefaultPool[] | undefined {
  const pools: DefaultPool[] = [];
  for (const item of text.split(',')) {
    const match = /^(.+\/\d{1,3}):(\d{1,3})$/.exec(item.trim());
    const base = match ? checkRange(match[1]!) : undefined;
    if (!base?.ok) return undefined;
    const size = Number(match![2]);
    if (!(size >= base.cidr.prefix && size <= MAX_PREFIX[base.cidr.family])) return undefined;
    pools.push({ base: base.cidr, size });
  }
  return pools;
}

/** The subnet among `pools` that holds `ip`, if any. */
export function subnetHolding<T extends { readonly pool: string }>(pools: readonly T[], ip: Ip): T | undefined {
  return pools.find((p) => {
    const cidr = checkRange(p.pool);
    return cidr.ok && contains(cidr.cidr, ip);
  });
}

/** An ip-range must lie inside its subnet. */
export function rangeInside(range: Cidr, subnet: Cidr): boolean {
  return containsCidr(subnet, range);
}

/** A subnet as Docker passes it to CreateNetwork (IPv4Data, IPv6Data). */
export interface SubnetData {
  readonly addressSpace: string;
  readonly pool: string;
  readonly gateway: string;
  readonly auxAddresses: Readonly<Record<string, string>>;
}

/**
 * Docker's subnets of a network in canonical form: each pool a prefix of the
 * family without host bits, its gateway and aux addresses inside it.
 */
export function canonicalSubnets(data: readonly SubnetData[], family: Family, field: string): SubnetRecord[] {
  return data.map((d, i) => {
    const range = checkRange(d.pool, { family });
    if (!range.ok) {
      throw badRequest('InvalidRequest', `invalid request: ${field}[${i}].Pool must be an IPv${family} prefix without host bits (got "${d.pool}")`);
    }
    const pool = range.cidr;
    const inPool = (text: string, what: string): string => {
      const parsed = parseCidrWithHost(text);
      if (!parsed || !contains(pool, parsed.ip)) {
        throw badRequest('InvalidRequest', `invalid request: ${field}[${i}].${what} "${text}" is not an address of ${formatCidr(pool)}`);
      }
      return formatIp(parsed.ip);
    };
    const auxAddresses: Record<string, string> = {};
    for (const [name, value] of Object.entries(d.auxAddresses)) auxAddresses[name] = inPool(value, `AuxAddresses.${name}`);
    return { addressSpace: d.addressSpace, pool: formatCidr(pool), gateway: d.gateway ? inPool(d.gateway, 'Gateway') : undefined, auxAddresses };
  });
}

/** An endpoint's address ("10.0.0.5/24"): inside one of the network's subnets, with that subnet's prefix length. Canonical text, or "" for none. */
export function endpointAddress(text: string, subnets: readonly SubnetRecord[], family: Family): string {
  if (!text) return '';
  const parsed = parseCidrWithHost(text);
  const fits = parsed && subnets.some((s) => {
    const pool = parseCidr(s.pool);
    return pool && pool.prefix === parsed.cidr.prefix && contains(pool, parsed.ip);
  });
  if (!parsed || !fits) {
    throw badRequest(
      'InvalidAddress',
      `invalid endpoint address "${text}": must be an IPv${family} address with prefix length inside one of the network's subnets (${subnets.map((s) => s.pool).join(', ') || 'none'})`,
    );
  }
  return `${formatIp(parsed.ip)}/${parsed.cidr.prefix}`;
}

/** A subnet or ip-range as the user gave it, through the one range check; refused naming what is wrong. */
export function parseRange(text: string, family: 4 | 6, what: 'subnet' | 'ip-range'): Cidr {
  const check = checkRange(text, { family, subnet: what === 'subnet' });
  if (check.ok) return check.cidr;
  switch (check.problem) {
    case 'not-prefix':
      throw badRequest('InvalidSubnet', `invalid ${what} "${text}": not an IPv4 or IPv6 prefix (like 10.1.0.0/24)`);
    case 'wrong-family':
      throw badRequest('WrongFamily', `${what} ${text} is IPv${check.family} but an IPv${family} ${what === 'subnet' ? 'pool' : 'range'} was requested`);
    case 'host-bits':
      throw badRequest('HostBitsSet', `invalid ${what} "${text}": host bits are set; did you mean ${formatCidr(check.canonical)}?`);
    case 'too-small':
      throw badRequest(
        'SubnetTooSmall',
        `subnet ${formatCidr(check.cidr)} is too small: a network needs a gateway and at least one container address; use a /${check.max} or larger`,
      );
  }
}

/** The first subnet of the default ranges of a family that overlaps nothing `taken`; refused when none is left. */
export function freeSubnet(defaultPools: readonly DefaultPool[], family: 4 | 6, taken: readonly Cidr[]): Cidr {
  const candidates = defaultPools.filter((d) => d.base.family === family);
  if (candidates.length === 0) {
    throw exhausted('NoDefaultPool', `no default IPv${family} range is configured for automatic subnets; give --subnet or set OVSNET_DEFAULT_POOLS`);
  }
  for (const { base, size } of candidates) {
    for (const candidate of subnets(base, size)) {
      if (!taken.some((t) => overlaps(t, candidate))) return candidate;
    }
  }
  const described = candidates.map((c) => `${formatCidr(c.base)} (/${c.size} each)`).join(', ');
  throw exhausted(
    'PoolsExhausted',
    `no free subnet left in the default ranges ${described}: every one overlaps a pool in use or a host route; give --subnet or widen OVSNET_DEFAULT_POOLS`,
  );
}
