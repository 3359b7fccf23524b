/**
 * `docker network create -o key=value` options, decoded once into a typed
 * spec, one shape per mode. Every bad value is rejected here with a message
 * naming the option, the value and what is valid; nothing downstream
 * re-validates.
 */
import { badRequest } from '../errors.js';
import { formatIp, parseIp } from './cidr.js';
import type { RateLimit } from './flows.js';
import { INTERFACE_NAME_RULE, isValidInterfaceName } from './names.js';

export const GATEWAY_MODES = ['nat', 'routed', 'external', 'isolated'] as const;
export type GatewayMode = (typeof GATEWAY_MODES)[number];

export const MODES = ['vlan', 'vxlan', 'gre', 'ovn'] as const;
export type Mode = (typeof MODES)[number];
export type TunnelMode = 'vxlan' | 'gre';

interface SpecBase {
  /** OVS bridge the network's ports are on. */
  readonly bridge: string;
  /** MTU asked for with -o mtu; undefined means the default (VLAN) or derived from the underlay (overlays). */
  readonly mtu: number | undefined;
  readonly gatewayMode: GatewayMode;
  /** `--internal`: no route out of the network. */
  readonly internal: boolean;
  readonly ipv6: boolean;
  /** Containers may send IPv6 router advertisements and redirects (-o allow_ra): the network's router is one of them. */
  readonly allowRa: boolean;
  /** Containers may answer as DHCP and DHCPv6 servers (-o allow_dhcp_server): the network runs one. */
  readonly allowDhcpServer: boolean;
  /** A subnet may overlap the host's own routes (-o allow_host_overlap): a VLAN the host also has an interface on. */
  readonly allowHostOverlap: boolean;
}

/** What guards the container ports of a network on a local bridge. */
interface GuardSpec {
  /** The ports admit only each endpoint's own MAC and addresses (-o anti_spoofing, on unless false). */
  readonly antiSpoofing: boolean;
  /** What each container may send (-o rate, -o burst); undefined: no limit. */
  readonly rate: RateLimit | undefined;
}

/** A VLAN (or the untagged segment) of a bridge, and of its uplink when it has one. */
export interface VlanSpec extends SpecBase, GuardSpec {
  readonly mode: 'vlan';
  /** 802.1Q tag of the network's ports; undefined for the untagged segment. */
  readonly vlan: number | undefined;
  /** Host interface attached to the bridge as a VLAN trunk. */
  readonly uplink: string | undefined;
}

/** An overlay: the segment is carried to each peer host by a VXLAN or GRE tunnel. */
export interface TunnelSpec extends SpecBase, GuardSpec {
  readonly mode: TunnelMode;
  /** A tag carried inside the tunnel; without it the overlay gets a local tag of its own on the bridge. */
  readonly vlan: number | undefined;
  /** VXLAN network identifier, or GRE key: what keeps overlays apart on the wire. */
  readonly tunnelKey: number;
  /** Tunnel endpoints of the other hosts (canonical addresses). */
  readonly peers: readonly string[];
}

/**
 * A logical switch of OVN, shared by every host that has a network of the same subnet; its ports
 * are on the integration bridge, bound to logical ports, and OVN carries the traffic between hosts.
 */
export interface OvnSpec extends SpecBase {
  readonly mode: 'ovn';
  /** The name asked for with -o ovn_network (hosts that share the subnet must agree on it). */
  readonly ovnNetwork: string | undefined;
  /** The distributed logical router it is connected to (-o ovn_router); its gateway address lives on its router port. */
  readonly ovnRouter: string | undefined;
}

export type NetworkSpec = VlanSpec | TunnelSpec | OvnSpec;

export interface OptionDefaults {
  readonly bridge: string;
  /** OVN mode, when the northbound database is set (OVSNET_OVN_NB); its networks live on this bridge. */
  readonly ovn?: { readonly bridge: string };
}

/** What OVSNET_OVN_NB wants, for the refusal of mode=ovn without it. */
export const OVN_SETTING_HINT =
  "set OVSNET_OVN_NB to the northbound database's remotes (unix:<path> or tcp:<ip>:6641, comma-separated, every member of its cluster) and restart the plugin";

export interface NetworkFlags {
  readonly internal: boolean;
  readonly ipv6: boolean;
  /** Docker 28 and later say whether IPv4 is on (`--ipv4=false` turns it off); earlier engines always have it. */
  readonly ipv4?: boolean;
}

