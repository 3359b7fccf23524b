/**
 * Which host this one is to OVN: its chassis name (Open vSwitch's system-id), held in the northbound database
 * as a registration with this host's id (domain/ovn-identity.ts), renewed at every pass by the daemon; a host
 * refused the name (a clone) is told so, and told every OVN call fails until it has a name of its own.
 */
import { badRequest, errorMessage, unavailable } from '../errors.js';
import type { Chassis } from '../domain/ovn.js';
import { DEFAULT_LEASE_MS, type HostIdentity, type RegistrationDecision, conflictNote, decideRegistration, noteKey, refusal } from '../domain/ovn-identity.js';
import type { Logger } from '../log.js';
import type { Northbound, Ovs } from './ports.js';

/** How an OVN network is made known on the host: what is missing, and how to give it. */
export const CHASSIS_HOWTO =
  'run ovn-controller on this host with external_ids set in its Open vSwitch: ovs-vsctl set open . external_ids:system-id=<unique name> external_ids:ovn-remote=<southbound remotes> external_ids:ovn-encap-type=geneve external_ids:ovn-encap-ip=<this host\'s underlay address> (see docs/ovn.md)';

export interface OvnChassisOptions {
  nb: Northbound;
  ovs: Pick<Ovs, 'systemIds'>;
  /** This host's id (adapters/host-id.ts); undefined for doctor on a host where the plugin never ran in OVN mode. */
  hostId: string | undefined;
  /** Whether this process registers its chassis name (the daemon) or only reads the registration (doctor). */
  register: boolean;
  /** How long a registration of a chassis name stays its holder's unrenewed (OVSNET_OVN_HOST_LEASE). */
  leaseMs?: number;
  /** Where this host keeps the chassis names it left a note on as a refused host (adapters/host-id.ts). */
  notes?: { read(): string[]; write(chassis: readonly string[]): void };
  log: Logger;
}

export class OvnChassis {
  /** The name, once this host holds it. */
  private held: Chassis | undefined;
  /** What was last logged of this host's registration. */
  private standing: string | undefined;
  /** The southbound database's remotes, as this host's ovn-controller has them (external_ids:ovn-remote), as last read. */
  southboundRemotes: string | undefined;

  constructor(private readonly o: OvnChassisOptions) {}

  get leaseMs(): number {
    return this.o.leaseMs ?? DEFAULT_LEASE_MS;
  }

  /**
   * This host as OVN knows it (its chassis name is OVS's system-id), once it holds that name in the
   * northbound database: every OVN call of a host refused the name fails, naming both hosts.
   */
  async chassis(): Promise<Chassis> {
    if (this.held) return this.held;
    const { me, decision } = await this.identify();
    if (decision.kind === 'refused') throw refusal(me, decision.holder);
    this.held = { name: me.chassis, hostname: me.hostname, hostId: me.hostId };
    return this.held;
  }

  /**
   * Reads this host's registration of its chassis name and decides; the daemon also writes what it
   * decided (registers, renews, takes the name over, or leaves its note as a refused host). Asked at every pass.
   */
  async identify(): Promise<{ me: HostIdentity; decision: RegistrationDecision }> {
    const { nb, log } = this.o;
    const ids = await this.o.ovs.systemIds();
    const name = ids['system-id'];
    const encapIp = ids['ovn-encap-ip'];
    if (!name || !encapIp) throw badRequest('OvnNotReady', `this host is not an OVN chassis yet (external_ids:system-id and ovn-encap-ip of Open vSwitch): ${CHASSIS_HOWTO}`);
    // Doctor on a host whose plugin never ran in OVN mode has no id: it cannot hold a name, only see who does.
    const me: HostIdentity = { chassis: name, hostId: this.o.hostId ?? '(none yet)', hostname: ids.hostname || name, encapIp };
    this.southboundRemotes = ids['ovn-remote'];
    for (let attempt = 0; ; attempt++) {
      const row = await nb.registration(name);
      const decision = decideRegistration(row, me, Date.now(), this.leaseMs);
      if (!this.o.register || !this.o.hostId) return { me, decision };
      let written: boolean;
      switch (decision.kind) {
        case 'register':
        case 'take-over':
          written = await nb.writeRegistration(name, decision.set, [], row?.externalIds);
          break;
        case 'held':
          written = Object.keys(decision.set).length + decision.remove.length === 0 || (await nb.writeRegistration(name, decision.set, decision.remove, row!.externalIds));
          break;
        case 'refused': {
          // Best effort: the holder's doctor names this host while the note is recent.
          await nb.writeRegistration(name, conflictNote(me, Date.now()), [], row!.externalIds);
          const noted = this.o.notes?.read() ?? [];
          if (!noted.includes(name)) this.o.notes?.write([...noted, name]);
          written = true;
          break;
        }
      }
      if (written) {
        if (decision.kind !== 'refused' && this.standing !== 'held') await this.clearOwnNotes(me).catch((err) => log.warn('could not remove the notes this host left as a refused host', { error: errorMessage(err) }));
        this.tell(me, decision);
        return { me, decision };
      }
      if (attempt === 2) throw unavailable('OvnBusy', `the registration of OVN chassis name ${name} kept changing while this host read it; try again`);
    }
  }

  /**
   * Removes the notes this host left, refused another name before (a clone given a name of its own), so
   * that doctor on that name's holder stops naming it.
   */
  private async clearOwnNotes(me: HostIdentity): Promise<void> {
    const noted = this.o.notes?.read() ?? [];
    if (noted.length === 0) return;
    const key = noteKey(me.hostId);
    for (const chassis of noted.filter((c) => c !== me.chassis)) {
      const registration = await this.o.nb.registration(chassis);
      if (registration && key in registration.externalIds && (await this.o.nb.writeRegistration(chassis, {}, [key], registration.externalIds))) {
        this.o.log.info('removed the note this host left when it was refused another chassis name', { chassis });
      }
    }
    this.o.notes?.write([]);
  }

  /** Logs a change of this host's standing, once. */
  private tell(me: HostIdentity, decision: RegistrationDecision): void {
    const standing = decision.kind === 'refused' ? `refused:${decision.holder.hostId}` : 'held';
    if (standing === this.standing) return;
    this.standing = standing;
    if (decision.kind === 'refused') {
      this.held = undefined;
      this.o.log.error(refusal(me, decision.holder).message, { problem: 'ovn-host-conflict' });
    } else if (decision.kind === 'take-over') {
      this.o.log.warn("took over this host's OVN chassis name: the host that registered it has not been seen for OVSNET_OVN_HOST_LEASE (this host before its state directory was made again, or one it replaced)", { chassis: me.chassis, previous: decision.previous, hostId: me.hostId });
    } else {
      this.o.log.info('this host holds its OVN chassis name', { chassis: me.chassis, hostId: me.hostId });
    }
  }
}
