/**
 * A small OVSDB client (RFC 7047: JSON-RPC over a stream socket) that keeps one
 * connection open. Spawning ovs-vsctl costs 10-20 ms per call; a transaction on
 * an open socket costs well under one, which is what keeps Join fast.
 *
 * It monitors Open_vSwitch.cur_cfg so that, like ovs-vsctl, a change can wait
 * until ovs-vswitchd has applied it (cur_cfg reaches the next_cfg we set).
 */
import net from 'node:net';
import { PluginError, unavailable } from '../errors.js';
import { OVSDB_REMOTE_RULE, type OvsdbRemote, parseOvsdbRemote } from '../domain/remotes.js';
import type { Logger } from '../log.js';

export type Datum = unknown;
export type Row = Record<string, Datum>;
export type Operation = Record<string, unknown>;

export const DATABASE = 'Open_vSwitch';

/** Splits a byte stream into top-level JSON texts (OVSDB sends them back to back, unframed). */
export class JsonStream {
  private buffer = '';
  private depth = 0;
  private inString = false;
  private escaped = false;
  private scanned = 0;

  push(chunk: string): unknown[] {
    this.buffer += chunk;
    const out: unknown[] = [];
    let start = 0;
    for (let i = this.scanned; i < this.buffer.length; i++) {
      const c = this.buffer[i];
      if (this.inString) {
        if (this.escaped) this.escaped = false;
        else if (c === '\\') this.escaped = true;
        else if (c === '"') this.inString = false;
        continue;
      }
      if (c === '"') this.inString = true;
      else if (c === '{' || c === '[') this.depth++;
      else if (c === '}' || c === ']') {
        this.depth--;
        if (this.depth === 0) {
          out.push(JSON.parse(this.buffer.slice(start, i + 1)));
          start = i + 1;
        }
      } else if (this.depth === 0 && c !== undefined && /\s/.test(c)) {
        start = i + 1;
      }
    }
    this.buffer = this.buffer.slice(start);
    this.scanned = this.buffer.length;
    return out;
  }
}

export class OvsdbError extends PluginError {
  constructor(message: string, readonly details?: unknown) {
    super('Internal', 'OvsdbError', message);
  }
}

interface Pending {
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

export interface OvsdbClientOptions {
  address: string;
  log: Logger;
  requestTimeoutMs?: number;
}

export class OvsdbClient {
  private socket: net.Socket | undefined;
  private connecting: Promise<net.Socket> | undefined;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private curCfg: number | undefined;
  private readonly cfgWaiters = new Set<{ target: number; resolve: () => void }>();
  private closed = false;
  private readonly address: OvsdbRemote;
  private readonly requestTimeoutMs: number;
  private readonly log: Logger;
  private connections = 0;
  /** Called after a lost connection is back (ovsdb-server may have restarted). */
  onReconnect: (() => void) | undefined;

  constructor(private readonly options: OvsdbClientOptions) {
    const address = parseOvsdbRemote(options.address);
    if (!address) throw new PluginError('BadRequest', 'InvalidSetting', `invalid OVSDB address "${options.address}": ${OVSDB_REMOTE_RULE}`);
    this.address = address;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 10_000;
    this.log = options.log;
  }

  get connected(): boolean {
    return this.socket !== undefined;
  }

  async transact(ops: readonly Operation[]): Promise<Row[]> {
    const result = (await this.request('transact', [DATABASE, ...ops])) as Array<Record<string, unknown> | null>;
    for (let i = 0; i < result.length; i++) {
      const r = result[i];
      if (r && typeof r.error === 'string') {
        const op = i < ops.length ? ` (operation ${i}: ${String(ops[i]?.op)} ${String(ops[i]?.table ?? '')})` : ' (commit)';
        throw new OvsdbError(`OVSDB transaction failed${op}: ${r.error}${r.details ? `: ${String(r.details)}` : ''}`, { index: i, error: r.error });
      }
    }
    return result as Row[];
  }

  /** Resolves once ovs-vswitchd has applied configuration `target` (cur_cfg >= target). */
  async waitForConfig(target: number, timeoutMs: number): Promise<void> {
    await this.ensureConnected();
    if (this.curCfg !== undefined && this.curCfg >= target) return;
    await new Promise<void>((resolve, reject) => {
      const waiter = {
        target,
        resolve: () => {
          clearTimeout(timer);
          this.cfgWaiters.delete(waiter);
          resolve();
        },
      };
      const timer = setTimeout(() => {
        this.cfgWaiters.delete(waiter);
        reject(
          unavailable(
            'VswitchdTimeout',
            `ovs-vswitchd did not apply the change within ${timeoutMs} ms (configuration ${target}, applied ${this.curCfg ?? 'unknown'}): is ovs-vswitchd running?`,
          ),
        );
      }, timeoutMs);
      this.cfgWaiters.add(waiter);
    });
  }

