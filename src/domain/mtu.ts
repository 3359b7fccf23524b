/**
 * MTU arithmetic: what a network's containers may use, from what carries
 * their packets (an uplink, or tunnels to peers over the underlay).
 */
import { badRequest } from '../errors.js';
import { parseIp } from './cidr.js';
import type { Datapath } from './records.js';
import type { NetworkSpec, TunnelMode, TunnelSpec } from './options.js';

/**
 * Bytes a tunnel adds around a container's IP packet: the outer IP header,
 * the tunnel header and the inner Ethernet header, by underlay family.
 * VXLAN: IP + UDP 8 + VXLAN 8 + Ethernet 14. GRE (Ethernet over GRE, with key): IP + GRE 4 + key 4 + Ethernet 14.
 */
export const ENCAPSULATION: Readonly<Record<TunnelMode, { name: string; 4: number; 6: number }>> = {
  vxlan: { name: 'VXLAN', 4: 50, 6: 70 },
  gre: { name: 'GRE', 4: 42, 6: 62 },
};
export const VLAN_TAG_BYTES = 4;

/** How this host reaches one peer, as observed. */
export interface PeerPath {
  readonly peer: string;
  /** Undefined when the host has no route to it. */
  readonly route: { readonly dev: string; readonly local: boolean } | undefined;
  /** MTU of the device the route leaves through. */
  readonly devMtu: number | undefined;
  /** The device is an OVS bridge of the userspace datapath (where userspace tunnels must leave from). */
  readonly devIsNetdevBridge: boolean;
}

export interface MtuLimit {
  readonly max: number;
  /** Why that is the most, for an error message. */
  readonly why: string;
}

/**
 * The largest container MTU the tunnels to the peers carry. Also checks each
 * peer: reachable, not this host, and on the userspace datapath reached
 * through an OVS bridge that holds the local tunnel address (OVS sends
 * userspace tunnel packets out of such a bridge only).
 */
export function tunnelPathMtu(spec: Pick<TunnelSpec, 'mode' | 'vlan'>, paths: readonly PeerPath[], options: { datapath: Datapath; defaultMtu: number }): MtuLimit {
  const encapsulation = ENCAPSULATION[spec.mode];
  const inner = spec.vlan === undefined ? 0 : VLAN_TAG_BYTES;
  const describe = (overhead: number) => `${encapsulation.name} encapsulation${inner ? ' with the VLAN tag inside' : ''} takes ${overhead} bytes`;
  if (paths.length === 0) {
    const overhead = encapsulation[4] + inner;
    return { max: options.defaultMtu - overhead, why: `with no peers yet, an underlay MTU of ${options.defaultMtu} is assumed and ${describe(overhead)}` };
  }
  let best: MtuLimit | undefined;
  for (const { peer, route, devMtu, devIsNetdevBridge } of paths) {
    if (!route) throw badRequest('NoRouteToPeer', `invalid peer ${peer}: this host has no route to it`);
    if (route.local) throw badRequest('PeerIsLocal', `invalid peer ${peer}: it is an address of this host; peers are the other hosts' tunnel addresses`);
    if (options.datapath === 'netdev' && !devIsNetdevBridge) {
      throw badRequest(
        'TunnelPath',
        `invalid peer ${peer}: on the userspace (netdev) datapath, tunnel packets must leave through an OVS netdev bridge that holds this host's tunnel address, but the route to ${peer} goes through ${route.dev}. Put the underlay interface and its address on such a bridge, e.g. ovs-vsctl add-br br-phy -- set bridge br-phy datapath_type=netdev -- add-port br-phy ${route.dev}, then move the address of ${route.dev} to br-phy`,
      );
    }
    const overhead = encapsulation[parseIp(peer)?.family ?? 4] + inner;
    const underlay = devMtu ?? options.defaultMtu;
    const max = underlay - overhead;
    if (!best || max < best.max) best = { max, why: `the path to ${peer} (MTU ${underlay} on ${route.dev}) minus ${describe(overhead)}` };
  }
  return best!;
}

/**
 * The MTU of a network's containers: asked for (and checked against what
 * carries it), or the most the tunnel path allows, or the default (at most
 * the uplink's MTU).
 */
export function networkMtu(spec: NetworkSpec, limit: MtuLimit | undefined, defaultMtu: number): number {
  const max = limit?.max ?? 65535;
  if (spec.mtu === undefined) return Math.min(spec.mode === 'vlan' ? defaultMtu : max, max);
  if (spec.mtu > max) throw badRequest('MtuTooLarge', `invalid value "${spec.mtu}" for option mtu: at most ${max} (${limit?.why ?? ''})`);
  return spec.mtu;
}