export const RATE_MIN_MBIT = 1;
export const RATE_MAX_MBIT = 100_000;
export const BURST_MIN_KBIT = 64;
export const BURST_MAX_KBIT = 10_000_000;

/** Docker's own name for the MTU option, accepted as a synonym of `mtu`. */
const DOCKER_MTU = 'com.docker.network.driver.mtu';

const DESCRIPTIONS: Record<string, string> = {
  mode: `vlan (default), an overlay across hosts: vxlan, gre, or a logical switch of OVN: ovn`,
  bridge: 'OVS bridge the network lives on',
  vlan: '802.1Q VLAN id of the network (1-4094; absent means untagged)',
  mtu: 'MTU of container interfaces',
  gateway_mode: `where the gateway lives: ${GATEWAY_MODES.join(', ')}`,
  vni: 'VXLAN network identifier (mode=vxlan)',
  key: 'GRE key (mode=gre)',
  peers: 'comma-separated tunnel addresses of the other hosts (mode=vxlan or gre)',
  uplink: 'host interface attached to the bridge as a VLAN trunk (mode=vlan)',
  ovn_network: 'name of the OVN logical switch (mode=ovn; the same on every host of the subnet)',
  ovn_router: 'OVN distributed router the network is connected to (mode=ovn); networks on one router reach each other',
  anti_spoofing: 'true (default) or false: container ports admit only their own MAC and addresses (mode=vlan, vxlan, gre)',
  rate: `what each container may send, in Mbit/s (${RATE_MIN_MBIT}-${RATE_MAX_MBIT}; mode=vlan, vxlan, gre)`,
  burst: `kilobits a container may send at once above its rate (${BURST_MIN_KBIT}-${BURST_MAX_KBIT}; default a quarter second at the rate)`,
  allow_ra: 'true or false (default): containers may send IPv6 router advertisements and redirects (a network whose router is a container)',
  allow_dhcp_server: 'true or false (default): containers may answer as DHCP and DHCPv6 servers (a network meant to run one)',
  allow_host_overlap: "true or false (default): the subnet may overlap the host's own routes (a VLAN the host also has an interface on)",
};

/** Options and the modes they apply to. */
const APPLIES: Record<string, readonly Mode[]> = {
  vni: ['vxlan'],
  key: ['gre'],
  peers: ['vxlan', 'gre'],
  uplink: ['vlan'],
  vlan: ['vlan', 'vxlan', 'gre'],
  bridge: ['vlan', 'vxlan', 'gre'],
  ovn_network: ['ovn'],
  ovn_router: ['ovn'],
};

/** An OVN logical switch name as the plugin accepts it. */
const OVN_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

export const NETWORK_OPTIONS = Object.freeze(Object.keys(DESCRIPTIONS).sort());

export function describeOptions(): Record<string, string> {
  return { ...DESCRIPTIONS };
}

function invalid(key: string, value: string, rule: string): never {
  throw badRequest('InvalidOption', `invalid value "${value}" for option ${key}: ${rule}`);
}

function parseInteger(key: string, value: string, min: number, max: number, hint = ''): number {
  if (!/^[0-9]{1,10}$/.test(value)) invalid(key, value, `must be an integer from ${min} to ${max}${hint}`);
  const n = Number(value);
  if (n < min || n > max) invalid(key, value, `must be an integer from ${min} to ${max}${hint}`);
  return n;
}

