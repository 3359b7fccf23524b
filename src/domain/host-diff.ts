/**
 * The one comparison of the desired host with the observed one. Each
 * difference says, for a person, what is wrong and the command that fixes it
 * (what `ovsnet doctor` prints), and, as data, the repairs that put it right
 * (what realising a network and the reconciler apply). Ports are compared by
 * everything the plugin sets: bridge, type, tag, trunks, options, protection,
 * MTU and external_ids, not only by name.
 */
import { type Drift, type DockerNetwork, type Records, REPAIR, dockerDrift } from './drift.js';
import { type FirewallRules } from './firewall.js';
import { BRIDGE_FLOWS_KEY, type PortFlows, baseFlows, cookiePortBits, cookiePrefixOfBits, portBits, portFlows } from './flows.js';
import type { BridgeSpec, DesiredHost, DesiredPort, GatewaySpec, ObservedBridge, ObservedHost, ObservedPort } from './host.js';
import { ENDPOINT_KEY, NETWORK_KEY, OWNER_KEY, OWNER_VALUE, ROLE_KEY, VETH_GROUP, isHostVethName, isPeerVethName, short } from './names.js';
import type { NetworkRecord } from './records.js';

export type Repair =
  | { readonly type: 'add-bridge'; readonly bridge: BridgeSpec }
  /** Adds the port, replacing an owned one of that name. */
  | { readonly type: 'add-port'; readonly port: DesiredPort }
  /** Sets the port's tag, trunks, protection, options, MTU and external_ids in place. */
  | { readonly type: 'update-port'; readonly port: DesiredPort }
  | { readonly type: 'delete-port'; readonly name: string; readonly deleteLink: boolean }
  | { readonly type: 'configure-gateway'; readonly gateway: GatewaySpec }
  | { readonly type: 'delete-veth'; readonly name: string }
  /** Puts the host end of a veth pair in the plugin's device group (the firewall drops what it brings the host). */
  | { readonly type: 'isolate-veth'; readonly name: string }
  /** Puts a port's guard flows (and meter) in place, then deletes its `stale` flows (cookie/mask each). */
  | { readonly type: 'sync-flows'; readonly flows: PortFlows; readonly stale: readonly string[] }
  /** Deletes flows of a bridge by cookie/mask. */
  | { readonly type: 'delete-flows'; readonly bridge: string; readonly cookies: readonly string[] }
  | { readonly type: 'delete-bridge'; readonly name: string }
  /** Puts a bridge's base flow (its normal forwarding, or OVN's marker) in place: after the guards of its container ports. */
  | { readonly type: 'sync-base-flows'; readonly bridge: string; readonly pipeline: 'normal' | 'ovn' }
  /** Makes a bridge of the plugin's fail closed (fail_mode secure), once its base flow is there. */
  | { readonly type: 'secure-bridge'; readonly name: string }
  | { readonly type: 'sync-firewall'; readonly rules: FirewallRules }
  | { readonly type: 'enable-forwarding' };

export interface HostDifference {
  readonly drift: Drift;
  /** What puts it right; empty when it can only be reported. */
  readonly repairs: readonly Repair[];
  /** Set for what belongs to an endpoint: its repair goes through the endpoint's lock. */
  readonly endpointId?: string;
}

/** What a diff is limited to: these networks, and what they share with others (bridges, uplinks, firewall, forwarding). */
export interface DiffScope {
  readonly networks: ReadonlySet<string>;
  readonly bridges: ReadonlySet<string>;
}

export function scopeOf(networks: readonly NetworkRecord[]): DiffScope {
  return { networks: new Set(networks.map((n) => n.id)), bridges: new Set(networks.map((n) => n.spec.bridge)) };
}

export interface DiffOptions {
  /** Every record, whatever was passed to desiredHost: ports of a network being created are never debris. */
  readonly records: Pick<Records, 'networks' | 'endpoints'>;
  /** Undefined: the whole host. */
  readonly scope?: DiffScope;
  /** Docker's networks, when Docker was asked: a port of a network the records lack is debris only if Docker lacks it too. */
  readonly docker?: readonly DockerNetwork[];
  readonly now: number;
  readonly graceMs: number;
  /**
   * Device names the plugin holds now: veth pairs made ahead of need (their host ends parked on bridges),
   * and the devices of deleted endpoints on their way out (their port, its flows, the pair). No endpoint's,
   * and no debris. A diff of the whole host removes the parked ports and pairs of any other name (a process
   * that died left them); a scoped diff leaves every parked port to the pool.
   */
  readonly held?: ReadonlySet<string>;
}

