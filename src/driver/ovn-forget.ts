/**
 * `ovsnet ovn forget-host`: releases what a host that is gone for good held
 * in the northbound database (its addresses, its listing on every switch,
 * its registration), once it is shown not to be alive (domain/ovn-departed.ts).
 * Each removal is conditional on the row as read, so that a claim or a
 * listing made meanwhile, by that host come back or by any other, stays.
 */
import { conflict } from '../errors.js';
import { forgetRefusal, heldBy } from '../domain/ovn-departed.js';
import { REG, lastSeen } from '../domain/ovn-identity.js';
import { NB, chassisKey } from '../domain/ovn.js';
import type { Northbound, Southbound } from './ports.js';

export interface ForgetReport {
  readonly chassis: string;
  readonly hostname: string;
  /** The addresses released, as "subnet address". */
  readonly released: readonly string[];
  /** The switches the host was taken off. */
  readonly unlisted: readonly string[];
  /** Whether its registration of the name was removed. */
  readonly registration: boolean;
  /** What changed meanwhile and was left alone. */
  readonly kept: readonly string[];
}

export async function forgetHost(
  nb: Northbound,
  southbound: Southbound,
  chassis: string,
  options: { me: string | undefined; now: number; idleMs: number },
): Promise<ForgetReport> {
  // Every switch (its listings), and this host's ports only: never the tens of thousands of the others.
  const view = await nb.view({ subnets: [], everySwitch: true, chassis: { name: chassis } });
  const held = heldBy(view, chassis);
  const registration = await nb.registration(chassis);
  const refusal = forgetRefusal(held, (await southbound.chassis()).get(chassis), { me: options.me, now: options.now, idleMs: options.idleMs, seen: registration ? lastSeen(registration.externalIds) : NaN });
  if (refusal) throw conflict('HostNotGone', `not forgetting ${chassis}: ${refusal}`);
  if (held.ports.length === 0 && held.listings.length === 0 && !registration?.externalIds[REG.hostId]) {
    throw conflict('HostUnknown', `the northbound database holds nothing of a host with chassis name ${chassis}: no address, no listing on an OVN switch, no registration (the names it knows: ovn-nbctl --columns=chassis list Chassis_Template_Var)`);
  }
  const released: string[] = [];
  const unlisted: string[] = [];
  const kept: string[] = [];
  for (const { switchUuid, port } of held.ports) {
    const what = `${port.externalIds[NB.subnet] ?? '?'} ${port.externalIds[NB.address] ?? port.name}`;
    if (await nb.deletePort(switchUuid, port.name, chassis, port.externalIds)) released.push(what);
    else kept.push(`logical port ${port.name} (changed since it was read)`);
  }
  for (const sw of held.listings) {
    let current = sw;
    for (let attempt = 0; ; attempt++) {
      if (await nb.updateSwitchIds(current.uuid, {}, [chassisKey(chassis)], current.externalIds)) {
        unlisted.push(sw.name);
        break;
      }
      // Another host joined or left meanwhile: read the switch again, and try again while it still lists the host.
      const found = await nb.findSwitch(sw.externalIds[NB.subnet] ?? '');
      const again = found?.uuid === sw.uuid ? found : undefined;
      if (!again || !(chassisKey(chassis) in again.externalIds) || attempt === 4) {
        if (again && chassisKey(chassis) in again.externalIds) kept.push(`the listing on OVN switch ${sw.name} (it kept changing)`);
        break;
      }
      current = again;
    }
  }
  let forgotten = false;
  if (registration?.externalIds[REG.hostId] && (await southbound.chassis()).has(chassis)) {
    kept.push(`the registration of ${chassis}: it is a chassis of the southbound database again (back meanwhile?)`);
  } else if (registration?.externalIds[REG.hostId]) {
    const ours = Object.keys(registration.externalIds).filter((k) => k.startsWith('ovsnet-'));
    forgotten = await nb.writeRegistration(chassis, {}, ours, registration.externalIds);
    if (!forgotten) kept.push(`the registration of ${chassis} (changed since it was read: a host registered it again?)`);
  }
  return { chassis, hostname: held.hostname, released, unlisted, registration: forgotten, kept };
}
