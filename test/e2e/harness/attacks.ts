/**
 * The attacks a hostile container tries, as frames (built in frames.ts, sent by
 * rawframe): each against a victim V, claiming its neighbour N's identity where
 * it spoofs one, with how to tell it among what a victim captured. Shared by
 * the attack suite (attacks.test.ts) and the OVN suite.
 */
import {
  ALL_NODES,
  BROADCAST,
  type Frame,
  arp,
  dhcpOffer,
  dhcpv6Advertise,
  lladdrOption,
  multicastMac,
  neighbourAdvertisement,
  neighbourSolicitation,
  redirect,
  redirect4,
  routerAdvertisement,
  solicitedNode,
  udpFrame,
} from './frames.js';

export interface Peer {
  readonly name: string;
  readonly ip: string;
  readonly ipv6: string;
  readonly mac: string;
  readonly ll: string;
}

/**
 * One attack: the frames an attacker sends at its victim, and how to tell them among what the victim received:
 * by the attacker's MAC as source, or a nonce only the attacker's frames carry, never by kind alone (the
 * neighbour's own solicitations and advertisements name its MAC and addresses too).
 */
export interface Attack {
  readonly name: string;
  readonly frames: (a: Peer, n: Peer, v: Peer) => string[];
  readonly seen: (f: Frame, a: Peer, n: Peer, v: Peer) => boolean;
  /** Also captured on the network's gateway port: what reaches the host. */
  readonly host?: boolean;
}

export const nonce = (what: string) => Buffer.from(`ovsnet-attack ${what}`);
export const carries = (f: Frame, what: string) => !!f.ip?.udp?.data.includes(nonce(what));