/** The ordering in which repairs are applied: bridges first, ports before their kernel settings, bridges last out. */
export const REPAIR_ORDER: readonly Repair['type'][] = [
  'add-bridge',
  'delete-port',
  'add-port',
  'update-port',
  'sync-flows',
  'delete-flows',
  'configure-gateway',
  'isolate-veth',
  'delete-veth',
  'sync-firewall',
  'enable-forwarding',
  'sync-base-flows',
  'secure-bridge',
  'delete-bridge',
];

/**
 * Repairs that let a bridge forward: applied after every other repair of a pass, the guards of its
 * container ports included, so that no port forwards unguarded in between.
 */
export const LAST_REPAIRS: ReadonlySet<Repair['type']> = new Set(['sync-base-flows', 'secure-bridge']);

export function diffHost(desired: DesiredHost, observed: ObservedHost, options: DiffOptions): HostDifference[] {
  const out: HostDifference[] = [];
  const { scope } = options;
  const networks = new Map(options.records.networks.map((n) => [n.id, n]));
  const endpoints = new Map(options.records.endpoints.map((e) => [e.id, e]));
  const inScope = (networkId: string | undefined, bridge: string) =>
    !scope || (networkId !== undefined ? scope.networks.has(networkId) : scope.bridges.has(bridge));
  const old = (createdAt: string) => options.now - Date.parse(createdAt) >= options.graceMs;

  for (const bridge of desired.bridges.values()) {
    if (scope && !scope.bridges.has(bridge.name)) continue;
    const have = observed.bridges.get(bridge.name);
    if (have) {
      out.push(...failModeDifferences(bridge, have));
      continue;
    }
    const byController = bridge.madeBy === 'ovn-controller';
    out.push({
      drift: {
        kind: 'bridge-missing',
        subject: bridge.name,
        detail: byController ? `OVN's integration bridge ${bridge.name} is missing: ovn-controller makes it when it runs` : `bridge ${bridge.name} is missing`,
        fix: byController ? 'start ovn-controller (systemctl start ovn-controller, or ovn-ctl start_controller)' : REPAIR,
      },
      repairs: byController ? [] : [{ type: 'add-bridge', bridge }, { type: 'sync-base-flows', bridge: bridge.name, pipeline: 'normal' }],
    });
  }

  for (const want of desired.ports.values()) {
    if (!inScope(want.networkId, want.bridge)) continue;
    const have = observed.ports.get(want.name);
    if (have) {
      const changes = portDifferences(want, have);
      if (changes.length > 0) out.push(portDiffers(want, changes));
      continue;
    }
    const net = want.networkId ? short(want.networkId) : '';
    const base = { subject: want.name, port: want.name, networkId: want.networkId };
    switch (want.role) {
      case 'endpoint': {
        const endpoint = endpoints.get(want.endpointId!)!;
        if (observed.links.has(want.name)) {
          out.push({
            drift: { kind: 'endpoint-port-missing', ...base, endpointId: endpoint.id, detail: `endpoint ${short(endpoint.id)} has its veth ${want.name} but no OVS port`, fix: addPortCommand(want) },
            repairs: [{ type: 'add-port', port: want }],
            endpointId: endpoint.id,
          });
        } else if (endpoint.joined && old(endpoint.createdAt)) {
          out.push({
            drift: {
              kind: 'endpoint-veth-missing',
              subject: want.name,
              endpointId: endpoint.id,
              networkId: endpoint.networkId,
              detail: `endpoint ${short(endpoint.id)} lost its veth ${want.name}: its container has no interface on network ${net}`,
              fix: `docker restart <the container of endpoint ${short(endpoint.id)}>`,
            },
            repairs: [],
          });
        }
        break;
      }
      case 'gateway': {
        const gateway = desired.gateways.get(want.name)!;
        out.push({
          drift: { kind: 'gateway-port-missing', ...base, detail: `gateway port ${want.name} of network ${net} is missing`, fix: REPAIR },
          repairs: [{ type: 'add-port', port: want }, { type: 'configure-gateway', gateway }],
        });
        break;
      }
      case 'tunnel':
        out.push({
          drift: { kind: 'tunnel-port-missing', ...base, detail: `tunnel port ${want.name} of network ${net} to peer ${want.options.remote_ip} is missing`, fix: REPAIR },
          repairs: [{ type: 'add-port', port: want }],
        });
        break;
      case 'uplink':
        out.push({
          drift: { kind: 'uplink-missing', subject: want.name, port: want.name, detail: `uplink ${want.name} of bridge ${want.bridge} is not attached`, fix: REPAIR },
          repairs: [{ type: 'add-port', port: want }],
        });
        break;
    }
  }

  for (const gateway of desired.gateways.values()) {
    if (!inScope(gateway.networkId, '') || !observed.ports.has(gateway.port)) continue;
    out.push(...gatewayDifferences(gateway, observed));
  }

  const deleted = new Set<string>();
  for (const have of observed.ports.values()) {
    if (have.error) {
      if (inScope(have.externalIds[NETWORK_KEY], have.bridge)) {
        out.push({ drift: { kind: 'port-error', subject: have.name, port: have.name, detail: `OVS reports an error on port ${have.name}: ${have.error}`, fix: REPAIR }, repairs: [] });
      }
    }
    if (desired.ports.has(have.name)) continue;
    const role = have.externalIds[ROLE_KEY];
    if ((role === 'spare' && scope) || options.held?.has(have.name)) continue;
    const networkId = have.externalIds[NETWORK_KEY];
    if (!inScope(networkId, have.bridge)) continue;
    const network = networkId ? networks.get(networkId) : undefined;
    // A scoped diff is made under the network lock by the one realising or removing those
    // networks: what they do not call for is debris. A whole-host diff leaves alone ports of
    // networks being made right now, and asks Docker about networks the records lack.
    if (!scope && network?.state === 'creating') continue;
    if (!scope && networkId && !network) {
      // A port of a network the records lack is debris only if Docker lacks it too. If Docker
      // has it, the plugin's records are what is missing (a wrong state directory or mount):
      // removing the port would cut the network's containers off.
      if (!options.docker) continue;
      const known = options.docker.find((n) => n.id === networkId);
      if (known) {
        out.push({
          drift: {
            kind: 'network-unknown-to-plugin',
            subject: have.name,
            networkId,
            port: have.name,
            role,
            detail: `OVS port ${have.name} belongs to Docker network ${known.name} (${short(networkId)}), which the plugin's records lack: its state directory is not the one it used`,
            fix: 'point OVSNET_STATE_DIR (managed plugin: docker plugin set ovs state.source=<dir>) at the state the network was made with, and restart the plugin',
          },
          repairs: [],
        });
        continue;
      }
    }
    const why =
      role === 'endpoint'
        ? endpoints.has(have.externalIds[ENDPOINT_KEY] ?? '') ? 'its network is unknown' : 'its endpoint is unknown'
        : role === 'gateway' ? 'its network is unknown'
        : role === 'tunnel' ? 'its network or peer is unknown'
        : role === 'uplink' ? 'no network uses it'
        : role === 'spare' ? 'it was made ahead of need by a plugin process that is gone'
        : 'it has no role';
    deleted.add(have.name);
    out.push({
      drift: {
        kind: 'orphan-port',
        subject: have.name,
        port: have.name,
        role,
        detail: `OVS port ${have.name} (${role ?? 'no role'}) belongs to nothing: ${why}`,
        fix: `ovs-vsctl --if-exists del-port ${have.name}${role === 'endpoint' || role === 'spare' ? ` && ip link del ${have.name}` : ''}`,
      },
      repairs: [{ type: 'delete-port', name: have.name, deleteLink: role === 'endpoint' || role === 'spare' }],
    });
  }

  for (const bridge of observed.bridges.values()) {
    if (desired.bridges.has(bridge.name) || bridge.externalIds[OWNER_KEY] !== OWNER_VALUE) continue;
    if (scope && !scope.bridges.has(bridge.name)) continue;
    if (!bridge.ports.every((p) => p === bridge.name || deleted.has(p))) continue;
    out.push({
      drift: { kind: 'orphan-bridge', subject: bridge.name, detail: `bridge ${bridge.name} was made by the plugin and no network uses it`, fix: `ovs-vsctl --if-exists del-br ${bridge.name}` },
      repairs: [{ type: 'delete-bridge', name: bridge.name }],
    });
  }

  // Host ends of veth pairs made before they were put in the plugin's device group.
  for (const want of desired.ports.values()) {
    if (want.role !== 'endpoint' || !inScope(want.networkId, want.bridge)) continue;
    const link = observed.links.get(want.name);
    if (!link || link.group === undefined || link.group === VETH_GROUP) continue;
    out.push({
      drift: {
        kind: 'veth-open-to-host',
        subject: want.name,
        port: want.name,
        endpointId: want.endpointId,
        networkId: want.networkId,
        detail: `the host end ${want.name} of endpoint ${short(want.endpointId ?? '')}'s veth is not in the plugin's device group: on the userspace datapath the host's own stack takes what its container sends`,
        fix: `ip link set dev ${want.name} group ${VETH_GROUP} addrgenmode none arp off && ip address flush dev ${want.name} scope link`,
      },
      repairs: [{ type: 'isolate-veth', name: want.name }],
      endpointId: want.endpointId,
    });
  }

  if (!scope) {
    for (const [name, link] of observed.links) {
      // A veth that is an owned OVS port is judged by its port (above), which knows its network.
      if (link.kind !== 'veth' || !(isHostVethName(name) || isPeerVethName(name)) || desired.devices.has(name) || observed.ports.has(name)) continue;
      if (options.held?.has(name)) continue;
      out.push({ drift: { kind: 'orphan-veth', subject: name, port: name, detail: `veth ${name} belongs to no endpoint`, fix: `ip link del ${name}` }, repairs: [{ type: 'delete-veth', name }] });
    }
  }

  if (!scope) out.push(...flowDifferences(desired, observed, options.held));
  out.push(...firewallDifferences(desired.firewall, observed));
  if (desired.ipv4Forwarding && observed.ipv4Forwarding === false) {
    out.push({
      drift: { kind: 'ip-forward-off', subject: 'net.ipv4.ip_forward', detail: 'IPv4 forwarding is off, so nat and routed networks cannot reach beyond the host', fix: 'sysctl -w net.ipv4.ip_forward=1' },
      repairs: [{ type: 'enable-forwarding' }],
    });
  }
  return out;
}

