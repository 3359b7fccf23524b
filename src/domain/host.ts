/**
 * The host as a value: what should exist on it, derived from the records by
 * one pure function, and what was observed on it. Realising a network, the
 * reconciler and `ovsnet doctor` all compare the two (host-diff.ts), so they
 * cannot disagree. This is the only place `external_ids` are built.
 */
import { type FirewallRules, firewallRules } from './firewall.js';
import { type ObservedFlows, type PortGuard, guardFor } from './flows.js';
import { ENDPOINT_KEY, NETWORK_KEY, OWNER_KEY, OWNER_VALUE, PEER_KEY, ROLE_KEY, type PortRole, tunnelPortName } from './names.js';
import { isOverlay } from './options.js';
import { portName, primaryAddress } from './ovn.js';
import type { Datapath, EndpointRecord, NetworkRecord } from './records.js';

/** An OVS port with its one interface, as the plugin makes it. */
export interface PortSpec {
  readonly bridge: string;
  readonly name: string;
  /** Interface type: "" for a kernel device (veth), "internal", "vxlan", "gre". */
  readonly type: string;
  readonly tag: number | undefined;
  /** VLANs a trunk port carries; empty for an access port. */
  readonly trunks: readonly number[];
  /**
   * `access`: frames without a tag only, in and out, on the port's tag (none: the untagged segment). A port
   * without a tag, trunks or vlan_mode is to OVS a trunk of every VLAN on the bridge. Undefined: not set
   * (ports on OVN's integration bridge, whose flows ovn-controller programs).
   */
  readonly vlanMode: 'access' | 'trunk' | undefined;
  /** Interface options, e.g. remote_ip and key of a tunnel. */
  readonly options: Readonly<Record<string, string>>;
  /** Protected ports never forward to each other (split horizon between tunnels). */
  readonly protected: boolean;
  /** Interface mtu_request (internal ports); undefined leaves the MTU to the device. */
  readonly mtuRequest: number | undefined;
  /** Port external_ids: the owner mark, the role, the network, endpoint or peer. */
  readonly externalIds: Readonly<Record<string, string>>;
  /**
   * Interface external_ids the plugin sets: for a port of an OVN network, the logical port it is
   * (`iface-id`) and its MAC (`attached-mac`). Keys others set (ovn-controller's `ovn-installed`) are not compared.
   */
  readonly interfaceExternalIds: Readonly<Record<string, string>>;
}

/** A port the records call for, with what it is for. */
export interface DesiredPort extends PortSpec {
  readonly role: PortRole;
  readonly networkId: string | undefined;
  readonly endpointId: string | undefined;
  /** What a container's port is held to (anti-spoofing, rate), as OpenFlow flows on it; undefined: nothing. */
  readonly guard: PortGuard | undefined;
}

export interface BridgeSpec {
  readonly name: string;
  /** Datapath a missing bridge is created with; an existing bridge is used as it is. */
  readonly datapath: Datapath;
  readonly externalIds: Readonly<Record<string, string>>;
  /**
   * Who makes it when it is missing: the plugin, or (OVN's integration bridge) ovn-controller; the
   * plugin then only says so.
   */
  readonly madeBy: 'plugin' | 'ovn-controller';
  /**
   * The plugin's bridges fail closed: `secure`, so that ovs-vswitchd starting without the plugin's flows (a
   * restart, an upgrade, a reboot) forwards nothing until they are back, the guards before the base flow.
   */
  readonly failMode: 'secure' | undefined;
}

/** The kernel side of a gateway port (an OVS internal port): its link settings and addresses. */
export interface GatewaySpec {
  readonly port: string;
  readonly networkId: string;
  readonly mtu: number;
  /** "10.0.0.1/24", sorted. */
  readonly addresses: readonly string[];
  /** On the userspace datapath TX checksum offload must be off (OVS forwards partial checksums as they are). */
  readonly txOffloadOff: boolean;
}

export interface DesiredHost {
  readonly bridges: ReadonlyMap<string, BridgeSpec>;
  readonly ports: ReadonlyMap<string, DesiredPort>;
  readonly gateways: ReadonlyMap<string, GatewaySpec>;
  readonly firewall: FirewallRules;
  readonly ipv4Forwarding: boolean;
  /** Kernel devices the endpoints account for: both ends of every veth pair. */
  readonly devices: ReadonlySet<string>;
}

