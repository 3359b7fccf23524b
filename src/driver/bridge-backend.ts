/**
 * The backend of networks that live on a local OVS bridge: a VLAN of the
 * bridge (with its uplink trunk), or an overlay extended to each peer by a
 * VXLAN or GRE tunnel port. When the gateway lives on the host, an OVS
 * internal port on the segment holds its addresses, with the firewall rules
 * of its mode. Every step is observe, diff against the desired host, apply.
 */
import { checkBridgeName, checkConflicts, checkUplink, chooseTag } from '../domain/admission.js';
import { REPAIR_ORDER } from '../domain/repairs.js';
import type { ObservedHost } from '../domain/host.js';
import { type MtuLimit, type PeerPath, networkMtu, tunnelPathMtu } from '../domain/mtu.js';
import { gatewayPortName } from '../domain/names.js';
import { type NetworkSpec, type TunnelSpec, hasHostGateway, isOverlay } from '../domain/options.js';
import type { Datapath, EndpointRecord, NetworkRecord } from '../domain/records.js';
import type { Logger } from '../log.js';
import type { AdmitRequest, Admitted, NetworkBackend, RealiseStep } from './backend.js';
import { LocalHost } from './host.js';
import type { State } from './state.js';

export interface BridgeBackendOptions {
  host: LocalHost;
  state: State;
  defaults: { mtu: number };
  log: Logger;
}

/** The last kind of repair of each step of realise. */
const STEPS: ReadonlyArray<readonly [RealiseStep, number]> = [
  ['bridge', REPAIR_ORDER.indexOf('add-bridge')],
  ['gateway', REPAIR_ORDER.indexOf('configure-gateway')],
];

export class BridgeBackend implements NetworkBackend {
  constructor(private readonly o: BridgeBackendOptions) {}

  async admit({ networkId, spec, subnets, others }: AdmitRequest): Promise<Admitted> {
    const { host, defaults } = this.o;
    const localTag = chooseTag(spec, others);
    checkConflicts(networkId, spec, localTag, subnets, others);
    const observed = await host.observe();
    checkBridgeName(spec.bridge, observed);
    if (spec.mode === 'vlan' && spec.uplink) checkUplink({ ...spec, uplink: spec.uplink }, observed, await host.links.defaultRouteDevices());
    const datapath = await this.datapathOf(spec.bridge, observed);
    const mtu = networkMtu(spec, await this.mtuLimit(spec, observed, datapath), defaults.mtu);
    return { localTag, mtu, gatewayPort: hasHostGateway(spec) ? gatewayPortName(networkId) : undefined, datapath, observed };
  }

  /** The largest container MTU tunnels to `peers` carry (and each peer checked), for changing an overlay's peers. */
  async peerLimit(spec: TunnelSpec, peers: readonly string[], datapath: Datapath | undefined): Promise<MtuLimit> {
    const observed = await this.o.host.observe({ firewall: false });
    return tunnelPathMtu(spec, await this.peerPaths(peers, observed), {
      datapath: datapath ?? (await this.datapathOf(spec.bridge, observed)),
      defaultMtu: this.o.defaults.mtu,
    });
  }

  async realise(network: NetworkRecord, options: { observed?: ObservedHost; step?: (step: RealiseStep) => void } = {}): Promise<void> {
    // A step is reached once every repair of its kind (and before) is done.
    const marks = [...STEPS];
    await this.o.host.convergeNetwork(network, () => this.o.state.records(), {
      observed: options.observed,
      before: (repair) => {
        while (marks.length > 0 && REPAIR_ORDER.indexOf(repair.type) > marks[0]![1]) {
          const [step] = marks.shift()!;
          options.step?.(step);
        }
      },
    });
    for (const [step] of marks) options.step?.(step);
  }

  async unrealise(network: NetworkRecord): Promise<void> {
    await this.o.host.convergeNetwork(network, () => this.o.state.records(), { without: true });
  }

  async attachEndpoint(): Promise<void> {
    // Nothing beyond this host knows about a bridge's endpoints.
  }

  prepareEndpoint(network: NetworkRecord, endpoint: EndpointRecord): Promise<void> {
    return this.o.host.makeEndpointDevices(network, endpoint);
  }

  teardownEndpoint(endpoint: Pick<EndpointRecord, 'id' | 'hostIf' | 'peerIf' | 'rate'>, network?: NetworkRecord): Promise<void> {
    const rated = !!network && network.spec.mode !== 'ovn' && !!(endpoint.rate ?? network.spec.rate);
    return this.o.host.removeEndpointDevices(endpoint, network, rated);
  }

  private async datapathOf(bridge: string, observed: ObservedHost): Promise<Datapath> {
    const existing = observed.bridges.get(bridge);
    if (existing) return existing.datapathType === 'netdev' ? 'netdev' : 'system';
    return this.o.host.datapath();
  }

  /** What caps the MTU: the tunnel path to the peers, or the uplink. */
  private async mtuLimit(spec: NetworkSpec, observed: ObservedHost, datapath: Datapath): Promise<MtuLimit | undefined> {
    if (isOverlay(spec)) {
      return tunnelPathMtu(spec, await this.peerPaths(spec.peers, observed), { datapath, defaultMtu: this.o.defaults.mtu });
    }
    if (spec.mode === 'vlan' && spec.uplink) return { max: observed.links.get(spec.uplink)!.mtu, why: `the MTU of uplink ${spec.uplink}` };
    return undefined;
  }

  private async peerPaths(peers: readonly string[], observed: ObservedHost): Promise<PeerPath[]> {
    return Promise.all(
      peers.map(async (peer) => {
        const route = await this.o.host.links.routeTo(peer);
        return {
          peer,
          route,
          devMtu: route ? observed.links.get(route.dev)?.mtu : undefined,
          devIsNetdevBridge: !!route && observed.bridges.get(route.dev)?.datapathType === 'netdev',
        };
      }),
    );
  }
}
