/**
 * Drift: a way the host or Docker differs from the plugin's records, as data
 * with the command that fixes it. This file holds the type and the comparison
 * of the records with Docker; host-diff.ts compares them with the host and
 * puts the two together.
 */
import { formatCidr, parseCidr } from './cidr.js';
import { type AddressRecord, type EndpointRecord, type NetworkRecord, type PoolRecord, isOwnAddressSpace } from './records.js';
import { short } from './names.js';

export type DriftKind =
  | 'network-creating'
  | 'bridge-missing'
  | 'orphan-bridge'
  | 'gateway-port-missing'
  | 'gateway-address-missing'
  | 'gateway-address-extra'
  | 'gateway-link-differs'
  | 'tunnel-port-missing'
  | 'uplink-missing'
  | 'endpoint-port-missing'
  | 'endpoint-veth-missing'
  | 'port-differs'
  | 'port-error'
  | 'orphan-port'
  | 'orphan-veth'
  | 'port-flows-differ'
  | 'orphan-flows'
  | 'bridge-flows-differ'
  | 'bridge-fails-open'
  | 'gateway-accepts-ra'
  | 'veth-open-to-host'
  | 'firewall-drift'
  | 'ip-forward-off'
  | 'network-unknown-to-docker'
  | 'endpoint-unknown-to-docker'
  | 'pool-unused'
  | 'address-unused'
  | 'endpoint-unknown-to-plugin'
  | 'network-unknown-to-plugin'
  | 'plugin-not-running'
  | 'ovn-unreachable'
  | 'ovn-switch-missing'
  | 'ovn-host-not-listed'
  | 'ovn-port-missing'
  | 'ovn-address-conflict'
  | 'ovn-port-differs'
  | 'ovn-port-orphan'
  | 'ovn-switch-unused-here'
  | 'ovn-port-not-installed'
  | 'ovn-router-missing'
  | 'ovn-router-differs'
  | 'ovn-guard-differs'
  | 'ovn-host-conflict'
  | 'ovn-host-gone'
  | 'ovn-config-differs'
  | 'swarm-network-refused';

export interface Drift {
  kind: DriftKind;
  /** What it is about: a port, a link, a network or endpoint id, a pool, an address. */
  subject: string;
  /** One sentence for a person. */
  detail: string;
  /** A command that fixes it. */
  fix: string;
  networkId?: string;
  endpointId?: string;
  poolId?: string;
  address?: string;
  port?: string;
  role?: string;
}

export interface Records {
  readonly networks: readonly NetworkRecord[];
  readonly endpoints: readonly EndpointRecord[];
  readonly pools: readonly PoolRecord[];
  readonly addresses: readonly AddressRecord[];
}

/**
 * What the plugin serves at GET /ovsnet/state, for the `ovsnet` command and the tests: its records, the spare
 * veth pairs it holds (no records, listed so that audits can account for every device), whether the pool is
 * busy, and (asked with ?ovn=1) which hosts use each OVN network.
 */
export interface StateView extends Records {
  readonly spares: ReadonlyArray<{ readonly host: string; readonly peer: string }>;
  readonly sparesBusy: boolean;
  readonly ovnHosts?: Readonly<Record<string, string[]>>;
  /** (?ovn=1&picture=1) What the northbound and southbound databases say of this host's OVN networks, for `ovsnet graph`. */
  readonly ovn?: OvnPicture;
}

/** Every host's logical ports on this host's OVN networks, and where each router's way out is active. */
export interface OvnPicture {
  /** The logical ports that hold addresses (containers, and addresses claimed for them), every host's, by network id. */
  readonly ports: Readonly<Record<string, ReadonlyArray<{ readonly port: string; readonly address: string; readonly host: string }>>>;
  /** By router name: its gateway chassis (highest priority first) and the one its gateway port is bound to now (null: none, or unknown). */
  readonly gateways: Readonly<Record<string, { readonly chassis: ReadonlyArray<{ readonly chassis: string; readonly priority: number }>; readonly active: { readonly chassis: string; readonly hostname: string } | null }>>;
}

/** A config-only network as Docker shows it: what swarm networks made `--config-from` it are made with. */
export interface ConfigOnlyNetwork {
  /** Its `-o` options. */
  readonly options: Readonly<Record<string, string>>;
  readonly ipv6: boolean;
  /** Its IPAM configuration: a subnet, and the gateway, ip-range and aux addresses when given. */
  readonly subnets: ReadonlyArray<{ readonly pool: string; readonly gateway?: string; readonly range?: string; readonly aux: Readonly<Record<string, string>> }>;
}

