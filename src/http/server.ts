/**
 * Listening on the plugin socket: root only (0600), and never stealing the
 * socket of a plugin that is still running.
 */
import { chmod, mkdir, stat, unlink } from 'node:fs/promises';
import { type RequestListener, type Server, createServer } from 'node:http';
import net from 'node:net';
import path from 'node:path';

async function inUse(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.connect(socketPath);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
}

export async function listen(app: RequestListener, socketPath: string): Promise<Server> {
  await mkdir(path.dirname(socketPath), { recursive: true });
  const existing = await stat(socketPath).catch(() => undefined);
  if (existing) {
    if (!existing.isSocket()) throw new Error(`${socketPath} exists and is not a socket; refusing to replace it`);
    if (await inUse(socketPath)) throw new Error(`another process already serves ${socketPath}; is the plugin running twice?`);
    await unlink(socketPath);
  }
  const server = createServer(app).listen(socketPath);
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
  });
  await chmod(socketPath, 0o600);
  // dockerd keeps connections alive between calls; do not cut them short.
  server.keepAliveTimeout = 5 * 60_000;
  return server;
}
