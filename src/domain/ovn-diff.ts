/**
 * The comparison of this host's records with what the northbound database has: each difference as drift (for
 * `ovsnet doctor`) with the repair the reconciler makes, scoped to this host's networks and ports.
 */
import type { Drift } from './drift.js';
import { REPAIR } from './drift.js';
import { short } from './names.js';
import { canonicalJson } from './options.js';
import { type AddressRecord, type EndpointRecord, type NetworkRecord, type OvnNetworkRecord, type PoolRecord, isOvnNetwork } from './records.js';
import { type Chassis, NB, type NbPort, type NbSwitch, ROUTER, boundAddresses, guardAcls, holderOf, portName, primaryAddress, sameGuard, switchHosts } from './ovn.js';
import { type NbRouter, type OvnExternal, attachmentGaps, describeGaps, hasGaps, outsideAddress, routerAttachment } from './ovn-router.js';

export type NbRepair =
  /** Make the network's switch (or take the one there) and list this host on it. */
  | { readonly type: 'ensure-switch'; readonly networkId: string }
  /** Hold an address again that this host holds but the database lost. */
  | { readonly type: 'claim'; readonly networkId: string; readonly address: string }
  /** Give an endpoint's port its addresses and port security. */
  | { readonly type: 'bind'; readonly networkId: string; readonly endpointId: string }
  /** `asRead`: the port's external_ids the decision was made on (it is deleted only while they are so). */
  | { readonly type: 'delete-port'; readonly switchUuid: string; readonly name: string; readonly asRead: Readonly<Record<string, string>> }
  /** Take this host off a switch it has no network of (and remove the switch if it was the last). */
  | { readonly type: 'leave-switch'; readonly switchUuid: string };

export interface NbDifference {
  readonly drift: Drift;
  readonly repair: NbRepair | undefined;
}

export interface NbView {
  readonly switches: readonly NbSwitch[];
  /** Ports of the plugin's switches, by switch uuid. */
  readonly ports: ReadonlyMap<string, readonly NbPort[]>;
  /** The plugin's routers. */
  readonly routers: readonly NbRouter[];
}

export interface NbRecords {
  readonly networks: readonly NetworkRecord[];
  readonly endpoints: readonly EndpointRecord[];
  readonly pools: readonly PoolRecord[];
  readonly addresses: readonly AddressRecord[];
}

/**
 * Every difference between this host's records and the northbound database: switches and this
 * host's listing on them, the addresses it holds, its endpoints' ports, and ports it made that
 * nothing here holds any more (once older than the grace period: a call may be in flight).
 */