export const ATTACKS: readonly Attack[] = [
  {
    name: "an ARP reply saying the neighbour's address is at the attacker's MAC",
    frames: (a, n, v) => [arp({ dst: v.mac, src: a.mac, op: 'reply', sha: a.mac, spa: n.ip, tha: v.mac, tpa: v.ip })],
    seen: (f, a, n) => f.arp?.spa === n.ip && f.arp.sha === a.mac,
  },
  {
    name: "a gratuitous ARP for the neighbour's address",
    frames: (a, n) => [arp({ dst: BROADCAST, src: a.mac, op: 'request', sha: a.mac, spa: n.ip, tpa: n.ip })],
    seen: (f, a, n) => f.arp?.spa === n.ip && f.arp.sha === a.mac,
  },
  {
    name: 'IPv4 from another MAC',
    frames: (a, _n, v) => [udpFrame({ dst: v.mac, src: '02:00:00:00:71:99', srcIp: a.ip, dstIp: v.ip, sport: 4000, dport: 4000, data: nonce('mac') })],
    seen: (f) => carries(f, 'mac'),
  },
  {
    name: "IPv4 from the neighbour's address",
    frames: (a, n, v) => [udpFrame({ dst: v.mac, src: a.mac, srcIp: n.ip, dstIp: v.ip, sport: 4000, dport: 4000, data: nonce('ipv4') })],
    seen: (f) => carries(f, 'ipv4'),
  },
  {
    name: "IPv6 from the neighbour's global address",
    frames: (a, n, v) => [udpFrame({ dst: v.mac, src: a.mac, srcIp: n.ipv6, dstIp: v.ipv6, sport: 4000, dport: 4000, data: nonce('ipv6') })],
    seen: (f) => carries(f, 'ipv6'),
  },
  {
    name: "IPv6 from the neighbour's link-local address, and from a made-up one",
    frames: (a, n, v) => [
      udpFrame({ dst: v.mac, src: a.mac, srcIp: n.ll, dstIp: v.ll, sport: 4000, dport: 4000, data: nonce('ll') }),
      udpFrame({ dst: v.mac, src: a.mac, srcIp: 'fe80::dead:beef', dstIp: v.ll, sport: 4000, dport: 4000, data: nonce('ll') }),
    ],
    seen: (f) => carries(f, 'll'),
  },
  {
    name: "a neighbour advertisement for the neighbour's global address",
    frames: (a, n) => [neighbourAdvertisement({ dst: multicastMac(ALL_NODES), src: a.mac, srcIp: a.ipv6, dstIp: ALL_NODES, target: n.ipv6, options: [lladdrOption(2, a.mac)] })],
    seen: (f, a, n) => f.src === a.mac && f.ip?.icmp6?.type === 136 && f.ip.icmp6.target === n.ipv6,
  },
  {
    name: "a neighbour advertisement for the neighbour's link-local address",
    frames: (a, n) => [neighbourAdvertisement({ dst: multicastMac(ALL_NODES), src: a.mac, srcIp: a.ll, dstIp: ALL_NODES, target: n.ll, options: [lladdrOption(2, a.mac)] })],
    seen: (f, a, n) => f.src === a.mac && f.ip?.icmp6?.type === 136 && f.ip.icmp6.target === n.ll,
  },
  {
    name: "a neighbour solicitation with a second link-layer option naming the neighbour's MAC",
    frames: (a, n, v) => [
      neighbourSolicitation({ dst: multicastMac(solicitedNode(v.ipv6)), src: a.mac, srcIp: a.ipv6, dstIp: solicitedNode(v.ipv6), target: v.ipv6, options: [lladdrOption(1, a.mac), lladdrOption(1, n.mac)] }),
    ],
    seen: (f, a, n) => f.src === a.mac && f.ip?.icmp6?.type === 135 && f.ip.icmp6.lladdr.includes(n.mac),
  },
  {
    name: "duplicate address detection for the neighbour's address",
    frames: (a, n) => [neighbourSolicitation({ dst: multicastMac(solicitedNode(n.ipv6)), src: a.mac, srcIp: '::', dstIp: solicitedNode(n.ipv6), target: n.ipv6, options: [] })],
    seen: (f, a, n) => f.src === a.mac && f.ip?.icmp6?.type === 135 && f.ip.src === '::' && f.ip.icmp6.target === n.ipv6,
  },
  {
    name: 'a router advertisement',
    frames: (a) => [routerAdvertisement({ dst: multicastMac(ALL_NODES), src: a.mac, srcIp: a.ll, dstIp: ALL_NODES, prefix: 'fd99:71::' })],
    seen: (f, a) => f.src === a.mac && f.ip?.icmp6?.type === 134,
    host: true,
  },
  {
    name: 'a redirect',
    frames: (a, _n, v) => [redirect({ dst: v.mac, src: a.mac, srcIp: a.ll, dstIp: v.ll, target: a.ll, destination: '2001:db8::1' })],
    seen: (f, a) => f.src === a.mac && f.ip?.icmp6?.type === 137,
  },
  {
    name: 'an ICMP redirect',
    frames: (a, _n, v) => [redirect4({ dst: v.mac, src: a.mac, srcIp: a.ip, dstIp: v.ip, gateway: a.ip, destination: '198.51.100.7' })],
    seen: (f, a) => f.src === a.mac && f.ip?.icmp?.type === 5,
  },
  {
    name: 'a DHCP offer',
    frames: (a, _n, v) => [dhcpOffer({ dst: BROADCAST, src: a.mac, srcIp: a.ip, yiaddr: v.ip, chaddr: v.mac, xid: 0x0a7ac4 })],
    seen: (f, a) => f.src === a.mac && f.ip?.udp?.sport === 67,
    host: true,
  },
  {
    name: 'a DHCP offer from another source port',
    frames: (a, _n, v) => [dhcpOffer({ dst: BROADCAST, src: a.mac, srcIp: a.ip, yiaddr: v.ip, chaddr: v.mac, xid: 0x0a7ac5, sport: 4067 })],
    seen: (f, a) => f.src === a.mac && f.ip?.udp?.dport === 68 && f.ip.udp.sport === 4067,
    host: true,
  },
  {
    name: 'a DHCPv6 advertise',
    frames: (a, _n, v) => [dhcpv6Advertise({ dst: v.mac, src: a.mac, srcIp: a.ll, dstIp: v.ll, xid: 0x0a7ac4 })],
    seen: (f, a) => f.src === a.mac && f.ip?.udp?.sport === 547,
  },
];
