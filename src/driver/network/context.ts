/**
 * What the network driver's verbs share, passed to each explicitly: the
 * records, the backends, the locks, device work in flight, and the link to
 * IPAM for requests Docker will roll back.
 */
import { notFound } from '../../errors.js';
import type { Faults } from '../../faults.js';
import type { NetworkSpec } from '../../domain/options.js';
import type { EndpointRecord, NetworkRecord } from '../../domain/records.js';
import type { Logger } from '../../log.js';
import type { NetworkBackend } from '../backend.js';
import { badRequest } from '../../errors.js';
import { OVN_SETTING_HINT } from '../../domain/options.js';
import type { BridgeBackend } from '../bridge-backend.js';
import type { OvnBackend } from '../ovn-backend.js';
import type { LocalHost } from '../host.js';
import type { KeyedMutex } from '../locks.js';
import type { SparePairs } from '../spares.js';
import type { State } from '../state.js';
import { short } from '../../domain/names.js';

export interface NetworkContext {
  readonly state: State;
  readonly host: LocalHost;
  /** The backend of networks on a local bridge (VLANs and overlays); it also checks peers. */
  readonly bridge: BridgeBackend;
  /** The backend of OVN networks, when OVN mode is on (OVSNET_OVN_NB). */
  readonly ovn: OvnBackend | undefined;
  /** Told about requests refused because another network or endpoint holds their pool or address. */
  readonly ipam: { shieldFromRollback(poolId: string, address?: string): void };
  readonly locks: KeyedMutex;
  /** Veth pairs made ahead of need: CreateEndpoint takes one when it can. */
  readonly spares: SparePairs;
  /** Device setup started at CreateEndpoint; Join (or DeleteEndpoint) waits for it. */
  readonly devices: Map<string, Promise<void>>;
  /**
   * When each endpoint's device setup was last over (performance.now()): a reconcile pass that observed the
   * host before that saw its port half made, and leaves it alone.
   */
  readonly devicesDoneAt: Map<string, number>;
  readonly defaults: { readonly bridge: string; readonly ovn?: { readonly bridge: string } };
  readonly log: Logger;
  /** Test-only crash points (OVSNET_FAULT). */
  readonly faults: Faults;
}

/** Create/DeleteNetwork, peer changes and host-wide repairs run one at a time. */
export const NETWORKS_LOCK = 'networks';

/** Calls on one endpoint run one after another. */
export const endpointLock = (endpointId: string) => `endpoint:${endpointId}`;

export function backendFor(ctx: NetworkContext, spec: NetworkSpec): NetworkBackend {
  if (spec.mode !== 'ovn') return ctx.bridge;
  if (!ctx.ovn) throw badRequest('OvnOff', `this network is an OVN network, and OVN mode is off on this host: ${OVN_SETTING_HINT}`);
  return ctx.ovn;
}

export function networkOf(ctx: NetworkContext, id: string): NetworkRecord {
  const network = ctx.state.networks.get(id);
  if (!network) throw notFound('UnknownNetwork', `network ${short(id)} is not known to the ovs plugin`);
  return network;
}

export function endpointOf(ctx: NetworkContext, id: string, networkId: string): EndpointRecord {
  const endpoint = ctx.state.endpoints.get(id);
  if (!endpoint || endpoint.networkId !== networkId) {
    throw notFound('UnknownEndpoint', `endpoint ${short(id)} is not known on network ${short(networkId)}`);
  }
  return endpoint;
}

export function elapsedMs(started: number): number {
  return Math.round((performance.now() - started) * 10) / 10;
}
