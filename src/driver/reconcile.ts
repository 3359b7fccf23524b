/**
 * Reconciliation: making the store, Open vSwitch, the kernel and Docker agree
 * again after whatever happened while nobody was looking (a crash in the
 * middle of a call, a restart of ovs-vswitchd, a reboot, a call Docker made
 * while the plugin was down).
 *
 * The store is the plugin's intent; everything on the host is derived from it.
 * A pass undoes networks whose CreateNetwork never finished, then brings the
 * host in line with the desired host (one observation, one diff, the repairs
 * it calls for: bridges, ports with their tags, trunks and options, gateway
 * addresses, tunnels, uplinks, the firewall; debris removed), and in a full
 * pass removes networks, endpoints, pools and addresses Docker no longer holds
 * once older than the grace period (an operation still in flight is never
 * mistaken for debris). `ovsnet doctor` shows the same drift without acting.
 *
 * It never runs inside a driver call, and it changes state only through the
 * drivers' own locked operations, so it cannot race them. Every change is
 * logged with the reason.
 */
import { errorMessage } from '../errors.js';
import { type Drift, type DockerNetwork, dockerDrift } from '../domain/drift.js';
import type { Logger } from '../log.js';
import type { IpamDriver } from './ipam-driver.js';
import type { NetworkDriver } from './network-driver.js';
import type { DockerView } from './ports.js';
import type { State } from './state.js';

export interface ReconcilerOptions {
  state: State;
  network: NetworkDriver;
  ipam: IpamDriver;
  /** Undefined when the plugin was told not to ask Docker (OVSNET_DOCKER=none). */
  docker: DockerView | undefined;
  graceMs: number;
  log: Logger;
  now?: () => number;
}

/** What one pass changed, by kind. */
export type Changes = Record<string, number>;

/** For each kind of drift the reconciler repairs: what the log line says, and what it is counted as. */
const REPAIRED: Partial<Record<Drift['kind'], { what: string; counter: string }>> = {
  'bridge-missing': { what: 'made a missing bridge again', counter: 'bridgesRestored' },
  'orphan-bridge': { what: 'removed a bridge the plugin made that no network uses', counter: 'bridgesRemoved' },
  'gateway-port-missing': { what: 'added back a gateway port', counter: 'portsRestored' },
  'tunnel-port-missing': { what: 'added back a tunnel port', counter: 'portsRestored' },
  'uplink-missing': { what: 'attached an uplink again', counter: 'portsRestored' },
  'endpoint-port-missing': { what: 'added back the OVS port of an endpoint', counter: 'portsRestored' },
  'port-differs': { what: 'set an OVS port back to what its records say', counter: 'portsRepaired' },
  'gateway-address-missing': { what: 'set a gateway port back to its addresses', counter: 'gatewaysRepaired' },
  'gateway-address-extra': { what: 'set a gateway port back to its addresses', counter: 'gatewaysRepaired' },
  'gateway-link-differs': { what: 'set a gateway port back to its addresses', counter: 'gatewaysRepaired' },
  'orphan-port': { what: 'removed an OVS port no record accounts for', counter: 'portsRemoved' },
  'orphan-veth': { what: 'removed a veth no endpoint accounts for', counter: 'vethsRemoved' },
  'port-flows-differ': { what: "put a container port's guard flows (anti-spoofing, rate) back", counter: 'flowsRepaired' },
  'orphan-flows': { what: 'removed guard flows of a port no container has', counter: 'flowsRemoved' },
  'bridge-flows-differ': { what: "put a bridge's base flow back, after its ports' guards", counter: 'flowsRepaired' },
  'bridge-fails-open': { what: 'made a bridge of the plugin fail closed (fail_mode secure)', counter: 'bridgesSecured' },
  'veth-open-to-host': { what: "put the host end of a container's veth in the plugin's device group", counter: 'vethsIsolated' },
  'gateway-accepts-ra': { what: 'stopped a gateway port from accepting router advertisements and redirects', counter: 'gatewaysRepaired' },
  'firewall-drift': { what: "rewrote the plugin's firewall chains", counter: 'firewallRewritten' },
  'ip-forward-off': { what: 'turned IPv4 forwarding on', counter: 'forwardingEnabled' },
  'ovn-switch-missing': { what: 'made the OVN logical switch of a network again', counter: 'ovnSwitchesRestored' },
  'ovn-host-not-listed': { what: 'listed this host on an OVN logical switch again', counter: 'ovnSwitchesRestored' },
  'ovn-port-missing': { what: 'held an address in the northbound database again', counter: 'ovnPortsRestored' },
  'ovn-port-differs': { what: "set a logical port back to its endpoint's MAC and addresses", counter: 'ovnPortsRepaired' },
  'ovn-port-orphan': { what: 'removed a logical port whose address this host holds no more', counter: 'ovnPortsRemoved' },
  'ovn-guard-differs': { what: "put an OVN switch's guard ACLs back (no router advertisements or DHCP server messages from containers)", counter: 'ovnSwitchesRestored' },
  'ovn-switch-unused-here': { what: 'took this host off an OVN logical switch it has no network of', counter: 'ovnSwitchesLeft' },
};

export class Reconciler {
  private running: Promise<Changes> | undefined;
  private pending: { reason: string; docker: boolean; result: { promise: Promise<Changes>; resolve: (changes: Changes) => void } } | undefined;
  private timer: NodeJS.Timeout | undefined;
  private debounce: NodeJS.Timeout | undefined;
  private burst: { promise: Promise<Changes>; resolve: (changes: Changes) => void } | undefined;
  private readonly now: () => number;
  /** Called after each pass with what it changed (metrics). */
  onPass: ((changes: Changes, withDocker: boolean) => void) | undefined;
  /** When set, told after each pass with Docker what differs still (what doctor would say), for metrics. */
  onDrift: ((drift: Drift[]) => void) | undefined;

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

