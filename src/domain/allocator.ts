/**
 * Pure address selection inside one pool. The IPAM driver owns the state and
 * the persistence; this only answers "which address next", walking
 * round-robin from the last one handed out so a crash-looping container does
 * not get the same address twice in a row.
 */
import { type Cidr, type Family, contains, lastValue, size } from './cidr.js';

export interface Bounds {
  readonly family: Family;
  readonly first: bigint;
  readonly last: bigint;
}

/**
 * Addresses of `range` that may be handed out: never the pool's network address,
 * nor the IPv4 broadcast address. (IPv6 has no broadcast; its first address is
 * the subnet-router anycast address.)
 */
export function usableBounds(pool: Cidr, range: Cidr = pool): Bounds {
  const poolFirst = pool.network + 1n;
  const poolLast = pool.family === 4 ? lastValue(pool) - 1n : lastValue(pool);
  const first = range.network > poolFirst ? range.network : poolFirst;
  const rangeLast = lastValue(range);
  const last = rangeLast < poolLast ? rangeLast : poolLast;
  return { family: pool.family, first, last };
}

export function boundsSize(bounds: Bounds): bigint {
  return bounds.last >= bounds.first ? bounds.last - bounds.first + 1n : 0n;
}

/** True if `value` may be requested explicitly in `pool` (anything but network and broadcast). */
export function isAssignable(pool: Cidr, value: bigint): boolean {
  const bounds = usableBounds(pool);
  return contains(pool, { family: pool.family, value }) && value >= bounds.first && value <= bounds.last;
}

/**
 * The next free address after `cursor` (exclusive), wrapping around once.
 * `takenCount` bounds the scan: among takenCount + 1 consecutive candidates at
 * least one is free, so a huge IPv6 range costs no more than a small one.
 */
export function nextFree(
  bounds: Bounds,
  isTaken: (value: bigint) => boolean,
  takenCount: number,
  cursor?: bigint,
): bigint | undefined {
  const total = boundsSize(bounds);
  if (total === 0n) return undefined;
  let candidate = cursor !== undefined && cursor >= bounds.first && cursor < bounds.last ? cursor + 1n : bounds.first;
  const limit = BigInt(takenCount) + 1n < total ? BigInt(takenCount) + 1n : total;
  for (let i = 0n; i < limit; i++) {
    if (!isTaken(candidate)) return candidate;
    candidate = candidate >= bounds.last ? bounds.first : candidate + 1n;
  }
  return undefined;
}

/** Subnets of `prefix` inside `base`, in order; for choosing automatic pools. */
export function* subnets(base: Cidr, prefix: number): Generator<Cidr> {
  if (prefix < base.prefix) return;
  const step = size({ family: base.family, network: 0n, prefix });
  const end = base.network + size(base);
  for (let network = base.network; network < end; network += step) {
    yield { family: base.family, network, prefix };
  }
}