export function diffNorthbound(
  records: NbRecords,
  view: NbView,
  chassis: Chassis,
  options: { now: number; graceMs: number; external?: OvnExternal | undefined },
): NbDifference[] {
  const { external } = options;
  const out: NbDifference[] = [];
  const noWayOut = new Set<string>();
  const bySubnet = new Map(view.switches.map((s) => [s.externalIds[NB.subnet] ?? '', s]));
  const mine = (p: NbPort) => p.externalIds[NB.chassis] === chassis.name;
  const networks = records.networks.filter((n): n is OvnNetworkRecord => isOvnNetwork(n) && n.state === 'ready');
  const served = new Set<string>();

  for (const network of networks) {
    const { ovn } = network;
    const sw = bySubnet.get(ovn.subnet);
    const net = short(network.id);
    if (!sw) {
      out.push({
        drift: { kind: 'ovn-switch-missing', subject: ovn.switchName, networkId: network.id, detail: `the OVN logical switch ${ovn.switchName} of network ${net} (subnet ${ovn.subnet}) is not in the northbound database`, fix: REPAIR },
        repair: { type: 'ensure-switch', networkId: network.id },
      });
      continue;
    }
    served.add(sw.uuid);
    const routerName = network.spec.ovnRouter;
    if (routerName) {
      const router = view.routers.find((r) => r.externalIds[ROUTER.name] === routerName);
      if (router && external && !outsideAddress(router, routerName) && !noWayOut.has(routerName)) {
        noWayOut.add(routerName);
        out.push({
          drift: { kind: 'ovn-router-differs', subject: routerName, networkId: network.id, detail: `OVN router ${routerName} has no way out: its gateway port to ${external.physnet} is missing`, fix: REPAIR },
          repair: { type: 'ensure-switch', networkId: network.id },
        });
      }
      const attachment = routerAttachment({ spec: network.spec, ovn, ipv4: network.ipv4, ipv6: network.ipv6 }, router && outsideAddress(router, routerName));
      const gaps = router && attachmentGaps(router, (view.ports.get(sw.uuid) ?? []).some((p) => p.name === attachment.lsp), attachment);
      if (!router || gaps!.lrp) {
        out.push({
          drift: { kind: 'ovn-router-missing', subject: routerName, networkId: network.id, detail: `network ${net} is not connected to its OVN router ${routerName}${router ? '' : ' (the router is missing)'}`, fix: REPAIR },
          repair: { type: 'ensure-switch', networkId: network.id },
        });
      } else if (hasGaps(gaps!)) {
        out.push({
          drift: { kind: 'ovn-router-differs', subject: routerName, networkId: network.id, detail: `the connection of network ${net} to its OVN router ${routerName} lacks ${describeGaps(gaps!)}`, fix: REPAIR },
          repair: { type: 'ensure-switch', networkId: network.id },
        });
      }
    }
    const guard = guardAcls(ovn, network.spec);
    if (sw.guard && !sameGuard(sw, guard)) {
      out.push({
        drift: {
          kind: 'ovn-guard-differs',
          subject: sw.name,
          networkId: network.id,
          detail: `the OVN logical switch ${sw.name} has ${sw.guard.length} of the plugin's guard ACLs where ${guard.length} belong (no router advertisements, redirects or DHCP server messages from containers${guard.length < 2 ? ', but what the network allows' : ''})`,
          fix: REPAIR,
        },
        repair: { type: 'ensure-switch', networkId: network.id },
      });
    }
    if (!switchHosts(sw).has(chassis.name)) {
      out.push({
        drift: { kind: 'ovn-host-not-listed', subject: sw.name, networkId: network.id, detail: `this host (${chassis.name}) is not listed on the OVN logical switch ${sw.name}, so another host could remove it`, fix: REPAIR },
        repair: { type: 'ensure-switch', networkId: network.id },
      });
    }
    const ports = new Map((view.ports.get(sw.uuid) ?? []).map((p) => [p.name, p]));
    const pools = new Set(records.pools.filter((p) => [...network.ipv4, ...network.ipv6].some((s) => s.pool === p.pool && s.addressSpace === p.addressSpace)).map((p) => p.id));
    const gateways = new Set([...network.ipv4, ...network.ipv6].map((s) => s.gateway));
    const aux = new Set([...network.ipv4, ...network.ipv6].flatMap((s) => Object.values(s.auxAddresses)));
    const held = records.addresses.filter((a) => pools.has(a.poolId) && a.kind === 'address' && !aux.has(a.address) && !gateways.has(a.address));
    const heldNames = new Set<string>();
    for (const a of held) {
      const name = portName(ovn, a.address);
      heldNames.add(name);
      const port = ports.get(name);
      if (!port) {
        out.push({
          drift: { kind: 'ovn-port-missing', subject: name, networkId: network.id, address: a.address, detail: `address ${a.address} is held here, but the northbound database has no logical port ${name} for it`, fix: REPAIR },
          repair: { type: 'claim', networkId: network.id, address: a.address },
        });
      } else if (!mine(port)) {
        out.push({
          drift: { kind: 'ovn-address-conflict', subject: name, networkId: network.id, address: a.address, detail: `address ${a.address} is held here and by ${holderOf(port)}`, fix: `docker restart <the container with ${a.address} on this host>` },
          repair: undefined,
        });
      }
    }
    for (const endpoint of records.endpoints.filter((e) => e.networkId === network.id)) {
      const name = portName(ovn, primaryAddress(endpoint));
      const port = ports.get(name);
      if (!port || !mine(port)) continue; // reported above
      const want = boundAddresses(endpoint);
      if (canonicalJson([port.addresses, port.portSecurity]) !== canonicalJson([want, want])) {
        out.push({
          drift: {
            kind: 'ovn-port-differs',
            subject: name,
            networkId: network.id,
            endpointId: endpoint.id,
            detail: `logical port ${name} of endpoint ${short(endpoint.id)} has addresses [${port.addresses.join(', ')}] and port security [${port.portSecurity.join(', ')}] where [${want.join(', ')}] belong`,
            fix: `ovn-nbctl lsp-set-addresses ${name} "${want[0]}" -- lsp-set-port-security ${name} "${want[0]}"`,
          },
          repair: { type: 'bind', networkId: network.id, endpointId: endpoint.id },
        });
      }
    }
    for (const port of ports.values()) {
      if (!mine(port) || heldNames.has(port.name)) continue;
      const made = Date.parse(port.externalIds[NB.createdAt] ?? '');
      if (Number.isFinite(made) && options.now - made < options.graceMs) continue;
      out.push({
        drift: { kind: 'ovn-port-orphan', subject: port.name, networkId: network.id, address: port.externalIds[NB.address], detail: `logical port ${port.name} was made by this host, which holds its address no more`, fix: `ovn-nbctl lsp-del ${port.name}` },
        repair: { type: 'delete-port', switchUuid: sw.uuid, name: port.name, asRead: port.externalIds },
      });
    }
  }

  for (const sw of view.switches) {
    if (served.has(sw.uuid) || !sw.externalIds[NB.subnet]) continue;
    const listed = switchHosts(sw).has(chassis.name);
    const leftovers = (view.ports.get(sw.uuid) ?? []).filter(mine);
    if (!listed && leftovers.length === 0) continue;
    out.push({
      drift: {
        kind: 'ovn-switch-unused-here',
        subject: sw.name,
        detail: `this host ${listed ? 'is listed on' : 'has ports on'} the OVN logical switch ${sw.name} (subnet ${sw.externalIds[NB.subnet]}), but has no network of it`,
        fix: REPAIR,
      },
      repair: { type: 'leave-switch', switchUuid: sw.uuid },
    });
  }
  return out;
}

