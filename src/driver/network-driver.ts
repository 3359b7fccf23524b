/**
 * The NetworkDriver use cases.
 *
 * A network is a segment of an OVS bridge (created if missing), identified by
 * a tag: its VLAN, or for an overlay without one, a local tag of its own.
 * - mode=vlan: the segment is a VLAN; with `uplink`, a host interface carries
 *   it to the physical network as a trunk.
 * - mode=vxlan/gre: the segment is extended to each peer host by one tunnel
 *   port per peer, keyed with the network's VNI or GRE key.
 * When the gateway lives on the host (nat, routed; VLAN networks only), an OVS
 * internal port on the segment carries the gateway addresses, with the
 * firewall rules of its mode.
 *
 * An endpoint is a veth pair whose host end becomes an access port on the
 * segment; the other end goes into the container. The devices are made in the
 * background right after CreateEndpoint is answered, while dockerd does its
 * own bookkeeping, and Join waits for them: the start of a container does not
 * pay for both in a row.
 *
 * Records are written before the work they describe, so a crash in between
 * leaves a record that says what to finish or undo; removal happens the other
 * way round (undo the work, then drop the record).
 */
import { badRequest, conflict, errorMessage, exhausted, isPluginError, notFound } from '../errors.js';
import { type Cidr, contains, formatCidr, formatIp, overlaps, parseCidr, parseCidrWithHost, parseIp } from '../domain/cidr.js';
import { firewallRules } from '../domain/firewall.js';
import {
  ENDPOINT_KEY,
  NETWORK_KEY,
  OWNER_KEY,
  OWNER_VALUE,
  PEER_KEY,
  ROLE_KEY,
  gatewayPortName,
  hostVethName,
  macForEndpoint,
  macForIpv4,
  normaliseMac,
  peerVethName,
  tunnelPortName,
} from '../domain/names.js';
import { type NetworkSpec, givesDefaultRoute, hasHostGateway, isOverlay, parseNetworkOptions, parsePeers } from '../domain/options.js';
import { type Datapath, type EndpointRecord, type NetworkRecord, type SubnetRecord, isOwnAddressSpace } from '../domain/records.js';
import type { Logger } from '../log.js';
import type {
  CreateEndpointRequest,
  CreateEndpointResponse,
  CreateNetworkRequest,
  EndpointRef,
  IpamData,
  JoinRequest,
  JoinResponse,
  ProgramRequest,
} from '../protocol/network.js';
import { publishedPorts } from '../protocol/network.js';
import { type Faults, noFaults } from './faults.js';
import { poolIdOf } from './ipam-driver.js';
import { KeyedMutex } from './locks.js';
import type { DatapathProbe, Firewall, Links, Ovs, PortInfo, PortSpec, Sysctl } from './ports.js';
import type { State } from './state.js';

export type DatapathSetting = 'auto' | Datapath;

export interface NetworkDriverOptions {
  state: State;
  ovs: Ovs;
  links: Links;
  firewall: Firewall;
  sysctl: Sysctl;
  datapathProbe: DatapathProbe;
  /** Told about requests refused because another network or endpoint holds their pool or address. */
  ipam: { shieldFromRollback(poolId: string, address?: string): void };
  defaults: { bridge: string; datapath: DatapathSetting; mtu: number };
  log: Logger;
  /** Test-only crash points (OVSNET_FAULT). */
  faults?: Faults;
}

/** Prefix Docker gives the container end when it moves it in: eth0, eth1, ... */
const CONTAINER_PREFIX = 'eth';

/**
 * Bytes a tunnel adds around a container's IP packet: the outer IP header,
 * the tunnel header and the inner Ethernet header.
 * VXLAN: IP + UDP 8 + VXLAN 8 + Ethernet 14. GRE (Ethernet over GRE, with key): IP + GRE 4 + key 4 + Ethernet 14.
 */
const ENCAPSULATION = {
  vxlan: { name: 'VXLAN', 4: 50, 6: 70 },
  gre: { name: 'GRE', 4: 42, 6: 62 },
} as const;
const VLAN_TAG_BYTES = 4;

export class NetworkDriver {
  private readonly locks = new KeyedMutex();
  /** Device setup started at CreateEndpoint; Join (or DeleteEndpoint) waits for it. */
  private readonly preparing = new Map<string, Promise<void>>();
  private firewallChain = Promise.resolve();

  private readonly faults: Faults;

  constructor(private readonly o: NetworkDriverOptions) {
    this.faults = o.faults ?? noFaults;
  }

  capabilities() {
    return { Scope: 'local' as const, ConnectivityScope: 'local' as const };
  }

  // ---- networks ----

