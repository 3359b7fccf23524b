/**
 * A directory that loses what was not synced when the power is cut: lossyfs
 * (lossyfs.c, a FUSE filesystem) over a backing directory. Writes stay in
 * lossyfs's memory until their file is synced; `cut()` forgets them, as a
 * power cut forgets the page cache. Used by the store's integration test and
 * by the end-to-end power cut.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { appendFile, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { cmd, waitFor } from '../e2e/harness/proc.js';

/** lossyfs.c, in the source tree beside this file's source. */
const SOURCE = path.resolve(fileURLToPath(import.meta.url), '../../../../test/harness/lossyfs.c');

/** What lossyfs holds unsynced, and what cuts made it forget (bytes are file sizes: what a file would have been). */
export interface LossyCounts {
  dirtyFiles: number;
  dirtyBytes: number;
  cutFiles: number;
  cutBytes: number;
  syncedFiles: number;
}

/** Builds lossyfs once per machine (and source) into cacheDir and returns its path. */
export async function lossyfsBinary(cacheDir: string): Promise<string> {
  const source = await readFile(SOURCE);
  const binary = path.join(cacheDir, `lossyfs-${createHash('sha256').update(source).digest('hex').slice(0, 12)}`);
  if (await stat(binary).catch(() => undefined)) return binary;
  await mkdir(cacheDir, { recursive: true });
  const flags = await cmd('pkg-config', ['--cflags', '--libs', 'fuse3'], { check: false });
  if (flags.exitCode !== 0) throw new Error(`cannot build lossyfs: pkg-config knows no fuse3 (install libfuse3-dev, fuse3 and pkg-config): ${flags.stderr.trim()}`);
  // Runs on several engines at once may build it together: each into a file of its own, moved in whole.
  const tmp = `${binary}.${process.pid}`;
  const built = await cmd('gcc', ['-O2', '-Wall', '-o', tmp, SOURCE, ...flags.stdout.trim().split(/\s+/)], { check: false });
  if (built.exitCode !== 0) throw new Error(`cannot build lossyfs: ${built.stderr.trim()}`);
  await cmd('mv', [tmp, binary]);
  return binary;
}

export class LossyDir {
  private constructor(
    readonly mountpoint: string,
    private readonly child: ChildProcess,
    private readonly output: () => string,
  ) {}

  /** Mounts lossyfs over `backing` at `mountpoint` (both made if missing); what it says goes to `log` too. */
  static async mount(binary: string, backing: string, mountpoint: string, log?: string): Promise<LossyDir> {
    await mkdir(backing, { recursive: true });
    await mkdir(mountpoint, { recursive: true });
    const child = spawn(binary, [backing, mountpoint], { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    const heard = (d: Buffer) => {
      output += d;
      if (log) void appendFile(log, d);
    };
    child.stdout!.on('data', heard);
    child.stderr!.on('data', heard);
    child.on('exit', (code, signal) => {
      if (log) void appendFile(log, `lossyfs exited (code ${code}, signal ${signal})\n`);
    });
    const dir = new LossyDir(mountpoint, child, () => output);
    await waitFor(`lossyfs mounted at ${mountpoint}`, async () => {
      if (child.exitCode !== null) throw new Error(`lossyfs exited (${child.exitCode}): ${output.trim()}`);
      return (await stat(path.join(mountpoint, '.lossyfs')).catch(() => undefined)) !== undefined;
    }, 10_000, 50);
    return dir;
  }

  /** lossyfs's process id (a power cut that kills the host's processes spares it: it is the disk). */
  get pid(): number | undefined {
    return this.child.pid;
  }

  async counts(): Promise<LossyCounts> {
    const text = await readFile(path.join(this.mountpoint, '.lossyfs'), 'utf8');
    const n = (name: string) => Number(new RegExp(`${name} (\\d+)`).exec(text)?.[1] ?? NaN);
    return { dirtyFiles: n('dirty_files'), dirtyBytes: n('dirty_bytes'), cutFiles: n('cut_files'), cutBytes: n('cut_bytes'), syncedFiles: n('synced_files') };
  }

  /** The power cut, for this directory: every write not synced is forgotten. Returns the counts before it. */
  async cut(): Promise<LossyCounts> {
    const before = await this.counts();
    await writeFile(path.join(this.mountpoint, '.lossyfs'), 'cut');
    return before;
  }

  /** Unmounts (lazily if something still holds it) and waits for lossyfs to exit. */
  async unmount(): Promise<void> {
    if (this.child.exitCode === null) {
      const done = await cmd('fusermount3', ['-u', this.mountpoint], { check: false });
      if (done.exitCode !== 0) await cmd('umount', ['-l', this.mountpoint], { check: false });
      await waitFor('lossyfs to exit', async () => this.child.exitCode !== null || this.child.signalCode !== null, 10_000, 50).catch(() => this.child.kill('SIGKILL'));
    }
    if (this.child.exitCode !== 0 && this.child.exitCode !== null) throw new Error(`lossyfs exited ${this.child.exitCode}: ${this.output().trim()}`);
  }
}
