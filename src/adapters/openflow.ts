/**
 * OpenFlow 1.3 spoken to ovs-vswitchd on a bridge's management socket
 * (`<rundir>/<bridge>.mgmt`), over one connection per bridge kept open.
 *
 * `ovs-ofctl` costs a process and a handshake per change (about 19 ms here,
 * on the start path of every guarded container); on an open connection a
 * change is a few messages and a barrier, and ovs-vswitchd answers the
 * barrier once it has applied everything sent before it. Only what the
 * plugin writes is encoded (openflow-codec.ts: flow adds and deletes by
 * cookie, drop meters); reading flows stays with `ovs-ofctl`, off the start path.
 */
import net from 'node:net';
import { ALL_TABLES, ANY, MULTIPART_AGGREGATE, type OfMessage, OpenFlowError, T, VERSION, encodeMatch, message } from './openflow-codec.js';

/** How long a dropped watched connection is tried again. */
const RETRY_FOR_MS = 60_000;

/** The bridge has no management socket: no such bridge (or ovs-vswitchd is not running). */
export class NoBridgeSocket extends Error {}

interface Batch {
  readonly xids: Map<number, string>;
  readonly errors: OpenFlowError[];
  readonly resolve: (errors: OpenFlowError[]) => void;
  readonly reject: (err: Error) => void;
}

/** One open connection to one bridge; gone for good once it closes. */
class Connection {
  private readonly socket: net.Socket;
  private readonly ready: Promise<void>;
  private readonly batches = new Map<number, Batch>();
  /** Answers awaited to requests (multipart), by xid. */
  private readonly replies = new Map<number, { resolve: (msg: Buffer) => void; reject: (err: Error) => void }>();
  private buffer: Buffer = Buffer.alloc(0);
  private nextXid = 1;
  /** Changes under way. */
  private busy = 0;
  /** Why the connection ended, when ovs-vswitchd said why. */
  private failure: Error | undefined;
  private settleHello: (err?: Error) => void = () => {};
  closed = false;

