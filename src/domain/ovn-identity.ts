/**
 * Which host a chassis name belongs to, as pure decisions. OVN names a host
 * by its Open vSwitch system-id, which cloned images share; the plugin
 * counts an address as its own by that name, so two hosts with one name
 * would hand out the same addresses without a word. Each host therefore
 * keeps a host id of its own (a UUID in its state directory) and registers
 * its chassis name with it in the northbound database, in the chassis'
 * `Chassis_Template_Var` row (one per chassis: the database's unique index
 * on `chassis` lets one host register a name). A second host with the same
 * name is refused, and leaves a note on the registration so that doctor on
 * the first names it too. A registration is a lease: its holder renews it
 * (`ovsnet-seen-at`) every third of OVSNET_OVN_HOST_LEASE, and a name whose
 * holder has not been seen for that long may be taken over: by this very
 * host after its state directory was made again, or by a host that replaced
 * one gone for good. Until then even a host with the same Geneve address is
 * refused, since a clone carries that too.
 */
import { conflict } from '../errors.js';
import type { Drift } from './drift.js';

/** external_ids keys of a chassis' registration. */
export const REG = {
  hostId: 'ovsnet-host-id',
  hostname: 'ovsnet-hostname',
  encapIp: 'ovsnet-encap-ip',
  since: 'ovsnet-registered-at',
  /** When the holder last renewed its registration. */
  seen: 'ovsnet-seen-at',
  /** Prefix of a note left by a host refused the name: `ovsnet-conflict:<its host id>` = JSON of who and when. */
  conflictPrefix: 'ovsnet-conflict:',
} as const;

/** How long a note of a refused host is reported: it writes it again at every reconcile pass while it runs. */
export const CONFLICT_FRESH_MS = 15 * 60_000;

/** This host: its chassis name (system-id), host id, hostname and Geneve address. */
export interface HostIdentity {
  readonly chassis: string;
  readonly hostId: string;
  readonly hostname: string;
  readonly encapIp: string;
}

/** How long a registration stays its holder's without being renewed, by default (OVSNET_OVN_HOST_LEASE). */
export const DEFAULT_LEASE_MS = 15 * 60_000;

/** When a registration's holder was last seen (ms since the epoch; NaN when it does not say). */
export function lastSeen(ids: Readonly<Record<string, string>>): number {
  return Date.parse(ids[REG.seen] ?? ids[REG.since] ?? '');
}

/** A chassis' registration row as read. */
export interface Registration {
  readonly externalIds: Readonly<Record<string, string>>;
}

/** The host a registration names. */
export interface Holder {
  readonly hostId: string;
  readonly hostname: string;
  readonly encapIp: string;
}

export type RegistrationDecision =
  /** Nobody holds the name: register it (the row is made, or the plugin's keys added to someone else's row). */
  | { readonly kind: 'register'; readonly set: Record<string, string> }
  /** This host holds it; `set` what changed (hostname, address) and `remove` notes that are stale. */
  | { readonly kind: 'held'; readonly set: Record<string, string>; readonly remove: readonly string[]; readonly others: readonly ConflictNote[] }
  /**
   * Another host id holds the name but has not been seen for a lease: this host takes the name over (this
   * machine after its state directory was made again, or a host that replaced one gone for good).
   */
  | { readonly kind: 'take-over'; readonly set: Record<string, string>; readonly previous: Holder & { readonly seen: string } }
  /** Another host holds the name, and was seen within the lease. */
  | { readonly kind: 'refused'; readonly holder: Holder & { readonly seen: string; readonly freeAt: string } };

/** A note left by a host that was refused the name. */
export interface ConflictNote extends Holder {
  readonly key: string;
  readonly seen: string;
}

function holderOf(ids: Readonly<Record<string, string>>): Holder | undefined {
  const hostId = ids[REG.hostId];
  return hostId ? { hostId, hostname: ids[REG.hostname] ?? '?', encapIp: ids[REG.encapIp] ?? '?' } : undefined;
}

/** The notes of refused hosts on a registration, with whether each is recent. */
export function conflictNotes(ids: Readonly<Record<string, string>>, now: number): Array<ConflictNote & { fresh: boolean }> {
  const out: Array<ConflictNote & { fresh: boolean }> = [];
  for (const [key, value] of Object.entries(ids)) {
    if (!key.startsWith(REG.conflictPrefix)) continue;
    let note: Partial<Holder & { seen: string }> = {};
    try {
      note = JSON.parse(value) as typeof note;
    } catch {
      // a note someone damaged: stale, so it is removed
    }
    const seen = Date.parse(note.seen ?? '');
    out.push({
      key,
      hostId: key.slice(REG.conflictPrefix.length),
      hostname: note.hostname ?? '?',
      encapIp: note.encapIp ?? '?',
      seen: note.seen ?? '?',
      fresh: Number.isFinite(seen) && now - seen < CONFLICT_FRESH_MS,
    });
  }
  return out;
}

