/**
 * This host, through the adapters: observed in one go (OVSDB, links,
 * addresses, firewall, forwarding), and changed by applying repairs that the
 * pure diff (domain/host-diff.ts) decided. Nothing here decides what should
 * exist.
 */
import { errorMessage, internal, isPluginError } from '../errors.js';
import { type HostDifference, REPAIR_ORDER, type Repair } from '../domain/repairs.js';
import { type ObservedFlows, type PortGuard, baseFlows, ownedCookies, portCookiePrefix, portFlows } from '../domain/flows.js';
import { type DesiredHost, type DesiredPort, type ObservedHost, type PortSpec, desiredHost, endpointPort, foreignBridges } from '../domain/host.js';
import { diffHost, scopeOf } from '../domain/host-diff.js';
import type { Records } from '../domain/drift.js';
import { OWNER_KEY, OWNER_VALUE, ROLE_KEY, isSpareHostName } from '../domain/names.js';
import type { Datapath, DatapathSetting, EndpointRecord, NetworkRecord } from '../domain/records.js';
import type { Logger } from '../log.js';
import type { DatapathProbe, Firewall, HostPorts, Links, Ovs, Sysctl } from './ports.js';

export interface LocalHostOptions {
  ovs: Ovs;
  links: Links;
  firewall: Firewall;
  sysctl: Sysctl;
  hostPorts: HostPorts;
  datapathProbe: DatapathProbe;
  /** What bridges the plugin creates get. */
  datapath: DatapathSetting;
  log: Logger;
}

export class LocalHost {
  private firewallChain = Promise.resolve();
  /**
   * Told when a bridge with guarded ports comes back after ovs-vswitchd dropped it (it keeps no flows
   * across a restart), so they are put back at once. Watched: the bridges of the last whole-host look, and
   * each bridge from its first guarded port on.
   */
  onFlowsLost: ((bridge: string) => Promise<boolean> | void) | undefined;
  /**
   * Takes a deleted endpoint's devices to delete in the background (driver/spares.ts): `first` (its flows
   * and port, when not deleted already), then its veth pair; when unset, removeEndpointDevices deletes
   * them before it returns.
   */
  retire: ((pair: { host: string; peer: string }, first?: () => Promise<void>) => void) | undefined;

  private watchdog: NodeJS.Timeout | undefined;

  constructor(readonly o: LocalHostOptions) {}

  /**
   * Every `everyMs`, asks each watched bridge how many of the plugin's flows it has: its base flow, and all of
   * them against what the plugin wrote there. Its connection dropping tells of an ovs-vswitchd restart; this
   * tells of the rest: ovn-controller clearing its integration bridge when it starts (the guards of the
   * containers' ports with it), or flows deleted by hand (a port's guard, and it forwards unguarded through
   * the base flow; the base flow, and the bridge stops). The base flow gone is told at once, fewer flows than
   * written when seen twice in a row (a write under way is not a loss). Told once per loss (onFlowsLost):
   * a loss ends when a check finds the flows whole, or when the repair it asked for resolves true (it put
   * flows back), so that flows deleted again before the next check are a new loss.
   */
  startFlowWatch(everyMs: number): void {
    const lost = new Map<string, boolean>();
    const short = new Map<string, number>();
    const base = baseFlows('').prefix;
    const owned = ownedCookies();
    let running = false;
    const check = async () => {
      if (running) return; // the last check still waits on a bridge
      running = true;
      try {
        for (const bridge of this.o.ovs.watchedBridges()) {
          const [bases, all] = await Promise.all([this.o.ovs.countFlows(bridge, base), this.o.ovs.countFlows(bridge, owned)]).catch(() => [undefined, undefined]);
          if (bases === undefined || all === undefined) continue; // not answering: its connection's own watch tells when it is back
          const shortfall = all < this.o.ovs.expectedFlows(bridge);
          short.set(bridge, shortfall ? (short.get(bridge) ?? 0) + 1 : 0);
          const now = bases === 0 || short.get(bridge)! >= 2;
          const was = lost.get(bridge) ?? false;
          lost.set(bridge, now);
          if (now && !was) {
            void Promise.resolve(this.onFlowsLost?.(bridge)).then(
              (repaired) => {
                if (repaired !== true) return;
                lost.set(bridge, false);
                short.set(bridge, 0);
              },
              () => {},
            );
          }
        }
      } finally {
        running = false;
      }
    };
    this.watchdog = setInterval(() => void check(), everyMs);
    this.watchdog.unref();
  }

