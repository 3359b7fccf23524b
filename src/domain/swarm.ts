/**
 * Swarm networks made `--config-from` a config-only network: each node keeps its own copy of the settings
 * (subnets, ranges, `-o` options), and Docker shows them only as that config-only network. In OVN mode every
 * node's copy must agree with the switch its subnet already is, or that node's tasks are refused when they
 * come. This finds such a copy before a task does.
 */
import { errorMessage } from '../errors.js';
import { usableBounds } from './allocator.js';
import { canonicalIp, formatCidr, formatIp, parseCidr } from './cidr.js';
import type { ConfigOnlyNetwork, DockerNetwork, Drift } from './drift.js';
import { short } from './names.js';
import { type OptionDefaults, type OvnSpec, parseNetworkOptions } from './options.js';
import { NB, type NbSwitch, checkSameConfig, decodeConfig, defaultSwitchName, sharedConfig } from './ovn.js';

type WithConfig = DockerNetwork & { readonly configOnly: ConfigOnlyNetwork };

function ovnConfigs(docker: readonly DockerNetwork[]): WithConfig[] {
  return docker.filter((n): n is WithConfig => n.configOnly?.options.mode === 'ovn' && n.configOnly.subnets.length > 0);
}

function canonical(pool: string): string {
  const cidr = parseCidr(pool);
  return cidr ? formatCidr(cidr) : pool;
}

/** The subnet a network of these settings is known by in OVN: its first IPv4 subnet, else its first IPv6 one (as CreateNetwork picks it). */
function identifying(n: WithConfig): string {
  const pools = n.configOnly.subnets.map((s) => canonical(s.pool));
  return pools.find((p) => !p.includes(':')) ?? pools[0]!;
}

/** The gateway a subnet gets: the one given, else the one this plugin's IPAM gives when asked for none (the first usable address). */
function gatewayOf(subnet: ConfigOnlyNetwork['subnets'][number]): string | undefined {
  if (subnet.gateway) return canonicalIp(subnet.gateway) ?? subnet.gateway;
  const cidr = parseCidr(subnet.pool);
  return cidr ? formatIp({ family: cidr.family, value: usableBounds(cidr).first }) : undefined;
}

/** The subnets whose switches the check reads: the one each config-only network of OVN mode is known by. */
export function configOnlySubnets(docker: readonly DockerNetwork[]): string[] {
  return [...new Set(ovnConfigs(docker).map(identifying))];
}

/**
 * `ovn-config-differs` for each config-only network of OVN mode whose settings differ from the switch of its
 * subnet (as made by the first host), naming the first difference; a subnet with no switch yet is no
 * difference. A gateway the config-only network leaves to IPAM is the one IPAM gives; `--internal` (given on the
 * swarm network, not here) is not compared. What CreateNetwork also refuses beyond the switch's settings (an
 * ovn_network name another subnet has, a router's own settings) is not looked at: the refusal says it.
 */
export function configOnlyDrift(docker: readonly DockerNetwork[], switches: readonly NbSwitch[], defaults: OptionDefaults): Drift[] {
  const drift: Drift[] = [];
  const differs = (n: WithConfig, why: string): Drift => ({
    kind: 'ovn-config-differs',
    subject: n.name,
    detail: `config-only network ${n.name} (the settings this host gives the swarm networks made --config-from it): ${why}`,
    fix: `docker network rm ${n.name}; docker network create --config-only ... ${n.name} again with the settings the other hosts give it (docker network inspect ${n.name} on one of them)`,
  });
  for (const n of ovnConfigs(docker)) {
    const first = identifying(n);
    const sw = switches.find((s) => s.externalIds[NB.subnet] === first);
    const theirs = sw && decodeConfig(sw.externalIds[NB.config]);
    if (!sw || !theirs) continue;
    let spec: OvnSpec;
    try {
      spec = parseNetworkOptions(n.configOnly.options, { internal: theirs.internal, ipv6: n.configOnly.ipv6 }, defaults) as OvnSpec;
    } catch (err) {
      drift.push(differs(n, errorMessage(err)));
      continue;
    }
    const subnets = n.configOnly.subnets.map((s) => {
      const aux = Object.fromEntries(Object.entries(s.aux).map(([k, v]) => [k, canonicalIp(v) ?? v]));
      return { addressSpace: 'local', pool: canonical(s.pool), gateway: gatewayOf(s), auxAddresses: aux };
    });
    const ranges = new Map(n.configOnly.subnets.flatMap((s) => (s.range ? [[canonical(s.pool), canonical(s.range)] as const] : [])));
    try {
      checkSameConfig(theirs, sharedConfig(spec, spec.ovnNetwork ?? defaultSwitchName(first), subnets, ranges), sw.externalIds[NB.createdBy] ?? 'unknown');
    } catch (err) {
      drift.push(differs(n, errorMessage(err)));
    }
  }
  return drift;
}

/** Swarm networks this host refused to make, by id: the refusal, and when it was last given. */
export type Refusals = Map<string, { readonly message: string; readonly at: number }>;

/** How long a refusal is said after the last time swarm asked (swarm asks again while the service wants tasks). */
export const REFUSAL_KEPT_MS = 10 * 60_000;

/** Keeps a refusal of a swarm network (the latest for it), and forgets those swarm stopped asking for. */
export function keepRefusal(refusals: Refusals, networkId: string, message: string, now: number): void {
  forgetOldRefusals(refusals, now);
  refusals.set(networkId, { message, at: now });
}

/** Forgets the refusals swarm stopped asking about REFUSAL_KEPT_MS ago. */
export function forgetOldRefusals(refusals: Refusals, now: number): void {
  for (const [id, r] of refusals) if (now - r.at >= REFUSAL_KEPT_MS) refusals.delete(id);
}

/**
 * `swarm-network-refused` for each swarm network this host refused to make when a task came, in the last
 * REFUSAL_KEPT_MS: that node's tasks fail (swarm places them elsewhere) until its settings agree.
 */
export function refusalDrift(refusals: ReadonlyMap<string, { readonly message: string; readonly at: number }>, now: number): Drift[] {
  return [...refusals]
    .filter(([, r]) => now - r.at < REFUSAL_KEPT_MS)
    .map(([id, r]) => ({
      kind: 'swarm-network-refused' as const,
      subject: short(id),
      networkId: id,
      detail: `swarm network ${short(id)} could not be made on this host when a task came (last at ${new Date(r.at).toISOString()}): ${r.message}`,
      fix: `give this host's config-only network of it the settings the other nodes give theirs (docker network inspect on one of them); docker service ps --no-trunc names the tasks it failed`,
    }));
}
