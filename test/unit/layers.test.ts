/**
 * The layer rules of src/DESIGN.md, checked on the source: who may import
 * whom, that only the composition roots construct adapters, that there is no
 * import cycle, and that the file map names every source file.
 */
import assert from 'node:assert/strict';
import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';

const ROOT = path.resolve(fileURLToPath(import.meta.url), '../../../..');
const SRC = path.join(ROOT, 'src');

type Layer = 'ground' | 'domain' | 'protocol' | 'config' | 'driver' | 'adapters' | 'http' | 'root';

/** What each layer may import (besides packages). */
const MAY_IMPORT: Record<Layer, readonly Layer[]> = {
  ground: ['ground'],
  domain: ['ground', 'domain'],
  protocol: ['ground', 'domain', 'protocol'],
  config: ['ground', 'domain', 'config'],
  driver: ['ground', 'domain', 'protocol', 'driver'],
  adapters: ['ground', 'domain', 'driver', 'adapters'],
  http: ['ground', 'domain', 'protocol', 'driver', 'http'],
  root: ['ground', 'domain', 'protocol', 'config', 'driver', 'adapters', 'http', 'root'],
};

function layerOf(file: string): Layer {
  const rel = path.relative(SRC, file).split(path.sep).join('/');
  if (['errors.ts', 'log.ts', 'faults.ts', 'version.ts'].includes(rel)) return 'ground';
  if (rel === 'config.ts') return 'config';
  if (rel === 'main.ts' || rel === 'wiring.ts' || rel.startsWith('cli/')) return 'root';
  const top = rel.split('/')[0]!;
  if (['domain', 'protocol', 'driver', 'adapters', 'http'].includes(top)) return top as Layer;
  throw new Error(`${rel} belongs to no layer: add it to DESIGN.md and to this test`);
}

async function sources(dir = SRC): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await sources(full)));
    else if (entry.name.endsWith('.ts')) out.push(full);
  }
  return out.sort();
}

async function importsOf(file: string): Promise<string[]> {
  const text = await readFile(file, 'utf8');
  const specifiers = [...text.matchAll(/(?:^|\n)\s*(?:import|export)[^'"]*?from\s+'([^']+)'/g), ...text.matchAll(/import\(\s*'([^']+)'\s*\)/g)].map((m) => m[1]!);
  return specifiers.filter((s) => s.startsWith('.')).map((s) => path.resolve(path.dirname(file), s.replace(/\.js$/, '.ts')));
}

describe('layers', () => {
  it('each layer imports only the layers below it', async () => {
    const broken: string[] = [];
    for (const file of await sources()) {
      const from = layerOf(file);
      for (const target of await importsOf(file)) {
        const to = layerOf(target);
        const rel = (f: string) => path.relative(SRC, f);
        if (!MAY_IMPORT[from].includes(to)) broken.push(`${rel(file)} (${from}) imports ${rel(target)} (${to})`);
        // Adapters implement the drivers' ports: that file is all they may see of the driver layer.
        if (from === 'adapters' && to === 'driver' && rel(target) !== 'driver/ports.ts') broken.push(`${rel(file)} imports ${rel(target)}`);
      }
    }
    assert.deepEqual(broken, []);
  });

  it('only the composition roots construct adapters', async () => {
    const classes = new Set<string>();
    for (const file of await sources(path.join(SRC, 'adapters'))) {
      for (const m of (await readFile(file, 'utf8')).matchAll(/export class (\w+)/g)) classes.add(m[1]!);
    }
    assert.ok(classes.has('OvsdbClient') && classes.has('IpLinks'));
    const offenders: string[] = [];
    for (const file of await sources()) {
      if (layerOf(file) === 'root' || layerOf(file) === 'adapters') continue;
      for (const m of (await readFile(file, 'utf8')).matchAll(/new (\w+)\(/g)) {
        if (classes.has(m[1]!)) offenders.push(`${path.relative(SRC, file)} constructs ${m[1]}`);
      }
    }
    assert.deepEqual(offenders, []);
  });

  it('has no import cycle', async () => {
    const graph = new Map<string, string[]>();
    for (const file of await sources()) graph.set(file, await importsOf(file));
    const state = new Map<string, 'visiting' | 'done'>();
    const cycles: string[] = [];
    const visit = (file: string, trail: string[]) => {
      if (state.get(file) === 'done') return;
      if (state.get(file) === 'visiting') {
        cycles.push([...trail.slice(trail.indexOf(file)), file].map((f) => path.relative(SRC, f)).join(' -> '));
        return;
      }
      state.set(file, 'visiting');
      for (const next of graph.get(file) ?? []) visit(next, [...trail, file]);
      state.set(file, 'done');
    };
    for (const file of graph.keys()) visit(file, []);
    assert.deepEqual(cycles, []);
  });

  it('no source file is over 450 lines: each can be read whole', async () => {
    const long: string[] = [];
    for (const file of await sources()) {
      const lines = (await readFile(file, 'utf8')).split('\n').length - 1;
      if (lines > 450) long.push(`${path.relative(SRC, file)} (${lines} lines)`);
    }
    assert.deepEqual(long, []);
  });

  it('src/DESIGN.md has a file map that names every source file, and no file that is gone', async () => {
    const design = await readFile(path.join(SRC, 'DESIGN.md'), 'utf8');
    const map = design.slice(design.indexOf('## File map'));
    assert.ok(design.includes('## File map'), 'DESIGN.md has a "## File map" section');
    const named = new Set([...map.matchAll(/`((?:[\w-]+\/)*[\w.-]+\.ts)`/g)].map((m) => m[1]!));
    const actual = (await sources()).map((f) => path.relative(SRC, f).split(path.sep).join('/'));
    assert.deepEqual(actual.filter((f) => !named.has(f)), [], 'source files missing from the file map');
    assert.deepEqual([...named].filter((f) => !actual.includes(f)), [], 'files in the map that do not exist');
  });
});