  createNetwork(req: CreateNetworkRequest): Promise<void> {
    const started = performance.now();
    return this.locks.run('networks', async () => {
      const { state, defaults } = this.o;
      const spec = parseNetworkOptions(req.generic, { internal: req.internal, ipv6: req.ipv6 }, defaults);
      const ipv4 = this.subnets(req.ipv4Data, 4, 'IPv4Data');
      const ipv6 = this.subnets(req.ipv6Data, 6, 'IPv6Data');
      if (hasHostGateway(spec) && !spec.internal && ipv4.length > 0 && ipv4.some((s) => !s.gateway)) {
        throw badRequest('NoGateway', `gateway_mode=${spec.gatewayMode} needs a gateway address for every IPv4 subnet`);
      }
      const log = this.o.log.child({ networkId: req.networkId });

      const existing = state.networks.get(req.networkId);
      if (existing) {
        if (JSON.stringify([existing.spec, existing.ipv4, existing.ipv6]) !== JSON.stringify([spec, ipv4, ipv6])) {
          throw conflict('NetworkExists', `network ${short(req.networkId)} already exists with a different configuration`);
        }
        await this.realise(existing);
        return;
      }
      const localTag = this.chooseTag(req.networkId, spec);
      this.checkConflicts(req.networkId, spec, localTag, [...ipv4, ...ipv6]);
      await this.checkBridgeName(spec.bridge);
      if (spec.uplink) await this.checkUplink(spec);
      const datapath = await this.datapathOf(spec.bridge);
      const mtu = await this.mtuFor(spec, datapath);

      const record: NetworkRecord = {
        id: req.networkId,
        spec,
        ipv4,
        ipv6,
        gatewayPort: hasHostGateway(spec) ? gatewayPortName(req.networkId) : undefined,
        localTag,
        mtu,
        datapath: undefined,
        state: 'creating',
        createdAt: new Date().toISOString(),
      };
      await state.commit([{ type: 'put', kind: 'network', value: record }]);
      this.faults.point('CreateNetwork', 'after-record');
      try {
        const applied = await this.realise(record, true);
        await state.commit([{ type: 'put', kind: 'network', value: { ...record, datapath: applied, state: 'ready' } }]);
      } catch (err) {
        log.warn('network setup failed; rolling back', { error: errorMessage(err) });
        await this.unrealise(record).catch((e) => log.error('rollback of network setup failed', { error: errorMessage(e) }));
        await state.commit([{ type: 'del', kind: 'network', key: record.id }]);
        throw err;
      }
      log.info('network created', {
        mode: spec.mode,
        bridge: spec.bridge,
        vlan: spec.vlan,
        localTag,
        tunnelKey: spec.tunnelKey,
        peers: isOverlay(spec) ? spec.peers : undefined,
        uplink: spec.uplink,
        mtu,
        gatewayMode: spec.gatewayMode,
        internal: spec.internal,
        subnets: [...ipv4, ...ipv6].map((s) => s.pool),
        durationMs: Math.round((performance.now() - started) * 10) / 10,
      });
    });
  }

  deleteNetwork(networkId: string): Promise<void> {
    const started = performance.now();
    return this.locks.run('networks', async () => {
      const { state } = this.o;
      const record = state.networks.get(networkId);
      if (!record) return;
      const log = this.o.log.child({ networkId });
      for (const endpoint of state.endpointsOf(networkId)) {
        await this.locks.run(`endpoint:${endpoint.id}`, async () => {
          await this.settle(endpoint.id);
          await this.teardownEndpoint(endpoint);
          await state.commit([{ type: 'del', kind: 'endpoint', key: endpoint.id }]);
          log.info('removed endpoint left on deleted network', { endpointId: endpoint.id });
        });
      }
      await this.unrealise(record);
      this.faults.point('DeleteNetwork', 'after-teardown');
      await state.commit([{ type: 'del', kind: 'network', key: networkId }]);
      log.info('network deleted', { durationMs: Math.round((performance.now() - started) * 10) / 10 });
    });
  }

  /**
   * Undoes a network whose CreateNetwork never finished (the plugin died in
   * it, so Docker got no answer and counts it as failed).
   */
  abandonCreate(networkId: string): Promise<void> {
    return this.locks.run('networks', async () => {
      const record = this.o.state.networks.get(networkId);
      if (!record || record.state !== 'creating') return;
      await this.unrealise(record);
      await this.o.state.commit([{ type: 'del', kind: 'network', key: networkId }]);
    });
  }

  /** Realises a network again under the network lock (the reconciler's way in). */
  restore(networkId: string): Promise<void> {
    return this.locks.run('networks', async () => {
      const record = this.o.state.networks.get(networkId);
      if (record?.state === 'ready') await this.realise(record);
    });
  }

  /** Re-adds the OVS port of an endpoint whose veth is there but whose port is not (OVSDB lost it). */
  repairEndpointPort(endpointId: string): Promise<boolean> {
    return this.locks.run(`endpoint:${endpointId}`, async () => {
      const endpoint = this.o.state.endpoints.get(endpointId);
      const network = endpoint && this.o.state.networks.get(endpoint.networkId);
      if (!endpoint || !network) return false;
      await this.o.ovs.addPort(this.endpointPort(network, endpoint));
      return true;
    });
  }

