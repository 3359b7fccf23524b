/**
 * `ovsnet trace CONTAINER DESTINATION[:PORT[/tcp|udp|icmp]]`: the path a packet from a container takes and
 * its verdict, as the plugin works it out (driver/trace.ts). Here: which of the container's endpoints it
 * leaves from, what the destination is (a container, an address, or `outside`), and the report in words.
 */
import { CliError, type PluginClient, type PluginState } from './client.js';
import type { TraceProtocol, TraceReport } from '../domain/trace.js';
import { canonicalIp, prefixHolds } from '../domain/cidr.js';

export interface TraceArgs {
  readonly container: string;
  readonly destination: string;
  readonly network?: string;
  readonly source?: string;
  readonly sourceMac?: string;
  readonly vlan?: number;
  readonly icmpType?: number;
}

export const TRACE_USAGE = `usage: ovsnet trace CONTAINER DESTINATION[:PORT[/tcp|udp|icmp]] [--network NETWORK]
                    [--source IP] [--source-mac MAC] [--vlan VID] [--icmp-type N] [--json]
  DESTINATION: a container, an address ([v6 address]:PORT with a port), or outside`;

/** DESTINATION[:PORT[/PROTOCOL]], with `[v6]:port` for IPv6 with a port. */
export function parseDestination(text: string): { target: string; port: number | undefined; protocol: TraceProtocol } {
  const m = /^\[([^\]]+)\](?::(\d+))?(?:\/(\w+))?$/.exec(text) ?? (text.split(':').length > 2 ? [text, text, undefined, undefined] : /^([^:/]+)(?::(\d+))?(?:\/(\w+))?$/.exec(text));
  if (!m || !m[1]) throw new CliError(`cannot read destination "${text}"\n${TRACE_USAGE}`, 2);
  const port = m[2] === undefined ? undefined : Number(m[2]);
  if (port !== undefined && (port < 1 || port > 65535)) throw new CliError(`port ${m[2]} is not a port: 1 to 65535`, 2);
  const protocol = (m[3] ?? (port === undefined ? 'icmp' : 'tcp')) as TraceProtocol;
  if (!['tcp', 'udp', 'icmp'].includes(protocol)) throw new CliError(`protocol "${m[3]}" is not one trace knows: tcp, udp or icmp`, 2);
  if (protocol === 'icmp' && port !== undefined) throw new CliError('ICMP has no ports: give tcp or udp with a port', 2);
  if (protocol !== 'icmp' && port === undefined) throw new CliError(`${protocol} needs a port: DESTINATION:PORT/${protocol}`, 2);
  return { target: m[1], port, protocol };
}

interface Names {
  networks: Map<string, string>;
  containers: Map<string, { name: string; id: string }>;
}

/** The endpoints of a container (by name, id or id prefix) on the plugin's networks. */
function endpointsOf(state: PluginState, names: Names, ref: string): PluginState['endpoints'] {
  const ids = [...names.containers].filter(([, c]) => c.name === ref || c.id === ref || (ref.length >= 4 && c.id.startsWith(ref))).map(([endpointId]) => endpointId);
  return state.endpoints.filter((e) => ids.includes(e.id));
}

export async function runTrace(client: PluginClient, state: PluginState, names: Names, args: TraceArgs): Promise<TraceReport> {
  const { target, port, protocol } = parseDestination(args.destination);
  const mine = endpointsOf(state, names, args.container);
  if (mine.length === 0) throw new CliError(`no container "${args.container}" on an ovs network of this host (docker ps shows the containers; ovsnet endpoints those on ovs networks)`);
  let destination: string | undefined;
  let theirs: PluginState['endpoints'] = [];
  if (target !== 'outside') {
    destination = canonicalIp(target);
    if (!destination) {
      theirs = endpointsOf(state, names, target);
      if (theirs.length === 0) throw new CliError(`destination "${target}" is neither an address, outside, nor a container on an ovs network of this host`);
    }
  }
  const networkId = args.network ? [...names.networks].find(([id, name]) => name === args.network || id === args.network || (args.network!.length >= 4 && id.startsWith(args.network!)))?.[0] : undefined;
  if (args.network && !networkId) throw new CliError(`no network "${args.network}"`);
  const candidates = networkId ? mine.filter((e) => e.networkId === networkId) : mine;
  if (candidates.length === 0) throw new CliError(`container ${args.container} is not on network ${args.network}`);
  // A container destination: its address on a network both share, else its first.
  const shared = candidates.find((e) => theirs.some((t) => t.networkId === e.networkId));
  const onLink = (e: PluginState['endpoints'][number]) => {
    const n = state.networks.find((x) => x.id === e.networkId);
    return !!destination && !!n && [...n.ipv4, ...n.ipv6].some((s) => prefixHolds(s.pool, destination!));
  };
  const from = shared ?? candidates.find(onLink) ?? candidates[0]!;
  if (!destination && theirs.length > 0) {
    const to = theirs.find((t) => t.networkId === from.networkId) ?? theirs[0]!;
    destination = (to.address || to.addressIpv6).split('/')[0];
  }
  const res = await client.request('POST', '/ovsnet/trace', {
    EndpointID: from.id,
    ...(destination ? { Destination: destination } : {}),
    Protocol: protocol,
    ...(port !== undefined ? { Port: port } : {}),
    ...(args.icmpType !== undefined ? { IcmpType: args.icmpType } : {}),
    ...(args.source ? { Source: args.source } : {}),
    ...(args.sourceMac ? { SourceMac: args.sourceMac } : {}),
    ...(args.vlan !== undefined ? { Vlan: args.vlan } : {}),
  });
  if (res.status !== 200) throw new CliError(`the plugin refused: ${res.body?.Err ?? JSON.stringify(res.body)}`);
  return res.body as TraceReport;
}

/** The report in lines, with network ids replaced by their Docker names. */
export function traceLines(report: TraceReport, networks: ReadonlyMap<string, string>): string[] {
  const named = (text: string) => text.replace(/network ([0-9a-z]{12})\b/g, (whole, id: string) => {
    const name = [...networks].find(([full]) => full.startsWith(id))?.[1];
    return name ? `network ${name}` : whole;
  });
  const p = report.packet;
  const what = p.protocol === 'icmp' ? `icmp type ${p.icmpType ?? (p.family === 4 ? 8 : 128)}` : `${p.protocol} port ${p.dport}`;
  const from = report.from.name ?? report.from.endpointId?.slice(0, 12) ?? report.from.port;
  const to = report.to.container?.name ? `${report.to.container.name} ${report.to.address}` : report.to.outside ? `outside (${report.to.address})` : report.to.address;
  const lines = [`trace ${from} ${p.src} -> ${to}, ${what}${p.vlan !== undefined ? `, tagged VLAN ${p.vlan}` : ''}`];
  report.steps.forEach((s, i) => lines.push(`${String(i + 1).padStart(3)}. [${s.at}${s.host ? ` on ${s.host}` : ''}] ${named(s.says)}`));
  lines.push(`verdict: ${report.verdict.outcome.toUpperCase()}: ${named(report.verdict.says)}`);
  return lines;
}
