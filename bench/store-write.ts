/**
 * One store write as the plugin makes it between protocol calls (a pause of
 * about a millisecond before each), five ways side by side in one process:
 * a LevelDB batch awaited, the same batch synced (`sync: true`), an append of
 * the same line to a file from the event loop's thread, the append followed by
 * fdatasync (what makes a commit durable), and LevelStore.commit (the synced
 * journal, with LevelDB behind it). Prints p50, p99 and max of 1 000 writes
 * each, three rounds; then group commit: 64 commits made at once against 64
 * one after another (they share syncs).
 *
 *   node dist/bench/store-write.js
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { closeSync, fdatasync, openSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Level } from 'level';
import { LevelStore } from '../src/adapters/level-store.js';
import { quantile } from './support.js';

const stats = (v: number[]) => `p50 ${quantile(v, 0.5).toFixed(3)}  p99 ${quantile(v, 0.99).toFixed(3)}  max ${Math.max(...v).toFixed(2)} ms`;
const pause = () => new Promise((resolve) => setTimeout(resolve, 1));

async function main(): Promise<void> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ovsnet-bench-store-'));
  try {
    const db = new Level<string, unknown>(path.join(dir, 'raw'), { valueEncoding: 'json' });
    const addresses = db.sublevel<string, unknown>('addresses', { valueEncoding: 'json' });
    await db.open();
    const file = openSync(path.join(dir, 'append'), 'a');
    const store = await LevelStore.open(path.join(dir, 'store'));
    const record = (round: number, i: number) => ({ poolId: 'local/10.128.0.0/16', address: `10.128.${round}.${i % 256}`, kind: 'address' as const, createdAt: new Date().toISOString() });
    for (let round = 0; round < 3; round++) {
      const batch: number[] = [];
      const batchSynced: number[] = [];
      const append: number[] = [];
      const appendSynced: number[] = [];
      const commit: number[] = [];
      for (let i = 0; i < 1000; i++) {
        const value = record(round, i);
        await pause();
        let t = performance.now();
        await db.batch([{ type: 'put', sublevel: addresses, key: `${value.poolId}|${value.address}`, value }]);
        batch.push(performance.now() - t);
        await pause();
        t = performance.now();
        await db.batch([{ type: 'put', sublevel: addresses, key: `${value.poolId}|${value.address}`, value }], { sync: true });
        batchSynced.push(performance.now() - t);
        await pause();
        t = performance.now();
        writeSync(file, `${JSON.stringify([{ type: 'put', kind: 'address', key: `${value.poolId}|${value.address}`, value }])}\n`);
        append.push(performance.now() - t);
        await pause();
        t = performance.now();
        writeSync(file, `${JSON.stringify([{ type: 'put', kind: 'address', key: `${value.poolId}|${value.address}`, value }])}\n`);
        await new Promise<void>((resolve, reject) => fdatasync(file, (err) => (err ? reject(err) : resolve())));
        appendSynced.push(performance.now() - t);
        await pause();
        t = performance.now();
        await store.commit([{ type: 'put', kind: 'address', value }]);
        commit.push(performance.now() - t);
      }
      console.log(`round ${round + 1}:`);
      console.log(`  LevelDB batch         ${stats(batch)}`);
      console.log(`  LevelDB batch, synced ${stats(batchSynced)}`);
      console.log(`  append                ${stats(append)}`);
      console.log(`  append + fdatasync    ${stats(appendSynced)}`);
      console.log(`  LevelStore.commit     ${stats(commit)}`);
    }
    // Group commit: commits made while a sync is under way share the next one.
    for (let round = 0; round < 3; round++) {
      const values = Array.from({ length: 64 }, (_, i) => record(10 + round, i));
      await pause();
      let t = performance.now();
      await Promise.all(values.map((value) => store.commit([{ type: 'put', kind: 'address', value }])));
      const together = performance.now() - t;
      await pause();
      t = performance.now();
      for (const value of values) await store.commit([{ type: 'put', kind: 'address', value }]);
      const alone = performance.now() - t;
      console.log(`group commit, round ${round + 1}: 64 commits at once ${together.toFixed(1)} ms, one after another ${alone.toFixed(1)} ms (${(alone / together).toFixed(1)}x)`);
    }
    closeSync(file);
    await store.close();
    await db.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
