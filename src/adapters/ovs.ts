/**
 * The OVS bridge client: what the drivers need from OVSDB, as typed calls.
 * Everything it creates carries the owner in external_ids, and it refuses to
 * delete a port or bridge that does not carry it.
 */
import { conflict, internal } from '../errors.js';
import { type ObservedFlows, type PortFlows, ownedCookies, parseFlowCookies, parseFlowPackets, parseMeters } from '../domain/flows.js';
import { NoBridgeSocket, OpenFlowClient } from './openflow.js';
import { flowAdd, flowDeleteByCookie, meterDelete, meterSet } from './openflow-codec.js';
import { type Runner, run as runCommand } from './exec.js';
import type { BridgeSpec } from '../domain/host.js';
import { OWNER_KEY, OWNER_VALUE } from '../domain/names.js';
import type { ObservedBridge, ObservedPort, Ovs, PortSpec } from '../driver/ports.js';
import type { OvsdbClient } from './ovsdb.js';
import { type Operation, type Row, namedUuid, ovsMap, ovsSet, readMap, readOptional, readSet, readUuid, rows, uuid } from './ovsdb-datum.js';

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

function vlanMode(value: string | undefined): PortSpec['vlanMode'] {
  // Other modes (native-tagged, dot1q-tunnel, ...) are none the plugin sets: read as a trunk, which differs from access.
  return value === undefined ? undefined : value === 'access' ? 'access' : 'trunk';
}

function isOwned(externalIds: Record<string, string>): boolean {
  return externalIds[OWNER_KEY] === OWNER_VALUE;
}

export interface OvsClientOptions {
  applyTimeoutMs: number;
  /** Where ovs-vswitchd's management sockets (<bridge>.mgmt) are, for ovs-ofctl. */
  rundir: string;
  run?: Runner;
}

/** OpenFlow 1.3 is the first with meters; every bridge allows it unless its protocols were narrowed. */
const OPENFLOW = 'OpenFlow13';

/** `value/mask` (ovs-ofctl's cookie selector; a bare value or mask -1 selects that cookie alone) as numbers. */
function cookieSelector(selector: string): [bigint, bigint] {
  const [value, mask] = selector.split('/');
  return [BigInt(value!), mask === undefined || mask === '-1' ? 0xffffffffffffffffn : BigInt(mask)];
}

export class OvsBridgeClient implements Ovs {
  private readonly options: OvsClientOptions;
  /**
   * The plugin's flows each bridge should have, by cookie: what this process wrote and did not delete, or what a
   * whole-host pass read (and then put right). The flow watch compares the bridge's count with it.
   */
  private readonly ledger = new Map<string, Set<string>>();
  /** Changes to flows and meters: OpenFlow on one kept connection per bridge. Reads use ovs-ofctl. */
  private readonly openflow: OpenFlowClient;

  constructor(
    private readonly db: OvsdbClient,
    options: Partial<OvsClientOptions> = {},
  ) {
    this.options = { applyTimeoutMs: 10_000, rundir: '/var/run/openvswitch', ...options };
    this.openflow = new OpenFlowClient({ rundir: this.options.rundir, timeoutMs: this.options.applyTimeoutMs });
  }

