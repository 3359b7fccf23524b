/**
 * The backend of OVN networks: one logical switch per network in the northbound database, shared by every host
 * of the subnet; one logical port per address a host holds (the database's unique index on port names keeps an
 * address on one host); container ports on the integration bridge, bound to their logical port (`iface-id`),
 * answered to Docker once this host's ovn-controller has installed them. Its parts: this host's chassis name
 * (ovn-chassis.ts), routers (ovn-routers.ts), and what it only reads (ovn-views.ts).
 *
 * What only this host needs stays in its records; what hosts share lives in the northbound database, and every
 * row written there carries the owner mark and the host that made it. The plugin never changes a row it did not write.
 */import { badRequest, conflict, errorMessage, internal, isPluginError, unavailable } from '../errors.js';
import { checkConflicts } from '../domain/admission.js';
import type { DockerNetwork, Drift, OvnPicture } from '../domain/drift.js';
import type { ObservedHost } from '../domain/host.js';
import { networkMtu } from '../domain/mtu.js';
import { hashOf } from '../domain/names.js';
import { type Chassis, NB, ROUTER, type NbSwitch, boundAddresses, chassisKey, checkSameConfig, decodeConfig, defaultSwitchName, geneveLimit, guardAcls, holderOf, identifyingSubnet, portName, primaryAddress, reservationPort, sameGuard, sharedConfig, switchHosts, switchRow } from '../domain/ovn.js';
import { type NbRepair, diffNorthbound, notInstalled } from '../domain/ovn-diff.js';
import { type OvnExternal, routerPortNames } from '../domain/ovn-router.js';
import { conflictDrift } from '../domain/ovn-identity.js';
import { canonicalJson } from '../domain/options.js';
import { configOnlyDrift, configOnlySubnets } from '../domain/swarm.js';
import { type EndpointRecord, type NetworkRecord, type OvnRecord, isOwnAddressSpace, ovnNetwork, poolIdOf } from '../domain/records.js';
import type { Logger } from '../log.js';
import type { AdmitRequest, Admitted, NetworkBackend, RealiseStep } from './backend.js';
import { LocalHost } from './host.js';
import type { DistributedAddresses } from './ipam-driver.js';
import { CHASSIS_HOWTO, OvnChassis } from './ovn-chassis.js';
import type { ForgetReport } from './ovn-forget.js';
import { OvnRouters } from './ovn-routers.js';
import { OvnViews } from './ovn-views.js';
import type { Northbound, Southbound, Tracing } from './ports.js';
import type { OvnTraceContext } from './trace-ovn.js';
import type { State } from './state.js';

export interface OvnBackendOptions {
  host: LocalHost;
  state: State;
  nb: Northbound;
  /** The integration bridge (OVSNET_OVN_BRIDGE). */
  bridge: string;
  /** How long Join waits for ovn-controller to install a port. */
  installTimeoutMs: number;
  /** Where routers SNAT to, and on which gateway chassis (OVSNET_OVN_EXTERNAL, OVSNET_OVN_GATEWAYS). */
  external?: OvnExternal;
  defaults: { mtu: number };
  /** This host's id (adapters/host-id.ts); undefined for doctor on a host where the plugin never ran in OVN mode. */
  hostId: string | undefined;
  /** Whether this process registers its chassis name (the daemon) or only reads the registration (doctor). */
  register: boolean;
  /** How long a registration of a chassis name stays its holder's unrenewed (OVSNET_OVN_HOST_LEASE). */
  leaseMs?: number;
  /** Where this host keeps the chassis names it left a note on as a refused host (adapters/host-id.ts). */
  notes?: { read(): string[]; write(chassis: readonly string[]): void };
  /** Opens the southbound database at this host's ovn-controller's remotes (external_ids:ovn-remote), to tell hosts gone from hosts there. */
  openSouthbound?: (remotes: string) => Southbound;
  log: Logger;
}

export class OvnBackend implements NetworkBackend, DistributedAddresses {
  /** This host's chassis name, held in the northbound database. */
  private readonly identity: OvnChassis;
  private readonly routers: OvnRouters;
  /** The southbound database and the read-only views. */
  private readonly views: OvnViews;
  /** Switch uuids by subnet, so that a claim is one transaction. */
  private readonly switchIds = new Map<string, string>();

