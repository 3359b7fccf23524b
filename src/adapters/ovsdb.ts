/**
 * A small OVSDB client (RFC 7047: JSON-RPC over a stream socket) that keeps one
 * connection open. Spawning ovs-vsctl costs 10-20 ms per call; a transaction on
 * an open socket costs well under one, which is what keeps Join fast.
 *
 * It monitors Open_vSwitch.cur_cfg so that, like ovs-vsctl, a change can wait
 * until ovs-vswitchd has applied it (cur_cfg reaches the next_cfg we set).
 */
import net from 'node:net';
import { PluginError, isPluginError, unavailable } from '../errors.js';
import { JsonStream } from './json-stream.js';
import { OVSDB_REMOTE_RULE, type OvsdbRemote, formatOvsdbRemote, needsTls, parseOvsdbRemotes } from '../domain/remotes.js';
import type { Logger } from '../log.js';
import { type Conn, type TlsMaterial, dial, tlsError, tlsIdentity } from './ovsdb-tls.js';
import { type Operation, type Row, OvsdbError, readOptional } from './ovsdb-datum.js';

export const DATABASE = 'Open_vSwitch';

interface Pending {
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
  /** The connection it was sent on. */
  socket: net.Socket;
}

export interface OvsdbClientOptions {
  /** One remote, or a comma-separated list of them: the members of a clustered database. */
  address: string;
  /** The database to use (default Open_vSwitch). */
  database?: string;
  /**
   * Use only the leader of a clustered database (checked through its _Server database, and
   * watched there: when the server stops being the leader or loses its cluster, the client
   * moves on). A cluster without a leader answers writes never; this is how the client can say so.
   */
  leaderOnly?: boolean;
  /** What to call the database in messages. */
  label?: string;
  log: Logger;
  requestTimeoutMs?: number;
  /**
   * Inactivity probe: after this long without a word from the server, an echo is sent; when nothing comes
   * back within as long again, the connection is dropped (and, with leaderOnly, the leader looked for again):
   * a server that stopped answering without closing its connection (a dead host, a partition, a hung
   * process) is left within twice this. 0 or unset: no probe.
   */
  probeIntervalMs?: number;
  /**
   * For `ssl:` remotes: this host's private key and certificate, and the CA certificate the server's must be
   * signed by (files, PEM). As Open vSwitch does, the chain is checked, not the server's name.
   */
  tls?: { key: string; cert: string; ca: string };
  /** How the settings that name those files are called, for messages. */
  tlsSettings?: string;
}

/** How one member of a cluster answered when asked whether it leads. */
interface MemberStatus {
  remote: string;
  /** `leader`: use it; `follower`: connected, another leads (or an election is on); `disconnected`: it cannot reach a majority. */
  state: 'leader' | 'follower' | 'disconnected' | 'unreachable' | 'joining';
  detail?: string;
}

export class OvsdbClient {
  private socket: net.Socket | undefined;
  private connecting: Promise<net.Socket> | undefined;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private curCfg: number | undefined;
  private readonly cfgWaiters = new Set<{ target: number; resolve: () => void }>();
  private closed = false;
  private readonly remotes: OvsdbRemote[];
  private readonly tlsMaterial: TlsMaterial | undefined;
  /** The remote to try first: the last one that worked. */
  private preferred = 0;
  /** The remote the probe last found silent: tried last, until it leads again. */
  private silent: number | undefined;
  private readonly database: string;
  private readonly label: string;
  private readonly requestTimeoutMs: number;
  private readonly log: Logger;
  /** Characters received from the server(s) since the client was made (JSON: about the bytes), for metrics and benchmarks. */
  received = 0;
  private connections = 0;
  /** Called after a lost connection is back (ovsdb-server may have restarted). */
  onReconnect: (() => void) | undefined;

  constructor(private readonly options: OvsdbClientOptions) {
    const remotes = parseOvsdbRemotes(options.address);
    if (!remotes) throw new PluginError('BadRequest', 'InvalidSetting', `invalid OVSDB address "${options.address}": ${OVSDB_REMOTE_RULE}`);
    this.remotes = remotes;
    if (needsTls(remotes)) this.tlsMaterial = tlsIdentity(options);
    this.database = options.database ?? DATABASE;
    this.label = options.label ?? 'OVSDB';
    this.requestTimeoutMs = options.requestTimeoutMs ?? 10_000;
    this.log = options.log;
  }

  get connected(): boolean {
    return this.socket !== undefined;
  }

  /** The remote in use, if connected. */
  get remote(): string | undefined {
    return this.socket ? formatOvsdbRemote(this.remotes[this.preferred]!) : undefined;
  }

