/**
 * The NetworkDriver use cases.
 *
 * A network is a bridge (created if missing), an optional VLAN tag, and, when
 * the gateway lives on the host (nat, routed), an OVS internal port carrying
 * the gateway addresses plus the firewall rules for its mode. An endpoint is a
 * veth pair whose host end becomes an access port on the bridge; the other end
 * goes into the container. The devices are made in the background right after
 * CreateEndpoint is answered, while dockerd does its own bookkeeping, and Join
 * waits for them: the start of a container does not pay for both in a row.
 *
 * Records are written before the work they describe, so a crash in between
 * leaves a record that says what to finish or undo; removal happens the other
 * way round (undo the work, then drop the record).
 */
import { badRequest, conflict, errorMessage, isPluginError, notFound } from '../errors.js';
import { type Cidr, contains, formatCidr, formatIp, overlaps, parseCidr, parseCidrWithHost } from '../domain/cidr.js';
import { firewallRules } from '../domain/firewall.js';
import {
  ENDPOINT_KEY,
  NETWORK_KEY,
  OWNER_KEY,
  OWNER_VALUE,
  ROLE_KEY,
  gatewayPortName,
  hostVethName,
  macForEndpoint,
  macForIpv4,
  normaliseMac,
  peerVethName,
} from '../domain/names.js';
import { type NetworkSpec, givesDefaultRoute, hasHostGateway, parseNetworkOptions } from '../domain/options.js';
import type { Datapath, EndpointRecord, NetworkRecord, SubnetRecord } from '../domain/records.js';
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
import { isOwnAddressSpace, poolIdOf } from './ipam-driver.js';
import { KeyedMutex } from './locks.js';
import type { DatapathProbe, Firewall, Links, Ovs, Sysctl } from './ports.js';
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
}

/** Prefix Docker gives the container end when it moves it in: eth0, eth1, ... */
const CONTAINER_PREFIX = 'eth';

export class NetworkDriver {
  private readonly locks = new KeyedMutex();
  /** Device setup started at CreateEndpoint; Join (or DeleteEndpoint) waits for it. */
  private readonly preparing = new Map<string, Promise<void>>();

  constructor(private readonly o: NetworkDriverOptions) {}

  capabilities() {
    return { Scope: 'local' as const, ConnectivityScope: 'local' as const };
  }

  // ---- networks ----

