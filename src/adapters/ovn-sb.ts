/**
 * The OVN southbound database, read only: which chassis exist (a host whose
 * ovn-controller runs, or ran without leaving with `exit`). Any member of the
 * cluster answers; a follower's answer may be a moment old, which is enough
 * to tell a host that is there from one that has been gone for minutes.
 */
import type { Southbound } from '../driver/ports.js';
import type { OvsdbClient } from './ovsdb.js';
import { readOptional, readUuid, rows } from './ovsdb-datum.js';

export const SB_DATABASE = 'OVN_Southbound';

export class OvnSouthbound implements Southbound {
  constructor(private readonly db: OvsdbClient) {}

  async chassis(): Promise<Map<string, { hostname: string; encaps: string[] }>> {
    const [chassis, encaps] = await this.db.transact([
      { op: 'select', table: 'Chassis', where: [], columns: ['name', 'hostname'] },
      { op: 'select', table: 'Encap', where: [], columns: ['chassis_name', 'ip'] },
    ]);
    const out = new Map<string, { hostname: string; encaps: string[] }>(rows(chassis).map((c) => [String(c.name), { hostname: String(c.hostname), encaps: [] }]));
    for (const e of rows(encaps)) out.get(String(e.chassis_name))?.encaps.push(String(e.ip));
    for (const c of out.values()) c.encaps.sort();
    return out;
  }

  async residents(ports: readonly string[]): Promise<Map<string, { chassis: string; hostname: string }>> {
    if (ports.length === 0) return new Map();
    const results = await this.db.transact([
      { op: 'select', table: 'Chassis', where: [], columns: ['_uuid', 'name', 'hostname'] },
      ...ports.map((port) => ({ op: 'select' as const, table: 'Port_Binding', where: [['logical_port', '==', port]], columns: ['logical_port', 'chassis'] })),
    ]);
    const chassis = new Map(rows(results[0]).map((c) => [readUuid(c._uuid), { chassis: String(c.name), hostname: String(c.hostname) }]));
    const out = new Map<string, { chassis: string; hostname: string }>();
    for (const binding of results.slice(1).flatMap((r) => rows(r))) {
      const bound = readOptional(binding.chassis);
      const at = bound === undefined ? undefined : chassis.get(readUuid(bound));
      if (at) out.set(String(binding.logical_port), at);
    }
    return out;
  }

  close(): void {
    this.db.close();
  }
}

