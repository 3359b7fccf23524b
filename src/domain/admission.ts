/**
 * Whether a new network may live on this host beside the others, and the
 * tag it gets there: pure decisions over the records and the observed host.
 */
import { badRequest, conflict, exhausted } from '../errors.js';
import { contains, overlaps, parseCidr, parseCidrWithHost, parseIp } from './cidr.js';
import type { ObservedHost } from './host.js';
import { ROLE_KEY, short } from './names.js';
import { type NetworkSpec, type VlanSpec, hasHostGateway, isOverlay } from './options.js';
import { type NetworkRecord, type SubnetRecord, isOwnAddressSpace, poolIdOf } from './records.js';


/** The tag of a network's ports: its vlan, or for an overlay without one, a free tag from 4094 down. */
export function chooseTag(spec: NetworkSpec, others: readonly NetworkRecord[]): number | undefined {
  if (spec.mode === 'ovn') return undefined; // OVN keeps logical switches apart, not tags
  const used = new Map<number, NetworkRecord>();
  for (const other of others) {
    if (other.spec.bridge === spec.bridge && other.localTag !== undefined) used.set(other.localTag, other);
  }
  if (spec.vlan !== undefined) {
    const holder = used.get(spec.vlan);
    if (holder && (isOverlay(spec) || isOverlay(holder.spec))) {
      throw conflict(
        'VlanInUse',
        `vlan ${spec.vlan} on bridge ${spec.bridge} is already used by network ${short(holder.id)} (mode=${holder.spec.mode}); an overlay needs a tag of its own on its bridge`,
      );
    }
    return spec.vlan;
  }
  if (!isOverlay(spec)) return undefined;
  for (let tag = 4094; tag >= 1; tag--) if (!used.has(tag)) return tag;
  throw exhausted('NoLocalTag', `bridge ${spec.bridge} has no free VLAN tag left for another overlay`);
}

/**
 * What two networks on one host may not share: a VNI or GRE key, a bridge's
 * uplink, a subnet, or overlapping subnets on one segment or both routed on
 * the host. A subnet that another network uses is refused with a shield, so
 * that Docker's rollback does not release the pool the other one holds.
 */
export function checkConflicts(networkId: string, spec: NetworkSpec, localTag: number | undefined, subnets: readonly SubnetRecord[], others: readonly NetworkRecord[]): void {
  for (const other of others) {
    if (other.id === networkId) continue;
    if (isOverlay(spec) && other.spec.mode === spec.mode && isOverlay(other.spec) && other.spec.tunnelKey === spec.tunnelKey) {
      const what = spec.mode === 'vxlan' ? 'vni' : 'key';
      throw conflict('TunnelKeyInUse', `${what} ${spec.tunnelKey} is already used by network ${short(other.id)} on this host; each overlay needs its own`);
    }
    if (spec.mode === 'vlan' && spec.uplink && other.spec.mode === 'vlan' && other.spec.uplink && other.spec.bridge === spec.bridge && other.spec.uplink !== spec.uplink) {
      throw conflict('UplinkInUse', `bridge ${spec.bridge} already has uplink ${other.spec.uplink} (network ${short(other.id)}); a bridge has one uplink`);
    }
    // OVN networks are apart by logical switch; the others by bridge and tag.
    const sameSegment = spec.mode !== 'ovn' && other.spec.mode !== 'ovn' && other.spec.bridge === spec.bridge && other.localTag === localTag;
    const routedOnHost = hasHostGateway(spec) || hasHostGateway(other.spec);
    for (const mine of subnets) {
      for (const theirs of [...other.ipv4, ...other.ipv6]) {
        if (mine.addressSpace === theirs.addressSpace && mine.pool === theirs.pool && isOwnAddressSpace(mine.addressSpace)) {
          throw conflict('SubnetInUse', `subnet ${mine.pool} is already used by network ${short(other.id)}; choose another --subnet`, { poolId: poolIdOf(mine.addressSpace, mine.pool) });
        }
        const a = parseCidr(mine.pool);
        const b = parseCidr(theirs.pool);
        if (a && b && overlaps(a, b) && (routedOnHost || sameSegment)) {
          const why = routedOnHost ? 'both would be routed on this host' : 'both are on the same bridge and VLAN';
          throw conflict('SubnetOverlap', `subnet ${mine.pool} overlaps subnet ${theirs.pool} of network ${short(other.id)} (${why})`);
        }
      }
    }
  }
}

