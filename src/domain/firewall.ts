/**
 * The plugin's iptables rules as data: a pure function of the networks. The
 * adapter replaces the plugin's own chains with exactly this, atomically, so
 * applying it twice is harmless and applying it after a reboot repairs
 * everything.
 */
import { parseCidr } from './cidr.js';
import { GATEWAY_PREFIX } from './names.js';
import type { NetworkRecord } from './records.js';

export const FORWARD_CHAIN = 'OVSNET-FORWARD';
export const POSTROUTING_CHAIN = 'OVSNET-POSTROUTING';

export type Rule = readonly string[];

export interface FirewallRules {
  readonly v4: { readonly filter: readonly Rule[]; readonly nat: readonly Rule[] };
  readonly v6: { readonly filter: readonly Rule[] };
}

export const EMPTY_RULES: FirewallRules = { v4: { filter: [], nat: [] }, v6: { filter: [] } };

function comment(network: NetworkRecord): string[] {
  return ['-m', 'comment', '--comment', `ovsnet:${network.id.slice(0, 12)}`];
}

export function firewallRules(networks: Iterable<NetworkRecord>): FirewallRules {
  const isolation = { 4: [] as Rule[], 6: [] as Rule[] };
  const forward = { 4: [] as Rule[], 6: [] as Rule[] };
  const nat: Rule[] = [];
  const sorted = [...networks].filter((n) => n.gatewayPort).sort((a, b) => a.id.localeCompare(b.id));
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
    // Isolation first: a later network's ACCEPT must not let another network's traffic in.
    v4: { filter: [...isolation[4], ...forward[4]], nat },
    v6: { filter: [...isolation[6], ...forward[6]] },
  };
}
