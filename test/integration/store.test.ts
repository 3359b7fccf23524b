/**
 * The LevelDB store on a temporary directory: batches land whole, in order, survive a reopen and a kill of the
 * process right after the commit returned (through the journal), and one process holds a directory.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { appendFile, cp, mkdtemp, readFile, readdir, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Level } from 'level';
import { LevelStore, SCHEMA } from '../../src/adapters/level-store.js';
import { VERSION } from '../../src/version.js';
import { LossyDir, lossyfsBinary } from '../harness/lossyfs.js';
import { storeContract } from '../contract/store.js';
import type { NetworkRecord, PoolRecord } from '../../src/domain/records.js';

/** The size of LevelDB's own log files in a store's directory: what LevelDB was handed since it opened. */
async function levelLogBytes(at: string): Promise<number> {
  const files = (await readdir(at)).filter((f) => f.endsWith('.log'));
  return (await Promise.all(files.map(async (f) => (await stat(path.join(at, f))).size))).reduce((a, b) => a + b, 0);
}

/**
 * Records the size of each batch the store hands LevelDB, as it is handed, and how many LevelDB has written;
 * `delayMs` makes each take longer (a slow disk).
 */
function spyOnBatches(store: LevelStore, delayMs = 0): { sizes: number[]; written: () => number } {
  const sizes: number[] = [];
  let written = 0;
  const db = (store as unknown as { db: { batch: (ops: unknown[], options?: unknown) => Promise<void> } }).db;
  const batch = db.batch.bind(db);
  db.batch = async (ops: unknown[], options?: unknown) => {
    sizes.push(ops.length);
    if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
    await batch(ops, options);
    written++;
  };
  return { sizes, written: () => written };
}

/** Waits until `done` says so, for at most 10 s. */
async function until(done: () => boolean): Promise<void> {
  for (const deadline = Date.now() + 10_000; !done() && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 5));
}

const FIXTURE = path.resolve(new URL('.', import.meta.url).pathname, '../../../test/fixtures/state-0.1.0');
/** What the fixture holds (test/fixtures/README.md). */
const FIXTURE_COUNTS = { records: { networks: 2, endpoints: 3, pools: 2, names: 0 }, addresses: ['10.66.0.1', '10.66.0.2', '10.66.0.50', '10.67.0.1', '10.67.0.2'] };

const pool = (n: number): PoolRecord => ({ id: `local/10.${n}.0.0/24`, addressSpace: 'local', pool: `10.${n}.0.0/24`, range: `10.${n}.0.0/24`, v6: false, auto: false, cursor: undefined, createdAt: new Date(0).toISOString() });