  async snapshot(): Promise<{ bridges: ObservedBridge[]; ports: ObservedPort[] }> {
    const [bridges, allPorts, owned, interfaces] = await this.db.transact([
      { op: 'select', table: 'Bridge', where: [], columns: ['name', 'datapath_type', 'fail_mode', 'external_ids', 'ports'] },
      { op: 'select', table: 'Port', where: [], columns: ['_uuid', 'name'] },
      {
        op: 'select',
        table: 'Port',
        where: [['external_ids', 'includes', ovsMap({ [OWNER_KEY]: OWNER_VALUE })]],
        columns: ['_uuid', 'name', 'tag', 'trunks', 'vlan_mode', 'protected', 'external_ids', 'interfaces'],
      },
      { op: 'select', table: 'Interface', where: [], columns: ['_uuid', 'type', 'options', 'mtu_request', 'ofport', 'error', 'external_ids'] },
    ]);
    const portNames = new Map(rows(allPorts).map((p) => [readUuid(p._uuid), String(p.name)]));
    const bridgeOf = new Map<string, string>();
    const bridgeList = rows(bridges).map((b): ObservedBridge => {
      const ports = readSet(b.ports).map(readUuid);
      for (const id of ports) bridgeOf.set(id, String(b.name));
      return {
        name: String(b.name),
        datapathType: String(b.datapath_type ?? ''),
        failMode: readOptional<string>(b.fail_mode) ?? '',
        externalIds: readMap(b.external_ids),
        ports: ports.map((id) => portNames.get(id) ?? '?'),
      };
    });
    const ifaces = new Map(rows(interfaces).map((i) => [readUuid(i._uuid), i]));
    const ports = rows(owned).map((p): ObservedPort => {
      const ifaceId = readSet(p.interfaces).map(readUuid)[0];
      const iface = ifaceId ? ifaces.get(ifaceId) : undefined;
      return {
        name: String(p.name),
        bridge: bridgeOf.get(readUuid(p._uuid)) ?? '',
        type: String(iface?.type ?? ''),
        tag: readOptional<number>(p.tag),
        trunks: (readSet(p.trunks) as number[]).sort((a, b) => a - b),
        vlanMode: vlanMode(readOptional<string>(p.vlan_mode)),
        protected: p.protected === true,
        options: iface ? readMap(iface.options) : {},
        mtuRequest: iface ? readOptional<number>(iface.mtu_request) : undefined,
        externalIds: readMap(p.external_ids),
        interfaceExternalIds: iface ? readMap(iface.external_ids) : {},
        ofport: iface ? readOptional<number>(iface.ofport) : undefined,
        error: iface ? readOptional<string>(iface.error) : undefined,
      };
    });
    return { bridges: bridgeList, ports };
  }

  async ensureBridge(spec: BridgeSpec): Promise<{ created: boolean; datapathType: string }> {
    const existing = await this.bridgeDatapath(spec.name);
    if (existing !== undefined) return { created: false, datapathType: existing };
    try {
      const result = await this.db.transact([
        absent('Bridge', spec.name),
        { op: 'insert', table: 'Interface', row: { name: spec.name, type: 'internal' }, 'uuid-name': 'iface' },
        { op: 'insert', table: 'Port', row: { name: spec.name, interfaces: namedUuid('iface') }, 'uuid-name': 'port' },
        {
          op: 'insert',
          table: 'Bridge',
          row: { name: spec.name, ports: namedUuid('port'), datapath_type: spec.datapath, external_ids: ovsMap(spec.externalIds), ...(spec.failMode ? { fail_mode: spec.failMode } : {}) },
          'uuid-name': 'bridge',
        },
        { op: 'mutate', table: 'Open_vSwitch', where: [], mutations: [['bridges', 'insert', ovsSet([namedUuid('bridge')])]] },
        ...bumpConfig,
      ]);
      await this.db.waitForConfig(this.nextCfg(result), this.options.applyTimeoutMs);
      return { created: true, datapathType: spec.datapath };
    } catch (err) {
      // Someone else created it between our look and our insert: use theirs.
      const raced = await this.bridgeDatapath(spec.name);
      if (raced !== undefined) return { created: false, datapathType: raced };
      throw err;
    }
  }

  async secureBridge(name: string): Promise<boolean> {
    const result = await this.db.transact([
      { op: 'update', table: 'Bridge', where: [['name', '==', name], ['external_ids', 'includes', ovsMap({ [OWNER_KEY]: OWNER_VALUE })]], row: { fail_mode: 'secure' } },
      ...bumpConfig,
    ]);
    if (!((result[0] as { count?: number } | undefined)?.count ?? 0)) return false;
    await this.db.waitForConfig(this.nextCfg(result), this.options.applyTimeoutMs);
    return true;
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
    this.ledger.delete(name);
    return true;
  }

  async addPort(spec: PortSpec): Promise<number> {
    const interfaceRow: Record<string, unknown> = { name: spec.name, type: spec.type, options: ovsMap(spec.options), external_ids: ovsMap(spec.interfaceExternalIds) };
    if (spec.mtuRequest !== undefined) interfaceRow.mtu_request = spec.mtuRequest;
    const portRow: Record<string, unknown> = {
      name: spec.name,
      interfaces: namedUuid('iface'),
      external_ids: ovsMap(spec.externalIds),
      trunks: ovsSet([...spec.trunks]),
      protected: spec.protected,
    };
    if (spec.tag !== undefined) portRow.tag = spec.tag;
    if (spec.vlanMode !== undefined) portRow.vlan_mode = spec.vlanMode;
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
    return this.checkInterface(spec);
  }

