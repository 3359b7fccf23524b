/**
 * The NetworkDriver: one object for the HTTP app and the reconciler, whose
 * verbs live by group in driver/network/ (networks, endpoints, join and
 * leave, repair), the way libnetwork's drivers keep *_network, *_endpoint and
 * *_joinleave. Backends behind driver/backend.ts make each kind of network.
 */
import { type Faults, noFaults } from '../faults.js';
import type { Drift } from '../domain/drift.js';
import type { NetworkRecord } from '../domain/records.js';
import type { Logger } from '../log.js';
import type { CreateEndpointRequest, CreateEndpointResponse, CreateNetworkRequest, EndpointRef, JoinRequest, JoinResponse, ProgramRequest } from '../protocol/network.js';
import { BridgeBackend } from './bridge-backend.js';
import type { LocalHost } from './host.js';
import type { OvnBackend } from './ovn-backend.js';
import { KeyedMutex } from './locks.js';
import type { NetworkContext } from './network/context.js';
import { createEndpoint, deleteEndpoint } from './network/endpoints.js';
import { endpointOperInfo, join, leave } from './network/joinleave.js';
import { programExternalConnectivity, revokeExternalConnectivity } from './network/published.js';
import { abandonCreate, createNetwork, deleteNetwork, setPeers } from './network/networks.js';
import { type ConvergeOptions, type RepairResult, converge, readDrift } from './network/repair.js';
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
}

export class NetworkDriver {
  private readonly ctx: NetworkContext;

  constructor(o: NetworkDriverOptions) {
    this.ctx = {
      state: o.state,
      host: o.host,
      bridge: new BridgeBackend({ host: o.host, state: o.state, defaults: o.defaults, log: o.log }),
      ovn: o.ovn,
      ipam: o.ipam,
      locks: new KeyedMutex(),
      devices: new Map(),
      defaults: o.defaults,
      log: o.log,
      faults: o.faults ?? noFaults,
    };
  }

  capabilities() {
    return { Scope: 'local' as const, ConnectivityScope: 'local' as const };
  }

  createNetwork(req: CreateNetworkRequest): Promise<void> {
    return createNetwork(this.ctx, req);
  }

  deleteNetwork(networkId: string): Promise<void> {
    return deleteNetwork(this.ctx, networkId);
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
  setPeers(networkId: string, peers: readonly string[]): Promise<NetworkRecord> {
    return setPeers(this.ctx, networkId, peers);
  }

  // ---- for the reconciler ----

  /** Undoes a network whose creation never finished; true when there was one. */
  abandonCreate(networkId: string): Promise<boolean> {
    return abandonCreate(this.ctx, networkId);
  }

  /** Repairs every difference between the records and the host. */
  converge(options: ConvergeOptions): Promise<RepairResult[]> {
    return converge(this.ctx, options);
  }

  /** Which hosts use each OVN network (for `ovsnet networks`); undefined when OVN is off or cannot be asked. */
  ovnHosts(): Promise<Record<string, string[]> | undefined> {
    return this.ctx.ovn ? this.ctx.ovn.hostsOf() : Promise.resolve(undefined);
  }

  /** What differs, changing nothing. */
  drift(options: ConvergeOptions): Promise<Drift[]> {
    return readDrift(this.ctx.host, () => this.ctx.state.records(), { ...options, ovn: this.ctx.ovn });
  }
}