/** A bridge name must not be a kernel interface that is not already an OVS bridge (say, eth0). */
export function checkBridgeName(name: string, host: Pick<ObservedHost, 'bridges' | 'links'>): void {
  if (host.bridges.has(name)) return;
  if (host.links.has(name)) {
    throw badRequest('BridgeNameTaken', `invalid value "${name}" for option bridge: a network interface with that name exists and is not an OVS bridge`);
  }
}

/** The plugin never takes an interface the host needs as an uplink: one with addresses, or its default route. */
export function checkUplink(spec: VlanSpec & { uplink: string }, host: Pick<ObservedHost, 'bridges' | 'ports' | 'links' | 'addresses'>, defaultRouteDevices: readonly string[]): void {
  const name = spec.uplink;
  const invalid = (rule: string) => badRequest('InvalidUplink', `invalid value "${name}" for option uplink: ${rule}`);
  if (!host.links.has(name)) throw invalid('no such interface on this host');
  if (host.ports.get(name)?.externalIds[ROLE_KEY] === 'uplink') return;
  if ([...host.bridges.values()].some((b) => b.ports.includes(name))) {
    throw invalid(`it is already a port of an OVS bridge, attached by someone else; a plain port already carries every VLAN, so leave out -o uplink, or remove that port first`);
  }
  const addresses = host.addresses.get(name) ?? [];
  if (addresses.length > 0) {
    throw invalid(
      `it carries ${addresses.join(', ')}, and attaching it to a bridge would cut the host off that network. Move the addresses to the bridge yourself, in one step from a console: ovs-vsctl --may-exist add-br ${spec.bridge} -- --may-exist add-port ${spec.bridge} ${name} && ip address flush dev ${name} && ${addresses.map((a) => `ip address add ${a} dev ${spec.bridge}`).join(' && ')} && ip link set ${spec.bridge} up; then create networks without -o uplink (the port carries every VLAN)`,
    );
  }
  if (defaultRouteDevices.includes(name)) throw invalid('it carries the host default route');
}

/** A route of the host, as read from all its routing tables. */
export interface HostRoute {
  /** Its destination as CIDR text (a default route: 0.0.0.0/0 or ::/0, with `isDefault`). */
  readonly dst: string;
  readonly isDefault?: boolean;
  readonly dev?: string;
  readonly via?: string;
  /** The table, when not main. */
  readonly table?: string;
  /** An address of the host's own (the local table). */
  readonly local?: boolean;
}

function describeRoute(r: HostRoute): string {
  return `${r.isDefault ? 'default' : r.dst}${r.via ? ` via ${r.via}` : ''}${r.dev ? ` dev ${r.dev}` : ''}${r.table ? ` table ${r.table}` : ''}`;
}

/**
 * A network's subnets against the host's own routes: a subnet that overlaps where the host already sends
 * traffic (its uplink's subnet, another interface's, Docker's bridges, a route of its own) or that holds its
 * default gateway gives containers addresses the host reaches another way, and can cut the host off from its
 * own network. Routes through the plugin's own devices (`own`: its networks' gateway ports) and IPv6
 * link-local and multicast routes are not the host's. Refused unless the operator says it is meant
 * (-o allow_host_overlap=true: a VLAN the host also has an interface on, say).
 */
export function checkHostRoutes(subnets: readonly SubnetRecord[], routes: readonly HostRoute[], own: ReadonlySet<string>): void {
  for (const subnet of subnets) {
    const mine = parseCidr(subnet.pool);
    if (!mine) continue;
    for (const route of routes) {
      if (route.dev && own.has(route.dev)) continue;
      if (/^(fe80|ff[0-9a-f]{2}):/i.test(route.dst)) continue;
      let clash: string | undefined;
      if (route.isDefault) {
        const via = route.via ? parseIp(route.via) : undefined;
        if (via && contains(mine, via)) clash = `holds the host's default gateway (route ${describeRoute(route)})`;
      } else {
        const dst = parseCidrWithHost(route.dst)?.cidr;
        if (dst && overlaps(mine, dst)) clash = `overlaps the host's route ${describeRoute(route)}`;
      }
      if (clash) {
        throw conflict(
          'HostRouteOverlap',
          `subnet ${subnet.pool} ${clash}: its containers would take addresses the host reaches another way, and the host could lose its own traffic to them. Choose a subnet outside the host's routes (ip route show table all), or give -o allow_host_overlap=true if it is meant (a VLAN the host also has an interface on)`,
        );
      }
    }
  }
}
