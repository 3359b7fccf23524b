/**
 * The one comparison of the desired host with the observed one. Each
 * difference says, for a person, what is wrong and the command that fixes it
 * (what `ovsnet doctor` prints), and, as data, the repairs that put it right
 * (what realising a network and the reconciler apply). Ports are compared by
 * everything the plugin sets: bridge, type, tag, trunks, options, protection,
 * MTU and external_ids, not only by name (port-diff.ts); bridges, gateway ports
 * and the firewall in kernel-diff.ts; the repairs themselves in repairs.ts.
 */
import { type Drift, type DockerNetwork, type Records, REPAIR, dockerDrift } from './drift.js';
import type { DesiredHost, ObservedHost } from './host.js';
import { ENDPOINT_KEY, NETWORK_KEY, OWNER_KEY, OWNER_VALUE, ROLE_KEY, VETH_GROUP, isHostVethName, isPeerVethName, short } from './names.js';
import type { NetworkRecord } from './records.js';
import { failModeDifferences, firewallDifferences, gatewayDifferences } from './kernel-diff.js';
import { addPortCommand, flowDifferences, portDifferences, portDiffers } from './port-diff.js';
import type { HostDifference } from './repairs.js';

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