  constructor(private readonly o: OvnBackendOptions) {
    this.identity = new OvnChassis({ nb: o.nb, ovs: o.host.ovs, hostId: o.hostId, register: o.register, leaseMs: o.leaseMs, notes: o.notes, log: o.log });
    this.routers = new OvnRouters({ nb: o.nb, log: o.log, external: o.external });
    this.views = new OvnViews({ nb: o.nb, state: o.state, ovs: o.host.ovs, chassis: this.identity, external: o.external, openSouthbound: o.openSouthbound, log: o.log });
  }

  /**
   * This host as OVN knows it (its chassis name is OVS's system-id), once it holds that name in the
   * northbound database: every OVN call of a host refused the name fails, naming both hosts.
   */
  chassis(): Promise<Chassis> {
    return this.identity.chassis();
  }

  // ---- networks ----

  async admit({ networkId, spec, subnets, others }: AdmitRequest): Promise<Admitted> {
    if (spec.mode !== 'ovn') throw internal('NotOvn', `a mode=${spec.mode} network reached the OVN backend, which admits mode=ovn networks only`);
    const ovnSpec = spec;
    if (subnets.length === 0) throw badRequest('NoSubnet', 'an OVN network needs a subnet');
    if (!subnets.every((s) => isOwnAddressSpace(s.addressSpace))) {
      throw badRequest('OvnNeedsIpam', 'mode=ovn needs --ipam-driver set to this plugin: addresses of an OVN network are held through the northbound database, so that no two hosts give out the same one');
    }
    checkConflicts(networkId, spec, undefined, subnets, others);
    const subnet = identifyingSubnet(subnets.filter((s) => !s.pool.includes(':')), subnets.filter((s) => s.pool.includes(':')));
    // The firewall too: realising the network compares it (the rule that keeps veths from the host holds for OVN's too).
    const observed = await this.o.host.observe();
    const integration = observed.bridges.get(this.o.bridge);
    if (!integration) throw badRequest('OvnNotReady', `OVN's integration bridge ${this.o.bridge} is not on this host: ${CHASSIS_HOWTO}`);
    const ids = await this.o.host.ovs.systemIds();
    const encapIp = ids['ovn-encap-ip'];
    if (!ids['system-id'] || !encapIp || !ids['ovn-encap-type']) throw badRequest('OvnNotReady', `this host is not an OVN chassis yet: ${CHASSIS_HOWTO}`);
    const chassis = await this.chassis();
    if (ovnSpec.ovnRouter) this.routers.checkRouted(ovnSpec, subnets);
    const mtu = networkMtu(spec, geneveLimit(encapIp, observed, this.o.defaults.mtu), this.o.defaults.mtu);
    const ovn: OvnRecord = { subnet, switchName: ovnSpec.ovnNetwork ?? defaultSwitchName(subnet) };

    // Hosts agree on a network by its subnet: one that exists must be asked for the same way.
    const view = await this.o.nb.view({ subnets: [subnet], names: [ovn.switchName], ports: false });
    const existing = view.switches.find((s) => s.externalIds[NB.subnet] === subnet);
    const mine = sharedConfig(ovnSpec, ovn.switchName, subnets, this.ranges(subnets));
    if (existing) {
      const theirs = decodeConfig(existing.externalIds[NB.config]);
      if (theirs) checkSameConfig(theirs, mine, existing.externalIds[NB.createdBy] ?? 'unknown');
    }
    if (ovnSpec.ovnRouter) {
      const router = await this.o.nb.findRouter(ovnSpec.ovnRouter);
      if (router) this.routers.checkRouterConfig(router);
    }
    const namesake = view.switches.find((s) => s.name === ovn.switchName && s.externalIds[NB.subnet] !== subnet);
    if (namesake) {
      throw conflict('OvnNameInUse', `ovn_network ${ovn.switchName} is already the OVN network of subnet ${namesake.externalIds[NB.subnet]} (made by host ${namesake.externalIds[NB.createdBy] ?? 'unknown'}); give another name, or the same subnet`);
    }
    this.o.log.debug('OVN network admitted', { networkId, subnet, switch: ovn.switchName, chassis: chassis.name, mtu });
    return { localTag: undefined, mtu, gatewayPort: undefined, datapath: integration.datapathType === 'netdev' ? 'netdev' : 'system', observed, ovn };
  }