export function parseNetworkOptions(
  generic: Readonly<Record<string, unknown>>,
  flags: NetworkFlags,
  defaults: OptionDefaults,
): NetworkSpec {
  if (flags.ipv4 === false && !flags.ipv6) {
    throw badRequest('NoAddressFamily', 'a network needs IPv4 or IPv6, and this one has both off (--ipv4=false without --ipv6): add --ipv6 (with an IPv6 --subnet for a fixed one), or leave IPv4 on');
  }
  const values: Record<string, string> = {};
  for (const [key, raw] of Object.entries(generic)) {
    if (typeof raw !== 'string') {
      throw badRequest('InvalidOption', `invalid value ${JSON.stringify(raw)} for option ${key}: must be a string`);
    }
    const name = key === DOCKER_MTU ? 'mtu' : key;
    if (!(name in DESCRIPTIONS)) {
      throw badRequest('UnknownOption', `unknown option ${key}=${raw}; valid options: ${NETWORK_OPTIONS.join(', ')}`);
    }
    if (name in values && values[name] !== raw) {
      throw badRequest('InvalidOption', `option mtu is given twice with different values ("${values[name]}" and "${raw}")`);
    }
    values[name] = raw;
  }

  const mode = (values.mode ?? 'vlan') as Mode;
  if (!(MODES as readonly string[]).includes(mode)) invalid('mode', values.mode!, `valid values are ${MODES.join(', ')}`);

  let bridge = defaults.bridge;
  if (values.bridge !== undefined) {
    if (!isValidInterfaceName(values.bridge)) invalid('bridge', values.bridge, `an OVS bridge name is ${INTERFACE_NAME_RULE}`);
    bridge = values.bridge;
  }
  const vlan =
    values.vlan === undefined ? undefined : parseInteger('vlan', values.vlan, 1, 4094, ' (leave vlan out for an untagged network)');
  const minMtu = flags.ipv6 ? 1280 : 68;
  const mtu =
    values.mtu === undefined ? undefined : parseInteger('mtu', values.mtu, minMtu, 65535, flags.ipv6 ? ' (IPv6 needs at least 1280)' : '');

  for (const [option, modes] of Object.entries(APPLIES)) {
    if (values[option] === undefined || modes.includes(mode)) continue;
    if (option === 'uplink') throw badRequest('InvalidOption', `option uplink applies to mode=vlan: an overlay reaches its peers through the host's routing`);
    if (mode === 'ovn' && option === 'bridge') throw badRequest('InvalidOption', `option bridge does not apply to mode=ovn: its networks live on the integration bridge of ovn-controller (OVSNET_OVN_BRIDGE)`);
    throw badRequest('InvalidOption', `option ${option} applies to mode=${modes.join(' or ')}, not mode=${mode}`);
  }

  let gatewayMode: GatewayMode = 'nat';
  if (values.gateway_mode !== undefined) {
    if (!(GATEWAY_MODES as readonly string[]).includes(values.gateway_mode)) {
      invalid('gateway_mode', values.gateway_mode, `valid values are ${GATEWAY_MODES.join(', ')}`);
    }
    gatewayMode = values.gateway_mode as GatewayMode;
  }
  const base = { bridge, mtu, gatewayMode, internal: flags.internal, ipv6: flags.ipv6, allowRa: parseBoolean(values, 'allow_ra', false), allowDhcpServer: parseBoolean(values, 'allow_dhcp_server', false), allowHostOverlap: parseBoolean(values, 'allow_host_overlap', false) };

  if (mode === 'ovn') {
    for (const option of ['anti_spoofing', 'rate', 'burst']) {
      if (values[option] === undefined) continue;
      throw badRequest(
        'InvalidOption',
        `option ${option} applies to mode=vlan, vxlan or gre, not mode=ovn: ${option === 'anti_spoofing' ? "an OVN network's logical ports always carry port security (their own MAC and addresses)" : "an OVN network's ports are ovn-controller's to program"}`,
      );
    }
    if (!defaults.ovn) throw badRequest('OvnOff', `mode=ovn is off on this host: ${OVN_SETTING_HINT}`);
    const name = values.ovn_network;
    if (name !== undefined && !OVN_NAME.test(name)) invalid('ovn_network', name, `a name is 1 to 63 characters from letters, digits, '_', '-' and '.', starting with a letter or digit`);
    const router = values.ovn_router;
    if (router !== undefined && !OVN_NAME.test(router)) invalid('ovn_router', router, `a name is 1 to 63 characters from letters, digits, '_', '-' and '.', starting with a letter or digit`);
    if (router !== undefined && (gatewayMode === 'isolated' || gatewayMode === 'external')) {
      throw badRequest(
        'InvalidOption',
        `option ovn_router does not go with gateway_mode=${gatewayMode}: ${gatewayMode === 'isolated' ? 'an isolated network has no router port' : 'with external, the gateway is a router of yours on the network'}; OVN networks on a router have gateway_mode nat (SNAT out through the gateway chassis) or routed (no SNAT)`,
      );
    }
    if (router === undefined && gatewayMode === 'routed') {
      invalid('gateway_mode', 'routed', `an OVN network spans hosts, so its subnet cannot be routed to one of them; routed needs -o ovn_router (the router routes it), or use nat (outbound through docker_gwbridge), external (a router on the network) or isolated`);
    }
    return Object.freeze({ mode, ...base, bridge: defaults.ovn.bridge, ovnNetwork: name, ovnRouter: router });
  }

  if (mode === 'vlan') {
    let uplink: string | undefined;
    if (values.uplink !== undefined) {
      if (!isValidInterfaceName(values.uplink)) invalid('uplink', values.uplink, `an interface name is ${INTERFACE_NAME_RULE}`);
      uplink = values.uplink;
    }
    return Object.freeze({ mode, vlan, ...base, ...parseGuard(values), uplink });
  }

  const keyOption = mode === 'vxlan' ? 'vni' : 'key';
  const text = values[keyOption];
  if (text === undefined) {
    throw badRequest('MissingOption', `mode=${mode} needs -o ${keyOption}=<${mode === 'vxlan' ? '1-16777215' : '0-4294967295'}>: the same value on every host of the network`);
  }
  const tunnelKey = mode === 'vxlan' ? parseInteger('vni', text, 1, 16777215) : parseInteger('key', text, 0, 4294967295);
  if (gatewayMode === 'routed') {
    invalid('gateway_mode', 'routed', `an overlay spans hosts, so its subnet cannot be routed to one of them; use nat (outbound through docker_gwbridge, as Docker's overlay driver does), external (a router on the overlay) or isolated`);
  }
  const peers = values.peers === undefined ? [] : parsePeers(values.peers);
  return Object.freeze({ mode, vlan, ...base, ...parseGuard(values), tunnelKey, peers: Object.freeze(peers) });
}

