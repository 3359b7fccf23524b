/**
 * The addresses one pool holds, kept compactly in memory. A pool can hold tens
 * of thousands of addresses for the life of the plugin; as AddressRecord
 * objects (with their poolId, address and timestamp strings) in a Map, 60 000
 * of them were about 14 MiB of long-lived heap, which V8 then multiplies into
 * its old-generation limit. Here an address is a small number (its offset in
 * the pool) and its record the time it was held: about 50 bytes each.
 *
 * It reads like a read-only map from address text to AddressRecord (records
 * are built when asked for), so that callers need not know how it is kept.
 */
import { type Cidr, formatIp, parseIp } from './cidr.js';
import type { AddressKind, AddressRecord } from './records.js';

/** Offsets below this are small integers to V8 (no heap object per key); anything else is keyed by its text. */
const SMALL_OFFSET = 2n ** 30n;

/** An address as a key: its offset in the pool when small, else its canonical text. */
type Key = number | string;

export class HeldAddresses {
  /** key -> when the address was held (milliseconds since the epoch; NaN if the record had no valid time). */
  private readonly heldAt = new Map<Key, number>();
  /** The gateway addresses: one per pool, and briefly two while Docker rolls back a refused network. */
  private readonly gateways = new Set<Key>();

  /**
   * `pool` is the pool's subnet. Without it (a record of a pool whose id names no subnet, which the plugin
   * never writes) addresses are keyed by their text, and the pool cannot be walked by value.
   */
  constructor(
    readonly poolId: string,
    private readonly pool: Cidr | undefined,
  ) {}

  get size(): number {
    return this.heldAt.size;
  }

  has(address: string): boolean {
    return this.heldAt.has(this.keyOf(address));
  }

  /** Whether the address of this value (in the pool's family) is held; for walks that need no text. */
  hasValue(value: bigint): boolean {
    return this.heldAt.has(this.keyOfValue(value));
  }

  kindOf(address: string): AddressKind | undefined {
    const key = this.keyOf(address);
    if (!this.heldAt.has(key)) return undefined;
    return this.gateways.has(key) ? 'gateway' : 'address';
  }

  /** A gateway address the pool holds, if any. */
  gateway(): string | undefined {
    for (const key of this.gateways) return this.textOf(key);
    return undefined;
  }

  get(address: string): AddressRecord | undefined {
    const key = this.keyOf(address);
    const at = this.heldAt.get(key);
    return at === undefined ? undefined : this.record(key, timeText(at));
  }

  hold(record: AddressRecord): void {
    const key = this.keyOf(record.address);
    this.heldAt.set(key, Date.parse(record.createdAt));
    if (record.kind === 'gateway') this.gateways.add(key);
    else this.gateways.delete(key);
  }

  release(address: string): void {
    const key = this.keyOf(address);
    this.heldAt.delete(key);
    this.gateways.delete(key);
  }

  *keys(): IterableIterator<string> {
    for (const key of this.heldAt.keys()) yield this.textOf(key);
  }

  *values(): IterableIterator<AddressRecord> {
    // Addresses held in a burst share their millisecond: format each time once (half the cost of a record).
    let last = { at: NaN, text: '' };
    for (const [key, at] of this.heldAt) {
      if (at !== last.at) last = { at, text: timeText(at) };
      yield this.record(key, last.text);
    }
  }

  private record(key: Key, createdAt: string): AddressRecord {
    return { poolId: this.poolId, address: this.textOf(key), kind: this.gateways.has(key) ? 'gateway' : 'address', createdAt };
  }

  private keyOf(address: string): Key {
    const ip = this.pool ? parseIp(address) : undefined;
    return ip && ip.family === this.pool!.family ? this.keyOfValue(ip.value) : address;
  }

  private keyOfValue(value: bigint): Key {
    const pool = this.pool;
    if (!pool) throw new Error(`the addresses of pool ${this.poolId} cannot be walked: its id names no subnet`);
    const offset = value - pool.network;
    return offset >= 0n && offset < SMALL_OFFSET ? Number(offset) : formatIp({ family: pool.family, value });
  }

  private textOf(key: Key): string {
    return typeof key === 'string' ? key : formatIp({ family: this.pool!.family, value: this.pool!.network + BigInt(key) });
  }
}

/** A record's time as the store has it; a time that was not valid stays so (never old enough to prune). */
function timeText(at: number): string {
  return Number.isNaN(at) ? '' : new Date(at).toISOString();
}
