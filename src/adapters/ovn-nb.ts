/**
 * The OVN northbound database through the project's OVSDB client (JSON-RPC,
 * the cluster's leader only): no ovn-nbctl process anywhere. Uniqueness and
 * the "nobody joined meanwhile" checks are left to the database, as
 * transactions that cannot commit (a unique index, `wait` operations).
 */
import { internal } from '../errors.js';
import { type NbPort, type NbPortSpec, type NbSwitch, type NbView, NB } from '../domain/ovn.js';
import { OWNER_KEY, OWNER_VALUE } from '../domain/names.js';
import type { Northbound } from '../driver/ports.js';
import { type OvsdbClient, type Row, OvsdbError, namedUuid, ovsMap, ovsSet, readMap, readOptional, readSet, readUuid, uuid } from './ovsdb.js';

export const NB_DATABASE = 'OVN_Northbound';

const OWNED = ovsMap({ [OWNER_KEY]: OWNER_VALUE });
const SWITCH_COLUMNS = ['_uuid', 'name', 'external_ids', 'ports'];
const PORT_COLUMNS = ['_uuid', 'name', 'addresses', 'port_security', 'external_ids', 'up'];

function rows(result: Row | undefined): Row[] {
  return ((result as { rows?: Row[] } | undefined)?.rows ?? []) as Row[];
}

function count(result: Row | undefined): number {
  return Number((result as { count?: number } | undefined)?.count ?? 0);
}

function toSwitch(row: Row): NbSwitch {
  return { uuid: readUuid(row._uuid), name: String(row.name), externalIds: readMap(row.external_ids) };
}

function toPort(row: Row): NbPort {
  return {
    uuid: readUuid(row._uuid),
    name: String(row.name),
    addresses: readSet(row.addresses) as string[],
    portSecurity: readSet(row.port_security) as string[],
    externalIds: readMap(row.external_ids),
    up: readOptional<boolean>(row.up),
  };
}

/** The database refused the transaction for a unique index (a port name another row has). */
function isConstraintViolation(err: unknown): boolean {
  return err instanceof OvsdbError && (err.details as { error?: string } | undefined)?.error === 'constraint violation';
}

/** A `wait` with timeout 0 that did not hold. */
function isWaitFailure(err: unknown): boolean {
  return err instanceof OvsdbError && (err.details as { error?: string } | undefined)?.error === 'timed out';
}

export class OvnNorthbound implements Northbound {
  constructor(private readonly db: OvsdbClient) {}

  async view(): Promise<NbView> {
    const [switches, ports] = await this.db.transact([
      { op: 'select', table: 'Logical_Switch', where: [['external_ids', 'includes', OWNED]], columns: SWITCH_COLUMNS },
      { op: 'select', table: 'Logical_Switch_Port', where: [['external_ids', 'includes', OWNED]], columns: PORT_COLUMNS },
    ]);
    const byUuid = new Map(rows(ports).map((p) => [readUuid(p._uuid), toPort(p)]));
    const portsOf = new Map<string, NbPort[]>();
    for (const row of rows(switches)) {
      portsOf.set(readUuid(row._uuid), readSet(row.ports).map(readUuid).flatMap((id) => (byUuid.has(id) ? [byUuid.get(id)!] : [])));
    }
    return { switches: rows(switches).map(toSwitch), ports: portsOf };
  }

  async findSwitch(subnet: string): Promise<NbSwitch | undefined> {
    const [result] = await this.db.transact([
      { op: 'select', table: 'Logical_Switch', where: [['external_ids', 'includes', ovsMap({ [OWNER_KEY]: OWNER_VALUE, [NB.subnet]: subnet })]], columns: SWITCH_COLUMNS },
    ]);
    const row = rows(result)[0];
    return row ? toSwitch(row) : undefined;
  }

  async createSwitch(subnet: string, row: { name: string; externalIds: Record<string, string> }): Promise<{ created: boolean; sw: NbSwitch }> {
    const mark = ovsMap({ [OWNER_KEY]: OWNER_VALUE, [NB.subnet]: subnet });
    try {
      const [, inserted] = await this.db.transact([
        // Logical_Switch has no unique index: the wait is what makes two hosts end with one switch.
        { op: 'wait', table: 'Logical_Switch', where: [['external_ids', 'includes', mark]], columns: ['name'], until: '==', rows: [], timeout: 0 },
        { op: 'insert', table: 'Logical_Switch', row: { name: row.name, external_ids: ovsMap(row.externalIds) } },
      ]);
      const id = readUuid((inserted as { uuid?: unknown }).uuid);
      return { created: true, sw: { uuid: id, name: row.name, externalIds: row.externalIds } };
    } catch (err) {
      if (!isWaitFailure(err)) throw err;
      const existing = await this.findSwitch(subnet);
      if (!existing) throw internal('OvnRace', `the OVN switch of ${subnet} was there and is gone again; try again`);
      return { created: false, sw: existing };
    }
  }

