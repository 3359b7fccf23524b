/**
 * IpamDriver wire types (errors travel in `Error`, not `Err`) and decoders.
 */
import { badRequest } from '../errors.js';
import { type JsonObject, object, optionalBoolean, optionalString, requiredString, stringMap } from './decode.js';

export const REQUEST_ADDRESS_TYPE = 'RequestAddressType';
export const GATEWAY_ADDRESS_TYPE = 'com.docker.network.gateway';
/** Docker 29 names the endpoint (for a container: its name) in every endpoint address request. */
export const ENDPOINT_NAME = 'com.docker.network.endpoint.name';

export interface RequestPoolRequest {
  addressSpace: string;
  pool: string;
  subPool: string;
  options: Record<string, string>;
  v6: boolean;
}

export interface RequestAddressRequest {
  poolId: string;
  address: string;
  /** The request is for a network's gateway. */
  gateway: boolean;
  /** The endpoint the address is for, when the engine says (Docker 29); "" otherwise. */
  endpointName?: string;
}

export interface ReleaseAddressRequest {
  poolId: string;
  address: string;
}

export function decodeRequestPool(body: unknown): RequestPoolRequest {
  const o = object(body);
  return {
    addressSpace: requiredString(o, 'AddressSpace'),
    pool: optionalString(o, 'Pool'),
    subPool: optionalString(o, 'SubPool'),
    options: stringMap(o, 'Options'),
    v6: optionalBoolean(o, 'V6'),
  };
}

export function decodePoolRef(body: unknown): { poolId: string } {
  return { poolId: requiredString(object(body), 'PoolID') };
}

export function decodeRequestAddress(body: unknown): RequestAddressRequest {
  const o = object(body);
  const options: JsonObject = o.Options === undefined || o.Options === null ? {} : object(o.Options, 'Options');
  const type = options[REQUEST_ADDRESS_TYPE];
  if (type !== undefined && type !== GATEWAY_ADDRESS_TYPE) {
    throw badRequest(
      'InvalidRequest',
      `invalid request: Options.${REQUEST_ADDRESS_TYPE} must be "${GATEWAY_ADDRESS_TYPE}" (got ${JSON.stringify(type)})`,
    );
  }
  return {
    poolId: requiredString(o, 'PoolID'),
    address: optionalString(o, 'Address'),
    gateway: type === GATEWAY_ADDRESS_TYPE,
    endpointName: optionalString(options, ENDPOINT_NAME),
  };
}

export function decodeReleaseAddress(body: unknown): ReleaseAddressRequest {
  const o = object(body);
  return { poolId: requiredString(o, 'PoolID'), address: requiredString(o, 'Address') };
}

export interface RequestPoolResponse {
  PoolID: string;
  Pool: string;
  Data: Record<string, string>;
}

export interface RequestAddressResponse {
  Address: string;
  Data: Record<string, string>;
}
