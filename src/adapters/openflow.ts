/**
 * OpenFlow 1.3 spoken to ovs-vswitchd on a bridge's management socket
 * (`<rundir>/<bridge>.mgmt`), over one connection per bridge kept open.
 *
 * `ovs-ofctl` costs a process and a handshake per change (about 19 ms here,
 * on the start path of every guarded container); on an open connection a
 * change is a few messages and a barrier, and ovs-vswitchd answers the
 * barrier once it has applied everything sent before it. Only what the
 * plugin writes is encoded here (flow adds and deletes by cookie, drop
 * meters); reading flows stays with `ovs-ofctl`, off the start path.
 */
import net from 'node:net';
import { internal } from '../errors.js';
import type { FlowSpec, MatchField, MeterSpec } from '../domain/flows.js';
import { parseIp } from '../domain/cidr.js';

const VERSION = 0x04; // OpenFlow 1.3
const T = { hello: 0, error: 1, echoRequest: 2, echoReply: 3, flowMod: 14, multipartRequest: 18, multipartReply: 19, barrierRequest: 20, barrierReply: 21, meterMod: 29 } as const;
/** OFPMP_AGGREGATE: how many flows match, in one small answer. */
const MULTIPART_AGGREGATE = 2;
const FLOW = { add: 0, delete: 3 } as const;
const METER = { add: 0, modify: 1, delete: 2 } as const;
const METER_FLAGS = { kbps: 0x1, burst: 0x4 } as const;
const ANY = 0xffffffff; // OFPP_ANY, OFPG_ANY, OFP_NO_BUFFER
const ALL_TABLES = 0xff;
const PORT_NORMAL = 0xfffffffa;
const OXM_BASIC = 0x8000;
/** How long a dropped watched connection is tried again. */
const RETRY_FOR_MS = 60_000;

/** OXM field numbers (OpenFlow 1.3, 7.2.3.7) and their value sizes. */
const OXM: Record<MatchField['field'], readonly [number, number]> = {
  in_port: [0, 4],
  eth_src: [4, 6],
  eth_type: [5, 2],
  vlan_vid: [6, 2],
  ip_proto: [10, 1],
  ipv4_src: [11, 4],
  udp_src: [15, 2],
  udp_dst: [16, 2],
  icmpv4_type: [19, 1],
  arp_spa: [22, 4],
  arp_sha: [24, 6],
  ipv6_src: [26, 16],
  icmpv6_type: [29, 1],
  ipv6_nd_target: [31, 16],
  ipv6_nd_sll: [32, 6],
  ipv6_nd_tll: [33, 6],
};

/** An error ovs-vswitchd sent for one of our messages. */
export class OpenFlowError extends Error {
  constructor(
    readonly errorType: number,
    readonly errorCode: number,
    readonly request: string,
  ) {
    super(`ovs-vswitchd refused ${request}: OpenFlow error type ${errorType} code ${errorCode}${describe(errorType, errorCode)}`);
  }

  /** OFPET_METER_MOD_FAILED / OFPMMFC_METER_EXISTS */
  get meterExists(): boolean {
    return this.errorType === 12 && this.errorCode === 1;
  }

  /** OFPET_METER_MOD_FAILED / OFPMMFC_UNKNOWN_METER */
  get unknownMeter(): boolean {
    return this.errorType === 12 && this.errorCode === 3;
  }
}

function describe(type: number, code: number): string {
  if (type === 0) return ' (hello failed: the bridge does not allow OpenFlow 1.3)';
  if (type === 4) return ' (bad match)';
  if (type === 12) return code === 1 ? ' (meter exists)' : code === 3 ? ' (unknown meter)' : ' (meter change failed)';
  return '';
}

/** The bridge has no management socket: no such bridge (or ovs-vswitchd is not running). */
export class NoBridgeSocket extends Error {}

/** A message to send, and what to call it in an error. */
export interface OfMessage {
  readonly what: string;
  readonly body: (xid: number) => Buffer;
}

export function flowAdd(flow: FlowSpec, cookie: bigint): OfMessage {
  return { what: `flow ${flow.text}`, body: (xid) => flowMod(xid, { command: FLOW.add, cookie, cookieMask: 0n, table: flow.table, priority: flow.priority, match: flow.match, instructions: instructions(flow) }) };
}

/** Deletes every flow (all tables) whose cookie matches `value` under `mask`. */
export function flowDeleteByCookie(value: bigint, mask: bigint): OfMessage {
  return { what: `flow deletion cookie=0x${value.toString(16)}/0x${mask.toString(16)}`, body: (xid) => flowMod(xid, { command: FLOW.delete, cookie: value, cookieMask: mask, table: ALL_TABLES, priority: 0, match: [], instructions: [] }) };
}

export function meterSet(meter: MeterSpec, modify: boolean): OfMessage {
  return {
    what: `meter ${meter.id}`,
    body: (xid) => {
      const band = Buffer.alloc(16);
      band.writeUInt16BE(1, 0); // OFPMBT_DROP
      band.writeUInt16BE(16, 2);
      band.writeUInt32BE(meter.kbps, 4);
      band.writeUInt32BE(meter.burstKbit, 8);
      return message(T.meterMod, xid, meterHead(modify ? METER.modify : METER.add, METER_FLAGS.kbps | METER_FLAGS.burst, meter.id), band);
    },
  };
}

export function meterDelete(id: number): OfMessage {
  return { what: `meter ${id} deletion`, body: (xid) => message(T.meterMod, xid, meterHead(METER.delete, 0, id)) };
}

