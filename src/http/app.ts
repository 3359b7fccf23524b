/**
 * The plugin's HTTP API as Docker speaks it: POST /<Interface>.<Method> with a
 * JSON body and no Content-Type. Handlers only decode, call a driver and
 * encode; one function turns every error into the wire form (`Err` for the
 * network driver, `Error` for IPAM; both are always set).
 *
 * Docker's calls are served on node:http directly, and only the operator
 * endpoints (/ovsnet/...) go through Express. Express 5's per-request work
 * made every call's objects outlive young-generation collections (measured:
 * some 16 KiB promoted per call, 3-6 ms scavenges, an old generation grown to
 * 135 MiB of garbage at 60 000 addresses); a plain node:http server with the
 * same calls promotes nothing.
 */
import type { EngineProblem } from '../domain/engine.js';
import type { StateView } from '../domain/drift.js';
import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
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
import { decodeTraceRequest } from '../protocol/trace.js';
import type { TraceReport, TraceRequest } from '../domain/trace.js';
import { decodePoolRef, decodeReleaseAddress, decodeRequestAddress, decodeRequestPool } from '../protocol/ipam.js';

export interface AppOptions {
  network: NetworkDriver;
  ipam: IpamDriver;
  state: State;
  log: Logger;
  /** Largest request body accepted, in bytes; Docker's are a few kilobytes. */
  bodyLimit?: number;
  /**
   * Resolves once the networks are restored after a start. Calls that change
   * things wait for it; activation and capability calls do not, so dockerd
   * never waits long on the plugin.
   */
  ready?: Promise<void>;
  /** Drift and reconciliation on demand (ovsnet doctor, ovsnet reconcile). */
  reconciler?: Pick<Reconciler, 'drift' | 'run'>;
  /** What the plugin cannot do well with the engine it serves, as seen from the plugin (ovsnet doctor). */
  engine?: () => Promise<EngineProblem[]>;
  metrics?: Metrics;
  /** `ovsnet trace`: what a packet from a container meets on its way. */
  trace?: (request: TraceRequest) => Promise<TraceReport>;
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

const DEFAULT_BODY_LIMIT = 256 * 1024;

/** A protocol call's path: POST /<Interface>.<Method>. */
const CALL_PATH = /^\/([A-Za-z]+\.[A-Za-z]+)$/;

/** What the error answer needs to know about the request it answers. */
interface Failed {
  /** The protocol call, when the request was one. */
  call: string | undefined;
  path: string;
  body: unknown;
  started: bigint | undefined;
}

/** A body that could not be read as JSON, classified as body-parser classifies it (the operator endpoints still use it). */
class BodyError extends Error {
  constructor(
    readonly type: 'entity.parse.failed' | 'entity.too.large' | 'request.aborted',
    message: string,
  ) {
    super(message);
  }
}

export function createApp(options: AppOptions): RequestListener {
  const { network, ipam, log } = options;
  const bodyLimit = options.bodyLimit ?? DEFAULT_BODY_LIMIT;
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.set('query parser', 'simple');
  // Docker sends no Content-Type, so parse every body as JSON.
  app.use(express.json({ type: () => true, limit: bodyLimit, strict: false }));

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

  // One table, looked up directly: Express's per-route matching cost half of each call's time, and its
  // per-request objects the rest (see the top of this file).
  const serveCall = async (name: string, handler: Handler, req: IncomingMessage, res: ServerResponse) => {
    const started = process.hrtime.bigint();
    let body: unknown;
    try {
      body = await readJson(req, bodyLimit);
      if (options.ready && !ALWAYS_READY.has(name)) await options.ready;
      const text = JSON.stringify((await handler(body)) ?? {});
      res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
      res.end(text);
    } catch (err) {
      answerError(err, { call: name, path: `/${name}`, body, started }, res);
      return;
    }
    const durationMs = Number(process.hrtime.bigint() - started) / 1e6;
    options.metrics?.call(name, durationMs / 1000);
    if (!log.enabled('debug')) return;
    const fields = (body ?? {}) as Record<string, unknown>;
    log.debug('call', { call: name, networkId: fields.NetworkID, endpointId: fields.EndpointID, poolId: fields.PoolID, durationMs });
  };

  // Read-only view of the state for tests and the status CLI; Docker never sends GET.
  app.get('/ovsnet/state', async (req: Request, res: Response) => {
    const { state } = options;
    // Which hosts use each OVN network (asked of the northbound database only when wanted: ?ovn=1).
    // And (?picture=1 too) every host's logical ports there and the routers' active gateways: a read of the switches' ports.
    const [ovnHosts, ovn] = req.query?.ovn === '1' ? await Promise.all([network.ovnHosts(), req.query?.picture === '1' ? network.ovnPicture() : undefined]) : [undefined, undefined];
    // Spares (veth pairs made ahead of need) are no records; listed so that audits can account for every device.
    const view: StateView = { ...state.records(), spares: network.spares(), sparesBusy: network.sparesBusy(), ...(ovnHosts ? { ovnHosts } : {}), ...(ovn ? { ovn } : {}) };
    res.json(view);
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

  // The engine's problems, from where the plugin runs (its own nft, its Docker socket).
  app.get('/ovsnet/engine', async (_req: Request, res: Response) => {
    if (!options.engine) throw notFound('NoEngineCheck', 'the engine check is not available in this process');
    res.json({ Problems: await options.engine() });
  });

  // Releasing what an OVN host gone for good held (used by `ovsnet ovn forget-host`).
  app.post('/ovsnet/ovn/forget-host', async (req: Request, res: Response) => {
    const body = (req.body ?? {}) as { Chassis?: unknown; IdleSeconds?: unknown };
    if (typeof body.Chassis !== 'string' || body.Chassis === '') throw badRequest('InvalidRequest', 'invalid request: field Chassis must be the chassis name (system-id) of the host to forget');
    if (body.IdleSeconds !== undefined && !(typeof body.IdleSeconds === 'number' && Number.isInteger(body.IdleSeconds) && body.IdleSeconds >= 0)) {
      throw badRequest('InvalidRequest', 'invalid request: field IdleSeconds must be a whole number of seconds, 0 or more');
    }
    res.json(await network.forgetOvnHost(body.Chassis, { idleMs: body.IdleSeconds === undefined ? undefined : body.IdleSeconds * 1000 }));
  });

  // What a packet from a container would meet on its way (used by `ovsnet trace`); nothing is sent.
  app.post('/ovsnet/trace', async (req: Request, res: Response) => {
    if (!options.trace) throw notFound('NoTracer', 'trace is not available in this process');
    res.json(await options.trace(decodeTraceRequest(req.body)));
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
    answerError(err, { call: undefined, path: req.path, body: req.body, started: undefined }, res);
  });

  /** The one place an error becomes an answer: its status, the message in `Err` and `Error`, a log line. */
  function answerError(err: unknown, failed: Failed, res: ServerResponse): void {
    let status: number;
    let message: string;
    const parserError = err as { type?: string; status?: number; message?: string };
    if (isPluginError(err)) {
      status = STATUS[err.kind];
      message = err.message;
    } else if (parserError.type === 'entity.parse.failed') {
      status = 400;
      message = `invalid request: body is not valid JSON (${parserError.message})`;
    } else if (parserError.type === 'request.aborted') {
      status = 400;
      message = `invalid request: ${parserError.message}`;
    } else if (parserError.type === 'entity.too.large') {
      status = 413;
      message = `invalid request: body is larger than ${bodyLimit} bytes`;
    } else if (typeof parserError.status === 'number' && parserError.status >= 400 && parserError.status < 500) {
      status = parserError.status;
      message = `invalid request: ${errorMessage(err)}`;
    } else {
      status = 500;
      message = `internal error: ${errorMessage(err)}`;
    }
    const body = (failed.body ?? {}) as Record<string, unknown>;
    const call = failed.call ?? failed.path.slice(1);
    const durationMs = failed.started === undefined ? undefined : Number(process.hrtime.bigint() - failed.started) / 1e6;
    if (failed.call) options.metrics?.call(call, (durationMs ?? 0) / 1000, isPluginError(err) ? err.kind : status >= 500 ? 'Internal' : 'BadRequest');
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
    const text = JSON.stringify({ Err: message, Error: message });
    res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(text) });
    res.end(text);
  }

  return (req, res) => {
    const name = req.method === 'POST' ? CALL_PATH.exec(req.url ?? '')?.[1] : undefined;
    const handler = name !== undefined && Object.hasOwn(calls, name) ? calls[name] : undefined;
    if (name === undefined || !handler) {
      app(req, res);
      return;
    }
    void serveCall(name, handler, req, res);
  };
}

/**
 * A request body as JSON, as Docker sends it: no Content-Type, any JSON value. No body at all is
 * `undefined`, an empty one `{}` (both read as "no arguments").
 */
async function readJson(req: IncomingMessage, limit: number): Promise<unknown> {
  const hasBody = req.headers['transfer-encoding'] !== undefined || req.headers['content-length'] !== undefined;
  if (!hasBody) {
    req.resume();
    return undefined;
  }
  const declared = Number(req.headers['content-length']);
  if (declared > limit) {
    req.resume();
    throw new BodyError('entity.too.large', 'request entity too large');
  }
  const chunks: Buffer[] = [];
  let length = 0;
  try {
    for await (const chunk of req as AsyncIterable<Buffer>) {
      length += chunk.length;
      // Read on to the end, so that the connection stays usable for the answer.
      if (length <= limit) chunks.push(chunk);
    }
  } catch (err) {
    throw new BodyError('request.aborted', `the request body was cut off (${errorMessage(err)})`);
  }
  if (length > limit) throw new BodyError('entity.too.large', 'request entity too large');
  // A byte order mark is not JSON; body-parser dropped it too.
  const text = Buffer.concat(chunks, length).toString('utf8').replace(/^\uFEFF/, '');
  if (text.length === 0) return {};
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new BodyError('entity.parse.failed', errorMessage(err));
  }
}

/** A network by full id or unique id prefix (at least 4 characters). */
export function resolveNetwork(state: State, ref: string): string {
  if (state.networks.has(ref)) return ref;
  const matches = ref.length >= 4 ? [...state.networks.keys()].filter((id) => id.startsWith(ref)) : [];
  if (matches.length === 1) return matches[0]!;
  if (matches.length > 1) throw badRequest('AmbiguousNetwork', `network id prefix "${ref}" matches ${matches.length} networks; give more characters`);
  throw notFound('UnknownNetwork', `network "${ref}" is not known to the ovs plugin`);
}
