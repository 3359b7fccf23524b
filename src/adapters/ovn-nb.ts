/**
 * The OVN northbound database through the project's OVSDB client (JSON-RPC,
 * the cluster's leader only): no ovn-nbctl process anywhere. Uniqueness and
 * the "nobody joined meanwhile" checks are left to the database, as
 * transactions that cannot commit (a unique index, `wait` operations).
 */
import { internal, unavailable } from '../errors.js';
import { type NbAcl, type NbAclSpec, type NbPort, type NbPortSpec, type NbSwitch, NB, ROUTER } from '../domain/ovn.js';
import { type NbView } from '../domain/ovn-diff.js';
import { type NbRouter, type RouterAttachment, type RouterPolicy, attachmentGaps, hasGaps, externalPortName, externalSwitchName, gatewayPortNames, localnetPortName, routerMac } from '../domain/ovn-router.js';
import { OWNER_KEY, OWNER_VALUE } from '../domain/names.js';
import type { Registration } from '../domain/ovn-identity.js';
import type { NbScope, Northbound, RouterGateway } from '../driver/ports.js';
import type { OvsdbClient } from './ovsdb.js';
import { type Operation, type Row, namedUuid, OvsdbError, ovsMap, ovsSet, readMap, readOptional, readSet, readUuid, uuid } from './ovsdb-datum.js';

export const NB_DATABASE = 'OVN_Northbound';

const OWNED = ovsMap({ [OWNER_KEY]: OWNER_VALUE });
/** A switch's columns, but for its `ports`: at 1 000 hosts that set is tens of thousands of uuids. */
const SWITCH_COLUMNS = ['_uuid', 'name', 'external_ids', 'acls'];
/** The columns of the plugin's ACLs (its switches' guards), read beside the switches. */
const ACL_COLUMNS = ['_uuid', 'direction', 'priority', 'match', 'action', 'external_ids'];
const PORT_COLUMNS = ['_uuid', 'name', 'addresses', 'port_security', 'external_ids', 'up'];

function rows(result: Row | undefined): Row[] {
  return ((result as { rows?: Row[] } | undefined)?.rows ?? []) as Row[];
}

function count(result: Row | undefined): number {
  return Number((result as { count?: number } | undefined)?.count ?? 0);
}

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

/** The database refused the transaction for a unique index (a port name another row has). */
function isConstraintViolation(err: unknown): boolean {
  return err instanceof OvsdbError && (err.details as { error?: string } | undefined)?.error === 'constraint violation';
}

/** The table of the unique index a transaction broke. */
function violatedTable(err: unknown): string | undefined {
  const details = (err as OvsdbError).details as { details?: string } | undefined;
  return /"(\w+)" table/.exec(details?.details ?? '')?.[1];
}

const EXTERNAL_KEY = 'ovsnet-external';

const ROUTER_COLUMNS = ['_uuid', 'name', 'external_ids', 'ports', 'nat', 'policies'];
/** What the plugin's routers refer to: its router ports, NAT rules and policies (each carries the owner mark). */
const ROUTER_PARTS: Operation[] = [
  { op: 'select', table: 'Logical_Router_Port', where: [['external_ids', 'includes', OWNED]], columns: ['_uuid', 'name', 'networks'] },
  { op: 'select', table: 'NAT', where: [['external_ids', 'includes', OWNED]], columns: ['_uuid', 'type', 'logical_ip', 'external_ip'] },
  { op: 'select', table: 'Logical_Router_Policy', where: [['external_ids', 'includes', OWNED]], columns: ['_uuid', 'priority', 'match', 'action'] },
];

function toRouter(row: Row, [ports, nat, policies]: Row[]): NbRouter {
  const refs = (column: unknown) => new Set(readSet(column).map(readUuid));
  const [portIds, natIds, policyIds] = [refs(row.ports), refs(row.nat), refs(row.policies)];
  return {
    uuid: readUuid(row._uuid),
    name: String(row.name),
    externalIds: readMap(row.external_ids),
    ports: rows(ports).filter((p) => portIds.has(readUuid(p._uuid))).map((p) => ({ uuid: readUuid(p._uuid), name: String(p.name), networks: readSet(p.networks) as string[] })),
    nat: rows(nat).filter((n) => natIds.has(readUuid(n._uuid))).map((n) => ({ uuid: readUuid(n._uuid), type: String(n.type), logicalIp: String(n.logical_ip), externalIp: String(n.external_ip) })),
    policies: rows(policies)
      .filter((p) => policyIds.has(readUuid(p._uuid)))
      .map((p) => ({ uuid: readUuid(p._uuid), priority: Number(p.priority), match: String(p.match), action: String(p.action) as RouterPolicy['action'] }))
      .sort((a, b) => b.priority - a.priority || a.match.localeCompare(b.match)),
  };
}