/** Every difference between the records and the host, and (when Docker was asked) Docker. */
export function findDrift(records: Records, desired: DesiredHost, observed: ObservedHost, options: { docker?: readonly DockerNetwork[]; now: number; graceMs: number; held?: ReadonlySet<string> }): Drift[] {
  const creating = records.networks
    .filter((n) => n.state === 'creating')
    .map((n): Drift => ({ kind: 'network-creating', subject: short(n.id), networkId: n.id, detail: `network ${short(n.id)} was being created when the plugin stopped`, fix: REPAIR }));
  const host = diffHost(desired, observed, { records, docker: options.docker, now: options.now, graceMs: options.graceMs, held: options.held }).map((d) => d.drift);
  return [...creating, ...host, ...(options.docker ? dockerDrift(records, options.docker, options) : [])];
}

// ---- ports ----

const sameList = (a: readonly number[], b: readonly number[]) => JSON.stringify([...a].sort((x, y) => x - y)) === JSON.stringify([...b].sort((x, y) => x - y));

/** What differs, as `ovs-vsctl` arguments that set it right (one per difference); structural differences need the port made again. */
export function portDifferences(want: DesiredPort, have: ObservedPort): Array<{ what: string; set: string | undefined }> {
  const out: Array<{ what: string; set: string | undefined }> = [];
  const name = want.name;
  if (have.bridge !== want.bridge) out.push({ what: `it is on bridge ${have.bridge || '(none)'}, not ${want.bridge}`, set: undefined });
  if (have.type !== want.type) out.push({ what: `its type is "${have.type}", not "${want.type}"`, set: undefined });
  if (have.tag !== want.tag) {
    out.push({
      what: `tag ${have.tag ?? '(none)'} where ${want.tag ?? '(none)'} belongs`,
      set: want.tag === undefined ? `clear port ${name} tag` : `set port ${name} tag=${want.tag}`,
    });
  }
  if (!sameList(have.trunks, want.trunks)) {
    out.push({
      what: `trunks ${have.trunks.join(',') || '(none)'} where ${want.trunks.join(',') || '(none)'} belong`,
      set: want.trunks.length === 0 ? `clear port ${name} trunks` : `set port ${name} trunks=${want.trunks.join(',')}`,
    });
  }
  if (have.vlanMode !== want.vlanMode && want.vlanMode !== undefined) {
    const trunkOfAll = have.tag === undefined && have.trunks.length === 0 && have.vlanMode !== 'access';
    out.push({
      what: `vlan_mode ${have.vlanMode ?? '(none)'} where ${want.vlanMode} belongs${trunkOfAll && want.vlanMode === 'access' ? ': without a tag it is a trunk of every VLAN on the bridge' : ''}`,
      set: `set port ${name} vlan_mode=${want.vlanMode}`,
    });
  }
  if (have.protected !== want.protected) out.push({ what: `protected=${have.protected} where ${want.protected} belongs`, set: `set port ${name} protected=${want.protected}` });
  for (const key of new Set([...Object.keys(want.options), ...Object.keys(have.options)])) {
    const w = want.options[key];
    const h = have.options[key];
    if (w === h) continue;
    out.push({
      what: `option ${key}=${h ?? '(none)'} where ${w ?? '(none)'} belongs`,
      set: w === undefined ? `remove interface ${name} options ${key}` : `set interface ${name} options:${key}=${w}`,
    });
  }
  if (want.mtuRequest !== undefined && have.mtuRequest !== want.mtuRequest) {
    out.push({ what: `mtu_request ${have.mtuRequest ?? '(none)'} where ${want.mtuRequest} belongs`, set: `set interface ${name} mtu_request=${want.mtuRequest}` });
  }
  for (const [key, value] of Object.entries(want.externalIds)) {
    if (have.externalIds[key] !== value) out.push({ what: `external_ids:${key}=${have.externalIds[key] ?? '(none)'} where ${value} belongs`, set: `set port ${name} external_ids:${key}=${value}` });
  }
  for (const [key, value] of Object.entries(want.interfaceExternalIds)) {
    if (have.interfaceExternalIds[key] !== value) {
      out.push({ what: `interface external_ids:${key}=${have.interfaceExternalIds[key] ?? '(none)'} where ${value} belongs`, set: `set interface ${name} external_ids:${key}=${value}` });
    }
  }
  return out;
}