  /**
   * Asks for a repair soon (coalescing bursts of events, e.g. a restarted ovs-vswitchd). Resolves with what
   * the pass that served the burst changed.
   */
  trigger(reason: string): Promise<Changes> {
    if (this.debounce) clearTimeout(this.debounce);
    const burst = (this.burst ??= deferred<Changes>());
    this.debounce = setTimeout(() => {
      this.burst = undefined;
      void this.run(reason, false).then(burst.resolve);
    }, 300);
    this.debounce.unref();
    return burst.promise;
  }

  /** Runs a pass now, or after the one in progress; passes never overlap, and never reject. */
  async run(reason: string, withDocker: boolean): Promise<Changes> {
    if (this.running) {
      // Every request made while a pass runs is served by one pass after it, and all get its changes.
      const waiting = this.pending;
      if (waiting) {
        waiting.reason = reason;
        waiting.docker ||= withDocker;
        return waiting.result.promise;
      }
      const next = { reason, docker: withDocker, result: deferred<Changes>() };
      this.pending = next;
      await this.running.catch(() => {});
      this.pending = undefined;
      const changes = await this.run(next.reason, next.docker);
      next.result.resolve(changes);
      return changes;
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
    const asked = this.now();
    const docker = withDocker ? await this.dockerNetworks() : undefined;
    return this.o.network.drift({ docker, now: asked, graceMs: this.o.graceMs });
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
        if (!(await network.abandonCreate(record.id))) return;
        log.info('reconcile: undid a network whose creation never finished', { networkId: record.id });
        count('networksUndone');
      });
    }

    // Records are judged against Docker's answer as of when it was asked, not as of the end of the repairs.
    const asked = this.now();
    const docker = withDocker ? await this.dockerNetworks() : undefined;
    for (const result of await network.converge({ docker, now: asked, graceMs: this.o.graceMs })) {
      const { drift } = result;
      const known = REPAIRED[drift.kind] ?? { what: `repaired ${drift.kind}`, counter: 'otherRepairs' };
      const fields = { networkId: drift.networkId, endpointId: drift.endpointId, port: drift.port, address: drift.address, why: drift.detail };
      if (result.error !== undefined) log.error(`reconcile: could not do this: ${known.what}`, { ...fields, error: result.error });
      if (!result.done) continue;
      log.info(`reconcile: ${known.what}`, fields);
      count(known.counter);
    }

    if (docker) {
      const act = async (items: readonly Drift[]) => {
        for (const item of items) {
          const action = this.action(item);
          if (!action) continue;
          await this.attempt(log, action.what, { subject: item.subject }, async () => {
            await action.run();
            log.info(`reconcile: ${action.what}`, { networkId: item.networkId, endpointId: item.endpointId, poolId: item.poolId, address: item.address, why: item.detail });
            count(action.counter);
          });
        }
      };
      const removed = changes.networksRemoved ?? 0;
      await act(dockerDrift(state.records(), docker, { now: asked, graceMs: this.o.graceMs }));
      // A network's pools go only after the network (never before it): once this pass removed networks Docker
      // forgot (a swarm network on a node whose dockerd restarted, which Docker never deletes), their pools and
      // addresses are looked at again now, rather than a whole interval later.
      if ((changes.networksRemoved ?? 0) > removed) {
        await act(dockerDrift(state.records(), docker, { now: asked, graceMs: this.o.graceMs }).filter((d) => d.kind === 'pool-unused' || d.kind === 'address-unused'));
      }
      // What the pass could not repair (or what came since): a second look, only when someone listens.
      if (this.onDrift) {
        await network
          .drift({ docker, now: asked, graceMs: this.o.graceMs })
          .then((drift) => this.onDrift?.(drift))
          .catch((err) => log.debug('could not look for drift after the pass', { error: errorMessage(err) }));
      }
    }
    return changes;
  }

  /** The repair for what Docker no longer holds; other kinds are only reported (by `ovsnet doctor`). */
  private action(item: Drift): { what: string; counter: string; run: () => Promise<unknown> } | undefined {
    const { network, ipam } = this.o;
    switch (item.kind) {
      case 'network-unknown-to-docker':
        return { what: 'removed a network Docker no longer has', counter: 'networksRemoved', run: () => network.deleteNetwork(item.networkId!) };
      case 'endpoint-unknown-to-docker':
        return { what: 'removed an endpoint Docker no longer has', counter: 'endpointsRemoved', run: () => network.deleteEndpoint({ networkId: item.networkId!, endpointId: item.endpointId! }) };
      case 'pool-unused':
        return { what: 'released a pool no Docker network uses', counter: 'poolsReleased', run: () => ipam.releasePool(item.poolId!) };
      case 'address-unused':
        return { what: 'released an address no container or aux address holds', counter: 'addressesReleased', run: () => ipam.releaseAddress({ poolId: item.poolId!, address: item.address! }) };
      default:
        return undefined;
    }
  }

  /** Docker's networks, or undefined when Docker is not to be asked or cannot be. */
  private async dockerNetworks(): Promise<DockerNetwork[] | undefined> {
    if (!this.o.docker) return undefined;
    try {
      return await this.o.docker.networks();
    } catch (err) {
      this.o.log.debug('Docker cannot be asked now', { error: errorMessage(err) });
      return undefined;
    }
  }

  private async attempt(log: Logger, what: string, fields: Record<string, unknown>, work: () => Promise<unknown>): Promise<void> {
    try {
      await work();
    } catch (err) {
      log.error(`reconcile: could not do this: ${what}`, { ...fields, error: errorMessage(err) });
    }
  }
}

function deferred<T>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}
