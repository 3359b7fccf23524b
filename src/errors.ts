/**
 * One error type for everything the plugin reports. Callers branch on `kind`
 * (and `code` for finer cases), never on message text; the HTTP layer maps
 * `kind` to a status in exactly one place.
 */
export type ErrorKind = 'BadRequest' | 'NotFound' | 'Conflict' | 'Exhausted' | 'Unavailable' | 'Internal';

/**
 * Every code the plugin gives an error: a closed set, so that a caller that branches on a code (and a test that
 * expects one) names one the compiler knows. Each says what went wrong in a word; the message says the rest.
 */
export const ERROR_CODES = [
  'AddressInUse', 'AddressOutOfPool', 'AddressReserved', 'AddressesExhausted', 'AmbiguousNetwork', 'BadFlow',
  'BridgeMissing', 'BridgeNameTaken', 'CommandFailed', 'EndpointExists', 'ForwardingOff', 'GuardFailed', 'HostBitsSet', 'HostNotGone',
  'HostRouteOverlap', 'HostUnknown', 'InvalidAddress', 'InvalidMac', 'InvalidMtu', 'InvalidName', 'InvalidOption',
  'InvalidPort', 'InvalidRange', 'InvalidRequest', 'InvalidSetting', 'InvalidSubnet', 'InvalidUplink',
  'MissingOption', 'MtuTooLarge', 'NetworkExists', 'NoAddressFamily', 'NoDefaultPool', 'NoEngineCheck', 'NoGateway',
  'NoLeader', 'NoLocalTag', 'NoQuorum', 'NoReconciler', 'NoRouteToPeer', 'NoSubnet', 'NoTracer', 'NotOverlay', 'NotOvn', 'NotOwned',
  'OvnBusy', 'OvnHostConflict', 'OvnNameInUse', 'OvnNeedsIpam', 'OvnNetworkDiffers', 'OvnNoExternal',
  'OvnNoOutsideAddress', 'OvnNotInstalled', 'OvnNotReady', 'OvnOff', 'OvnRace', 'OvnRouterDiffers',
  'OvnRouterNameTaken', 'OvnRouterNeedsGateway', 'OvsdbClosed', 'OvsdbDisconnected', 'OvsdbError', 'OvsdbTimeout',
  'OvsdbUnavailable', 'PeerIsLocal', 'PoolOverlap', 'PoolsExhausted', 'PortFailed', 'PortInUse', 'PortsNotSupported',
  'SubnetInUse', 'SubnetOverlap', 'SubnetTooSmall', 'SysctlReadOnly', 'TraceFailed', 'TunnelKeyInUse', 'TunnelPath',
  'UnknownAddressSpace', 'UnknownEndpoint', 'UnknownNetwork', 'UnknownOption', 'UnknownPool', 'UplinkInUse',
  'VlanInUse', 'VswitchdTimeout', 'WrongFamily',
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

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
  readonly code: ErrorCode;
  readonly shield: RollbackShield | undefined;

  constructor(kind: ErrorKind, code: ErrorCode, message: string, options?: { cause?: unknown; shield?: RollbackShield }) {
    super(message, options);
    this.name = 'PluginError';
    this.kind = kind;
    this.code = code;
    this.shield = options?.shield;
  }
}

export const badRequest = (code: ErrorCode, message: string) => new PluginError('BadRequest', code, message);
export const notFound = (code: ErrorCode, message: string) => new PluginError('NotFound', code, message);
export const conflict = (code: ErrorCode, message: string, shield?: RollbackShield) => new PluginError('Conflict', code, message, { shield });
export const exhausted = (code: ErrorCode, message: string) => new PluginError('Exhausted', code, message);
export const unavailable = (code: ErrorCode, message: string, cause?: unknown) =>
  new PluginError('Unavailable', code, message, { cause });
export const internal = (code: ErrorCode, message: string, cause?: unknown) =>
  new PluginError('Internal', code, message, { cause });

export function isPluginError(err: unknown, kind?: ErrorKind): err is PluginError {
  return err instanceof PluginError && (kind === undefined || err.kind === kind);
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
