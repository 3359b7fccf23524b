/**
 * Kernel links through iproute2 and ethtool. Each method is one process where
 * possible (`ip -batch` for several changes), since each spawn costs ~5 ms.
 */
import { assertInterfaceName } from '../domain/names.js';
import type { ObservedLink } from '../domain/host.js';
import type { Links } from '../driver/ports.js';
import { CommandError, type Runner } from './exec.js';

function missing(err: unknown): boolean {
  return err instanceof CommandError && /Cannot find device|does not exist/i.test(err.stderr);
}

export class IpLinks implements Links {
  constructor(private readonly run: Runner) {}

  async createVeth(options: { host: string; peer: string; mtu: number; peerMac: string; txOffloadOff?: boolean }): Promise<void> {
    const host = assertInterfaceName(options.host, 'interface name');
    const peer = assertInterfaceName(options.peer, 'interface name');
    const args = ['link', 'add', 'name', host, 'mtu', String(options.mtu), 'up', 'type', 'veth',
      'peer', 'name', peer, 'mtu', String(options.mtu), 'address', options.peerMac];
    // With the offload off: ip and both ethtools from one shell, names as its arguments (never in its script):
    // one spawn from the plugin instead of two. A spawn holds the plugin's event loop until the child has
    // forked and started its program (profiled during 50 parallel starts: about a third of the event loop's
    // busy time). A pair whose offload could not be turned off is deleted again, so a failure leaves nothing.
    const make = () =>
      options.txOffloadOff
        ? this.run('sh', ['-c', 'h=$1 p=$2; shift 2; ip "$@" || exit; ethtool -K "$h" tx off && ethtool -K "$p" tx off && exit; s=$?; ip link del dev "$h"; exit $s', 'sh', host, peer, ...args])
        : this.run('ip', args);
    try {
      await make();
    } catch (err) {
      if (!(err instanceof CommandError && /File exists/.test(err.stderr))) throw err;
      // Left over from an interrupted attempt for this same endpoint: start clean.
      await this.deleteLink(host);
      await this.deleteLink(peer);
      await make();
    }
  }

  /**
   * ethtool takes one device at a time: several are done by one shell, with the names as its arguments
   * (never in its script), since a spawn from the plugin costs some 4 ms of its own CPU and a shell's far less.
   */
  async disableTxOffload(names: readonly string[]): Promise<void> {
    const devices = names.map((name) => assertInterfaceName(name, 'interface name'));
    if (devices.length === 0) return;
    if (devices.length === 1) {
      await this.run('ethtool', ['-K', devices[0]!, 'tx', 'off']);
      return;
    }
    await this.run('sh', ['-c', 'for dev do ethtool -K "$dev" tx off || exit; done', 'ethtool', ...devices]);
  }

  async deleteLink(name: string): Promise<boolean> {
    try {
      await this.run('ip', ['link', 'del', 'dev', assertInterfaceName(name, 'interface name')]);
      return true;
    } catch (err) {
      if (missing(err)) return false;
      throw err;
    }
  }

  async configureAddresses(name: string, options: { mtu: number; addresses: readonly string[] }): Promise<void> {
    const dev = assertInterfaceName(name, 'interface name');
    const lines = [`link set dev ${dev} mtu ${options.mtu} up`];
    const current = await this.addressesOf(dev);
    for (const address of options.addresses) if (!current.includes(address)) lines.push(`address replace ${address} dev ${dev}`);
    for (const address of current) if (!options.addresses.includes(address)) lines.push(`address del ${address} dev ${dev}`);
    await this.run('ip', ['-batch', '-'], { input: lines.join('\n') + '\n' });
  }

  async list(): Promise<Map<string, ObservedLink>> {
    const { stdout } = await this.run('ip', ['-j', '-d', 'link', 'show']);
    const links = JSON.parse(stdout || '[]') as Array<{
      ifname: string;
      flags?: string[];
      mtu?: number;
      linkinfo?: { info_kind?: string };
    }>;
    return new Map(links.map((l) => [l.ifname, { kind: l.linkinfo?.info_kind ?? '', up: (l.flags ?? []).includes('UP'), mtu: l.mtu ?? 0 }]));
  }

  async addresses(): Promise<Map<string, string[]>> {
    const { stdout } = await this.run('ip', ['-j', 'address', 'show']);
    const out = new Map<string, string[]>();
    for (const link of JSON.parse(stdout || '[]') as AddressInfo[]) {
      const global = globalAddresses(link);
      if (global.length > 0) out.set(link.ifname, global);
    }
    return out;
  }

  async routes(family: 4 | 6): Promise<string[]> {
    const { stdout } = await this.run('ip', [`-${family}`, '-j', 'route', 'show', 'table', 'all']);
    const routes = JSON.parse(stdout || '[]') as Array<{ dst?: string; type?: string }>;
    const out: string[] = [];
    for (const r of routes) {
      if (!r.dst || r.dst === 'default') continue;
      if (r.type && !['unicast', 'local', 'blackhole', 'unreachable', 'prohibit'].includes(r.type)) continue;
      out.push(r.dst.includes('/') ? r.dst : `${r.dst}/${family === 4 ? 32 : 128}`);
    }
    return out;
  }

  async routeTo(address: string): Promise<{ dev: string; local: boolean } | undefined> {
    try {
      const { stdout } = await this.run('ip', ['-j', 'route', 'get', address]);
      const [route] = JSON.parse(stdout || '[]') as Array<{ dev?: string; type?: string }>;
      if (!route?.dev) return undefined;
      return { dev: route.dev, local: route.type === 'local' };
    } catch (err) {
      if (err instanceof CommandError && /unreachable|No route|Network is unreachable/i.test(err.stderr)) return undefined;
      throw err;
    }
  }

  async defaultRouteDevices(): Promise<string[]> {
    const devices = new Set<string>();
    for (const family of ['-4', '-6']) {
      const { stdout } = await this.run('ip', [family, '-j', 'route', 'show', 'default']);
      for (const r of JSON.parse(stdout || '[]') as Array<{ dev?: string }>) if (r.dev) devices.add(r.dev);
    }
    return [...devices];
  }

  private async addressesOf(name: string): Promise<string[]> {
    const dev = assertInterfaceName(name, 'interface name');
    try {
      const { stdout } = await this.run('ip', ['-j', 'address', 'show', 'dev', dev]);
      const [link] = JSON.parse(stdout || '[]') as AddressInfo[];
      return link ? globalAddresses(link) : [];
    } catch (err) {
      if (missing(err)) return [];
      throw err;
    }
  }
}

interface AddressInfo {
  ifname: string;
  addr_info?: Array<{ local: string; prefixlen: number; scope?: string }>;
}

/** Addresses that are not link-local ("10.0.0.1/24"). */
function globalAddresses(link: AddressInfo): string[] {
  return (link.addr_info ?? []).filter((a) => a.scope !== 'link').map((a) => `${a.local}/${a.prefixlen}`);
}
