import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { ERROR_CODES } from '../../src/errors.js';

const SRC = path.resolve(fileURLToPath(import.meta.url), '../../../../src');

async function sources(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await sources(full)));
    else if (entry.name.endsWith('.ts') && full !== path.join(SRC, 'errors.ts')) out.push(await readFile(full, 'utf8'));
  }
  return out;
}

describe('error codes', () => {
  it('are a closed set with no code twice and none that nothing gives', async () => {
    assert.equal(new Set(ERROR_CODES).size, ERROR_CODES.length, 'no code twice');
    const text = (await sources(SRC)).join('\n');
    const unused = ERROR_CODES.filter((code) => !text.includes(`'${code}'`));
    assert.deepEqual(unused, [], 'codes no source gives');
  });
});
