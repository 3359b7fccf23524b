/**
 * The backend of OVN networks: one logical switch per network in the
 * northbound database, shared by every host of the subnet; one logical port
 * per address a host holds (the database's unique index on port names keeps
 * an address on one host); container ports on the integration bridge, bound
 * to their logical port (`iface-id`), answered to Docker once this host's
 * ovn-controller has installed them.
 *
 * What only this host needs stays in its records; what hosts share lives in
 * the northbound database, and every row written there carries the owner
 * mark and the host that made it. The plugin never changes a row it did not write.
 */
import { badRequest, conflict, errorMessage, exhausted, internal, isPluginError, unavailable } from '../errors.js';
import { checkConflicts } from '../domain/admission.js';
import type { Drift, OvnPicture } from '../domain/drift.js';
import { diffHost, scopeOf } from '../domain/host-diff.js';
import { desiredHost, foreignBridges, type ObservedHost } from '../domain/host.js';
import { networkMtu } from '../domain/mtu.js';
import { formatIp, parseCidr, parseIp } from '../domain/cidr.js';
import { boundsSize } from '../domain/allocator.js';
import { OWNER_KEY, OWNER_VALUE } from '../domain/names.js';
import {
  type Chassis,
  GENEVE_OVERHEAD,
  NB,
  type NbRouter,
  type OvnExternal,
  describeExternal,
  gatewayPortNames,
  routerBounds,
  ROUTER,
  outsideAddress,
  routerConfig,
  routerAttachment,
  routerPortNames,
  type NbRepair,
  type NbSwitch,
  type NbView,
  boundAddresses,
  chassisKey,
  checkSameConfig,
  decodeConfig,
  defaultSwitchName,
  diffNorthbound,
  holderOf,
  identifyingSubnet,
  portName,
  primaryAddress,
  reservationPort,
  sharedConfig,
  guardAcls,
  sameGuard,
  switchHosts,
  switchRow,
} from '../domain/ovn.js';
import { absentHosts, goneHosts } from '../domain/ovn-departed.js';
import { type ForgetReport, forgetHost } from './ovn-forget.js';
import { DEFAULT_LEASE_MS, type HostIdentity, type RegistrationDecision, conflictDrift, conflictNote, decideRegistration, lastSeen, noteKey, refusal } from '../domain/ovn-identity.js';
import { type OvnSpec, canonicalJson } from '../domain/options.js';
import { type EndpointRecord, type NetworkRecord, type OvnRecord, isOvnNetwork, isOwnAddressSpace, ovnNetwork, poolIdOf } from '../domain/records.js';
import type { Logger } from '../log.js';
import type { AdmitRequest, Admitted, NetworkBackend, RealiseStep } from './backend.js';
import { LocalHost } from './host.js';
import type { DistributedAddresses } from './ipam-driver.js';
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

/** How an OVN network is made known on the host: what is missing, and how to give it. */
const CHASSIS_HOWTO =
  'run ovn-controller on this host with external_ids set in its Open vSwitch: ovs-vsctl set open . external_ids:system-id=<unique name> external_ids:ovn-remote=<southbound remotes> external_ids:ovn-encap-type=geneve external_ids:ovn-encap-ip=<this host\'s underlay address> (see docs/ovn.md)';

export class OvnBackend implements NetworkBackend, DistributedAddresses {
  private chassisName: Chassis | undefined;
  /** What was last logged of this host's registration. */
  private standing: string | undefined;
  private southbound: { remotes: string; client: Southbound } | undefined;
  private sbRemotes: string | undefined;
  private sbProblem: string | undefined;
  /** Switch uuids by subnet, so that a claim is one transaction. */
  private readonly switchIds = new Map<string, string>();

  constructor(private readonly o: OvnBackendOptions) {}

  /**
   * This host as OVN knows it (its chassis name is OVS's system-id), once it holds that name in the
   * northbound database: every OVN call of a host refused the name fails, naming both hosts.
   */
  async chassis(): Promise<Chassis> {
    if (this.chassisName) return this.chassisName;
    const { me, decision } = await this.identify();
    if (decision.kind === 'refused') throw refusal(me, decision.holder);
    this.chassisName = { name: me.chassis, hostname: me.hostname, hostId: me.hostId };
    return this.chassisName;
  }

