/**
 * Reconciliation: making the store, Open vSwitch, the kernel and Docker agree
 * again after whatever happened while nobody was looking (a crash in the
 * middle of a call, a restart of ovs-vswitchd, a reboot, a call Docker made
 * while the plugin was down).
 *
 * The store is the plugin's intent; everything on the host is derived from it.
 * A pass undoes networks whose CreateNetwork never finished, realises every
 * other network again (bridge, gateway port and addresses, tunnels, uplink,
 * firewall), then observes the host (and, in a full pass, Docker) and acts on
 * the drift `findDrift` reports: ports and veths no record accounts for are
 * removed, endpoint ports OVSDB lost are added back, and networks, endpoints,
 * pools and addresses Docker no longer holds are removed once older than the
 * grace period (an operation still in flight is never mistaken for debris).
 * `ovsnet doctor` shows the same drift without acting on it.
 *
 * It never runs inside a driver call, and it changes state only through the
 * drivers' own locked operations, so it cannot race them. Every change is
 * logged with the reason.
 */
import { errorMessage } from '../errors.js';
import { type Drift, findDrift } from '../domain/drift.js';
import { gatewayPortsOf } from '../domain/records.js';
import type { Logger } from '../log.js';
import type { IpamDriver } from './ipam-driver.js';
import type { NetworkDriver } from './network-driver.js';
import { observe } from './observe.js';
import type { DockerView, Firewall, Links, Ovs, Sysctl } from './ports.js';
import type { State } from './state.js';

export interface ReconcilerOptions {
  state: State;
  network: NetworkDriver;
  ipam: IpamDriver;
  ovs: Ovs;
  links: Links;
  firewall: Firewall;
  sysctl: Sysctl;
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

  /** Runs a pass now, or after the one in progress; passes never overlap, and never reject. */
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
    this.running = this.pass(reason, withDocker)
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

  /** What differs now, without changing anything (for `ovsnet doctor`). */
  async drift(withDocker: boolean): Promise<Drift[]> {
    const observed = await observe(this.o, this.gatewayPorts(), withDocker);
    return findDrift(this.records(), observed, { now: this.now(), graceMs: this.o.graceMs });
  }

  /** Local repair only (what runs at start and when a watcher fires). */
  repair(reason: string): Promise<Changes> {
    return this.pass(reason, false);
  }

  /** Repair, and remove what Docker no longer has. */
  reconcile(reason: string): Promise<Changes> {
    return this.pass(reason, true);
  }

  private async pass(reason: string, withDocker: boolean): Promise<Changes> {
    const { state, network } = this.o;
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

    // Observe first, read the records after: a device made meanwhile already has its record.
    const observed = await observe(this.o, this.gatewayPorts(), withDocker && this.o.docker !== undefined);
    const drift = findDrift(this.records(), observed, { now: this.now(), graceMs: this.o.graceMs });
    for (const item of drift) {
      const action = this.action(item);
      if (!action) continue;
      await this.attempt(log, action.what, { subject: item.subject }, async () => {
        if (await action.run()) {
          log.info(`reconcile: ${action.what}`, { networkId: item.networkId, endpointId: item.endpointId, port: item.port, poolId: item.poolId, address: item.address, why: item.detail });
          count(action.counter);
        }
      });
    }
    return changes;
  }

  /** The repair for a kind of drift; kinds without one are only reported (by `ovsnet doctor`). */
  private action(item: Drift): { what: string; counter: string; run: () => Promise<unknown> } | undefined {
    const { network, ipam, ovs, links, state } = this.o;
    switch (item.kind) {
      case 'orphan-port':
        return {
          what: 'removed an OVS port no record accounts for',
          counter: 'portsRemoved',
          run: async () => {
            await ovs.deletePort(item.port!);
            if (item.role === 'endpoint') await links.deleteLink(item.port!);
            return true;
          },
        };
      case 'orphan-veth':
        return {
          what: 'removed a veth no endpoint accounts for',
          counter: 'vethsRemoved',
          // Look again: an endpoint created since the records were read has its record by now.
          run: async () => ![...state.endpoints.values()].some((e) => e.hostIf === item.port || e.peerIf === item.port) && links.deleteLink(item.port!),
        };
      case 'endpoint-port-missing':
        return { what: 'added back the OVS port of an endpoint', counter: 'portsRestored', run: () => network.repairEndpointPort(item.endpointId!) };
      case 'network-unknown-to-docker':
        return { what: 'removed a network Docker no longer has', counter: 'networksRemoved', run: () => network.deleteNetwork(item.networkId!).then(() => true) };
      case 'endpoint-unknown-to-docker':
        return {
          what: 'removed an endpoint Docker no longer has',
          counter: 'endpointsRemoved',
          run: () => network.deleteEndpoint({ networkId: item.networkId!, endpointId: item.endpointId! }).then(() => true),
        };
      case 'pool-unused':
        return { what: 'released a pool no Docker network uses', counter: 'poolsReleased', run: () => ipam.releasePool(item.poolId!).then(() => true) };
      case 'address-unused':
        return {
          what: 'released an address no container or aux address holds',
          counter: 'addressesReleased',
          run: () => ipam.releaseAddress({ poolId: item.poolId!, address: item.address! }).then(() => true),
        };
      default:
        return undefined;
    }
  }

  private records() {
    const { state } = this.o;
    return {
      networks: [...state.networks.values()],
      endpoints: [...state.endpoints.values()],
      pools: [...state.pools.values()],
      addresses: [...state.addresses.values()].flatMap((m) => [...m.values()]),
    };
  }

  private gatewayPorts(): string[] {
    return gatewayPortsOf(this.o.state.networks.values());
  }

  private async attempt(log: Logger, what: string, fields: Record<string, unknown>, work: () => Promise<unknown>): Promise<void> {
    try {
      await work();
    } catch (err) {
      log.error(`reconcile: could not do this: ${what}`, { ...fields, error: errorMessage(err) });
    }
  }
}