  /**
   * Replaces the tunnel peers of an overlay without recreating it: tunnel ports
   * to new peers are added, those to removed peers deleted; containers stay.
   */
  setPeers(networkId: string, peersText: readonly string[]): Promise<NetworkRecord> {
    return this.locks.run('networks', async () => {
      const record = this.network(networkId);
      if (!isOverlay(record.spec)) {
        throw badRequest('NotOverlay', `network ${short(networkId)} is a VLAN network (mode=vlan); only overlays (mode=vxlan or gre) have peers`);
      }
      const peers = parsePeers(peersText.join(','));
      const datapath = record.datapath ?? (await this.datapathOf(record.spec.bridge));
      const path = await this.tunnelPathMtu(record.spec, peers, datapath);
      if (record.mtu > path.max) {
        throw badRequest(
          'MtuTooLarge',
          `the network's containers use MTU ${record.mtu}, but ${path.why} allows at most ${path.max}; recreate the network with -o mtu=${path.max} or raise the underlay MTU`,
        );
      }
      const updated: NetworkRecord = { ...record, spec: Object.freeze({ ...record.spec, peers }) };
      await this.o.state.commit([{ type: 'put', kind: 'network', value: updated }]);
      await this.realise(updated);
      this.o.log.info('peers changed', { networkId, peers, before: record.spec.peers });
      return updated;
    });
  }

  /**
   * Brings the host in line with a network record; safe to repeat. Returns the
   * bridge's datapath. `creating` marks the call from CreateNetwork (fault points).
   */
  async realise(record: NetworkRecord, creating = false): Promise<Datapath> {
    const { ovs, links, sysctl, defaults } = this.o;
    const { spec } = record;
    const wanted = defaults.datapath === 'auto' ? await this.o.datapathProbe.detect() : defaults.datapath;
    const { info } = await ovs.ensureBridge(spec.bridge, { datapathType: wanted, externalIds: { [OWNER_KEY]: OWNER_VALUE } });
    const datapath: Datapath = info.datapathType === 'netdev' ? 'netdev' : 'system';
    if (creating) this.faults.point('CreateNetwork', 'after-bridge');
    const owned = await ovs.listOwnedPorts();
    const has = (name: string) => owned.some((p) => p.name === name);

    if (record.gatewayPort) {
      if (!has(record.gatewayPort)) {
        await ovs.addPort({
          bridge: spec.bridge,
          name: record.gatewayPort,
          type: 'internal',
          tag: record.localTag,
          mtuRequest: record.mtu,
          externalIds: { [OWNER_KEY]: OWNER_VALUE, [NETWORK_KEY]: record.id, [ROLE_KEY]: 'gateway' },
        });
      }
      const addresses = [...record.ipv4, ...record.ipv6]
        .filter((s) => s.gateway)
        .map((s) => `${s.gateway}/${s.pool.split('/')[1]}`);
      await links.configureAddresses(record.gatewayPort, { mtu: record.mtu, addresses });
      if (datapath === 'netdev') await links.disableTxOffload([record.gatewayPort]);
      if (!spec.internal && record.ipv4.length > 0) await sysctl.enableIpv4Forwarding();
      if (creating) this.faults.point('CreateNetwork', 'after-gateway');
    }

    if (isOverlay(spec)) {
      for (const peer of spec.peers) {
        const port = this.tunnelPort(record, peer);
        if (!has(port.name)) await ovs.addPort(port);
      }
      for (const stale of this.tunnelPortsOf(record.id, owned)) {
        if (!spec.peers.includes(stale.externalIds[PEER_KEY] ?? '')) await ovs.deletePort(stale.name);
      }
    }

    if (spec.uplink) await this.syncUplink(spec.bridge, spec.uplink, [...this.others(record.id), record], owned);
    await this.syncFirewall([...this.others(record.id), record]);
    return datapath;
  }

  private async unrealise(record: NetworkRecord): Promise<void> {
    const { ovs } = this.o;
    const log = this.o.log.child({ networkId: record.id });
    const others = this.others(record.id);
    if (record.gatewayPort) await this.deleteOwnedPort(record.gatewayPort, log);
    const owned = await ovs.listOwnedPorts();
    for (const tunnel of this.tunnelPortsOf(record.id, owned)) await this.deleteOwnedPort(tunnel.name, log);
    if (record.spec.uplink) await this.syncUplink(record.spec.bridge, record.spec.uplink, others, owned);
    await this.syncFirewall(others);
    if (others.some((n) => n.spec.bridge === record.spec.bridge)) return;
    const bridge = await ovs.bridge(record.spec.bridge);
    if (bridge && bridge.externalIds[OWNER_KEY] === OWNER_VALUE && bridge.ports.every((p) => p === bridge.name)) {
      await ovs.deleteOwnedBridge(bridge.name);
      log.info('deleted bridge the plugin created, now unused', { bridge: bridge.name });
    }
  }

  private tunnelPort(record: NetworkRecord, peer: string): PortSpec {
    const { spec } = record;
    // With a vlan, the tag travels inside the tunnel (a trunk of one VLAN); without, the port is an access port.
    // Tunnel ports are protected: what arrives from one peer is never sent on to another, which in a full
    // mesh would loop broadcasts between the hosts.
    return {
      protected: true,
      bridge: spec.bridge,
      name: tunnelPortName(record.id, peer),
      type: spec.mode,
      tag: spec.vlan === undefined ? record.localTag : undefined,
      trunks: spec.vlan === undefined ? undefined : [spec.vlan],
      options: { remote_ip: peer, key: String(spec.tunnelKey) },
      externalIds: { [OWNER_KEY]: OWNER_VALUE, [NETWORK_KEY]: record.id, [ROLE_KEY]: 'tunnel', [PEER_KEY]: peer },
    };
  }

