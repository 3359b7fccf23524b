/**
 * The store on LevelDB. One sublevel per record kind.
 *
 * A commit is first appended, as one line, to a journal beside LevelDB's own
 * files, with a write from the calling thread, and the journal is synced to
 * the disk before the commit returns: commits made while a sync is under way
 * share the next one (group commit), so many calls at once cost one sync each
 * time the disk answers. LevelDB then gets the commits in
 * the background, in commit order, in batches of whole commits, a few dozen
 * entries each: once that many are pending, or once calls pause. A LevelDB write
 * goes through a worker thread, and waking that thread and then the event loop
 * again made some 3 % of commits take 1-5 ms on a 2-core VM with idle gaps
 * between calls (as between protocol calls), where the append takes 0.03 ms
 * (p99 0.07-0.11 ms; bench/store-write.ts times both side by side, and
 * bench/ipam-scale.ts the plugin). A change that a commit returned for is on
 * the disk, so a power cut keeps it; opening the store applies whatever the
 * journal holds (a torn last line, from a power cut during an append, is a
 * commit that never returned, lost whole), then empties it. LevelDB's own
 * writes are not synced, but the journal is emptied only once LevelDB has every
 * commit it holds and a synced LevelDB write has made them durable there. A
 * LevelDB batch is atomic, and never holds part of a commit, so after a power
 * cut LevelDB too has each commit whole or not at all.
 */
import { closeSync, existsSync, fdatasync, fsyncSync, ftruncateSync, openSync, readFileSync, writeSync } from 'node:fs';
import path from 'node:path';
import { Level } from 'level';
import type { AddressRecord, EndpointRecord, NameRecord, NetworkRecord, PoolRecord } from '../domain/records.js';
import { type Snapshot, type Store, type StoreKind as Kind, type StoreOp, storeKey } from '../driver/ports.js';
import { VERSION } from '../version.js';

/**
 * The state's schema: the shape of its records and of the journal. A build opens state of its own schema or
 * older (migrating it forward first), and refuses state of a newer one, naming both. Schema 1 is state written
 * before the store kept its schema (through 0.1.0 of early December 2026); its records are as schema 2's.
 */
export const SCHEMA = 2;

/** What the store keeps of itself, in its `meta` sublevel under `store`. */
export interface StoreMeta {
  schema: number;
  /** The version of the build that last opened the state. */
  writtenBy: string;
}

/** Forward migrations: MIGRATIONS[n] turns schema n into n + 1 (the changes it returns are written with the new schema, in one synced batch). */
const MIGRATIONS: Record<number, (db: Level<string, unknown>) => Promise<LevelOp[]>> = {
  1: async () => [],
};

type Sublevel = ReturnType<typeof sublevels>['meta'];
type LevelOp = { type: 'put'; sublevel: Sublevel; key: string; value: unknown } | { type: 'del'; sublevel: Sublevel; key: string };

/** Records read at a time where there can be very many (addresses). */
const LOAD_BATCH = 1000;

/** The journal's file, among LevelDB's files (LevelDB leaves names it does not use alone). */
const JOURNAL = 'ovsnet.journal';

/** A journal this large is emptied once LevelDB has all it holds (smaller, emptying it costs more than replaying it). */
const JOURNAL_TRIM_BYTES = 1 << 20;

/** Wait before a failed background write is tried again (the journal keeps it meanwhile). */
const RETRY_MS = 1000;

/** LevelDB gets what is pending once no commit has come for this long. */
const IDLE_MS = 20;

/**
 * Entries per LevelDB batch (a commit larger than this goes alone); this many pending go to LevelDB without
 * waiting for a pause. Each LevelDB write wakes its worker thread, which then competes for the two cores with
 * the calls that keep coming, and each batch is encoded on the event loop's thread (some 3 µs an entry, while
 * a call may wait). In bench/ipam-scale at 60 000 addresses, five runs alternating, ReleaseAddress p99 was
 * 0.55-0.83 ms with batches of 64 against 0.52-2.58 ms with one write per commit; batches of 256 made
 * RequestAddress p99 0.63-0.92 ms (0.34-0.50 ms with 64, in another three runs of each).
 */
const BATCH = 64;

/** One op as the journal and LevelDB take it: the key worked out, the value as it is stored. */
type Entry = { type: 'put'; kind: Kind; key: string; value: unknown } | { type: 'del'; kind: Kind; key: string };

function sublevels(db: Level<string, unknown>) {
  const make = (name: string) => db.sublevel<string, unknown>(name, { valueEncoding: 'json' });
  return { network: make('networks'), endpoint: make('endpoints'), pool: make('pools'), address: make('addresses'), name: make('names'), meta: make('meta') };
}

