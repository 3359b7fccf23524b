/**
 * What the OVN backend reads rather than makes: the southbound database (which hosts are there, where a
 * logical port is bound), the hosts gone from it (for doctor) and forgetting one, and the views of the
 * northbound database the operator's commands show (`ovsnet networks`, `graph`, `trace`).
 */
import { badRequest, errorMessage, isPluginError } from '../errors.js';
import type { Drift, OvnPicture } from '../domain/drift.js';
import { NB, switchHosts } from '../domain/ovn.js';
import type { NbView } from '../domain/ovn-diff.js';
import { type OvnExternal, gatewayPortNames } from '../domain/ovn-router.js';
import { absentHosts, goneHosts } from '../domain/ovn-departed.js';
import { lastSeen } from '../domain/ovn-identity.js';
import { isOvnNetwork } from '../domain/records.js';
import type { Logger } from '../log.js';
import { CHASSIS_HOWTO, type OvnChassis } from './ovn-chassis.js';
import { type ForgetReport, forgetHost } from './ovn-forget.js';
import type { Northbound, Ovs, Southbound, Tracing } from './ports.js';
import type { State } from './state.js';
import type { OvnTraceContext } from './trace-ovn.js';

export interface OvnViewsOptions {
  nb: Northbound;
  state: State;
  ovs: Pick<Ovs, 'systemIds'>;
  chassis: OvnChassis;
  external: OvnExternal | undefined;
  /** Opens the southbound database at this host's ovn-controller's remotes (external_ids:ovn-remote). */
  openSouthbound: ((remotes: string) => Southbound) | undefined;
  log: Logger;
}

export class OvnViews {
  private southbound: { remotes: string; client: Southbound } | undefined;
  private sbProblem: string | undefined;

  constructor(private readonly o: OvnViewsOptions) {}

  /**
   * Hosts that hold addresses or listings on this host's OVN networks and are gone from the southbound
   * database. Never repaired here: releasing another host's addresses is the operator's call (forget-host).
   */
  async goneHosts(view: NbView, me: string, options: { now: number; graceMs: number }): Promise<Drift[]> {
    let present;
    try {
      const southbound = this.openSouthbound();
      if (!southbound) return [];
      present = new Set((await southbound.chassis()).keys());
    } catch (err) {
      // Said once per cause: without the southbound database no host can be reported gone.
      if (this.sbProblem !== errorMessage(err)) this.o.log.warn('the southbound database cannot be asked which hosts are there, so none is reported gone', { error: errorMessage(err) });
      this.sbProblem = errorMessage(err);
      return [];
    }
    this.sbProblem = undefined;
    const subnets = new Set([...this.o.state.networks.values()].flatMap((n) => (n.ovn && n.state === 'ready' ? [n.ovn.subnet] : [])));
    const absent = absentHosts(view, subnets, present, me);
    const seen = new Map<string, number>();
    for (const chassis of absent) {
      const registration = await this.o.nb.registration(chassis);
      if (registration) seen.set(chassis, lastSeen(registration.externalIds));
    }
    return goneHosts(view, absent, { ...options, leaseMs: this.o.chassis.leaseMs, seen });
  }

  /** The southbound database's remotes as this host's Open vSwitch has them now, kept for openSouthbound (the daemon's passes read them too). */
  private async readRemotes(): Promise<string | undefined> {
    this.o.chassis.southboundRemotes = (await this.o.ovs.systemIds())['ovn-remote'];
    return this.o.chassis.southboundRemotes;
  }

  /** The southbound database at this host's ovn-controller's remotes (known once identify ran). */
  private openSouthbound(): Southbound | undefined {
    const remotes = this.o.chassis.southboundRemotes;
    if (!remotes || !this.o.openSouthbound) return undefined;
    if (this.southbound?.remotes !== remotes) {
      this.southbound?.client.close();
      this.southbound = { remotes, client: this.o.openSouthbound(remotes) };
    }
    return this.southbound.client;
  }

