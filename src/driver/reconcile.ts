/**
 * Reconciliation: making the store, Open vSwitch, the kernel and Docker agree
 * again after whatever happened while nobody was looking (a crash in the
 * middle of a call, a restart of ovs-vswitchd, a reboot, a call Docker made
 * while the plugin was down).
 *
 * The store is the plugin's intent; everything on the host is derived from it.
 * - repair(): local only, and what runs at start and when a watcher fires.
 *   Networks whose CreateNetwork never finished are undone; every other
 *   network is realised again (bridge, gateway port and addresses, tunnels,
 *   uplink, firewall); OVS ports and veths that no record accounts for are
 *   removed; endpoint ports OVSDB lost are added back.
 * - reconcile(): repair, then compare with Docker. Networks and endpoints
 *   Docker no longer has are removed, as are pools and addresses that no
 *   Docker network holds. Only records older than the grace period are
 *   touched, so an operation still in flight is never mistaken for debris.
 *
 * It never runs inside a driver call, and it changes state only through the
 * drivers' own locked operations, so it cannot race them. Every change is
 * logged with the reason.
 */
import { errorMessage } from '../errors.js';
import { formatCidr, parseCidr } from '../domain/cidr.js';
import { ENDPOINT_KEY, NETWORK_KEY, PEER_KEY, ROLE_KEY, isHostVethName, isPeerVethName } from '../domain/names.js';
import type { Logger } from '../log.js';
import type { IpamDriver } from './ipam-driver.js';
import { isOwnAddressSpace } from './ipam-driver.js';
import type { NetworkDriver } from './network-driver.js';
import type { DockerView, Links, Ovs } from './ports.js';
import type { State } from './state.js';

export interface ReconcilerOptions {
  state: State;
  network: NetworkDriver;
  ipam: IpamDriver;
  ovs: Ovs;
  links: Links;
  /** Undefined when the plugin was told not to ask Docker (OVSNET_DOCKER=none). */
  docker: DockerView | undefined;
  graceMs: number;
  log: Logger;
  now?: () => number;
}

/** What one pass changed, by kind. */
export type Changes = Record<string, number>;

export class Reconciler {
  private running: Promise<Changes> | undefined;
  private pending: { reason: string; docker: boolean } | undefined;
  private timer: NodeJS.Timeout | undefined;
  private debounce: NodeJS.Timeout | undefined;
  private readonly now: () => number;
  /** Called after each pass with what it changed (metrics). */
  onPass: ((changes: Changes, withDocker: boolean) => void) | undefined;

  constructor(private readonly o: ReconcilerOptions) {
    this.now = o.now ?? Date.now;
  }