  private tunnelPortsOf(networkId: string, owned: readonly PortInfo[]): PortInfo[] {
    return owned.filter((p) => p.externalIds[ROLE_KEY] === 'tunnel' && p.externalIds[NETWORK_KEY] === networkId);
  }

  /** The uplink carries the tags of the VLAN networks that name it; it goes when the last one does. */
  private async syncUplink(bridge: string, uplink: string, networks: readonly NetworkRecord[], owned: readonly PortInfo[]): Promise<void> {
    const users = networks.filter((n) => n.spec.bridge === bridge && n.spec.uplink === uplink);
    const trunks = [...new Set(users.map((n) => n.localTag ?? 0))].sort((a, b) => a - b);
    const port = owned.find((p) => p.name === uplink);
    if (users.length === 0) {
      if (port) {
        await this.o.ovs.deletePort(uplink);
        this.o.log.info('detached uplink, no network uses it any more', { uplink, bridge });
      }
      return;
    }
    if (!port) {
      await this.o.ovs.addPort({
        bridge,
        name: uplink,
        type: '',
        tag: undefined,
        trunks,
        externalIds: { [OWNER_KEY]: OWNER_VALUE, [ROLE_KEY]: 'uplink' },
      });
      this.o.log.info('attached uplink as a trunk', { uplink, bridge, trunks });
    } else if (JSON.stringify([...port.trunks].sort((a, b) => a - b)) !== JSON.stringify(trunks)) {
      await this.o.ovs.setTrunks(uplink, trunks);
    }
  }

  private others(networkId: string): NetworkRecord[] {
    return [...this.o.state.networks.values()].filter((n) => n.id !== networkId);
  }

  /** Rewrites the plugin's chains for exactly these networks; calls are serialised. */
  private syncFirewall(networks: readonly NetworkRecord[]): Promise<void> {
    const run = () => this.o.firewall.sync(firewallRules(networks));
    const next = this.firewallChain.then(run, run);
    this.firewallChain = next.catch(() => {});
    return next;
  }

  private async datapathOf(bridge: string): Promise<Datapath> {
    const existing = await this.o.ovs.bridge(bridge);
    if (existing) return existing.datapathType === 'netdev' ? 'netdev' : 'system';
    const { datapath } = this.o.defaults;
    return datapath === 'auto' ? this.o.datapathProbe.detect() : datapath;
  }

  /** The tag of a network's ports: its vlan, or for an overlay without one, a free tag from 4094 down. */
  private chooseTag(networkId: string, spec: NetworkSpec): number | undefined {
    const used = new Map<number, NetworkRecord>();
    for (const other of this.others(networkId)) {
      if (other.spec.bridge === spec.bridge && other.localTag !== undefined) used.set(other.localTag, other);
    }
    if (spec.vlan !== undefined) {
      const holder = used.get(spec.vlan);
      if (holder && (isOverlay(spec) || isOverlay(holder.spec))) {
        throw conflict(
          'VlanInUse',
          `vlan ${spec.vlan} on bridge ${spec.bridge} is already used by network ${short(holder.id)} (mode=${holder.spec.mode}); an overlay needs a tag of its own on its bridge`,
        );
      }
      return spec.vlan;
    }
    if (!isOverlay(spec)) return undefined;
    for (let tag = 4094; tag >= 1; tag--) if (!used.has(tag)) return tag;
    throw exhausted('NoLocalTag', `bridge ${spec.bridge} has no free VLAN tag left for another overlay`);
  }

  /** MTU of the containers: asked for (and checked), or the most the uplink or the tunnel path allows. */
  private async mtuFor(spec: NetworkSpec, datapath: Datapath): Promise<number> {
    const { defaults, links } = this.o;
    let max = 65535;
    let why = '';
    if (isOverlay(spec)) {
      ({ max, why } = await this.tunnelPathMtu(spec, spec.peers, datapath));
    } else if (spec.uplink) {
      const uplink = (await links.list()).find((l) => l.name === spec.uplink)!;
      max = uplink.mtu;
      why = `the MTU of uplink ${spec.uplink}`;
    }
    if (spec.mtu === undefined) return Math.min(isOverlay(spec) ? max : defaults.mtu, max);
    if (spec.mtu > max) {
      throw badRequest('MtuTooLarge', `invalid value "${spec.mtu}" for option mtu: at most ${max} (${why})`);
    }
    return spec.mtu;
  }

