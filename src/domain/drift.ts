/**
 * Drift: every way the host and Docker differ from the plugin's records, as
 * data. One pure function decides what is wrong; `ovsnet doctor` prints the
 * result with the command that fixes each item, and the reconciler acts on
 * the same result, so the two never disagree.
 */
import { formatCidr, parseCidr } from './cidr.js';
import { firewallRules } from './firewall.js';
import { ENDPOINT_KEY, NETWORK_KEY, PEER_KEY, ROLE_KEY, isHostVethName, isPeerVethName, tunnelPortName } from './names.js';
import { isOverlay } from './options.js';
import { type AddressRecord, type EndpointRecord, type NetworkRecord, type PoolRecord, isOwnAddressSpace } from './records.js';

export type DriftKind =
  | 'network-creating'
  | 'bridge-missing'
  | 'gateway-port-missing'
  | 'gateway-address-missing'
  | 'tunnel-port-missing'
  | 'uplink-missing'
  | 'endpoint-port-missing'
  | 'endpoint-veth-missing'
  | 'port-error'
  | 'orphan-port'
  | 'orphan-veth'
  | 'firewall-drift'
  | 'ip-forward-off'
  | 'network-unknown-to-docker'
  | 'endpoint-unknown-to-docker'
  | 'pool-unused'
  | 'address-unused'
  | 'endpoint-unknown-to-plugin'
  | 'network-unknown-to-plugin'
  | 'plugin-not-running';

export interface Drift {
  kind: DriftKind;
  /** What it is about: a port, a link, a network or endpoint id, a pool, an address. */
  subject: string;
  /** One sentence for a person. */
  detail: string;
  /** A command that fixes it. */
  fix: string;
  networkId?: string;
  endpointId?: string;
  poolId?: string;
  address?: string;
  port?: string;
  role?: string;
}

export interface ObservedPort {
  name: string;
  bridge: string | undefined;
  tag: number | undefined;
  externalIds: Record<string, string>;
  error: string | undefined;
}

export interface ObservedDockerNetwork {
  id: string;
  name: string;
  subnets: string[];
  auxAddresses: string[];
  endpoints: Map<string, { addresses: string[] }>;
}

export interface Observed {
  /** Names of OVS bridges that exist. */
  bridges: Set<string>;
  /** Ports carrying the plugin's owner mark. */
  ports: ObservedPort[];
  /** Kernel links: name -> kind. */
  links: Map<string, string>;
  /** Addresses ("10.0.0.1/24") on the gateway ports. */
  gatewayAddresses: Map<string, string[]>;
  /** Rules in the plugin's chains, as `iptables -S` prints them; undefined when not read. */
  firewall: { filter4: string[]; nat4: string[]; filter6: string[] } | undefined;
  ipv4Forwarding: boolean | undefined;
  /** Docker's networks; undefined when Docker cannot be asked. */
  docker: ObservedDockerNetwork[] | undefined;
}

export interface Records {
  networks: readonly NetworkRecord[];
  endpoints: readonly EndpointRecord[];
  pools: readonly PoolRecord[];
  addresses: readonly AddressRecord[];
}

const REPAIR = 'ovsnet reconcile';
const short = (id: string) => id.slice(0, 12);