  /** Runs periodically from now on: a full reconcile every `intervalMs`. */
  start(intervalMs: number): void {
    this.timer = setInterval(() => void this.run('periodic', true), intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    if (this.debounce) clearTimeout(this.debounce);
  }

  /** Asks for a repair soon (coalescing bursts of events, e.g. a restarted ovs-vswitchd). */
  trigger(reason: string): void {
    if (this.debounce) clearTimeout(this.debounce);
    this.debounce = setTimeout(() => void this.run(reason, false), 300);
    this.debounce.unref();
  }

  /** Runs a pass now, or after the one in progress; passes never overlap. */
  async run(reason: string, withDocker: boolean): Promise<Changes> {
    if (this.running) {
      const merged = { reason, docker: withDocker || (this.pending?.docker ?? false) };
      this.pending = merged;
      await this.running.catch(() => {});
      if (this.pending === merged) {
        this.pending = undefined;
        return this.run(merged.reason, merged.docker);
      }
      return {};
    }
    this.running = (withDocker ? this.reconcile(reason) : this.repair(reason))
      .then((changes) => {
        this.onPass?.(changes, withDocker);
        return changes;
      })
      // A pass that cannot finish (OVSDB down, say) is logged; the next trigger or period tries again.
      .catch((err) => {
        this.o.log.warn('reconcile pass did not finish', { reason, error: errorMessage(err) });
        return {};
      })
      .finally(() => (this.running = undefined));
    return this.running;
  }

  /** Local repair: records against Open vSwitch and the kernel. */
  async repair(reason: string): Promise<Changes> {
    const { state, network, ovs, links } = this.o;
    const changes: Changes = {};
    const count = (kind: string) => (changes[kind] = (changes[kind] ?? 0) + 1);
    const log = this.o.log.child({ reconcile: reason });

    for (const record of [...state.networks.values()]) {
      if (record.state !== 'creating') continue;
      await this.attempt(log, 'undo half-created network', { networkId: record.id }, async () => {
        await network.abandonCreate(record.id);
        log.info('reconcile: undid a network whose creation never finished', { networkId: record.id });
        count('networksUndone');
      });
    }

    for (const record of [...state.networks.values()]) {
      await this.attempt(log, 'restore network', { networkId: record.id }, () => network.restore(record.id));
    }

    const owned = await ovs.listOwnedPorts();
    for (const port of owned) {
      const role = port.externalIds[ROLE_KEY];
      const net = state.networks.get(port.externalIds[NETWORK_KEY] ?? '');
      let why: string | undefined;
      if (role === 'endpoint' && !state.endpoints.has(port.externalIds[ENDPOINT_KEY] ?? '')) why = 'its endpoint is unknown';
      if (role === 'gateway' && net?.gatewayPort !== port.name) why = 'its network is unknown';
      if (role === 'tunnel' && !net?.spec.peers.includes(port.externalIds[PEER_KEY] ?? '')) why = 'its network or peer is unknown';
      if (role === 'uplink' && ![...state.networks.values()].some((n) => n.spec.uplink === port.name && n.spec.bridge === port.bridge)) {
        why = 'no network uses it';
      }
      if (!why) continue;
      await this.attempt(log, 'remove orphan port', { port: port.name }, async () => {
        await ovs.deletePort(port.name);
        if (role === 'endpoint') await links.deleteLink(port.name);
        log.info('reconcile: removed an OVS port no record accounts for', { port: port.name, role, why });
        count('portsRemoved');
      });
    }

    const devices = new Set<string>();
    for (const e of state.endpoints.values()) devices.add(e.hostIf).add(e.peerIf);
    const present = await links.list();
    for (const link of present) {
      if (link.kind !== 'veth' || !(isHostVethName(link.name) || isPeerVethName(link.name)) || devices.has(link.name)) continue;
      // Look again: an endpoint created while the links were listed has its record by now.
      if ([...state.endpoints.values()].some((e) => e.hostIf === link.name || e.peerIf === link.name)) continue;
      await this.attempt(log, 'remove orphan veth', { link: link.name }, async () => {
        if (await links.deleteLink(link.name)) {
          log.info('reconcile: removed a veth no endpoint accounts for', { link: link.name });
          count('vethsRemoved');
        }
      });
    }

    const portNames = new Set(owned.map((p) => p.name));
    const linkNames = new Set(present.map((l) => l.name));
    for (const endpoint of [...state.endpoints.values()]) {
      if (portNames.has(endpoint.hostIf) || !linkNames.has(endpoint.hostIf)) continue;
      await this.attempt(log, 'restore endpoint port', { endpointId: endpoint.id }, async () => {
        if (await network.repairEndpointPort(endpoint.id)) {
          log.info('reconcile: added back the OVS port of an endpoint', { endpointId: endpoint.id, port: endpoint.hostIf });
          count('portsRestored');
        }
      });
    }
    return changes;
  }

  /** Repair, then remove what Docker no longer has. */
  async reconcile(reason: string): Promise<Changes> {
    const changes = await this.repair(reason);
    if (!this.o.docker) return changes;
    const { state, network, ipam } = this.o;
    const count = (kind: string) => (changes[kind] = (changes[kind] ?? 0) + 1);
    const log = this.o.log.child({ reconcile: reason });
    let docker;
    try {
      docker = await this.o.docker.networks();
    } catch (err) {
      log.debug('reconcile: Docker cannot be asked now; only local repairs were made', { error: errorMessage(err) });
      return changes;
    }
    const old = (createdAt: string) => this.now() - Date.parse(createdAt) > this.o.graceMs;
    const byId = new Map(docker.map((n) => [n.id, n]));

    for (const record of [...state.networks.values()]) {
      if (byId.has(record.id) || !old(record.createdAt)) continue;
      await this.attempt(log, 'remove network unknown to Docker', { networkId: record.id }, async () => {
        await network.deleteNetwork(record.id);
        log.info('reconcile: removed a network Docker no longer has', { networkId: record.id });
        count('networksRemoved');
      });
    }

    for (const endpoint of [...state.endpoints.values()]) {
      const dockerNetwork = byId.get(endpoint.networkId);
      if (!dockerNetwork || dockerNetwork.endpoints.has(endpoint.id) || !old(endpoint.createdAt)) continue;
      await this.attempt(log, 'remove endpoint unknown to Docker', { endpointId: endpoint.id }, async () => {
        await network.deleteEndpoint({ networkId: endpoint.networkId, endpointId: endpoint.id });
        log.info('reconcile: removed an endpoint Docker no longer has', { networkId: endpoint.networkId, endpointId: endpoint.id });
        count('endpointsRemoved');
      });
    }

    // Pools and addresses: what some Docker network with that subnet holds, plus gateways (released with their pool).
    const holders = new Map<string, { addresses: Set<string> }>();
    for (const n of docker) {
      for (const subnet of n.subnets) {
        const cidr = parseCidr(subnet);
        if (!cidr) continue;
        const key = formatCidr(cidr);
        const entry = holders.get(key) ?? { addresses: new Set<string>() };
        for (const a of n.auxAddresses) entry.addresses.add(a);
        for (const e of n.endpoints.values()) for (const a of e.addresses) entry.addresses.add(a);
        holders.set(key, entry);
      }
    }
    for (const pool of [...state.pools.values()]) {
      if (!isOwnAddressSpace(pool.addressSpace) || !old(pool.createdAt)) continue;
      const holder = holders.get(pool.pool);
      if (!holder) {
        await this.attempt(log, 'release pool unknown to Docker', { poolId: pool.id }, async () => {
          await ipam.releasePool(pool.id);
          log.info('reconcile: released a pool no Docker network uses', { poolId: pool.id });
          count('poolsReleased');
        });
        continue;
      }
      for (const address of [...state.addressesOf(pool.id).values()]) {
        if (address.kind === 'gateway' || holder.addresses.has(address.address) || !old(address.createdAt)) continue;
        await this.attempt(log, 'release address unknown to Docker', { poolId: pool.id, address: address.address }, async () => {
          await ipam.releaseAddress({ poolId: pool.id, address: address.address });
          log.info('reconcile: released an address no container or aux address holds', { poolId: pool.id, address: address.address });
          count('addressesReleased');
        });
      }
    }
    return changes;
  }

  private async attempt(log: Logger, what: string, fields: Record<string, unknown>, work: () => Promise<unknown>): Promise<void> {
    try {
      await work();
    } catch (err) {
      log.error(`reconcile: could not ${what}`, { ...fields, error: errorMessage(err) });
    }
  }
}
