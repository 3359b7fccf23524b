/**
 * Decoding of request bodies. Docker sends no Content-Type and sometimes no
 * body at all, so the HTTP layer hands us whatever JSON value it parsed; every
 * field is checked here and errors name the field and what was expected.
 */
import { badRequest } from '../errors.js';
import { isDockerId, isNetworkId } from '../domain/names.js';

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type JsonObject = { [key: string]: unknown };

function fail(field: string, expected: string, value: unknown): never {
  const shown = value === undefined ? 'missing' : `got ${JSON.stringify(value)?.slice(0, 80)}`;
  throw badRequest('InvalidRequest', `invalid request: field ${field} must be ${expected} (${shown})`);
}

export function object(body: unknown, field = 'body'): JsonObject {
  if (body === undefined || body === null) return {};
  if (typeof body !== 'object' || Array.isArray(body)) fail(field, 'a JSON object', body);
  return body as JsonObject;
}

export function requiredString(o: JsonObject, field: string): string {
  const value = o[field];
  if (typeof value !== 'string' || value === '') fail(field, 'a non-empty string', value);
  return value;
}

export function optionalString(o: JsonObject, field: string): string {
  const value = o[field];
  if (value === undefined || value === null) return '';
  if (typeof value !== 'string') fail(field, 'a string', value);
  return value;
}

export function optionalBoolean(o: JsonObject, field: string): boolean {
  const value = o[field];
  if (value === undefined || value === null) return false;
  if (typeof value !== 'boolean') fail(field, 'a boolean', value);
  return value;
}

export function optionalObject(o: JsonObject, field: string): JsonObject {
  const value = o[field];
  if (value === undefined || value === null) return {};
  if (typeof value !== 'object' || Array.isArray(value)) fail(field, 'a JSON object', value);
  return value as JsonObject;
}

export function optionalArray(o: JsonObject, field: string): unknown[] {
  const value = o[field];
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) fail(field, 'an array', value);
  return value;
}

export function stringMap(o: JsonObject, field: string): Record<string, string> {
  const value = optionalObject(o, field);
  const out: Record<string, string> = {};
  for (const [key, v] of Object.entries(value)) {
    if (typeof v !== 'string') fail(`${field}.${key}`, 'a string', v);
    out[key] = v;
  }
  return out;
}

export function dockerId(o: JsonObject, field: string): string {
  const value = o[field];
  if (!isDockerId(value)) fail(field, 'a Docker id (64 lower-case hex characters)', value);
  return value;
}

/** A network's id: Docker's (64 hex characters), or a swarm's for a network of `--scope swarm` (25 of base 36). */
export function networkId(o: JsonObject, field: string): string {
  const value = o[field];
  if (!isNetworkId(value)) fail(field, "a network id (Docker's: 64 lower-case hex characters; a swarm's: 25 lower-case letters and digits)", value);
  return value;
}