  async request(method: string, params: unknown[]): Promise<unknown> {
    const socket = await this.ensureConnected();
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(unavailable('OvsdbTimeout', `OVSDB ${method} got no answer within ${this.requestTimeoutMs} ms from ${this.options.address}`));
      }, this.requestTimeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      socket.write(JSON.stringify({ method, params, id }));
    });
  }

  close(): void {
    this.closed = true;
    this.socket?.destroy();
    this.socket = undefined;
  }

  private ensureConnected(): Promise<net.Socket> {
    if (this.socket) return Promise.resolve(this.socket);
    if (this.closed) return Promise.reject(unavailable('OvsdbClosed', 'OVSDB client is closed'));
    this.connecting ??= this.open().finally(() => (this.connecting = undefined));
    return this.connecting;
  }

  private open(): Promise<net.Socket> {
    return new Promise((resolve, reject) => {
      const socket = 'path' in this.address ? net.connect(this.address.path) : net.connect(this.address.port, this.address.host);
      const stream = new JsonStream();
      socket.setEncoding('utf8');
      const onError = (err: Error) => {
        socket.destroy();
        reject(
          unavailable(
            'OvsdbUnavailable',
            `cannot reach OVSDB at ${this.options.address} (${(err as NodeJS.ErrnoException).code ?? err.message}): is ovsdb-server running?`,
            err,
          ),
        );
      };
      socket.once('error', onError);
      socket.once('connect', () => {
        socket.off('error', onError);
        socket.on('error', (err) => this.log.warn('OVSDB connection error', { error: err.message }));
        socket.on('close', () => this.dropped(socket));
        socket.on('data', (chunk: string) => {
          let messages: unknown[];
          try {
            messages = stream.push(chunk);
          } catch (err) {
            this.log.error('OVSDB sent invalid JSON; reconnecting', { error: (err as Error).message });
            socket.destroy();
            return;
          }
          for (const message of messages) this.dispatch(socket, message as Record<string, unknown>);
        });
        this.socket = socket;
        const again = this.connections++ > 0;
        this.log[again ? 'info' : 'debug']('connected to OVSDB', { address: this.options.address });
        resolve(socket);
        this.armConfigMonitor().catch((err) => this.log.warn('cannot monitor cur_cfg', { error: err.message }));
        if (again) this.onReconnect?.();
      });
    });
  }

  private async armConfigMonitor(): Promise<void> {
    const initial = (await this.request('monitor', [DATABASE, 'cfg', { Open_vSwitch: { columns: ['cur_cfg'] } }])) as Record<string, unknown>;
    this.applyCfgUpdate(initial);
  }

  private applyCfgUpdate(updates: Record<string, unknown> | undefined): void {
    const rows = (updates?.Open_vSwitch ?? {}) as Record<string, { new?: { cur_cfg?: number } }>;
    for (const row of Object.values(rows)) {
      if (typeof row.new?.cur_cfg === 'number') this.curCfg = row.new.cur_cfg;
    }
    if (this.curCfg === undefined) return;
    for (const waiter of [...this.cfgWaiters]) if (this.curCfg >= waiter.target) waiter.resolve();
  }

  private dispatch(socket: net.Socket, message: Record<string, unknown>): void {
    if (message.method === 'echo' && message.id !== undefined && message.id !== null) {
      socket.write(JSON.stringify({ result: message.params ?? [], error: null, id: message.id }));
      return;
    }
    if (message.method === 'update') {
      const params = message.params as [string, Record<string, unknown>];
      if (params?.[0] === 'cfg') this.applyCfgUpdate(params[1]);
      return;
    }
    const id = message.id as number;
    const pending = this.pending.get(id);
    if (!pending) return;
    this.pending.delete(id);
    clearTimeout(pending.timer);
    if (message.error !== null && message.error !== undefined) {
      pending.reject(new OvsdbError(`OVSDB error: ${JSON.stringify(message.error)}`, message.error));
    } else {
      pending.resolve(message.result);
    }
  }

  private dropped(socket: net.Socket): void {
    if (this.socket !== socket) return;
    this.socket = undefined;
    this.curCfg = undefined;
    for (const [id, pending] of this.pending) {
      clearTimeout(pending.timer);
      pending.reject(unavailable('OvsdbDisconnected', `OVSDB connection to ${this.options.address} closed`));
      this.pending.delete(id);
    }
    if (this.closed) return;
    this.log.warn('OVSDB connection closed; reconnecting', { address: this.options.address });
    this.reconnect(200);
  }

  /** Keeps trying, with backoff up to 5 s: a restarted ovsdb-server is noticed without waiting for a call. */
  private reconnect(delayMs: number): void {
    setTimeout(() => {
      if (this.closed || this.socket) return;
      this.ensureConnected().catch(() => this.reconnect(Math.min(delayMs * 2, 5_000)));
    }, delayMs).unref();
  }
}

// ---- datum helpers (RFC 7047 section 5.1) ----

export function ovsMap(entries: Record<string, string>): Datum {
  return ['map', Object.entries(entries)];
}

export function ovsSet(items: readonly Datum[]): Datum {
  return ['set', items];
}

export function uuid(value: string): Datum {
  return ['uuid', value];
}

export function namedUuid(name: string): Datum {
  return ['named-uuid', name];
}

export function readMap(datum: Datum): Record<string, string> {
  const out: Record<string, string> = {};
  if (Array.isArray(datum) && datum[0] === 'map' && Array.isArray(datum[1])) {
    for (const pair of datum[1] as Array<[string, string]>) out[pair[0]] = pair[1];
  }
  return out;
}

/** A set column as a list of atoms (a one-element set may be sent as the bare atom). */
export function readSet(datum: Datum): Datum[] {
  if (Array.isArray(datum) && datum[0] === 'set' && Array.isArray(datum[1])) return datum[1];
  return [datum];
}

export function readUuid(atom: Datum): string {
  if (Array.isArray(atom) && atom[0] === 'uuid' && typeof atom[1] === 'string') return atom[1];
  throw new OvsdbError(`expected a uuid, got ${JSON.stringify(atom)}`);
}

/** An optional scalar (a set of zero or one element). */
export function readOptional<T>(datum: Datum): T | undefined {
  const items = readSet(datum);
  return items.length === 0 ? undefined : (items[0] as T);
}