  stopFlowWatch(): void {
    if (this.watchdog) clearInterval(this.watchdog);
  }

  get ovs(): Ovs {
    return this.o.ovs;
  }

  get firewall(): Firewall {
    return this.o.firewall;
  }

  get links(): Links {
    return this.o.links;
  }

  get hostPorts(): HostPorts {
    return this.o.hostPorts;
  }

  /** The datapath a missing bridge is created with. */
  async datapath(): Promise<Datapath> {
    return this.o.datapath === 'auto' ? this.o.datapathProbe.detect() : this.o.datapath;
  }

  /**
   * Everything the diff compares, read in parallel; `firewall: false` skips
   * the iptables read. `flows: true` also reads the plugin's OpenFlow flows on
   * the bridges that hold its container ports (the whole-host comparisons).
   */
  async observe(options: { firewall?: boolean; flows?: boolean } = {}): Promise<ObservedHost> {
    const { ovs, links, firewall, sysctl } = this.o;
    const [snapshot, linkList, addresses, rules, forwarding] = await Promise.all([
      ovs.snapshot(),
      links.list(),
      links.addresses(),
      options.firewall === false ? undefined : firewall.read(),
      sysctl.ipv4Forwarding().catch(() => undefined),
    ]);
    const gateways = snapshot.ports.filter((p) => p.externalIds[ROLE_KEY] === 'gateway' && linkList.has(p.name)).map((p) => p.name);
    const advice = await Promise.all(gateways.map(async (name) => [name, await sysctl.routerAdvice(name).catch(() => undefined)] as const));
    const observed: ObservedHost = {
      bridges: new Map(snapshot.bridges.map((b) => [b.name, b])),
      ports: new Map(snapshot.ports.map((p) => [p.name, p])),
      links: linkList,
      addresses,
      firewall: rules,
      ipv4Forwarding: forwarding,
      routerAdvice: new Map(advice.filter((a): a is readonly [string, { acceptRa: boolean; acceptRedirects: boolean }] => a[1] !== undefined)),
    };
    return options.flows ? { ...observed, flows: await this.observeFlows(observed) } : observed;
  }

  /** Flows of the bridges the plugin made and of those with its container ports (OVN's integration bridge included: the plugin's flows there). */
  private async observeFlows(observed: ObservedHost): Promise<Map<string, ObservedFlows>> {
    const bridges = new Set<string>();
    for (const b of observed.bridges.values()) if (b.externalIds[OWNER_KEY] === OWNER_VALUE) bridges.add(b.name);
    for (const p of observed.ports.values()) {
      if (p.externalIds[ROLE_KEY] === 'endpoint' && p.bridge) bridges.add(p.bridge);
    }
    const { onFlowsLost } = this;
    if (onFlowsLost) this.o.ovs.watchFlows([...bridges], onFlowsLost);
    const out = new Map<string, ObservedFlows>();
    await Promise.all(
      [...bridges].map(async (bridge) => {
        try {
          out.set(bridge, await this.o.ovs.flows(bridge));
        } catch (err) {
          this.o.log.warn('could not read the flows of a bridge; its guard flows are not compared', { bridge, error: errorMessage(err) });
        }
      }),
    );
    return out;
  }

  /** What these ready networks and their endpoints call for on this host, as observed (its datapath, other container networks' bridges). */
  async desired(networks: readonly NetworkRecord[], endpoints: readonly EndpointRecord[], observed: ObservedHost): Promise<DesiredHost> {
    return desiredHost(networks, endpoints, { datapath: await this.datapath(), foreignBridges: foreignBridges(observed.links) });
  }