  /**
   * The largest container MTU the tunnels to `peers` carry, and why. Also
   * checks each peer: reachable, not this host, and on the userspace datapath
   * reached through an OVS bridge that holds the local tunnel address (OVS
   * sends userspace tunnel packets out of such a bridge only).
   */
  private async tunnelPathMtu(spec: NetworkSpec, peers: readonly string[], datapath: Datapath): Promise<{ max: number; why: string }> {
    const { links, ovs, defaults } = this.o;
    const encapsulation = ENCAPSULATION[spec.mode as 'vxlan' | 'gre'];
    const inner = spec.vlan === undefined ? 0 : VLAN_TAG_BYTES;
    const describe = (overhead: number) =>
      `${encapsulation.name} encapsulation${inner ? ' with the VLAN tag inside' : ''} takes ${overhead} bytes`;
    if (peers.length === 0) {
      const overhead = encapsulation[4] + inner;
      return { max: defaults.mtu - overhead, why: `with no peers yet, an underlay MTU of ${defaults.mtu} is assumed and ${describe(overhead)}` };
    }
    const linkMtu = new Map((await links.list()).map((l) => [l.name, l.mtu]));
    let best: { max: number; why: string } | undefined;
    for (const peer of peers) {
      const route = await links.routeTo(peer);
      if (!route) throw badRequest('NoRouteToPeer', `invalid peer ${peer}: this host has no route to it`);
      if (route.local) throw badRequest('PeerIsLocal', `invalid peer ${peer}: it is an address of this host; peers are the other hosts' tunnel addresses`);
      if (datapath === 'netdev') {
        const bridge = await ovs.bridge(route.dev);
        if (!bridge || bridge.datapathType !== 'netdev') {
          throw badRequest(
            'TunnelPath',
            `invalid peer ${peer}: on the userspace (netdev) datapath, tunnel packets must leave through an OVS netdev bridge that holds this host's tunnel address, but the route to ${peer} goes through ${route.dev}. Put the underlay interface and its address on such a bridge, e.g. ovs-vsctl add-br br-phy -- set bridge br-phy datapath_type=netdev -- add-port br-phy ${route.dev}, then move the address of ${route.dev} to br-phy`,
          );
        }
      }
      const family = parseIp(peer)!.family;
      const overhead = encapsulation[family] + inner;
      const underlay = linkMtu.get(route.dev) ?? defaults.mtu;
      const max = underlay - overhead;
      if (!best || max < best.max) best = { max, why: `the path to ${peer} (MTU ${underlay} on ${route.dev}) minus ${describe(overhead)}` };
    }
    return best!;
  }

  private subnets(data: readonly IpamData[], family: 4 | 6, field: string): SubnetRecord[] {
    return data.map((d, i) => {
      const pool = parseCidr(d.pool);
      if (!pool || pool.family !== family) {
        throw badRequest('InvalidRequest', `invalid request: ${field}[${i}].Pool must be an IPv${family} prefix without host bits (got "${d.pool}")`);
      }
      const inPool = (text: string, what: string): string => {
        const parsed = parseCidrWithHost(text);
        if (!parsed || !contains(pool, parsed.ip)) {
          throw badRequest('InvalidRequest', `invalid request: ${field}[${i}].${what} "${text}" is not an address of ${formatCidr(pool)}`);
        }
        return formatIp(parsed.ip);
      };
      const auxAddresses: Record<string, string> = {};
      for (const [name, value] of Object.entries(d.auxAddresses)) auxAddresses[name] = inPool(value, `AuxAddresses.${name}`);
      return {
        addressSpace: d.addressSpace,
        pool: formatCidr(pool),
        gateway: d.gateway ? inPool(d.gateway, 'Gateway') : undefined,
        auxAddresses,
      };
    });
  }

  private checkConflicts(networkId: string, spec: NetworkSpec, localTag: number | undefined, subnets: readonly SubnetRecord[]): void {
    for (const other of this.others(networkId)) {
      if (isOverlay(spec) && other.spec.mode === spec.mode && other.spec.tunnelKey === spec.tunnelKey) {
        const what = spec.mode === 'vxlan' ? 'vni' : 'key';
        throw conflict('TunnelKeyInUse', `${what} ${spec.tunnelKey} is already used by network ${short(other.id)} on this host; each overlay needs its own`);
      }
      if (spec.uplink && other.spec.uplink && other.spec.bridge === spec.bridge && other.spec.uplink !== spec.uplink) {
        throw conflict('UplinkInUse', `bridge ${spec.bridge} already has uplink ${other.spec.uplink} (network ${short(other.id)}); a bridge has one uplink`);
      }
      const sameSegment = other.spec.bridge === spec.bridge && other.localTag === localTag;
      const routedOnHost = hasHostGateway(spec) || hasHostGateway(other.spec);
      for (const mine of subnets) {
        for (const theirs of [...other.ipv4, ...other.ipv6]) {
          if (mine.addressSpace === theirs.addressSpace && mine.pool === theirs.pool && isOwnAddressSpace(mine.addressSpace)) {
            this.o.ipam.shieldFromRollback(poolIdOf(mine.addressSpace, mine.pool));
            throw conflict('SubnetInUse', `subnet ${mine.pool} is already used by network ${short(other.id)}; choose another --subnet`);
          }
          const a = parseCidr(mine.pool) as Cidr;
          const b = parseCidr(theirs.pool) as Cidr;
          if (overlaps(a, b) && (routedOnHost || sameSegment)) {
            const why = routedOnHost ? 'both would be routed on this host' : 'both are on the same bridge and VLAN';
            throw conflict('SubnetOverlap', `subnet ${mine.pool} overlaps subnet ${theirs.pool} of network ${short(other.id)} (${why})`);
          }
        }
      }
    }
  }