  constructor(
    private readonly path: string,
    private readonly timeoutMs: number,
    onClose: () => void,
  ) {
    this.ready = new Promise<void>((resolve, reject) => {
      this.settleHello = (err) => (err ? reject(err) : resolve());
    });
    this.ready.catch(() => {});
    const socket = net.createConnection(path);
    socket.unref();
    this.socket = socket;
    // Only OpenFlow 1.3 is offered (a version bitmap with its bit alone): a bridge that does not allow it refuses the hello.
    socket.on('connect', () => socket.write(message(T.hello, 0, Buffer.from([0, 1, 0, 8, 0, 0, 0, 1 << VERSION]))));
    socket.on('data', (chunk: Buffer) => this.receive(chunk));
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') this.failure ??= new NoBridgeSocket(`no OpenFlow management socket at ${path}`);
      else this.failure ??= err;
    });
    socket.on('close', () => {
      this.fail(this.failure ?? new Error(`the OpenFlow connection to ${path} closed`));
      onClose();
    });
  }

  /** Sends the messages and a barrier; resolves with the errors ovs-vswitchd sent for them, once it has applied them all. */
  send(messages: readonly OfMessage[]): Promise<OpenFlowError[]> {
    return this.exchange(() => {
      const xids = new Map<number, string>();
      const buffers = messages.map((m) => {
        const xid = this.xid();
        xids.set(xid, m.what);
        return m.body(xid);
      });
      const barrier = this.xid();
      return new Promise<OpenFlowError[]>((resolve, reject) => {
        this.batches.set(barrier, { xids, errors: [], resolve, reject });
        this.socket.write(Buffer.concat([...buffers, message(T.barrierRequest, barrier)]));
      });
    });
  }

  /** How many flows (every table) have a cookie that matches `cookie` under `mask`. */
  countFlows(cookie: bigint, mask: bigint): Promise<number> {
    return this.exchange(async () => {
      const xid = this.xid();
      const head = Buffer.alloc(8);
      head.writeUInt16BE(MULTIPART_AGGREGATE, 0);
      const body = Buffer.alloc(40);
      body.writeUInt8(ALL_TABLES, 0);
      body.writeUInt32BE(ANY, 4); // out_port
      body.writeUInt32BE(ANY, 8); // out_group
      body.writeBigUInt64BE(cookie, 16);
      body.writeBigUInt64BE(mask, 24);
      body.set(encodeMatch([]), 32);
      const reply = await new Promise<Buffer>((resolve, reject) => {
        this.replies.set(xid, { resolve, reject });
        this.socket.write(message(T.multipartRequest, xid, head, body));
      });
      // ofp_multipart_reply (8) then ofp_aggregate_stats_reply: packets (8), bytes (8), flows (4).
      return reply.readUInt32BE(8 + 8 + 16);
    });
  }

  /**
   * One request and its answer on the connection, once it is open: held open meanwhile (an idle connection
   * never keeps a process alive), and given up (the connection closed) when ovs-vswitchd does not answer in time.
   */
  private async exchange<T>(ask: () => Promise<T>): Promise<T> {
    this.busy++;
    this.socket.ref();
    const timer = setTimeout(() => {
      this.failure ??= new Error(`ovs-vswitchd did not answer on ${this.path} within ${this.timeoutMs} ms`);
      this.socket.destroy();
    }, this.timeoutMs);
    try {
      await this.ready;
      if (this.closed) throw this.failure ?? new Error(`the OpenFlow connection to ${this.path} closed`);
      return await ask();
    } finally {
      clearTimeout(timer);
      if (--this.busy === 0) this.socket.unref();
    }
  }

  close(): void {
    this.socket.destroy();
  }

  private xid(): number {
    const xid = this.nextXid;
    this.nextXid = this.nextXid >= 0x7fffffff ? 1 : this.nextXid + 1;
    return xid;
  }

  private receive(chunk: Buffer): void {
    this.buffer = this.buffer.length ? Buffer.concat([this.buffer, chunk]) : chunk;
    while (this.buffer.length >= 8) {
      const length = this.buffer.readUInt16BE(2);
      if (length < 8) {
        this.failure ??= new Error(`malformed OpenFlow message on ${this.path}`);
        this.socket.destroy();
        return;
      }
      if (this.buffer.length < length) return;
      const msg = this.buffer.subarray(0, length);
      this.buffer = this.buffer.subarray(length);
      this.handle(msg);
    }
  }

  private handle(msg: Buffer): void {
    const type = msg.readUInt8(1);
    const xid = msg.readUInt32BE(4);
    switch (type) {
      case T.hello:
        this.settleHello();
        return;
      case T.echoRequest:
        this.socket.write(message(T.echoReply, xid, msg.subarray(8)));
        return;
      case T.error: {
        const error = new OpenFlowError(msg.readUInt16BE(8), msg.readUInt16BE(10), 'the connection');
        if (error.errorType === 0) {
          // OFPET_HELLO_FAILED: no version in common; ovs-vswitchd closes the connection.
          this.failure ??= error;
          this.socket.destroy();
          return;
        }
        for (const batch of this.batches.values()) {
          const what = batch.xids.get(xid);
          if (what) batch.errors.push(new OpenFlowError(error.errorType, error.errorCode, what));
        }
        const waiting = this.replies.get(xid);
        if (waiting) {
          this.replies.delete(xid);
          waiting.reject(new OpenFlowError(error.errorType, error.errorCode, 'a flow count'));
        }
        return;
      }
      case T.multipartReply: {
        const waiting = this.replies.get(xid);
        if (!waiting) return;
        this.replies.delete(xid);
        waiting.resolve(msg);
        return;
      }
      case T.barrierReply: {
        const batch = this.batches.get(xid);
        if (!batch) return;
        this.batches.delete(xid);
        batch.resolve(batch.errors);
        return;
      }
      default:
        // Nothing else is asked for on a management connection; anything unasked is ignored.
        return;
    }
  }

  private fail(err: Error): void {
    this.closed = true;
    this.settleHello(err);
    for (const batch of this.batches.values()) batch.reject(err);
    this.batches.clear();
    for (const waiting of this.replies.values()) waiting.reject(err);
    this.replies.clear();
  }
}

