/**
 * Join and Leave, and EndpointOperInfo: what happens
 * when a container is attached to, and detached from, an endpoint.
 */
import { badRequest, errorMessage } from '../../errors.js';
import { parseCidrWithHost } from '../../domain/cidr.js';
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
      await ctx.state.commit([{ type: 'put', kind: 'endpoint', value: { ...endpoint, joined: true, sandboxKey: req.sandboxKey } }]);
    } catch (err) {
      await teardownDevices(ctx, endpoint).catch((e) => ctx.log.error('cleanup after failed join failed', { endpointId: endpoint.id, error: errorMessage(e) }));
      throw err;
    }
    ctx.log.debug('endpoint joined', { networkId: network.id, endpointId: endpoint.id, port: endpoint.hostIf });
    return joinAnswer(network, endpoint);
  });
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