  /**
   * Reads this host's registration of its chassis name and decides; the daemon also writes what it
   * decided (registers, renews, takes the name over, or leaves its note as a refused host). Asked at every pass.
   */
  private async identify(): Promise<{ me: HostIdentity; decision: RegistrationDecision }> {
    const { nb, log } = this.o;
    const ids = await this.o.host.ovs.systemIds();
    const name = ids['system-id'];
    const encapIp = ids['ovn-encap-ip'];
    if (!name || !encapIp) throw badRequest('OvnNotReady', `this host is not an OVN chassis yet (external_ids:system-id and ovn-encap-ip of Open vSwitch): ${CHASSIS_HOWTO}`);
    // Doctor on a host whose plugin never ran in OVN mode has no id: it cannot hold a name, only see who does.
    const me: HostIdentity = { chassis: name, hostId: this.o.hostId ?? '(none yet)', hostname: ids.hostname || name, encapIp };
    this.sbRemotes = ids['ovn-remote'];
    for (let attempt = 0; ; attempt++) {
      const row = await nb.registration(name);
      const decision = decideRegistration(row, me, Date.now(), this.leaseMs);
      if (!this.o.register || !this.o.hostId) return { me, decision };
      let written: boolean;
      switch (decision.kind) {
        case 'register':
        case 'take-over':
          written = await nb.writeRegistration(name, decision.set, [], row?.externalIds);
          break;
        case 'held':
          written = Object.keys(decision.set).length + decision.remove.length === 0 || (await nb.writeRegistration(name, decision.set, decision.remove, row!.externalIds));
          break;
        case 'refused': {
          // Best effort: the holder's doctor names this host while the note is recent.
          await nb.writeRegistration(name, conflictNote(me, Date.now()), [], row!.externalIds);
          const noted = this.o.notes?.read() ?? [];
          if (!noted.includes(name)) this.o.notes?.write([...noted, name]);
          written = true;
          break;
        }
      }
      if (written) {
        if (decision.kind !== 'refused' && this.standing !== 'held') await this.clearOwnNotes(me).catch((err) => log.warn('could not remove the notes this host left as a refused host', { error: errorMessage(err) }));
        this.tell(me, decision);
        return { me, decision };
      }
      if (attempt === 2) throw unavailable('OvnBusy', `the registration of OVN chassis name ${name} kept changing while this host read it; try again`);
    }
  }

  /**
   * Removes the notes this host left, refused another name before (a clone given a name of its own), so
   * that doctor on that name's holder stops naming it.
   */
  private async clearOwnNotes(me: HostIdentity): Promise<void> {
    const noted = this.o.notes?.read() ?? [];
    if (noted.length === 0) return;
    const key = noteKey(me.hostId);
    for (const chassis of noted.filter((c) => c !== me.chassis)) {
      const registration = await this.o.nb.registration(chassis);
      if (registration && key in registration.externalIds && (await this.o.nb.writeRegistration(chassis, {}, [key], registration.externalIds))) {
        this.o.log.info('removed the note this host left when it was refused another chassis name', { chassis });
      }
    }
    this.o.notes?.write([]);
  }