function entryOf(op: StoreOp): Entry {
  const key = op.type === 'del' ? op.key : storeKey(op);
  if (typeof key !== 'string' || key === '') throw new Error(`cannot store a ${op.kind} record without its key`);
  return op.type === 'del' ? { type: 'del', kind: op.kind, key } : { type: 'put', kind: op.kind, key, value: op.value };
}

export class LevelStore implements Store {
  private readonly db: Level<string, unknown>;
  private readonly sub: ReturnType<typeof sublevels>;
  private readonly meta: Sublevel;
  private readonly journalPath: string;
  private journal = -1;
  /** Bytes appended since the journal was last emptied. */
  private journalBytes = 0;
  /** Commits in the journal that LevelDB does not have yet, in order, and their entries counted; `writing` is the batch under way. */
  private pending: Entry[][] = [];
  private pendingEntries = 0;
  private writing: Promise<void> | undefined;
  private retry: NodeJS.Timeout | undefined;
  /** A flush is due on the next turn of the event loop. */
  private flushDue = false;
  /** Fires IDLE_MS after the last commit; `idleArmed` while it is set to. */
  private idle: NodeJS.Timeout | undefined;
  private idleArmed = false;
  private lastError: Error | undefined;
  private closing = false;
  /** The schema the state had, and the build that last opened it, when this store opened it (before any migration). */
  opened: StoreMeta = { schema: SCHEMA, writtenBy: `ovsnet ${VERSION}` };
  /** The journal's sync under way, and the one commits appended since wait for (group commit). */
  private syncing: Promise<void> | undefined;
  private nextSync: Promise<void> | undefined;

  private constructor(
    dir: string,
    private readonly onWriteError: (err: Error) => void,
    private readonly idleMs: number,
  ) {
    this.db = new Level<string, unknown>(dir, { valueEncoding: 'json' });
    this.sub = sublevels(this.db);
    this.meta = this.sub.meta;
    this.journalPath = path.join(dir, JOURNAL);
  }

  /**
   * `onWriteError` hears of a background write LevelDB refused (once until one succeeds again): the journal
   * keeps the commits and the write is tried again every second, but the journal cannot be emptied meanwhile.
   * `idleMs` (for tests) is how long calls must pause before LevelDB gets fewer than a batch.
   */
  static async open(dir: string, options: { onWriteError?: (err: Error) => void; idleMs?: number } = {}): Promise<LevelStore> {
    const store = new LevelStore(dir, options.onWriteError ?? (() => {}), options.idleMs ?? IDLE_MS);
    try {
      await store.db.open();
    } catch (err) {
      const cause = (err as { cause?: Error }).cause?.message ?? (err as Error).message;
      const hint = /lock/i.test(cause) ? ': another plugin process holds it (only one may use a state directory)' : '';
      throw new Error(`cannot open the state in ${dir}: ${cause}${hint}`, { cause: err });
    }
    let meta: StoreMeta;
    try {
      meta = await store.schema(dir);
    } catch (err) {
      await store.db.close();
      throw err;
    }
    try {
      // LevelDB's lock is held from here: no other process appends to the journal.
      const created = !existsSync(store.journalPath);
      await store.replay();
      store.journal = openSync(store.journalPath, 'a');
      if (created) syncDirectory(dir);
    } catch (err) {
      await store.db.close();
      throw new Error(`cannot open the state in ${dir}: its journal ${store.journalPath}: ${(err as Error).message}`, { cause: err });
    }
    store.opened = meta;
    try {
      await store.migrate(meta);
    } catch (err) {
      await store.close();
      throw new Error(`cannot open the state in ${dir}: migrating it from schema ${meta.schema} to ${SCHEMA}: ${(err as Error).message}`, { cause: err });
    }
    return store;
  }