  async realise(network: NetworkRecord, options: { observed?: ObservedHost; step?: (step: RealiseStep) => void } = {}): Promise<void> {
    await this.ensureSwitch(network);
    options.step?.('switch');
    await this.o.host.convergeNetwork(network, () => this.o.state.records(), { observed: options.observed });
    // The marker whose absence tells that ovn-controller cleared the bridge, guards and all (startFlowWatch).
    if (!(network.spec.allowRa && network.spec.allowDhcpServer)) await this.o.host.apply({ type: 'sync-base-flows', bridge: network.spec.bridge, pipeline: 'ovn' });
  }

  async unrealise(network: NetworkRecord): Promise<void> {
    await this.o.host.convergeNetwork(network, () => this.o.state.records(), { without: true });
    const sw = network.ovn && (await this.o.nb.findSwitch(network.ovn.subnet));
    if (sw) await this.leaveSwitch(sw);
  }

  /** Makes the network's switch, or takes the one another host made, and lists this host on it. */
  private async ensureSwitch(network: NetworkRecord): Promise<NbSwitch> {
    const { nb, log } = this.o;
    const { ovn, spec } = ovnNetwork(network);
    const chassis = await this.chassis();
    const config = sharedConfig(spec, ovn.switchName, [...network.ipv4, ...network.ipv6], this.ranges([...network.ipv4, ...network.ipv6]));
    const guard = guardAcls(ovn, network.spec);
    for (let attempt = 0; attempt < 5; attempt++) {
      const found = await nb.findSwitch(ovn.subnet);
      if (!found) {
        const { created, sw } = await nb.createSwitch(ovn.subnet, { ...switchRow(ovn, config, chassis), guard });
        if (created) {
          log.info('made the OVN logical switch', { networkId: network.id, switch: sw.name, subnet: ovn.subnet });
          await this.routers.ensureAttached(network, sw);
          return sw;
        }
        continue; // another host made it meanwhile: take that one
      }
      const theirs = decodeConfig(found.externalIds[NB.config]);
      if (theirs) checkSameConfig(theirs, config, found.externalIds[NB.createdBy] ?? 'unknown');
      // A switch made before the guard existed, or one whose ACLs were deleted, gets them (again).
      if (!sameGuard(found, guard) && !(await nb.setGuard(found, guard))) continue;
      if (switchHosts(found).get(chassis.name) === chassis.hostname) {
        await this.routers.ensureAttached(network, found);
        return found;
      }
      if (await nb.updateSwitchIds(found.uuid, { [chassisKey(chassis.name)]: chassis.hostname }, [])) {
        log.info('joined the OVN logical switch', { networkId: network.id, switch: found.name, subnet: ovn.subnet, hosts: [...switchHosts(found).values(), chassis.hostname] });
        await this.routers.ensureAttached(network, found);
        return found;
      }
      // The last host removed it between our look and our write: make it again.
    }
    throw unavailable('OvnBusy', `the OVN switch of ${ovn.subnet} kept changing while this host joined it; try again`);
  }

  /** Takes this host off a switch: its ports go, then its listing; the last host to leave removes the switch. */
  private async leaveSwitch(sw: NbSwitch): Promise<void> {
    const { nb, log } = this.o;
    const chassis = await this.chassis();
    const view = await nb.view({ subnets: [sw.externalIds[NB.subnet] ?? ''], chassis: { name: chassis.name } });
    for (const port of view.ports.get(sw.uuid) ?? []) {
      if (port.externalIds[NB.chassis] === chassis.name) await nb.deletePort(sw.uuid, port.name, chassis.name);
    }
    for (let attempt = 0; attempt < 5; attempt++) {
      const current = await nb.findSwitch(sw.externalIds[NB.subnet] ?? '');
      if (!current || current.uuid !== sw.uuid) return;
      const hosts = switchHosts(current);
      const others = [...hosts.keys()].filter((c) => c !== chassis.name);
      if (others.length > 0) {
        // Only while the switch is as read: if the others left meanwhile, the last one out removes it (next look).
        if (await nb.updateSwitchIds(current.uuid, {}, [chassisKey(chassis.name)], current.externalIds)) {
          log.info('left the OVN logical switch; other hosts still use it', { switch: current.name, hosts: others });
          return;
        }
        continue;
      }
      // The last one out removes it, unless a host joined between our look and our delete (that host's
      // reconciler then finds the switch off its router, and connects it again).
      const routerName = current.externalIds[ROUTER.name];
      const router = routerName ? await nb.findRouter(routerName) : undefined;
      const subnet = current.externalIds[NB.subnet] ?? '';
      if (router) await nb.detachSwitch(router.uuid, current.uuid, { ...routerPortNames({ subnet, switchName: current.name }), subnet });
      if (await nb.deleteSwitchIf(current.uuid, current.externalIds)) {
        this.switchIds.delete(subnet);
        log.info('removed the OVN logical switch: no host uses it any more', { switch: current.name });
        if (routerName) await this.routers.removeRouterIfUnused(routerName);
        return;
      }
    }
    throw unavailable('OvnBusy', `the OVN switch ${sw.name} kept changing while this host left it; try again`);
  }

