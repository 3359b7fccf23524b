/**
 * CreateNetwork and DeleteNetwork, and changing an overlay's peers.
 *
 * Records are written before the work they describe, so a crash in between
 * leaves a record that says what to finish or undo; removal happens the other
 * way round (undo the work, then drop the record). Admission looks at the
 * host once and decides; realising applies what the diff against the desired
 * host calls for.
 */
import { checkHostRoutes } from '../../domain/admission.js';
import { badRequest, conflict, errorMessage, isPluginError } from '../../errors.js';
import { canonicalJson, hasHostGateway, isOverlay, parseNetworkOptions, parsePeers } from '../../domain/options.js';
import { canonicalSubnets } from '../../domain/ranges.js';
import type { NetworkRecord } from '../../domain/records.js';
import type { CreateNetworkRequest } from '../../protocol/network.js';
import { type NetworkContext, NETWORKS_LOCK, backendFor, elapsedMs, endpointLock, networkOf } from './context.js';
import { settleDevices, teardownDevices } from './endpoints.js';
import { short } from '../../domain/names.js';

export function createNetwork(ctx: NetworkContext, req: CreateNetworkRequest): Promise<void> {
  const started = performance.now();
  return ctx.locks.run(NETWORKS_LOCK, async () => {
    const { state } = ctx;
    const spec = parseNetworkOptions(req.generic, { internal: req.internal, ipv6: req.ipv6, ipv4: req.ipv4 }, ctx.defaults);
    const ipv4 = canonicalSubnets(req.ipv4Data, 4, 'IPv4Data');
    const ipv6 = canonicalSubnets(req.ipv6Data, 6, 'IPv6Data');
    if (hasHostGateway(spec) && !spec.internal && ipv4.length > 0 && ipv4.some((s) => !s.gateway)) {
      throw badRequest('NoGateway', `gateway_mode=${spec.gatewayMode} needs a gateway address for every IPv4 subnet`);
    }
    const log = ctx.log.child({ networkId: req.networkId });
    const backend = backendFor(ctx, spec);

    const existing = state.networks.get(req.networkId);
    if (existing) {
      if (canonicalJson([existing.spec, existing.ipv4, existing.ipv6]) !== canonicalJson([spec, ipv4, ipv6])) {
        throw conflict('NetworkExists', `network ${short(req.networkId)} already exists with a different configuration`);
      }
      await backend.realise(existing);
      return;
    }
    const others = [...state.networks.values()].filter((n) => n.id !== req.networkId);
    if (!spec.allowHostOverlap) {
      // The routes through the plugin's own gateway ports are its networks': admission compares those.
      const own = new Set(others.flatMap((n) => (n.gatewayPort ? [n.gatewayPort] : [])));
      checkHostRoutes([...ipv4, ...ipv6], [...(await ctx.host.links.routes(4)), ...(await ctx.host.links.routes(6))], own);
    }
    let admitted;
    try {
      admitted = await backend.admit({ networkId: req.networkId, spec, subnets: [...ipv4, ...ipv6], others });
    } catch (err) {
      if (isPluginError(err) && err.shield) ctx.ipam.shieldFromRollback(err.shield.poolId, err.shield.address);
      throw err;
    }
    const { localTag, mtu, gatewayPort, datapath, observed, ovn } = admitted;
    const record: NetworkRecord = {
      id: req.networkId,
      spec,
      ipv4,
      ipv6,
      gatewayPort,
      localTag,
      mtu,
      datapath,
      state: 'creating',
      createdAt: new Date().toISOString(),
      ...(ovn ? { ovn } : {}),
    };
    await state.commit([{ type: 'put', kind: 'network', value: record }]);
    ctx.faults.point('CreateNetwork', 'after-record');
    try {
      await backend.realise(record, {
        observed,
        step: (step) => {
          if (step === 'bridge') ctx.faults.point('CreateNetwork', 'after-bridge');
          else if (step === 'switch') ctx.faults.point('CreateNetwork', 'after-switch');
          else if (record.gatewayPort) ctx.faults.point('CreateNetwork', 'after-gateway');
        },
      });
      await state.commit([{ type: 'put', kind: 'network', value: { ...record, state: 'ready' } }]);
    } catch (err) {
      log.warn('network setup failed; rolling back', { error: errorMessage(err) });
      await backend.unrealise(record).catch((e) => log.error('rollback of network setup failed', { error: errorMessage(e) }));
      await state.commit([{ type: 'del', kind: 'network', key: record.id }]);
      throw err;
    }
    log.info('network created', {
      mode: spec.mode,
      bridge: spec.bridge,
      vlan: spec.mode === 'ovn' ? undefined : spec.vlan,
      ovnNetwork: spec.mode === 'ovn' ? record.ovn?.switchName : undefined,
      localTag,
      tunnelKey: isOverlay(spec) ? spec.tunnelKey : undefined,
      peers: isOverlay(spec) ? spec.peers : undefined,
      uplink: spec.mode === 'vlan' ? spec.uplink : undefined,
      mtu,
      gatewayMode: spec.gatewayMode,
      internal: spec.internal,
      subnets: [...ipv4, ...ipv6].map((s) => s.pool),
      durationMs: elapsedMs(started),
    });
  });
}

