/**
 * What a victim received while an attack ran: frames captured in a container's
 * namespace (or on an interface of a simulated host), by rawframe (rawframe.c),
 * and frames sent from a container as an attacker would, with its own
 * capabilities (CAP_NET_RAW, which Docker gives every container).
 */
import { spawn } from 'node:child_process';
import { type Frame, parseFrame } from './frames.js';
import { rawframeBinary } from './image.js';
import { sleep } from './proc.js';
import { BASE_DIR, type SimHost } from './sim-host.js';

export type Where = { readonly container: string; readonly iface?: string } | { readonly hostIf: string };

/**
 * Captures on `where` while `during` runs, and `settleMs` after it (frames in flight), and returns what
 * arrived. Fails when the capture could not start: a test never passes for want of a capture.
 */
export async function captureDuring(host: SimHost, where: Where, during: () => Promise<unknown>, settleMs = 300): Promise<Frame[]> {
  const [file, args, env] =
    'container' in where
      ? ['docker', ['exec', where.container, 'rawframe', 'capture', where.iface ?? 'eth0', '120000'], { ...process.env, DOCKER_HOST: host.dockerHost }]
      : ['nsenter', [`--net=/run/netns/${host.ns}`, '--', await rawframeBinary(BASE_DIR), 'capture', where.hostIf, '120000'], process.env];
  const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
  const lines: string[] = [];
  let errors = '';
  let buffer = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (chunk: string) => {
    buffer += chunk;
    const parts = buffer.split('\n');
    buffer = parts.pop()!;
    lines.push(...parts);
  });
  child.stderr.on('data', (chunk: Buffer) => (errors += chunk.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const deadline = Date.now() + 15_000;
  while (!lines.includes('ready')) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill();
      throw new Error(`the capture on ${JSON.stringify(where)} did not start: ${errors.trim() || 'no answer'}`);
    }
    await sleep(20);
  }
  try {
    await during();
    await sleep(settleMs);
  } finally {
    if ('container' in where) await host.docker(['exec', where.container, 'killall', 'rawframe'], { check: false });
    child.kill();
    await Promise.race([exited, sleep(5_000)]);
  }
  return lines.filter((l) => /^[0-9a-f]+$/.test(l)).map(parseFrame);
}

/** Sends frames (hex) from a container's interface, as whatever runs in it could. */
export async function sendFrames(host: SimHost, container: string, frames: readonly string[], iface = 'eth0'): Promise<void> {
  await host.docker(['exec', container, 'rawframe', 'send', iface, ...frames]);
}
