/**
 * ProgramExternalConnectivity and RevokeExternalConnectivity: ports published
 * to a container (`-p`, `-P`) on a network whose gateway is on the host. Each
 * gets a host port (the one asked for, or a free one), is kept on the
 * endpoint's record, and becomes rules in the plugin's own chains, derived
 * from the records like every other rule (so the reconciler and doctor see a
 * missing or extra one). A port already held, by this plugin, by Docker's own
 * bridge or by a program listening on the host, is refused, naming the holder,
 * and the failed start keeps nothing.
 */
import { errorMessage } from '../../errors.js';
import { badRequest } from '../../errors.js';
import { hasHostGateway } from '../../domain/options.js';
import { type PortHolder, type PortRequest, allocatePorts, describePort, families, isWildcard, parsePortmap } from '../../domain/published.js';
import type { EndpointRecord, NetworkRecord } from '../../domain/records.js';
import { ipv6GatewayElsewhere, publishedPorts, type EndpointRef, type ProgramRequest } from '../../protocol/network.js';
import { type NetworkContext, endpointLock, endpointOf, networkOf } from './context.js';
import { retireDeadEndpoints, syncPortRules } from './endpoints.js';
import { short } from '../../domain/names.js';

export function programExternalConnectivity(ctx: NetworkContext, req: ProgramRequest): Promise<Record<string, never>> {
  // The container's IPv6 gateway on another network: that network publishes on the host's IPv6 addresses.
  const requests = ipv4Only(parsePortmap(publishedPorts(req.options)), ipv6GatewayElsewhere(req.options));
  return ctx.locks.run(endpointLock(req.endpointId), async () => {
    const network = networkOf(ctx, req.networkId);
    const endpoint = endpointOf(ctx, req.endpointId, req.networkId);
    if (requests.length === 0) {
      if (endpoint.ports?.length) await setPorts(ctx, endpoint, undefined);
      return {};
    }
    refuseUnless(network);
    // Docker 29 may say it twice: the same request keeps the ports it got.
    if (endpoint.ports && JSON.stringify(endpoint.portRequests) === JSON.stringify(requests)) return {};
    for (const r of requests) {
      if (!families(r.hostIp).some((f) => (f === 4 ? endpoint.address : endpoint.addressIpv6))) {
        throw badRequest('InvalidPort', `cannot publish ${r.port}/${r.proto} on ${r.hostIp}: the container has no IPv${r.hostIp.includes(':') ? 6 : 4} address on this network`);
      }
    }
    await checkHostAddresses(ctx, requests);
    await retireDeadHolders(ctx, endpoint, requests);
    // One allocation at a time: two containers starting together must not both get a free port.
    const ports = await ctx.locks.run(PORTS_LOCK, async () => {
      const chosen = allocatePorts(requests, await portHolders(ctx, endpoint), await ctx.host.hostPorts.ephemeralRange());
      await setPorts(ctx, endpoint, { ports: chosen, requests });
      return chosen;
    });
    ctx.log.info('published ports', { networkId: network.id, endpointId: endpoint.id, ports: ports.map(describePort).join(' ') });
    return {};
  });
}

/**
 * The requests this endpoint serves when another endpoint of the container is its IPv6 gateway: those on every
 * address go to the host's IPv4 addresses only, those on an IPv6 address are the other network's.
 */
function ipv4Only(requests: readonly PortRequest[], ipv6Elsewhere: boolean): PortRequest[] {
  if (!ipv6Elsewhere) return [...requests];
  return requests.filter((r) => families(r.hostIp).includes(4)).map((r) => (r.hostIp === '' ? { ...r, hostIp: '0.0.0.0' } : r));
}

/** Host ports are given out one request at a time. */
const PORTS_LOCK = 'published-ports';

export function revokeExternalConnectivity(ctx: NetworkContext, ref: EndpointRef): Promise<Record<string, never>> {
  return ctx.locks.run(endpointLock(ref.endpointId), async () => {
    const endpoint = ctx.state.endpoints.get(ref.endpointId);
    if (endpoint?.ports?.length) await setPorts(ctx, endpoint, undefined);
    return {};
  });
}