/** What this host's keys on its registration are. */
export function registrationIds(me: HostIdentity, now: string): Record<string, string> {
  return { [REG.hostId]: me.hostId, [REG.hostname]: me.hostname, [REG.encapIp]: me.encapIp, [REG.since]: now, [REG.seen]: now };
}

/**
 * Decides, from the registration as read (undefined: no row), whether this host may use its chassis name;
 * a name it holds is renewed once a third of the lease has passed.
 */
export function decideRegistration(row: Registration | undefined, me: HostIdentity, now: number, leaseMs = DEFAULT_LEASE_MS): RegistrationDecision {
  const stamp = new Date(now).toISOString();
  const holder = row && holderOf(row.externalIds);
  if (!holder) return { kind: 'register', set: registrationIds(me, stamp) };
  const seen = lastSeen(row.externalIds);
  if (holder.hostId === me.hostId) {
    const notes = conflictNotes(row.externalIds, now);
    const set: Record<string, string> = {};
    if (holder.hostname !== me.hostname) set[REG.hostname] = me.hostname;
    if (holder.encapIp !== me.encapIp) set[REG.encapIp] = me.encapIp;
    if (!(now - seen < leaseMs / 3)) set[REG.seen] = stamp;
    return { kind: 'held', set, remove: notes.filter((n) => !n.fresh).map((n) => n.key), others: notes.filter((n) => n.fresh) };
  }
  const seenText = Number.isFinite(seen) ? new Date(seen).toISOString() : 'never';
  if (!(now - seen < leaseMs)) return { kind: 'take-over', set: registrationIds(me, stamp), previous: { ...holder, seen: seenText } };
  return { kind: 'refused', holder: { ...holder, seen: seenText, freeAt: new Date(seen + leaseMs).toISOString() } };
}

/** The note a refused host leaves on the registration. */
export function conflictNote(me: HostIdentity, now: number): Record<string, string> {
  return { [noteKey(me.hostId)]: JSON.stringify({ hostname: me.hostname, encapIp: me.encapIp, seen: new Date(now).toISOString() }) };
}

/** The key of the note a host leaves on a registration it was refused. */
export function noteKey(hostId: string): string {
  return `${REG.conflictPrefix}${hostId}`;
}

function describeHost(h: Holder): string {
  return `host ${h.hostname} (Geneve address ${h.encapIp}, host id ${h.hostId})`;
}

const RENAME = (who: string) => `give ${who} a system-id of its own (ovs-vsctl set open . external_ids:system-id=<unique name>; then restart ovn-controller and the plugin there)`;

/** The refusal, for every OVN call this host makes while another holds its name. */
export function refusal(me: HostIdentity, holder: Holder & { seen: string; freeAt: string }): Error {
  const previous = holder.encapIp === me.encapIp ? 'that was this very host before its state directory was made again' : 'that host is gone for good';
  return conflict(
    'OvnHostConflict',
    `this host's OVN chassis name ${me.chassis} (its Open vSwitch system-id) is already registered by ${describeHost(holder)}, last seen at ${holder.seen}; this host is ${describeHost({ hostId: me.hostId, hostname: me.hostname, encapIp: me.encapIp })}. Two hosts with one name would hand out the same addresses (a cloned image?): ${RENAME('this host')}. If ${previous}, the name is free from ${holder.freeAt} (once OVSNET_OVN_HOST_LEASE has passed without it)`,
  );
}

/** Doctor's and the reconciler's report of a shared chassis name, on either host. */
export function conflictDrift(me: HostIdentity, decision: RegistrationDecision): Drift[] {
  if (decision.kind === 'refused') {
    return [{ kind: 'ovn-host-conflict', subject: me.chassis, detail: refusal(me, decision.holder).message, fix: RENAME('this host') }];
  }
  if (decision.kind !== 'held') return [];
  return decision.others.map((other) => ({
    kind: 'ovn-host-conflict' as const,
    subject: me.chassis,
    detail: `another host uses this host's OVN chassis name ${me.chassis}: ${describeHost(other)}, last refused at ${other.seen}; this host (${describeHost(me)}) holds the name`,
    fix: RENAME(`host ${other.hostname} (${other.encapIp})`),
  }));
}
