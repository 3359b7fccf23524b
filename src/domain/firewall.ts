/**
 * The plugin's iptables rules as data: a pure function of the networks. The
 * adapter replaces the plugin's own chains with exactly this, atomically, so
 * applying it twice is harmless and applying it after a reboot repairs
 * everything.
 */
import { parseCidr, parseCidrWithHost } from './cidr.js';
import { GATEWAY_PREFIX, VETH_GROUP } from './names.js';
import { families, isWildcard } from './published.js';
import type { EndpointRecord, NetworkRecord } from './records.js';

export const FORWARD_CHAIN = 'OVSNET-FORWARD';
export const POSTROUTING_CHAIN = 'OVSNET-POSTROUTING';
/** Published ports: jumped to (nat table) from PREROUTING and OUTPUT for traffic to the host's own addresses. */
export const DNAT_CHAIN = 'OVSNET-DNAT';
/**
 * What keeps networks apart through the host (mangle table, jumped to from FORWARD): its drops come
 * before any accept of the filter table, whoever's (Docker's, the plugin's, another's), whichever daemon
 * started first.
 */
export const ISOLATE_CHAIN = 'OVSNET-ISOLATE';
/** What an --internal network may not reach on the host itself (mangle table, jumped to from INPUT). */
export const INPUT_CHAIN = 'OVSNET-INPUT';
/** What the host's own stack must not take from the host ends of the plugin's veth pairs (raw table, from PREROUTING). */
export const PORTS_CHAIN = 'OVSNET-PORTS';

export type Rule = readonly string[];

/** Per family: the filter chain, the nat POSTROUTING chain, the nat DNAT chain, the mangle isolation and input chains, the raw ports chain. */
export interface FamilyRules {
  readonly filter: readonly Rule[];
  readonly nat: readonly Rule[];
  readonly dnat: readonly Rule[];
  readonly isolate: readonly Rule[];
  readonly input: readonly Rule[];
  readonly raw: readonly Rule[];
}

export interface FirewallRules {
  readonly v4: FamilyRules;
  readonly v6: FamilyRules;
}

const NONE: FamilyRules = { filter: [], nat: [], dnat: [], isolate: [], input: [], raw: [] };

/**
 * On the userspace datapath a container's port is no bridge port to the kernel: what the container sends
 * also arrives at the host's own stack on the host end of its veth, past the guard flows and past every
 * rule that names gateway ports. Dropped first of all (the raw table), whatever the datapath.
 */
const PORTS: readonly Rule[] = [['-m', 'devgroup', '--src-group', `0x${VETH_GROUP.toString(16)}`, '-m', 'comment', '--comment', 'ovsnet:ports', '-j', 'DROP']];
export const EMPTY_RULES: FirewallRules = { v4: NONE, v6: NONE };

/** The tag of the rules that keep the plugin's networks apart from other container networks on the host. */
const FOREIGN_TAG = ['-m', 'comment', '--comment', 'ovsnet:foreign'];

function comment(network: NetworkRecord): string[] {
  return ['-m', 'comment', '--comment', `ovsnet:${network.id.slice(0, 12)}`];
}

/** Traffic that no rule of isolation stops: replies, and connections to a published port (DNATed). */
const NOT_ALLOWED = ['-m', 'conntrack', '!', '--ctstate', 'RELATED,ESTABLISHED,DNAT'];

/**
 * Every rule the networks (and the ports their endpoints publish) call for.
 *
 * Drops are in the mangle table, which the kernel goes through before the
 * filter table: an --internal network reaches nothing outside it (published
 * ports and the host's own services included), nothing new enters a nat
 * network but published ports, and no network reaches another through the
 * host, whether the other is the plugin's or a Linux bridge of someone else
 * (`foreignBridges`: Docker's docker0 and br-*, libvirt's, LXC's), whichever
 * daemon's accepts come first in FORWARD. What the drops leave, the filter
 * chain accepts (Docker sets FORWARD's policy to DROP).
 *
 * A published port is a DNAT of the host port on the host's addresses to the
 * container, masqueraded when it comes from the container's own subnet
 * (hairpin), so the reply goes back through the host.
 */
