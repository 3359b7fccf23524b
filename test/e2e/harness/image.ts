/**
 * The test image, made offline: busybox-static plus its applet links,
 * imported into each simulated host's dockerd (no registry is reachable).
 */
import { mkdtemp, mkdir, rm, stat, symlink, copyFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { cmd } from './proc.js';

export const TEST_IMAGE = 'local/busybox:latest';

/** Builds the image tarball once per machine and returns its path. */
export async function busyboxTarball(cacheDir: string): Promise<string> {
  const tarball = path.join(cacheDir, 'busybox-rootfs.tar');
  if (await stat(tarball).catch(() => undefined)) return tarball;
  const busybox = '/bin/busybox';
  if (!(await stat(busybox).catch(() => undefined))) throw new Error('/bin/busybox is missing: install busybox-static');
  const root = await mkdtemp(path.join(os.tmpdir(), 'ovsnet-rootfs-'));
  try {
    for (const dir of ['bin', 'etc', 'tmp', 'proc', 'sys', 'dev', 'root']) await mkdir(path.join(root, dir));
    await copyFile(busybox, path.join(root, 'bin/busybox'));
    const { stdout } = await cmd(busybox, ['--list']);
    for (const applet of stdout.split('\n')) {
      if (applet && applet !== 'busybox') await symlink('busybox', path.join(root, 'bin', applet)).catch(() => {});
    }
    await mkdir(cacheDir, { recursive: true });
    await cmd('tar', ['-C', root, '-cf', `${tarball}.tmp`, '.']);
    await cmd('mv', [`${tarball}.tmp`, tarball]);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
  return tarball;
}