function portDiffers(want: DesiredPort, changes: ReturnType<typeof portDifferences>): HostDifference {
  const structural = changes.some((c) => c.set === undefined);
  return {
    drift: {
      kind: 'port-differs',
      subject: want.name,
      port: want.name,
      role: want.role,
      networkId: want.networkId,
      endpointId: want.endpointId,
      detail: `OVS port ${want.name} (${want.role}${want.networkId ? ` of network ${short(want.networkId)}` : ''}) differs: ${changes.map((c) => c.what).join('; ')}`,
      fix: structural ? REPAIR : `ovs-vsctl ${changes.map((c) => c.set).join(' -- ')}`,
    },
    repairs: [{ type: structural ? 'add-port' : 'update-port', port: want }],
    endpointId: want.endpointId,
  };
}

/** `ovs-vsctl` arguments that make the port from nothing. */
export function addPortCommand(port: DesiredPort): string {
  const sets = [
    port.tag === undefined ? '' : ` tag=${port.tag}`,
    port.vlanMode === undefined ? '' : ` vlan_mode=${port.vlanMode}`,
    port.trunks.length ? ` trunks=${port.trunks.join(',')}` : '',
    port.protected ? ' protected=true' : '',
  ].join('');
  const iface = [
    port.type ? ` type=${port.type}` : '',
    ...Object.entries(port.options).map(([k, v]) => ` options:${k}=${v}`),
    port.mtuRequest === undefined ? '' : ` mtu_request=${port.mtuRequest}`,
    ...Object.entries(port.interfaceExternalIds).map(([k, v]) => ` external_ids:${k}=${v}`),
  ].join('');
  return (
    `ovs-vsctl add-port ${port.bridge} ${port.name}${sets}` +
    (iface ? ` -- set interface ${port.name}${iface}` : '') +
    ` -- set port ${port.name} ${Object.entries(port.externalIds).map(([k, v]) => `external_ids:${k}=${v}`).join(' ')}`
  );
}