describe('LevelDB store', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'ovsnet-store-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  describe('the Store contract', () => {
    let n = 0;
    storeContract(async () => {
      const at = path.join(dir, `contract-${n++}`);
      return { store: await LevelStore.open(at), reopen: () => LevelStore.open(at) };
    });
  });

  it('keeps what a commit wrote across a reopen, and a delete deletes', async () => {
    const store = await LevelStore.open(path.join(dir, 'a'));
    await store.commit([
      { type: 'put', kind: 'pool', value: pool(1) },
      { type: 'put', kind: 'pool', value: pool(2) },
      { type: 'put', kind: 'address', value: { poolId: pool(1).id, address: '10.1.0.5', kind: 'address', createdAt: new Date(0).toISOString() } },
    ]);
    await store.commit([{ type: 'del', kind: 'pool', key: pool(2).id }]);
    await store.close();
    const again = await LevelStore.open(path.join(dir, 'a'));
    const snapshot = await again.load();
    assert.deepEqual(snapshot.pools.map((p) => p.id), [pool(1).id]);
    const addresses: string[] = [];
    for await (const batch of snapshot.addresses) addresses.push(...batch.map((a) => a.address));
    assert.deepEqual(addresses, ['10.1.0.5']);
    await again.close();
  });

  it('refuses a commit with a record it cannot key, and keeps none of that commit', async () => {
    const store = await LevelStore.open(path.join(dir, 'b'));
    const bad = { type: 'put', kind: 'network', value: { id: undefined } as unknown as NetworkRecord } as const;
    await assert.rejects(store.commit([{ type: 'put', kind: 'pool', value: pool(3) }, bad]));
    assert.deepEqual((await store.load()).pools, [], 'the good half did not land either');
    await store.close();
  });

  it('keeps what commits wrote when the process is killed as soon as the last one returned', async () => {
    const dir2 = path.join(dir, 'killed');
    const moduleUrl = new URL('../../src/adapters/level-store.js', import.meta.url).href;
    const script = `const { LevelStore } = await import(${JSON.stringify(moduleUrl)});
      const store = await LevelStore.open(${JSON.stringify(dir2)});
      for (let i = 0; i < 200; i++) store.commit([{ type: 'put', kind: 'address', value: { poolId: 'local/10.9.0.0/16', address: '10.9.0.' + i, kind: 'address', createdAt: '1970-01-01T00:00:00.000Z' } }]);
      await store.commit([{ type: 'del', kind: 'address', key: 'local/10.9.0.0/16|10.9.0.7' }]);
      process.kill(process.pid, 'SIGKILL');`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: 'inherit' });
    const signal = await new Promise((resolve) => child.once('exit', (_code, sig) => resolve(sig)));
    assert.equal(signal, 'SIGKILL');
    const store = await LevelStore.open(dir2);
    const addresses: string[] = [];
    for await (const batch of (await store.load()).addresses) addresses.push(...batch.map((a) => a.address));
    assert.equal(addresses.length, 199);
    assert.ok(!addresses.includes('10.9.0.7') && addresses.includes('10.9.0.199'));
    await store.close();
    assert.equal(await readFile(path.join(dir2, 'ovsnet.journal'), 'utf8'), '', 'a close leaves the journal empty');
  });

  it('lands commits in the order they were made, also when nobody waits for them', async () => {
    const store = await LevelStore.open(path.join(dir, 'order'));
    for (let round = 0; round < 50; round++) {
      void store.commit([{ type: 'put', kind: 'pool', value: pool(round) }]);
      void store.commit([{ type: 'del', kind: 'pool', key: pool(round).id }]);
      if (round % 2 === 0) void store.commit([{ type: 'put', kind: 'pool', value: pool(round) }]);
    }
    await store.close();
    const again = await LevelStore.open(path.join(dir, 'order'));
    assert.deepEqual((await again.load()).pools.map((p) => p.id).sort(), Array.from({ length: 25 }, (_, i) => pool(i * 2).id).sort());
    await again.close();
  });

  it('applies what the journal holds when it opens, loses a torn last line whole, and empties it', async () => {
    const at = path.join(dir, 'journal');
    await (await LevelStore.open(at)).close();
    const line = (ops: unknown[]) => `${JSON.stringify(ops)}\n`;
    await appendFile(path.join(at, 'ovsnet.journal'), [
      line([{ type: 'put', kind: 'pool', key: pool(4).id, value: pool(4) }, { type: 'put', kind: 'pool', key: pool(5).id, value: pool(5) }]),
      line([{ type: 'del', kind: 'pool', key: pool(5).id }]),
      line([{ type: 'put', kind: 'pool', key: pool(6).id, value: pool(6) }]).slice(0, 40),
    ].join(''));
    const store = await LevelStore.open(at);
    assert.deepEqual((await store.load()).pools.map((p) => p.id), [pool(4).id]);
    assert.equal(await readFile(path.join(at, 'ovsnet.journal'), 'utf8'), '');
    await store.close();
  });

  it('refuses to open over a damaged line before the last, naming it', async () => {
    const at = path.join(dir, 'damaged');
    await (await LevelStore.open(at)).close();
    const good = `${JSON.stringify([{ type: 'put', kind: 'pool', key: pool(7).id, value: pool(7) }])}\n`;
    await appendFile(path.join(at, 'ovsnet.journal'), `${good}{"not json\n${good}`);
    await assert.rejects(LevelStore.open(at), (err: Error) => err.message.includes('ovsnet.journal') && /line 2 of 3 is damaged/.test(err.message));
  });

  it('empties a journal grown past 1 MiB once LevelDB has it all', async () => {
    const at = path.join(dir, 'big');
    const store = await LevelStore.open(at);
    const padding = 'x'.repeat(500);
    for (let i = 0; i < 2500; i++) void store.commit([{ type: 'put', kind: 'address', value: { poolId: 'local/10.8.0.0/16', address: `10.8.${i >> 8}.${i & 255}`, kind: 'address', createdAt: padding } }]);
    let held = 0;
    for await (const batch of (await store.load()).addresses) held += batch.length;
    assert.equal(held, 2500);
    assert.equal((await readFile(path.join(at, 'ovsnet.journal'))).length, 0, 'emptied');
    await store.close();
  });

  it('hands LevelDB the commits once calls pause, and empties the journal then, with nothing read or closed', async () => {
    const at = path.join(dir, 'pause');
    // A pause long enough that the first checks below come before it, however slow the machine.
    const store = await LevelStore.open(at, { idleMs: 300 });
    const opened = await levelLogBytes(at); // the store's own record (its schema), written at the first open
    // Fewer entries than make a batch without a pause, but more than 1 MiB.
    const padding = 'x'.repeat(20_000);
    for (let i = 0; i < 60; i++) void store.commit([{ type: 'put', kind: 'address', value: { poolId: 'local/10.7.0.0/16', address: `10.7.0.${i}`, kind: 'address', createdAt: padding } }]);
    assert.ok((await stat(path.join(at, 'ovsnet.journal'))).size > 2 ** 20);
    assert.equal(await levelLogBytes(at), opened, 'LevelDB has nothing yet');
    const deadline = Date.now() + 10_000;
    while ((await stat(path.join(at, 'ovsnet.journal'))).size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.equal((await stat(path.join(at, 'ovsnet.journal'))).size, 0, 'LevelDB had it all, so the journal was emptied');
    assert.ok((await levelLogBytes(at)) > 2 ** 20);
    // And again after the next pause.
    const before = await levelLogBytes(at);
    void store.commit([{ type: 'del', kind: 'address', key: 'local/10.7.0.0/16|10.7.0.0' }]);
    while ((await levelLogBytes(at)) === before && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.ok((await levelLogBytes(at)) > before, 'LevelDB got the commit made after the first pause');
    let held = 0;
    for await (const batch of (await store.load()).addresses) held += batch.length;
    assert.equal(held, 59);
    await store.close();
  });

  it('hands LevelDB whole commits, 64 entries at most, as soon as that many are pending without a pause', async () => {
    const at = path.join(dir, 'stream');
    const store = await LevelStore.open(at, { idleMs: 60_000 });
    const spy = spyOnBatches(store);
    const batches = spy.sizes;
    const address = (i: number) => ({ type: 'put' as const, kind: 'address' as const, value: { poolId: 'local/10.6.0.0/16', address: `10.6.${i >> 8}.${i & 255}`, kind: 'address' as const, createdAt: '1970-01-01T00:00:00.000Z' } });
    const turn = () => new Promise((resolve) => setImmediate(resolve));
    for (let i = 0; i < 63; i++) {
      await store.commit([address(i)]);
      await turn();
    }
    assert.deepEqual(batches, [], 'fewer than 64 entries wait for a pause');
    await store.commit([address(63)]);
    await turn();
    assert.deepEqual(batches, [64], 'the 64th entry makes a batch on the next turn');
    await until(() => spy.written() === 1);
    // Commits of three entries: 21 of them are 63 entries; the 22nd makes 66, and the batch takes the 21 whole.
    for (let c = 0; c < 21; c++) {
      await store.commit([address(100 + 3 * c), address(101 + 3 * c), address(102 + 3 * c)]);
      await turn();
    }
    assert.deepEqual(batches, [64]);
    await store.commit([address(163), address(164), address(165)]);
    await turn();
    assert.deepEqual(batches, [64, 63], 'a batch never splits a commit');
    await store.close();
    assert.deepEqual(batches, [64, 63, 3, 1], 'close writes the rest, then the store\'s own record, synced, before it empties the journal');
    const again = await LevelStore.open(at);
    let held = 0;
    for await (const batch of (await again.load()).addresses) held += batch.length;
    assert.equal(held, 64 + 66);
    await again.close();
  });

  it('writes what came while a batch was being written once calls pause, with nothing read or closed', async () => {
    const at = path.join(dir, 'rest');
    const store = await LevelStore.open(at, { idleMs: 20 });
    const batches = spyOnBatches(store, 150).sizes;
    for (let i = 0; i < 100; i++) {
      await store.commit([{ type: 'put', kind: 'address', value: { poolId: 'local/10.5.0.0/16', address: `10.5.0.${i}`, kind: 'address', createdAt: '1970-01-01T00:00:00.000Z' } }]);
      await new Promise((resolve) => setImmediate(resolve));
    }
    const deadline = Date.now() + 10_000;
    while (batches.reduce((a, b) => a + b, 0) < 100 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.equal(batches.reduce((a, b) => a + b, 0), 100, `LevelDB got all 100 in ${JSON.stringify(batches)}`);
    await store.close();
  });

  it('keeps a commit LevelDB does not take in the journal: close says so, nothing waits forever, the next open has it', async () => {
    const errors: string[] = [];
    const store = await LevelStore.open(path.join(dir, 'g'), { onWriteError: (err) => errors.push(err.message) });
    (store as unknown as { db: { batch: () => Promise<void> } }).db.batch = () => Promise.reject(new Error('disk full'));
    await store.commit([{ type: 'put', kind: 'pool', value: pool(7) }]);
    await assert.rejects(store.close(), /does not take writes: disk full/);
    assert.deepEqual(errors, ['disk full'], 'told once per streak of failures');
    await assert.rejects(store.load(), /closed/, 'a read after such a close fails at once');
    const again = await LevelStore.open(path.join(dir, 'g'));
    assert.deepEqual((await again.load()).pools.map((p) => p.id), [pool(7).id]);
    await again.close();
  });

  it('refuses a directory another process holds, saying so', async () => {
    const held = path.join(dir, 'c');
    const moduleUrl = new URL('../../src/adapters/level-store.js', import.meta.url).href;
    const holder = spawn(process.execPath, ['--input-type=module', '-e', `const { LevelStore } = await import(${JSON.stringify(moduleUrl)}); await LevelStore.open(${JSON.stringify(held)}); console.log('held'); setInterval(() => {}, 1000);`], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      await new Promise<void>((resolve, reject) => {
        holder.stdout!.once('data', () => resolve());
        holder.once('exit', (code) => reject(new Error(`holder exited ${code}`)));
      });
      await assert.rejects(LevelStore.open(held), (err: Error) => err.message.startsWith(`cannot open the state in ${held}`) && /another plugin process holds it/.test(err.message));
    } finally {
      holder.kill('SIGKILL');
    }
  });

  it('keeps every commit that returned through a power cut that loses what was not synced (lossyfs)', async () => {
    // A child commits, many at once and one after another, with records large enough that the journal is
    // emptied several times on the way, and prints each commit as it returns; it is killed, and then every
    // write not synced is forgotten, LevelDB's own among them.
    const lossy = await LossyDir.mount(await lossyfsBinary(path.join(os.tmpdir(), 'ovsnet-test-tools')), path.join(dir, 'disk'), path.join(dir, 'lossy'));
    try {
      const at = path.join(lossy.mountpoint, 'db');
      const moduleUrl = new URL('../../src/adapters/level-store.js', import.meta.url).href;
      const script = `const { LevelStore } = await import(${JSON.stringify(moduleUrl)});
        const store = await LevelStore.open(${JSON.stringify(at)});
        const put = (i) => store.commit([{ type: 'put', kind: 'address', value: { poolId: 'local/10.4.0.0/16', address: '10.4.' + (i >> 8) + '.' + (i & 255), kind: 'address', createdAt: 'x'.repeat(2000) } }]).then(() => console.log('acked ' + i));
        for (let i = 0; i < 1200; i += 8) await Promise.all([0, 1, 2, 3, 4, 5, 6, 7].map((k) => put(i + k)));
        await store.commit([{ type: 'del', kind: 'address', key: 'local/10.4.0.0/16|10.4.0.7' }]);
        console.log('acked del');
        setInterval(() => {}, 1000);`;
      const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
      const acked = new Set<string>();
      let out = '';
      child.stdout!.on('data', (d) => {
        out += d;
        for (const line of out.split('\n').slice(0, -1)) acked.add(line.replace('acked ', ''));
        out = out.slice(out.lastIndexOf('\n') + 1);
      });
      await until(() => acked.has('del') || child.exitCode !== null);
      assert.ok(acked.has('del'), 'the child made every commit');
      child.kill('SIGKILL');
      await new Promise((resolve) => child.once('exit', resolve));
      const lost = await lossy.cut();
      assert.ok(lost.dirtyBytes > 0, `the cut forgot writes that were not synced (${JSON.stringify(lost)})`);
      const store = await LevelStore.open(at);
      const addresses = new Set<string>();
      for await (const batch of (await store.load()).addresses) for (const a of batch) addresses.add(a.address);
      await store.close();
      const missing = [...acked].filter((i) => i !== 'del' && i !== '7').map(Number).filter((i) => !addresses.has(`10.4.${i >> 8}.${i & 255}`));
      assert.deepEqual(missing, [], 'every commit that returned is there');
      assert.ok(!addresses.has('10.4.0.7'), 'and the delete that returned too');
      assert.equal(addresses.size, 1199);
    } finally {
      await lossy.unmount();
    }
  });
});

describe('the state schema', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'ovsnet-schema-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** The store's own record, read with LevelDB directly. */
  async function meta(at: string): Promise<unknown> {
    const db = new Level<string, unknown>(at, { valueEncoding: 'json' });
    try {
      return await db.sublevel<string, unknown>('meta', { valueEncoding: 'json' }).get('store');
    } finally {
      await db.close();
    }
  }

  it('migrates state written before the store kept its schema (a fixture that build made), keeping every record', async () => {
    // test/fixtures/state-0.1.0: a LevelDB directory written by the build before schemas (3fadf30), with a
    // network, a pool, addresses, an endpoint and a name (test/fixtures/README.md says how it was made).
    const at = path.join(dir, 'v1');
    await cp(FIXTURE, at, { recursive: true });
    assert.equal(await meta(at), undefined, 'the fixture has no schema record');
    const store = await LevelStore.open(at);
    assert.equal(store.opened.schema, 1, 'opened as schema 1 (and migrated)');
    const snapshot = await store.load();
    const addresses: string[] = [];
    for await (const batch of snapshot.addresses) addresses.push(...batch.map((a) => a.address));
    assert.deepEqual({ networks: snapshot.networks.length, endpoints: snapshot.endpoints.length, pools: snapshot.pools.length, names: snapshot.names.length }, FIXTURE_COUNTS.records);
    assert.deepEqual(addresses.sort(), FIXTURE_COUNTS.addresses);
    await store.close();
    assert.deepEqual(await meta(at), { schema: SCHEMA, writtenBy: VERSION });
  });

  it('takes a new directory as of this schema (nothing to migrate) and records it at once', async () => {
    const at = path.join(dir, 'new');
    const store = await LevelStore.open(at);
    assert.deepEqual(store.opened, { schema: SCHEMA, writtenBy: '' });
    await store.close();
    assert.deepEqual(await meta(at), { schema: SCHEMA, writtenBy: VERSION });
    const again = await LevelStore.open(at);
    assert.deepEqual(again.opened, { schema: SCHEMA, writtenBy: `ovsnet ${VERSION}` });
    await again.close();
  });

  it('refuses state from a newer build, naming both schemas and both builds, and changes nothing', async () => {
    const at = path.join(dir, 'newer');
    const store = await LevelStore.open(at);
    await store.commit([{ type: 'put', kind: 'pool', value: pool(3) }]);
    await store.close();
    const db = new Level<string, unknown>(at, { valueEncoding: 'json' });
    await db.sublevel<string, unknown>('meta', { valueEncoding: 'json' }).put('store', { schema: SCHEMA + 1, writtenBy: '9.9.9' });
    await db.close();
    await assert.rejects(LevelStore.open(at), (err: Error) =>
      err.message.startsWith(`cannot open the state in ${at}: it was last written by ovsnet 9.9.9, in state schema ${SCHEMA + 1}; this build (ovsnet ${VERSION}) reads state schema ${SCHEMA} and older`),
    );
    assert.deepEqual(await meta(at), { schema: SCHEMA + 1, writtenBy: '9.9.9' }, 'the refusal wrote nothing');
    // The directory is not left locked: the newer build can open it.
    const db2 = new Level<string, unknown>(at, { valueEncoding: 'json' });
    await db2.open();
    await db2.close();
  });

  it('refuses a damaged schema record, saying what it holds and what is valid', async () => {
    const at = path.join(dir, 'damaged');
    await (await LevelStore.open(at)).close();
    const db = new Level<string, unknown>(at, { valueEncoding: 'json' });
    await db.sublevel<string, unknown>('meta', { valueEncoding: 'json' }).put('store', { schema: 'two' });
    await db.close();
    await assert.rejects(LevelStore.open(at), /its schema record is damaged \(\{"schema":"two"\}\); this build \(ovsnet .*\) reads state schema \d+ and older/);
  });
});
