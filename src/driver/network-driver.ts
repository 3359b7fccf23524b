/**
 * The NetworkDriver: one object for the HTTP app and the reconciler, whose
 * verbs live by group in driver/network/ (networks, endpoints, join and
 * leave, repair), the way libnetwork's drivers keep *_network, *_endpoint and
 * *_joinleave. Backends behind driver/backend.ts make each kind of network.
 */
import { badRequest, errorMessage, isPluginError } from '../errors.js';
import { type Faults, noFaults } from '../faults.js';
import type { Drift, OvnPicture } from '../domain/drift.js';
import { OVN_SETTING_HINT } from '../domain/options.js';
import type { NetworkRecord } from '../domain/records.js';
import { isSwarmId } from '../domain/names.js';
import { type Refusals, forgetOldRefusals, keepRefusal, refusalDrift } from '../domain/swarm.js';
import type { Logger } from '../log.js';
import type { CreateEndpointRequest, CreateEndpointResponse, CreateNetworkRequest, EndpointRef, JoinRequest, JoinResponse, ProgramRequest } from '../protocol/network.js';
import { BridgeBackend } from './bridge-backend.js';
import type { LocalHost } from './host.js';
import type { OvnBackend } from './ovn-backend.js';
import type { ForgetReport } from './ovn-forget.js';
import { KeyedMutex } from './locks.js';
import type { NetworkContext } from './network/context.js';
import { createEndpoint, deleteEndpoint } from './network/endpoints.js';
import { endpointOperInfo, join, leave } from './network/joinleave.js';
import { programExternalConnectivity, revokeExternalConnectivity } from './network/published.js';
import { abandonCreate, createNetwork, deleteNetwork, setPeers } from './network/networks.js';
import { type ConvergeOptions, type RepairResult, converge, readDrift } from './network/repair.js';
import { SparePairs } from './spares.js';
import type { State } from './state.js';

export interface NetworkDriverOptions {
  state: State;
  host: LocalHost;
  /** The backend of OVN networks, when OVN mode is on. */
  ovn?: OvnBackend;
  /** Told about requests refused because another network or endpoint holds their pool or address. */
  ipam: { shieldFromRollback(poolId: string, address?: string): void };
  defaults: { bridge: string; mtu: number; ovn?: { bridge: string } };
  log: Logger;
  /** Test-only crash points (OVSNET_FAULT). */
  faults?: Faults;
  /** Veth pairs kept made ahead of need per shape of network; 0 (the default) makes none. */
  sparePairs?: number;
  /** How long after the last start spares are made again (default 250 ms). */
  spareRefillDelayMs?: number;
  /** How long after DeleteEndpoint's answer its devices start to go (default RETIRE_DELAY_MS). */
  retireDelayMs?: number;
}

export class NetworkDriver {
  private readonly ctx: NetworkContext;
  /** Networks whose DeleteNetwork is under way: their spares go first, and are not made again meanwhile. */
  private readonly deleting = new Set<string>();
  /** Swarm networks this host refused to make when a task came, by network id (shown by doctor while swarm tries). */
  private readonly refusals: Refusals = new Map();

  constructor(o: NetworkDriverOptions) {
    this.ctx = {
      state: o.state,
      host: o.host,
      bridge: new BridgeBackend({ host: o.host, state: o.state, defaults: o.defaults, log: o.log }),
      ovn: o.ovn,
      ipam: o.ipam,
      locks: new KeyedMutex(),
      spares: new SparePairs({ links: o.host.links, ovs: o.host.ovs, size: o.sparePairs ?? 0, refillDelayMs: o.spareRefillDelayMs ?? 250, retireDelayMs: o.retireDelayMs, log: o.log }),
      devices: new Map(),
      devicesDoneAt: new Map(),
      defaults: o.defaults,
      log: o.log,
      faults: o.faults ?? noFaults,
    };
    // The pool holds what the process made outside the records: spares, and pairs of endpoints being deleted.
    o.host.retire = (pair, first) => this.ctx.spares.retire(pair, first);
  }

  /**
   * Each host keeps its own state (data scope local), and its networks reach other hosts (a VLAN is the same
   * VLAN on every host, an overlay or OVN switch spans them): connectivity scope global. Swarm reads the pair
   * as a node-local driver whose `--scope swarm` networks it leaves to each node's plugin (no IPAM on the
   * manager), and gossips service and task names across nodes only for a global connectivity scope. A network
   * that is not of `--scope swarm` is unaffected.
   */
  capabilities() {
    return { Scope: 'local' as const, ConnectivityScope: 'global' as const };
  }