// ---- the guard flows of container ports ----

/**
 * Each container port's guard flows as its ofport calls for them, compared by
 * cookie (which digests the whole flow), and its meter; the plugin's flows of
 * no port that should have them are debris. Only bridges whose flows were read
 * are compared, and only ports that ovs-vswitchd numbered.
 */
export function flowDifferences(desired: DesiredHost, observed: ObservedHost, held: ReadonlySet<string> = new Set()): HostDifference[] {
  if (!observed.flows) return [];
  const out: HostDifference[] = [];
  // The flows of a deleted endpoint's port on its way out go with it.
  const going = new Set([...held].map(portBits));
  for (const [bridge, have] of observed.flows) {
    const byPort = new Map<bigint, string[]>();
    for (const cookie of have.cookies) {
      const bits = cookiePortBits(cookie);
      byPort.set(bits, [...(byPort.get(bits) ?? []), cookie]);
    }
    const accounted = new Set<bigint>();
    const bridgeSpec = desired.bridges.get(bridge);
    const guarded = [...desired.ports.values()].some((p) => p.bridge === bridge && p.guard);
    if (bridgeSpec && (bridgeSpec.madeBy === 'plugin' || guarded)) {
      const bits = portBits(BRIDGE_FLOWS_KEY);
      accounted.add(bits);
      const wanted = baseFlows(bridge, bridgeSpec.madeBy === 'plugin' ? 'normal' : 'ovn').flows.map((f) => f.cookie);
      const cookies = byPort.get(bits) ?? [];
      if (countMissing(wanted, cookies).length > 0 || countMissing(cookies, wanted).length > 0) {
        out.push({
          drift: {
            kind: 'bridge-flows-differ',
            subject: bridge,
            detail:
              bridgeSpec.madeBy === 'plugin'
                ? `bridge ${bridge} lacks the plugin's base flow (its normal forwarding, below the guards)${bridgeSpec.failMode === 'secure' ? ': failing closed, it forwards nothing' : ''}`
                : `bridge ${bridge} lacks the plugin's marker flow: ovn-controller cleared the bridge, the guards of its containers' ports with it`,
            fix: REPAIR,
          },
          repairs: [{ type: 'sync-base-flows', bridge, pipeline: bridgeSpec.madeBy === 'plugin' ? 'normal' : 'ovn' }],
        });
      }
    }
    for (const want of desired.ports.values()) {
      if (want.role !== 'endpoint' || want.bridge !== bridge) continue;
      const port = observed.ports.get(want.name);
      const bits = portBits(want.name);
      accounted.add(bits);
      // A missing port, or one on another bridge, is the port comparison's: its flows follow it.
      if (!port || port.bridge !== bridge || !port.ofport || port.ofport < 0) continue;
      const cookies = byPort.get(bits) ?? [];
      const flows = want.guard ? portFlows(bridge, want.name, port.ofport, want.guard) : undefined;
      const wanted = flows?.flows.map((f) => f.cookie) ?? [];
      const missing = countMissing(wanted, cookies);
      const stale = countMissing(cookies, wanted);
      const meter = flows?.meter;
      const haveMeter = meter ? have.meters.get(meter.id) : undefined;
      const meterWrong = !!meter && (haveMeter?.kbps !== meter.kbps || haveMeter.burstKbit !== meter.burstKbit);
      if (missing.length === 0 && stale.length === 0 && !meterWrong) continue;
      const what = [
        missing.length ? `${missing.length} of its ${wanted.length} guard flows missing` : '',
        stale.length ? `${stale.length} flows of the plugin that do not belong` : '',
        meterWrong ? `meter ${meter.id} ${haveMeter ? `at ${haveMeter.kbps} kbit/s, burst ${haveMeter.burstKbit} kbit` : 'missing'} where ${meter.kbps} kbit/s, burst ${meter.burstKbit} kbit belongs` : '',
      ].filter(Boolean);
      out.push({
        drift: {
          kind: 'port-flows-differ',
          subject: want.name,
          port: want.name,
          role: 'endpoint',
          networkId: want.networkId,
          endpointId: want.endpointId,
          detail: `container port ${want.name} (endpoint ${short(want.endpointId ?? '')}) ${want.guard ? 'is not guarded as it should be' : 'carries guard flows it should not'}: ${what.join('; ')}`,
          fix: REPAIR,
        },
        repairs: flows
          ? [{ type: 'sync-flows', flows, stale: [...new Set(stale)].map((c) => `${c}/-1`) }]
          : [{ type: 'delete-flows', bridge, cookies: [cookiePrefixOfBits(bits)] }],
        endpointId: want.endpointId,
      });
    }
    for (const [bits, cookies] of byPort) {
      if (accounted.has(bits) || going.has(bits)) continue;
      out.push({
        drift: {
          kind: 'orphan-flows',
          subject: `${bridge}:${cookiePrefixOfBits(bits)}`,
          detail: `bridge ${bridge} has ${cookies.length} guard flows of the plugin for a port that no container has`,
          fix: `ovs-ofctl -O OpenFlow13 del-flows ${bridge} cookie=${cookiePrefixOfBits(bits)}`,
        },
        repairs: [{ type: 'delete-flows', bridge, cookies: [cookiePrefixOfBits(bits)] }],
      });
    }
  }
  return out;
}