/** A Docker network as the reconciler sees it. */
export interface DockerNetwork {
  readonly id: string;
  readonly name: string;
  /** Subnets of its IPAM configuration, as Docker shows them. */
  readonly subnets: readonly string[];
  readonly auxAddresses: readonly string[];
  /** endpoint id -> the addresses Docker holds for it (no prefix length) */
  readonly endpoints: ReadonlyMap<string, { readonly addresses: readonly string[] }>;
  /** A config-only network's settings (`docker network create --config-only`), which swarm networks are made from. */
  readonly configOnly?: ConfigOnlyNetwork;
}

export const REPAIR = 'ovsnet reconcile';

/**
 * Records Docker no longer holds (once older than the grace period), and endpoints only Docker knows. `now`
 * is when Docker was asked: what changed after that, or shortly before, may not show in its answer yet.
 */
export function dockerDrift(records: Records, docker: readonly DockerNetwork[], options: { now: number; graceMs: number }): Drift[] {
  const drift: Drift[] = [];
  const old = (createdAt: string) => options.now - Date.parse(createdAt) >= options.graceMs;
  const networks = new Map(records.networks.map((n) => [n.id, n]));
  const endpoints = new Map(records.endpoints.map((e) => [e.id, e]));
  const byId = new Map(docker.map((n) => [n.id, n]));

  for (const n of records.networks) {
    if (byId.has(n.id) || !old(n.createdAt)) continue;
    drift.push({ kind: 'network-unknown-to-docker', subject: short(n.id), networkId: n.id, detail: `network ${short(n.id)} is not in Docker any more`, fix: REPAIR });
  }
  for (const e of records.endpoints) {
    const network = byId.get(e.networkId);
    // Docker lists an endpoint once its container is up, a while after Join (seconds, in a burst of starts).
    if (!network || network.endpoints.has(e.id) || !old(e.joinedAt ?? e.createdAt)) continue;
    drift.push({ kind: 'endpoint-unknown-to-docker', subject: short(e.id), endpointId: e.id, networkId: e.networkId, detail: `endpoint ${short(e.id)} is not in Docker's network ${network.name} any more`, fix: REPAIR });
  }
  for (const network of docker) {
    if (!networks.has(network.id)) continue;
    for (const id of network.endpoints.keys()) {
      if (endpoints.has(id)) continue;
      drift.push({
        kind: 'endpoint-unknown-to-plugin',
        subject: short(id),
        endpointId: id,
        networkId: network.id,
        detail: `Docker has endpoint ${short(id)} on ${network.name}, which the plugin does not know`,
        fix: `docker network disconnect -f ${network.name} <its container>`,
      });
    }
  }

  const holders = new Map<string, Set<string>>();
  for (const n of docker) {
    for (const subnet of n.subnets) {
      const cidr = parseCidr(subnet);
      if (!cidr) continue;
      const held = holders.get(formatCidr(cidr)) ?? new Set<string>();
      for (const a of n.auxAddresses) held.add(a);
      for (const e of n.endpoints.values()) for (const a of e.addresses) held.add(a);
      holders.set(formatCidr(cidr), held);
    }
  }
  const addressesByPool = new Map<string, AddressRecord[]>();
  for (const a of records.addresses) {
    // Appended in place: copying the list for every address was quadratic (minutes for a pool of 60 000).
    const list = addressesByPool.get(a.poolId);
    if (list) list.push(a);
    else addressesByPool.set(a.poolId, [a]);
  }
  const ofNetworks = new Set(records.networks.flatMap((n) => [...n.ipv4, ...n.ipv6].map((s) => s.pool)));
  const ofEndpoints = new Set(records.endpoints.flatMap((e) => [e.address, e.addressIpv6].filter(Boolean).map((a) => a.split('/')[0]!)));
  for (const pool of records.pools) {
    if (!isOwnAddressSpace(pool.addressSpace)) continue;
    const held = holders.get(pool.pool);
    if (!held) {
      // A pool of a network the plugin holds goes with that network (a later pass), never before it: Docker
      // lists a network only once its creation is over, which can take longer than the grace period.
      if (old(pool.createdAt) && !ofNetworks.has(pool.pool)) drift.push({ kind: 'pool-unused', subject: pool.id, poolId: pool.id, detail: `pool ${pool.pool} is used by no Docker network`, fix: REPAIR });
      continue;
    }
    for (const a of addressesByPool.get(pool.id) ?? []) {
      // An address an endpoint of the plugin's holds goes with that endpoint (above), never before it.
      if (a.kind === 'gateway' || held.has(a.address) || ofEndpoints.has(a.address) || !old(a.createdAt)) continue;
      drift.push({ kind: 'address-unused', subject: a.address, poolId: pool.id, address: a.address, detail: `address ${a.address} of pool ${pool.pool} is held for no container or aux address`, fix: REPAIR });
    }
  }
  return drift;
}