  /**
   * Puts this host's part of one network right, and nothing beyond it (its scope: the network and what it
   * shares, bridges, uplinks, the firewall, forwarding). Realising (`without` unset): what it needs beside every
   * other ready network, leaving its endpoints' ports to the reconciler, under each endpoint's lock (a container
   * may be starting now). Unrealising (`without`): what only it used goes, its endpoints' ports included.
   * `before` is told each repair as it is about to be applied. The records are read once the host is observed
   * (`records()`): a device made meanwhile has its record by then, and is not taken for debris.
   */
  async convergeNetwork(network: NetworkRecord, records: () => Pick<Records, 'networks' | 'endpoints'>, options: { without?: boolean; observed?: ObservedHost; before?: (repair: Repair) => void } = {}): Promise<void> {
    const observed = options.observed ?? (await this.observe());
    const { networks, endpoints: all } = records();
    const others = networks.filter((n) => n.id !== network.id);
    const endpoints = options.without ? all.filter((e) => e.networkId !== network.id) : all;
    const wanted = [...others.filter((n) => n.state === 'ready'), ...(options.without ? [] : [network])];
    const desired = await this.desired(wanted, endpoints, observed);
    const differences = diffHost(desired, observed, { records: options.without ? { networks: others, endpoints } : { networks, endpoints }, scope: scopeOf([network]), now: Date.now(), graceMs: Infinity });
    for (const repair of LocalHost.repairsOf(options.without ? differences : differences.filter((d) => !d.endpointId))) {
      options.before?.(repair);
      await this.apply(repair);
    }
  }

  /** The repairs of `differences`, each once, in the order they must happen. */
  static repairsOf(differences: readonly HostDifference[]): Repair[] {
    const seen = new Set<string>();
    const repairs: Repair[] = [];
    for (const d of differences) {
      for (const r of d.repairs) {
        const key = repairKey(r);
        if (seen.has(key)) continue;
        seen.add(key);
        repairs.push(r);
      }
    }
    return repairs.sort((a, b) => REPAIR_ORDER.indexOf(a.type) - REPAIR_ORDER.indexOf(b.type));
  }

  async apply(repair: Repair): Promise<void> {
    const { ovs, links, sysctl, log } = this.o;
    switch (repair.type) {
      case 'add-bridge':
        await ovs.ensureBridge(repair.bridge);
        return;
      case 'add-port': {
        const ofport = await ovs.addPort(repair.port);
        // A container's port comes back with its guard: its flows name its (perhaps new) ofport.
        const { guard } = repair.port;
        if (guard && ofport > 0) await this.setGuardFlows(repair.port, guard, ofport);
        return;
      }
      case 'sync-flows':
        await ovs.setPortFlows(repair.flows, { after: repair.stale });
        return;
      case 'delete-flows':
        await ovs.deleteFlows(repair.bridge, repair.cookies);
        return;
      case 'update-port':
        await ovs.updatePort(repair.port);
        return;
      case 'delete-port':
        await this.deleteOwnedPort(repair.name);
        if (repair.deleteLink) await links.deleteLink(repair.name);
        return;
      case 'configure-gateway': {
        const { port, mtu, addresses, txOffloadOff } = repair.gateway;
        // Before it is up with its addresses: from then on it would take an advertisement as its route.
        await sysctl.refuseRouterAdvice(port).catch((err: unknown) => log.warn('a gateway port still takes router advertisements and redirects', { port, error: errorMessage(err) }));
        await links.configureAddresses(port, { mtu, addresses });
        if (txOffloadOff) await links.disableTxOffload([port]);
        return;
      }
      case 'delete-veth':
        await links.deleteLink(repair.name);
        return;
      case 'isolate-veth':
        await links.isolateVeth(repair.name);
        return;
      case 'delete-bridge':
        if (await ovs.deleteOwnedBridge(repair.name)) log.info('deleted bridge the plugin created, now unused', { bridge: repair.name });
        return;
      case 'sync-base-flows':
        // Added over the one there (same match and priority), never deleted first: the bridge keeps forwarding.
        await ovs.setPortFlows(baseFlows(repair.bridge, repair.pipeline), {});
        return;
      case 'secure-bridge':
        if (await ovs.secureBridge(repair.name)) log.info('made a bridge of the plugin fail closed (fail_mode secure)', { bridge: repair.name });
        return;
      case 'sync-firewall':
        await this.syncFirewall(repair);
        return;
      case 'enable-forwarding':
        await sysctl.enableIpv4Forwarding();
        return;
    }
  }