export function firewallRules(networks: Iterable<NetworkRecord>, endpoints: Iterable<EndpointRecord> = [], foreignBridges: readonly string[] = []): FirewallRules {
  const dnat = { 4: [] as Rule[], 6: [] as Rule[] };
  const hairpin = { 4: [] as Rule[], 6: [] as Rule[] };
  const isolate = { 4: [] as Rule[], 6: [] as Rule[] };
  const input = { 4: [] as Rule[], 6: [] as Rule[] };
  const forward = { 4: [] as Rule[], 6: [] as Rule[] };
  const nat: Rule[] = [];
  const sorted = [...networks].filter((n) => n.gatewayPort).sort((a, b) => a.id.localeCompare(b.id));
  const byNetwork = new Map(sorted.map((n) => [n.id, n]));
  for (const endpoint of [...endpoints].sort((a, b) => a.id.localeCompare(b.id))) {
    const network = byNetwork.get(endpoint.networkId);
    if (!network || !endpoint.ports?.length || network.spec.internal) continue;
    const tag = comment(network);
    for (const p of endpoint.ports) {
      for (const family of families(p.hostIp)) {
        const address = parseCidrWithHost(family === 4 ? endpoint.address : endpoint.addressIpv6);
        if (!address) continue;
        const ip = (family === 4 ? endpoint.address : endpoint.addressIpv6).split('/')[0]!;
        const host = family === 4 ? '/32' : '/128';
        const to = family === 4 ? `${ip}:${p.port}` : `[${ip}]:${p.port}`;
        // Written as iptables-save prints them (addresses, interfaces, protocol, then matches), so they read back alike.
        const dest = isWildcard(p.hostIp) ? [] : ['-d', `${p.hostIp}${host}`];
        dnat[family].push([...dest, '-p', p.proto, '-m', p.proto, '--dport', String(p.hostPort), ...tag, '-j', 'DNAT', '--to-destination', to]);
        const subnets = family === 4 ? network.ipv4 : network.ipv6;
        const match = ['-p', p.proto, '-m', p.proto, '--dport', String(p.port), '-m', 'conntrack', '--ctstate', 'DNAT', ...tag];
        for (const subnet of subnets) hairpin[family].push(['-s', subnet.pool, '-d', `${ip}${host}`, '-o', network.gatewayPort!, ...match, '-j', 'MASQUERADE']);
      }
    }
  }
  for (const network of sorted) {
    const port = network.gatewayPort!;
    const tag = comment(network);
    for (const family of [4, 6] as const) {
      const subnets = family === 4 ? network.ipv4 : network.ipv6;
      if (subnets.length === 0) continue;
      if (network.spec.internal) {
        isolate[family].push(['-i', port, ...tag, '-j', 'DROP'], ['-o', port, ...tag, '-j', 'DROP']);
        input[family].push(['-i', port, ...tag, '-j', 'DROP']);
        continue;
      }
      // Networks never reach each other through the host (as Docker isolates its bridges).
      isolate[family].push(['-i', port, '-o', `${GATEWAY_PREFIX}+`, ...NOT_ALLOWED, ...tag, '-j', 'DROP']);
      if (network.spec.gatewayMode === 'nat') isolate[family].push(['-o', port, ...NOT_ALLOWED, ...tag, '-j', 'DROP']);
      forward[family].push(['-i', port, ...tag, '-j', 'ACCEPT'], ['-o', port, ...tag, '-j', 'ACCEPT']);
    }
    if (network.spec.gatewayMode === 'nat' && !network.spec.internal) {
      for (const subnet of network.ipv4) {
        const cidr = parseCidr(subnet.pool);
        if (cidr) nat.push(['-s', subnet.pool, '!', '-o', port, ...tag, '-j', 'MASQUERADE']);
      }
    }
  }
  for (const family of [4, 6] as const) {
    if (forward[family].length === 0) continue;
    for (const bridge of [...foreignBridges].sort()) {
      isolate[family].push(
        ['-i', `${GATEWAY_PREFIX}+`, '-o', bridge, ...NOT_ALLOWED, ...FOREIGN_TAG, '-j', 'DROP'],
        ['-i', bridge, '-o', `${GATEWAY_PREFIX}+`, ...NOT_ALLOWED, ...FOREIGN_TAG, '-j', 'DROP'],
      );
    }
  }
  const raw = [...networks].length > 0 ? PORTS : [];
  return {
    v4: { filter: forward[4], nat: [...hairpin[4], ...nat], dnat: dnat[4], isolate: isolate[4], input: input[4], raw },
    v6: { filter: forward[6], nat: hairpin[6], dnat: dnat[6], isolate: isolate[6], input: input[6], raw },
  };
}