function parseGuard(values: Readonly<Record<string, string | undefined>>): GuardSpec {
  return { antiSpoofing: parseBoolean(values, 'anti_spoofing', true), rate: parseRate(values.rate, values.burst, '-o') };
}

function parseBoolean(values: Readonly<Record<string, string | undefined>>, key: string, fallback: boolean): boolean {
  const value = values[key];
  if (value === undefined) return fallback;
  if (value !== 'true' && value !== 'false') invalid(key, value, 'valid values are true and false');
  return value === 'true';
}

/**
 * The options of a network that weaken what guards its containers, as an operator gave them: what
 * `ovsnet networks` and doctor's summary name, so that unguarded networks are seen.
 */
export function weakenedProtections(spec: NetworkSpec): string[] {
  return [
    ...(spec.mode !== 'ovn' && !spec.antiSpoofing ? ['anti_spoofing=false'] : []),
    ...(spec.allowRa ? ['allow_ra=true'] : []),
    ...(spec.allowDhcpServer ? ['allow_dhcp_server=true'] : []),
  ];
}

/** `rate` in Mbit/s and `burst` in kilobits, as a network (-o) or an endpoint (--driver-opt) gives them. */
export function parseRate(rate: string | undefined, burst: string | undefined, how: '-o' | '--driver-opt'): RateLimit | undefined {
  if (rate === undefined) {
    if (burst !== undefined) invalid('burst', burst, `burst goes with rate: give ${how} rate=<Mbit/s> as well`);
    return undefined;
  }
  const mbit = parseInteger('rate', rate, RATE_MIN_MBIT, RATE_MAX_MBIT, ' (Mbit/s)');
  const burstKbit =
    burst === undefined ? Math.min(BURST_MAX_KBIT, Math.max(BURST_MIN_KBIT, mbit * 250)) : parseInteger('burst', burst, BURST_MIN_KBIT, BURST_MAX_KBIT, ' (kilobits)');
  return Object.freeze({ mbit, burstKbit });
}

/** Comma-separated tunnel peers, as canonical addresses, without duplicates. */
export function parsePeers(text: string): string[] {
  const peers: string[] = [];
  for (const item of text.split(',').map((p) => p.trim()).filter((p) => p !== '')) {
    const ip = parseIp(item);
    if (!ip) invalid('peers', text, `"${item}" is not an IPv4 or IPv6 address; give addresses separated by commas`);
    const canonical = formatIp(ip);
    if (!peers.includes(canonical)) peers.push(canonical);
  }
  return peers;
}

export function isOverlay(spec: NetworkSpec): spec is TunnelSpec {
  return spec.mode === 'vxlan' || spec.mode === 'gre';
}