/** A `wait` that holds only while the row of that uuid exists. */
function stillThere(table: string, rowUuid: string): Operation {
  return { op: 'wait', table, where: [['_uuid', '==', uuid(rowUuid)]], columns: ['_uuid'], until: '==', rows: [{ _uuid: uuid(rowUuid) }], timeout: 0 };
}

/** A `wait` with timeout 0 that did not hold. */
function isWaitFailure(err: unknown): boolean {
  return err instanceof OvsdbError && (err.details as { error?: string } | undefined)?.error === 'timed out';
}

export class OvnNorthbound implements Northbound {
  constructor(private readonly db: OvsdbClient) {}

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

  async findRouter(name: string): Promise<NbRouter | undefined> {
    const [routers, ...parts] = await this.db.transact([
      { op: 'select', table: 'Logical_Router', where: [['external_ids', 'includes', ovsMap({ [OWNER_KEY]: OWNER_VALUE, [ROUTER.name]: name })]], columns: ROUTER_COLUMNS },
      ...ROUTER_PARTS,
    ]);
    const row = rows(routers)[0];
    return row ? toRouter(row, parts) : undefined;
  }

  async createRouter(name: string, externalIds: Record<string, string>): Promise<{ created: boolean; router: NbRouter }> {
    const mark = ovsMap({ [OWNER_KEY]: OWNER_VALUE, [ROUTER.name]: name });
    try {
      const [, inserted] = await this.db.transact([
        { op: 'wait', table: 'Logical_Router', where: [['external_ids', 'includes', mark]], columns: ['name'], until: '==', rows: [], timeout: 0 },
        { op: 'insert', table: 'Logical_Router', row: { name, external_ids: ovsMap(externalIds) } },
      ]);
      return { created: true, router: { uuid: readUuid((inserted as { uuid?: unknown }).uuid), name, externalIds, ports: [], nat: [], policies: [] } };
    } catch (err) {
      if (!isWaitFailure(err)) throw err;
      const existing = await this.findRouter(name);
      if (!existing) throw internal('OvnRace', `the OVN router ${name} was there and is gone again; try again`);
      return { created: false, router: existing };
    }
  }

  async ensureExternalSwitch(physnet: string): Promise<string> {
    const mark = ovsMap({ [OWNER_KEY]: OWNER_VALUE, [EXTERNAL_KEY]: physnet });
    const find = async () => {
      const [result] = await this.db.transact([{ op: 'select', table: 'Logical_Switch', where: [['external_ids', 'includes', mark]], columns: ['_uuid'] }]);
      const row = rows(result)[0];
      return row ? readUuid(row._uuid) : undefined;
    };
    const found = await find();
    if (found) return found;
    try {
      const [, , inserted] = await this.db.transact([
        { op: 'wait', table: 'Logical_Switch', where: [['external_ids', 'includes', mark]], columns: ['name'], until: '==', rows: [], timeout: 0 },
        {
          op: 'insert',
          table: 'Logical_Switch_Port',
          row: { name: localnetPortName(physnet), type: 'localnet', addresses: ovsSet(['unknown']), options: ovsMap({ network_name: physnet }), external_ids: OWNED },
          'uuid-name': 'localnet',
        },
        { op: 'insert', table: 'Logical_Switch', row: { name: externalSwitchName(physnet), ports: namedUuid('localnet'), external_ids: mark } },
      ]);
      return readUuid((inserted as { uuid?: unknown }).uuid);
    } catch (err) {
      if (!isWaitFailure(err) && !isConstraintViolation(err)) throw err;
      const raced = await find();
      if (!raced) throw internal('OvnRace', `the outside switch of ${physnet} was there and is gone again; try again`);
      return raced;
    }
  }

