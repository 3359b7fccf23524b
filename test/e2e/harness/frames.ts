/**
 * Frames as an attacker in a container would send them, and frames as a
 * victim captured them: built and read here, moved as hex by rawframe
 * (rawframe.c) inside the containers. Only what the attack suite needs:
 * Ethernet with or without an 802.1Q tag, ARP, IPv4 and IPv6 with UDP,
 * ICMPv6 neighbour discovery, router advertisements and redirects, and the
 * DHCP and DHCPv6 server messages.
 */
import { parseIp } from '../../../src/domain/cidr.js';

export const BROADCAST = 'ff:ff:ff:ff:ff:ff';
export const ALL_NODES = 'ff02::1';
const ETH = { ipv4: 0x0800, arp: 0x0806, ipv6: 0x86dd, vlan: 0x8100 } as const;
const PROTO = { icmp: 1, udp: 17, icmpv6: 58 } as const;

function mac(text: string): Buffer {
  return Buffer.from(text.split(':').map((b) => parseInt(b, 16)));
}

function ip(text: string): Buffer {
  const parsed = parseIp(text);
  if (!parsed) throw new Error(`not an address: ${text}`);
  const size = parsed.family === 4 ? 4 : 16;
  const out = Buffer.alloc(size);
  let v = parsed.value;
  for (let i = size - 1; i >= 0; i--) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return out;
}

function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n, 0);
  return b;
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0, 0);
  return b;
}