/**
 * Joined endpoints whose port ovn-controller has not installed (their container is cut off), but for those
 * whose logical port is missing (`lost`: that is the cause, reported as such).
 */
export function notInstalled(records: Pick<NbRecords, 'networks' | 'endpoints'>, ports: ReadonlyMap<string, { readonly interfaceExternalIds: Readonly<Record<string, string>> }>, lost: ReadonlySet<string>): Drift[] {
  const out: Drift[] = [];
  for (const endpoint of records.endpoints) {
    const network = records.networks.find((n) => n.id === endpoint.networkId);
    const port = ports.get(endpoint.hostIf);
    if (!network?.ovn || !port || !endpoint.joined || port.interfaceExternalIds['ovn-installed'] === 'true') continue;
    if (lost.has(portName(network.ovn, primaryAddress(endpoint)))) continue;
    out.push({
      kind: 'ovn-port-not-installed',
      subject: endpoint.hostIf,
      endpointId: endpoint.id,
      networkId: network.id,
      port: endpoint.hostIf,
      detail: `ovn-controller has not installed the port ${endpoint.hostIf} of endpoint ${endpoint.id.slice(0, 12)} (logical port ${port.interfaceExternalIds['iface-id']}): its container is cut off`,
      fix: 'check ovn-controller on this host (ovn-appctl -t ovn-controller connection-status; its log)',
    });
  }
  return out;
}
