/**
 * CreateEndpoint and DeleteEndpoint, and the repair of one endpoint's port.
 *
 * An endpoint is a veth pair whose host end becomes a port of its network;
 * the other end goes into the container. Its record is written at
 * CreateEndpoint and the answer sent at once; the devices are then made in
 * the background while dockerd does its own bookkeeping, and Join waits for
 * them, so a start does not pay for both in a row.
 */
import { conflict, isPluginError } from '../../errors.js';
import { firewallRules } from '../../domain/firewall.js';
import { foreignBridges } from '../../domain/host.js';
import { parseCidrWithHost } from '../../domain/cidr.js';
import type { HostDifference } from '../../domain/repairs.js';
import { hostVethName, macForEndpoint, macForIpv4, normaliseMac, peerVethName, short } from '../../domain/names.js';
import { parseEndpointOptions } from '../../domain/options.js';
import { endpointAddress, subnetHolding } from '../../domain/ranges.js';
import { type EndpointRecord, type NetworkRecord, isOwnAddressSpace, poolIdOf } from '../../domain/records.js';
import { badRequest } from '../../errors.js';
import type { CreateEndpointRequest, CreateEndpointResponse, EndpointRef } from '../../protocol/network.js';
import { shapeOf } from '../spares.js';
import { type NetworkContext, backendFor, endpointLock, networkOf } from './context.js';

export function createEndpoint(ctx: NetworkContext, req: CreateEndpointRequest): Promise<CreateEndpointResponse> {
  return ctx.locks.run(endpointLock(req.endpointId), async () => {
    const { state } = ctx;
    const network = networkOf(ctx, req.networkId);
    const options = parseEndpointOptions(req.driverOptions ?? {});
    if (options.rate && network.spec.mode === 'ovn') {
      throw badRequest('InvalidOption', "endpoint option rate applies to networks of mode=vlan, vxlan or gre: an OVN network's ports are ovn-controller's to program");
    }
    const address = endpointAddress(req.address, network.ipv4, 4);
    const addressIpv6 = endpointAddress(req.addressIpv6, network.ipv6, 6);
    const given = req.macAddress || req.optionMac;
    const mac = given ? normaliseMac(given) : address ? macForIpv4(address) : macForEndpoint(req.endpointId);
    if (!mac) throw badRequest('InvalidMac', `invalid MAC address "${given}": need a unicast address like 02:42:0a:00:00:05`);
    const answer: CreateEndpointResponse = req.macAddress ? {} : { Interface: { MacAddress: mac } };

    const existing = state.endpoints.get(req.endpointId);
    if (existing) {
      if (existing.networkId !== req.networkId || existing.address !== address || existing.mac !== mac || JSON.stringify(existing.rate) !== JSON.stringify(options.rate)) {
        throw conflict('EndpointExists', `endpoint ${short(req.endpointId)} already exists with different settings`);
      }
      return answer;
    }
    await retireDeadHolders(ctx, network, req.endpointId, [address, addressIpv6]);
    try {
      checkAddressFree(ctx, network, req.endpointId, address);
      checkAddressFree(ctx, network, req.endpointId, addressIpv6);
    } catch (err) {
      if (isPluginError(err) && err.shield) ctx.ipam.shieldFromRollback(err.shield.poolId, err.shield.address);
      throw err;
    }
    // A pair made ahead of need, when there is one of this network's shape: then Join spawns no program.
    const spare = ctx.spares.take(shapeOf(network));
    const record: EndpointRecord = {
      id: req.endpointId,
      networkId: req.networkId,
      address,
      addressIpv6,
      mac,
      hostIf: spare?.host ?? hostVethName(req.endpointId),
      peerIf: spare?.peer ?? peerVethName(req.endpointId),
      joined: false,
      sandboxKey: '',
      createdAt: new Date().toISOString(),
      ...(options.rate ? { rate: options.rate } : {}),
    };
    // A spare's names stay the pool's until the endpoint stands (record written, backend attached), and are
    // given up with it otherwise: never a device without a record or a pool that holds it.
    try {
      await state.commit([{ type: 'put', kind: 'endpoint', value: record }]);
    } catch (err) {
      if (spare) ctx.spares.settle(spare, true);
      throw err;
    }
    ctx.faults.point('CreateEndpoint', 'after-record');
    try {
      await backendFor(ctx, network.spec).attachEndpoint(network, record);
    } catch (err) {
      // Docker rolls a failed CreateEndpoint back with ReleaseAddress only: the record must not stay.
      await state.commit([{ type: 'del', kind: 'endpoint', key: record.id }]);
      if (spare) ctx.spares.settle(spare, true);
      throw err;
    }
    if (spare) ctx.spares.settle(spare);
    startDevices(ctx, network, record);
    ctx.log.debug('endpoint created', { networkId: req.networkId, endpointId: req.endpointId, address, mac });
    return answer;
  });
}

