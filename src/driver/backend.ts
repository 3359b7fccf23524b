/**
 * The seam between the protocol verbs and what a kind of network is made of.
 * The verbs (driver/network/*) hold the records, the locks, the order of
 * record and work, and the answers to Docker; a backend knows how a network
 * of its kind is admitted, realised on the host (and, for a distributed kind,
 * in its control plane) and how an endpoint's devices are made.
 */
import type { ObservedHost } from '../domain/host.js';
import type { NetworkSpec } from '../domain/options.js';
import type { Datapath, EndpointRecord, NetworkRecord, OvnRecord, SubnetRecord } from '../domain/records.js';

export interface AdmitRequest {
  readonly networkId: string;
  readonly spec: NetworkSpec;
  readonly subnets: readonly SubnetRecord[];
  /** Every other network the plugin holds. */
  readonly others: readonly NetworkRecord[];
}

/** What the records of an admitted network carry beyond its request. */
export interface Admitted {
  readonly localTag: number | undefined;
  readonly mtu: number;
  readonly gatewayPort: string | undefined;
  readonly datapath: Datapath;
  /** The observation admission was decided on, reused by the realise that follows (observe once). */
  readonly observed: ObservedHost;
  /** Where an OVN network lives in the northbound database. */
  readonly ovn?: OvnRecord;
}

/** Progress marks inside realise, where tests may inject a crash. */
export type RealiseStep = 'bridge' | 'gateway' | 'switch';

export interface NetworkBackend {
  /** Looks at the host once, decides whether the network can live here and what it derives to; changes nothing. */
  admit(request: AdmitRequest): Promise<Admitted>;
  /** Brings the host in line with the network and the records; safe to repeat. */
  realise(network: NetworkRecord, options?: { observed?: ObservedHost; step?: (step: RealiseStep) => void }): Promise<void>;
  /** Removes what the network has on the host; the records no longer hold it. */
  unrealise(network: NetworkRecord): Promise<void>;
  /** Tells the network's control plane about a new endpoint (OVN: its logical port's MAC and addresses), before Docker hears back. */
  attachEndpoint(network: NetworkRecord, endpoint: EndpointRecord): Promise<void>;
  /** Makes an endpoint's devices (its veth pair and port); Join waits for them. */
  prepareEndpoint(network: NetworkRecord, endpoint: EndpointRecord): Promise<void>;
  /** Removes an endpoint's devices (with what guards its port, when its network is known); tolerates what is already gone. */
  teardownEndpoint(endpoint: Pick<EndpointRecord, 'id' | 'hostIf' | 'peerIf' | 'rate'>, network?: NetworkRecord): Promise<void>;
}
