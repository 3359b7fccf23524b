/**
 * The OVN northbound database through the project's OVSDB client (JSON-RPC,
 * the cluster's leader only): no ovn-nbctl process anywhere. Uniqueness and
 * the "nobody joined meanwhile" checks are left to the database, as
 * transactions that cannot commit (a unique index, `wait` operations).
 */
import { internal } from '../errors.js';
import { type NbAcl, type NbAclSpec, type NbPort, type NbPortSpec, type NbSwitch, NB } from '../domain/ovn.js';
import { type NbView } from '../domain/ovn-diff.js';
import type { NbRouter, RouterAttachment } from '../domain/ovn-router.js';
import { OWNER_KEY, OWNER_VALUE } from '../domain/names.js';
import type { Registration } from '../domain/ovn-identity.js';
import type { NbScope, Northbound, RouterGateway } from '../driver/ports.js';
import type { OvsdbClient } from './ovsdb.js';
import { type Operation, type Row, count, isConstraintViolation, isWaitFailure, namedUuid, ovsMap, ovsSet, readMap, readOptional, readSet, readUuid, rows, uuid } from './ovsdb-datum.js';
import { OvnRouterRows, ROUTER_COLUMNS, ROUTER_PARTS, toRouter } from './ovn-nb-routers.js';

export const NB_DATABASE = 'OVN_Northbound';

const OWNED = ovsMap({ [OWNER_KEY]: OWNER_VALUE });
/** A switch's columns, but for its `ports`: at 1 000 hosts that set is tens of thousands of uuids. */
const SWITCH_COLUMNS = ['_uuid', 'name', 'external_ids', 'acls'];
/** The columns of the plugin's ACLs (its switches' guards), read beside the switches. */
const ACL_COLUMNS = ['_uuid', 'direction', 'priority', 'match', 'action', 'external_ids'];
const PORT_COLUMNS = ['_uuid', 'name', 'addresses', 'port_security', 'external_ids', 'up'];


/** A switch as read; its guard from `acls` (undefined: its ACLs were not read). */
function toSwitch(row: Row, acls: Row[] | undefined): NbSwitch {
  const base = { uuid: readUuid(row._uuid), name: String(row.name), externalIds: readMap(row.external_ids) };
  if (!acls) return base;
  const refs = new Set(readSet(row.acls).map(readUuid));
  const guard = acls
    .filter((a) => refs.has(readUuid(a._uuid)))
    .map((a): NbAcl => ({ uuid: readUuid(a._uuid), direction: 'from-lport', priority: Number(a.priority), match: String(a.match), action: 'drop', externalIds: readMap(a.external_ids) }));
  return { ...base, guard };
}