function checksum(...parts: Buffer[]): number {
  const data = Buffer.concat(parts);
  let sum = 0;
  for (let i = 0; i < data.length; i += 2) sum += (data[i]! << 8) | (data[i + 1] ?? 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** The Ethernet multicast address of an IPv6 multicast address. */
export function multicastMac(address: string): string {
  const b = ip(address);
  return ['33', '33', ...[...b.subarray(12)].map((x) => x.toString(16).padStart(2, '0'))].join(':');
}

/** The solicited-node multicast address of an address (where its neighbour solicitations go). */
export function solicitedNode(address: string): string {
  const b = ip(address);
  return `ff02::1:ff${b[13]!.toString(16).padStart(2, '0')}:${((b[14]! << 8) | b[15]!).toString(16)}`;
}

export interface EthernetOptions {
  readonly dst: string;
  readonly src: string;
  /** An 802.1Q tag to carry. */
  readonly vlan?: number;
}

function ethernet(o: EthernetOptions, type: number, payload: Buffer): string {
  const tag = o.vlan === undefined ? Buffer.alloc(0) : Buffer.concat([u16(ETH.vlan), u16(o.vlan)]);
  const frame = Buffer.concat([mac(o.dst), mac(o.src), tag, u16(type), payload]);
  // Short frames are padded to the Ethernet minimum, as a NIC would.
  return Buffer.concat([frame, Buffer.alloc(Math.max(0, 60 - frame.length))]).toString('hex');
}

/** An ARP request or reply: who has `tpa`, or `spa` is at `sha`. */
export function arp(o: EthernetOptions & { op: 'request' | 'reply'; sha: string; spa: string; tha?: string; tpa: string }): string {
  const body = Buffer.concat([u16(1), u16(ETH.ipv4), Buffer.from([6, 4]), u16(o.op === 'request' ? 1 : 2), mac(o.sha), ip(o.spa), mac(o.tha ?? '00:00:00:00:00:00'), ip(o.tpa)]);
  return ethernet(o, ETH.arp, body);
}

function ipv4(src: string, dst: string, proto: number, payload: Buffer): Buffer {
  const head = Buffer.concat([Buffer.from([0x45, 0]), u16(20 + payload.length), u16(0x4f56), u16(0), Buffer.from([64, proto]), u16(0), ip(src), ip(dst)]);
  head.writeUInt16BE(checksum(head), 10);
  return Buffer.concat([head, payload]);
}

function ipv6(src: string, dst: string, next: number, payload: Buffer, hopLimit = 64): Buffer {
  return Buffer.concat([u32(0x60000000), u16(payload.length), Buffer.from([next, hopLimit]), ip(src), ip(dst), payload]);
}

function udp(src: string, dst: string, sport: number, dport: number, data: Buffer): Buffer {
  const segment = Buffer.concat([u16(sport), u16(dport), u16(8 + data.length), u16(0), data]);
  const pseudo = src.includes(':')
    ? Buffer.concat([ip(src), ip(dst), u32(segment.length), u32(PROTO.udp)])
    : Buffer.concat([ip(src), ip(dst), Buffer.from([0, PROTO.udp]), u16(segment.length)]);
  segment.writeUInt16BE(checksum(pseudo, segment) || 0xffff, 6);
  return segment;
}

/** A UDP datagram over IPv4 or IPv6 (by the addresses). */
export function udpFrame(o: EthernetOptions & { srcIp: string; dstIp: string; sport: number; dport: number; data: Buffer }): string {
  const segment = udp(o.srcIp, o.dstIp, o.sport, o.dport, o.data);
  return o.srcIp.includes(':') ? ethernet(o, ETH.ipv6, ipv6(o.srcIp, o.dstIp, PROTO.udp, segment)) : ethernet(o, ETH.ipv4, ipv4(o.srcIp, o.dstIp, PROTO.udp, segment));
}

/** A link-layer option of neighbour discovery: 1 source, 2 target. */
export function lladdrOption(type: 1 | 2, address: string): Buffer {
  return Buffer.concat([Buffer.from([type, 1]), mac(address)]);
}

function icmp6(o: EthernetOptions & { srcIp: string; dstIp: string }, type: number, body: Buffer): string {
  const message = Buffer.concat([Buffer.from([type, 0]), u16(0), body]);
  const pseudo = Buffer.concat([ip(o.srcIp), ip(o.dstIp), u32(message.length), u32(PROTO.icmpv6)]);
  message.writeUInt16BE(checksum(pseudo, message), 2);
  // Neighbour discovery is only taken with a hop limit of 255 (it never crossed a router).
  return ethernet(o, ETH.ipv6, ipv6(o.srcIp, o.dstIp, PROTO.icmpv6, message, 255));
}

/** A neighbour solicitation for `target`; `options` as given (none for duplicate address detection). */
export function neighbourSolicitation(o: EthernetOptions & { srcIp: string; dstIp: string; target: string; options: Buffer[] }): string {
  return icmp6(o, 135, Buffer.concat([u32(0), ip(o.target), ...o.options]));
}

/** A neighbour advertisement that `target` is at the link-layer address in `options` (override set). */
export function neighbourAdvertisement(o: EthernetOptions & { srcIp: string; dstIp: string; target: string; options: Buffer[] }): string {
  return icmp6(o, 136, Buffer.concat([u32(0x20000000), ip(o.target), ...o.options]));
}

/** A router advertisement: the sender as default router for half an hour, and a prefix to take addresses from. */
export function routerAdvertisement(o: EthernetOptions & { srcIp: string; dstIp: string; prefix: string }): string {
  const prefix = Buffer.concat([Buffer.from([3, 4, 64, 0xc0]), u32(86400), u32(14400), u32(0), ip(o.prefix)]);
  return icmp6(o, 134, Buffer.concat([Buffer.from([64, 0]), u16(1800), u32(0), u32(0), lladdrOption(1, o.src), prefix]));
}

/** A redirect: for `destination`, use `target` as the first hop. */
export function redirect(o: EthernetOptions & { srcIp: string; dstIp: string; target: string; destination: string }): string {
  return icmp6(o, 137, Buffer.concat([u32(0), ip(o.target), ip(o.destination), lladdrOption(2, o.src)]));
}

/** An ICMP redirect (type 5, for the host): `gateway` is the better first hop it names for `destination`. */
export function redirect4(o: EthernetOptions & { srcIp: string; dstIp: string; gateway: string; destination: string }): string {
  // The header of the datagram it is about: any IPv4 header to `destination`, and 8 bytes of it.
  const about = ipv4(o.dstIp, o.destination, PROTO.udp, Buffer.alloc(8));
  const message = Buffer.concat([Buffer.from([5, 1]), u16(0), ip(o.gateway), about.subarray(0, 28)]);
  message.writeUInt16BE(checksum(message), 2);
  return ethernet(o, ETH.ipv4, ipv4(o.srcIp, o.dstIp, PROTO.icmp, message));
}

/** A DHCP offer of `yiaddr` to the client with MAC `chaddr`, from a server at `srcIp` (from port 67 unless `sport`). */
export function dhcpOffer(o: EthernetOptions & { srcIp: string; yiaddr: string; chaddr: string; xid: number; sport?: number }): string {
  const bootp = Buffer.alloc(236);
  bootp[0] = 2; // BOOTREPLY
  bootp[1] = 1;
  bootp[2] = 6;
  bootp.writeUInt32BE(o.xid >>> 0, 4);
  ip(o.yiaddr).copy(bootp, 16);
  ip(o.srcIp).copy(bootp, 20);
  mac(o.chaddr).copy(bootp, 28);
  const options = Buffer.concat([u32(0x63825363), Buffer.from([53, 1, 2, 54, 4]), ip(o.srcIp), Buffer.from([3, 4]), ip(o.srcIp), Buffer.from([255])]);
  return udpFrame({ ...o, dstIp: '255.255.255.255', sport: o.sport ?? 67, dport: 68, data: Buffer.concat([bootp, options]) });
}

/** A DHCPv6 advertise from a server at `srcIp` to the client at `dstIp`. */
export function dhcpv6Advertise(o: EthernetOptions & { srcIp: string; dstIp: string; xid: number }): string {
  const serverId = Buffer.concat([u16(2), u16(10), u16(3), u16(1), mac(o.src)]);
  return udpFrame({ ...o, sport: 547, dport: 546, data: Buffer.concat([Buffer.from([2, (o.xid >> 16) & 0xff, (o.xid >> 8) & 0xff, o.xid & 0xff]), serverId]) });
}

// ---- what a victim received ----

export interface Frame {
  readonly dst: string;
  readonly src: string;
  /** The 802.1Q VLAN id it carried. */
  readonly vlan: number | undefined;
  readonly type: number;
  readonly arp?: { readonly op: number; readonly sha: string; readonly spa: string; readonly tpa: string };
  readonly ip?: {
    readonly family: 4 | 6;
    readonly src: string;
    readonly dst: string;
    readonly proto: number;
    readonly udp?: { readonly sport: number; readonly dport: number; readonly data: Buffer };
    /** ICMP (IPv4): its type. */
    readonly icmp?: { readonly type: number };
    readonly icmp6?: { readonly type: number; readonly target: string | undefined; readonly lladdr: readonly string[] };
  };
}

function macText(b: Buffer): string {
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

function ipText(b: Buffer): string {
  if (b.length === 4) return [...b].join('.');
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((b[i]! << 8) | b[i + 1]!).toString(16));
  // The canonical short form (longest run of zero groups as ::), as the rest of the project writes it.
  let best = [-1, 0];
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > best[1]! && j - i > 1) best = [i, j - i];
    i = j;
  }
  if (best[0]! < 0) return groups.join(':');
  return `${groups.slice(0, best[0]).join(':')}::${groups.slice(best[0]! + best[1]!).join(':')}`;
}