  async updateSwitchIds(id: string, set: Record<string, string>, remove: readonly string[]): Promise<boolean> {
    const where = [['_uuid', '==', uuid(id)]];
    const [deleted] = await this.db.transact([
      { op: 'mutate', table: 'Logical_Switch', where, mutations: [['external_ids', 'delete', ovsSet([...remove, ...Object.keys(set)])]] },
      { op: 'mutate', table: 'Logical_Switch', where, mutations: [['external_ids', 'insert', ovsMap(set)]] },
    ]);
    return count(deleted) === 1;
  }

  async deleteSwitchIf(id: string, expected: Readonly<Record<string, string>>): Promise<boolean> {
    const where = [['_uuid', '==', uuid(id)]];
    try {
      const [, deleted] = await this.db.transact([
        { op: 'wait', table: 'Logical_Switch', where, columns: ['external_ids'], until: '==', rows: [{ external_ids: ovsMap({ ...expected }) }], timeout: 0 },
        { op: 'delete', table: 'Logical_Switch', where },
      ]);
      return count(deleted) === 1;
    } catch (err) {
      if (isWaitFailure(err)) return false;
      throw err;
    }
  }

  async addPort(switchUuid: string, port: NbPortSpec) {
    try {
      const [, mutated] = await this.db.transact([
        {
          op: 'insert',
          table: 'Logical_Switch_Port',
          row: { name: port.name, addresses: ovsSet([...port.addresses]), port_security: ovsSet([...port.portSecurity]), external_ids: ovsMap(port.externalIds) },
          'uuid-name': 'port',
        },
        { op: 'mutate', table: 'Logical_Switch', where: [['_uuid', '==', uuid(switchUuid)]], mutations: [['ports', 'insert', ovsSet([namedUuid('port')])]] },
      ]);
      // A port no switch refers to is dropped at commit (Logical_Switch_Port is not a root table).
      if (count(mutated) !== 1) return { added: false as const, reason: 'no-switch' as const };
      return { added: true as const };
    } catch (err) {
      if (!isConstraintViolation(err)) throw err;
      return { added: false as const, reason: 'taken' as const, holder: await this.port(port.name) };
    }
  }

  async port(name: string): Promise<NbPort | undefined> {
    const [result] = await this.db.transact([{ op: 'select', table: 'Logical_Switch_Port', where: [['name', '==', name]], columns: PORT_COLUMNS }]);
    const row = rows(result)[0];
    return row ? toPort(row) : undefined;
  }

  async updatePort(name: string, chassis: string, changes: { addresses: readonly string[]; portSecurity: readonly string[]; externalIds: Record<string, string> }): Promise<boolean> {
    const where = [['name', '==', name], ['external_ids', 'includes', ovsMap({ [OWNER_KEY]: OWNER_VALUE, [NB.chassis]: chassis })]];
    const [updated] = await this.db.transact([
      { op: 'update', table: 'Logical_Switch_Port', where, row: { addresses: ovsSet([...changes.addresses]), port_security: ovsSet([...changes.portSecurity]) } },
      { op: 'mutate', table: 'Logical_Switch_Port', where, mutations: [['external_ids', 'delete', ovsSet(Object.keys(changes.externalIds))]] },
      { op: 'mutate', table: 'Logical_Switch_Port', where, mutations: [['external_ids', 'insert', ovsMap(changes.externalIds)]] },
    ]);
    return count(updated) === 1;
  }

  async deletePort(switchUuid: string, name: string, chassis: string): Promise<boolean> {
    const port = await this.port(name);
    if (!port || port.externalIds[NB.chassis] !== chassis) return false;
    const [mutated] = await this.db.transact([
      { op: 'mutate', table: 'Logical_Switch', where: [['_uuid', '==', uuid(switchUuid)]], mutations: [['ports', 'delete', ovsSet([uuid(port.uuid)])]] },
    ]);
    return count(mutated) === 1;
  }
}