function aclRow(acl: NbAclSpec): Record<string, unknown> {
  return { direction: acl.direction, priority: acl.priority, match: acl.match, action: acl.action, external_ids: ovsMap(acl.externalIds) };
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

export class OvnNorthbound implements Northbound {
  /** The plugin's routers, their ports, NAT rules and policies, and the outside switch. */
  private readonly routers: OvnRouterRows;

  constructor(private readonly db: OvsdbClient) {
    this.routers = new OvnRouterRows(db);
  }

  async view(scope: NbScope = {}): Promise<NbView> {
    // At 1 000 hosts the ports are tens of thousands and the switches hundreds: a host reads those of its own
    // networks, each switch without its set of ports unless it is one of them.
    const owned = (extra: Record<string, string>) => [['external_ids', 'includes', ovsMap({ [OWNER_KEY]: OWNER_VALUE, ...extra })]];
    const bySubnet = (table: string, columns: string[], subnets: readonly string[] | undefined): Operation[] =>
      subnets ? subnets.map((s) => ({ op: 'select', table, where: owned({ [NB.subnet]: s }), columns })) : [{ op: 'select', table, where: owned({}), columns }];
    const wantPorts = scope.ports !== false;
    const everySwitch = !scope.subnets || scope.everySwitch === true;
    const { chassis } = scope;
    const withPorts = wantPorts ? [...SWITCH_COLUMNS, 'ports'] : SWITCH_COLUMNS;
    const switchOps: Operation[] = !scope.subnets
      ? [{ op: 'select', table: 'Logical_Switch', where: owned({}), columns: withPorts }]
      : [
          // Those in scope with their port sets; with everySwitch, the others without.
          ...(everySwitch ? [{ op: 'select', table: 'Logical_Switch', where: owned({}), columns: SWITCH_COLUMNS }] : []),
          ...(wantPorts || !everySwitch ? bySubnet('Logical_Switch', withPorts, scope.subnets) : []),
          ...(everySwitch ? [] : (scope.names ?? []).map((name) => ({ op: 'select', table: 'Logical_Switch', where: [['name', '==', name], ...owned({})], columns: SWITCH_COLUMNS }))),
          ...(!everySwitch && chassis?.hostname ? [{ op: 'select', table: 'Logical_Switch', where: owned({ [`${NB.hostPrefix}${chassis.name}`]: chassis.hostname }), columns: SWITCH_COLUMNS }] : []),
        ];
    const aclOps = bySubnet('ACL', ACL_COLUMNS, scope.subnets);
    const portOps = wantPorts
      ? [
          ...bySubnet('Logical_Switch_Port', PORT_COLUMNS, scope.subnets),
          // The ports facing the plugin's routers carry no subnet: one per routed network, read whole.
          ...(scope.subnets ? [{ op: 'select', table: 'Logical_Switch_Port', where: [['type', '==', 'router'], ...owned({})], columns: PORT_COLUMNS }] : []),
          ...(chassis ? [{ op: 'select', table: 'Logical_Switch_Port', where: owned({ [NB.chassis]: chassis.name }), columns: PORT_COLUMNS }] : []),
        ]
      : [];
    const routerOps: Operation[] = scope.routers ? [{ op: 'select', table: 'Logical_Router', where: [['external_ids', 'includes', OWNED]], columns: ROUTER_COLUMNS }, ...ROUTER_PARTS] : [];
    const results = await this.db.transact([...switchOps, ...aclOps, ...portOps, ...routerOps]);
    let at = 0;
    const take = (n: number) => results.slice(at, (at += n));
    const switchRows = new Map<string, Row>();
    for (const row of take(switchOps.length).flatMap(rows)) switchRows.set(readUuid(row._uuid), { ...switchRows.get(readUuid(row._uuid)), ...row });
    const acls = take(aclOps.length).flatMap(rows);
    const ports = take(portOps.length).flatMap(rows).map(toPort);
    const [routers, ...parts] = take(routerOps.length);
    // This host's ports on a switch not read yet (a network it left, with ports left behind): their switches too.
    const known = new Set([...switchRows.values()].map((r) => readMap(r.external_ids)[NB.subnet]));
    const missing = [...new Set(ports.map((p) => p.externalIds[NB.subnet]).filter((s): s is string => s !== undefined && !known.has(s)))];
    if (missing.length > 0) {
      const more = await this.db.transact(bySubnet('Logical_Switch', SWITCH_COLUMNS, missing));
      for (const row of more.flatMap(rows)) switchRows.set(readUuid(row._uuid), row);
    }
    const byUuid = new Map(ports.map((p) => [p.uuid, p]));
    const inScope = (row: Row) => !scope.subnets || scope.subnets.includes(readMap(row.external_ids)[NB.subnet] ?? '');
    const portsOf = new Map<string, NbPort[]>();
    for (const [id, row] of switchRows) {
      // A switch in scope: its ports as its port set says; another: the ports read of one chassis, by their subnet.
      const subnet = readMap(row.external_ids)[NB.subnet];
      portsOf.set(id, row.ports !== undefined ? readSet(row.ports).map(readUuid).flatMap((p) => (byUuid.has(p) ? [byUuid.get(p)!] : [])) : ports.filter((p) => subnet !== undefined && p.externalIds[NB.subnet] === subnet));
    }
    return { switches: [...switchRows.values()].map((row) => toSwitch(row, inScope(row) ? acls : undefined)), ports: portsOf, routers: scope.routers ? rows(routers).map((r) => toRouter(r, parts)) : [] };
  }

  async findSwitch(subnet: string): Promise<NbSwitch | undefined> {
    const mark = ovsMap({ [OWNER_KEY]: OWNER_VALUE, [NB.subnet]: subnet });
    const [result, acls] = await this.db.transact([
      { op: 'select', table: 'Logical_Switch', where: [['external_ids', 'includes', mark]], columns: SWITCH_COLUMNS },
      { op: 'select', table: 'ACL', where: [['external_ids', 'includes', mark]], columns: ACL_COLUMNS },
    ]);
    const row = rows(result)[0];
    return row ? toSwitch(row, rows(acls)) : undefined;
  }

  async createSwitch(subnet: string, row: { name: string; externalIds: Record<string, string>; guard: readonly NbAclSpec[] }): Promise<{ created: boolean; sw: NbSwitch }> {
    const mark = ovsMap({ [OWNER_KEY]: OWNER_VALUE, [NB.subnet]: subnet });
    try {
      const result = await this.db.transact([
        // Logical_Switch has no unique index: the wait is what makes two hosts end with one switch.
        { op: 'wait', table: 'Logical_Switch', where: [['external_ids', 'includes', mark]], columns: ['name'], until: '==', rows: [], timeout: 0 },
        ...row.guard.map((acl, i): Operation => ({ op: 'insert', table: 'ACL', row: aclRow(acl), 'uuid-name': `acl${i}` })),
        { op: 'insert', table: 'Logical_Switch', row: { name: row.name, external_ids: ovsMap(row.externalIds), acls: ovsSet(row.guard.map((_, i) => namedUuid(`acl${i}`))) } },
      ]);
      const id = (i: number) => readUuid((result[i] as { uuid?: unknown }).uuid);
      const guard = row.guard.map((acl, i): NbAcl => ({ ...acl, uuid: id(1 + i) }));
      return { created: true, sw: { uuid: id(1 + row.guard.length), name: row.name, externalIds: row.externalIds, guard } };
    } catch (err) {
      if (!isWaitFailure(err)) throw err;
      const existing = await this.findSwitch(subnet);
      if (!existing) throw internal('OvnRace', `the OVN switch of ${subnet} was there and is gone again; try again`);
      return { created: false, sw: existing };
    }
  }

  async updateSwitchIds(id: string, set: Record<string, string>, remove: readonly string[], ifIds?: Readonly<Record<string, string>>): Promise<boolean> {
    const where = [['_uuid', '==', uuid(id)]];
    const ops: Operation[] = [
      { op: 'mutate', table: 'Logical_Switch', where, mutations: [['external_ids', 'delete', ovsSet([...remove, ...Object.keys(set)])]] },
      { op: 'mutate', table: 'Logical_Switch', where, mutations: [['external_ids', 'insert', ovsMap(set)]] },
    ];
    if (ifIds) ops.unshift({ op: 'wait', table: 'Logical_Switch', where, columns: ['external_ids'], until: '==', rows: [{ external_ids: ovsMap({ ...ifIds }) }], timeout: 0 });
    try {
      const result = await this.db.transact(ops);
      return count(result[ifIds ? 1 : 0]) === 1;
    } catch (err) {
      if (ifIds && isWaitFailure(err)) return false;
      throw err;
    }
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

  async setGuard(sw: NbSwitch, guard: readonly NbAclSpec[]): Promise<boolean> {
    const where = [['_uuid', '==', uuid(sw.uuid)]];
    // Two hosts doing this at once may leave both their sets; the next look sees too many and sets one.
    const result = await this.db.transact([
      ...guard.map((acl, i): Operation => ({ op: 'insert', table: 'ACL', row: aclRow(acl), 'uuid-name': `acl${i}` })),
      { op: 'mutate', table: 'Logical_Switch', where, mutations: [['acls', 'delete', ovsSet((sw.guard ?? []).map((a) => uuid(a.uuid)))]] },
      { op: 'mutate', table: 'Logical_Switch', where, mutations: [['acls', 'insert', ovsSet(guard.map((_, i) => namedUuid(`acl${i}`)))]] },
    ]);
    return count(result[result.length - 1]) === 1;
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

  async deletePort(switchUuid: string, name: string, chassis: string, asRead?: Readonly<Record<string, string>>): Promise<boolean> {
    const port = await this.port(name);
    if (!port || port.externalIds[NB.chassis] !== chassis) return false;
    try {
      const [, mutated] = await this.db.transact([
        // Only while the row is as read: a host that claimed the address again meanwhile keeps its claim.
        { op: 'wait', table: 'Logical_Switch_Port', where: [['_uuid', '==', uuid(port.uuid)]], columns: ['external_ids'], until: '==', rows: [{ external_ids: ovsMap({ ...(asRead ?? port.externalIds) }) }], timeout: 0 },
        { op: 'mutate', table: 'Logical_Switch', where: [['_uuid', '==', uuid(switchUuid)]], mutations: [['ports', 'delete', ovsSet([uuid(port.uuid)])]] },
      ]);
      return count(mutated) === 1;
    } catch (err) {
      if (isWaitFailure(err)) return false;
      throw err;
    }
  }

  // ---- which host a chassis name is ----

  async registration(chassis: string): Promise<Registration | undefined> {
    const [result] = await this.db.transact([{ op: 'select', table: 'Chassis_Template_Var', where: [['chassis', '==', chassis]], columns: ['external_ids'] }]);
    const row = rows(result)[0];
    return row && { externalIds: readMap(row.external_ids) };
  }

  async writeRegistration(chassis: string, set: Record<string, string>, remove: readonly string[], asRead: Readonly<Record<string, string>> | undefined): Promise<boolean> {
    const where = [['chassis', '==', chassis]];
    try {
      if (!asRead) {
        // The unique index on chassis: of two hosts registering one name at once, one commits.
        await this.db.transact([{ op: 'insert', table: 'Chassis_Template_Var', row: { chassis, variables: ovsMap({}), external_ids: ovsMap({ [OWNER_KEY]: OWNER_VALUE, ...set }) } }]);
        return true;
      }
      const [, , , mutated] = await this.db.transact([
        { op: 'wait', table: 'Chassis_Template_Var', where, columns: ['external_ids'], until: '==', rows: [{ external_ids: ovsMap({ ...asRead }) }], timeout: 0 },
        { op: 'mutate', table: 'Chassis_Template_Var', where, mutations: [['external_ids', 'delete', ovsSet([...remove, ...Object.keys(set)])]] },
        { op: 'mutate', table: 'Chassis_Template_Var', where, mutations: [['external_ids', 'insert', ovsMap(set)]] },
        { op: 'select', table: 'Chassis_Template_Var', where, columns: ['chassis'] },
        // A registration left with nothing (a host forgotten) goes; a row that holds template variables stays.
        { op: 'delete', table: 'Chassis_Template_Var', where: [...where, ['external_ids', '==', ovsMap({})], ['variables', '==', ovsMap({})]] },
      ]);
      return rows(mutated).length === 1;
    } catch (err) {
      if (isWaitFailure(err) || isConstraintViolation(err)) return false;
      throw err;
    }
  }

  // ---- routers ----

  findRouter(name: string): Promise<NbRouter | undefined> {
    return this.routers.findRouter(name);
  }

  createRouter(name: string, externalIds: Record<string, string>): Promise<{ created: boolean; router: NbRouter }> {
    return this.routers.createRouter(name, externalIds);
  }

  ensureExternalSwitch(physnet: string): Promise<string> {
    return this.routers.ensureExternalSwitch(physnet);
  }

  addRouterGateway(router: NbRouter, gateway: RouterGateway): Promise<'added' | 'taken' | 'exists' | 'gone'> {
    return this.routers.addRouterGateway(router, gateway);
  }

  attachSwitch(routerUuid: string, switchUuid: string, attachment: RouterAttachment): Promise<'added' | 'exists' | 'router-gone'> {
    return this.routers.attachSwitch(routerUuid, switchUuid, attachment);
  }

  detachSwitch(routerUuid: string, switchUuid: string, names: { lrp: string; lsp: string; subnet: string }): Promise<void> {
    return this.routers.detachSwitch(routerUuid, switchUuid, names);
  }

  deleteRouterIf(router: NbRouter, physnet: string | undefined): Promise<boolean> {
    return this.routers.deleteRouterIf(router, physnet);
  }
}