  /** Releases what a host gone for good held (driver/ovn-forget.ts). */
  async forgetHost(chassis: string, options: { idleMs?: number }): Promise<ForgetReport> {
    const { me } = await this.o.chassis.identify();
    const southbound = this.openSouthbound();
    if (!southbound) throw badRequest('OvnNotReady', `this host does not know the southbound database, which tells whether ${chassis} is gone: set external_ids:ovn-remote of its Open vSwitch (${CHASSIS_HOWTO})`);
    // A live host renews its registration every third of the lease: by default, no sign of it for a lease.
    const report = await forgetHost(this.o.nb, southbound, chassis, { me: me.chassis, now: Date.now(), idleMs: options.idleMs ?? this.o.chassis.leaseMs });
    this.o.log.info('forgot a host that is gone for good', { ...report });
    return report;
  }

  /** What `ovsnet trace` asks of OVN: the southbound database's remotes, the northbound ports, the ports' chassis. */
  traceContext(tracing: Tracing): OvnTraceContext {
    return {
      tracing,
      southbound: () => this.readRemotes(),
      port: (name) => this.o.nb.port(name),
      residents: async (ports) => {
        await this.readRemotes();
        return (await this.openSouthbound()?.residents(ports)) ?? new Map();
      },
    };
  }

  /** Closes the southbound connection, if one was opened. */
  close(): void {
    this.southbound?.client.close();
    this.southbound = undefined;
  }

  /** The hosts that use each OVN network, for `ovsnet networks`; undefined when the database cannot be asked. */
  async hostsOf(): Promise<Record<string, string[]> | undefined> {
    try {
      const view = await this.o.nb.view({ subnets: this.subnets(), ports: false });
      const out: Record<string, string[]> = {};
      for (const network of this.o.state.networks.values()) {
        const subnet = network.ovn?.subnet;
        const sw = subnet !== undefined && view.switches.find((s) => s.externalIds[NB.subnet] === subnet);
        if (sw) out[network.id] = [...switchHosts(sw).values()].sort();
      }
      return out;
    } catch (err) {
      if (isPluginError(err)) return undefined;
      throw err;
    }
  }

  /** Every host's logical ports on this host's OVN networks, and each router's active gateway chassis (`ovsnet graph`); undefined when the databases cannot be asked. */
  async picture(): Promise<OvnPicture | undefined> {
    let view: NbView;
    try {
      view = await this.o.nb.view({ subnets: this.subnets() });
    } catch (err) {
      if (isPluginError(err)) return undefined;
      throw err;
    }
    const ports: Record<string, Array<{ port: string; address: string; host: string }>> = {};
    const routers = new Set<string>();
    for (const network of this.o.state.networks.values()) {
      if (!isOvnNetwork(network)) continue;
      if (network.spec.ovnRouter) routers.add(network.spec.ovnRouter);
      const sw = view.switches.find((s) => s.externalIds[NB.subnet] === network.ovn.subnet);
      if (!sw) continue;
      ports[network.id] = (view.ports.get(sw.uuid) ?? [])
        .filter((p) => p.externalIds[NB.chassis])
        .map((p) => ({ port: p.name, address: p.addresses[0]?.split(' ').slice(1).join(' ') ?? '', host: p.externalIds[NB.hostname] || p.externalIds[NB.chassis]! }))
        .sort((a, b) => a.port.localeCompare(b.port));
    }
    const chassis = [...(this.o.external?.gateways ?? [])].sort((a, b) => b.priority - a.priority);
    const redirect = (router: string) => `cr-${gatewayPortNames(router).lrp}`;
    let bound = new Map<string, { chassis: string; hostname: string }>();
    if (routers.size > 0 && chassis.length > 0) {
      await this.readRemotes();
      bound = (await this.openSouthbound()?.residents([...routers].map(redirect)).catch(() => undefined)) ?? new Map();
    }
    const gateways: Record<string, OvnPicture['gateways'][string]> = {};
    for (const router of [...routers].sort()) gateways[router] = { chassis: this.o.external ? chassis : [], active: bound.get(redirect(router)) ?? null };
    return { ports, gateways };
  }

  /** The subnets of this host's OVN networks: what its reads of the northbound database are scoped to. */
  subnets(): string[] {
    return [...this.o.state.networks.values()].flatMap((n) => (n.ovn ? [n.ovn.subnet] : []));
  }
}