  // ---- endpoints ----

  async attachEndpoint(network: NetworkRecord, endpoint: EndpointRecord): Promise<void> {
    const { ovn } = ovnNetwork(network);
    const primary = primaryAddress(endpoint);
    const addresses = boundAddresses(endpoint);
    // The claim bound an IPv4 address to the MAC derived from it: the usual endpoint needs no write here.
    if (canonicalJson(addresses) === canonicalJson(reservationPort({ ...ovn, networkId: network.id }, primary, await this.chassis(), '').addresses)) return;
    await this.bind(network, endpoint);
  }

  /** Gives an endpoint's logical port its MAC and addresses (claiming it again if the database lost it). */
  private async bind(network: NetworkRecord, endpoint: EndpointRecord): Promise<void> {
    const { nb } = this.o;
    const chassis = await this.chassis();
    const { ovn } = ovnNetwork(network);
    const addresses = boundAddresses(endpoint);
    const primary = primaryAddress(endpoint);
    if (await nb.updatePort(portName(ovn, primary), chassis.name, { addresses, portSecurity: addresses, externalIds: {} })) return;
    // Its port is gone (deleted by hand, or never made): hold the address again, unless another host has it now.
    const claim = await this.claim(network, primary, { explicit: true });
    if (!claim.claimed || !(await nb.updatePort(portName(ovn, primary), chassis.name, { addresses, portSecurity: addresses, externalIds: {} }))) {
      throw conflict('AddressInUse', `address ${primary} of subnet ${ovn.subnet} is held by ${claim.claimed ? 'another host' : claim.holder}: its logical port is not this host's`);
    }
  }

  async prepareEndpoint(network: NetworkRecord, endpoint: EndpointRecord): Promise<void> {
    await this.o.host.makeEndpointDevices(network, endpoint);
    await this.installed(endpoint.hostIf, portName(ovnNetwork(network).ovn, primaryAddress(endpoint)));
  }

  teardownEndpoint(endpoint: Pick<EndpointRecord, 'id' | 'hostIf' | 'peerIf'>): Promise<void> {
    // The port goes before the answer: its interface names a logical port after the address, which a
    // container started next on this host may take, and ovn-controller must not bind the old interface to it.
    return this.o.host.removeEndpointDevices(endpoint, undefined, false, { portNow: true });
  }

  /** Waits until this host's ovn-controller has installed the port's flows (it marks the interface ovn-installed). */
  private async installed(iface: string, logicalPort: string): Promise<void> {
    const started = performance.now();
    const deadline = Date.now() + this.o.installTimeoutMs;
    // A local OVSDB read every few milliseconds: ovn-controller marks a port some tens of milliseconds after it is added.
    for (let wait = 5; ; wait = Math.min(wait + 1, 20)) {
      const ids = await this.o.host.ovs.interfaceIds(iface);
      if (ids?.['ovn-installed'] === 'true') {
        this.onInstalled?.((performance.now() - started) / 1000);
        return;
      }
      if (Date.now() > deadline) {
        throw unavailable(
          'OvnNotInstalled',
          `ovn-controller on this host did not install logical port ${logicalPort} within ${this.o.installTimeoutMs} ms: is it running and connected to the southbound database? (ovn-appctl -t ovn-controller connection-status)`,
        );
      }
      await new Promise((r) => setTimeout(r, wait));
    }
  }