  createNetwork(req: CreateNetworkRequest): Promise<void> {
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
          throw conflict('NetworkExists', `network ${req.networkId.slice(0, 12)} already exists with a different configuration`);
        }
        await this.realise(existing);
        return;
      }
      this.checkConflicts(req.networkId, spec, [...ipv4, ...ipv6]);
      await this.checkBridgeName(spec.bridge);

      const record: NetworkRecord = {
        id: req.networkId,
        spec,
        ipv4,
        ipv6,
        gatewayPort: hasHostGateway(spec) ? gatewayPortName(req.networkId) : undefined,
        datapath: undefined,
        state: 'creating',
        createdAt: new Date().toISOString(),
      };
      await state.commit([{ type: 'put', kind: 'network', value: record }]);
      try {
        const datapath = await this.realise(record);
        await state.commit([{ type: 'put', kind: 'network', value: { ...record, datapath, state: 'ready' } }]);
      } catch (err) {
        log.warn('network setup failed; rolling back', { error: errorMessage(err) });
        await this.unrealise(record).catch((e) => log.error('rollback of network setup failed', { error: errorMessage(e) }));
        await state.commit([{ type: 'del', kind: 'network', key: record.id }]);
        throw err;
      }
      log.info('network created', {
        bridge: spec.bridge,
        vlan: spec.vlan,
        gatewayMode: spec.gatewayMode,
        internal: spec.internal,
        subnets: [...ipv4, ...ipv6].map((s) => s.pool),
      });
    });
  }

  deleteNetwork(networkId: string): Promise<void> {
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
      await state.commit([{ type: 'del', kind: 'network', key: networkId }]);
      log.info('network deleted');
    });
  }

  /** Brings the host in line with a network record; safe to repeat. Returns the bridge's datapath. */
  async realise(record: NetworkRecord): Promise<Datapath> {
    const { ovs, links, sysctl, defaults } = this.o;
    const { spec } = record;
    const wanted = defaults.datapath === 'auto' ? await this.o.datapathProbe.detect() : defaults.datapath;
    const { info } = await ovs.ensureBridge(spec.bridge, {
      datapathType: wanted,
      externalIds: { [OWNER_KEY]: OWNER_VALUE },
    });
    const datapath: Datapath = info.datapathType === 'netdev' ? 'netdev' : 'system';
    if (record.gatewayPort) {
      await ovs.addPort({
        bridge: spec.bridge,
        name: record.gatewayPort,
        type: 'internal',
        tag: spec.vlan,
        mtuRequest: spec.mtu,
        externalIds: { [OWNER_KEY]: OWNER_VALUE, [NETWORK_KEY]: record.id, [ROLE_KEY]: 'gateway' },
      });
      const addresses = [...record.ipv4, ...record.ipv6]
        .filter((s) => s.gateway)
        .map((s) => `${s.gateway}/${s.pool.split('/')[1]}`);
      await links.configureAddresses(record.gatewayPort, { mtu: spec.mtu, addresses });
      if (datapath === 'netdev') await links.disableTxOffload([record.gatewayPort]);
      if (!spec.internal && record.ipv4.length > 0) await sysctl.enableIpv4Forwarding();
    }
    await this.syncFirewall([...this.others(record.id), record]);
    return datapath;
  }

  private async unrealise(record: NetworkRecord): Promise<void> {
    const { ovs } = this.o;
    const log = this.o.log.child({ networkId: record.id });
    const others = this.others(record.id);
    if (record.gatewayPort) await this.deleteOwnedPort(record.gatewayPort, log);
    await this.syncFirewall(others);
    const stillUsed = others.some((n) => n.spec.bridge === record.spec.bridge);
    if (stillUsed) return;
    const bridge = await ovs.bridge(record.spec.bridge);
    if (bridge && bridge.externalIds[OWNER_KEY] === OWNER_VALUE && bridge.ports.every((p) => p === bridge.name)) {
      await ovs.deleteOwnedBridge(bridge.name);
      log.info('deleted bridge the plugin created, now unused', { bridge: bridge.name });
    }
  }

  private firewallChain = Promise.resolve();

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

  private checkConflicts(networkId: string, spec: NetworkSpec, subnets: readonly SubnetRecord[]): void {
    for (const other of this.o.state.networks.values()) {
      if (other.id === networkId) continue;
      const sameSegment = other.spec.bridge === spec.bridge && other.spec.vlan === spec.vlan;
      const routedOnHost = hasHostGateway(spec) || hasHostGateway(other.spec);
      for (const mine of subnets) {
        for (const theirs of [...other.ipv4, ...other.ipv6]) {
          if (mine.addressSpace === theirs.addressSpace && mine.pool === theirs.pool && isOwnAddressSpace(mine.addressSpace)) {
            this.o.ipam.shieldFromRollback(poolIdOf(mine.addressSpace, mine.pool));
            throw conflict('SubnetInUse', `subnet ${mine.pool} is already used by network ${other.id.slice(0, 12)}; choose another --subnet`);
          }
          const a = parseCidr(mine.pool) as Cidr;
          const b = parseCidr(theirs.pool) as Cidr;
          if (overlaps(a, b) && (routedOnHost || sameSegment)) {
            const why = routedOnHost ? 'both would be routed on this host' : 'both are on the same bridge and VLAN';
            throw conflict('SubnetOverlap', `subnet ${mine.pool} overlaps subnet ${theirs.pool} of network ${other.id.slice(0, 12)} (${why})`);
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
      throw badRequest(
        'BridgeNameTaken',
        `invalid value "${name}" for option bridge: a network interface with that name exists and is not an OVS bridge`,
      );
    }
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
          throw conflict('EndpointExists', `endpoint ${req.endpointId.slice(0, 12)} already exists with different settings`);
        }
        return answer;
      }
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
      this.prepare(network, record);
      this.o.log.debug('endpoint created', { networkId: req.networkId, endpointId: req.endpointId, address, mac });
      return answer;
    });
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
        holder = `by another container, endpoint ${other.id.slice(0, 12)}`;
      }
    }
    const subnet = [...network.ipv4, ...network.ipv6].find((s) => {
      const pool = parseCidr(s.pool);
      const parsed = parseCidrWithHost(address);
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
      await this.o.state.commit([{ type: 'put', kind: 'endpoint', value: { ...record, joined: false, sandboxKey: '' } }]);
    });
  }

  /**
   * Published ports are refused rather than ignored: the plugin does not map
   * host ports, and a remote driver's mappings would not show in `docker port`.
   */
  programExternalConnectivity(req: ProgramRequest): Record<string, never> {
    const ports = publishedPorts(req.options);
    if (ports.length > 0) {
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
        vlan: network.spec.vlan ?? null,
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
    const { spec } = network;
    const work = (async () => {
      await links.createVeth({ host: endpoint.hostIf, peer: endpoint.peerIf, mtu: spec.mtu, peerMac: endpoint.mac });
      await Promise.all([
        network.datapath === 'netdev' ? links.disableTxOffload([endpoint.hostIf, endpoint.peerIf]) : undefined,
        ovs.addPort({
          bridge: spec.bridge,
          name: endpoint.hostIf,
          type: '',
          tag: spec.vlan,
          externalIds: {
            [OWNER_KEY]: OWNER_VALUE,
            [NETWORK_KEY]: network.id,
            [ENDPOINT_KEY]: endpoint.id,
            [ROLE_KEY]: 'endpoint',
          },
        }),
      ]);
    })();
    work.catch(() => {}); // the error is reported by Join, which awaits this
    this.preparing.set(endpoint.id, work);
    return work;
  }

  /** Waits for device setup still running for an endpoint, whatever its outcome. */
  private async settle(endpointId: string): Promise<void> {
    const pending = this.preparing.get(endpointId);
    if (!pending) return;
    await pending.catch(() => {});
    this.preparing.delete(endpointId);
  }

  private joinAnswer(network: NetworkRecord, endpoint: EndpointRecord): JoinResponse {
    const answer: JoinResponse = { InterfaceName: { SrcName: endpoint.peerIf, DstPrefix: CONTAINER_PREFIX } };
    if (givesDefaultRoute(network.spec)) {
      const gateway = gatewayFor(network.ipv4, endpoint.address);
      const gatewayIpv6 = gatewayFor(network.ipv6, endpoint.addressIpv6);
      if (gateway) answer.Gateway = gateway;
      if (gatewayIpv6) answer.GatewayIPv6 = gatewayIpv6;
    }
    // Without a gateway Docker would otherwise attach docker_gwbridge to give one.
    if (!answer.Gateway) answer.DisableGatewayService = true;
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
    if (!network) throw notFound('UnknownNetwork', `network ${id.slice(0, 12)} is not known to the ovs plugin`);
    return network;
  }

  private endpoint(id: string, networkId: string): EndpointRecord {
    const endpoint = this.o.state.endpoints.get(id);
    if (!endpoint || endpoint.networkId !== networkId) {
      throw notFound('UnknownEndpoint', `endpoint ${id.slice(0, 12)} is not known on network ${networkId.slice(0, 12)}`);
    }
    return endpoint;
  }

  private endpointAddress(network: NetworkRecord, text: string, family: 4 | 6): string {
    if (!text) return '';
    const parsed = parseCidrWithHost(text);
    const subnets = family === 4 ? network.ipv4 : network.ipv6;
    const fits = parsed && subnets.some((s) => {
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

function gatewayFor(subnets: readonly SubnetRecord[], address: string): string | undefined {
  const parsed = address ? parseCidrWithHost(address) : undefined;
  if (!parsed) return undefined;
  for (const subnet of subnets) {
    const pool = parseCidr(subnet.pool);
    if (pool && contains(pool, parsed.ip)) return subnet.gateway;
  }
  return undefined;
}
