/**
 * The store on LevelDB. One sublevel per record kind; a commit is one batch,
 * which LevelDB applies atomically (all or nothing, also across a crash).
 */
import { Level } from 'level';
import type { AddressRecord, EndpointRecord, NameRecord, NetworkRecord, PoolRecord } from '../domain/records.js';
import { type Snapshot, type Store, type StoreKind as Kind, type StoreOp, storeKey } from '../driver/ports.js';

/** Records read at a time where there can be very many (addresses). */
const LOAD_BATCH = 1000;

function sublevels(db: Level<string, unknown>) {
  const make = (name: string) => db.sublevel<string, unknown>(name, { valueEncoding: 'json' });
  return { network: make('networks'), endpoint: make('endpoints'), pool: make('pools'), address: make('addresses'), name: make('names') };
}

export class LevelStore implements Store {
  private readonly db: Level<string, unknown>;
  private readonly sub: ReturnType<typeof sublevels>;

  private constructor(path: string) {
    this.db = new Level<string, unknown>(path, { valueEncoding: 'json' });
    this.sub = sublevels(this.db);
  }

  static async open(path: string): Promise<LevelStore> {
    const store = new LevelStore(path);
    try {
      await store.db.open();
    } catch (err) {
      const cause = (err as { cause?: Error }).cause?.message ?? (err as Error).message;
      const hint = /lock/i.test(cause) ? ': another plugin process holds it (only one may use a state directory)' : '';
      throw new Error(`cannot open the state in ${path}: ${cause}${hint}`, { cause: err });
    }
    return store;
  }

  async load(): Promise<Snapshot> {
    const values = async <T>(kind: Kind) => (await this.sub[kind].values().all()) as T[];
    return {
      networks: await values<NetworkRecord>('network'),
      endpoints: await values<EndpointRecord>('endpoint'),
      pools: await values<PoolRecord>('pool'),
      addresses: this.batches<AddressRecord>('address'),
      names: await values<NameRecord>('name'),
    };
  }

  private async *batches<T>(kind: Kind): AsyncGenerator<readonly T[]> {
    const iterator = this.sub[kind].values();
    try {
      for (;;) {
        const batch = (await iterator.nextv(LOAD_BATCH)) as T[];
        if (batch.length === 0) return;
        yield batch;
      }
    } finally {
      await iterator.close();
    }
  }

  async commit(ops: readonly StoreOp[]): Promise<void> {
    await this.db.batch(
      ops.map((op) => {
        const sublevel = this.sub[op.kind];
        if (op.type === 'del') return { type: 'del' as const, sublevel, key: op.key };
        return { type: 'put' as const, sublevel, key: storeKey(op), value: op.value };
      }),
    );
  }

  async close(): Promise<void> {
    await this.db.close();
  }
}