  async addRouterGateway(router: NbRouter, gateway: RouterGateway): Promise<'added' | 'taken' | 'exists' | 'gone'> {
    const names = gatewayPortNames(router.name);
    const chassis = gateway.chassis.map((c, i) => ({
      op: 'insert',
      table: 'HA_Chassis',
      row: { chassis_name: c.chassis, priority: c.priority },
      'uuid-name': `chassis${i}`,
    }));
    try {
      await this.db.transact([
        // Nothing is written for a router or outside switch deleted meanwhile.
        stillThere('Logical_Router', router.uuid),
        stillThere('Logical_Switch', gateway.externalSwitchUuid),
        {
          op: 'insert',
          table: 'Logical_Switch_Port',
          row: {
            name: externalPortName(gateway.physnet, gateway.address),
            type: 'router',
            addresses: ovsSet(['router']),
            // nat-addresses=router: the active gateway chassis announces the router's outside address (gratuitous
            // ARP), so that the outside network learns where it went after a failover.
            options: ovsMap({ 'router-port': names.lrp, 'nat-addresses': 'router' }),
            external_ids: ovsMap({ [OWNER_KEY]: OWNER_VALUE, [ROUTER.name]: router.name }),
          },
          'uuid-name': 'outside',
        },
        { op: 'mutate', table: 'Logical_Switch', where: [['_uuid', '==', uuid(gateway.externalSwitchUuid)]], mutations: [['ports', 'insert', ovsSet([namedUuid('outside')])]] },
        ...chassis,
        {
          op: 'insert',
          table: 'HA_Chassis_Group',
          row: { name: names.group, ha_chassis: ovsSet(gateway.chassis.map((_, i) => namedUuid(`chassis${i}`))), external_ids: OWNED },
          'uuid-name': 'group',
        },
        {
          op: 'insert',
          table: 'Logical_Router_Port',
          row: { name: names.lrp, mac: routerMac(gateway.address), networks: ovsSet([`${gateway.address}/${gateway.prefix}`]), ha_chassis_group: namedUuid('group'), external_ids: OWNED },
          'uuid-name': 'gateway',
        },
        { op: 'insert', table: 'Logical_Router_Static_Route', row: { ip_prefix: '0.0.0.0/0', nexthop: gateway.nexthop }, 'uuid-name': 'route' },
        {
          op: 'mutate',
          table: 'Logical_Router',
          where: [['_uuid', '==', uuid(router.uuid)]],
          mutations: [['ports', 'insert', ovsSet([namedUuid('gateway')])], ['static_routes', 'insert', ovsSet([namedUuid('route')])]],
        },
      ]);
      return 'added';
    } catch (err) {
      if (isWaitFailure(err)) return 'gone';
      if (!isConstraintViolation(err)) throw err;
      return violatedTable(err) === 'Logical_Switch_Port' ? 'taken' : 'exists';
    }
  }

  async attachSwitch(routerUuid: string, switchUuid: string, attachment: RouterAttachment): Promise<'added' | 'exists' | 'router-gone'> {
    const mine = ovsMap({ [OWNER_KEY]: OWNER_VALUE, [NB.subnet]: attachment.subnet });
    for (let attempt = 0; attempt < 5; attempt++) {
      const [routerRows, switchRows, lspRows, ...parts] = await this.db.transact([
        { op: 'select', table: 'Logical_Router', where: [['_uuid', '==', uuid(routerUuid)]], columns: ROUTER_COLUMNS },
        { op: 'select', table: 'Logical_Switch', where: [['_uuid', '==', uuid(switchUuid)]], columns: ['ports'] },
        { op: 'select', table: 'Logical_Switch_Port', where: [['name', '==', attachment.lsp]], columns: ['_uuid'] },
        ...ROUTER_PARTS,
      ]);
      const row = rows(routerRows)[0];
      if (!row) return 'router-gone';
      const sw = rows(switchRows)[0];
      if (!sw) throw internal('OvnRace', `the OVN switch of ${attachment.subnet} is gone while this host connected it to its router; try again`);
      const onSwitch = new Set(readSet(sw.ports).map(readUuid));
      const lspPresent = rows(lspRows).some((p) => onSwitch.has(readUuid(p._uuid)));
      const gaps = attachmentGaps(toRouter(row, parts), lspPresent, attachment);
      if (!hasGaps(gaps)) return 'exists';
      // Only while the router is as read (another host may be adding the same pieces) and the switch is there.
      const ops: Operation[] = [
        { op: 'wait', table: 'Logical_Router', where: [['_uuid', '==', uuid(routerUuid)]], columns: ['ports', 'nat', 'policies'], until: '==', rows: [{ ports: row.ports, nat: row.nat, policies: row.policies }], timeout: 0 },
        stillThere('Logical_Switch', switchUuid),
      ];
      const inserted: Record<'ports' | 'nat' | 'policies', unknown[]> = { ports: [], nat: [], policies: [] };
      if (gaps.lrp) {
        ops.push({ op: 'insert', table: 'Logical_Router_Port', row: { name: attachment.lrp.name, mac: attachment.lrp.mac, networks: ovsSet([...attachment.lrp.networks]), external_ids: OWNED }, 'uuid-name': 'rp' });
        inserted.ports.push(namedUuid('rp'));
      }
      if (gaps.lsp) {
        ops.push(
          {
            op: 'insert',
            table: 'Logical_Switch_Port',
            row: { name: attachment.lsp, type: 'router', addresses: ovsSet(['router']), options: ovsMap({ 'router-port': attachment.lrp.name }), external_ids: OWNED },
            'uuid-name': 'sp',
          },
          { op: 'mutate', table: 'Logical_Switch', where: [['_uuid', '==', uuid(switchUuid)]], mutations: [['ports', 'insert', ovsSet([namedUuid('sp')])]] },
        );
      }
      for (const [i, snat] of gaps.snat.entries()) {
        ops.push({ op: 'insert', table: 'NAT', row: { type: 'snat', logical_ip: snat.logicalIp, external_ip: snat.externalIp, external_ids: mine }, 'uuid-name': `nat${i}` });
        inserted.nat.push(namedUuid(`nat${i}`));
      }
      for (const [i, policy] of gaps.policies.entries()) {
        ops.push({ op: 'insert', table: 'Logical_Router_Policy', row: { priority: policy.priority, match: policy.match, action: policy.action, external_ids: mine }, 'uuid-name': `policy${i}` });
        inserted.policies.push(namedUuid(`policy${i}`));
      }
      const mutations = (['ports', 'nat', 'policies'] as const).filter((c) => inserted[c].length > 0).map((c) => [c, 'insert', ovsSet(inserted[c])]);
      if (mutations.length > 0) ops.push({ op: 'mutate', table: 'Logical_Router', where: [['_uuid', '==', uuid(routerUuid)]], mutations });
      try {
        await this.db.transact(ops);
        return 'added';
      } catch (err) {
        // Changed meanwhile (or a name just taken by another host doing the same): read again.
        if (!isWaitFailure(err) && !isConstraintViolation(err)) throw err;
      }
    }
    throw unavailable('OvnBusy', `the OVN router kept changing while this host connected ${attachment.subnet} to it; try again`);
  }

