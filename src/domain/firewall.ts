/**
 * The plugin's iptables rules as data: a pure function of the networks. The
 * adapter replaces the plugin's own chains with exactly this, atomically, so
 * applying it twice is harmless and applying it after a reboot repairs
 * everything.
 */
import { parseCidr, parseCidrWithHost } from './cidr.js';
import { GATEWAY_PREFIX } from './names.js';
import { families, isWildcard } from './published.js';
import type { EndpointRecord, NetworkRecord } from './records.js';

export const FORWARD_CHAIN = 'OVSNET-FORWARD';
export const POSTROUTING_CHAIN = 'OVSNET-POSTROUTING';
/** Published ports: jumped to (nat table) from PREROUTING and OUTPUT for traffic to the host's own addresses. */
export const DNAT_CHAIN = 'OVSNET-DNAT';

export type Rule = readonly string[];

/** Per family: the filter chain, the nat POSTROUTING chain, the nat DNAT chain. */
export interface FamilyRules {
  readonly filter: readonly Rule[];
  readonly nat: readonly Rule[];
  readonly dnat: readonly Rule[];
}

export interface FirewallRules {
  readonly v4: FamilyRules;
  readonly v6: FamilyRules;
}

export const EMPTY_RULES: FirewallRules = { v4: { filter: [], nat: [], dnat: [] }, v6: { filter: [], nat: [], dnat: [] } };

function comment(network: NetworkRecord): string[] {
  return ['-m', 'comment', '--comment', `ovsnet:${network.id.slice(0, 12)}`];
}

/**
 * Every rule the networks (and the ports their endpoints publish) call for.
 * A published port is a DNAT of the host port on the host's addresses to the
 * container; its DNATed traffic and the answers are accepted before any
 * isolation (it may come from anywhere, another network or the container's
 * own included), and
 * masqueraded when it comes from the container's own subnet (hairpin), so the
 * reply goes back through the host.
 */
export function firewallRules(networks: Iterable<NetworkRecord>, endpoints: Iterable<EndpointRecord> = []): FirewallRules {
  const published = { 4: [] as Rule[], 6: [] as Rule[] };
  const dnat = { 4: [] as Rule[], 6: [] as Rule[] };
  const hairpin = { 4: [] as Rule[], 6: [] as Rule[] };
  const isolation = { 4: [] as Rule[], 6: [] as Rule[] };
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
        const match = ['-p', p.proto, '-m', p.proto, '--dport', String(p.port), '-m', 'conntrack', '--ctstate', 'DNAT', ...tag];
        const gw = network.gatewayPort!;
        published[family].push(['-d', `${ip}${host}`, '-o', gw, ...match, '-j', 'ACCEPT']);
        // Its answers too: to a container of another network, or (hairpin) of the same, isolation would drop them.
        published[family].push(['-s', `${ip}${host}`, '-i', gw, '-p', p.proto, '-m', p.proto, '--sport', String(p.port), '-m', 'conntrack', '--ctstate', 'DNAT', ...tag, '-j', 'ACCEPT']);
        const subnets = family === 4 ? network.ipv4 : network.ipv6;
        for (const subnet of subnets) hairpin[family].push(['-s', subnet.pool, '-d', `${ip}${host}`, '-o', gw, ...match, '-j', 'MASQUERADE']);
      }
    }
  }
  for (const network of sorted) {
    const port = network.gatewayPort!;
    const tag = comment(network);
    for (const family of [4, 6] as const) {
      const subnets = family === 4 ? network.ipv4 : network.ipv6;
      if (subnets.length === 0) continue;
      // Networks never reach each other through the host (as Docker isolates its bridges).
      isolation[family].push(['-i', port, '-o', `${GATEWAY_PREFIX}+`, ...tag, '-j', 'DROP']);
      if (network.spec.internal) {
        forward[family].push(['-i', port, ...tag, '-j', 'DROP'], ['-o', port, ...tag, '-j', 'DROP']);
      } else if (network.spec.gatewayMode === 'routed') {
        forward[family].push(['-i', port, ...tag, '-j', 'ACCEPT'], ['-o', port, ...tag, '-j', 'ACCEPT']);
      } else {
        forward[family].push(
          ['-i', port, ...tag, '-j', 'ACCEPT'],
          ['-o', port, '-m', 'conntrack', '--ctstate', 'RELATED,ESTABLISHED', ...tag, '-j', 'ACCEPT'],
          ['-o', port, ...tag, '-j', 'DROP'],
        );
      }
    }
    if (network.spec.gatewayMode === 'nat' && !network.spec.internal) {
      for (const subnet of network.ipv4) {
        const cidr = parseCidr(subnet.pool);
        if (cidr) nat.push(['-s', subnet.pool, '!', '-o', port, ...tag, '-j', 'MASQUERADE']);
      }
    }
  }
  return {
    // Published ports first, then isolation: a later network's ACCEPT must not let another network's traffic in.
    v4: { filter: [...published[4], ...isolation[4], ...forward[4]], nat: [...hairpin[4], ...nat], dnat: dnat[4] },
    v6: { filter: [...published[6], ...isolation[6], ...forward[6]], nat: hairpin[6], dnat: dnat[6] },
  };
}