  /** Logs a change of this host's standing, once. */
  private tell(me: HostIdentity, decision: RegistrationDecision): void {
    const standing = decision.kind === 'refused' ? `refused:${decision.holder.hostId}` : 'held';
    if (standing === this.standing) return;
    this.standing = standing;
    if (decision.kind === 'refused') {
      this.chassisName = undefined;
      this.o.log.error(refusal(me, decision.holder).message, { problem: 'ovn-host-conflict' });
    } else if (decision.kind === 'take-over') {
      this.o.log.warn("took over this host's OVN chassis name: the host that registered it has not been seen for OVSNET_OVN_HOST_LEASE (this host before its state directory was made again, or one it replaced)", { chassis: me.chassis, previous: decision.previous, hostId: me.hostId });
    } else {
      this.o.log.info('this host holds its OVN chassis name', { chassis: me.chassis, hostId: me.hostId });
    }
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
    if (ovnSpec.ovnRouter) this.checkRouted(ovnSpec, subnets);
    const mtu = networkMtu(spec, this.geneveLimit(encapIp, observed), this.o.defaults.mtu);
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
      if (router) this.checkRouterConfig(router);
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
    const { host, state } = this.o;
    const observed = options.observed ?? (await host.observe());
    const networks = [...state.networks.values()].filter((n) => n.id !== network.id && n.state === 'ready');
    const desired = desiredHost([...networks, network], [...state.endpoints.values()], { datapath: await host.datapath(), foreignBridges: foreignBridges(observed.links) });
    const differences = diffHost(desired, observed, { records: state.records(), scope: scopeOf([network]), now: Date.now(), graceMs: Infinity });
    // An endpoint's port is the reconciler's to repair, under the endpoint's lock: a container may be starting now.
    for (const repair of LocalHost.repairsOf(differences.filter((d) => !d.endpointId))) await host.apply(repair);
    // The marker whose absence tells that ovn-controller cleared the bridge, guards and all (startFlowWatch).
    if (!(network.spec.allowRa && network.spec.allowDhcpServer)) await host.apply({ type: 'sync-base-flows', bridge: network.spec.bridge, pipeline: 'ovn' });
  }