  /** The state's schema and last build (schema 1 if it has none but holds something: written before the store kept it); refuses a newer one. */
  private async schema(dir: string): Promise<StoreMeta> {
    const found = (await this.meta.get('store')) as Partial<StoreMeta> | undefined;
    if (found === undefined) {
      // Nothing at all: a new state directory, of this schema from the start.
      const empty = (await this.db.keys({ limit: 1 }).all()).length === 0 && !existsSync(this.journalPath);
      return empty ? { schema: SCHEMA, writtenBy: '' } : { schema: 1, writtenBy: 'an ovsnet build older than state schemas' };
    }
    const schema = found.schema;
    if (typeof schema !== 'number' || !Number.isInteger(schema) || schema < 1) {
      throw new Error(`cannot open the state in ${dir}: its schema record is damaged (${JSON.stringify(found)}); this build (ovsnet ${VERSION}) reads state schema ${SCHEMA} and older`);
    }
    const writtenBy = typeof found.writtenBy === 'string' ? `ovsnet ${found.writtenBy}` : 'an unknown ovsnet build';
    if (schema > SCHEMA) {
      throw new Error(
        `cannot open the state in ${dir}: it was last written by ${writtenBy}, in state schema ${schema}; this build (ovsnet ${VERSION}) reads state schema ${SCHEMA} and older. ` +
          `Run ${writtenBy} or a newer build (a downgrade cannot read it), or move the directory aside to start with no state.`,
      );
    }
    return { schema, writtenBy };
  }

  /** Brings older state to this schema, each step in one synced batch with its schema; records this build as the last to open it. */
  private async migrate(from: StoreMeta): Promise<void> {
    for (let schema = from.schema; schema < SCHEMA; schema++) {
      const step = MIGRATIONS[schema];
      if (!step) throw new Error(`this build has no migration from schema ${schema}`);
      const ops = await step(this.db);
      await this.db.batch([...ops, this.metaOp(schema + 1)], { sync: true });
    }
    if (from.schema === SCHEMA && from.writtenBy === `ovsnet ${VERSION}`) return;
    await this.db.batch([this.metaOp(SCHEMA)], { sync: true });
  }

  private metaOp(schema: number): LevelOp {
    const value: StoreMeta = { schema, writtenBy: VERSION };
    return { type: 'put', sublevel: this.meta, key: 'store', value };
  }