export function deleteNetwork(ctx: NetworkContext, networkId: string): Promise<void> {
  const started = performance.now();
  return ctx.locks.run(NETWORKS_LOCK, async () => {
    const { state } = ctx;
    const record = state.networks.get(networkId);
    if (!record) return;
    const log = ctx.log.child({ networkId });
    for (const endpoint of state.endpointsOf(networkId)) {
      await ctx.locks.run(endpointLock(endpoint.id), async () => {
        await settleDevices(ctx, endpoint.id);
        await teardownDevices(ctx, endpoint);
        await state.commit([{ type: 'del', kind: 'endpoint', key: endpoint.id }]);
        log.info('removed endpoint left on deleted network', { endpointId: endpoint.id });
      });
    }
    // Endpoints deleted just before (Docker deletes them, then the network) may still be going: the network's
    // teardown must find their ports gone, or it would race their deletion and keep the bridge they are on.
    await ctx.spares.retired();
    await backendFor(ctx, record.spec).unrealise(record);
    ctx.faults.point('DeleteNetwork', 'after-teardown');
    await state.commit([{ type: 'del', kind: 'network', key: networkId }]);
    log.info('network deleted', { durationMs: elapsedMs(started) });
  });
}

/**
 * Undoes a network whose CreateNetwork never finished (the plugin died in
 * it, so Docker got no answer and counts it as failed).
 */
export function abandonCreate(ctx: NetworkContext, networkId: string): Promise<boolean> {
  return ctx.locks.run(NETWORKS_LOCK, async () => {
    const record = ctx.state.networks.get(networkId);
    if (!record || record.state !== 'creating') return false;
    await backendFor(ctx, record.spec).unrealise(record);
    await ctx.state.commit([{ type: 'del', kind: 'network', key: networkId }]);
    return true;
  });
}

/**
 * Replaces the tunnel peers of an overlay without recreating it: tunnel ports
 * to new peers are added, those to removed peers deleted; containers stay.
 */
export function setPeers(ctx: NetworkContext, networkId: string, peersText: readonly string[]): Promise<NetworkRecord> {
  return ctx.locks.run(NETWORKS_LOCK, async () => {
    const record = networkOf(ctx, networkId);
    const { spec } = record;
    if (!isOverlay(spec)) {
      throw badRequest('NotOverlay', `network ${short(networkId)} is a VLAN network (mode=vlan); only overlays (mode=vxlan or gre) have peers`);
    }
    const peers = parsePeers(peersText.join(','));
    const path = await ctx.bridge.peerLimit(spec, peers, record.datapath);
    if (record.mtu > path.max) {
      throw badRequest(
        'MtuTooLarge',
        `the network's containers use MTU ${record.mtu}, but ${path.why} allows at most ${path.max}; recreate the network with -o mtu=${path.max} or raise the underlay MTU`,
      );
    }
    const updated: NetworkRecord = { ...record, spec: Object.freeze({ ...spec, peers: Object.freeze(peers) }) };
    await ctx.state.commit([{ type: 'put', kind: 'network', value: updated }]);
    await backendFor(ctx, updated.spec).realise(updated);
    ctx.log.info('peers changed', { networkId, peers, before: spec.peers });
    return updated;
  });
}