  async unrealise(network: NetworkRecord): Promise<void> {
    const { host, state, nb } = this.o;
    const observed = await host.observe();
    const remaining = [...state.networks.values()].filter((n) => n.id !== network.id);
    const endpoints = [...state.endpoints.values()].filter((e) => e.networkId !== network.id);
    const desired = desiredHost(remaining.filter((n) => n.state === 'ready'), endpoints, { datapath: await host.datapath(), foreignBridges: foreignBridges(observed.links) });
    const differences = diffHost(desired, observed, { records: { networks: remaining, endpoints }, scope: scopeOf([network]), now: Date.now(), graceMs: Infinity });
    for (const repair of LocalHost.repairsOf(differences)) await host.apply(repair);
    const sw = network.ovn && (await nb.findSwitch(network.ovn.subnet));
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
          await this.ensureAttached(network, sw);
          return sw;
        }
        continue; // another host made it meanwhile: take that one
      }
      const theirs = decodeConfig(found.externalIds[NB.config]);
      if (theirs) checkSameConfig(theirs, config, found.externalIds[NB.createdBy] ?? 'unknown');
      // A switch made before the guard existed, or one whose ACLs were deleted, gets them (again).
      if (!sameGuard(found, guard) && !(await nb.setGuard(found, guard))) continue;
      if (switchHosts(found).get(chassis.name) === chassis.hostname) {
        await this.ensureAttached(network, found);
        return found;
      }
      if (await nb.updateSwitchIds(found.uuid, { [chassisKey(chassis.name)]: chassis.hostname }, [])) {
        log.info('joined the OVN logical switch', { networkId: network.id, switch: found.name, subnet: ovn.subnet, hosts: [...switchHosts(found).values(), chassis.hostname] });
        await this.ensureAttached(network, found);
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
        if (routerName) await this.removeRouterIfUnused(routerName);
        return;
      }
    }
    throw unavailable('OvnBusy', `the OVN switch ${sw.name} kept changing while this host left it; try again`);
  }

  // ---- routers ----

  /** A network on a router needs an IPv4 subnet with a gateway (the router port's address); nat needs a way out. */
  private checkRouted(spec: OvnSpec, subnets: readonly { pool: string; gateway: string | undefined }[]): void {
    const ipv4 = subnets.find((s) => !s.pool.includes(':'));
    if (!ipv4?.gateway) throw badRequest('OvnRouterNeedsGateway', `option ovn_router needs an IPv4 subnet with a gateway: the gateway address lives on the router's port`);
    if (spec.gatewayMode === 'nat' && !spec.internal && !this.o.external) {
      throw badRequest(
        'OvnNoExternal',
        `gateway_mode=nat on OVN router ${spec.ovnRouter} needs a way out: set OVSNET_OVN_EXTERNAL (the outside network: <physical network>,<subnet>,<next hop>) and OVSNET_OVN_GATEWAYS (its gateway chassis) on every host, or use gateway_mode=routed for a router between networks only`,
      );
    }
  }

  /** Every host must give a router the same way out. */
  private checkRouterConfig(router: NbRouter): void {
    const mine = routerConfig(this.o.external);
    const theirs = router.externalIds[ROUTER.config];
    if (theirs !== undefined && theirs !== mine) {
      throw conflict(
        'OvnRouterDiffers',
        `OVN router ${router.externalIds[ROUTER.name]} was made with OVSNET_OVN_EXTERNAL/OVSNET_OVN_GATEWAYS ${describeConfig(theirs)}; this host has ${describeConfig(mine)}: give every host the same`,
      );
    }
  }

  /** The router of that name: made with the first network that names it, with its way out when there is one. */
  private async ensureRouter(name: string): Promise<NbRouter> {
    const { nb, log, external } = this.o;
    for (let attempt = 0; attempt < 3; attempt++) {
      let router = await nb.findRouter(name);
      if (!router) {
        const made = await nb.createRouter(name, { [OWNER_KEY]: OWNER_VALUE, [ROUTER.name]: name, [ROUTER.config]: routerConfig(external) });
        router = made.router;
        if (made.created) log.info('made the OVN router', { router: name });
      }
      this.checkRouterConfig(router);
      if (!external || outsideAddress(router, name)) return router;
      const result = await this.addWayOut(router, external);
      if (result === 'gone') continue; // deleted by another host meanwhile (its last network went): make it again
      router = (await nb.findRouter(name)) ?? router;
      if (outsideAddress(router, name)) return router;
      if (result === 'exists') {
        const names = gatewayPortNames(name);
        throw conflict(
          'OvnRouterNameTaken',
          `OVN router ${name} cannot get its way out: a router port or HA chassis group named ${names.lrp} is already in the northbound database without being this router's (ovn-nbctl --columns=_uuid,name find Logical_Router_Port name=${names.lrp}; ovn-nbctl ha-chassis-group-list)`,
        );
      }
      throw exhausted('OvnNoOutsideAddress', `no free address left for OVN router ${name} in ${external.routerRange ?? external.subnet} (OVSNET_OVN_EXTERNAL): every one is another router's or the next hop`);
    }
    throw unavailable('OvnBusy', `OVN router ${name} kept being removed while this host made it; try again`);
  }

  /** Gives a router an outside address of its own: from a point that depends on its name, the first one no other router has. */
  private async addWayOut(router: NbRouter, external: OvnExternal): Promise<'added' | 'taken' | 'exists' | 'gone'> {
    const { nb, log } = this.o;
    const switchUuid = await nb.ensureExternalSwitch(external.physnet);
    const range = parseCidr(external.subnet)!;
    const bounds = routerBounds(external);
    const size = boundsSize(bounds);
    let candidate = bounds.first + BigInt(hashOf(router.externalIds[ROUTER.name] ?? router.name)) % size;
    let result: 'added' | 'taken' | 'exists' | 'gone' = 'taken';
    for (let i = 0n; i < size && result === 'taken'; i++, candidate = candidate >= bounds.last ? bounds.first : candidate + 1n) {
      const address = formatIp({ family: 4, value: candidate });
      if (address === external.nexthop) continue;
      result = await nb.addRouterGateway(router, { physnet: external.physnet, externalSwitchUuid: switchUuid, address, prefix: range.prefix, nexthop: external.nexthop, chassis: external.gateways });
      if (result === 'added') log.info('gave the OVN router its way out', { router: router.name, address, gateways: external.gateways.map((g) => g.chassis) });
    }
    return result;
  }

  /** Connects a network's switch to its router (whoever does it first), and completes the connection when a piece of it is missing. */
  private async ensureAttached(network: NetworkRecord, sw: NbSwitch): Promise<void> {
    const { spec, ovn } = ovnNetwork(network);
    if (!spec.ovnRouter) return;
    for (let attempt = 0; attempt < 3; attempt++) {
      const router = await this.ensureRouter(spec.ovnRouter);
      const attachment = routerAttachment({ spec, ovn, ipv4: network.ipv4, ipv6: network.ipv6 }, outsideAddress(router, spec.ovnRouter));
      const result = await this.o.nb.attachSwitch(router.uuid, sw.uuid, attachment);
      if (result === 'router-gone') continue; // its last other network went meanwhile: make it again
      if (result === 'added') this.o.log.info('connected the OVN network to its router', { networkId: network.id, router: spec.ovnRouter, gateways: attachment.lrp.networks });
      return;
    }
    throw unavailable('OvnBusy', `OVN router ${spec.ovnRouter} kept being removed while this host connected ${ovn.subnet} to it; try again`);
  }

  /** The last network off a router removes it. */
  private async removeRouterIfUnused(name: string): Promise<void> {
    const router = await this.o.nb.findRouter(name);
    if (router && (await this.o.nb.deleteRouterIf(router, this.o.external?.physnet))) this.o.log.info('removed the OVN router: no network uses it any more', { router: name });
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
  async differences(observed: ObservedHost, options: { now: number; graceMs: number }): Promise<Array<{ drift: Drift; repair: NbRepair | undefined }>> {
    const records = this.o.state.records();
    let view;
    let identity;
    try {
      identity = await this.identify();
      if (identity.decision.kind === 'refused') return conflictDrift(identity.me, identity.decision).map((drift) => ({ drift, repair: undefined }));
      view = await this.o.nb.view({ routers: true, subnets: this.subnets(), chassis: { name: identity.me.chassis, hostname: identity.me.hostname } });
    } catch (err) {
      if (isPluginError(err, 'BadRequest')) throw err;
      return [{ drift: { kind: 'ovn-unreachable', subject: 'OVSNET_OVN_NB', detail: `the OVN northbound database cannot be asked: ${errorMessage(err)}`, fix: 'check the northbound database cluster (ovn-appctl -t <its ctl socket> cluster/status OVN_Northbound) and OVSNET_OVN_NB' }, repair: undefined }];
    }
    const chassis = { name: identity.me.chassis, hostname: identity.me.hostname };
    const out: Array<{ drift: Drift; repair: NbRepair | undefined }> = [
      ...conflictDrift(identity.me, identity.decision).map((drift) => ({ drift, repair: undefined })),
      ...diffNorthbound(records, view, chassis, { ...options, external: this.o.external }),
      ...(await this.goneHosts(view, chassis.name, options)).map((drift) => ({ drift, repair: undefined })),
    ];
    // A port ovn-controller has not installed carries no traffic (unless its logical port is missing: that is the cause, reported above).
    const lost = new Set(out.filter((d) => d.drift.kind === 'ovn-port-missing').map((d) => d.drift.subject));
    for (const endpoint of records.endpoints) {
      const network = records.networks.find((n) => n.id === endpoint.networkId);
      const port = observed.ports.get(endpoint.hostIf);
      if (!network?.ovn || !port || !endpoint.joined || port.interfaceExternalIds['ovn-installed'] === 'true') continue;
      if (lost.has(portName(network.ovn, primaryAddress(endpoint)))) continue;
      out.push({
        drift: {
          kind: 'ovn-port-not-installed',
          subject: endpoint.hostIf,
          endpointId: endpoint.id,
          networkId: network.id,
          port: endpoint.hostIf,
          detail: `ovn-controller has not installed the port ${endpoint.hostIf} of endpoint ${endpoint.id.slice(0, 12)} (logical port ${port.interfaceExternalIds['iface-id']}): its container is cut off`,
          fix: 'check ovn-controller on this host (ovn-appctl -t ovn-controller connection-status; its log)',
        },
        repair: undefined,
      });
    }
    return out;
  }

  /**
   * Hosts that hold addresses or listings on this host's OVN networks and are gone from the southbound
   * database. Never repaired here: releasing another host's addresses is the operator's call (forget-host).
   */
  private async goneHosts(view: NbView, me: string, options: { now: number; graceMs: number }): Promise<Drift[]> {
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
    return goneHosts(view, absent, { ...options, leaseMs: this.leaseMs, seen });
  }

  private get leaseMs(): number {
    return this.o.leaseMs ?? DEFAULT_LEASE_MS;
  }

  /** The southbound database at this host's ovn-controller's remotes (known once identify ran). */
  private openSouthbound(): Southbound | undefined {
    const remotes = this.sbRemotes;
    if (!remotes || !this.o.openSouthbound) return undefined;
    if (this.southbound?.remotes !== remotes) {
      this.southbound?.client.close();
      this.southbound = { remotes, client: this.o.openSouthbound(remotes) };
    }
    return this.southbound.client;
  }

  /** Releases what a host gone for good held (driver/ovn-forget.ts). */
  async forgetHost(chassis: string, options: { idleMs?: number }): Promise<ForgetReport> {
    const { me } = await this.identify();
    const southbound = this.openSouthbound();
    if (!southbound) throw badRequest('OvnNotReady', `this host does not know the southbound database, which tells whether ${chassis} is gone: set external_ids:ovn-remote of its Open vSwitch (${CHASSIS_HOWTO})`);
    // A live host renews its registration every third of the lease: by default, no sign of it for a lease.
    const report = await forgetHost(this.o.nb, southbound, chassis, { me: me.chassis, now: Date.now(), idleMs: options.idleMs ?? this.leaseMs });
    this.o.log.info('forgot a host that is gone for good', { ...report });
    return report;
  }

  /** What `ovsnet trace` asks of OVN: the southbound database's remotes, the northbound ports, the ports' chassis. */
  traceContext(tracing: Tracing): OvnTraceContext {
    const remotes = async () => (this.sbRemotes = (await this.o.host.ovs.systemIds())['ovn-remote']);
    return {
      tracing,
      southbound: remotes,
      port: (name) => this.o.nb.port(name),
      residents: async (ports) => {
        await remotes();
        const southbound = this.openSouthbound();
        return southbound ? southbound.residents(ports) : new Map();
      },
    };
  }

  /** Closes the southbound connection, if one was opened. */
  close(): void {
    this.southbound?.client.close();
    this.southbound = undefined;
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
      this.sbRemotes = (await this.o.host.ovs.systemIds())['ovn-remote'];
      bound = (await this.openSouthbound()?.residents([...routers].map(redirect)).catch(() => undefined)) ?? new Map();
    }
    const gateways: Record<string, OvnPicture['gateways'][string]> = {};
    for (const router of [...routers].sort()) gateways[router] = { chassis: this.o.external ? chassis : [], active: bound.get(redirect(router)) ?? null };
    return { ports, gateways };
  }

  // ---- helpers ----

  /** The subnets of this host's OVN networks: what its reads of the northbound database are scoped to. */
  private subnets(): string[] {
    return [...this.o.state.networks.values()].flatMap((n) => (n.ovn ? [n.ovn.subnet] : []));
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

  /** Geneve's cost on the device that holds this host's encapsulation address. */
  private geneveLimit(encapIp: string, observed: ObservedHost): { max: number; why: string } {
    const family = parseIp(encapIp)?.family ?? 4;
    const overhead = GENEVE_OVERHEAD[family];
    const dev = [...observed.addresses].find(([, list]) => list.some((a) => a.split('/')[0] === encapIp))?.[0];
    const underlay = (dev && observed.links.get(dev)?.mtu) || this.o.defaults.mtu;
    return {
      max: underlay - overhead,
      why: dev
        ? `the underlay (MTU ${underlay} on ${dev}, which holds the encapsulation address ${encapIp}) minus Geneve encapsulation takes ${overhead} bytes`
        : `an underlay MTU of ${underlay} is assumed (no device holds the encapsulation address ${encapIp}) and Geneve encapsulation takes ${overhead} bytes`,
    };
  }
}

function hashOf(text: string): number {
  let hash = 0;
  for (const c of text) hash = (hash * 31 + c.charCodeAt(0)) >>> 0;
  return hash;
}

function describeConfig(config: string): string {
  return describeExternal(JSON.parse(config) as OvnExternal | null);
}