/** What of `want` (a multiset) `have` lacks. */
function countMissing(want: readonly string[], have: readonly string[]): string[] {
  const left = new Map<string, number>();
  for (const h of have) left.set(h, (left.get(h) ?? 0) + 1);
  const out: string[] = [];
  for (const w of want) {
    const n = left.get(w) ?? 0;
    if (n > 0) left.set(w, n - 1);
    else out.push(w);
  }
  return out;
}

// ---- bridges ----

/**
 * A bridge that holds containers fails open unless it is secure: ovs-vswitchd, started without the
 * plugin's flows (a restart, an upgrade, a reboot), would forward its containers' traffic unguarded until
 * the plugin put them back. The plugin's own bridges are made secure; another's is only reported.
 */
function failModeDifferences(want: BridgeSpec, have: ObservedBridge): HostDifference[] {
  if (want.madeBy !== 'plugin' || have.failMode === 'secure') return [];
  const owned = have.externalIds[OWNER_KEY] === OWNER_VALUE;
  return [
    {
      drift: {
        kind: 'bridge-fails-open',
        subject: want.name,
        detail: owned
          ? `bridge ${want.name} has fail_mode ${have.failMode || 'standalone'}: after an ovs-vswitchd restart its container ports would forward unguarded until the plugin put their guards back`
          : `bridge ${want.name} is not the plugin's and has fail_mode ${have.failMode || 'standalone'}: after an ovs-vswitchd restart its container ports forward unguarded until the plugin puts their guards back`,
        fix: owned ? REPAIR : `ovs-vsctl set bridge ${want.name} fail_mode=secure   (the plugin keeps its base flow, priority 1 NORMAL, on it)`,
      },
      repairs: owned ? [{ type: 'sync-base-flows', bridge: want.name, pipeline: 'normal' }, { type: 'secure-bridge', name: want.name }] : [],
    },
  ];
}