/** Connections to bridges' management sockets, opened on first use and again after one closes. */
export class OpenFlowClient {
  private readonly connections = new Map<string, Connection>();
  /** Bridges whose connection is kept, and opened again when it drops. */
  private readonly watched = new Set<string>();
  private readonly retrying = new Map<string, NodeJS.Timeout>();
  private closing = false;
  /**
   * Told when a watched bridge's connection dropped and could be opened again:
   * ovs-vswitchd restarted (it keeps no flows across a restart) or the bridge was made again.
   */
  onReconnect: ((bridge: string) => void) | undefined;

  constructor(private readonly options: { rundir: string; timeoutMs: number; retryMs?: number }) {}

  /**
   * Sends the messages to a bridge and waits until ovs-vswitchd applied them;
   * resolves with the errors it sent for any of them. A connection that closed
   * (ovs-vswitchd restarted, the bridge was made again) is opened again once:
   * what the plugin sends may be sent twice. Throws NoBridgeSocket when the
   * bridge has no management socket.
   */
  async send(bridge: string, messages: readonly OfMessage[]): Promise<OpenFlowError[]> {
    for (let attempt = 0; ; attempt++) {
      const connection = this.connection(bridge);
      try {
        return await connection.send(messages);
      } catch (err) {
        // Only a connection that closed under a working bridge is worth a second try.
        if (err instanceof NoBridgeSocket || err instanceof OpenFlowError || attempt > 0 || !connection.closed) throw err;
      }
    }
  }

  /** How many flows of a bridge have a cookie that matches `cookie` under `mask`. */
  countFlows(bridge: string, cookie: bigint, mask: bigint): Promise<number> {
    return this.connection(bridge).countFlows(cookie, mask);
  }

  /** The bridges watched now. */
  watching(): string[] {
    return [...this.watched];
  }

  /**
   * Keeps a connection to these bridges, so that losing one (and getting it back) is noticed: exactly these,
   * or (`add`) these as well.
   */
  watch(bridges: Iterable<string>, options: { add?: boolean } = {}): void {
    const wanted = new Set(bridges);
    for (const bridge of this.watched) {
      if (options.add || wanted.has(bridge)) continue;
      this.watched.delete(bridge);
      clearTimeout(this.retrying.get(bridge));
      this.retrying.delete(bridge);
    }
    for (const bridge of wanted) {
      if (this.watched.has(bridge)) continue;
      this.watched.add(bridge);
      this.send(bridge, []).catch((err: unknown) => {
        if (!(err instanceof OpenFlowError)) this.retry(bridge);
      });
    }
  }

  close(): void {
    this.closing = true;
    for (const timer of this.retrying.values()) clearTimeout(timer);
    this.retrying.clear();
    for (const c of this.connections.values()) c.close();
    this.connections.clear();
  }

  private connection(bridge: string): Connection {
    const existing = this.connections.get(bridge);
    if (existing && !existing.closed) return existing;
    const created = new Connection(`${this.options.rundir}/${bridge}.mgmt`, this.options.timeoutMs, () => {
      if (this.connections.get(bridge) === created && !this.closing) this.retry(bridge);
    });
    this.connections.set(bridge, created);
    return created;
  }

  /**
   * Opens a dropped watched connection again, every `retryMs` until it answers, then says so; for a minute at
   * most (a bridge deleted for good is dropped from the watch by the next whole-host look), and not at all for
   * a bridge that refuses OpenFlow 1.3.
   */
  private retry(bridge: string, since = Date.now()): void {
    if (!this.watched.has(bridge) || this.retrying.has(bridge) || this.closing) return;
    const timer = setTimeout(() => {
      this.retrying.delete(bridge);
      if (!this.watched.has(bridge)) return;
      this.send(bridge, []).then(
        () => {
          if (this.watched.has(bridge)) this.onReconnect?.(bridge);
        },
        (err: unknown) => {
          if (err instanceof OpenFlowError || Date.now() - since > RETRY_FOR_MS) return;
          this.retry(bridge, since);
        },
      );
    }, this.options.retryMs ?? 500);
    timer.unref();
    this.retrying.set(bridge, timer);
  }
}
