/**
 * The plugin's HTTP API as Docker speaks it: POST /<Interface>.<Method> with a
 * JSON body and no Content-Type. Handlers only decode, call a driver and
 * encode; one error middleware turns every error into the wire form
 * (`Err` for the network driver, `Error` for IPAM; both are always set).
 */
import express, { type NextFunction, type Request, type Response } from 'express';
import { type ErrorKind, badRequest, errorMessage, isPluginError, notFound } from '../errors.js';
import type { Logger } from '../log.js';
import { isOverlay } from '../domain/options.js';
import type { NetworkDriver } from '../driver/network-driver.js';
import type { IpamDriver } from '../driver/ipam-driver.js';
import type { State } from '../driver/state.js';
import type { Reconciler } from '../driver/reconcile.js';
import type { Metrics } from './metrics.js';
import {
  decodeCreateEndpoint,
  decodeCreateNetwork,
  decodeEndpointRef,
  decodeJoin,
  decodeNetworkRef,
  decodeProgram,
} from '../protocol/network.js';
import { decodePoolRef, decodeReleaseAddress, decodeRequestAddress, decodeRequestPool } from '../protocol/ipam.js';

export interface AppOptions {
  network: NetworkDriver;
  ipam: IpamDriver;
  state: State;
  log: Logger;
  /** Largest request body accepted; Docker's are a few kilobytes. */
  bodyLimit?: string;
  /**
   * Resolves once the networks are restored after a start. Calls that change
   * things wait for it; activation and capability calls do not, so dockerd
   * never waits long on the plugin.
   */
  ready?: Promise<void>;
  /** Drift and reconciliation on demand (ovsnet doctor, ovsnet reconcile). */
  reconciler?: Pick<Reconciler, 'drift' | 'run'>;
  metrics?: Metrics;
}

/** Calls answered at once, even while the plugin is still restoring its networks. */
const ALWAYS_READY = new Set(['Plugin.Activate', 'NetworkDriver.GetCapabilities', 'IpamDriver.GetCapabilities', 'IpamDriver.GetDefaultAddressSpaces']);

const STATUS: Record<ErrorKind, number> = {
  BadRequest: 400,
  NotFound: 404,
  Conflict: 409,
  Exhausted: 507,
  Unavailable: 503,
  Internal: 500,
};

type Handler = (body: unknown) => unknown;