  async detachSwitch(routerUuid: string, switchUuid: string, attachment: { lrp: string; lsp: string; subnet: string }): Promise<void> {
    const mine = ovsMap({ [OWNER_KEY]: OWNER_VALUE, [NB.subnet]: attachment.subnet });
    const [lrp, lsp, nat, policies] = await this.db.transact([
      { op: 'select', table: 'Logical_Router_Port', where: [['name', '==', attachment.lrp]], columns: ['_uuid'] },
      { op: 'select', table: 'Logical_Switch_Port', where: [['name', '==', attachment.lsp]], columns: ['_uuid'] },
      { op: 'select', table: 'NAT', where: [['external_ids', 'includes', mine]], columns: ['_uuid'] },
      { op: 'select', table: 'Logical_Router_Policy', where: [['external_ids', 'includes', mine]], columns: ['_uuid'] },
    ]);
    const ids = (result: Row | undefined) => ovsSet(rows(result).map((r) => uuid(readUuid(r._uuid))));
    await this.db.transact([
      {
        op: 'mutate',
        table: 'Logical_Router',
        where: [['_uuid', '==', uuid(routerUuid)]],
        mutations: [['ports', 'delete', ids(lrp)], ['nat', 'delete', ids(nat)], ['policies', 'delete', ids(policies)]],
      },
      { op: 'mutate', table: 'Logical_Switch', where: [['_uuid', '==', uuid(switchUuid)]], mutations: [['ports', 'delete', ids(lsp)]] },
    ]);
  }

  async deleteRouterIf(router: NbRouter, physnet: string | undefined): Promise<boolean> {
    const gateway = router.ports.find((p) => p.name === gatewayPortNames(router.name).lrp);
    if (router.ports.some((p) => p !== gateway)) return false;
    const outside = gateway && physnet ? await this.port(externalPortName(physnet, gateway.networks[0]!.split('/')[0]!)) : undefined;
    const ops: Operation[] = [
      // Only while no network was connected meanwhile.
      { op: 'wait', table: 'Logical_Router', where: [['_uuid', '==', uuid(router.uuid)]], columns: ['ports'], until: '==', rows: [{ ports: ovsSet(router.ports.map((p) => uuid(p.uuid))) }], timeout: 0 },
      // The gateway port lets go of its chassis group first: a row still referred to cannot be deleted, even by one
      // that goes with this transaction.
      ...(gateway ? [{ op: 'update', table: 'Logical_Router_Port', where: [['_uuid', '==', uuid(gateway.uuid)]], row: { ha_chassis_group: ovsSet([]) } }] : []),
      { op: 'delete', table: 'Logical_Router', where: [['_uuid', '==', uuid(router.uuid)]] },
      { op: 'delete', table: 'HA_Chassis_Group', where: [['name', '==', gatewayPortNames(router.name).group]] },
    ];
    if (outside) ops.push({ op: 'mutate', table: 'Logical_Switch', where: [['ports', 'includes', uuid(outside.uuid)]], mutations: [['ports', 'delete', ovsSet([uuid(outside.uuid)])]] });
    try {
      await this.db.transact(ops);
      return true;
    } catch (err) {
      if (isWaitFailure(err)) return false;
      throw err;
    }
  }
}
