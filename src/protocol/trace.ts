/**
 * The body of `POST /ovsnet/trace` (what `ovsnet trace` sends), checked field by field: every error names the
 * field, what it was and what is valid.
 */
import { badRequest } from '../errors.js';
import { canonicalIp } from '../domain/cidr.js';
import { normaliseMac } from '../domain/names.js';
import type { TraceProtocol, TraceRequest } from '../domain/trace.js';
import { dockerId, object } from './decode.js';

const PROTOCOLS: readonly TraceProtocol[] = ['tcp', 'udp', 'icmp'];

function invalid(field: string, value: unknown, valid: string): never {
  throw badRequest('InvalidRequest', `invalid request: field ${field} ${value === undefined ? 'is missing' : `is ${JSON.stringify(value)}`}: ${valid}`);
}

function whole(o: Record<string, unknown>, field: string, low: number, high: number, what: string): number | undefined {
  const value = o[field];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < low || value > high) invalid(field, value, `${what}, a whole number from ${low} to ${high}`);
  return value;
}

function address(o: Record<string, unknown>, field: string): string | undefined {
  const value = o[field];
  if (value === undefined || value === null || value === '') return undefined;
  const ip = typeof value === 'string' ? canonicalIp(value) : undefined;
  if (!ip) invalid(field, value, 'an IPv4 or IPv6 address, without prefix length');
  return ip;
}

export function decodeTraceRequest(body: unknown): TraceRequest {
  const o = object(body);
  const endpointId = dockerId(o, 'EndpointID');
  const protocol = o.Protocol ?? 'icmp';
  if (typeof protocol !== 'string' || !PROTOCOLS.includes(protocol as TraceProtocol)) invalid('Protocol', protocol, `one of ${PROTOCOLS.join(', ')}`);
  const port = whole(o, 'Port', 1, 65535, 'a TCP or UDP port');
  const icmpType = whole(o, 'IcmpType', 0, 255, 'an ICMP or ICMPv6 type');
  if (port !== undefined && protocol === 'icmp') invalid('Port', port, 'ICMP has no ports: give Protocol tcp or udp with a port');
  if (icmpType !== undefined && protocol !== 'icmp') invalid('IcmpType', icmpType, 'only with Protocol icmp');
  const sourceMacText = o.SourceMac;
  let sourceMac: string | undefined;
  if (sourceMacText !== undefined && sourceMacText !== null && sourceMacText !== '') {
    sourceMac = typeof sourceMacText === 'string' ? normaliseMac(sourceMacText) : undefined;
    if (!sourceMac) invalid('SourceMac', sourceMacText, 'a unicast MAC address, six hex pairs separated by colons');
  }
  const destination = address(o, 'Destination');
  const source = address(o, 'Source');
  if (destination && source && destination.includes(':') !== source.includes(':')) invalid('Source', source, `an address of the destination's family (${destination} is IPv${destination.includes(':') ? 6 : 4})`);
  return { endpointId, destination, protocol: protocol as TraceProtocol, port, icmpType, source, sourceMac, vlan: whole(o, 'Vlan', 0, 4095, 'a VLAN id') };
}