export function deleteEndpoint(ctx: NetworkContext, ref: EndpointRef): Promise<void> {
  return ctx.locks.run(endpointLock(ref.endpointId), () => removeEndpoint(ctx, ref));
}

/** DeleteEndpoint's work, for a caller that holds the endpoint's lock. */
async function removeEndpoint(ctx: NetworkContext, ref: EndpointRef): Promise<void> {
  const record = ctx.state.endpoints.get(ref.endpointId);
  await settleDevices(ctx, ref.endpointId);
  // The record goes first: its devices are then debris the reconciler removes, should the plugin die
  // before they are gone. Their deletion mostly finishes after the answer (LocalHost.removeEndpointDevices).
  if (record) await ctx.state.commit([{ type: 'del', kind: 'endpoint', key: record.id }]);
  ctx.faults.point('DeleteEndpoint', 'after-record');
  // Even without a record the devices are derived from the id: clean them up.
  await teardownDevices(ctx, record ?? { id: ref.endpointId, hostIf: hostVethName(ref.endpointId), peerIf: peerVethName(ref.endpointId) });
  // Its published ports go with it (Docker revokes them first, but not after a crash).
  if (record?.ports?.length) await syncPortRules(ctx);
  ctx.log.debug('endpoint deleted', { networkId: ref.networkId, endpointId: ref.endpointId });
}

/**
 * Starts making an endpoint's devices; the promise is kept for Join to wait on.
 * The work begins once the caller's answer is on its way: its first
 * steps (the port's flows and changes, built and sent) held CreateEndpoint's answer back by some 3 ms on
 * Docker 28; after it, they run while dockerd does its own work before Join.
 */
export function startDevices(ctx: NetworkContext, network: NetworkRecord, endpoint: EndpointRecord): Promise<void> {
  const work = new Promise<void>((resolve) => setImmediate(resolve)).then(() => backendFor(ctx, network.spec).prepareEndpoint(network, endpoint));
  work.catch(() => {}); // the error is reported by Join, which awaits this
  ctx.devices.set(endpoint.id, work);
  return work;
}

/** Waits for device setup still running for an endpoint, whatever its outcome. */
export async function settleDevices(ctx: NetworkContext, endpointId: string): Promise<void> {
  const pending = ctx.devices.get(endpointId);
  if (!pending) return;
  await pending.catch(() => {});
  devicesDone(ctx, endpointId);
}

/** Device setup for an endpoint is over (whatever its outcome); noted for reconcile passes under way. */
export function devicesDone(ctx: NetworkContext, endpointId: string): void {
  ctx.devices.delete(endpointId);
  ctx.devicesDoneAt.set(endpointId, performance.now());
}

/** Removes an endpoint's devices through its network's backend (the bridge backend's when the network is unknown). */
export async function teardownDevices(ctx: NetworkContext, endpoint: Pick<EndpointRecord, 'id' | 'hostIf' | 'peerIf' | 'rate'> & { networkId?: string }): Promise<void> {
  const network = endpoint.networkId === undefined ? undefined : ctx.state.networks.get(endpoint.networkId);
  await (network ? backendFor(ctx, network.spec) : ctx.bridge).teardownEndpoint(endpoint, network);
}

