/** The LevelDB store on a temporary directory: batches land whole, survive a reopen, and one process holds a directory. */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { LevelStore } from '../../src/adapters/level-store.js';
import type { NetworkRecord, PoolRecord } from '../../src/domain/records.js';

const pool = (n: number): PoolRecord => ({ id: `local/10.${n}.0.0/24`, addressSpace: 'local', pool: `10.${n}.0.0/24`, range: `10.${n}.0.0/24`, v6: false, auto: false, cursor: undefined, createdAt: new Date(0).toISOString() });

describe('LevelDB store', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'ovsnet-store-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
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

  it('applies a batch whole or not at all', async () => {
    const store = await LevelStore.open(path.join(dir, 'b'));
    const bad = { type: 'put', kind: 'network', value: { id: undefined } as unknown as NetworkRecord } as const;
    await assert.rejects(store.commit([{ type: 'put', kind: 'pool', value: pool(3) }, bad]));
    assert.deepEqual((await store.load()).pools, [], 'the good half did not land either');
    await store.close();
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
});