/** The two iptables of a Linux host: the legacy x_tables one and the one on nf_tables. */
export type IptablesVariant = 'legacy' | 'nft';

/** What the host's rules are written with, as each variant's iptables-save (both families) shows them. */
export interface IptablesSample {
  /** undefined: the variant's programs are not installed. */
  readonly legacy: string | undefined;
  readonly nft: string | undefined;
  /** What plain `iptables` is (`iptables --version`: "(legacy)" or "(nf_tables)"), undefined when unknown. */
  readonly plain: IptablesVariant | undefined;
}

/** The rules of an iptables-save output that are not the plugin's own (its chains and the jumps into them). */
function othersRules(save: string): { docker: number; all: number } {
  const rules = save.split('\n').filter((l) => l.startsWith('-A ') && !l.includes('OVSNET-'));
  return { docker: rules.filter((l) => /\bDOCKER\b|DOCKER-/.test(l)).length, all: rules.length };
}

/**
 * Which iptables the plugin writes with: the one the host's rules are in. Both apply to every packet, but an
 * accept in one does not undo the other's drop (Docker's FORWARD policy DROP, written with legacy iptables,
 * drops what the plugin accepts with nf_tables), and an operator reads one of them. The variant holding Docker's
 * chains wins, then the one holding more rules, then what plain `iptables` is, then nf_tables (Debian's default
 * since 10). Hosts with one iptables only get it.
 */
export function chooseIptables(sample: IptablesSample): { variant: IptablesVariant; why: string } {
  if (sample.legacy === undefined && sample.nft === undefined) return { variant: sample.plain ?? 'nft', why: 'the only iptables installed' };
  if (sample.legacy === undefined) return { variant: 'nft', why: 'iptables-legacy is not installed' };
  if (sample.nft === undefined) return { variant: 'legacy', why: 'iptables-nft is not installed' };
  const legacy = othersRules(sample.legacy);
  const nft = othersRules(sample.nft);
  if (legacy.docker !== nft.docker) {
    const variant = legacy.docker > nft.docker ? 'legacy' : 'nft';
    return { variant, why: `Docker's rules are there (${Math.max(legacy.docker, nft.docker)} rules naming DOCKER chains, against ${Math.min(legacy.docker, nft.docker)})` };
  }
  if (legacy.all !== nft.all) {
    const variant = legacy.all > nft.all ? 'legacy' : 'nft';
    return { variant, why: `the host's rules are there (${Math.max(legacy.all, nft.all)} rules, against ${Math.min(legacy.all, nft.all)})` };
  }
  if (sample.plain) return { variant: sample.plain, why: `no rules in either; plain iptables is ${sample.plain === 'nft' ? 'iptables-nft' : 'iptables-legacy'}` };
  return { variant: 'nft', why: 'no rules in either' };
}