  /** A bridge name must not be a kernel interface that is not already an OVS bridge (say, eth0). */
  private async checkBridgeName(name: string): Promise<void> {
    if (await this.o.ovs.bridge(name)) return;
    const links = await this.o.links.list();
    if (links.some((l) => l.name === name)) {
      throw badRequest('BridgeNameTaken', `invalid value "${name}" for option bridge: a network interface with that name exists and is not an OVS bridge`);
    }
  }

  /** The plugin never takes an interface the host needs: one with addresses, or its default route. */
  private async checkUplink(spec: NetworkSpec): Promise<void> {
    const { links, ovs } = this.o;
    const name = spec.uplink!;
    const invalid = (rule: string) => badRequest('InvalidUplink', `invalid value "${name}" for option uplink: ${rule}`);
    if (!(await links.list()).some((l) => l.name === name)) throw invalid('no such interface on this host');
    if ((await ovs.listOwnedPorts()).some((p) => p.name === name && p.externalIds[ROLE_KEY] === 'uplink')) return;
    if (await ovs.portExists(name)) {
      throw invalid(`it is already a port of an OVS bridge, attached by someone else; a plain port already carries every VLAN, so leave out -o uplink, or remove that port first`);
    }
    const addresses = await links.addressesOf(name);
    if (addresses.length > 0) {
      throw invalid(
        `it carries ${addresses.join(', ')}, and attaching it to a bridge would cut the host off that network. Move the addresses to the bridge yourself, in one step from a console: ovs-vsctl --may-exist add-br ${spec.bridge} -- --may-exist add-port ${spec.bridge} ${name} && ip address flush dev ${name} && ${addresses.map((a) => `ip address add ${a} dev ${spec.bridge}`).join(' && ')} && ip link set ${spec.bridge} up; then create networks without -o uplink (the port carries every VLAN)`,
      );
    }
    if ((await links.defaultRouteDevices()).includes(name)) throw invalid('it carries the host default route');
  }

  // ---- endpoints ----

  createEndpoint(req: CreateEndpointRequest): Promise<CreateEndpointResponse> {
    return this.locks.run(`endpoint:${req.endpointId}`, async () => {
      const { state } = this.o;
      const network = this.network(req.networkId);
      const address = this.endpointAddress(network, req.address, 4);
      const addressIpv6 = this.endpointAddress(network, req.addressIpv6, 6);
      const given = req.macAddress || req.optionMac;
      const mac = given ? normaliseMac(given) : address ? macForIpv4(address) : macForEndpoint(req.endpointId);
      if (!mac) throw badRequest('InvalidMac', `invalid MAC address "${given}": need a unicast address like 02:42:0a:00:00:05`);
      const answer: CreateEndpointResponse = req.macAddress ? {} : { Interface: { MacAddress: mac } };

      const existing = state.endpoints.get(req.endpointId);
      if (existing) {
        if (existing.networkId !== req.networkId || existing.address !== address || existing.mac !== mac) {
          throw conflict('EndpointExists', `endpoint ${short(req.endpointId)} already exists with different settings`);
        }
        return answer;
      }
      await this.retireDeadHolders(network, req.endpointId, [address, addressIpv6]);
      this.checkAddressFree(network, req.endpointId, address);
      this.checkAddressFree(network, req.endpointId, addressIpv6);
      const record: EndpointRecord = {
        id: req.endpointId,
        networkId: req.networkId,
        address,
        addressIpv6,
        mac,
        hostIf: hostVethName(req.endpointId),
        peerIf: peerVethName(req.endpointId),
        joined: false,
        sandboxKey: '',
        createdAt: new Date().toISOString(),
      };
      await state.commit([{ type: 'put', kind: 'endpoint', value: record }]);
      this.faults.point('CreateEndpoint', 'after-record');
      this.prepare(network, record);
      this.o.log.debug('endpoint created', { networkId: req.networkId, endpointId: req.endpointId, address, mac });
      return answer;
    });
  }

  /**
   * An endpoint whose host-side veth is gone, and whose devices are not being made
   * right now, has no container any more: the container's namespace went, taking the
   * pair with it. Docker normally deletes such an endpoint, but a dockerd that was
   * killed, or a host that lost power, can leave it behind (seen: dockerd's store lost
   * it, so its clean-up never called DeleteEndpoint); it would then refuse the same
   * container's restart with its own `--ip`. Such endpoints are retired here rather
   * than only by the next reconcile pass, which comes too late for the containers
   * dockerd restarts when it starts. (An endpoint created before a plugin restart and
   * not joined yet also has no veth; retiring it can only fail a container that asked
   * for the same address at the same time, which one of the two had to.)
   */
  private async retireDeadHolders(network: NetworkRecord, endpointId: string, addresses: string[]): Promise<void> {
    const wanted = addresses.filter(Boolean);
    const holders = this.o.state
      .endpointsOf(network.id)
      .filter((o) => o.id !== endpointId && !this.preparing.has(o.id) && (wanted.includes(o.address) || wanted.includes(o.addressIpv6)));
    if (holders.length === 0) return;
    const present = new Set((await this.o.links.list()).map((l) => l.name));
    for (const dead of holders.filter((h) => !present.has(h.hostIf))) {
      this.o.log.warn('retired an endpoint whose container is gone (its veth no longer exists)', {
        networkId: network.id,
        endpointId: dead.id,
        address: dead.address || dead.addressIpv6,
        joined: dead.joined,
        for: endpointId,
      });
      await this.deleteEndpoint({ networkId: network.id, endpointId: dead.id });
    }
  }

