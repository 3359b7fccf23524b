/**
 * Small host facts and switches: IP forwarding, which OVS datapath works, and
 * which host ports are in use.
 */
import { access, readFile, writeFile } from 'node:fs/promises';
import { type PortHolder, parseDockerDnat, parseNftDockerDnat, parseProcNet } from '../domain/published.js';
import type { Datapath } from '../domain/records.js';
import { unavailable } from '../errors.js';
import type { DatapathProbe, HostPorts, Sysctl } from '../driver/ports.js';
import type { Runner } from './exec.js';
import type { IptablesTools } from './iptables.js';

export class ProcSysctl implements Sysctl {
  constructor(private readonly root = '/proc/sys') {}

  async enableIpv4Forwarding(): Promise<void> {
    if (await this.ipv4Forwarding()) return;
    try {
      await writeFile(`${this.root}/net/ipv4/ip_forward`, '1\n');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'EROFS' && code !== 'EACCES' && code !== 'EPERM') throw err;
      // Inside a managed plugin /proc/sys is read-only; dockerd normally turns forwarding on already.
      throw unavailable(
        'ForwardingOff',
        'IPv4 forwarding is off and the plugin cannot turn it on here (/proc/sys is read-only): run "sysctl -w net.ipv4.ip_forward=1" on the host, or keep dockerd\'s --ip-forward on',
      );
    }
  }

  async ipv4Forwarding(): Promise<boolean> {
    return (await readFile(`${this.root}/net/ipv4/ip_forward`, 'utf8')).trim() === '1';
  }

  async routerAdvice(name: string): Promise<{ acceptRa: boolean; acceptRedirects: boolean } | undefined> {
    const read = (path: string) => readFile(`${this.root}/net/${path}`, 'utf8').then((t) => t.trim(), () => undefined);
    const [ra, redirects6, redirects4] = await Promise.all([read(`ipv6/conf/${name}/accept_ra`), read(`ipv6/conf/${name}/accept_redirects`), read(`ipv4/conf/${name}/accept_redirects`)]);
    if (redirects4 === undefined) return undefined;
    // Without IPv6 on the interface (no ipv6/conf entry) it takes neither.
    return { acceptRa: ra !== undefined && ra !== '0', acceptRedirects: redirects4 !== '0' || (redirects6 !== undefined && redirects6 !== '0') };
  }

  async refuseRouterAdvice(name: string): Promise<void> {
    const write = async (path: string) => {
      try {
        await writeFile(`${this.root}/net/${path}`, '0\n');
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') return; // no IPv6 on it
        if (code !== 'EROFS' && code !== 'EACCES' && code !== 'EPERM') throw err;
        throw unavailable(
          'SysctlReadOnly',
          `cannot stop ${name} from taking router advertisements and redirects (${this.root} is read-only here): run "sysctl -w net.ipv6.conf.${name}.accept_ra=0 net.ipv6.conf.${name}.accept_redirects=0 net.ipv4.conf.${name}.accept_redirects=0" on the host; a managed plugin needs its proc-sys-net mount`,
        );
      }
    };
    await write(`ipv6/conf/${name}/accept_ra`);
    await write(`ipv6/conf/${name}/accept_redirects`);
    await write(`ipv4/conf/${name}/accept_redirects`);
  }
}

/**
 * The kernel datapath needs the openvswitch module; without it only the
 * userspace (netdev) datapath works. ovs-vswitchd cannot load the module
 * itself, so its presence decides.
 */
export class ModuleDatapathProbe implements DatapathProbe {
  constructor(private readonly sysModule = '/sys/module/openvswitch') {}

  async detect(): Promise<Datapath> {
    try {
      await access(this.sysModule);
      return 'system';
    } catch {
      return 'netdev';
    }
  }
}

/**
 * Host ports in use, from /proc/net (the plugin runs in the host's network
 * namespace: as a daemon, or as a managed plugin with host networking) and
 * from Docker's DOCKER chain in the nat table.
 */
export class ProcHostPorts implements HostPorts {
  constructor(
    private readonly run: Runner,
    private readonly iptables: IptablesTools,
    private readonly proc = '/proc',
  ) {}

  async inUse(): Promise<PortHolder[]> {
    const { v4, v6 } = await this.iptables.commands();
    const read = (name: string) => readFile(`${this.proc}/net/${name}`, 'utf8').catch(() => '');
    const output = (command: string, args: string[]) => this.run(command, args).then((r) => r.stdout, () => '');
    const [tcp, tcp6, udp, udp6, docker4, docker6, nft4, nft6] = await Promise.all([
      read('tcp'),
      read('tcp6'),
      read('udp'),
      read('udp6'),
      output(v4.cli, ['--wait', '-t', 'nat', '-S', 'DOCKER']),
      output(v6.cli, ['--wait', '-t', 'nat', '-S', 'DOCKER']),
      // Docker 29's nftables firewall keeps its rules in tables of its own, which iptables does not show.
      output('nft', ['-j', 'list', 'table', 'ip', 'docker-bridges']),
      output('nft', ['-j', 'list', 'table', 'ip6', 'docker-bridges']),
    ]);
    // Docker's own first: its bridge also holds each port it publishes with a listening socket.
    const out: PortHolder[] = [
      ...[...parseDockerDnat(docker4, 4), ...parseDockerDnat(docker6, 6)].map((d) => ({ ...d, holder: "published by Docker's own bridge network (a DNAT rule in iptables' DOCKER chain)" })),
      ...[...parseNftDockerDnat(nft4), ...parseNftDockerDnat(nft6)].map((d) => ({ ...d, holder: "published by Docker's own bridge network (a DNAT rule in its nftables table docker-bridges)" })),
    ];
    const listening = (proto: 'tcp' | 'udp', text: string, v6: boolean) => {
      for (const s of parseProcNet(text, proto, v6)) {
        const where = s.address.includes(':') ? `[${s.address}]:${s.port}` : `${s.address}:${s.port}`;
        // A socket on every IPv6 address takes IPv4 too unless it is IPv6-only, which /proc does not say.
        const address = v6 && s.address === '::' ? '' : s.address;
        out.push({ proto, address, port: s.port, holder: `a program on the host ${proto === 'tcp' ? 'listens on' : 'is bound to'} ${where} (docker-proxy, when Docker's own bridge publishes the port)` });
      }
    };
    listening('tcp', tcp, false);
    listening('tcp', tcp6, true);
    listening('udp', udp, false);
    listening('udp', udp6, true);
    return out;
  }

  async ephemeralRange(): Promise<[number, number]> {
    const text = await readFile(`${this.proc}/sys/net/ipv4/ip_local_port_range`, 'utf8').catch(() => '32768 60999');
    const [lo, hi] = text.trim().split(/\s+/).map(Number);
    return lo && hi && lo <= hi ? [lo, hi] : [32768, 60999];
  }
}

/** undefined when nft lists the host's nftables tables (Docker 29's firewall among them); otherwise why not. */
export function nftError(run: Runner): Promise<string | undefined> {
  return run('nft', ['list', 'tables']).then(() => undefined, (err: unknown) => (err as Error).message);
}