export function createApp(options: AppOptions): express.Express {
  const { network, ipam, log } = options;
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.set('query parser', 'simple');
  // Docker sends no Content-Type, so parse every body as JSON.
  app.use(express.json({ type: () => true, limit: options.bodyLimit ?? '256kb', strict: false }));

  const calls: Record<string, Handler> = {
    'Plugin.Activate': () => ({ Implements: ['NetworkDriver', 'IpamDriver'] }),

    'NetworkDriver.GetCapabilities': () => network.capabilities(),
    'NetworkDriver.CreateNetwork': async (b) => (await network.createNetwork(decodeCreateNetwork(b)), {}),
    'NetworkDriver.DeleteNetwork': async (b) => (await network.deleteNetwork(decodeNetworkRef(b).networkId), {}),
    'NetworkDriver.CreateEndpoint': (b) => network.createEndpoint(decodeCreateEndpoint(b)),
    'NetworkDriver.DeleteEndpoint': async (b) => (await network.deleteEndpoint(decodeEndpointRef(b)), {}),
    'NetworkDriver.EndpointOperInfo': (b) => network.endpointOperInfo(decodeEndpointRef(b)),
    'NetworkDriver.Join': (b) => network.join(decodeJoin(b)),
    'NetworkDriver.Leave': async (b) => (await network.leave(decodeEndpointRef(b)), {}),
    'NetworkDriver.ProgramExternalConnectivity': (b) => network.programExternalConnectivity(decodeProgram(b)),
    'NetworkDriver.RevokeExternalConnectivity': (b) => network.revokeExternalConnectivity(decodeEndpointRef(b)),
    'NetworkDriver.DiscoverNew': () => ({}),
    'NetworkDriver.DiscoverDelete': () => ({}),

    'IpamDriver.GetCapabilities': () => ipam.capabilities(),
    'IpamDriver.GetDefaultAddressSpaces': () => ipam.addressSpaces(),
    'IpamDriver.RequestPool': (b) => ipam.requestPool(decodeRequestPool(b)),
    'IpamDriver.ReleasePool': async (b) => (await ipam.releasePool(decodePoolRef(b).poolId), {}),
    'IpamDriver.RequestAddress': (b) => ipam.requestAddress(decodeRequestAddress(b)),
    'IpamDriver.ReleaseAddress': async (b) => (await ipam.releaseAddress(decodeReleaseAddress(b)), {}),
  };

  // One route and a table: Express's per-route matching cost half of each call's time (measured).
  app.post(/^\/([A-Za-z]+\.[A-Za-z]+)$/, async (req: Request, res: Response, next: NextFunction) => {
    const name = (req.params as unknown as string[])[0]!;
    const handler = Object.hasOwn(calls, name) ? calls[name] : undefined;
    if (!handler) return next();
    const started = process.hrtime.bigint();
    res.locals.call = name;
    res.locals.started = started;
    if (options.ready && !ALWAYS_READY.has(name)) await options.ready;
    const text = JSON.stringify((await handler(req.body)) ?? {});
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
    res.end(text);
    const durationMs = Number(process.hrtime.bigint() - started) / 1e6;
    options.metrics?.call(name, durationMs / 1000);
    if (!log.enabled('debug')) return;
    const body = (req.body ?? {}) as Record<string, unknown>;
    log.debug('call', { call: name, networkId: body.NetworkID, endpointId: body.EndpointID, poolId: body.PoolID, durationMs });
  });

  // Read-only view of the state for tests and the status CLI; Docker never sends GET.
  app.get('/ovsnet/state', async (req: Request, res: Response) => {
    const { state } = options;
    // Which hosts use each OVN network (asked of the northbound database only when wanted: ?ovn=1).
    const ovnHosts = req.query?.ovn === '1' ? await network.ovnHosts() : undefined;
    // Spares (veth pairs made ahead of need) are no records; listed so that audits can account for every device.
    res.json({ ...state.records(), spares: network.spares(), sparesBusy: network.sparesBusy(), ...(ovnHosts ? { ovnHosts } : {}) });
  });

  // Changing an overlay's peers without recreating it (used by `ovsnet peers`).
  app.put('/ovsnet/networks/:id/peers', async (req: Request, res: Response) => {
    const body = (req.body ?? {}) as { Peers?: unknown };
    if (!Array.isArray(body.Peers) || !body.Peers.every((p) => typeof p === 'string')) {
      throw badRequest('InvalidRequest', 'invalid request: field Peers must be an array of addresses');
    }
    const record = await network.setPeers(resolveNetwork(options.state, String(req.params.id)), body.Peers as string[]);
    res.json({ NetworkID: record.id, Peers: isOverlay(record.spec) ? record.spec.peers : [] });
  });

  // What differs between the records and the host (and Docker), without changing anything.
  app.get('/ovsnet/drift', async (req: Request, res: Response) => {
    if (!options.reconciler) throw notFound('NoReconciler', 'drift is not available in this process');
    res.json({ Drift: await options.reconciler.drift(req.query?.docker !== '0') });
  });

  // A full reconciliation now, instead of at the next period.
  app.post('/ovsnet/reconcile', async (_req: Request, res: Response) => {
    if (!options.reconciler) throw notFound('NoReconciler', 'reconciliation is not available in this process');
    res.json({ Changes: await options.reconciler.run('requested', true) });
  });

  // Unknown calls: a plain 404, which Docker tolerates for optional methods.
  app.use((_req, res) => {
    res.status(404).type('text/plain').send('404 page not found\n');
  });

  app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
    let status: number;
    let message: string;
    const parserError = err as { type?: string; status?: number; message?: string };
    if (isPluginError(err)) {
      status = STATUS[err.kind];
      message = err.message;
    } else if (parserError.type === 'entity.parse.failed') {
      status = 400;
      message = `invalid request: body is not valid JSON (${parserError.message})`;
    } else if (parserError.type === 'entity.too.large') {
      status = 413;
      message = `invalid request: body is larger than ${options.bodyLimit ?? '256kb'}`;
    } else if (typeof parserError.status === 'number' && parserError.status >= 400 && parserError.status < 500) {
      status = parserError.status;
      message = `invalid request: ${errorMessage(err)}`;
    } else {
      status = 500;
      message = `internal error: ${errorMessage(err)}`;
    }
    const body = (req.body ?? {}) as Record<string, unknown>;
    const call = (res.locals.call as string | undefined) ?? req.path.slice(1);
    const started = res.locals.started as bigint | undefined;
    const durationMs = started === undefined ? undefined : Number(process.hrtime.bigint() - started) / 1e6;
    if (res.locals.call) options.metrics?.call(call, (durationMs ?? 0) / 1000, isPluginError(err) ? err.kind : status >= 500 ? 'Internal' : 'BadRequest');
    const fields = {
      call,
      durationMs,
      status,
      error: message,
      networkId: typeof body === 'object' ? body.NetworkID : undefined,
      endpointId: typeof body === 'object' ? body.EndpointID : undefined,
    };
    if (status >= 500) log.error('call failed', fields);
    else log.warn('call refused', fields);
    res.status(status).json({ Err: message, Error: message });
  });

  return app;
}

/** A network by full id or unique id prefix (at least 4 characters). */
export function resolveNetwork(state: State, ref: string): string {
  if (state.networks.has(ref)) return ref;
  const matches = ref.length >= 4 ? [...state.networks.keys()].filter((id) => id.startsWith(ref)) : [];
  if (matches.length === 1) return matches[0]!;
  if (matches.length > 1) throw badRequest('AmbiguousNetwork', `network id prefix "${ref}" matches ${matches.length} networks; give more characters`);
  throw notFound('UnknownNetwork', `network "${ref}" is not known to the ovs plugin`);
}
