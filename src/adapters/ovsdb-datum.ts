/**
 * OVSDB's values: rows, operations and datums (RFC 7047, section 5.1) to and from plain values (maps, sets,
 * uuids and named uuids, an optional scalar), and the error a server's answer makes.
 */
import { PluginError } from '../errors.js';

export type Datum = unknown;
export type Row = Record<string, Datum>;
export type Operation = Record<string, unknown>;

export class OvsdbError extends PluginError {
  constructor(message: string, readonly details?: unknown) {
    super('Internal', 'OvsdbError', message);
  }
}

export function ovsMap(entries: Record<string, string>): Datum {
  return ['map', Object.entries(entries)];
}

export function ovsSet(items: readonly Datum[]): Datum {
  return ['set', items];
}

export function uuid(value: string): Datum {
  return ['uuid', value];
}

export function namedUuid(name: string): Datum {
  return ['named-uuid', name];
}

export function readMap(datum: Datum): Record<string, string> {
  const out: Record<string, string> = {};
  if (Array.isArray(datum) && datum[0] === 'map' && Array.isArray(datum[1])) {
    for (const pair of datum[1] as Array<[string, string]>) out[pair[0]] = pair[1];
  }
  return out;
}

/** A set column as a list of atoms (a one-element set may be sent as the bare atom). */
export function readSet(datum: Datum): Datum[] {
  if (Array.isArray(datum) && datum[0] === 'set' && Array.isArray(datum[1])) return datum[1];
  return [datum];
}

export function readUuid(atom: Datum): string {
  if (Array.isArray(atom) && atom[0] === 'uuid' && typeof atom[1] === 'string') return atom[1];
  throw new OvsdbError(`expected a uuid, got ${JSON.stringify(atom)}`);
}

/** An optional scalar (a set of zero or one element). */
export function readOptional<T>(datum: Datum): T | undefined {
  const items = readSet(datum);
  return items.length === 0 ? undefined : (items[0] as T);
}

// ---- results and conditions of transactions ----

/** The rows a `select` answered. */
export function rows(result: Row | undefined): Row[] {
  return ((result as { rows?: Row[] } | undefined)?.rows ?? []) as Row[];
}

/** How many rows an `update`, `mutate` or `delete` touched. */
export function count(result: Row | undefined): number {
  return Number((result as { count?: number } | undefined)?.count ?? 0);
}

/** The database refused the transaction for a unique index (a port name another row has). */
export function isConstraintViolation(err: unknown): boolean {
  return err instanceof OvsdbError && (err.details as { error?: string } | undefined)?.error === 'constraint violation';
}

/** The table of the unique index a transaction broke. */
export function violatedTable(err: unknown): string | undefined {
  const details = (err as OvsdbError).details as { details?: string } | undefined;
  return /"(\w+)" table/.exec(details?.details ?? '')?.[1];
}

/** A `wait` that holds only while the row of that uuid exists. */
export function stillThere(table: string, rowUuid: string): Operation {
  return { op: 'wait', table, where: [['_uuid', '==', uuid(rowUuid)]], columns: ['_uuid'], until: '==', rows: [{ _uuid: uuid(rowUuid) }], timeout: 0 };
}

/** A `wait` with timeout 0 that did not hold. */
export function isWaitFailure(err: unknown): boolean {
  return err instanceof OvsdbError && (err.details as { error?: string } | undefined)?.error === 'timed out';
}