/** A network whose segment spans hosts (an overlay or an OVN logical switch): no host holds its gateway. */
export function spansHosts(spec: NetworkSpec): boolean {
  return spec.mode !== 'vlan';
}

/**
 * True when the gateway address lives on the host (an OVS internal port).
 * Overlays never have one: every host would hold the same gateway address on
 * one shared segment.
 */
export function hasHostGateway(spec: NetworkSpec): boolean {
  return spec.mode === 'vlan' && (spec.gatewayMode === 'nat' || spec.gatewayMode === 'routed');
}

/** An OVN network whose gateway is its router's port: it routes (and SNATs) itself, no docker_gwbridge. */
export function routedByOvn(spec: NetworkSpec): boolean {
  return spec.mode === 'ovn' && spec.ovnRouter !== undefined;
}

/** True when containers get a default route through the network's gateway. */
export function givesDefaultRoute(spec: NetworkSpec): boolean {
  return !spec.internal && spec.gatewayMode !== 'isolated';
}

/**
 * A spec as stored by any earlier version, in the current shape: specs were
 * once one flat record with every mode's fields (a VLAN network had `peers: []`).
 */
export function normaliseSpec(stored: NetworkSpec): NetworkSpec {
  const raw = stored as unknown as Record<string, unknown>;
  const base = {
    bridge: raw.bridge as string,
    mtu: raw.mtu as number | undefined,
    gatewayMode: raw.gatewayMode as GatewayMode,
    internal: !!raw.internal,
    ipv6: !!raw.ipv6,
    // Specs stored before these options existed get the defaults: containers are neither routers nor DHCP servers.
    allowRa: raw.allowRa === true,
    allowDhcpServer: raw.allowDhcpServer === true,
    allowHostOverlap: raw.allowHostOverlap === true,
  };
  // Specs stored before anti-spoofing and rate limits existed get the defaults: anti-spoofing on, no limit.
  const guard = { antiSpoofing: raw.antiSpoofing !== false, rate: raw.rate as RateLimit | undefined };
  if (stored.mode === 'vlan') return Object.freeze({ mode: 'vlan', vlan: raw.vlan as number | undefined, ...base, ...guard, uplink: raw.uplink as string | undefined });
  if (stored.mode === 'ovn') return Object.freeze({ mode: 'ovn', ...base, ovnNetwork: raw.ovnNetwork as string | undefined, ovnRouter: raw.ovnRouter as string | undefined });
  return Object.freeze({
    mode: stored.mode,
    vlan: raw.vlan as number | undefined,
    ...base,
    ...guard,
    tunnelKey: raw.tunnelKey as number,
    peers: Object.freeze([...((raw.peers as string[] | undefined) ?? [])]),
  });
}

/** Text equal for equal meaning: keys sorted, absent and undefined alike. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v as Record<string, unknown>).filter(([, x]) => x !== undefined).sort(([a], [b]) => a.localeCompare(b)))
      : v,
  );
}

/** Options of one endpoint (`docker network connect --driver-opt K=V`), by name and meaning. */
const ENDPOINT_DESCRIPTIONS: Record<string, string> = {
  rate: `what this container may send on the network, in Mbit/s (${RATE_MIN_MBIT}-${RATE_MAX_MBIT}); instead of the network's -o rate`,
  burst: `kilobits it may send at once above its rate (${BURST_MIN_KBIT}-${BURST_MAX_KBIT})`,
};

export const ENDPOINT_OPTIONS = Object.freeze(Object.keys(ENDPOINT_DESCRIPTIONS).sort());

/** What an endpoint's own options ask for; refused by name when unknown, with the valid ones. */
export interface EndpointSpec {
  /** Its own rate limit, instead of its network's. */
  readonly rate: RateLimit | undefined;
}

export function parseEndpointOptions(options: Readonly<Record<string, string>>): EndpointSpec {
  for (const [key, value] of Object.entries(options)) {
    if (key in ENDPOINT_DESCRIPTIONS) continue;
    throw badRequest(
      'UnknownOption',
      `unknown endpoint option ${key}=${value} (docker network connect --driver-opt); valid endpoint options: ${ENDPOINT_OPTIONS.length ? ENDPOINT_OPTIONS.join(', ') : 'none yet'}`,
    );
  }
  return { rate: parseRate(options.rate, options.burst, '--driver-opt') };
}
