/**
 * Docker's view of the plugin's networks, through dockerode. Used only by the
 * reconciler, in the background: a driver call never waits on Docker, since
 * Docker waits on the driver call.
 */
import Docker from 'dockerode';
import type { DockerNetwork, DockerView } from '../driver/ports.js';

export function dockerFromAddress(address: string): Docker {
  if (address.startsWith('unix://')) return new Docker({ socketPath: address.slice('unix://'.length), timeout: 10_000 });
  const url = new URL(address.replace(/^tcp:/, 'http:'));
  return new Docker({ host: url.hostname, port: Number(url.port) || 2375, timeout: 10_000 });
}

export class DockerodeView implements DockerView {
  constructor(private readonly docker: Docker) {}

  async networks(): Promise<DockerNetwork[]> {
    const list = (await this.docker.listNetworks()) as Array<{ Id: string }>;
    const out: DockerNetwork[] = [];
    for (const { Id } of list) {
      let info: any;
      try {
        info = await this.docker.getNetwork(Id).inspect();
      } catch (err) {
        if ((err as { statusCode?: number }).statusCode === 404) continue; // removed meanwhile
        throw err;
      }
      const endpoints = new Map<string, { addresses: string[] }>();
      for (const c of Object.values((info.Containers ?? {}) as Record<string, { EndpointID: string; IPv4Address?: string; IPv6Address?: string }>)) {
        endpoints.set(c.EndpointID, { addresses: [c.IPv4Address, c.IPv6Address].filter((a): a is string => !!a).map((a) => a.split('/')[0]!) });
      }
      const config = ((info.IPAM?.Config ?? []) as Array<{ Subnet?: string; AuxiliaryAddresses?: Record<string, string> }>);
      out.push({
        id: info.Id as string,
        name: info.Name as string,
        subnets: config.map((c) => c.Subnet).filter((s): s is string => !!s),
        auxAddresses: config.flatMap((c) => Object.values(c.AuxiliaryAddresses ?? {})),
        endpoints,
      });
    }
    return out;
  }
}
