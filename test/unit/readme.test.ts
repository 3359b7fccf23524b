/** The README documents every daemon setting and network option, with the right defaults. */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { SETTINGS } from '../../src/config.js';
import { GATEWAY_MODES, NETWORK_OPTIONS } from '../../src/domain/options.js';

const readme = () => readFile(path.resolve(fileURLToPath(import.meta.url), '../../../../README.md'), 'utf8');

describe('README', () => {
  it('starts with the two commands: bring up and test', async () => {
    const text = await readme();
    const firstBlock = /```sh\n([\s\S]*?)```/.exec(text)?.[1] ?? '';
    assert.match(firstBlock, /^sudo bash plugin\/setup-host\.sh/m);
    assert.match(firstBlock, /^sudo npm test/m);
  });

  it('lists every setting with its default', async () => {
    const text = await readme();
    for (const setting of SETTINGS) {
      const shown = setting.default === '' ? '(empty)' : `\`${setting.default}\``;
      assert.ok(text.includes(`| \`${setting.name}\` | ${shown} |`), `${setting.name} with default ${shown}`);
    }
  });

  it('lists every network option and gateway mode', async () => {
    const text = await readme();
    for (const option of NETWORK_OPTIONS) assert.ok(text.includes(`| \`${option}\` |`), option);
    for (const mode of GATEWAY_MODES) assert.ok(text.includes(`| \`${mode}\` |`), mode);
  });
});