  /**
   * IPAM answers a request for an address it already holds as a replay, so a
   * `--ip` that another container (or an aux address) holds is caught here.
   */
  private checkAddressFree(network: NetworkRecord, endpointId: string, address: string): void {
    if (!address) return;
    const ip = address.split('/')[0]!;
    let holder: string | undefined;
    for (const other of this.o.state.endpointsOf(network.id)) {
      if (other.id !== endpointId && (other.address === address || other.addressIpv6 === address)) {
        holder = `by another container, endpoint ${short(other.id)}`;
      }
    }
    const parsed = parseCidrWithHost(address);
    const subnet = [...network.ipv4, ...network.ipv6].find((s) => {
      const pool = parseCidr(s.pool);
      return pool && parsed && contains(pool, parsed.ip);
    });
    for (const [name, aux] of Object.entries(subnet?.auxAddresses ?? {})) {
      if (aux === ip) holder = `as auxiliary address "${name}"`;
    }
    if (!holder) return;
    if (subnet && isOwnAddressSpace(subnet.addressSpace)) {
      this.o.ipam.shieldFromRollback(poolIdOf(subnet.addressSpace, subnet.pool), ip);
    }
    throw conflict('AddressInUse', `address ${ip} is already in use on this network (${holder})`);
  }

  deleteEndpoint(ref: EndpointRef): Promise<void> {
    return this.locks.run(`endpoint:${ref.endpointId}`, async () => {
      const { state } = this.o;
      const record = state.endpoints.get(ref.endpointId);
      await this.settle(ref.endpointId);
      // Even without a record the devices are derived from the id: clean them up.
      await this.teardownEndpoint(
        record ?? { id: ref.endpointId, hostIf: hostVethName(ref.endpointId), peerIf: peerVethName(ref.endpointId) },
      );
      this.faults.point('DeleteEndpoint', 'after-devices');
      if (record) await state.commit([{ type: 'del', kind: 'endpoint', key: record.id }]);
      this.o.log.debug('endpoint deleted', { networkId: ref.networkId, endpointId: ref.endpointId });
    });
  }

  join(req: JoinRequest): Promise<JoinResponse> {
    return this.locks.run(`endpoint:${req.endpointId}`, async () => {
      const { state } = this.o;
      const network = this.network(req.networkId);
      const endpoint = this.endpoint(req.endpointId, req.networkId);
      try {
        // Started by CreateEndpoint; started here when that was another plugin process.
        const devices = this.preparing.get(endpoint.id) ?? this.prepare(network, endpoint);
        try {
          await devices;
        } finally {
          this.preparing.delete(endpoint.id);
        }
        this.faults.point('Join', 'after-devices');
        await state.commit([{ type: 'put', kind: 'endpoint', value: { ...endpoint, joined: true, sandboxKey: req.sandboxKey } }]);
      } catch (err) {
        await this.teardownEndpoint(endpoint).catch((e) =>
          this.o.log.error('cleanup after failed join failed', { endpointId: endpoint.id, error: errorMessage(e) }),
        );
        throw err;
      }
      this.o.log.debug('endpoint joined', { networkId: network.id, endpointId: endpoint.id, port: endpoint.hostIf });
      return this.joinAnswer(network, endpoint);
    });
  }

  leave(ref: EndpointRef): Promise<void> {
    return this.locks.run(`endpoint:${ref.endpointId}`, async () => {
      const record = this.o.state.endpoints.get(ref.endpointId);
      if (!record || !record.joined) return;
      // The devices stay until DeleteEndpoint: Docker moves the container end back out after Leave.
      this.faults.point('Leave', 'before-record');
      await this.o.state.commit([{ type: 'put', kind: 'endpoint', value: { ...record, joined: false, sandboxKey: '' } }]);
    });
  }

  /**
   * Published ports are refused rather than ignored: the plugin does not map
   * host ports, and a remote driver's mappings would not show in `docker port`.
   */
  programExternalConnectivity(req: ProgramRequest): Record<string, never> {
    if (publishedPorts(req.options).length > 0) {
      throw badRequest(
        'PortsNotSupported',
        'publishing ports (-p, -P) is not supported on ovs networks: with gateway_mode=routed or external the container is reachable at its own address; for published ports on the host, connect the container to a Docker bridge network as well',
      );
    }
    return {};
  }

  endpointOperInfo(ref: EndpointRef): { Value: Record<string, unknown> } {
    const network = this.network(ref.networkId);
    const endpoint = this.endpoint(ref.endpointId, ref.networkId);
    return {
      Value: {
        bridge: network.spec.bridge,
        vlan: network.localTag ?? null,
        port: endpoint.hostIf,
        mac: endpoint.mac,
        address: endpoint.address,
        addressIpv6: endpoint.addressIpv6,
      },
    };
  }