  /**
   * An endpoint's veth pair and its port on the network's bridge (TX offload
   * off on the userspace datapath), and the port's guard flows: in place
   * before Join answers, so before the container has the other end. A spare
   * pair has both already, its port parked on a VLAN no network has.
   */
  async makeEndpointDevices(network: NetworkRecord, endpoint: EndpointRecord): Promise<void> {
    const { ovs, links } = this.o;
    const port = endpointPort(network, endpoint);
    if (isSpareHostName(endpoint.hostIf)) {
      // Made ahead of need (driver/spares.ts), its port parked on the bridge: it is retagged and marked while
      // its guard flows go in for the OpenFlow number it has now. Read now, not remembered from when it was
      // made: a bridge made again, or a reset database, renumbers ports, and flows sent for a number another
      // port has now would replace that port's own (same match and priority).
      const parked = await ovs.ofport(endpoint.hostIf);
      if (parked !== undefined) {
        const [ofport] = await Promise.all([ovs.updatePort(port), this.guardNewPort(port, parked)]);
        if (ofport !== parked) await this.guardNewPort(port, ofport);
        return;
      }
      // Its port is gone (ovs-vswitchd's database was reset): only the port and its flows are left to do.
      try {
        await this.guardNewPort(port, await ovs.addPort(port));
        return;
      } catch (err) {
        // Its veth is gone (a power cut since it was made): made again below, under the same names.
        if (!isPluginError(err) || err.code !== 'PortFailed' || (await links.list()).has(endpoint.hostIf)) throw err;
      }
    }
    // The pair with its offload set in one spawn (this path runs when spares have run out: in bursts of starts).
    await links.createVeth({ host: endpoint.hostIf, peer: endpoint.peerIf, mtu: network.mtu, peerMac: endpoint.mac, txOffloadOff: network.datapath === 'netdev' });
    await this.guardNewPort(port, await ovs.addPort(port));
  }

  /** A container port's guard flows, set before the container has the other end of its veth. */
  private async guardNewPort(port: DesiredPort, ofport: number): Promise<void> {
    if (!port.guard) return;
    const what = `the guard flows (${[port.guard.antiSpoofing ? 'anti-spoofing' : '', port.guard.rate ? `rate ${port.guard.rate.mbit} Mbit/s` : ''].filter(Boolean).join(', ')}) of port ${port.name} on bridge ${port.bridge}`;
    const remedy = `ovs-vswitchd must be running and the bridge must allow OpenFlow 1.3 (ovs-vsctl set bridge ${port.bridge} protocols=OpenFlow10,OpenFlow13) and its flows must not be wiped by a controller; or create the network with -o anti_spoofing=false and without rate`;
    if (!(ofport > 0)) throw internal('GuardFailed', `cannot set ${what}: OVS gave the port no OpenFlow port number`);
    try {
      await this.setGuardFlows(port, port.guard, ofport);
    } catch (err) {
      throw internal('GuardFailed', `cannot set ${what}: ${errorMessage(err)}; ${remedy}`);
    }
    // A bridge that holds guarded ports is watched from its first one on, not only from the next whole-host look.
    if (this.onFlowsLost) this.o.ovs.watchFlows([port.bridge], this.onFlowsLost, { add: true });
  }