// ---- what was observed ----

export interface ObservedBridge {
  readonly name: string;
  readonly datapathType: string;
  /** "secure", "standalone", or "" (unset: standalone). */
  readonly failMode: string;
  readonly externalIds: Readonly<Record<string, string>>;
  /** Names of all its ports, foreign ones and its own local port included. */
  readonly ports: readonly string[];
}

/** An owned port as OVSDB has it. */
export interface ObservedPort extends PortSpec {
  /** The bridge it is on; "" when no bridge holds it. */
  readonly bridge: string;
  readonly ofport: number | undefined;
  readonly error: string | undefined;
}

export interface ObservedLink {
  readonly kind: string;
  readonly mtu: number;
  readonly up: boolean;
  /** Its device group (0: the default); absent when not read. */
  readonly group?: number;
}

export interface ObservedFirewall {
  /** Rules in the plugin's chains, as `iptables -S` prints them (without "-A CHAIN "). */
  readonly filter4: readonly string[];
  readonly nat4: readonly string[];
  readonly filter6: readonly string[];
  /** The published ports' DNAT chains and IPv6 POSTROUTING (absent from an observation of an older shape: read as empty). */
  readonly dnat4?: readonly string[];
  readonly nat6?: readonly string[];
  readonly dnat6?: readonly string[];
  /** The mangle table's isolation and input chains (absent from an observation of an older shape: read as empty). */
  readonly isolate4?: readonly string[];
  readonly input4?: readonly string[];
  readonly isolate6?: readonly string[];
  readonly input6?: readonly string[];
  /** The raw table's chain against what the host ends of veth pairs bring in. */
  readonly raw4?: readonly string[];
  readonly raw6?: readonly string[];
  /** The built-in chains jump into the plugin's chains (filter FORWARD, nat POSTROUTING, PREROUTING and OUTPUT, mangle FORWARD and INPUT; both families). */
  readonly jumps: boolean;
  /** The other iptables (legacy or nf_tables) that still holds rules of the plugin's, which the host's rules left. */
  readonly leftIn?: string;
}

export interface ObservedHost {
  readonly bridges: ReadonlyMap<string, ObservedBridge>;
  /** Ports carrying the plugin's owner mark. */
  readonly ports: ReadonlyMap<string, ObservedPort>;
  readonly links: ReadonlyMap<string, ObservedLink>;
  /** Global addresses ("10.0.0.1/24") of every device that has any. */
  readonly addresses: ReadonlyMap<string, readonly string[]>;
  /** Undefined when not read. */
  readonly firewall: ObservedFirewall | undefined;
  /** The plugin's OpenFlow flows and meters per bridge; undefined when not read, a bridge absent when it could not be read. */
  readonly flows?: ReadonlyMap<string, ObservedFlows>;
  readonly ipv4Forwarding: boolean | undefined;
  /** Whether each gateway port takes router advertisements and redirects; a port absent when not read. */
  readonly routerAdvice?: ReadonlyMap<string, { readonly acceptRa: boolean; readonly acceptRedirects: boolean }>;
}

/**
 * The names other container networks give their Linux bridges: Docker's (docker0, docker_gwbridge, br-<12 hex>
 * of a user-defined network), libvirt's, LXC's, LXD's and Incus's, Podman's and CNI's, kubenet's. A bridge of
 * another name (the host's own uplink bridge, br0 or vmbr0) is the host's network, which nat and routed
 * networks must reach.
 */
const CONTAINER_BRIDGE = /^(docker0|docker_gwbridge|br-[0-9a-f]{12}|virbr\d+|lxcbr\d+|lxdbr\d+|incusbr\d+|podman\d+|cni-podman\d+|cni\d+|cbr0)$/;

/**
 * The Linux bridges of other container networks on the host, which the plugin's networks must not reach through
 * the host, nor they them (by the names those give them, `CONTAINER_BRIDGE`). The plugin makes none.
 */
export function foreignBridges(links: ReadonlyMap<string, ObservedLink>): string[] {
  return [...links].filter(([name, link]) => link.kind === 'bridge' && CONTAINER_BRIDGE.test(name)).map(([name]) => name).sort();
}

// ---- the ports the plugin makes ----

const OWNED = { [OWNER_KEY]: OWNER_VALUE };