  /** Told how long each wait for ovn-controller to install a port took, in seconds (metrics). */
  onInstalled: ((seconds: number) => void) | undefined;

  // ---- addresses held across hosts (for IPAM) ----

  networkOf(poolId: string): NetworkRecord | undefined {
    for (const network of this.o.state.networks.values()) {
      if (!network.ovn) continue;
      if ([...network.ipv4, ...network.ipv6].some((s) => poolIdOf(s.addressSpace, s.pool) === poolId)) return network;
    }
    return undefined;
  }

  isShared(network: NetworkRecord, address: string): boolean {
    return ![...network.ipv4, ...network.ipv6].some((s) => s.gateway === address || Object.values(s.auxAddresses).includes(address));
  }

  async startOffset(): Promise<number> {
    return hashOf((await this.chassis()).name);
  }

  async claim(network: NetworkRecord, address: string, options: { explicit: boolean }): Promise<{ claimed: true } | { claimed: false; holder: string }> {
    const { nb } = this.o;
    const chassis = await this.chassis();
    const { ovn } = ovnNetwork(network);
    for (let attempt = 0; attempt < 3; attempt++) {
      const uuid = this.switchIds.get(ovn.subnet) ?? (await nb.findSwitch(ovn.subnet))?.uuid;
      if (!uuid) {
        await this.ensureSwitch(network);
        continue;
      }
      this.switchIds.set(ovn.subnet, uuid);
      const result = await nb.addPort(uuid, reservationPort({ ...ovn, networkId: network.id }, address, chassis, new Date().toISOString()));
      if (result.added) return { claimed: true };
      if (result.reason === 'no-switch') {
        this.switchIds.delete(ovn.subnet); // made again meanwhile: look it up
        continue;
      }
      // Held already: by this host (a replay after a restart) it is ours; by another, it is theirs.
      if (result.holder?.externalIds[NB.chassis] === chassis.name) return { claimed: true };
      if (options.explicit) this.o.log.info('address held by another host', { networkId: network.id, address, holder: result.holder && holderOf(result.holder) });
      return { claimed: false, holder: result.holder ? holderOf(result.holder) : 'another host' };
    }
    throw unavailable('OvnBusy', `the OVN switch of ${ovn.subnet} is gone and could not be made again; try again`);
  }

  async heldElsewhere(network: NetworkRecord): Promise<string[]> {
    const { nb } = this.o;
    const chassis = await this.chassis();
    const { subnet } = ovnNetwork(network).ovn;
    const view = await nb.view({ subnets: [subnet] });
    const sw = view.switches.find((s) => s.externalIds[NB.subnet] === subnet);
    return (sw ? view.ports.get(sw.uuid) ?? [] : []).filter((p) => p.externalIds[NB.chassis] !== chassis.name).flatMap((p) => (p.externalIds[NB.address] ? [p.externalIds[NB.address]!] : []));
  }

  async release(network: NetworkRecord, address: string): Promise<void> {
    const { nb } = this.o;
    const chassis = await this.chassis();
    const { ovn } = ovnNetwork(network);
    const { subnet } = ovn;
    const name = portName(ovn, address);
    const cached = this.switchIds.get(subnet);
    if (cached && (await nb.deletePort(cached, name, chassis.name))) return;
    // Not cached, or the switch was made again meanwhile: look it up.
    this.switchIds.delete(subnet);
    const sw = await nb.findSwitch(subnet);
    if (sw && sw.uuid !== cached) await nb.deletePort(sw.uuid, name, chassis.name);
  }

  // ---- the reconciler's and doctor's view ----

