/**
 * The OVS bridge client: what the drivers need from OVSDB, as typed calls.
 * Everything it creates carries the owner in external_ids, and it refuses to
 * delete a port or bridge that does not carry it.
 */
import { conflict, internal } from '../errors.js';
import { OWNER_KEY, OWNER_VALUE } from '../domain/names.js';
import type { Datapath } from '../domain/records.js';
import type { BridgeInfo, Ovs, PortInfo, PortSpec } from '../driver/ports.js';
import {
  type Operation,
  type OvsdbClient,
  type Row,
  namedUuid,
  ovsMap,
  ovsSet,
  readMap,
  readOptional,
  readSet,
  readUuid,
  uuid,
} from './ovsdb.js';

const bumpConfig: Operation[] = [
  { op: 'mutate', table: 'Open_vSwitch', where: [], mutations: [['next_cfg', '+=', 1]] },
  { op: 'select', table: 'Open_vSwitch', where: [], columns: ['next_cfg'] },
];

function absent(table: string, name: string): Operation {
  return { op: 'wait', table, where: [['name', '==', name]], columns: ['name'], until: '==', rows: [], timeout: 0 };
}

function present(table: string, name: string): Operation {
  return { op: 'wait', table, where: [['name', '==', name]], columns: ['name'], until: '==', rows: [{ name }], timeout: 0 };
}

function rows(result: Row | undefined): Row[] {
  return ((result as { rows?: Row[] } | undefined)?.rows ?? []) as Row[];
}

function isOwned(externalIds: Record<string, string>): boolean {
  return externalIds[OWNER_KEY] === OWNER_VALUE;
}

export class OvsBridgeClient implements Ovs {
  constructor(
    private readonly db: OvsdbClient,
    private readonly options: { applyTimeoutMs: number } = { applyTimeoutMs: 10_000 },
  ) {}

  async bridge(name: string): Promise<BridgeInfo | undefined> {
    const [bridges, ports] = await this.db.transact([
      { op: 'select', table: 'Bridge', where: [['name', '==', name]], columns: ['name', 'datapath_type', 'external_ids', 'ports'] },
      { op: 'select', table: 'Port', where: [], columns: ['_uuid', 'name'] },
    ]);
    const row = rows(bridges)[0];
    if (!row) return undefined;
    const portNames = new Map(rows(ports).map((p) => [readUuid(p._uuid), String(p.name)]));
    return {
      name,
      datapathType: String(row.datapath_type ?? ''),
      externalIds: readMap(row.external_ids),
      ports: readSet(row.ports).map((p) => portNames.get(readUuid(p)) ?? '?'),
    };
  }

  async ensureBridge(
    name: string,
    options: { datapathType: Datapath; externalIds: Record<string, string> },
  ): Promise<{ created: boolean; info: BridgeInfo }> {
    const existing = await this.bridge(name);
    if (existing) return { created: false, info: existing };
    try {
      const result = await this.db.transact([
        absent('Bridge', name),
        { op: 'insert', table: 'Interface', row: { name, type: 'internal' }, 'uuid-name': 'iface' },
        { op: 'insert', table: 'Port', row: { name, interfaces: namedUuid('iface') }, 'uuid-name': 'port' },
        {
          op: 'insert',
          table: 'Bridge',
          row: {
            name,
            ports: namedUuid('port'),
            datapath_type: options.datapathType,
            external_ids: ovsMap(options.externalIds),
          },
          'uuid-name': 'bridge',
        },
        { op: 'mutate', table: 'Open_vSwitch', where: [], mutations: [['bridges', 'insert', ovsSet([namedUuid('bridge')])]] },
        ...bumpConfig,
      ]);
      await this.db.waitForConfig(this.nextCfg(result), this.options.applyTimeoutMs);
      return { created: true, info: { name, datapathType: options.datapathType, externalIds: options.externalIds, ports: [name] } };
    } catch (err) {
      // Someone else created it between our look and our insert: use theirs.
      const raced = await this.bridge(name);
      if (raced) return { created: false, info: raced };
      throw err;
    }
  }

  async deleteOwnedBridge(name: string): Promise<boolean> {
    const [bridges] = await this.db.transact([
      { op: 'select', table: 'Bridge', where: [['name', '==', name]], columns: ['_uuid', 'external_ids'] },
    ]);
    const row = rows(bridges)[0];
    if (!row || !isOwned(readMap(row.external_ids))) return false;
    await this.db.transact([
      { op: 'mutate', table: 'Open_vSwitch', where: [], mutations: [['bridges', 'delete', ovsSet([uuid(readUuid(row._uuid))])]] },
      ...bumpConfig,
    ]);
    return true;
  }

