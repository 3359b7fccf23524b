/**
 * The OVN part of `ovsnet trace`: once the guard on the integration bridge let the packet through, OVN's
 * logical pipeline decides. ovn-trace follows it on the southbound database; its logical ports are named
 * here after the containers and hosts that hold them (the northbound ports' ovsnet-hostname), and its gateway
 * port after the chassis it is active on.
 */
import { errorMessage, unavailable } from '../errors.js';
import { NB, type NbPort, portName, primaryAddress } from '../domain/ovn.js';
import type { EndpointRecord, NetworkRecord } from '../domain/records.js';
import { type Outcome, type PortRef, type TraceReport, type TraceStep, describePort } from '../domain/trace.js';
import { ovnMicroflow, parseOvnTrace, stageSays } from '../domain/trace-ovn.js';
import type { Probe } from '../domain/trace-ofproto.js';
import type { Tracing } from './ports.js';

/** What the trace asks of OVN. */
export interface OvnTraceContext {
  readonly tracing: Tracing;
  /** The southbound database's remotes, as this host's ovn-controller has them (external_ids:ovn-remote). */
  southbound(): Promise<string | undefined>;
  /** A logical port of the northbound database. */
  port(name: string): Promise<NbPort | undefined>;
  /** The chassis (and its hostname) each of these logical ports is bound to: a gateway port's, the active gateway chassis. */
  residents(ports: readonly string[]): Promise<Map<string, { chassis: string; hostname: string }>>;
}

export interface OvnTrip {
  readonly network: NetworkRecord;
  readonly endpoint: EndpointRecord;
  readonly probe: Probe;
  readonly steps: TraceStep[];
  readonly report: (outcome: Outcome, says: string) => TraceReport;
  readonly hostname: string;
  /** Container names by endpoint id, as Docker gave them. */
  readonly names: ReadonlyMap<string, string>;
  readonly step: (at: TraceStep['at'], says: string, detail: Record<string, unknown>) => TraceStep;
  /** An OVN datapath (switch or router) in words: the network it is, a router, the outside network. */
  readonly datapath: (name: string) => string;
  /** This host's container with that address, if one has it. */
  readonly local: (address: string) => PortRef | undefined;
}

export async function traceOvn(ovn: OvnTraceContext, trip: OvnTrip): Promise<TraceReport> {
  const { network, endpoint, probe, steps, report, step } = trip;
  const southbound = await ovn.southbound();
  // A trace that cannot be followed is an error of the call, never a verdict: DROPPED would blame the network.
  if (!southbound) throw unavailable('TraceFailed', "OVN's part of the path cannot be traced: this host's Open vSwitch has no external_ids:ovn-remote (the southbound database ovn-trace reads)");
  const inport = portName(network.ovn!, primaryAddress(endpoint));
  const microflow = ovnMicroflow(inport, probe);
  let output: string;
  try {
    output = await ovn.tracing.ovnTrace(southbound, network.ovn!.switchName, microflow);
  } catch (err) {
    throw unavailable('TraceFailed', `ovn-trace could not follow the packet: ${errorMessage(err)}`, err);
  }
  const trace = parseOvnTrace(output);
  if (trace.error) throw unavailable('TraceFailed', `ovn-trace could not follow the packet: ${trace.error}`);
  const path = trace.hops.filter((h) => h.direction === 'ingress').map((h) => h.datapath);
  steps.push(step('ovn', `OVN's logical path from ${inport}: ${path.map(trip.datapath).join(' -> ') || '(none)'}`, { inport, microflow, datapaths: path }));
  if (trace.snat) steps.push(step('ovn', `SNAT on the router's gateway port: it leaves with source ${trace.snat}`, { snat: trace.snat }));
  let gateway: { chassis: string; hostname: string } | undefined;
  if (trace.gatewayPort) {
    gateway = (await ovn.residents([trace.gatewayPort]).catch(() => new Map<string, { chassis: string; hostname: string }>())).get(trace.gatewayPort);
    steps.push(step('ovn', `out through the router's gateway port ${trace.gatewayPort}, active on ${gateway ? `gateway chassis ${gateway.chassis} (host ${gateway.hostname})` : 'no gateway chassis now (none has claimed it)'}`, { gatewayPort: trace.gatewayPort, ...(gateway ? { chassis: gateway.chassis, host: gateway.hostname } : {}) }));
  }
  if (trace.drop) {
    const says = `dropped by OVN in ${trace.drop.direction} stage ${trace.drop.stage} of ${trip.datapath(trace.drop.datapath)}: ${stageSays(trace.drop.stage)}`;
    steps.push(step('ovn', says, { ...trace.drop }));
    return report('dropped', says);
  }
  if (trace.resolving) return report('dropped', "not forwarded yet: the router does not know the next hop's MAC and sends an ARP request for it first");
  const vifs = trace.outputs.filter((o) => o.type === '');
  const refs: PortRef[] = [];
  for (const vif of vifs) refs.push(await logicalPort(ovn, vif.port, trip));
  for (const ref of refs) steps.push(step('ovn', `output to ${describePort(ref)}${ref.host && ref.host !== trip.hostname ? `: through the tunnel from ${trip.hostname} to ${ref.host}` : ''}`, { ...ref }));
  if (refs.length > 0) return report('delivered', `delivered to ${refs.map(describePort).join(', ')}`);
  const localnet = trace.outputs.find((o) => o.type === 'localnet');
  if (localnet) return report('leaves', `leaves OVN to the physical network by ${localnet.port}${gateway ? ` on gateway chassis ${gateway.chassis} (host ${gateway.hostname})` : ''}${trace.snat ? `, from ${trace.snat}` : ''}`);
  return report('dropped', `OVN outputs it to no port (${trace.outputs.map((o) => o.port).join(', ') || 'none'})`);
}

/** A logical port, named after its container (when it is this host's) and the host that holds it. */
async function logicalPort(ovn: OvnTraceContext, name: string, trip: OvnTrip): Promise<PortRef> {
  const row = await ovn.port(name).catch(() => undefined);
  const address = row?.addresses[0]?.split(' ')[1];
  const host = row?.externalIds[NB.hostname] || row?.externalIds[NB.chassis];
  const local = address && host === trip.hostname ? trip.local(address) : undefined;
  if (local) return { ...local, port: name, host };
  return { port: name, role: 'container', networkId: trip.network.id, ...(address ? { address } : {}), ...(host ? { host } : {}) };
}
