/**
 * Reads what is on the host (and in Docker) for the drift check, without
 * changing anything. Shared by the reconciler and by `ovsnet doctor` when the
 * plugin is not running.
 */
import { errorMessage } from '../errors.js';
import type { Observed } from '../domain/drift.js';
import type { Logger } from '../log.js';
import type { DockerView, Firewall, Links, Ovs, Sysctl } from './ports.js';

export interface ObserveSources {
  ovs: Ovs;
  links: Links;
  firewall: Firewall;
  sysctl: Sysctl;
  docker: DockerView | undefined;
  log: Logger;
}

export async function observe(sources: ObserveSources, gatewayPorts: readonly string[], withDocker: boolean): Promise<Observed> {
  const { ovs, links, firewall, sysctl } = sources;
  const [bridges, ports, list, rules, forwarding] = await Promise.all([
    ovs.bridgeNames(),
    ovs.listOwnedPorts(),
    links.list(),
    firewall.read(),
    sysctl.ipv4Forwarding().catch(() => undefined),
  ]);
  const gatewayAddresses = new Map<string, string[]>();
  await Promise.all(gatewayPorts.map(async (p) => gatewayAddresses.set(p, await links.addressesOf(p).catch(() => []))));
  let docker: Observed['docker'];
  if (withDocker && sources.docker) {
    try {
      docker = await sources.docker.networks();
    } catch (err) {
      sources.log.debug('Docker cannot be asked now', { error: errorMessage(err) });
    }
  }
  return {
    bridges: new Set(bridges),
    ports: ports.map((p) => ({ name: p.name, bridge: p.bridge, tag: p.tag, externalIds: p.externalIds, error: p.error })),
    links: new Map(list.map((l) => [l.name, l.kind])),
    gatewayAddresses,
    firewall: rules,
    ipv4Forwarding: forwarding,
    docker,
  };
}