  /**
   * A container port guarded anew (its link-local address learned): the new flows go in over the old,
   * then what is left of the old goes, so that the port is never without its guard.
   */
  async reguard(before: DesiredPort, after: DesiredPort): Promise<void> {
    if (!after.guard) return;
    const ofport = await this.o.ovs.ofport(after.name);
    if (ofport === undefined) return; // gone meanwhile: nothing to guard
    const next = portFlows(after.bridge, after.name, ofport, after.guard);
    const keep = new Set(next.flows.map((f) => f.cookie));
    const old = before.guard ? portFlows(before.bridge, before.name, ofport, before.guard).flows.map((f) => f.cookie).filter((c) => !keep.has(c)) : [];
    await this.o.ovs.setPortFlows(next, { after: old.map((c) => `${c}/-1`) });
  }

  /** A container port's guard flows for its OpenFlow number; flows an earlier port of this name left (a crash between its port and its flows) go first. */
  private setGuardFlows(port: PortSpec, guard: PortGuard, ofport: number): Promise<void> {
    return this.o.ovs.setPortFlows(portFlows(port.bridge, port.name, ofport, guard), { before: [portCookiePrefix(port.name)] });
  }

  /**
   * Removes an endpoint's port and veth pair, and (when its network is known)
   * its guard flows and meter; tolerates what is already gone. With a `retire`
   * hook the work is handed to it to finish after the caller has answered
   * (`portNow`: all but the veth pair first, for a port whose name another may
   * take at once), else it is done before this returns.
   */
  async removeEndpointDevices(endpoint: Pick<EndpointRecord, 'id' | 'hostIf' | 'peerIf'>, network?: NetworkRecord, rated = false, options: { portNow?: boolean } = {}): Promise<void> {
    const { ovs, links } = this.o;
    // Flows and a meter (its id is the port's number) go before the port: once the port is gone, a new port
    // may get its number, which its flows match and which would name the new port's own meter.
    const portGone = async () => {
      if (network) {
        const ofport = rated ? await ovs.ofport(endpoint.hostIf) : undefined;
        await ovs.deleteFlows(network.spec.bridge, [portCookiePrefix(endpoint.hostIf)], ofport ? [ofport] : []);
      }
      await this.deleteOwnedPort(endpoint.hostIf);
    };
    const pair = { host: endpoint.hostIf, peer: endpoint.peerIf };
    if (this.retire) {
      if (options.portNow) await portGone();
      this.retire(pair, options.portNow ? undefined : portGone);
      return;
    }
    await portGone();
    // Deleting one end of a veth deletes both; the peer only remains if the pair was never complete.
    if (!(await links.deleteLink(pair.host))) await links.deleteLink(pair.peer);
  }

  /** Deletes a port, leaving (with a log line) one the plugin does not own. */
  async deleteOwnedPort(name: string): Promise<void> {
    try {
      await this.o.ovs.deletePort(name);
    } catch (err) {
      if (!isPluginError(err, 'Conflict')) throw err;
      this.o.log.warn('left a port alone that the plugin does not own', { port: name, error: errorMessage(err) });
    }
  }

  /** Firewall rewrites are whole and run one at a time. */
  private syncFirewall(repair: Extract<Repair, { type: 'sync-firewall' }>): Promise<void> {
    const run = () => this.o.firewall.sync(repair.rules);
    const next = this.firewallChain.then(run, run);
    this.firewallChain = next.catch(() => {});
    return next;
  }
}

function repairKey(r: Repair): string {
  switch (r.type) {
    case 'add-bridge':
      return `${r.type}|${r.bridge.name}`;
    case 'add-port':
    case 'update-port':
      return `port|${r.port.name}`;
    case 'configure-gateway':
      return `${r.type}|${r.gateway.port}`;
    case 'sync-flows':
      return `${r.type}|${r.flows.port}`;
    case 'delete-flows':
      return `${r.type}|${r.bridge}|${r.cookies.join(',')}`;
    case 'delete-port':
    case 'delete-veth':
    case 'isolate-veth':
    case 'delete-bridge':
    case 'secure-bridge':
      return `${r.type}|${r.name}`;
    case 'sync-base-flows':
      return `${r.type}|${r.bridge}`;
    case 'sync-firewall':
    case 'enable-forwarding':
      return r.type;
  }
}