function port(
  fields: Omit<DesiredPort, 'trunks' | 'vlanMode' | 'options' | 'protected' | 'mtuRequest' | 'tag' | 'networkId' | 'endpointId' | 'interfaceExternalIds' | 'guard'> & Partial<DesiredPort>,
): DesiredPort {
  return {
    tag: undefined,
    trunks: [],
    vlanMode: 'access',
    options: {},
    protected: false,
    mtuRequest: undefined,
    networkId: undefined,
    endpointId: undefined,
    interfaceExternalIds: {},
    guard: undefined,
    ...fields,
  };
}

export function ownedBridge(name: string, datapath: Datapath): BridgeSpec {
  return { name, datapath, externalIds: OWNED, madeBy: 'plugin', failMode: 'secure' };
}

/**
 * The access port of an endpoint: the host end of its veth pair, tagged with the network's
 * segment; on an OVN network, bound to the endpoint's logical port instead.
 */
export function endpointPort(network: NetworkRecord, endpoint: Pick<EndpointRecord, 'id' | 'hostIf' | 'mac' | 'address' | 'addressIpv6' | 'rate' | 'linkLocal'>): DesiredPort {
  const { spec } = network;
  return port({
    role: 'endpoint',
    bridge: network.spec.bridge,
    name: endpoint.hostIf,
    type: '',
    tag: network.localTag,
    vlanMode: spec.mode === 'ovn' ? undefined : 'access',
    networkId: network.id,
    endpointId: endpoint.id,
    externalIds: { ...OWNED, [NETWORK_KEY]: network.id, [ENDPOINT_KEY]: endpoint.id, [ROLE_KEY]: 'endpoint' },
    interfaceExternalIds: network.ovn ? { 'iface-id': portName(network.ovn, primaryAddress(endpoint)), 'attached-mac': endpoint.mac } : {},
    // OVN's ports are guarded by their logical ports' port security, programmed by ovn-controller.
    // OVN's ports are held to their MAC and addresses by their logical ports' port security, which
    // ovn-controller programs; what port security leaves open (router advertisements, DHCP servers) is dropped
    // here too, before OVN's pipeline, where no ACL can drop an advertisement.
    guard:
      spec.mode === 'ovn'
        ? guardFor({ antiSpoofing: false, allowRa: spec.allowRa, allowDhcpServer: spec.allowDhcpServer, rate: undefined, pipeline: 'ovn' }, endpoint)
        : guardFor({ antiSpoofing: spec.antiSpoofing, allowRa: spec.allowRa, allowDhcpServer: spec.allowDhcpServer, rate: endpoint.rate ?? spec.rate }, endpoint),
  });
}

/**
 * The VLAN a spare's port is parked on until an endpoint takes it: 802.1Q reserves 4095, so no network
 * has it (vlan is 1-4094, and overlays take free tags from 4094 down) and no frame of a network reaches it.
 */
export const PARKING_TAG = 4095;

/**
 * The port of a spare veth pair made ahead of need (driver/spares.ts), parked on a bridge: an access port
 * of a VLAN no network has. Taking it is then only a change of tag and marks, with its OpenFlow number
 * known in advance, so its guard flows go in at the same time.
 */
export function sparePort(bridge: string, name: string): DesiredPort {
  return port({ role: 'spare', bridge, name, type: '', tag: PARKING_TAG, externalIds: { ...OWNED, [ROLE_KEY]: 'spare' } });
}

/** The internal port holding a network's gateway addresses on the host. */
export function gatewayPort(network: NetworkRecord & { gatewayPort: string }): DesiredPort {
  return port({
    role: 'gateway',
    bridge: network.spec.bridge,
    name: network.gatewayPort,
    type: 'internal',
    tag: network.localTag,
    mtuRequest: network.mtu,
    networkId: network.id,
    externalIds: { ...OWNED, [NETWORK_KEY]: network.id, [ROLE_KEY]: 'gateway' },
  });
}

/**
 * A tunnel port of an overlay towards one peer. With a vlan, the tag travels
 * inside the tunnel (a trunk of one VLAN); without, it is an access port of
 * the overlay's local tag. Tunnel ports are protected: what arrives from one
 * peer is never sent on to another, which in a full mesh would loop broadcasts.
 */