  async addPort(spec: PortSpec): Promise<void> {
    const interfaceRow: Record<string, unknown> = { name: spec.name, type: spec.type };
    if (spec.mtuRequest !== undefined) interfaceRow.mtu_request = spec.mtuRequest;
    if (spec.options) interfaceRow.options = ovsMap(spec.options);
    const portRow: Record<string, unknown> = {
      name: spec.name,
      interfaces: namedUuid('iface'),
      external_ids: ovsMap(spec.externalIds),
    };
    if (spec.tag !== undefined) portRow.tag = spec.tag;
    if (spec.trunks) portRow.trunks = ovsSet([...spec.trunks]);
    if (spec.protected) portRow.protected = true;
    const ops: Operation[] = [
      present('Bridge', spec.bridge),
      absent('Port', spec.name),
      { op: 'insert', table: 'Interface', row: interfaceRow, 'uuid-name': 'iface' },
      { op: 'insert', table: 'Port', row: portRow, 'uuid-name': 'port' },
      {
        op: 'mutate',
        table: 'Bridge',
        where: [['name', '==', spec.bridge]],
        mutations: [['ports', 'insert', ovsSet([namedUuid('port')])]],
      },
      ...bumpConfig,
    ];
    let result: Row[];
    try {
      result = await this.db.transact(ops);
    } catch (err) {
      const index = (err as { details?: { index?: number } }).details?.index;
      if (index === 0) throw conflict('BridgeMissing', `OVS bridge ${spec.bridge} does not exist`);
      if (index !== 1) throw err;
      // A port of that name exists: replace it if it is ours (a retried call), refuse otherwise.
      await this.deletePort(spec.name);
      result = await this.db.transact(ops);
    }
    await this.db.waitForConfig(this.nextCfg(result), this.options.applyTimeoutMs);
    const [iface] = await this.db.transact([
      { op: 'select', table: 'Interface', where: [['name', '==', spec.name]], columns: ['ofport', 'error'] },
    ]);
    const row = rows(iface)[0];
    const error = row ? readOptional<string>(row.error) : 'the interface disappeared';
    const ofport = row ? readOptional<number>(row.ofport) : undefined;
    if (error || ofport === -1) {
      throw internal('PortFailed', `OVS could not add port ${spec.name} to ${spec.bridge}: ${error ?? 'no OpenFlow port assigned'}`);
    }
  }

  async deletePort(name: string): Promise<boolean> {
    const [ports] = await this.db.transact([
      { op: 'select', table: 'Port', where: [['name', '==', name]], columns: ['_uuid', 'external_ids'] },
    ]);
    const row = rows(ports)[0];
    if (!row) return false;
    if (!isOwned(readMap(row.external_ids))) {
      throw conflict('NotOwned', `OVS port ${name} was not created by ovsnet; leaving it alone`);
    }
    const id = uuid(readUuid(row._uuid));
    await this.db.transact([
      { op: 'mutate', table: 'Bridge', where: [['ports', 'includes', id]], mutations: [['ports', 'delete', ovsSet([id])]] },
      { op: 'mutate', table: 'Open_vSwitch', where: [], mutations: [['next_cfg', '+=', 1]] },
    ]);
    return true;
  }

  async setTrunks(name: string, trunks: readonly number[]): Promise<void> {
    const [ports] = await this.db.transact([
      { op: 'select', table: 'Port', where: [['name', '==', name]], columns: ['external_ids'] },
    ]);
    const row = rows(ports)[0];
    if (!row || !isOwned(readMap(row.external_ids))) throw conflict('NotOwned', `OVS port ${name} is not an ovsnet port`);
    const result = await this.db.transact([
      { op: 'update', table: 'Port', where: [['name', '==', name]], row: { trunks: ovsSet([...trunks]) } },
      ...bumpConfig,
    ]);
    await this.db.waitForConfig(this.nextCfg(result), this.options.applyTimeoutMs);
  }

  async portExists(name: string): Promise<boolean> {
    const [ports] = await this.db.transact([{ op: 'select', table: 'Port', where: [['name', '==', name]], columns: ['name'] }]);
    return rows(ports).length > 0;
  }

  async bridgeNames(): Promise<string[]> {
    const [bridges] = await this.db.transact([{ op: 'select', table: 'Bridge', where: [], columns: ['name'] }]);
    return rows(bridges).map((b) => String(b.name));
  }

  async listOwnedPorts(): Promise<PortInfo[]> {
    const [ports, bridges, interfaces] = await this.db.transact([
      {
        op: 'select',
        table: 'Port',
        where: [['external_ids', 'includes', ovsMap({ [OWNER_KEY]: OWNER_VALUE })]],
        columns: ['_uuid', 'name', 'tag', 'trunks', 'external_ids', 'interfaces'],
      },
      { op: 'select', table: 'Bridge', where: [], columns: ['name', 'ports'] },
      { op: 'select', table: 'Interface', where: [], columns: ['_uuid', 'type', 'options', 'ofport', 'error'] },
    ]);
    const bridgeOf = new Map<string, string>();
    for (const b of rows(bridges)) for (const p of readSet(b.ports)) bridgeOf.set(readUuid(p), String(b.name));
    const ifaces = new Map(rows(interfaces).map((i) => [readUuid(i._uuid), i]));
    return rows(ports).map((p) => {
      const ifaceId = readSet(p.interfaces).map(readUuid)[0];
      const iface = ifaceId ? ifaces.get(ifaceId) : undefined;
      return {
        name: String(p.name),
        bridge: bridgeOf.get(readUuid(p._uuid)),
        type: String(iface?.type ?? ''),
        tag: readOptional<number>(p.tag),
        trunks: readSet(p.trunks) as number[],
        options: iface ? readMap(iface.options) : {},
        externalIds: readMap(p.external_ids),
        ofport: iface ? readOptional<number>(iface.ofport) : undefined,
        error: iface ? readOptional<string>(iface.error) : undefined,
      };
    });
  }

  private nextCfg(result: Row[]): number {
    for (let i = result.length - 1; i >= 0; i--) {
      const found = rows(result[i])[0]?.next_cfg;
      if (typeof found === 'number') return found;
    }
    throw internal('OvsdbError', 'OVSDB did not return next_cfg');
  }
}
