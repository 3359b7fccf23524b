/**
 * OVN routers (layer 3) as pure decisions: the outside network they SNAT onto and the chassis that carry it,
 * the names of router ports and the outside switch, a router port's MAC, the routing policies that keep
 * networks of one router apart (or not), and what a network's connection to its router lacks.
 */
import { type Bounds, usableBounds } from './allocator.js';
import { parseCidr, parseIp } from './cidr.js';
import { canonicalJson, type OvnSpec } from './options.js';
import type { OvnRecord, SubnetRecord } from './records.js';
import { keyOf } from './ovn.js';

/** The outside network OVN routers SNAT onto, and the chassis that carry it (OVSNET_OVN_EXTERNAL, OVSNET_OVN_GATEWAYS). */
export interface OvnExternal {
  /** The physical network's name in the gateway chassis' ovn-bridge-mappings. */
  readonly physnet: string;
  readonly subnet: string;
  readonly nexthop: string;
  /** The addresses routers may take ("192.0.2.100-192.0.2.150"); undefined: any of the subnet. */
  readonly routerRange?: string;
  /** Highest priority first: the active one; the others stand by. */
  readonly gateways: ReadonlyArray<{ readonly chassis: string; readonly priority: number }>;
}

/** The addresses routers may take on the outside network: its range, or the usable addresses of its subnet. */
export function routerBounds(external: OvnExternal): Bounds {
  if (external.routerRange) {
    const [first, last] = external.routerRange.split('-').map((a) => parseIp(a)!.value);
    return { family: 4, first: first!, last: last! };
  }
  return usableBounds(parseCidr(external.subnet)!);
}

/** How the settings name an outside network, for messages. */
export function describeExternal(external: OvnExternal | null | undefined): string {
  if (!external) return '(none)';
  const range = external.routerRange ? `,${external.routerRange}` : '';
  return `${external.physnet},${external.subnet},${external.nexthop}${range} with gateways ${external.gateways.map((g) => `${g.chassis}:${g.priority}`).join(',')}`;
}

/** A logical router as read from the northbound database. */
export interface NbRouter {
  readonly uuid: string;
  readonly name: string;
  readonly externalIds: Readonly<Record<string, string>>;
  readonly ports: ReadonlyArray<{ readonly uuid: string; readonly name: string; readonly networks: readonly string[] }>;
  readonly nat: ReadonlyArray<{ readonly uuid: string; readonly type: string; readonly logicalIp: string; readonly externalIp: string }>;
  readonly policies: ReadonlyArray<RouterPolicy & { readonly uuid: string }>;
}

/** A routing policy of a router (Logical_Router_Policy), kept with the network it is for. */
export interface RouterPolicy {
  readonly priority: number;
  readonly match: string;
  readonly action: 'allow' | 'drop';
}

/**
 * A network's policies on its router: traffic to it is routed, whoever sends it; an --internal
 * network's own traffic to anywhere else (the outside) is dropped, so that it reaches the router's
 * other networks and nothing beyond them.
 */
export function routerPolicies(subnet: string, internal: boolean): RouterPolicy[] {
  const family = subnet.includes(':') ? 'ip6' : 'ip4';
  const policies: RouterPolicy[] = [{ priority: 1001, match: `${family}.dst == ${subnet}`, action: 'allow' }];
  if (internal) policies.push({ priority: 1000, match: `${family}.src == ${subnet}`, action: 'drop' });
  return policies;
}

/** The router port that connects a network's switch (its gateway address lives there), and the switch's port facing it. */
export function routerPortNames(network: OvnRecord): { lrp: string; lsp: string } {
  return { lrp: `ovsnet-rp-${keyOf(network.subnet)}`, lsp: `ovsnet-rsp-${keyOf(network.subnet)}` };
}

/** The router's port to the outside network, and its group of gateway chassis. */
export function gatewayPortNames(router: string): { lrp: string; group: string } {
  return { lrp: `ovsnet-gw-${router}`, group: `ovsnet-gw-${router}` };
}

export function externalSwitchName(physnet: string): string {
  return `ovsnet-external-${physnet}`;
}