  /**
   * Applies the journal's lines, in order, as one batch, then empties it. Only the last line can be
   * incomplete (an append cut short by a power cut): that commit is lost whole. A bad line before the
   * last is damage this code cannot explain, and the store is not opened over it.
   */
  private async replay(): Promise<void> {
    if (!existsSync(this.journalPath)) return;
    const entries: Entry[] = [];
    const lines = readFileSync(this.journalPath, 'utf8').split('\n');
    if (lines.at(-1) === '') lines.pop();
    for (const [i, line] of lines.entries()) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(line);
      } catch {
        parsed = undefined;
      }
      if (Array.isArray(parsed)) {
        entries.push(...(parsed as Entry[]));
      } else if (i < lines.length - 1) {
        throw new Error(`line ${i + 1} of ${lines.length} is damaged; the commits it and the lines after it hold are not in LevelDB: move the file aside to start without them`);
      }
    }
    // Synced: the journal is emptied next.
    if (entries.length > 0) await this.db.batch(this.levelOps([entries]), { sync: true });
    const fd = openSync(this.journalPath, 'r+');
    try {
      ftruncateSync(fd, 0);
    } finally {
      closeSync(fd);
    }
  }

  async load(): Promise<Snapshot> {
    await this.drained();
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

  /** Durable when it returns: the journal has the commit, synced to the disk; LevelDB gets it next. */
  async commit(ops: readonly StoreOp[]): Promise<void> {
    if (this.journal < 0 || this.closing) throw new Error('the store is closed');
    const entries = ops.map(entryOf);
    const line = Buffer.from(`${JSON.stringify(entries)}\n`);
    try {
      for (let written = 0; written < line.length; ) written += writeSync(this.journal, line, written);
    } catch (err) {
      // Nothing of a commit that failed stays: a partial line would spoil the next one's.
      ftruncateSync(this.journal, this.journalBytes);
      throw err;
    }
    this.journalBytes += line.length;
    if (entries.length > 0) {
      this.pending.push(entries);
      this.pendingEntries += entries.length;
    }
    this.idleArmed = true;
    if (this.idle) this.idle.refresh();
    else {
      this.idle = setTimeout(() => {
        this.idleArmed = false;
        this.flush();
      }, this.idleMs);
      this.idle.unref();
    }
    if (this.pendingEntries >= BATCH && !this.flushDue) {
      // Not after a pause: on the next turn of the event loop, so that the caller answers first.
      this.flushDue = true;
      setImmediate(() => {
        this.flushDue = false;
        this.flush();
      });
    }
    await this.synced();
  }

  /**
   * Resolves once the journal is synced with everything appended before the call: the sync under way if
   * none was appended since it began, else the next one, which begins when it ends and serves every commit
   * appended meanwhile (group commit). A sync that fails fails every commit that waits on it.
   */
  private synced(): Promise<void> {
    if (this.nextSync) return this.nextSync;
    if (!this.syncing) return this.startSync();
    const next = this.syncing.then(
      () => {},
      () => {},
    );
    this.nextSync = next.then(() => {
      this.nextSync = undefined;
      return this.startSync();
    });
    return this.nextSync;
  }

  private startSync(): Promise<void> {
    const fd = this.journal;
    const sync: Promise<void> = new Promise<void>((resolve, reject) => {
      fdatasync(fd, (err) => (err ? reject(new Error(`cannot sync the state's journal ${this.journalPath} to the disk: ${err.message}; the change may not survive a power cut`, { cause: err })) : resolve()));
    }).finally(() => {
      if (this.syncing === sync) this.syncing = undefined;
    });
    this.syncing = sync;
    return sync;
  }

  /**
   * Writes what is pending to LevelDB, one batch at a time: whole commits, in order, up to BATCH entries
   * (or one larger commit alone). Once started it goes on while a whole batch is pending, or calls have
   * paused; a rest left while calls come waits.
   */
  private flush(): void {
    if (this.writing || this.retry || this.pending.length === 0 || this.journal < 0) return;
    let taken = 1;
    let count = this.pending[0]!.length;
    while (taken < this.pending.length && count + this.pending[taken]!.length <= BATCH) count += this.pending[taken++]!.length;
    // The batch that takes the last of a journal due to be emptied is synced: LevelDB must have on the disk
    // what the journal held before it goes. The others need not be (the journal has their commits).
    const sync = taken === this.pending.length && this.journalBytes >= JOURNAL_TRIM_BYTES;
    const commits = this.pending.splice(0, taken);
    this.pendingEntries -= count;
    this.writing = this.db.batch(this.levelOps(commits), { sync }).then(
      () => {
        this.writing = undefined;
        this.lastError = undefined;
        // A rest smaller than a batch waits for the pause, unless the journal is due to be emptied.
        if (this.pendingEntries >= BATCH || (this.pending.length > 0 && (!this.idleArmed || this.journalBytes >= JOURNAL_TRIM_BYTES))) return this.flush();
        if (sync && this.pending.length === 0) this.emptyJournal();
      },
      (err: Error) => {
        // The journal keeps the entries: try again later, ahead of what came since.
        this.writing = undefined;
        if (!this.lastError) this.onWriteError(err);
        this.lastError = err;
        this.pending = [...commits, ...this.pending];
        this.pendingEntries += count;
        this.retry = setTimeout(() => {
          this.retry = undefined;
          this.flush();
        }, RETRY_MS);
      },
    );
  }

  /** Resolves once LevelDB has every commit so far; rejects if a write keeps failing. */
  private async drained(): Promise<void> {
    for (let tries = 0; this.writing || this.retry || this.pending.length > 0; ) {
      // A close that gave up leaves commits pending that nothing writes any more (flush needs the journal).
      if (this.journal < 0) throw new Error(`the store is closed, and LevelDB did not take its last commits (${this.lastError?.message ?? 'unknown error'}); the journal keeps them for the next open`);
      if (this.writing) {
        await this.writing;
      } else if (this.retry) {
        clearTimeout(this.retry);
        this.retry = undefined;
        if (++tries > 3) throw new Error(`the state's LevelDB does not take writes: ${this.lastError?.message}`, { cause: this.lastError });
        this.flush();
      } else {
        this.flush();
      }
    }
  }

  private levelOps(commits: readonly (readonly Entry[])[]) {
    return commits.flat().map((e) => {
      const sublevel = this.sub[e.kind];
      if (e.type === 'del') return { type: 'del' as const, sublevel, key: e.key };
      return { type: 'put' as const, sublevel, key: e.key, value: e.value };
    });
  }

  private emptyJournal(): void {
    if (this.journal < 0) return;
    ftruncateSync(this.journal, 0);
    this.journalBytes = 0;
  }

  /** Waits until LevelDB has every commit on the disk, then empties the journal; if LevelDB does not take them, the journal keeps them. */
  async close(): Promise<void> {
    this.closing = true;
    clearTimeout(this.idle);
    try {
      if (this.journal >= 0) {
        try {
          await Promise.allSettled([this.syncing, this.nextSync]);
          await this.drained();
          // A synced write makes every earlier LevelDB write durable before the journal goes.
          await this.db.batch([this.metaOp(SCHEMA)], { sync: true });
          this.emptyJournal();
        } finally {
          closeSync(this.journal);
          this.journal = -1;
        }
      }
    } finally {
      await this.db.close();
    }
  }
}

/** Makes a new name in the directory durable (the journal's, made at the first open). */
function syncDirectory(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
