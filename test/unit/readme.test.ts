/**
 * The documents keep their promises: the README starts with the two commands, docs/ documents every daemon
 * setting and network option with the right defaults, and every relative link (and its #anchor) in the
 * documents resolves.
 */
import assert from 'node:assert/strict';
import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { SETTINGS } from '../../src/config.js';
import { GATEWAY_MODES, NETWORK_OPTIONS } from '../../src/domain/options.js';

const ROOT = path.resolve(fileURLToPath(import.meta.url), '../../../..');
const read = (file: string) => readFile(path.join(ROOT, file), 'utf8');

/** The documents a reader is sent through: the README, docs/, and the READMEs and design beside the code. */
async function documents(): Promise<string[]> {
  const docs = (await readdir(path.join(ROOT, 'docs'))).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`);
  return ['README.md', ...docs, 'src/DESIGN.md', 'test/README.md', 'bench/README.md', 'test/fixtures/README.md'];
}

/** GitHub's anchor for a heading: lower case, punctuation but hyphens and underscores dropped, spaces as hyphens. */
function slug(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, '')
    .replace(/\s/g, '-');
}

/** The anchors of a Markdown file's headings (outside code blocks), with GitHub's -1, -2 for repeats. */
function anchors(text: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  let fenced = false;
  for (const line of text.split('\n')) {
    if (line.startsWith('```')) fenced = !fenced;
    const m = !fenced && /^#{1,6} (.*)$/.exec(line);
    if (!m) continue;
    const base = slug(m[1]!);
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n === 0 ? base : `${base}-${n}`);
  }
  return out;
}

/** The relative links of a Markdown text (outside code blocks): [text](target). */
function links(text: string): string[] {
  const out: string[] = [];
  let fenced = false;
  for (const line of text.split('\n')) {
    if (line.startsWith('```')) fenced = !fenced;
    if (fenced) continue;
    for (const m of line.matchAll(/\]\(([^)\s]+)\)/g)) {
      const target = m[1]!;
      if (!/^[a-z]+:/i.test(target)) out.push(target);
    }
  }
  return out;
}

describe('the documents', () => {
  it('the README starts with the two commands: bring up and test', async () => {
    const text = await read('README.md');
    const firstBlock = /```sh\n([\s\S]*?)```/.exec(text)?.[1] ?? '';
    assert.match(firstBlock, /^sudo bash plugin\/setup-host\.sh/m);
    assert.match(firstBlock, /^sudo npm test/m);
  });

  it('docs/operations.md lists every setting with its default', async () => {
    const text = await read('docs/operations.md');
    for (const setting of SETTINGS) {
      const shown = setting.default === '' ? '(empty)' : `\`${setting.default}\``;
      assert.ok(text.includes(`| \`${setting.name}\` | ${shown} |`), `${setting.name} with default ${shown}`);
    }
  });

  it('docs/network-options.md lists every network option and gateway mode', async () => {
    const text = await read('docs/network-options.md');
    for (const option of NETWORK_OPTIONS) assert.ok(text.includes(`| \`${option}\` |`), option);
    for (const mode of GATEWAY_MODES) assert.ok(text.includes(`| \`${mode}\` |`), mode);
  });

  it('every relative link in the documents resolves, and so does its anchor', async () => {
    const broken: string[] = [];
    for (const doc of await documents()) {
      const text = await read(doc);
      for (const link of links(text)) {
        const [file, anchor] = link.split('#') as [string, string | undefined];
        const target = file === '' ? doc : path.posix.normalize(path.posix.join(path.posix.dirname(doc), file));
        if (!(await stat(path.join(ROOT, target)).catch(() => undefined))) {
          broken.push(`${doc}: ${link} (no ${target})`);
          continue;
        }
        if (anchor !== undefined && target.endsWith('.md') && !anchors(await read(target)).has(anchor)) broken.push(`${doc}: ${link} (no heading #${anchor} in ${target})`);
      }
    }
    assert.deepEqual(broken, []);
  });

  it('the README stays a front door: at most about 250 lines', async () => {
    const lines = (await read('README.md')).split('\n').length;
    assert.ok(lines <= 260, `README.md has ${lines} lines: move reference into docs/`);
  });
});