function meterHead(command: number, flags: number, id: number): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt16BE(command, 0);
  head.writeUInt16BE(flags, 2);
  head.writeUInt32BE(id, 4);
  return head;
}

function message(type: number, xid: number, ...parts: Buffer[]): Buffer {
  const length = 8 + parts.reduce((n, p) => n + p.length, 0);
  const head = Buffer.alloc(8);
  head.writeUInt8(VERSION, 0);
  head.writeUInt8(type, 1);
  head.writeUInt16BE(length, 2);
  head.writeUInt32BE(xid, 4);
  return Buffer.concat([head, ...parts]);
}

function flowMod(xid: number, f: { command: number; cookie: bigint; cookieMask: bigint; table: number; priority: number; match: readonly MatchField[]; instructions: Buffer[] }): Buffer {
  const fixed = Buffer.alloc(40);
  fixed.writeBigUInt64BE(f.cookie, 0);
  fixed.writeBigUInt64BE(f.cookieMask, 8);
  fixed.writeUInt8(f.table, 16);
  fixed.writeUInt8(f.command, 17);
  // idle and hard timeouts 0: the flow stays until deleted
  fixed.writeUInt16BE(f.priority, 22);
  fixed.writeUInt32BE(ANY, 24); // buffer_id: none
  fixed.writeUInt32BE(ANY, 28); // out_port: any (deletes are not narrowed by output port)
  fixed.writeUInt32BE(ANY, 32); // out_group: any
  // flags 0, 2 bytes of padding
  return message(T.flowMod, xid, fixed, encodeMatch(f.match), ...f.instructions);
}

/** ofp_match of type OXM, padded to 8 bytes. */
export function encodeMatch(fields: readonly MatchField[]): Buffer {
  const tlvs = fields.map(oxm);
  const length = 4 + tlvs.reduce((n, t) => n + t.length, 0);
  const head = Buffer.alloc(4);
  head.writeUInt16BE(1, 0); // OFPMT_OXM
  head.writeUInt16BE(length, 2);
  return Buffer.concat([head, ...tlvs, Buffer.alloc((8 - (length % 8)) % 8)]);
}

function oxm(f: MatchField): Buffer {
  const [field, size] = OXM[f.field];
  const value = Buffer.alloc(size);
  let mask: Buffer | undefined;
  switch (f.field) {
    case 'in_port':
      value.writeUInt32BE(f.value, 0);
      break;
    case 'vlan_vid':
      // OFPVID_NONE: no tag (value 0, no mask).
      break;
    case 'eth_type':
    case 'udp_src':
    case 'udp_dst':
      value.writeUInt16BE(f.value, 0);
      break;
    case 'ip_proto':
    case 'icmpv4_type':
    case 'icmpv6_type':
      value.writeUInt8(f.value, 0);
      break;
    case 'eth_src':
    case 'arp_sha':
    case 'ipv6_nd_sll':
    case 'ipv6_nd_tll':
      macBytes(f.value).copy(value);
      break;
    case 'ipv4_src':
    case 'arp_spa':
      ipBytes(f.value, 4).copy(value);
      break;
    case 'ipv6_src':
    case 'ipv6_nd_target':
      ipBytes(f.value, 16).copy(value);
      if (f.prefix !== undefined && f.prefix < 128) mask = prefixMask(f.prefix, 16);
      break;
  }
  const head = Buffer.alloc(4);
  head.writeUInt16BE(OXM_BASIC, 0);
  head.writeUInt8((field << 1) | (mask ? 1 : 0), 2);
  head.writeUInt8(size * (mask ? 2 : 1), 3);
  return Buffer.concat(mask ? [head, value, mask] : [head, value]);
}

function macBytes(mac: string): Buffer {
  const parts = mac.split(':');
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-f]{2}$/i.test(p))) throw internal('BadFlow', `not a MAC address: ${mac}`);
  return Buffer.from(parts.map((p) => parseInt(p, 16)));
}

function ipBytes(address: string, size: 4 | 16): Buffer {
  const ip = parseIp(address);
  if (!ip || ip.family !== (size === 4 ? 4 : 6)) throw internal('BadFlow', `not an IPv${size === 4 ? 4 : 6} address: ${address}`);
  const out = Buffer.alloc(size);
  let v = ip.value;
  for (let i = size - 1; i >= 0; i--) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return out;
}

function prefixMask(prefix: number, size: number): Buffer {
  const out = Buffer.alloc(size);
  for (let bit = 0; bit < prefix; bit++) out[bit >> 3]! |= 0x80 >> (bit & 7);
  return out;
}

function instructions(flow: FlowSpec): Buffer[] {
  if (flow.action === 'drop') return [];
  const out: Buffer[] = [];
  if (flow.meter !== undefined) {
    const meter = Buffer.alloc(8);
    meter.writeUInt16BE(6, 0); // OFPIT_METER, which OpenFlow runs before the actions
    meter.writeUInt16BE(8, 2);
    meter.writeUInt32BE(flow.meter, 4);
    out.push(meter);
  }
  const apply = Buffer.alloc(24);
  apply.writeUInt16BE(4, 0); // OFPIT_APPLY_ACTIONS
  apply.writeUInt16BE(24, 2);
  apply.writeUInt16BE(0, 8); // OFPAT_OUTPUT
  apply.writeUInt16BE(16, 10);
  apply.writeUInt32BE(PORT_NORMAL, 12);
  out.push(apply);
  return out;
}

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
