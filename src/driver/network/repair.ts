/**
 * The reconciler's ways into the network driver: bringing the whole host in
 * line with the records (one observation, one diff, the repairs it calls
 * for), and reading the drift without changing anything (`ovsnet doctor`).
 * Both use the same desired host and the same diff, so they cannot disagree.
 */
import { errorMessage } from '../../errors.js';
import type { DockerNetwork, Drift, Records } from '../../domain/drift.js';
import { diffHost, findDrift } from '../../domain/host-diff.js';
import { type HostDifference, LAST_REPAIRS, type Repair } from '../../domain/repairs.js';
import type { DesiredHost, ObservedHost } from '../../domain/host.js';
import type { NbRepair } from '../../domain/ovn-diff.js';
import { LocalHost } from '../host.js';
import type { OvnBackend } from '../ovn-backend.js';
import { type NetworkContext, NETWORKS_LOCK } from './context.js';
import { repairEndpoint } from './endpoints.js';

/** One repair the reconciler attempted, with the drift that called for it first. */
export interface RepairResult {
  readonly drift: Drift;
  readonly repair: Repair | NbRepair;
  /** False when it was not needed any more (the endpoint changed meanwhile). */
  readonly done: boolean;
  readonly error?: string;
}

export interface ConvergeOptions {
  /** Docker's networks, when Docker could be asked. */
  readonly docker: readonly DockerNetwork[] | undefined;
  readonly now: number;
  readonly graceMs: number;
}

/** What the records call for on the host (networks still being created do not count). */
export function desiredFrom(host: LocalHost, records: Records, observed: ObservedHost): Promise<DesiredHost> {
  return host.desired(records.networks.filter((n) => n.state === 'ready'), records.endpoints, observed);
}

/**
 * Repairs every difference between the records and the host. It holds the
 * network lock (no CreateNetwork or DeleteNetwork meanwhile); what belongs to
 * one endpoint is repaired under that endpoint's lock, and left alone if the
 * endpoint changed since it was observed.
 */
export function converge(ctx: NetworkContext, options: ConvergeOptions): Promise<RepairResult[]> {
  return ctx.locks.run(NETWORKS_LOCK, async () => {
    // Observe first, read the records after: a device made meanwhile already has its record. The held names
    // before the records (a spare leaves the pool only once an endpoint's record holds it), and before the
    // look too: a deleted endpoint's port seen on its way out may be gone, and no longer held, by its end.
    const observedAt = performance.now();
    // What an earlier pass needed to know about device setups that ended before this one began.
    for (const [id, at] of ctx.devicesDoneAt) if (at < observedAt) ctx.devicesDoneAt.delete(id);
    const heldBefore = ctx.spares.names();
    const observed = await ctx.host.observe({ flows: true });
    const held = new Set([...heldBefore, ...ctx.spares.names()]);
    const records = ctx.state.records();
    const desired = await desiredFrom(ctx.host, records, observed);
    const differences = diffHost(desired, observed, { records, docker: options.docker, now: options.now, graceMs: options.graceMs, held });
    const results: RepairResult[] = [];
    const firstDrift = new Map<Repair, Drift>();
    for (const d of differences) for (const r of d.repairs) if (!firstDrift.has(r)) firstDrift.set(r, d.drift);

    const hostRepairs = LocalHost.repairsOf(differences.filter((d) => !d.endpointId));
    for (const repair of hostRepairs.filter((r) => !LAST_REPAIRS.has(r.type))) {
      results.push(await attempt(firstDrift.get(repair)!, repair, async () => {
        // Look again: an endpoint created since the records were read has its record by now.
        const device = repair.type === 'delete-veth' || (repair.type === 'delete-port' && repair.deleteLink) ? repair.name : undefined;
        if (device !== undefined && ([...ctx.state.endpoints.values()].some((e) => e.hostIf === device || e.peerIf === device) || ctx.spares.names().has(device))) return false;
        await ctx.host.apply(repair);
        return true;
      }));
    }
    for (const difference of differences.filter((d): d is HostDifference & { endpointId: string } => !!d.endpointId && d.repairs.length > 0)) {
      for (const repair of difference.repairs) {
        results.push(
          await attempt(difference.drift, repair, () =>
            repairEndpoint(ctx, difference, observedAt, async () => {
              // A container starting when the host was observed may have had its veth and no port yet; its Join
              // has added the port since. Replacing it would cut the container off for a moment, for nothing.
              if (difference.drift.kind === 'endpoint-port-missing' && (await ctx.host.ovs.ofport(difference.drift.subject)) !== undefined) return false;
              await ctx.host.apply(repair);
              return true;
            }),
          ),
        );
      }
    }
    // What lets a bridge forward goes in once every container port on it is guarded again.
    for (const repair of hostRepairs.filter((r) => LAST_REPAIRS.has(r.type))) {
      results.push(await attempt(firstDrift.get(repair)!, repair, async () => {
        await ctx.host.apply(repair);
        return true;
      }));
    }
    // OVN: what this host holds in the northbound database.
    if (ctx.ovn) {
      for (const { drift, repair } of await ctx.ovn.differences(observed, options)) {
        if (repair) results.push(await attempt(drift, repair, () => ctx.ovn!.repair(repair)));
      }
    }
    return results;
  });
}

/**
 * Every difference between the records, the host and (when given) Docker,
 * changing nothing: what the plugin serves to `ovsnet doctor`, and what the
 * command works out itself when the plugin is down.
 */
export async function readDrift(host: LocalHost, records: () => Records, options: ConvergeOptions & { ovn?: OvnBackend; held?: () => ReadonlySet<string> }): Promise<Drift[]> {
  const heldBefore = options.held?.();
  const observed = await host.observe({ flows: true });
  const held = heldBefore && new Set([...heldBefore, ...options.held!()]);
  const now = records();
  const drift = findDrift(now, await desiredFrom(host, now, observed), observed, { docker: options.docker, now: options.now, graceMs: options.graceMs, held });
  if (options.ovn) drift.push(...(await options.ovn.differences(observed, options)).map((d) => d.drift));
  return drift;
}

async function attempt(drift: Drift, repair: Repair | NbRepair, work: () => Promise<boolean>): Promise<RepairResult> {
  try {
    return { drift, repair, done: await work() };
  } catch (err) {
    return { drift, repair, done: false, error: errorMessage(err) };
  }
}
