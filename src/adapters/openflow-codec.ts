/**
 * OpenFlow 1.3 messages as bytes, for what the plugin writes: flow adds and deletes by cookie (their matches
 * as OXM fields, their instructions: through a meter to NORMAL, or drop), drop meters, and the errors
 * ovs-vswitchd answers with.
 */
import { internal } from '../errors.js';
import type { FlowSpec, MatchField, MeterSpec } from '../domain/flows.js';
import { parseIp } from '../domain/cidr.js';

export const VERSION = 0x04; // OpenFlow 1.3
export const T = { hello: 0, error: 1, echoRequest: 2, echoReply: 3, flowMod: 14, multipartRequest: 18, multipartReply: 19, barrierRequest: 20, barrierReply: 21, meterMod: 29 } as const;
/** OFPMP_AGGREGATE: how many flows match, in one small answer. */
export const MULTIPART_AGGREGATE = 2;
const FLOW = { add: 0, delete: 3 } as const;
const METER = { add: 0, modify: 1, delete: 2 } as const;
const METER_FLAGS = { kbps: 0x1, burst: 0x4 } as const;
export const ANY = 0xffffffff; // OFPP_ANY, OFPG_ANY, OFP_NO_BUFFER
export const ALL_TABLES = 0xff;
const PORT_NORMAL = 0xfffffffa;
const OXM_BASIC = 0x8000;

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

export function message(type: number, xid: number, ...parts: Buffer[]): Buffer {
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
