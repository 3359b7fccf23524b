/**
 * `ovsnet trace`: what a packet from a container meets on its way, in the operator's words. The report is a
 * list of steps (Open vSwitch's tables, the host's routing and the plugin's iptables chains, OVN's logical
 * pipeline), each naming what it found by container, network and port, and one verdict. Built from what
 * Open vSwitch, the kernel and OVN say of the packet (ofproto/trace, `ip route get`, the rules as the kernel
 * holds them, ovn-trace); nothing is sent.
 */
import type { DropReason, FlowSpec, PortGuard } from './flows.js';
import type { Probe } from './trace-ofproto.js';

export type TraceProtocol = 'tcp' | 'udp' | 'icmp';

/** What `POST /ovsnet/trace` is asked. */
export interface TraceRequest {
  /** The container's endpoint the packet leaves from. */
  readonly endpointId: string;
  /** An address, or undefined for `outside`: an address on none of the host's networks. */
  readonly destination: string | undefined;
  readonly protocol: TraceProtocol;
  readonly port: number | undefined;
  readonly icmpType: number | undefined;
  /** A source address, MAC or VLAN tag other than the container's own (to see what the guard does with it). */
  readonly source: string | undefined;
  readonly sourceMac: string | undefined;
  readonly vlan: number | undefined;
}

/** A port, named for the operator: whose it is. */
export interface PortRef {
  readonly port: string;
  readonly role: 'container' | 'gateway' | 'uplink' | 'tunnel' | 'bridge' | 'spare' | 'router' | 'other';
  readonly networkId?: string;
  readonly endpointId?: string;
  /** A container's name (when Docker could be asked), or the network's for a gateway port. */
  readonly name?: string;
  readonly address?: string;
  /** The host it is on (OVN: the host that holds a logical port). */
  readonly host?: string;
  readonly vlan?: number;
  /** A tunnel's remote end. */
  readonly remote?: string;
}

export interface TraceStep {
  readonly at: 'ovs' | 'route' | 'iptables' | 'ovn';
  readonly host: string;
  /** One line, in the operator's words. */
  readonly says: string;
  /** What it is based on: a bridge and flow, a chain and rule, an OVN datapath and stage, ... */
  readonly detail: Readonly<Record<string, unknown>>;
}

export type Outcome = 'delivered' | 'dropped' | 'leaves' | 'host';

export interface TraceReport {
  readonly from: PortRef & { readonly networkName?: string };
  /** The destination: its address, and whose it is when it is a container's. */
  readonly to: { readonly address: string; readonly port?: number; readonly protocol: TraceProtocol; readonly container?: PortRef; readonly outside: boolean };
  /** The packet as traced (the microflow Open vSwitch was given). */
  readonly packet: Probe;
  readonly steps: readonly TraceStep[];
  readonly verdict: { readonly outcome: Outcome; readonly says: string };
}

/** The addresses `outside` stands for: documentation ranges (RFC 5737, RFC 3849), on no network of a host. */
export const OUTSIDE = { 4: '198.51.100.7', 6: '2001:db8:ffff::7' } as const;

const WHY: Record<DropReason, string> = {
  'router-advertisement': 'router advertisements from containers (the network has allow_ra off)',
  redirect: 'ICMP redirects from containers (the network has allow_ra off)',
  'dhcp-server': 'DHCP server messages from containers (the network has allow_dhcp_server off)',
  'neighbour-spoof': "neighbour discovery that is not for the container's own MAC and addresses (anti-spoofing)",
  source: "anything not from the container's own MAC and addresses, and tagged frames (anti-spoofing)",
};

/**
 * What one of the guard's flows did to the probe, in words: the rule, and for a drop of `source`, which of
 * the probe's fields the container does not own.
 */
export function guardSays(flow: FlowSpec, guard: PortGuard, probe: Probe): string {
  if (flow.action === 'pass') {
    if (!guard.antiSpoofing && guard.pipeline === 'normal') return `admitted by the guard (the network has anti_spoofing off${guard.rate ? `; through the port's rate limit, ${guard.rate.mbit} Mbit/s` : ''})`;
    return `admitted by the guard: from the container's own MAC ${guard.mac} and address ${probe.src}${flow.meter !== undefined ? `, through the port's rate limit (${guard.rate?.mbit} Mbit/s)` : ''}`;
  }
  const reason = flow.reason ?? 'source';
  if (reason !== 'source') return `dropped by the guard (${reason}): it drops ${WHY[reason]}`;
  const own = [guard.ipv4, guard.ipv6, guard.linkLocal].filter(Boolean);
  const what =
    probe.vlan !== undefined
      ? `a frame tagged with VLAN ${probe.vlan}: containers send untagged frames only`
      : probe.srcMac.toLowerCase() !== guard.mac
        ? `source MAC ${probe.srcMac} is not the container's (${guard.mac})`
        : !own.includes(probe.src)
          ? `source address ${probe.src} is not the container's (${own.join(', ') || 'none'})`
          : 'it is none of what the container may send';
  return `dropped by the guard (source): ${what}`;
}

/** The Ethernet destination of an IP destination that is on the link: its multicast MAC, broadcast, or unknown. */
export function linkMac(address: string): string | undefined {
  if (address === '255.255.255.255') return 'ff:ff:ff:ff:ff:ff';
  if (/^ff[0-9a-f]{2}:/i.test(address)) {
    // 33:33 and the last 32 bits of the group (RFC 2464).
    const groups = expandV6(address);
    const last = [(groups[6]! >> 8) & 0xff, groups[6]! & 0xff, (groups[7]! >> 8) & 0xff, groups[7]! & 0xff];
    return ['33', '33', ...last.map((b) => b.toString(16).padStart(2, '0'))].join(':');
  }
  return undefined;
}

function expandV6(address: string): number[] {
  const [head, tail] = address.split('::') as [string, string | undefined];
  const a = head ? head.split(':').map((g) => parseInt(g, 16)) : [];
  const b = tail ? tail.split(':').map((g) => parseInt(g, 16)) : [];
  return tail === undefined ? a : [...a, ...Array(8 - a.length - b.length).fill(0), ...b];
}

/** A port in words: "web1 (10.0.0.5, port ovp..., host a)", "the gateway port ovsgw... of network 3f2a...". */
export function describePort(ref: PortRef): string {
  switch (ref.role) {
    case 'container':
      // Another host's container: known here by its logical port only.
      if (!ref.name && !ref.endpointId) return `the container ${ref.address ?? ''} of host ${ref.host ?? '?'} (logical port ${ref.port})`.replace('  ', ' ');
      return `${ref.name ?? `endpoint ${ref.endpointId!.slice(0, 12)}`} (${[ref.address, `port ${ref.port}`, ref.host ? `host ${ref.host}` : ''].filter(Boolean).join(', ')})`;
    case 'gateway':
      return `the gateway port ${ref.port}${ref.networkId ? ` of network ${ref.networkId.slice(0, 12)}` : ''}`;
    case 'uplink':
      return `uplink ${ref.port}${ref.vlan !== undefined ? ` tagged VLAN ${ref.vlan}` : ''}`;
    case 'tunnel':
      return `tunnel ${ref.port}${ref.remote ? ` to ${ref.remote}` : ''}`;
    case 'bridge':
      return `the bridge's own port ${ref.port}`;
    case 'spare':
      return `spare port ${ref.port}`;
    case 'router':
      return `router port ${ref.port}`;
    default:
      return `port ${ref.port}${ref.host ? ` on host ${ref.host}` : ''}`;
  }
}
