/** The operator's command is on the PATH once plugin/setup-host.sh ran (as CI runs it before the tests). */
import assert from 'node:assert/strict';
import { realpathSync } from 'node:fs';
import { it } from 'node:test';
import { execa } from 'execa';

it('ovsnet is a command on the PATH, this checkout\'s or an installed one, and answers', async () => {
  const which = await execa('sh', ['-c', 'command -v ovsnet'], { reject: false });
  assert.equal(which.exitCode, 0, 'ovsnet is on the PATH (plugin/setup-host.sh links it)');
  assert.match(realpathSync(which.stdout.trim()), /\/dist\/src\/cli\/main\.js$/);
  const help = await execa('ovsnet', ['--help'], { reject: false });
  assert.equal(help.exitCode, 0);
  assert.match(help.stdout, /^usage: ovsnet <command>/);
  assert.match(help.stdout, /ovn forget-host NAME/);
});
