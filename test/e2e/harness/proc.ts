/**
 * Process helpers for the end-to-end harness: run a command and get its
 * output, wait for a condition, and find every process that belongs to a
 * simulated host (so nothing outlives a test, even after a crash).
 */
import { readdir, readFile } from 'node:fs/promises';
import { execa } from 'execa';

export interface Result {
  stdout: string;
  stderr: string;
  exitCode: number;
}

export interface CmdOptions {
  env?: Record<string, string>;
  input?: string;
  timeoutMs?: number;
  /** Throw on a non-zero exit (default true). */
  check?: boolean;
}

export async function cmd(file: string, args: readonly string[], options: CmdOptions = {}): Promise<Result> {
  const result = await execa(file, [...args], {
    env: options.env,
    input: options.input,
    timeout: options.timeoutMs ?? 60_000,
    reject: false,
    all: false,
  });
  const out = { stdout: String(result.stdout ?? ''), stderr: String(result.stderr ?? ''), exitCode: result.exitCode ?? -1 };
  if ((options.check ?? true) && out.exitCode !== 0) {
    throw new Error(`${file} ${args.join(' ')} failed (exit ${out.exitCode}${result.timedOut ? ', timed out' : ''}): ${out.stderr.trim() || out.stdout.trim()}`);
  }
  return out;
}

export async function waitFor<T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 20_000, intervalMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined && value !== false) return value as T;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Pids whose command line or environment mentions `marker` (a simulated host's directory). */
export async function pidsMentioning(marker: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    const environ = await readFile(`/proc/${entry}/environ`, 'utf8').catch(() => '');
    if (cmdline.includes(marker) || environ.includes(marker)) pids.push(Number(entry));
  }
  return pids;
}

export async function killAll(pids: readonly number[], signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  for (const pid of pids) {
    try {
      process.kill(pid, signal);
    } catch {
      // already gone
    }
  }
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Checks that the programs a test needs are installed; fails (never skips) with what to do. */
export async function requireTools(tools: readonly string[]): Promise<void> {
  const missing: string[] = [];
  for (const tool of tools) {
    const found = await cmd('sh', ['-c', `command -v ${tool}`], { check: false });
    if (found.exitCode !== 0) missing.push(tool);
  }
  if (missing.length > 0) {
    throw new Error(`missing programs: ${missing.join(', ')}; run "bash plugin/setup-host.sh" (or .ci/run) to install them`);
  }
}
