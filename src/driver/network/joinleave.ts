/**
 * Join and Leave, and EndpointOperInfo: what happens
 * when a container is attached to, and detached from, an endpoint.
 */
import { badRequest, errorMessage } from '../../errors.js';
import { canonicalIp, parseCidrWithHost } from '../../domain/cidr.js';
import { linkLocalOf } from '../../domain/flows.js';
import { endpointPort } from '../../domain/host.js';
import { portName, primaryAddress } from '../../domain/ovn.js';
import { subnetHolding } from '../../domain/ranges.js';
import { givesDefaultRoute, routedByOvn, spansHosts } from '../../domain/options.js';
import type { EndpointRecord, NetworkRecord, SubnetRecord } from '../../domain/records.js';
import type { EndpointRef, JoinRequest, JoinResponse } from '../../protocol/network.js';
import { type NetworkContext, endpointLock, endpointOf, networkOf } from './context.js';
import { devicesDone, startDevices, teardownDevices } from './endpoints.js';

/** Prefix Docker gives the container end when it moves it in: eth0, eth1, ... */
const CONTAINER_PREFIX = 'eth';

export function join(ctx: NetworkContext, req: JoinRequest): Promise<JoinResponse> {
  return ctx.locks.run(endpointLock(req.endpointId), async () => {
    const network = networkOf(ctx, req.networkId);
    const endpoint = endpointOf(ctx, req.endpointId, req.networkId);
    try {
      // Started by CreateEndpoint; started here when that was another plugin process.
      const devices = ctx.devices.get(endpoint.id) ?? startDevices(ctx, network, endpoint);
      try {
        await devices;
      } finally {
        devicesDone(ctx, endpoint.id);
      }
      ctx.faults.point('Join', 'after-devices');
      await ctx.state.commit([{ type: 'put', kind: 'endpoint', value: { ...endpoint, joined: true, sandboxKey: req.sandboxKey, joinedAt: new Date().toISOString() } }]);
    } catch (err) {
      await teardownDevices(ctx, endpoint).catch((e) => ctx.log.error('cleanup after failed join failed', { endpointId: endpoint.id, error: errorMessage(e) }));
      throw err;
    }
    ctx.log.debug('endpoint joined', { networkId: network.id, endpointId: endpoint.id, port: endpoint.hostIf });
    if (network.spec.mode !== 'ovn' && network.spec.antiSpoofing && endpoint.addressIpv6) learnLinkLocal(ctx, endpoint.id, req.sandboxKey);
    return joinAnswer(network, endpoint);
  });
}

/** How long, after Join, the container's interface is looked for in its namespace (Docker moves it in after the answer). */
const LEARN_TRIES = 30;
const LEARN_EVERY_MS = 100;

/**
 * Pins a container's port to the link-local address its interface really has. It is the one of its MAC
 * (EUI-64) unless the container asks for another (an endpoint sysctl such as addr_gen_mode): read once the
 * interface is in the container's namespace, in the background, and, when it differs, kept on the record
 * and guarded anew. A namespace the plugin cannot enter (a managed plugin without the netns mount) leaves
 * the one of its MAC.
 */
function learnLinkLocal(ctx: NetworkContext, endpointId: string, sandbox: string): void {
  if (!sandbox) return;
  let tries = 0;
  const look = async (): Promise<void> => {
    const record = ctx.state.endpoints.get(endpointId);
    if (!record || !record.joined || record.sandboxKey !== sandbox) return;
    const found = await ctx.host.links.linkLocalIn(sandbox, record.mac);
    if (found === null) return;
    if (found === undefined) {
      if (++tries < LEARN_TRIES) setTimeout(() => void look().catch(report), LEARN_EVERY_MS).unref();
      return;
    }
    const address = canonicalIp(found) ?? found;
    if (address === (record.linkLocal ?? linkLocalOf(record.mac))) return;
    await ctx.locks.run(endpointLock(endpointId), async () => {
      const current = ctx.state.endpoints.get(endpointId);
      const network = current && ctx.state.networks.get(current.networkId);
      if (!current || !network || current.sandboxKey !== sandbox) return;
      const updated = { ...current, linkLocal: address };
      await ctx.state.commit([{ type: 'put', kind: 'endpoint', value: updated }]);
      await ctx.host.reguard(endpointPort(network, current), endpointPort(network, updated));
      ctx.log.info("pinned a container's link-local address as its interface has it", { networkId: network.id, endpointId, linkLocal: address, port: current.hostIf });
    });
  };
  const report = (err: unknown) => ctx.log.warn("could not learn a container's link-local address; it stays the one of its MAC", { endpointId, error: errorMessage(err) });
  setTimeout(() => void look().catch(report), LEARN_EVERY_MS).unref();
}

export function leave(ctx: NetworkContext, ref: EndpointRef): Promise<void> {
  return ctx.locks.run(endpointLock(ref.endpointId), async () => {
    const record = ctx.state.endpoints.get(ref.endpointId);
    if (!record || !record.joined) return;
    // The devices stay until DeleteEndpoint: Docker moves the container end back out after Leave.
    ctx.faults.point('Leave', 'before-record');
    await ctx.state.commit([{ type: 'put', kind: 'endpoint', value: { ...record, joined: false, sandboxKey: '' } }]);
  });
}

export function endpointOperInfo(ctx: NetworkContext, ref: EndpointRef): { Value: Record<string, unknown> } {
  const network = networkOf(ctx, ref.networkId);
  const endpoint = endpointOf(ctx, ref.endpointId, ref.networkId);
  return {
    Value: {
      bridge: network.spec.bridge,
      vlan: network.localTag ?? null,
      port: endpoint.hostIf,
      mac: endpoint.mac,
      address: endpoint.address,
      addressIpv6: endpoint.addressIpv6,
      ...(network.ovn ? { logicalPort: portName(network.ovn, primaryAddress(endpoint)) } : {}),
    },
  };
}

function joinAnswer(network: NetworkRecord, endpoint: EndpointRecord): JoinResponse {
  const { spec } = network;
  const answer: JoinResponse = { InterfaceName: { SrcName: endpoint.peerIf, DstPrefix: CONTAINER_PREFIX } };
  // A network across hosts (an overlay, an OVN switch) in nat mode leaves the default route to Docker, which
  // attaches docker_gwbridge as for its own overlays.
  const viaDockerGateway = spansHosts(spec) && !routedByOvn(spec) && spec.gatewayMode === 'nat' && !spec.internal;
  // On an OVN router even an --internal network has its gateway: the router reaches its other networks and drops the rest.
  if ((givesDefaultRoute(spec) || routedByOvn(spec)) && !viaDockerGateway) {
    const gateway = gatewayFor(network.ipv4, endpoint.address);
    const gatewayIpv6 = gatewayFor(network.ipv6, endpoint.addressIpv6);
    if (gateway) answer.Gateway = gateway;
    if (gatewayIpv6) answer.GatewayIPv6 = gatewayIpv6;
  }
  // Without a gateway Docker would otherwise attach docker_gwbridge to give one.
  if (!answer.Gateway && !viaDockerGateway) answer.DisableGatewayService = true;
  return answer;
}

function gatewayFor(subnets: readonly SubnetRecord[], address: string): string | undefined {
  const parsed = address ? parseCidrWithHost(address) : undefined;
  return parsed && subnetHolding(subnets, parsed.ip)?.gateway;
}