  /** Differences between this host's records and the northbound database (and its own ovn-controller). */
  async differences(observed: ObservedHost, options: { now: number; graceMs: number; docker?: readonly DockerNetwork[] | undefined }): Promise<Array<{ drift: Drift; repair: NbRepair | undefined }>> {
    const records = this.o.state.records();
    let view;
    let identity;
    try {
      identity = await this.identity.identify();
      if (identity.decision.kind === 'refused') return conflictDrift(identity.me, identity.decision).map((drift) => ({ drift, repair: undefined }));
      view = await this.o.nb.view({ routers: true, subnets: this.views.subnets(), chassis: { name: identity.me.chassis, hostname: identity.me.hostname } });
    } catch (err) {
      if (isPluginError(err, 'BadRequest')) throw err;
      return [{ drift: { kind: 'ovn-unreachable', subject: 'OVSNET_OVN_NB', detail: `the OVN northbound database cannot be asked: ${errorMessage(err)}`, fix: 'check the northbound database cluster (ovn-appctl -t <its ctl socket> cluster/status OVN_Northbound) and OVSNET_OVN_NB' }, repair: undefined }];
    }
    const chassis = { name: identity.me.chassis, hostname: identity.me.hostname };
    const out: Array<{ drift: Drift; repair: NbRepair | undefined }> = [
      ...conflictDrift(identity.me, identity.decision).map((drift) => ({ drift, repair: undefined })),
      ...diffNorthbound(records, view, chassis, { ...options, external: this.o.external }),
      ...(await this.views.goneHosts(view, chassis.name, options)).map((drift) => ({ drift, repair: undefined })),
    ];
    // A port ovn-controller has not installed carries no traffic (unless its logical port is missing: that is the cause, reported above).
    const lost = new Set(out.filter((d) => d.drift.kind === 'ovn-port-missing').map((d) => d.drift.subject));
    out.push(...notInstalled(records, observed.ports, lost).map((drift) => ({ drift, repair: undefined })));
    // This host's settings for swarm networks (config-only networks of OVN mode), against the switches of their subnets.
    const configs = configOnlySubnets(options.docker ?? []);
    if (configs.length > 0) {
      // A failed read here costs only this check (the next pass looks again), never the repairs found above.
      const switches = await this.o.nb.view({ subnets: configs, ports: false }).then((v) => v.switches, () => undefined);
      const defaults = { bridge: this.o.bridge, ovn: { bridge: this.o.bridge } };
      if (switches) out.push(...configOnlyDrift(options.docker ?? [], switches, defaults).map((drift) => ({ drift, repair: undefined })));
    }
    return out;
  }

  /** Releases what a host gone for good held (driver/ovn-forget.ts). */
  forgetHost(chassis: string, options: { idleMs?: number }): Promise<ForgetReport> {
    return this.views.forgetHost(chassis, options);
  }

  /** What `ovsnet trace` asks of OVN. */
  traceContext(tracing: Tracing): OvnTraceContext {
    return this.views.traceContext(tracing);
  }

  /** The hosts that use each OVN network, for `ovsnet networks`. */
  hostsOf(): Promise<Record<string, string[]> | undefined> {
    return this.views.hostsOf();
  }

  /** Every host's logical ports on this host's OVN networks, and the routers' active gateways, for `ovsnet graph`. */
  picture(): Promise<OvnPicture | undefined> {
    return this.views.picture();
  }

  /** Closes the southbound connection, if one was opened. */
  close(): void {
    this.views.close();
  }

  /** Applies one repair of the northbound diff. */
  async repair(repair: NbRepair): Promise<boolean> {
    const { state, nb } = this.o;
    const chassis = await this.chassis();
    switch (repair.type) {
      case 'ensure-switch': {
        const network = state.networks.get(repair.networkId);
        if (!network) return false;
        await this.ensureSwitch(network);
        return true;
      }
      case 'claim': {
        const network = state.networks.get(repair.networkId);
        if (!network) return false;
        return (await this.claim(network, repair.address, { explicit: true })).claimed;
      }
      case 'bind': {
        const network = state.networks.get(repair.networkId);
        const endpoint = state.endpoints.get(repair.endpointId);
        if (!network || !endpoint) return false;
        await this.bind(network, endpoint);
        return true;
      }
      case 'delete-port':
        return nb.deletePort(repair.switchUuid, repair.name, chassis.name, repair.asRead);
      case 'leave-switch': {
        const sw = (await nb.view({ ports: false })).switches.find((s) => s.uuid === repair.switchUuid);
        if (!sw) return false;
        await this.leaveSwitch(sw);
        return true;
      }
    }
  }

  /** The IPAM pools' ip-ranges of a network's subnets (every host must give the same). */
  private ranges(subnets: readonly { addressSpace: string; pool: string }[]): Map<string, string> {
    const out = new Map<string, string>();
    for (const s of subnets) {
      const pool = this.o.state.pools.get(poolIdOf(s.addressSpace, s.pool));
      if (pool) out.set(s.pool, pool.range);
    }
    return out;
  }
}
