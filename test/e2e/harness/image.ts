/**
 * The test image, made offline: busybox-static plus its applet links, and
 * rawframe (an attacker's raw frames and a victim's capture, rawframe.c),
 * imported into each simulated host's dockerd (no registry is reachable).
 */
import { createHash } from 'node:crypto';
import { mkdtemp, mkdir, readFile, rm, stat, symlink, copyFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { cmd } from './proc.js';

export const TEST_IMAGE = 'local/busybox:latest';

/** rawframe.c, in the source tree beside this file's source. */
const RAWFRAME_SOURCE = path.resolve(fileURLToPath(import.meta.url), '../../../../../test/e2e/harness/rawframe.c');

/** Builds rawframe once per machine (statically: the image has no C library) and returns its path. */
export async function rawframeBinary(cacheDir: string): Promise<string> {
  const source = await readFile(RAWFRAME_SOURCE);
  const binary = path.join(cacheDir, `rawframe-${createHash('sha256').update(source).digest('hex').slice(0, 12)}`);
  if (await stat(binary).catch(() => undefined)) return binary;
  await mkdir(cacheDir, { recursive: true });
  // Runs on several engines at once may build it together: each into a file of its own, moved in whole.
  const tmp = `${binary}.${process.pid}.tmp`;
  const built = await cmd('gcc', ['-static', '-O2', '-Wall', '-o', tmp, RAWFRAME_SOURCE], { check: false });
  if (built.exitCode !== 0) throw new Error(`cannot build rawframe (install gcc and libc6-dev): ${built.stderr.trim()}`);
  await cmd('mv', [tmp, binary]);
  return binary;
}

/** Builds the image tarball once per machine (and rawframe version) and returns its path. */
export async function busyboxTarball(cacheDir: string): Promise<string> {
  const rawframe = await rawframeBinary(cacheDir);
  const tarball = path.join(cacheDir, `busybox-rootfs-${path.basename(rawframe)}.tar`);
  if (await stat(tarball).catch(() => undefined)) return tarball;
  const busybox = '/bin/busybox';
  if (!(await stat(busybox).catch(() => undefined))) throw new Error('/bin/busybox is missing: install busybox-static');
  const root = await mkdtemp(path.join(os.tmpdir(), 'ovsnet-rootfs-'));
  try {
    for (const dir of ['bin', 'etc', 'tmp', 'proc', 'sys', 'dev', 'root']) await mkdir(path.join(root, dir));
    await copyFile(busybox, path.join(root, 'bin/busybox'));
    await copyFile(rawframe, path.join(root, 'bin/rawframe'));
    const { stdout } = await cmd(busybox, ['--list']);
    for (const applet of stdout.split('\n')) {
      if (applet && applet !== 'busybox') await symlink('busybox', path.join(root, 'bin', applet)).catch(() => {});
    }
    await mkdir(cacheDir, { recursive: true });
    await cmd('tar', ['-C', root, '-cf', `${tarball}.${process.pid}.tmp`, '.']);
    await cmd('mv', [`${tarball}.${process.pid}.tmp`, tarball]);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
  return tarball;
}