  async updatePort(spec: PortSpec): Promise<number> {
    const keys = Object.keys(spec.externalIds);
    const ifaceKeys = Object.keys(spec.interfaceExternalIds);
    const result = await this.db.transact([
      // Only a port the plugin owns: checked in the same transaction, which fails here otherwise.
      {
        op: 'wait',
        table: 'Port',
        where: [['name', '==', spec.name], ['external_ids', 'includes', ovsMap({ [OWNER_KEY]: OWNER_VALUE })]],
        columns: ['name'],
        until: '==',
        rows: [{ name: spec.name }],
        timeout: 0,
      },
      {
        op: 'update',
        table: 'Port',
        where: [['name', '==', spec.name]],
        row: { tag: spec.tag === undefined ? ovsSet([]) : spec.tag, trunks: ovsSet([...spec.trunks]), vlan_mode: spec.vlanMode ?? ovsSet([]), protected: spec.protected },
      },
      // The plugin's keys are set; keys someone else added (annotations) stay.
      { op: 'mutate', table: 'Port', where: [['name', '==', spec.name]], mutations: [['external_ids', 'delete', ovsSet(keys)]] },
      { op: 'mutate', table: 'Port', where: [['name', '==', spec.name]], mutations: [['external_ids', 'insert', ovsMap(spec.externalIds)]] },
      {
        op: 'update',
        table: 'Interface',
        where: [['name', '==', spec.name]],
        row: { options: ovsMap(spec.options), mtu_request: spec.mtuRequest === undefined ? ovsSet([]) : spec.mtuRequest },
      },
      { op: 'mutate', table: 'Interface', where: [['name', '==', spec.name]], mutations: [['external_ids', 'delete', ovsSet(ifaceKeys)]] },
      { op: 'mutate', table: 'Interface', where: [['name', '==', spec.name]], mutations: [['external_ids', 'insert', ovsMap(spec.interfaceExternalIds)]] },
      ...bumpConfig,
    ]).catch((err: unknown) => {
      if ((err as { details?: { index?: number } }).details?.index === 0) throw conflict('NotOwned', `OVS port ${spec.name} is not an ovsnet port`);
      throw err;
    });
    await this.db.waitForConfig(this.nextCfg(result), this.options.applyTimeoutMs);
    return this.checkInterface(spec);
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

  async ofport(name: string): Promise<number | undefined> {
    const [iface] = await this.db.transact([{ op: 'select', table: 'Interface', where: [['name', '==', name]], columns: ['ofport'] }]);
    const row = rows(iface)[0];
    const ofport = row ? readOptional<number>(row.ofport) : undefined;
    return ofport !== undefined && ofport > 0 ? ofport : undefined;
  }

  async flows(bridge: string): Promise<ObservedFlows> {
    const [flows, meters] = await Promise.all([
      this.ofctl(['dump-flows', bridge, `cookie=${ownedCookies()}`]),
      this.ofctl(['dump-meters', bridge]),
    ]);
    const cookies = parseFlowCookies(flows);
    // What the pass that reads this puts right from here on: the ledger starts again from what is there.
    this.ledger.set(bridge, new Set(cookies));
    return { cookies, meters: parseMeters(meters) };
  }

  async flowPackets(bridge: string): Promise<Map<string, number>> {
    return parseFlowPackets(await this.ofctl(['dump-flows', bridge, `cookie=${ownedCookies()}`]));
  }

  expectedFlows(bridge: string): number {
    return this.ledger.get(bridge)?.size ?? 0;
  }

  /** The ledger after flows of `bridge` selected by these cookie/masks were deleted. */
  private forget(bridge: string, selectors: readonly string[]): void {
    const written = this.ledger.get(bridge);
    if (!written || selectors.length === 0) return;
    const masks = selectors.map(cookieSelector);
    for (const cookie of written) {
      const value = BigInt(cookie);
      if (masks.some(([c, m]) => (value & m) === (c & m))) written.delete(cookie);
    }
  }

  async setPortFlows(flows: PortFlows, options: { before?: readonly string[]; after?: readonly string[] }): Promise<void> {
    if (flows.meter) {
      // The meter first, on its own: flows that name a meter that could not be made would be refused, and
      // the port left with its drop flows alone. One left by an earlier port of this number is changed.
      let [failed] = await this.openflow.send(flows.bridge, [meterSet(flows.meter, false)]);
      if (failed?.meterExists) [failed] = await this.openflow.send(flows.bridge, [meterSet(flows.meter, true)]);
      if (failed) throw failed;
    }
    const deletions = (selectors: readonly string[] = []) => selectors.map((s) => flowDeleteByCookie(...cookieSelector(s)));
    const messages = [...deletions(options.before), ...flows.flows.map((f) => flowAdd(f, BigInt(f.cookie))), ...deletions(options.after)];
    const [failed] = await this.openflow.send(flows.bridge, messages);
    if (failed) throw failed;
    this.forget(flows.bridge, options.before ?? []);
    const written = this.ledger.get(flows.bridge) ?? new Set<string>();
    this.ledger.set(flows.bridge, written);
    for (const f of flows.flows) written.add(`0x${BigInt(f.cookie).toString(16).padStart(16, '0')}`);
    this.forget(flows.bridge, options.after ?? []);
  }

  async deleteFlows(bridge: string, cookies: readonly string[], meters: readonly number[] = []): Promise<void> {
    try {
      this.forget(bridge, cookies);
      const errors = await this.openflow.send(bridge, [...cookies.map((c) => flowDeleteByCookie(...cookieSelector(c))), ...meters.map(meterDelete)]);
      const failed = errors.find((e) => !e.unknownMeter);
      if (failed) throw failed;
    } catch (err) {
      // A bridge that is gone took its flows and meters with it.
      if (err instanceof NoBridgeSocket) return;
      throw err;
    }
  }

  countFlows(bridge: string, selector: string): Promise<number> {
    return this.openflow.countFlows(bridge, ...cookieSelector(selector));
  }

  watchedBridges(): string[] {
    return this.openflow.watching();
  }

  watchFlows(bridges: readonly string[], onLost: (bridge: string) => void, options: { add?: boolean } = {}): void {
    this.openflow.onReconnect = onLost;
    this.openflow.watch(bridges, options);
  }

  close(): void {
    this.openflow.close();
  }

  /** ovs-ofctl on a bridge's management socket, speaking OpenFlow 1.3. */
  private async ofctl(args: readonly string[], input?: string): Promise<string> {
    const [command, bridge, ...rest] = args;
    const target = `unix:${this.options.rundir}/${bridge}.mgmt`;
    const { stdout } = await (this.options.run ?? runCommand)('ovs-ofctl', ['-O', OPENFLOW, command!, target, ...rest], { input, timeoutMs: this.options.applyTimeoutMs });
    return stdout;
  }

  async systemIds(): Promise<Record<string, string>> {
    const [row] = await this.db.transact([{ op: 'select', table: 'Open_vSwitch', where: [], columns: ['external_ids'] }]);
    return readMap(rows(row)[0]?.external_ids);
  }

  async interfaceIds(name: string): Promise<Record<string, string> | undefined> {
    const [row] = await this.db.transact([{ op: 'select', table: 'Interface', where: [['name', '==', name]], columns: ['external_ids'] }]);
    const found = rows(row)[0];
    return found ? readMap(found.external_ids) : undefined;
  }

  private async bridgeDatapath(name: string): Promise<string | undefined> {
    const [bridges] = await this.db.transact([{ op: 'select', table: 'Bridge', where: [['name', '==', name]], columns: ['datapath_type'] }]);
    const row = rows(bridges)[0];
    return row ? String(row.datapath_type ?? '') : undefined;
  }

  /** After ovs-vswitchd applied a change: the interface has an OpenFlow port and no error. */
  private async checkInterface(spec: PortSpec): Promise<number> {
    const [iface] = await this.db.transact([
      { op: 'select', table: 'Interface', where: [['name', '==', spec.name]], columns: ['ofport', 'error'] },
    ]);
    const row = rows(iface)[0];
    const error = row ? readOptional<string>(row.error) : 'the interface disappeared';
    const ofport = row ? readOptional<number>(row.ofport) : undefined;
    if (error || ofport === -1) {
      throw internal('PortFailed', `OVS could not add port ${spec.name} to ${spec.bridge}: ${error ?? 'no OpenFlow port assigned'}`);
    }
    return ofport ?? 0;
  }

  private nextCfg(result: Row[]): number {
    for (let i = result.length - 1; i >= 0; i--) {
      const found = rows(result[i])[0]?.next_cfg;
      if (typeof found === 'number') return found;
    }
    throw internal('OvsdbError', 'OVSDB did not return next_cfg');
  }
}
