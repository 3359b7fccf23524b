/**
 * NetworkDriver wire types (errors travel in `Err`) and their decoders.
 */
import { badRequest } from '../errors.js';
import {
  type JsonObject,
  dockerId,
  networkId,
  object,
  optionalArray,
  optionalBoolean,
  optionalObject,
  optionalString,
  requiredString,
} from './decode.js';

export const OPTION_GENERIC = 'com.docker.network.generic';
export const OPTION_IPV6 = 'com.docker.network.enable_ipv6';
/** Sent by Docker 28 and later; absent (IPv4 on) before. */
export const OPTION_IPV4 = 'com.docker.network.enable_ipv4';
export const OPTION_INTERNAL = 'com.docker.network.internal';
export const OPTION_ENDPOINT_MAC = 'com.docker.network.endpoint.macaddress';

export interface IpamData {
  addressSpace: string;
  pool: string;
  gateway: string;
  auxAddresses: Record<string, string>;
}

export interface CreateNetworkRequest {
  networkId: string;
  generic: Record<string, unknown>;
  ipv6: boolean;
  /** False when the network has no IPv4 (`--ipv4=false`, Docker 28 and later); absent means on. */
  ipv4?: boolean;
  internal: boolean;
  ipv4Data: IpamData[];
  ipv6Data: IpamData[];
}

export interface NetworkRef {
  networkId: string;
}

export interface EndpointRef {
  networkId: string;
  endpointId: string;
}

export interface CreateEndpointRequest extends EndpointRef {
  address: string;
  addressIpv6: string;
  macAddress: string;
  /** MAC from the endpoint options (base64 of the raw bytes), already turned into text. */
  optionMac: string;
  /** The user's own endpoint options (`docker network connect --driver-opt K=V`): every key not under com.docker. */
  driverOptions?: Record<string, string>;
}

export interface JoinRequest extends EndpointRef {
  sandboxKey: string;
  options: JsonObject;
}

export interface ProgramRequest extends EndpointRef {
  options: JsonObject;
}

function ipamData(list: unknown[], field: string): IpamData[] {
  return list.map((item, i) => {
    const o = object(item, `${field}[${i}]`);
    const aux = optionalObject(o, 'AuxAddresses');
    const auxAddresses: Record<string, string> = {};
    for (const [name, value] of Object.entries(aux)) {
      if (typeof value !== 'string') {
        throw badRequest('InvalidRequest', `invalid request: field ${field}[${i}].AuxAddresses.${name} must be a string`);
      }
      auxAddresses[name] = value;
    }
    return {
      addressSpace: optionalString(o, 'AddressSpace'),
      pool: requiredString(o, 'Pool'),
      gateway: optionalString(o, 'Gateway'),
      auxAddresses,
    };
  });
}

export function decodeCreateNetwork(body: unknown): CreateNetworkRequest {
  const o = object(body);
  const options = optionalObject(o, 'Options');
  return {
    networkId: networkId(o, 'NetworkID'),
    generic: optionalObject(options, OPTION_GENERIC),
    ipv6: optionalBoolean(options, OPTION_IPV6),
    ipv4: options[OPTION_IPV4] === undefined || options[OPTION_IPV4] === null ? true : optionalBoolean(options, OPTION_IPV4),
    internal: optionalBoolean(options, OPTION_INTERNAL),
    ipv4Data: ipamData(optionalArray(o, 'IPv4Data'), 'IPv4Data'),
    ipv6Data: ipamData(optionalArray(o, 'IPv6Data'), 'IPv6Data'),
  };
}

export function decodeNetworkRef(body: unknown): NetworkRef {
  return { networkId: networkId(object(body), 'NetworkID') };
}

export function decodeEndpointRef(body: unknown): EndpointRef {
  const o = object(body);
  return { networkId: networkId(o, 'NetworkID'), endpointId: dockerId(o, 'EndpointID') };
}

