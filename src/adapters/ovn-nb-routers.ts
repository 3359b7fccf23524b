/**
 * The plugin's OVN routers in the northbound database: found and made once by name, given their way out (a
 * gateway port with its HA chassis group and default route on the outside switch, made once per physical
 * network), connected to and disconnected from switches, and deleted with their last network. Every write is
 * guarded as read (a `wait` on the rows it relies on, or a unique index), so two hosts never make one twice.
 */
import { internal, unavailable } from '../errors.js';
import { OWNER_KEY, OWNER_VALUE } from '../domain/names.js';
import { NB, ROUTER } from '../domain/ovn.js';
import { type NbRouter, type RouterAttachment, type RouterPolicy, attachmentGaps, externalPortName, externalSwitchName, gatewayPortNames, hasGaps, localnetPortName, routerMac } from '../domain/ovn-router.js';
import type { RouterGateway } from '../driver/ports.js';
import type { OvsdbClient } from './ovsdb.js';
import { type Operation, type Row, isConstraintViolation, isWaitFailure, namedUuid, ovsMap, ovsSet, readMap, readSet, readUuid, rows, stillThere, uuid, violatedTable } from './ovsdb-datum.js';

const OWNED = ovsMap({ [OWNER_KEY]: OWNER_VALUE });

const EXTERNAL_KEY = 'ovsnet-external';

export const ROUTER_COLUMNS = ['_uuid', 'name', 'external_ids', 'ports', 'nat', 'policies'];
/** What the plugin's routers refer to: its router ports, NAT rules and policies (each carries the owner mark). */
export const ROUTER_PARTS: Operation[] = [
  { op: 'select', table: 'Logical_Router_Port', where: [['external_ids', 'includes', OWNED]], columns: ['_uuid', 'name', 'networks'] },
  { op: 'select', table: 'NAT', where: [['external_ids', 'includes', OWNED]], columns: ['_uuid', 'type', 'logical_ip', 'external_ip'] },
  { op: 'select', table: 'Logical_Router_Policy', where: [['external_ids', 'includes', OWNED]], columns: ['_uuid', 'priority', 'match', 'action'] },
];

export function toRouter(row: Row, [ports, nat, policies]: Row[]): NbRouter {
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

export class OvnRouterRows {
  constructor(private readonly db: OvsdbClient) {}

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
    const outside = gateway && physnet ? await this.switchPort(externalPortName(physnet, gateway.networks[0]!.split('/')[0]!)) : undefined;
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

  /** A logical switch port's uuid, by name. */
  private async switchPort(name: string): Promise<{ uuid: string } | undefined> {
    const [result] = await this.db.transact([{ op: 'select', table: 'Logical_Switch_Port', where: [['name', '==', name]], columns: ['_uuid'] }]);
    const row = rows(result)[0];
    return row ? { uuid: readUuid(row._uuid) } : undefined;
  }
}