// ---- gateway ports in the kernel ----

function gatewayDifferences(gateway: GatewaySpec, observed: ObservedHost): HostDifference[] {
  const out: HostDifference[] = [];
  const { port } = gateway;
  const repairs: Repair[] = [{ type: 'configure-gateway', gateway }];
  const base = { subject: port, port, networkId: gateway.networkId };
  const have = observed.addresses.get(port) ?? [];
  for (const address of gateway.addresses) {
    if (have.includes(address)) continue;
    out.push({
      drift: { kind: 'gateway-address-missing', ...base, address, detail: `gateway port ${port} of network ${short(gateway.networkId)} lacks its address ${address}`, fix: `ip address add ${address} dev ${port} && ip link set ${port} up` },
      repairs,
    });
  }
  for (const address of have) {
    if (gateway.addresses.includes(address)) continue;
    out.push({
      drift: { kind: 'gateway-address-extra', ...base, address, detail: `gateway port ${port} of network ${short(gateway.networkId)} carries ${address}, which is not its gateway`, fix: `ip address del ${address} dev ${port}` },
      repairs,
    });
  }
  const advice = observed.routerAdvice?.get(port);
  if (advice && (advice.acceptRa || advice.acceptRedirects)) {
    out.push({
      drift: {
        kind: 'gateway-accepts-ra',
        ...base,
        detail: `gateway port ${port} of network ${short(gateway.networkId)} takes ${[advice.acceptRa ? 'router advertisements' : '', advice.acceptRedirects ? 'redirects' : ''].filter(Boolean).join(' and ')}: what sends them on the network could change the host's routes`,
        fix: `sysctl -w net.ipv6.conf.${port}.accept_ra=0 net.ipv6.conf.${port}.accept_redirects=0 net.ipv4.conf.${port}.accept_redirects=0`,
      },
      repairs,
    });
  }
  const link = observed.links.get(port);
  if (link && (link.mtu !== gateway.mtu || !link.up)) {
    out.push({
      drift: { kind: 'gateway-link-differs', ...base, detail: `gateway port ${port} is ${link.up ? 'up' : 'down'} with MTU ${link.mtu}, where up with MTU ${gateway.mtu} belongs`, fix: `ip link set dev ${port} mtu ${gateway.mtu} up` },
      repairs,
    });
  }
  return out;
}

// ---- the firewall ----

