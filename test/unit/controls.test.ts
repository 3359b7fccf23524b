/**
 * The protection tests keep their positive controls: each attack on a container, the host or a network is
 * judged by what its victim captured, and is tried again where the protection is off, where it must be seen.
 * A test without that could pass with the protection gone; this keeps one from losing it unnoticed.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';

const ROOT = path.resolve(fileURLToPath(import.meta.url), '../../../..');

/** The `it(...)` blocks of a test file, by name, each with its text up to the next one. */
async function cases(file: string): Promise<Array<{ name: string; body: string }>> {
  const text = await readFile(path.join(ROOT, file), 'utf8');
  const starts = [...text.matchAll(/^\s+it\(\s*(`[^`]*`|'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")/gm)];
  return starts.map((m, i) => ({ name: m[1]!.slice(1, -1), body: text.slice(m.index!, starts[i + 1]?.index ?? text.length) }));
}

describe('protection tests keep their positive controls', () => {
  it('every case of the attack suite captures what the victim received and has a positive control', async () => {
    const all = await cases('test/e2e/attacks.test.ts');
    assert.ok(all.length >= 8, `the attack suite has its cases (${all.length})`);
    for (const c of all) {
      if (c.name.startsWith('names the networks')) continue; // what the CLI says, no attack
      if (c.name.startsWith('counts what each guard dropped')) continue; // the metrics of the attacks above, none of its own
      assert.match(c.body, /captureDuring|attempt\(/, `${c.name}: judged by a capture at the victim`);
      assert.match(c.body, /positive control/, `${c.name}: a positive control`);
    }
  });

  it("the OVN suite's hostile container is judged by captures, with port security, ACLs and flows taken off as its control", async () => {
    const hostile = (await cases('test/e2e/ovn.test.ts')).find((c) => c.name.startsWith('a hostile container'));
    assert.ok(hostile, 'the OVN suite has its attack case');
    assert.match(hostile.body, /captureDuring/);
    assert.match(hostile.body, /lsp-set-port-security/);
    assert.match(hostile.body, /acl-del/);
    assert.match(hostile.body, /del-flows/);
    assert.match(hostile.body, /positive control/);
  });

  it('the attack table covers every attack the issue names, each with what tells it apart', async () => {
    const text = await readFile(path.join(ROOT, 'test/e2e/harness/attacks.ts'), 'utf8');
    for (const name of ['ARP reply', 'gratuitous ARP', 'another MAC', "neighbour's address", "neighbour's global address", "link-local address", 'second link-layer option', 'duplicate address detection', 'router advertisement', 'redirect', 'DHCP offer', 'DHCPv6 advertise']) {
      assert.ok(text.includes(name), name);
    }
  });
});
