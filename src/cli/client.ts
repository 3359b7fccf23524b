/**
 * What the CLI talks to: the plugin over its Unix socket, and Docker (through
 * dockerode) to turn network names into ids.
 */
import type { StateView } from '../domain/drift.js';
import type { NetworkRecord } from '../domain/records.js';
import http from 'node:http';
import Docker from 'dockerode';

export class CliError extends Error {
  constructor(message: string, readonly exitCode = 1) {
    super(message);
  }
}

/** The state view as the plugin serves it: the plugin's own type, read back from JSON. */
export type PluginState = StateView;
export type PluginNetwork = NetworkRecord;

export class PluginClient {
  constructor(readonly socketPath: string) {}

  request(method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
    const text = body === undefined ? undefined : JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const req = http.request(
        { socketPath: this.socketPath, method, path, headers: text ? { 'Content-Length': Buffer.byteLength(text) } : {} },
        (res) => {
          let data = '';
          res.setEncoding('utf8');
          res.on('data', (c) => (data += c));
          res.on('end', () => {
            let parsed: unknown = data;
            try {
              parsed = JSON.parse(data);
            } catch {
              // plain text
            }
            resolve({ status: res.statusCode ?? 0, body: parsed });
          });
        },
      );
      req.on('error', (err: NodeJS.ErrnoException) =>
        reject(new CliError(`cannot reach the plugin at ${this.socketPath} (${err.code ?? err.message}): is it running? (set OVSNET_SOCKET or --socket for another socket)`)),
      );
      req.setTimeout(30_000, () => req.destroy(new Error('timed out')));
      req.end(text);
    });
  }

  /** True when a plugin answers on the socket. */
  async reachable(): Promise<boolean> {
    return this.request('GET', '/ovsnet/state').then(
      (r) => r.status === 200,
      () => false,
    );
  }

  async state(options: { ovn?: boolean; picture?: boolean } = {}): Promise<PluginState> {
    const res = await this.request('GET', options.ovn ? `/ovsnet/state?ovn=1${options.picture ? '&picture=1' : ''}` : '/ovsnet/state');
    if (res.status !== 200) throw new CliError(`the plugin answered ${res.status}: ${JSON.stringify(res.body)}`);
    return res.body as PluginState;
  }
}

export function dockerClient(env: NodeJS.ProcessEnv): Docker {
  const host = env.DOCKER_HOST;
  if (host?.startsWith('unix://')) return new Docker({ socketPath: host.slice('unix://'.length) });
  if (host) return new Docker({ host: host.replace(/^tcp:\/\//, 'http://') } as Docker.DockerOptions);
  return new Docker({ socketPath: '/var/run/docker.sock' });
}

/** A network by Docker name, id or id prefix, as the plugin knows it. */
export async function resolveNetwork(state: PluginState, docker: Docker, ref: string): Promise<PluginNetwork> {
  const byId = state.networks.filter((n) => n.id === ref || (ref.length >= 4 && n.id.startsWith(ref)));
  if (byId.length === 1) return byId[0]!;
  let id: string;
  try {
    id = (await docker.getNetwork(ref).inspect()).Id as string;
  } catch (err) {
    const status = (err as { statusCode?: number }).statusCode;
    if (status === 404) throw new CliError(`no network "${ref}" (neither a Docker network name nor an ovs network id)`);
    throw new CliError(`cannot ask Docker about network "${ref}": ${(err as Error).message}`);
  }
  const network = state.networks.find((n) => n.id === id);
  if (!network) throw new CliError(`network "${ref}" (${id.slice(0, 12)}) is not an ovs network of this plugin`);
  return network;
}