  async createNetwork(req: CreateNetworkRequest): Promise<void> {
    try {
      await createNetwork(this.ctx, req);
    } catch (err) {
      // A swarm network is made on a node only when a task comes, and a refusal there fails only that task
      // (swarm places it elsewhere): doctor keeps saying it while swarm keeps trying.
      if (isPluginError(err) && isSwarmId(req.networkId)) keepRefusal(this.refusals, req.networkId, errorMessage(err), Date.now());
      throw err;
    }
    this.refusals.delete(req.networkId);
    void this.wantSpares();
  }

  async deleteNetwork(networkId: string): Promise<void> {
    // The last network of its shape takes its spares with it, before its bridge is removed: their ports are
    // on it. Until the deletion is over no one else asks for spares of it either. Should it fail, the next
    // fill makes them again.
    this.deleting.add(networkId);
    try {
      await this.wantSpares();
      await deleteNetwork(this.ctx, networkId);
    } finally {
      this.deleting.delete(networkId);
      await this.wantSpares();
    }
  }

  createEndpoint(req: CreateEndpointRequest): Promise<CreateEndpointResponse> {
    return createEndpoint(this.ctx, req);
  }

  deleteEndpoint(ref: EndpointRef): Promise<void> {
    return deleteEndpoint(this.ctx, ref);
  }

  join(req: JoinRequest): Promise<JoinResponse> {
    return join(this.ctx, req);
  }

  leave(ref: EndpointRef): Promise<void> {
    return leave(this.ctx, ref);
  }

  programExternalConnectivity(req: ProgramRequest): Promise<Record<string, never>> {
    return programExternalConnectivity(this.ctx, req);
  }

  revokeExternalConnectivity(ref: EndpointRef): Promise<Record<string, never>> {
    return revokeExternalConnectivity(this.ctx, ref);
  }

  endpointOperInfo(ref: EndpointRef): { Value: Record<string, unknown> } {
    return endpointOperInfo(this.ctx, ref);
  }

  /** Changes an overlay's peers (`ovsnet peers`). */
  async setPeers(networkId: string, peers: readonly string[]): Promise<NetworkRecord> {
    const record = await setPeers(this.ctx, networkId, peers);
    void this.wantSpares(); // its MTU may have changed
    return record;
  }

  /** The spare veth pairs ready now (for the state view). */
  spares(): Array<{ host: string; peer: string }> {
    return this.ctx.spares.list();
  }

  /** Whether spares are being made or deleted now, or due to be. */
  sparesBusy(): boolean {
    return !this.ctx.spares.quiet();
  }

  /** Waits until the devices of endpoints deleted so far are gone (their deletion ends after the answer), or given up. */
  retired(): Promise<void> {
    return this.ctx.spares.retired();
  }

  /** Deletes the spare veth pairs (the plugin is stopping). */
  stopSpares(): Promise<void> {
    return this.ctx.spares.stop();
  }

  /** Spares for the shapes of the networks there are now (but those being deleted), and none for others. */
  private wantSpares(): Promise<void> {
    return this.ctx.spares.want([...this.ctx.state.networks.values()].filter((n) => !this.deleting.has(n.id)));
  }

  // ---- for the reconciler ----

  /** Undoes a network whose creation never finished; true when there was one. */
  abandonCreate(networkId: string): Promise<boolean> {
    return abandonCreate(this.ctx, networkId);
  }

  /** Repairs every difference between the records and the host (spares of a dead process included), then fills the spares. */
  async converge(options: ConvergeOptions): Promise<RepairResult[]> {
    const results = await converge(this.ctx, options);
    void this.wantSpares();
    return results;
  }

  /** `ovsnet ovn forget-host`: releases what a host gone for good held in the northbound database. */
  forgetOvnHost(chassis: string, options: { idleMs?: number }): Promise<ForgetReport> {
    if (!this.ctx.ovn) throw badRequest('OvnOff', `OVN mode is off on this host: ${OVN_SETTING_HINT}`);
    return this.ctx.ovn.forgetHost(chassis, options);
  }

  /** Which hosts use each OVN network (for `ovsnet networks`); undefined when OVN is off or cannot be asked. */
  ovnHosts(): Promise<Record<string, string[]> | undefined> {
    return this.ctx.ovn ? this.ctx.ovn.hostsOf() : Promise.resolve(undefined);
  }

  /** Every host's logical ports on this host's OVN networks and the routers' active gateways (for `ovsnet graph`); undefined when OVN is off or cannot be asked. */
  ovnPicture(): Promise<OvnPicture | undefined> {
    return this.ctx.ovn ? this.ctx.ovn.picture() : Promise.resolve(undefined);
  }

  /** What differs, changing nothing. */
  async drift(options: ConvergeOptions): Promise<Drift[]> {
    const drift = await readDrift(this.ctx.host, () => this.ctx.state.records(), { ...options, ovn: this.ctx.ovn, held: () => this.ctx.spares.names() });
    forgetOldRefusals(this.refusals, options.now);
    return [...drift, ...refusalDrift(this.refusals, options.now)];
  }
}