export function localnetPortName(physnet: string): string {
  return `ovsnet-localnet-${physnet}`;
}

/** The external switch's port facing a router: named by the router's outside address, so that two routers never share one. */
export function externalPortName(physnet: string, address: string): string {
  return `ovsnet-ext-${physnet}-${address}`;
}

/** A router port's MAC, from its address (0a:58 and the address, as ovn-kubernetes does). */
export function routerMac(address: string): string {
  return ['0a', '58', ...address.split('.').map((o) => Number(o).toString(16).padStart(2, '0'))].join(':');
}

/** What every host must agree on for a router. */
export function routerConfig(external: OvnExternal | undefined): string {
  return canonicalJson(external ?? null);
}

/** What connects a network's switch to its router. */
export interface RouterAttachment {
  /** The router port: the network's gateway addresses (IPv6 too: routed between the router's networks, never NATed). */
  readonly lrp: { readonly name: string; readonly mac: string; readonly networks: readonly string[] };
  /** The switch's port facing it. */
  readonly lsp: string;
  /** The network's identity: its NAT rules and policies are kept under it. */
  readonly subnet: string;
  /** SNAT of each IPv4 subnet to the router's outside address (gateway_mode=nat, when the router has a way out). */
  readonly snat: ReadonlyArray<{ readonly logicalIp: string; readonly externalIp: string }>;
  readonly policies: readonly RouterPolicy[];
}

export function routerAttachment(network: { spec: OvnSpec; ovn: OvnRecord; ipv4: readonly SubnetRecord[]; ipv6: readonly SubnetRecord[] }, outside: string | undefined): RouterAttachment {
  const { spec } = network;
  const subnets = [...network.ipv4, ...network.ipv6];
  const v4 = network.ipv4[0];
  const names = routerPortNames(network.ovn);
  return {
    lrp: { name: names.lrp, mac: routerMac(v4?.gateway ?? '0.0.0.0'), networks: subnets.flatMap((s) => (s.gateway ? [`${s.gateway}/${s.pool.split('/')[1]}`] : [])) },
    lsp: names.lsp,
    subnet: network.ovn.subnet,
    snat: spec.gatewayMode === 'nat' && !spec.internal && outside ? network.ipv4.map((s) => ({ logicalIp: s.pool, externalIp: outside })) : [],
    policies: subnets.flatMap((s) => routerPolicies(s.pool, spec.internal)),
  };
}

/** What of an attachment a router (and the switch, `lspPresent`) lacks. */
export interface AttachmentGaps {
  readonly lrp: boolean;
  readonly lsp: boolean;
  readonly snat: RouterAttachment['snat'];
  readonly policies: readonly RouterPolicy[];
}

export function attachmentGaps(router: NbRouter, lspPresent: boolean, attachment: RouterAttachment): AttachmentGaps {
  return {
    lrp: !router.ports.some((p) => p.name === attachment.lrp.name),
    lsp: !lspPresent,
    snat: attachment.snat.filter((want) => !router.nat.some((n) => n.type === 'snat' && n.logicalIp === want.logicalIp && n.externalIp === want.externalIp)),
    policies: attachment.policies.filter((p) => !router.policies.some((q) => q.priority === p.priority && q.match === p.match && q.action === p.action)),
  };
}

export function hasGaps(gaps: AttachmentGaps): boolean {
  return gaps.lrp || gaps.lsp || gaps.snat.length > 0 || gaps.policies.length > 0;
}

export function describeGaps(gaps: AttachmentGaps): string {
  return [
    gaps.lrp && 'its router port',
    gaps.lsp && "the switch's port facing the router",
    gaps.snat.length > 0 && `SNAT of ${gaps.snat.map((n) => n.logicalIp).join(', ')}`,
    gaps.policies.length > 0 && `${gaps.policies.length} router policies`,
  ]
    .filter(Boolean)
    .join(', ');
}

/** The router's outside address, from its gateway port's networks. */
export function outsideAddress(router: NbRouter, name: string): string | undefined {
  return router.ports.find((p) => p.name === gatewayPortNames(name).lrp)?.networks[0]?.split('/')[0];
}
