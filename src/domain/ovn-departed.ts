/**
 * Hosts that are gone for good, as pure decisions. A host that leaves for
 * ever (a dead machine, a reinstall under another system-id) keeps its
 * addresses and its listing on every switch it used: nothing else may
 * release them, since a host that is only down comes back to them. The
 * reconciler reports such a host (no chassis in the southbound database, no
 * renewal of its registration within the lease), and `ovsnet ovn
 * forget-host` releases what it held once it is shown not to be alive: no
 * chassis, and no claim or renewal recently.
 */
import type { Drift } from './drift.js';
import { NB, type NbPort, type NbSwitch, switchHosts } from './ovn.js';
import { type NbView } from './ovn-diff.js';

/** What the northbound database holds for one chassis name: its claims and the switches that list it. */
export interface HeldBy {
  readonly chassis: string;
  readonly hostname: string;
  readonly ports: ReadonlyArray<{ readonly switchUuid: string; readonly port: NbPort }>;
  readonly listings: readonly NbSwitch[];
}

/** What a chassis holds, across the plugin's switches. */
export function heldBy(view: NbView, chassis: string): HeldBy {
  const ports: Array<{ switchUuid: string; port: NbPort }> = [];
  const listings: NbSwitch[] = [];
  let hostname = chassis;
  for (const sw of view.switches) {
    const listed = switchHosts(sw).get(chassis);
    if (listed !== undefined) {
      listings.push(sw);
      hostname = listed;
    }
    for (const port of view.ports.get(sw.uuid) ?? []) {
      if (port.externalIds[NB.chassis] !== chassis) continue;
      ports.push({ switchUuid: sw.uuid, port });
      hostname = port.externalIds[NB.hostname] ?? hostname;
    }
  }
  return { chassis, hostname, ports, listings };
}

/** The hosts on the switches of this host's networks (listed, or holding ports) that are no chassis of the southbound database. */
export function absentHosts(view: NbView, subnets: ReadonlySet<string>, present: ReadonlySet<string>, me: string): string[] {
  const candidates = new Set<string>();
  for (const sw of view.switches) {
    if (!subnets.has(sw.externalIds[NB.subnet] ?? '')) continue;
    for (const chassis of switchHosts(sw).keys()) candidates.add(chassis);
    for (const port of view.ports.get(sw.uuid) ?? []) if (port.externalIds[NB.chassis]) candidates.add(port.externalIds[NB.chassis]!);
  }
  return [...candidates].filter((c) => c !== me && !present.has(c)).sort();
}

/**
 * Of the absent hosts, those gone: nothing claimed for at least `graceMs` (a host that has just started may
 * not be in the southbound database yet), and their plugin not seen for a lease (`seen`: when each last
 * renewed its registration; a host that is only rebooting renews it within the lease): one drift per host,
 * with the command that releases what it held.
 */
export function goneHosts(view: NbView, absent: readonly string[], options: { now: number; graceMs: number; leaseMs: number; seen: ReadonlyMap<string, number> }): Drift[] {
  const out: Drift[] = [];
  for (const chassis of absent) {
    const held = heldBy(view, chassis);
    if (lastClaim(held) > options.now - options.graceMs) continue;
    if (options.now - (options.seen.get(chassis) ?? NaN) < options.leaseMs) continue;
    out.push({
      kind: 'ovn-host-gone',
      subject: chassis,
      detail: `host ${held.hostname} (chassis ${chassis}) is not in the southbound database and has not renewed its registration, yet holds ${held.ports.length} address${held.ports.length === 1 ? '' : 'es'} and is listed on ${held.listings.length} OVN switch${held.listings.length === 1 ? '' : 'es'} of the networks it shares with this host; if it is gone for good, release them (a host that is only down takes them back when it returns)`,
      fix: `ovsnet ovn forget-host ${chassis}`,
    });
  }
  return out;
}

/** When the host last claimed an address (0 when it holds none, or the times are unreadable). */
export function lastClaim(held: HeldBy): number {
  let last = 0;
  for (const { port } of held.ports) {
    const made = Date.parse(port.externalIds[NB.createdAt] ?? '');
    if (Number.isFinite(made) && made > last) last = made;
  }
  return last;
}

/**
 * Why a host may not be forgotten (undefined: it may): it is this host, it is a chassis of the southbound
 * database, or it claimed an address or renewed its registration (`seen`) within `idleMs`.
 */
export function forgetRefusal(
  held: HeldBy,
  southbound: { hostname: string; encaps: readonly string[] } | undefined,
  options: { me: string | undefined; now: number; idleMs: number; seen: number },
): string | undefined {
  const { chassis } = held;
  if (chassis === options.me) return `${chassis} is this host's own chassis name: run ovsnet ovn forget-host on another host, for a host that is gone`;
  if (southbound) {
    return `host ${southbound.hostname} (chassis ${chassis}, Geneve ${southbound.encaps.join(', ') || 'none'}) is in the southbound database: its ovn-controller runs, or stopped without leaving. If the host is gone for good: ovn-sbctl chassis-del ${chassis}, then run this again`;
  }
  const claimed = lastClaim(held);
  const [last, what] = Number.isFinite(options.seen) && options.seen > claimed ? [options.seen, 'its plugin renewed its registration'] : [claimed, 'it claimed an address'];
  if (last > options.now - options.idleMs) {
    return `host ${held.hostname} (chassis ${chassis}): ${what} ${Math.round((options.now - last) / 1000)} s ago (at ${new Date(last).toISOString()}), within the last ${Math.round(options.idleMs / 1000)} s: it looks alive. Wait, or give --idle SECONDS if you are sure it is gone`;
  }
  return undefined;
}