/** Records the endpoint's ports (or none) and programs the rules; when the rules fail, the record goes back. */
async function setPorts(ctx: NetworkContext, endpoint: EndpointRecord, published: { ports: EndpointRecord['ports']; requests: readonly PortRequest[] } | undefined): Promise<void> {
  const { ports: _p, portRequests: _r, ...rest } = endpoint;
  const next: EndpointRecord = published ? { ...rest, ports: published.ports, portRequests: published.requests } : rest;
  await ctx.state.commit([{ type: 'put', kind: 'endpoint', value: next }]);
  try {
    await syncPortRules(ctx);
  } catch (err) {
    await ctx.state.commit([{ type: 'put', kind: 'endpoint', value: endpoint }]);
    await syncPortRules(ctx).catch((e) => ctx.log.error('could not put the firewall back after a failed change of published ports', { endpointId: endpoint.id, error: errorMessage(e) }));
    throw err;
  }
}

function refuseUnless(network: NetworkRecord): void {
  const { spec } = network;
  if (spec.mode === 'ovn') {
    throw badRequest(
      'PortsNotSupported',
      "publishing ports (-p, -P) is not supported on OVN networks: a published port belongs to the host the container runs on, and an OVN network's way in is its router's outside address on the active gateway chassis, which moves; with -o ovn_router and gateway_mode=routed the container is reachable at its own address through that router",
    );
  }
  if (spec.internal) throw badRequest('PortsNotSupported', 'publishing ports (-p, -P) is not possible on an --internal network: nothing reaches it from outside');
  if (!hasHostGateway(spec)) {
    const why =
      spec.mode !== 'vlan'
        ? 'an overlay has no gateway on the host (with gateway_mode=nat, Docker publishes through docker_gwbridge)'
        : `with gateway_mode=${spec.gatewayMode} the network has no gateway on the host`;
    throw badRequest('PortsNotSupported', `publishing ports (-p, -P) needs the network's gateway on the host (gateway_mode nat or routed): ${why}`);
  }
}

/** A host address asked for must be one of the host's. */
async function checkHostAddresses(ctx: NetworkContext, requests: readonly PortRequest[]): Promise<void> {
  const specific = requests.filter((r) => !isWildcard(r.hostIp));
  if (specific.length === 0) return;
  const local = new Set<string>();
  for (const list of (await ctx.host.links.addresses()).values()) for (const a of list) local.add(a.split('/')[0]!);
  const valid = `give one of ${[...local].sort().join(', ')}, or none for every address`;
  for (const r of specific) {
    if (r.hostIp === '::1' || r.hostIp.startsWith('127.')) {
      throw badRequest('InvalidPort', `cannot publish on ${r.hostIp}: a published port is not reachable through a loopback address (the plugin DNATs the host's other addresses); ${valid}`);
    }
    if (!local.has(r.hostIp)) throw badRequest('InvalidPort', `cannot publish on ${r.hostIp}: it is not an address of this host; ${valid}`);
  }
}

/**
 * Endpoints whose container is gone (as after a power cut) and that hold a
 * host port asked for now are retired first, so a restarted container gets its
 * port back.
 */
async function retireDeadHolders(ctx: NetworkContext, endpoint: EndpointRecord, requests: readonly PortRequest[]): Promise<void> {
  const wanted = new Set(requests.filter((r) => r.hostPort !== 0).flatMap((r) => Array.from({ length: r.hostPortEnd - r.hostPort + 1 }, (_, i) => `${r.proto}/${r.hostPort + i}`)));
  const clashing = [...ctx.state.endpoints.values()].filter((e) => e.id !== endpoint.id && e.ports?.some((p) => wanted.has(`${p.proto}/${p.hostPort}`)));
  if (clashing.length > 0) await retireDeadEndpoints(ctx, clashing, endpoint.id);
}

/** Who holds host ports now: other endpoints of the plugin, Docker's own DNAT rules, programs listening on the host. */
async function portHolders(ctx: NetworkContext, endpoint: EndpointRecord): Promise<PortHolder[]> {
  const holders: PortHolder[] = [];
  for (const e of ctx.state.endpoints.values()) {
    if (e.id === endpoint.id || !e.ports?.length) continue;
    const where = e.networkId === endpoint.networkId ? 'this network' : `network ${short(e.networkId)}`;
    for (const p of e.ports) holders.push({ proto: p.proto, address: p.hostIp, port: p.hostPort, holder: `published by this plugin for endpoint ${short(e.id)} on ${where} (${describePort(p)})` });
  }
  holders.push(...(await ctx.host.hostPorts.inUse()));
  return holders;
}