export function tunnelPort(network: NetworkRecord, peer: string): DesiredPort {
  const { spec } = network;
  if (!isOverlay(spec)) throw new Error(`network ${network.id} is not an overlay`);
  return port({
    role: 'tunnel',
    protected: true,
    bridge: spec.bridge,
    name: tunnelPortName(network.id, peer),
    type: spec.mode,
    tag: spec.vlan === undefined ? network.localTag : undefined,
    trunks: spec.vlan === undefined ? [] : [spec.vlan],
    vlanMode: spec.vlan === undefined ? 'access' : 'trunk',
    options: { remote_ip: peer, key: String(spec.tunnelKey) },
    networkId: network.id,
    externalIds: { ...OWNED, [NETWORK_KEY]: network.id, [ROLE_KEY]: 'tunnel', [PEER_KEY]: peer },
  });
}

/** A host interface on a bridge as the trunk of the VLAN networks that name it (0: the untagged one). */
export function uplinkPort(bridge: string, uplink: string, trunks: readonly number[]): DesiredPort {
  return port({ role: 'uplink', bridge, name: uplink, type: '', trunks, vlanMode: 'trunk', externalIds: { ...OWNED, [ROLE_KEY]: 'uplink' } });
}

export function gatewayAddresses(network: NetworkRecord): string[] {
  return [...network.ipv4, ...network.ipv6]
    .filter((s) => s.gateway)
    .map((s) => `${s.gateway}/${s.pool.split('/')[1]}`)
    .sort();
}

/**
 * Everything the records call for on this host. `datapath` is what a missing
 * bridge would be created with, `foreignBridges` the other container networks
 * seen on the host (the firewall keeps them apart); networks that are still
 * being created count as if they were ready (the caller decides which networks
 * to pass).
 */
export function desiredHost(
  networks: readonly NetworkRecord[],
  endpoints: readonly EndpointRecord[],
  options: { datapath: Datapath; foreignBridges?: readonly string[] },
): DesiredHost {
  const bridges = new Map<string, BridgeSpec>();
  const ports = new Map<string, DesiredPort>();
  const gateways = new Map<string, GatewaySpec>();
  const uplinks = new Map<string, { bridge: string; uplink: string; tags: Set<number> }>();
  const byId = new Map(networks.map((n) => [n.id, n]));

  for (const network of networks) {
    const { spec } = network;
    if (!bridges.has(spec.bridge)) {
      bridges.set(spec.bridge, spec.mode === 'ovn' ? { name: spec.bridge, datapath: options.datapath, externalIds: {}, madeBy: 'ovn-controller', failMode: undefined } : ownedBridge(spec.bridge, options.datapath));
    }
    if (network.gatewayPort) {
      const gw = gatewayPort(network as NetworkRecord & { gatewayPort: string });
      ports.set(gw.name, gw);
      gateways.set(gw.name, {
        port: gw.name,
        networkId: network.id,
        mtu: network.mtu,
        addresses: gatewayAddresses(network),
        txOffloadOff: network.datapath === 'netdev',
      });
    }
    if (isOverlay(spec)) {
      for (const peer of spec.peers) {
        const tunnel = tunnelPort(network, peer);
        ports.set(tunnel.name, tunnel);
      }
    } else if (spec.mode === 'vlan' && spec.uplink) {
      const key = `${spec.bridge}|${spec.uplink}`;
      const entry = uplinks.get(key) ?? { bridge: spec.bridge, uplink: spec.uplink, tags: new Set<number>() };
      entry.tags.add(network.localTag ?? 0);
      uplinks.set(key, entry);
    }
  }
  for (const { bridge, uplink, tags } of uplinks.values()) {
    ports.set(uplink, uplinkPort(bridge, uplink, [...tags].sort((a, b) => a - b)));
  }

  const devices = new Set<string>();
  for (const endpoint of endpoints) {
    devices.add(endpoint.hostIf);
    devices.add(endpoint.peerIf);
    const network = byId.get(endpoint.networkId);
    if (network) ports.set(endpoint.hostIf, endpointPort(network, endpoint));
  }

  return {
    bridges,
    ports,
    gateways,
    firewall: firewallRules(networks, endpoints, options.foreignBridges),
    ipv4Forwarding: networks.some((n) => n.gatewayPort && !n.spec.internal && n.ipv4.length > 0),
    devices,
  };
}
