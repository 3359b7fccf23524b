/**
 * `ovsnet networks` and `ovsnet endpoints`: what the plugin holds, with
 * Docker's names for networks and containers.
 */
import { describePort } from '../domain/published.js';
import type Docker from 'dockerode';
import { boundsSize, usableBounds } from '../domain/allocator.js';
import { parseCidr } from '../domain/cidr.js';
import { isOverlay, normaliseSpec, weakenedProtections } from '../domain/options.js';
import type { PluginState } from './client.js';

export interface NetworkRow {
  name: string;
  id: string;
  mode: string;
  segment: string;
  bridge: string;
  gatewayMode: string;
  mtu: number;
  subnets: Array<{ subnet: string; gateway: string | null; range: string | null; used: number | null; size: number | null }>;
  peers: string[];
  uplink: string | null;
  /** OVN networks: the hosts that use it (null when the northbound database could not be asked). */
  hosts: string[] | null;
  endpoints: number;
  /** The options that weaken what guards its containers (anti_spoofing=false, allow_ra=true, allow_dhcp_server=true). */
  weakened: string[];
}

export interface EndpointRow {
  container: string;
  containerId: string;
  network: string;
  endpointId: string;
  address: string;
  addressIpv6: string;
  mac: string;
  port: string;
  tag: number | null;
  joined: boolean;
  /** Published ports, as Docker shows its own ("*:8080->80/tcp"); `docker port` cannot show a remote driver's. */
  published: string[];
  /** Its own rate limit, or its network's, in Mbit/s. */
  rateMbit: number | null;
}

/** Docker's names: network id -> name, endpoint id -> container (both empty when Docker cannot be asked). */
export async function dockerNames(docker: Docker): Promise<{ networks: Map<string, string>; containers: Map<string, { name: string; id: string }> }> {
  const networks = new Map<string, string>();
  const containers = new Map<string, { name: string; id: string }>();
  try {
    for (const n of (await docker.listNetworks()) as Array<{ Id: string; Name: string }>) networks.set(n.Id, n.Name);
    for (const c of await docker.listContainers({ all: true })) {
      for (const settings of Object.values(c.NetworkSettings?.Networks ?? {})) {
        if (settings.EndpointID) containers.set(settings.EndpointID, { name: (c.Names[0] ?? '').replace(/^\//, ''), id: c.Id });
      }
    }
  } catch {
    // Without Docker the ids still tell everything.
  }
  return { networks, containers };
}

export function networkRows(state: PluginState, names: Map<string, string>): NetworkRow[] {
  return state.networks.map((n) => {
    const segment =
      n.spec.mode === 'ovn'
        ? `switch ${n.ovn?.switchName ?? '?'}`
        : n.spec.mode === 'vlan'
          ? n.spec.vlan === undefined ? 'untagged' : `vlan ${n.spec.vlan}`
          : `${n.spec.mode === 'vxlan' ? 'vni' : 'key'} ${n.spec.tunnelKey}${n.spec.vlan === undefined ? '' : ` vlan ${n.spec.vlan}`}`;
    return {
      name: names.get(n.id) ?? '',
      id: n.id,
      mode: n.spec.mode,
      segment,
      bridge: n.spec.bridge,
      gatewayMode: n.spec.gatewayMode,
      mtu: n.mtu,
      subnets: [...n.ipv4, ...n.ipv6].map((s) => {
        const pool = state.pools.find((p) => p.pool === s.pool && p.addressSpace === s.addressSpace);
        const cidr = parseCidr(s.pool);
        return {
          subnet: s.pool,
          gateway: s.gateway ?? null,
          range: pool && pool.range !== pool.pool ? pool.range : null,
          used: pool ? state.addresses.filter((a) => a.poolId === pool.id).length : null,
          size: pool && cidr ? Number(boundsSize(usableBounds(cidr, parseCidr(pool.range)!))) : null,
        };
      }),
      peers: isOverlay(n.spec) ? [...n.spec.peers] : [],
      uplink: n.spec.mode === 'vlan' ? (n.spec.uplink ?? null) : null,
      hosts: n.spec.mode === 'ovn' ? (state.ovnHosts?.[n.id] ?? null) : null,
      endpoints: state.endpoints.filter((e) => e.networkId === n.id).length,
      weakened: weakenedOf(n),
    };
  });
}

export function endpointRows(state: PluginState, names: { networks: Map<string, string>; containers: Map<string, { name: string; id: string }> }): EndpointRow[] {
  return state.endpoints.map((e) => {
    const network = state.networks.find((n) => n.id === e.networkId);
    const container = names.containers.get(e.id);
    return {
      container: container?.name ?? '',
      containerId: container?.id ?? '',
      network: names.networks.get(e.networkId) ?? e.networkId.slice(0, 12),
      endpointId: e.id,
      address: e.address,
      addressIpv6: e.addressIpv6,
      mac: e.mac,
      port: e.hostIf,
      tag: network?.localTag ?? null,
      joined: e.joined,
      published: (e.ports ?? []).map(describePort),
      rateMbit: (e.rate ?? (network && network.spec.mode !== 'ovn' ? network.spec.rate : undefined))?.mbit ?? null,
    };
  });
}

/** What a network's options weaken of its containers' guard, read from its spec as the plugin keeps it. */
export function weakenedOf(network: PluginState['networks'][number]): string[] {
  return weakenedProtections(normaliseSpec(network.spec));
}

/** Columns padded to their widest cell. */
export function table(header: string[], rows: string[][]): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd();
  return [line(header), ...rows.map(line)];
}
