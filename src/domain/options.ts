/**
 * `docker network create -o key=value` options, decoded once into a typed
 * spec. Every bad value is rejected here with a message naming the option,
 * the value and what is valid; nothing downstream re-validates.
 */
import { badRequest } from '../errors.js';
import { INTERFACE_NAME_RULE, isValidInterfaceName } from './names.js';

export const GATEWAY_MODES = ['nat', 'routed', 'external', 'isolated'] as const;
export type GatewayMode = (typeof GATEWAY_MODES)[number];

export interface NetworkSpec {
  readonly bridge: string;
  /** 802.1Q tag of the network's access ports; undefined for an untagged network. */
  readonly vlan: number | undefined;
  readonly mtu: number;
  readonly gatewayMode: GatewayMode;
  /** `--internal`: no route out of the network. */
  readonly internal: boolean;
  readonly ipv6: boolean;
}

export interface OptionDefaults {
  readonly bridge: string;
  readonly mtu: number;
}

export interface NetworkFlags {
  readonly internal: boolean;
  readonly ipv6: boolean;
}

/** Docker's own name for the MTU option, accepted as a synonym of `mtu`. */
const DOCKER_MTU = 'com.docker.network.driver.mtu';

const DESCRIPTIONS: Record<string, string> = {
  bridge: 'OVS bridge the network lives on',
  vlan: '802.1Q VLAN id of the network (1-4094; absent means untagged)',
  mtu: 'MTU of container interfaces',
  gateway_mode: `where the gateway lives: ${GATEWAY_MODES.join(', ')}`,
};

export const NETWORK_OPTIONS = Object.freeze(Object.keys(DESCRIPTIONS).sort());

export function describeOptions(): Record<string, string> {
  return { ...DESCRIPTIONS };
}

function invalid(key: string, value: string, rule: string): never {
  throw badRequest('InvalidOption', `invalid value "${value}" for option ${key}: ${rule}`);
}

function parseInteger(key: string, value: string, min: number, max: number, hint = ''): number {
  if (!/^[0-9]{1,6}$/.test(value)) invalid(key, value, `must be an integer from ${min} to ${max}${hint}`);
  const n = Number(value);
  if (n < min || n > max) invalid(key, value, `must be an integer from ${min} to ${max}${hint}`);
  return n;
}

export function parseNetworkOptions(
  generic: Readonly<Record<string, unknown>>,
  flags: NetworkFlags,
  defaults: OptionDefaults,
): NetworkSpec {
  const values: Record<string, string> = {};
  for (const [key, raw] of Object.entries(generic)) {
    if (typeof raw !== 'string') {
      throw badRequest('InvalidOption', `invalid value ${JSON.stringify(raw)} for option ${key}: must be a string`);
    }
    const name = key === DOCKER_MTU ? 'mtu' : key;
    if (!(name in DESCRIPTIONS)) {
      throw badRequest(
        'UnknownOption',
        `unknown option ${key}=${raw}; valid options: ${NETWORK_OPTIONS.join(', ')}`,
      );
    }
    if (name in values && values[name] !== raw) {
      throw badRequest('InvalidOption', `option mtu is given twice with different values ("${values[name]}" and "${raw}")`);
    }
    values[name] = raw;
  }

  let bridge = defaults.bridge;
  if (values.bridge !== undefined) {
    if (!isValidInterfaceName(values.bridge)) invalid('bridge', values.bridge, `an OVS bridge name is ${INTERFACE_NAME_RULE}`);
    bridge = values.bridge;
  }

  const vlan =
    values.vlan === undefined
      ? undefined
      : parseInteger('vlan', values.vlan, 1, 4094, ' (leave vlan out for an untagged network)');

  const minMtu = flags.ipv6 ? 1280 : 68;
  const mtu =
    values.mtu === undefined
      ? defaults.mtu
      : parseInteger('mtu', values.mtu, minMtu, 65535, flags.ipv6 ? ' (IPv6 needs at least 1280)' : '');

  let gatewayMode: GatewayMode = 'nat';
  if (values.gateway_mode !== undefined) {
    if (!(GATEWAY_MODES as readonly string[]).includes(values.gateway_mode)) {
      invalid('gateway_mode', values.gateway_mode, `valid values are ${GATEWAY_MODES.join(', ')}`);
    }
    gatewayMode = values.gateway_mode as GatewayMode;
  }

  return Object.freeze({ bridge, vlan, mtu, gatewayMode, internal: flags.internal, ipv6: flags.ipv6 });
}

/** True when the gateway address lives on the host (an OVS internal port). */
export function hasHostGateway(spec: NetworkSpec): boolean {
  return spec.gatewayMode === 'nat' || spec.gatewayMode === 'routed';
}

/** True when containers get a default route through the network's gateway. */
export function givesDefaultRoute(spec: NetworkSpec): boolean {
  return !spec.internal && spec.gatewayMode !== 'isolated';
}