  async transact(ops: readonly Operation[]): Promise<Row[]> {
    let result: Array<Record<string, unknown> | null>;
    try {
      result = (await this.request('transact', [this.database, ...ops])) as Array<Record<string, unknown> | null>;
    } catch (err) {
      // A leader that stepped down mid-call: ask the new one (or learn there is none). The plugin's
      // transactions are all safe to send twice (unique names, waits, deletes by uuid).
      if (!this.options.leaderOnly || !isPluginError(err) || err.code !== 'OvsdbDisconnected') throw err;
      result = (await this.request('transact', [this.database, ...ops])) as Array<Record<string, unknown> | null>;
    }
    for (let i = 0; i < result.length; i++) {
      const r = result[i];
      if (r && typeof r.error === 'string') {
        const op = i < ops.length ? ` (operation ${i}: ${String(ops[i]?.op)} ${String(ops[i]?.table ?? '')})` : ' (commit)';
        throw new OvsdbError(`${this.label} transaction failed${op}: ${r.error}${r.details ? `: ${String(r.details)}` : ''}`, { index: i, error: r.error, details: typeof r.details === 'string' ? r.details : undefined });
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
    return this.requestOn(await this.ensureConnected(), method, params);
  }

  close(): void {
    this.closed = true;
    this.socket?.destroy();
    this.socket = undefined;
  }

  /** `member`: the remote asked whether it leads (its own timeout and name), not the connection in use. */
  private requestOn(socket: net.Socket, method: string, params: unknown[], member?: { name: string; timeoutMs: number }): Promise<unknown> {
    const id = this.nextId++;
    const timeoutMs = member?.timeoutMs ?? this.requestTimeoutMs;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        const from = member?.name ?? formatOvsdbRemote(this.remotes[this.preferred]!);
        const hint = this.options.leaderOnly && !member ? ' (a cluster that lost its quorum answers nothing)' : '';
        reject(unavailable('OvsdbTimeout', `${this.label} ${method} got no answer within ${timeoutMs} ms from ${from}${hint}`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer, socket });
      socket.write(JSON.stringify({ method, params, id }));
    });
  }

  private ensureConnected(): Promise<net.Socket> {
    if (this.socket) return Promise.resolve(this.socket);
    if (this.closed) return Promise.reject(unavailable('OvsdbClosed', `${this.label} client is closed`));
    this.connecting ??= this.open().finally(() => (this.connecting = undefined));
    return this.connecting;
  }

