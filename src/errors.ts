/**
 * One error type for everything the plugin reports. Callers branch on `kind`
 * (and `code` for finer cases), never on message text; the HTTP layer maps
 * `kind` to a status in exactly one place.
 */
export type ErrorKind = 'BadRequest' | 'NotFound' | 'Conflict' | 'Exhausted' | 'Unavailable' | 'Internal';

/**
 * What Docker's rollback of a refused request must not release, because
 * another network or endpoint holds it (see IpamDriver.shieldFromRollback).
 */
export interface RollbackShield {
  readonly poolId: string;
  /** One address; without it, the whole pool. */
  readonly address?: string;
}

export class PluginError extends Error {
  readonly kind: ErrorKind;
  readonly code: string;
  readonly shield: RollbackShield | undefined;

  constructor(kind: ErrorKind, code: string, message: string, options?: { cause?: unknown; shield?: RollbackShield }) {
    super(message, options);
    this.name = 'PluginError';
    this.kind = kind;
    this.code = code;
    this.shield = options?.shield;
  }
}

export const badRequest = (code: string, message: string) => new PluginError('BadRequest', code, message);
export const notFound = (code: string, message: string) => new PluginError('NotFound', code, message);
export const conflict = (code: string, message: string, shield?: RollbackShield) => new PluginError('Conflict', code, message, { shield });
export const exhausted = (code: string, message: string) => new PluginError('Exhausted', code, message);
export const unavailable = (code: string, message: string, cause?: unknown) =>
  new PluginError('Unavailable', code, message, { cause });
export const internal = (code: string, message: string, cause?: unknown) =>
  new PluginError('Internal', code, message, { cause });

export function isPluginError(err: unknown, kind?: ErrorKind): err is PluginError {
  return err instanceof PluginError && (kind === undefined || err.kind === kind);
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