export function parseFrame(hex: string): Frame {
  const b = Buffer.from(hex, 'hex');
  let offset = 12;
  let vlan: number | undefined;
  let type = b.readUInt16BE(offset);
  if (type === ETH.vlan) {
    vlan = b.readUInt16BE(offset + 2) & 0x0fff;
    offset += 4;
    type = b.readUInt16BE(offset);
  }
  offset += 2;
  const frame = { dst: macText(b.subarray(0, 6)), src: macText(b.subarray(6, 12)), vlan, type };
  if (type === ETH.arp) {
    return { ...frame, arp: { op: b.readUInt16BE(offset + 6), sha: macText(b.subarray(offset + 8, offset + 14)), spa: ipText(b.subarray(offset + 14, offset + 18)), tpa: ipText(b.subarray(offset + 24, offset + 28)) } };
  }
  if (type === ETH.ipv4) {
    const ihl = (b[offset]! & 0x0f) * 4;
    const proto = b[offset + 9]!;
    const l4 = offset + ihl;
    const l4fields = proto === PROTO.udp ? { udp: readUdp(b, l4) } : proto === PROTO.icmp ? { icmp: { type: b[l4]! } } : {};
    return { ...frame, ip: { family: 4, src: ipText(b.subarray(offset + 12, offset + 16)), dst: ipText(b.subarray(offset + 16, offset + 20)), proto, ...l4fields } };
  }
  if (type === ETH.ipv6) {
    const next = b[offset + 6]!;
    const l4 = offset + 40;
    const base = { family: 6 as const, src: ipText(b.subarray(offset + 8, offset + 24)), dst: ipText(b.subarray(offset + 24, offset + 40)), proto: next };
    if (next === PROTO.udp) return { ...frame, ip: { ...base, udp: readUdp(b, l4) } };
    if (next === PROTO.icmpv6) {
      const icmpType = b[l4]!;
      const nd = icmpType === 135 || icmpType === 136 || icmpType === 137;
      const lladdr: string[] = [];
      let opt = l4 + (icmpType === 137 ? 40 : icmpType === 134 ? 16 : 24);
      while (opt + 8 <= b.length && b[opt + 1]! > 0) {
        if (b[opt] === 1 || b[opt] === 2) lladdr.push(macText(b.subarray(opt + 2, opt + 8)));
        opt += b[opt + 1]! * 8;
      }
      return { ...frame, ip: { ...base, icmp6: { type: icmpType, target: nd ? ipText(b.subarray(l4 + 8, l4 + 24)) : undefined, lladdr } } };
    }
    return { ...frame, ip: base };
  }
  return frame;
}

function readUdp(b: Buffer, at: number): { sport: number; dport: number; data: Buffer } {
  const length = b.readUInt16BE(at + 4);
  return { sport: b.readUInt16BE(at), dport: b.readUInt16BE(at + 2), data: b.subarray(at + 8, at + Math.max(8, length)) };
}