  /**
   * Connects to the first remote that will do, starting with the last one that did. With
   * leaderOnly, that is the leader of the cluster; while members say an election is on, it
   * keeps asking (up to the request timeout); when none can reach a majority, it says at once
   * that the cluster has no quorum.
   */
  private async open(): Promise<net.Socket> {
    const deadline = Date.now() + this.requestTimeoutMs;
    for (;;) {
      const statuses: MemberStatus[] = [];
      const order = this.remotes.map((_, i) => (this.preferred + i) % this.remotes.length);
      if (this.silent !== undefined) order.push(...order.splice(order.indexOf(this.silent), 1));
      for (const index of order) {
        const remote = this.remotes[index]!;
        let socket: net.Socket;
        try {
          socket = await this.connect(remote);
        } catch (err) {
          const e = err as NodeJS.ErrnoException;
          statuses.push({ remote: formatOvsdbRemote(remote), state: 'unreachable', detail: 'tlsFailure' in e ? e.message : (e.code ?? e.message) });
          continue;
        }
        const status = this.options.leaderOnly ? await this.memberStatus(socket, remote) : await this.answers(socket, remote);
        if (status.state === 'leader') {
          this.preferred = index;
          if (index === this.silent) this.silent = undefined;
          return this.adopt(socket);
        }
        socket.destroy();
        statuses.push(status);
      }
      const electing = statuses.some((s) => s.state === 'follower' || s.state === 'joining');
      if (!electing || Date.now() > deadline) throw this.noServer(statuses, electing);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  private noServer(statuses: MemberStatus[], electing: boolean) {
    const each = statuses.map((s) => `${s.remote} ${s.state}${s.detail ? ` (${s.detail})` : ''}`).join(', ');
    if (!this.options.leaderOnly || statuses.every((s) => s.state === 'unreachable')) {
      const hint = this.options.leaderOnly ? '' : ': is ovsdb-server running?';
      return unavailable('OvsdbUnavailable', `cannot reach ${this.label} at ${each}${hint}`);
    }
    if (electing) return unavailable('NoLeader', `${this.label} has no leader after ${this.requestTimeoutMs} ms (members: ${each}): an election is not finishing`);
    return unavailable(
      'NoQuorum',
      `${this.label} has no quorum: no member can reach a majority of its cluster (members: ${each}); calls that change networks fail until a majority is back`,
    );
  }

  /**
   * Asks a server of a clustered database whether it leads, through its _Server database. With a probe, a
   * member that does not answer within its interval counts as unreachable (a hung process still has its
   * connections accepted by the kernel), so that a silent member costs one interval, not the call's timeout.
   */
  private async memberStatus(socket: net.Socket, remote: OvsdbRemote): Promise<MemberStatus> {
    const name = formatOvsdbRemote(remote);
    const probe = this.options.probeIntervalMs ?? 0;
    try {
      const [result] = (await this.requestOn(
        socket,
        'transact',
        ['_Server', { op: 'select', table: 'Database', where: [['name', '==', this.database]], columns: ['model', 'connected', 'leader', 'schema'] }],
        { name, timeoutMs: probe > 0 ? Math.min(probe, this.requestTimeoutMs) : this.requestTimeoutMs },
      )) as Array<{ rows?: Row[] }>;
      const row = result?.rows?.[0];
      if (!row) return { remote: name, state: 'unreachable', detail: `it has no ${this.database} database` };
      if (row.model !== 'clustered') return { remote: name, state: 'leader' };
      if (readOptional<string>(row.schema) === undefined) return { remote: name, state: 'joining' };
      if (row.connected !== true) return { remote: name, state: 'disconnected' };
      return { remote: name, state: row.leader === true ? 'leader' : 'follower' };
    } catch (err) {
      return { remote: name, state: 'unreachable', detail: (socket as Conn).tlsFailure ?? (err as Error).message };
    }
  }

  /**
   * Any server will do, once it answers: over TLS an echo first, since a server that refuses this host's
   * certificate says so only after the handshake (adopting it would mean a reconnect every 200 ms).
   */
  private async answers(socket: net.Socket, remote: OvsdbRemote): Promise<MemberStatus> {
    const name = formatOvsdbRemote(remote);
    if ('path' in remote || !remote.tls) return { remote: name, state: 'leader' };
    try {
      await this.requestOn(socket, 'echo', [], { name, timeoutMs: Math.min(this.options.probeIntervalMs || this.requestTimeoutMs, this.requestTimeoutMs) });
      return { remote: name, state: 'leader' };
    } catch (err) {
      return { remote: name, state: 'unreachable', detail: (socket as Conn).tlsFailure ?? (err as Error).message };
    }
  }

  private connect(remote: OvsdbRemote): Promise<net.Socket> {
    return new Promise((resolve, reject) => {
      const secure = !('path' in remote) && remote.tls === true;
      const socket: Conn = dial(remote, this.tlsMaterial);
      const stream = new JsonStream();
      socket.setEncoding('utf8');
      const timer = setTimeout(() => socket.destroy(Object.assign(new Error('connect timed out'), { code: 'ETIMEDOUT' })), Math.min(this.requestTimeoutMs, 3_000));
      const onError = (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        socket.destroy();
        reject(secure ? tlsError(remote, err, this.options.tls!) : err);
      };
      socket.once('error', onError);
      socket.once(secure ? 'secureConnect' : 'connect', () => {
        clearTimeout(timer);
        socket.off('error', onError);
        socket.on('error', (err: NodeJS.ErrnoException) => {
          // A server that does not accept this host's certificate says so in an alert after the handshake.
          if (secure && /SSL|TLS/.test(err.code ?? '')) socket.tlsFailure = tlsError(remote, err, this.options.tls!).message;
          this.log.warn(`${this.label} connection error`, { error: socket.tlsFailure ?? err.message });
        });
        socket.on('close', () => this.dropped(socket));
        socket.on('data', (chunk: string) => {
          this.received += chunk.length;
          let messages: unknown[];
          try {
            messages = stream.push(chunk);
          } catch (err) {
            this.log.error(`${this.label} sent invalid JSON; reconnecting`, { error: (err as Error).message });
            socket.destroy();
            return;
          }
          for (const message of messages) this.dispatch(socket, message as Record<string, unknown>);
        });
        resolve(socket);
      });
    });
  }

  private adopt(socket: net.Socket): net.Socket {
    this.socket = socket;
    this.probe(socket);
    const again = this.connections++ > 0;
    this.log[again ? 'info' : 'debug'](`connected to ${this.label}`, { address: this.remote });
    if (this.database === DATABASE) this.armConfigMonitor().catch((err) => this.log.warn('cannot monitor cur_cfg', { error: err.message }));
    if (this.options.leaderOnly) this.armLeaderMonitor(socket).catch((err) => this.log.warn(`cannot watch the leadership of ${this.label}`, { error: err.message }));
    if (again) this.onReconnect?.();
    return socket;
  }

  /**
   * Watches the connection for silence (probeIntervalMs): one timer, moved on lazily from the time the server
   * was last heard (any data counts), so that busy connections cost no timer work per message.
   */
  private probe(socket: net.Socket): void {
    const every = this.options.probeIntervalMs ?? 0;
    if (every <= 0) return;
    let heard = performance.now();
    let echoSent: number | undefined;
    socket.on('data', () => {
      heard = performance.now();
      echoSent = undefined;
    });
    const tick = () => {
      if (socket.destroyed) return;
      const now = performance.now();
      if (echoSent !== undefined && now - echoSent >= every) {
        this.log.warn(`${this.label} at ${formatOvsdbRemote(this.remotes[this.preferred]!)} sent nothing for ${Math.round(now - heard)} ms, not even an answer to an echo; leaving it`, { probeIntervalMs: every });
        // Asked last from now on: it may well still take connections, and answer none.
        if (this.socket === socket) this.silent = this.preferred;
        socket.destroy();
        return;
      }
      if (echoSent === undefined && now - heard >= every) {
        echoSent = now;
        socket.write(JSON.stringify({ method: 'echo', params: ['ovsnet'], id: 'echo' }));
      }
      const next = echoSent !== undefined ? echoSent + every : heard + every;
      setTimeout(tick, Math.max(next - now, 10)).unref();
    };
    setTimeout(tick, every).unref();
  }

  private async armConfigMonitor(): Promise<void> {
    const initial = (await this.request('monitor', [DATABASE, 'cfg', { Open_vSwitch: { columns: ['cur_cfg'] } }])) as Record<string, unknown>;
    this.applyCfgUpdate(initial);
  }

  /** A leader that steps down (or loses its cluster) is left at once, so that the next call finds the new one. */
  private async armLeaderMonitor(socket: net.Socket): Promise<void> {
    const initial = (await this.requestOn(socket, 'monitor', ['_Server', 'leader', { Database: { columns: ['name', 'leader', 'connected'] } }])) as Record<string, unknown>;
    this.applyLeaderUpdate(socket, initial);
  }

  private applyLeaderUpdate(socket: net.Socket, updates: Record<string, unknown> | undefined): void {
    const rows = (updates?.Database ?? {}) as Record<string, { new?: { name?: string; leader?: boolean; connected?: boolean } }>;
    for (const row of Object.values(rows)) {
      if (row.new?.name !== this.database) continue;
      if (row.new.leader === false || row.new.connected === false) {
        this.log.info(`${this.label} member stopped leading; finding the new leader`, { address: this.remote, leader: row.new.leader, connected: row.new.connected });
        socket.destroy();
      }
    }
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
      if (params?.[0] === 'leader') this.applyLeaderUpdate(socket, params[1]);
      return;
    }
    const id = message.id as number;
    const pending = this.pending.get(id);
    if (!pending) return;
    this.pending.delete(id);
    clearTimeout(pending.timer);
    if (message.error !== null && message.error !== undefined) {
      pending.reject(new OvsdbError(`${this.label} error: ${JSON.stringify(message.error)}`, message.error));
    } else {
      pending.resolve(message.result);
    }
  }

  private dropped(socket: net.Socket): void {
    // A member being asked whether it leads (not adopted yet) fails only its own question, at once: a TLS
    // peer that refuses this host's certificate closes the connection after the handshake.
    const failure = (socket as Conn).tlsFailure;
    for (const [id, pending] of this.pending) {
      if (pending.socket !== socket || socket === this.socket) continue;
      clearTimeout(pending.timer);
      pending.reject(unavailable('OvsdbDisconnected', failure ?? `${this.label} closed the connection during the call`));
      this.pending.delete(id);
    }
    if (this.socket !== socket) return;
    this.socket = undefined;
    this.curCfg = undefined;
    for (const [id, pending] of this.pending) {
      clearTimeout(pending.timer);
      pending.reject(unavailable('OvsdbDisconnected', failure ?? `${this.label} connection to ${formatOvsdbRemote(this.remotes[this.preferred]!)} closed during the call`));
      this.pending.delete(id);
    }
    if (this.closed) return;
    this.log.warn(`${this.label} connection closed; reconnecting`, { address: formatOvsdbRemote(this.remotes[this.preferred]!) });
    this.reconnect(200);
  }

  /** Keeps trying, with backoff up to 5 s: a restarted server is noticed without waiting for a call. */
  private reconnect(delayMs: number): void {
    setTimeout(() => {
      if (this.closed || this.socket) return;
      this.ensureConnected().catch(() => this.reconnect(Math.min(delayMs * 2, 5_000)));
    }, delayMs).unref();
  }
}
