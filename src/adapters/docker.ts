/**
 * Docker's view of the plugin's networks, through dockerode. Used only by the
 * reconciler, in the background: a driver call never waits on Docker, since
 * Docker waits on the driver call.
 */
import type Docker from 'dockerode';
import type { DockerNetwork, DockerView } from '../driver/ports.js';

function dockerFromAddress(Client: typeof Docker, address: string): Docker {
  if (address.startsWith('unix://')) return new Client({ socketPath: address.slice('unix://'.length), timeout: 10_000 });
  const url = new URL(address.replace(/^tcp:/, 'http:'));
  return new Client({ host: url.hostname, port: Number(url.port) || 2375, timeout: 10_000 });
}

export class DockerodeView implements DockerView {
  private client: Promise<Docker> | undefined;

  /** `address`: unix:///path or tcp://host:port. */
  constructor(private readonly address: string) {}

  // dockerode is loaded at the first look at Docker, not at start: with its gRPC dependencies it was a
  // sixth of the time before a restarted plugin answers (150 ms measured), and the reconciler looks later.
  private docker(): Promise<Docker> {
    this.client ??= import('dockerode').then((m) => dockerFromAddress(m.default, this.address));
    return this.client;
  }

  async networks(): Promise<DockerNetwork[]> {
    const docker = await this.docker();
    const list = (await docker.listNetworks()) as Array<{ Id: string }>;
    const out: DockerNetwork[] = [];
    for (const { Id } of list) {
      let info: any;
      try {
        info = await docker.getNetwork(Id).inspect();
      } catch (err) {
        if ((err as { statusCode?: number }).statusCode === 404) continue; // removed meanwhile
        throw err;
      }
      const endpoints = new Map<string, { addresses: string[] }>();
      for (const c of Object.values((info.Containers ?? {}) as Record<string, { EndpointID: string; IPv4Address?: string; IPv6Address?: string }>)) {
        endpoints.set(c.EndpointID, { addresses: [c.IPv4Address, c.IPv6Address].filter((a): a is string => !!a).map((a) => a.split('/')[0]!) });
      }
      const config = ((info.IPAM?.Config ?? []) as Array<{ Subnet?: string; Gateway?: string; IPRange?: string; AuxiliaryAddresses?: Record<string, string> }>);
      // A config-only network is settings only, for swarm networks made --config-from it: it holds no pool and no address itself.
      const configOnly = info.ConfigOnly
        ? {
            options: (info.Options ?? {}) as Record<string, string>,
            ipv6: !!info.EnableIPv6,
            subnets: config.filter((c) => !!c.Subnet).map((c) => ({ pool: c.Subnet!, ...(c.Gateway ? { gateway: c.Gateway } : {}), ...(c.IPRange ? { range: c.IPRange } : {}), aux: c.AuxiliaryAddresses ?? {} })),
          }
        : undefined;
      out.push({
        id: info.Id as string,
        name: info.Name as string,
        subnets: configOnly ? [] : config.map((c) => c.Subnet).filter((s): s is string => !!s),
        auxAddresses: configOnly ? [] : config.flatMap((c) => Object.values(c.AuxiliaryAddresses ?? {})),
        endpoints,
        ...(configOnly ? { configOnly } : {}),
      });
    }
    return out;
  }

  async containerNames(networkId: string): Promise<Map<string, string>> {
    const docker = await this.docker();
    let info: any;
    try {
      info = await docker.getNetwork(networkId).inspect();
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode === 404) return new Map();
      throw err;
    }
    const containers = Object.values((info.Containers ?? {}) as Record<string, { EndpointID: string; Name?: string }>);
    return new Map(containers.filter((c) => c.Name).map((c) => [c.EndpointID, c.Name!]));
  }

  async engine(): Promise<{ version: string; firewallBackend: string | undefined }> {
    const info = (await (await this.docker()).info()) as { ServerVersion?: string; FirewallBackend?: { Driver?: string } };
    return { version: info.ServerVersion ?? '', firewallBackend: info.FirewallBackend?.Driver };
  }
}
