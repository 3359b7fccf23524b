/**
 * What the guard flows of containers' ports have dropped, per endpoint and reason, from the flows' own packet
 * counts (for metrics: which container sends what it must not, and what). One OVSDB read for the ports'
 * OpenFlow numbers and one `ovs-ofctl dump-flows` per bridge with guarded ports; each port's drop flows are
 * known by their cookies, computed as when they were set. Counts start again when a port's flows are set
 * again (a restart of ovs-vswitchd, a repair), as Prometheus expects of a counter.
 */
import { type DropReason, portFlows } from '../domain/flows.js';
import { endpointPort } from '../domain/host.js';
import type { DockerView, Ovs } from './ports.js';
import type { State } from './state.js';

export interface GuardDrops {
  readonly networkId: string;
  readonly endpointId: string;
  /** The container's name, when Docker could be asked. */
  readonly container: string | undefined;
  readonly port: string;
  readonly reason: DropReason;
  readonly packets: number;
}

export class GuardDropReader {
  /** Container names by endpoint id, asked of Docker once per network with endpoints not known yet. */
  private readonly names = new Map<string, string>();

  constructor(private readonly o: { state: State; ovs: Pick<Ovs, 'snapshot' | 'flowPackets'>; docker?: Pick<DockerView, 'containerNames'> }) {}

  async read(): Promise<GuardDrops[]> {
    const { state, ovs } = this.o;
    const guarded = [];
    for (const endpoint of state.endpoints.values()) {
      const network = state.networks.get(endpoint.networkId);
      if (!network || network.state !== 'ready') continue;
      const port = endpointPort(network, endpoint);
      if (port.guard) guarded.push({ endpoint, port, guard: port.guard });
    }
    for (const id of this.names.keys()) if (!state.endpoints.has(id)) this.names.delete(id);
    if (guarded.length === 0) return [];
    await this.learnNames(new Set(guarded.filter((g) => !this.names.has(g.endpoint.id)).map((g) => g.endpoint.networkId)));
    const ofports = new Map((await ovs.snapshot()).ports.map((p) => [p.name, p.ofport]));
    const bridges = [...new Set(guarded.map((g) => g.port.bridge))];
    // A bridge that cannot be read (gone meanwhile) counts nothing this time.
    const packets = new Map(await Promise.all(bridges.map(async (b) => [b, await ovs.flowPackets(b).catch(() => new Map<string, number>())] as const)));
    const out: GuardDrops[] = [];
    for (const { endpoint, port, guard } of guarded) {
      const ofport = ofports.get(port.name);
      if (!ofport || ofport < 0) continue;
      const counts = packets.get(port.bridge)!;
      const byReason = new Map<DropReason, number>();
      for (const flow of portFlows(port.bridge, port.name, ofport, guard).flows) {
        if (flow.reason) byReason.set(flow.reason, (byReason.get(flow.reason) ?? 0) + (counts.get(flow.cookie) ?? 0));
      }
      for (const [reason, n] of byReason) {
        out.push({ networkId: endpoint.networkId, endpointId: endpoint.id, container: this.names.get(endpoint.id), port: port.name, reason, packets: n });
      }
    }
    return out;
  }

  private async learnNames(networks: ReadonlySet<string>): Promise<void> {
    const docker = this.o.docker;
    if (!docker) return;
    for (const networkId of networks) {
      const names = await docker.containerNames(networkId).catch(() => undefined);
      for (const [endpointId, name] of names ?? []) this.names.set(endpointId, name);
    }
  }
}