  /** Creates an endpoint's veth pair and OVS port; the promise is kept for Join to wait on. */
  private prepare(network: NetworkRecord, endpoint: EndpointRecord): Promise<void> {
    const { links, ovs } = this.o;
    const work = (async () => {
      await links.createVeth({ host: endpoint.hostIf, peer: endpoint.peerIf, mtu: network.mtu, peerMac: endpoint.mac });
      await Promise.all([
        network.datapath === 'netdev' ? links.disableTxOffload([endpoint.hostIf, endpoint.peerIf]) : undefined,
        ovs.addPort(this.endpointPort(network, endpoint)),
      ]);
    })();
    work.catch(() => {}); // the error is reported by Join, which awaits this
    this.preparing.set(endpoint.id, work);
    return work;
  }

  private endpointPort(network: NetworkRecord, endpoint: EndpointRecord): PortSpec {
    return {
      bridge: network.spec.bridge,
      name: endpoint.hostIf,
      type: '',
      tag: network.localTag,
      externalIds: {
        [OWNER_KEY]: OWNER_VALUE,
        [NETWORK_KEY]: network.id,
        [ENDPOINT_KEY]: endpoint.id,
        [ROLE_KEY]: 'endpoint',
      },
    };
  }

  /** Waits for device setup still running for an endpoint, whatever its outcome. */
  private async settle(endpointId: string): Promise<void> {
    const pending = this.preparing.get(endpointId);
    if (!pending) return;
    await pending.catch(() => {});
    this.preparing.delete(endpointId);
  }

  private joinAnswer(network: NetworkRecord, endpoint: EndpointRecord): JoinResponse {
    const { spec } = network;
    const answer: JoinResponse = { InterfaceName: { SrcName: endpoint.peerIf, DstPrefix: CONTAINER_PREFIX } };
    // An overlay in nat mode leaves the default route to Docker, which attaches docker_gwbridge as for its own overlays.
    const viaDockerGateway = isOverlay(spec) && spec.gatewayMode === 'nat' && !spec.internal;
    if (givesDefaultRoute(spec) && !viaDockerGateway) {
      const gateway = gatewayFor(network.ipv4, endpoint.address);
      const gatewayIpv6 = gatewayFor(network.ipv6, endpoint.addressIpv6);
      if (gateway) answer.Gateway = gateway;
      if (gatewayIpv6) answer.GatewayIPv6 = gatewayIpv6;
    }
    // Without a gateway Docker would otherwise attach docker_gwbridge to give one.
    if (!answer.Gateway && !viaDockerGateway) answer.DisableGatewayService = true;
    return answer;
  }

  private async teardownEndpoint(endpoint: Pick<EndpointRecord, 'id' | 'hostIf' | 'peerIf'>): Promise<void> {
    const log = this.o.log.child({ endpointId: endpoint.id });
    const [, hadHost] = await Promise.all([this.deleteOwnedPort(endpoint.hostIf, log), this.o.links.deleteLink(endpoint.hostIf)]);
    // Deleting one end of a veth deletes both; the peer only remains if the pair was never complete.
    if (!hadHost) await this.o.links.deleteLink(endpoint.peerIf);
  }

  private async deleteOwnedPort(name: string, log: Logger): Promise<void> {
    try {
      await this.o.ovs.deletePort(name);
    } catch (err) {
      if (!isPluginError(err, 'Conflict')) throw err;
      log.warn('left a port alone that the plugin does not own', { port: name, error: errorMessage(err) });
    }
  }

  private network(id: string): NetworkRecord {
    const network = this.o.state.networks.get(id);
    if (!network) throw notFound('UnknownNetwork', `network ${short(id)} is not known to the ovs plugin`);
    return network;
  }

  private endpoint(id: string, networkId: string): EndpointRecord {
    const endpoint = this.o.state.endpoints.get(id);
    if (!endpoint || endpoint.networkId !== networkId) {
      throw notFound('UnknownEndpoint', `endpoint ${short(id)} is not known on network ${short(networkId)}`);
    }
    return endpoint;
  }

  private endpointAddress(network: NetworkRecord, text: string, family: 4 | 6): string {
    if (!text) return '';
    const parsed = parseCidrWithHost(text);
    const subnets = family === 4 ? network.ipv4 : network.ipv6;
    const fits =
      parsed &&
      subnets.some((s) => {
        const pool = parseCidr(s.pool);
        return pool && pool.prefix === parsed.cidr.prefix && contains(pool, parsed.ip);
      });
    if (!parsed || !fits) {
      throw badRequest(
        'InvalidAddress',
        `invalid endpoint address "${text}": must be an IPv${family} address with prefix length inside one of the network's subnets (${subnets.map((s) => s.pool).join(', ') || 'none'})`,
      );
    }
    return `${formatIp(parsed.ip)}/${parsed.cidr.prefix}`;
  }
}

function short(id: string): string {
  return id.slice(0, 12);
}

function gatewayFor(subnets: readonly SubnetRecord[], address: string): string | undefined {
  const parsed = address ? parseCidrWithHost(address) : undefined;
  if (!parsed) return undefined;
  for (const subnet of subnets) {
    const pool = parseCidr(subnet.pool);
    if (pool && contains(pool, parsed.ip)) return subnet.gateway;
  }
  return undefined;
}