function firewallDifferences(rules: FirewallRules, observed: ObservedHost): HostDifference[] {
  if (!observed.firewall) return [];
  const out: HostDifference[] = [];
  const repairs: Repair[] = [{ type: 'sync-firewall', rules }];
  const wanted = [rules.v4, rules.v6].some((f) => f.filter.length + f.nat.length + f.dnat.length + f.isolate.length + f.input.length + f.raw.length > 0);
  if (observed.firewall.leftIn) {
    out.push({ drift: { kind: 'firewall-drift', subject: observed.firewall.leftIn, detail: `the plugin's chains are still filled in ${observed.firewall.leftIn}, which the host's rules left: its rules would apply twice`, fix: REPAIR }, repairs });
  }
  if (!observed.firewall.jumps && wanted) {
    out.push({ drift: { kind: 'firewall-drift', subject: 'jumps', detail: "a jump into the plugin's chains (OVSNET-FORWARD, OVSNET-POSTROUTING, OVSNET-DNAT, OVSNET-ISOLATE, OVSNET-INPUT, OVSNET-PORTS) is missing", fix: REPAIR }, repairs });
  }
  const rows = [
    { table: 'filter (IPv4)', have: observed.firewall.filter4, want: rules.v4.filter },
    { table: 'nat (IPv4)', have: observed.firewall.nat4, want: rules.v4.nat },
    { table: 'filter (IPv6)', have: observed.firewall.filter6, want: rules.v6.filter },
    { table: 'nat DNAT (IPv4)', have: observed.firewall.dnat4 ?? [], want: rules.v4.dnat },
    { table: 'nat (IPv6)', have: observed.firewall.nat6 ?? [], want: rules.v6.nat },
    { table: 'nat DNAT (IPv6)', have: observed.firewall.dnat6 ?? [], want: rules.v6.dnat },
    { table: 'mangle isolation (IPv4)', have: observed.firewall.isolate4 ?? [], want: rules.v4.isolate },
    { table: 'mangle input (IPv4)', have: observed.firewall.input4 ?? [], want: rules.v4.input },
    { table: 'mangle isolation (IPv6)', have: observed.firewall.isolate6 ?? [], want: rules.v6.isolate },
    { table: 'mangle input (IPv6)', have: observed.firewall.input6 ?? [], want: rules.v6.input },
    { table: 'raw ports (IPv4)', have: observed.firewall.raw4 ?? [], want: rules.v4.raw },
    { table: 'raw ports (IPv6)', have: observed.firewall.raw6 ?? [], want: rules.v6.raw },
  ];
  for (const { table, have, want } of rows) {
    // Compare per network (by the comment tag): iptables may print a rule's matches in another order.
    const count = (list: readonly string[]) => {
      const tags = new Map<string, number>();
      for (const r of list) {
        const tag = /ovsnet:(?:[0-9a-f]{12}|foreign|ports)/.exec(r)?.[0] ?? 'untagged';
        tags.set(tag, (tags.get(tag) ?? 0) + 1);
      }
      return tags;
    };
    const haveTags = count(have);
    const wantTags = count(want.map((r) => r.join(' ')));
    for (const tag of new Set([...haveTags.keys(), ...wantTags.keys()])) {
      const h = haveTags.get(tag) ?? 0;
      const w = wantTags.get(tag) ?? 0;
      if (h !== w) out.push({ drift: { kind: 'firewall-drift', subject: tag, detail: `the ${table} chain has ${h} rules for ${tag} where ${w} belong`, fix: REPAIR }, repairs });
    }
    // The rules against other container networks name their bridges, which come and go: compare the names.
    const bridges = (list: readonly string[]) =>
      [...new Set(list.filter((r) => r.includes('ovsnet:foreign')).flatMap((r) => [...r.matchAll(/-[io] (\S+)/g)].map((m) => m[1]!).filter((i) => !i.endsWith('+'))))].sort().join(',');
    const [haveBridges, wantBridges] = [bridges(have), bridges(want.map((r) => r.join(' ')))];
    if (haveBridges !== wantBridges && (haveTags.get('ovsnet:foreign') ?? 0) === (wantTags.get('ovsnet:foreign') ?? 0)) {
      out.push({
        drift: { kind: 'firewall-drift', subject: 'ovsnet:foreign', detail: `the ${table} chain keeps the plugin's networks apart from ${haveBridges || 'no bridge'} where ${wantBridges || 'no bridge'} are on the host`, fix: REPAIR },
        repairs,
      });
    }
  }
  return out;
}