/**
 * Applies the repair of one endpoint's port (the reconciler's way in), under
 * the endpoint's lock and only while the endpoint still stands as it was
 * observed (at `observedAt`): not deleted meanwhile, its devices not being made
 * right now, nor made since (the pass saw a spare's port parked, retagged by
 * Join since); `apply` says whether it changed anything.
 */
export function repairEndpoint(ctx: NetworkContext, difference: HostDifference, observedAt: number, apply: () => Promise<boolean>): Promise<boolean> {
  const endpointId = difference.endpointId!;
  return ctx.locks.run(endpointLock(endpointId), async () => {
    const endpoint = ctx.state.endpoints.get(endpointId);
    if (!endpoint || !ctx.state.networks.has(endpoint.networkId) || ctx.devices.has(endpointId)) return false;
    if ((ctx.devicesDoneAt.get(endpointId) ?? -Infinity) >= observedAt) return false;
    return apply();
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
async function retireDeadHolders(ctx: NetworkContext, network: NetworkRecord, endpointId: string, addresses: string[]): Promise<void> {
  const wanted = addresses.filter(Boolean);
  const holders = ctx.state.endpointsOf(network.id).filter((o) => o.id !== endpointId && (wanted.includes(o.address) || wanted.includes(o.addressIpv6)));
  await retireDeadEndpoints(ctx, holders, endpointId);
}

/**
 * Retires those of `candidates` whose host veth is gone and whose devices are
 * not being made (see above): they hold an address, or a published port, that
 * the container of `forEndpointId` asks for.
 */
export async function retireDeadEndpoints(ctx: NetworkContext, candidates: readonly EndpointRecord[], forEndpointId: string): Promise<void> {
  const holders = candidates.filter((o) => o.id !== forEndpointId && !ctx.devices.has(o.id));
  if (holders.length === 0) return;
  const present = await ctx.host.links.list();
  for (const dead of holders.filter((h) => !present.has(h.hostIf))) {
    ctx.log.warn('retired an endpoint whose container is gone (its veth no longer exists)', {
      networkId: dead.networkId,
      endpointId: dead.id,
      address: dead.address || dead.addressIpv6,
      joined: dead.joined,
      for: forEndpointId,
    });
    await ctx.locks.run(endpointLock(dead.id), () => removeEndpoint(ctx, { networkId: dead.networkId, endpointId: dead.id }));
  }
}

/** Brings the firewall in line with the records (after ports were published or withdrawn). */
export async function syncPortRules(ctx: NetworkContext): Promise<void> {
  const networks = [...ctx.state.networks.values()].filter((n) => n.state === 'ready');
  const bridges = foreignBridges(await ctx.host.links.list());
  await ctx.host.apply({ type: 'sync-firewall', rules: firewallRules(networks, ctx.state.endpoints.values(), bridges) });
}

/**
 * IPAM answers a request for an address it already holds as a replay, so a
 * `--ip` that another container (or an aux address) holds is caught here.
 */
function checkAddressFree(ctx: NetworkContext, network: NetworkRecord, endpointId: string, address: string): void {
  if (!address) return;
  const parsed = parseCidrWithHost(address);
  const ip = address.split('/')[0]!;
  let holder: string | undefined;
  for (const other of ctx.state.endpointsOf(network.id)) {
    if (other.id !== endpointId && (other.address === address || other.addressIpv6 === address)) holder = `by another container, endpoint ${short(other.id)}`;
  }
  const subnet = parsed ? subnetHolding([...network.ipv4, ...network.ipv6], parsed.ip) : undefined;
  for (const [name, aux] of Object.entries(subnet?.auxAddresses ?? {})) {
    if (aux === ip) holder = `as auxiliary address "${name}"`;
  }
  if (!holder) return;
  const shield = subnet && isOwnAddressSpace(subnet.addressSpace) ? { poolId: poolIdOf(subnet.addressSpace, subnet.pool), address: ip } : undefined;
  throw conflict('AddressInUse', `address ${ip} is already in use on this network (${holder})`, shield);
}