export function findDrift(records: Records, observed: Observed, options: { now: number; graceMs: number }): Drift[] {
  const drift: Drift[] = [];
  const old = (createdAt: string) => options.now - Date.parse(createdAt) >= options.graceMs;
  const networks = new Map(records.networks.map((n) => [n.id, n]));
  const endpoints = new Map(records.endpoints.map((e) => [e.id, e]));
  const ports = new Map(observed.ports.map((p) => [p.name, p]));

  for (const n of records.networks) {
    const net = short(n.id);
    if (n.state === 'creating') {
      drift.push({ kind: 'network-creating', subject: net, networkId: n.id, detail: `network ${net} was being created when the plugin stopped`, fix: REPAIR });
      continue;
    }
    if (!observed.bridges.has(n.spec.bridge)) {
      drift.push({ kind: 'bridge-missing', subject: n.spec.bridge, networkId: n.id, detail: `bridge ${n.spec.bridge} of network ${net} is missing`, fix: REPAIR });
    }
    if (n.gatewayPort) {
      if (!ports.has(n.gatewayPort)) {
        drift.push({ kind: 'gateway-port-missing', subject: n.gatewayPort, networkId: n.id, port: n.gatewayPort, detail: `gateway port ${n.gatewayPort} of network ${net} is missing`, fix: REPAIR });
      } else {
        const have = observed.gatewayAddresses.get(n.gatewayPort) ?? [];
        for (const s of [...n.ipv4, ...n.ipv6]) {
          if (!s.gateway) continue;
          const want = `${s.gateway}/${s.pool.split('/')[1]}`;
          if (!have.includes(want)) {
            drift.push({
              kind: 'gateway-address-missing',
              subject: n.gatewayPort,
              networkId: n.id,
              port: n.gatewayPort,
              address: want,
              detail: `gateway port ${n.gatewayPort} of network ${net} lacks its address ${want}`,
              fix: `ip address add ${want} dev ${n.gatewayPort} && ip link set ${n.gatewayPort} up`,
            });
          }
        }
      }
    }
    if (isOverlay(n.spec)) {
      for (const peer of n.spec.peers) {
        const name = tunnelPortName(n.id, peer);
        if (!ports.has(name)) {
          drift.push({ kind: 'tunnel-port-missing', subject: name, networkId: n.id, port: name, detail: `tunnel port ${name} of network ${net} to peer ${peer} is missing`, fix: REPAIR });
        }
      }
    }
    if (n.spec.uplink && !ports.has(n.spec.uplink)) {
      drift.push({ kind: 'uplink-missing', subject: n.spec.uplink, networkId: n.id, port: n.spec.uplink, detail: `uplink ${n.spec.uplink} of network ${net} is not attached`, fix: REPAIR });
    }
  }

  for (const e of records.endpoints) {
    const network = networks.get(e.networkId);
    const hasVeth = observed.links.has(e.hostIf);
    if (!ports.has(e.hostIf) && hasVeth && network) {
      const tag = network.localTag === undefined ? '' : ` tag=${network.localTag}`;
      drift.push({
        kind: 'endpoint-port-missing',
        subject: e.hostIf,
        endpointId: e.id,
        networkId: e.networkId,
        port: e.hostIf,
        detail: `endpoint ${short(e.id)} has its veth ${e.hostIf} but no OVS port`,
        fix: `ovs-vsctl add-port ${network.spec.bridge} ${e.hostIf}${tag} -- set port ${e.hostIf} external_ids:ovsnet-owner=ovsnet external_ids:ovsnet-role=endpoint external_ids:ovsnet-network=${e.networkId} external_ids:ovsnet-endpoint=${e.id}`,
      });
    }
    if (e.joined && !hasVeth && old(e.createdAt)) {
      drift.push({
        kind: 'endpoint-veth-missing',
        subject: e.hostIf,
        endpointId: e.id,
        networkId: e.networkId,
        detail: `endpoint ${short(e.id)} lost its veth ${e.hostIf}: its container has no interface on network ${short(e.networkId)}`,
        fix: `docker restart <the container of endpoint ${short(e.id)}>`,
      });
    }
  }

  for (const port of observed.ports) {
    if (port.error) {
      drift.push({ kind: 'port-error', subject: port.name, port: port.name, detail: `OVS reports an error on port ${port.name}: ${port.error}`, fix: REPAIR });
    }
    const role = port.externalIds[ROLE_KEY];
    const network = networks.get(port.externalIds[NETWORK_KEY] ?? '');
    let why: string | undefined;
    if (role === 'endpoint' && !endpoints.has(port.externalIds[ENDPOINT_KEY] ?? '')) why = 'its endpoint is unknown';
    if (role === 'gateway' && network?.gatewayPort !== port.name) why = 'its network is unknown';
    if (role === 'tunnel' && !network?.spec.peers.includes(port.externalIds[PEER_KEY] ?? '')) why = 'its network or peer is unknown';
    if (role === 'uplink' && !records.networks.some((n) => n.spec.uplink === port.name && n.spec.bridge === port.bridge)) why = 'no network uses it';
    const networkId = port.externalIds[NETWORK_KEY];
    if (why && networkId && !network) {
      // A port of a network the records lack is debris only if Docker lacks it too. If Docker
      // has it, the plugin's records are what is missing (a wrong state directory or mount):
      // removing the port would cut the network's containers off.
      if (!observed.docker) continue;
      const known = observed.docker.find((n) => n.id === networkId);
      if (known) {
        drift.push({
          kind: 'network-unknown-to-plugin',
          subject: port.name,
          networkId,
          port: port.name,
          role,
          detail: `OVS port ${port.name} belongs to Docker network ${known.name} (${short(networkId)}), which the plugin's records lack: its state directory is not the one it used`,
          fix: 'point OVSNET_STATE_DIR (managed plugin: docker plugin set ovs state.source=<dir>) at the state the network was made with, and restart the plugin',
        });
        continue;
      }
    }
    if (why) {
      drift.push({
        kind: 'orphan-port',
        subject: port.name,
        port: port.name,
        role,
        detail: `OVS port ${port.name} (${role ?? 'no role'}) belongs to nothing: ${why}`,
        fix: `ovs-vsctl --if-exists del-port ${port.name}${role === 'endpoint' ? ` && ip link del ${port.name}` : ''}`,
      });
    }
  }

  const devices = new Set(records.endpoints.flatMap((e) => [e.hostIf, e.peerIf]));
  for (const [name, kind] of observed.links) {
    // A veth that is an owned OVS port is judged by its port (above), which knows its network.
    if (kind !== 'veth' || !(isHostVethName(name) || isPeerVethName(name)) || devices.has(name) || ports.has(name)) continue;
    drift.push({ kind: 'orphan-veth', subject: name, port: name, detail: `veth ${name} belongs to no endpoint`, fix: `ip link del ${name}` });
  }

  if (observed.firewall) {
    const expected = firewallRules(records.networks.filter((n) => n.state === 'ready'));
    const rows = [
      { table: 'filter (IPv4)', have: observed.firewall.filter4, want: expected.v4.filter },
      { table: 'nat (IPv4)', have: observed.firewall.nat4, want: expected.v4.nat },
      { table: 'filter (IPv6)', have: observed.firewall.filter6, want: expected.v6.filter },
    ];
    for (const { table, have, want } of rows) {
      // Compare per network (by the comment tag): iptables may print a rule's matches in another order.
      const count = (rules: readonly string[]) => {
        const tags = new Map<string, number>();
        for (const r of rules) {
          const tag = /ovsnet:[0-9a-f]{12}/.exec(r)?.[0] ?? 'untagged';
          tags.set(tag, (tags.get(tag) ?? 0) + 1);
        }
        return tags;
      };
      const haveTags = count(have);
      const wantTags = count(want.map((r) => r.join(' ')));
      for (const tag of new Set([...haveTags.keys(), ...wantTags.keys()])) {
        const h = haveTags.get(tag) ?? 0;
        const w = wantTags.get(tag) ?? 0;
        if (h !== w) {
          drift.push({ kind: 'firewall-drift', subject: tag, detail: `the ${table} chain has ${h} rules for ${tag} where ${w} belong`, fix: REPAIR });
        }
      }
    }
  }

  const needsForwarding = records.networks.some((n) => n.gatewayPort && !n.spec.internal && n.ipv4.length > 0);
  if (needsForwarding && observed.ipv4Forwarding === false) {
    drift.push({ kind: 'ip-forward-off', subject: 'net.ipv4.ip_forward', detail: 'IPv4 forwarding is off, so nat and routed networks cannot reach beyond the host', fix: 'sysctl -w net.ipv4.ip_forward=1' });
  }

  if (observed.docker) {
    const docker = new Map(observed.docker.map((n) => [n.id, n]));
    for (const n of records.networks) {
      if (docker.has(n.id) || !old(n.createdAt)) continue;
      drift.push({ kind: 'network-unknown-to-docker', subject: short(n.id), networkId: n.id, detail: `network ${short(n.id)} is not in Docker any more`, fix: REPAIR });
    }
    for (const e of records.endpoints) {
      const network = docker.get(e.networkId);
      if (!network || network.endpoints.has(e.id) || !old(e.createdAt)) continue;
      drift.push({ kind: 'endpoint-unknown-to-docker', subject: short(e.id), endpointId: e.id, networkId: e.networkId, detail: `endpoint ${short(e.id)} is not in Docker's network ${network.name} any more`, fix: REPAIR });
    }
    for (const network of observed.docker) {
      if (!networks.has(network.id)) continue;
      for (const id of network.endpoints.keys()) {
        if (!endpoints.has(id)) {
          drift.push({
            kind: 'endpoint-unknown-to-plugin',
            subject: short(id),
            endpointId: id,
            networkId: network.id,
            detail: `Docker has endpoint ${short(id)} on ${network.name}, which the plugin does not know`,
            fix: `docker network disconnect -f ${network.name} <its container>`,
          });
        }
      }
    }
    const holders = new Map<string, Set<string>>();
    for (const n of observed.docker) {
      for (const subnet of n.subnets) {
        const cidr = parseCidr(subnet);
        if (!cidr) continue;
        const held = holders.get(formatCidr(cidr)) ?? new Set<string>();
        for (const a of n.auxAddresses) held.add(a);
        for (const e of n.endpoints.values()) for (const a of e.addresses) held.add(a);
        holders.set(formatCidr(cidr), held);
      }
    }
    for (const pool of records.pools) {
      if (!isOwnAddressSpace(pool.addressSpace)) continue;
      const held = holders.get(pool.pool);
      if (!held) {
        if (old(pool.createdAt)) {
          drift.push({ kind: 'pool-unused', subject: pool.id, poolId: pool.id, detail: `pool ${pool.pool} is used by no Docker network`, fix: REPAIR });
        }
        continue;
      }
      for (const a of records.addresses) {
        if (a.poolId !== pool.id || a.kind === 'gateway' || held.has(a.address) || !old(a.createdAt)) continue;
        drift.push({ kind: 'address-unused', subject: a.address, poolId: pool.id, address: a.address, detail: `address ${a.address} of pool ${pool.pool} is held for no container or aux address`, fix: REPAIR });
      }
    }
  }
  return drift;
}