/** The endpoint MAC option is base64 of the six raw bytes ("AkIKyQCW"). */
export function macFromBase64(value: unknown): string {
  if (typeof value !== 'string') {
    throw badRequest('InvalidRequest', `invalid request: option ${OPTION_ENDPOINT_MAC} must be a base64 string`);
  }
  const bytes = Buffer.from(value, 'base64');
  if (bytes.length !== 6 || bytes.toString('base64') !== value) {
    throw badRequest(
      'InvalidRequest',
      `invalid request: option ${OPTION_ENDPOINT_MAC} must be base64 of 6 bytes (got ${JSON.stringify(value)})`,
    );
  }
  return [...bytes].map((b) => b.toString(16).padStart(2, '0')).join(':');
}

export function decodeCreateEndpoint(body: unknown): CreateEndpointRequest {
  const o = object(body);
  const iface = optionalObject(o, 'Interface');
  const options = optionalObject(o, 'Options');
  const rawMac = options[OPTION_ENDPOINT_MAC];
  return {
    networkId: networkId(o, 'NetworkID'),
    endpointId: dockerId(o, 'EndpointID'),
    address: optionalString(iface, 'Address'),
    addressIpv6: optionalString(iface, 'AddressIPv6'),
    macAddress: optionalString(iface, 'MacAddress'),
    optionMac: rawMac === undefined || rawMac === null || rawMac === '' ? '' : macFromBase64(rawMac),
    driverOptions: userOptions(options),
  };
}

/** Docker's own endpoint options live under com.docker.; everything else came from --driver-opt and must be a string. */
function userOptions(options: JsonObject): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(options)) {
    if (key.startsWith('com.docker.')) continue;
    if (typeof value !== 'string') throw badRequest('InvalidOption', `invalid value ${JSON.stringify(value)} for endpoint option ${key}: must be a string`);
    out[key] = value;
  }
  return out;
}

export function decodeJoin(body: unknown): JoinRequest {
  const o = object(body);
  return {
    networkId: networkId(o, 'NetworkID'),
    endpointId: dockerId(o, 'EndpointID'),
    sandboxKey: optionalString(o, 'SandboxKey'),
    options: optionalObject(o, 'Options'),
  };
}

export const OPTION_PORTMAP = 'com.docker.network.portmap';

/**
 * Set (Docker 28 and later) on a ProgramExternalConnectivity request when another endpoint of the container
 * is its IPv6 gateway: that endpoint's network serves the host's IPv6 addresses, this one only IPv4.
 */
export const OPTION_NO_PROXY_6TO4 = 'com.docker.network.driver.private.no_proxy_6to4';

/** Whether another endpoint of the container publishes its ports on the host's IPv6 addresses. */
export function ipv6GatewayElsewhere(options: JsonObject): boolean {
  return options[OPTION_NO_PROXY_6TO4] === true;
}

/** Published ports (-p, -P) of a ProgramExternalConnectivity request. */
export function publishedPorts(options: JsonObject): unknown[] {
  const value = options[OPTION_PORTMAP];
  return Array.isArray(value) ? value : [];
}

export function decodeProgram(body: unknown): ProgramRequest {
  const o = object(body);
  return {
    networkId: networkId(o, 'NetworkID'),
    endpointId: dockerId(o, 'EndpointID'),
    options: optionalObject(o, 'Options'),
  };
}

export interface CreateEndpointResponse {
  Interface?: { Address?: string; AddressIPv6?: string; MacAddress?: string };
}

export interface StaticRoute {
  Destination: string;
  RouteType: 0 | 1;
  NextHop?: string;
}

export interface JoinResponse {
  InterfaceName: { SrcName: string; DstPrefix: string };
  Gateway?: string;
  GatewayIPv6?: string;
  StaticRoutes?: StaticRoute[];
  DisableGatewayService?: boolean;
}

export interface CapabilitiesResponse {
  Scope: 'local' | 'global';
  ConnectivityScope: 'local' | 'global';
}
