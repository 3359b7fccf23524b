/**
 * The plugin's state in memory, written through to the store. A change is
 * visible in memory only after the store accepted it, so a failed write never
 * leaves a half-applied record behind, and an answer to Docker always
 * follows a durable write.
 */
import type { Records } from '../domain/drift.js';
import { parseCidr } from '../domain/cidr.js';
import { HeldAddresses } from '../domain/held-addresses.js';
import { type AddressRecord, type EndpointRecord, type NameRecord, type NetworkRecord, type PoolRecord, upgradeNetworkRecord } from '../domain/records.js';
import type { Store, StoreOp } from './ports.js';

export class State {
  readonly networks = new Map<string, NetworkRecord>();
  readonly endpoints = new Map<string, EndpointRecord>();
  readonly pools = new Map<string, PoolRecord>();
  /** poolId -> the addresses it holds */
  private readonly addresses = new Map<string, HeldAddresses>();
  /** poolId -> endpoint name -> the address it was last given */
  private readonly names = new Map<string, Map<string, NameRecord>>();
  /** poolId -> address -> the name it was last given to (the reverse of `names`) */
  private readonly namedAddresses = new Map<string, Map<string, string>>();

  /** Hears how long each commit took to be durable (for metrics and the debug log). */
  onCommit: ((ms: number) => void) | undefined;

  private constructor(private readonly store: Store) {}

  static async open(store: Store): Promise<State> {
    const state = new State(store);
    const snapshot = await store.load();
    for (const n of snapshot.networks) state.networks.set(n.id, upgradeNetworkRecord(n));
    for (const e of snapshot.endpoints) state.endpoints.set(e.id, e);
    for (const p of snapshot.pools) state.pools.set(p.id, p);
    for await (const batch of snapshot.addresses) for (const a of batch) state.addressesOf(a.poolId, true).hold(a);
    for (const n of snapshot.names ?? []) state.putName(n);
    return state;
  }

  /** The addresses a pool last gave named endpoints, by name. */
  namesOf(poolId: string): ReadonlyMap<string, NameRecord> {
    return this.names.get(poolId) ?? EMPTY;
  }

  /** The name an address of a pool was last given to, if any. */
  nameOfAddress(poolId: string, address: string): string | undefined {
    return this.namedAddresses.get(poolId)?.get(address);
  }

  private putName(record: NameRecord): void {
    const names = this.names.get(record.poolId) ?? new Map<string, NameRecord>();
    const byAddress = this.namedAddresses.get(record.poolId) ?? new Map<string, string>();
    const before = names.get(record.name);
    if (before && byAddress.get(before.address) === record.name) byAddress.delete(before.address);
    names.set(record.name, record);
    byAddress.set(record.address, record.name);
    this.names.set(record.poolId, names);
    this.namedAddresses.set(record.poolId, byAddress);
  }

  private deleteName(key: string): void {
    const bar = key.indexOf('|');
    const poolId = key.slice(0, bar);
    const name = key.slice(bar + 1);
    const record = this.names.get(poolId)?.get(name);
    if (!record) return;
    this.names.get(poolId)!.delete(name);
    const byAddress = this.namedAddresses.get(poolId)!;
    if (byAddress.get(record.address) === name) byAddress.delete(record.address);
  }

  /** The addresses a pool holds (an empty set for a pool that holds none). */
  addressesOf(poolId: string, create = false): HeldAddresses {
    let held = this.addresses.get(poolId);
    if (!held) {
      // The pool id is "<address space>/<subnet>" (poolIdOf): the subnet addresses are counted from.
      held = new HeldAddresses(poolId, parseCidr(poolId.slice(poolId.indexOf('/') + 1)));
      if (create) this.addresses.set(poolId, held);
    }
    return held;
  }

  /** Every record, as lists. */
  records(): Records {
    // Address records are built only when read: converging the host reads the records every pass and never
    // their addresses, and building 60 000 of them took some 100 ms with the event loop blocked. A reader that
    // awaits before reading them sees the addresses held at that moment, which are never older than what it
    // compares them with: Docker's networks are fetched before, and an address held across hosts is claimed
    // before it is held and given up before it is let go.
    const pools = [...this.addresses.values()];
    let addresses: AddressRecord[] | undefined;
    return {
      networks: [...this.networks.values()],
      endpoints: [...this.endpoints.values()],
      pools: [...this.pools.values()],
      get addresses() {
        addresses ??= pools.flatMap((held) => [...held.values()]);
        return addresses;
      },
    };
  }

  endpointsOf(networkId: string): EndpointRecord[] {
    return [...this.endpoints.values()].filter((e) => e.networkId === networkId);
  }

  async commit(ops: readonly StoreOp[]): Promise<void> {
    if (ops.length === 0) return;
    const started = performance.now();
    await this.store.commit(ops);
    this.onCommit?.(performance.now() - started);
    for (const op of ops) this.apply(op);
  }

  private apply(op: StoreOp): void {
    if (op.type === 'put') {
      switch (op.kind) {
        case 'network':
          this.networks.set(op.value.id, op.value);
          return;
        case 'endpoint':
          this.endpoints.set(op.value.id, op.value);
          return;
        case 'pool':
          this.pools.set(op.value.id, op.value);
          return;
        case 'address':
          this.addressesOf(op.value.poolId, true).hold(op.value);
          return;
        case 'name':
          this.putName(op.value);
          return;
      }
    }
    switch (op.kind) {
      case 'network':
        this.networks.delete(op.key);
        return;
      case 'endpoint':
        this.endpoints.delete(op.key);
        return;
      case 'pool':
        this.pools.delete(op.key);
        this.addresses.delete(op.key);
        return;
      case 'name':
        this.deleteName(op.key);
        return;
      case 'address': {
        const bar = op.key.lastIndexOf('|');
        const poolId = op.key.slice(0, bar);
        const held = this.addresses.get(poolId);
        held?.release(op.key.slice(bar + 1));
        if (held && held.size === 0) this.addresses.delete(poolId);
        return;
      }
    }
  }
}

const EMPTY: ReadonlyMap<string, NameRecord> = new Map();
