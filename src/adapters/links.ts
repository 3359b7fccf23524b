/**
 * Kernel links through iproute2 and ethtool. Each method is one process where
 * possible (`ip -batch` for several changes), since each spawn costs ~5 ms.
 */
import { existsSync } from 'node:fs';
import { badRequest } from '../errors.js';
import { canonicalIp } from '../domain/cidr.js';
import { linkLocalOf } from '../domain/flows.js';
import { VETH_GROUP, assertInterfaceName } from '../domain/names.js';
import type { ObservedLink } from '../domain/host.js';
import type { HostRoute } from '../domain/admission.js';
import type { Links } from '../driver/ports.js';
import { CommandError, type Runner } from './exec.js';

/** Whether the kernel has IPv6 (a host booted with ipv6.disable=1 has no IPv6 at all, and refuses addrgenmode). */
const IPV6 = existsSync('/proc/sys/net/ipv6');
/** No IPv6 link-local address on a host end: ` addrgenmode none`, where there is IPv6. */
const NO_LINK_LOCAL = IPV6 ? ' addrgenmode none' : '';

function missing(err: unknown): boolean {
  return err instanceof CommandError && /Cannot find device|does not exist/i.test(err.stderr);
}

export interface VethOptions {
  host: string;
  peer: string;
  mtu: number;
  peerMac: string;
  txOffloadOff?: boolean;
}

interface VethRequest {
  options: VethOptions;
  resolve: () => void;
  reject: (err: unknown) => void;
}

/** Pairs made by one spawn at most: a burst's queue is worked through in batches of this many. */
const VETH_BATCH = 32;

export class IpLinks implements Links {
  /** Pairs asked for while a spawn that makes pairs runs: made together by the next one. */
  private readonly vethQueue: VethRequest[] = [];
  private vethRunning = false;

  constructor(
    private readonly run: Runner,
    private readonly options: { netnsDir?: string } = {},
  ) {}

  /**
   * Makes a veth pair (with TX offload off on both ends when asked). One at a time, a pair is one spawn;
   * pairs asked for together, or while that spawn runs, are made together by the next one: a spawn
   * holds the plugin's event loop until the child has forked and started its program, which in a burst
   * of 50 starts was a quarter of the plugin's CPU. A lone start waits for nothing.
   */
  async createVeth(options: VethOptions): Promise<void> {
    assertInterfaceName(options.host, 'interface name');
    assertInterfaceName(options.peer, 'interface name');
    // The MAC goes into a line of `ip -batch`: nothing but a MAC may get there.
    if (!/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(options.peerMac)) throw badRequest('InvalidMac', `invalid MAC address "${options.peerMac}": must be six pairs of hex digits separated by colons`);
    if (!Number.isInteger(options.mtu) || options.mtu < 68 || options.mtu > 65535) throw badRequest('InvalidMtu', `invalid MTU ${options.mtu}: must be an integer from 68 to 65535`);
    return new Promise((resolve, reject) => {
      this.vethQueue.push({ options, resolve, reject });
      if (this.vethRunning) return;
      this.vethRunning = true;
      // Pairs asked for in the same turn of the event loop (spares made again) go together from the start.
      setImmediate(() => void this.makeQueued());
    });
  }

  private async makeQueued(): Promise<void> {
    try {
      while (this.vethQueue.length > 0) {
        const batch = this.vethQueue.splice(0, VETH_BATCH);
        if (batch.length > 1) {
          try {
            await this.makeMany(batch.map((r) => r.options));
            for (const r of batch) r.resolve();
            continue;
          } catch {
            // One pair that cannot be made (a leftover of its names, a device limit) must not fail the
            // others: each is made again on its own (over what the batch made of it) and answered for itself.
          }
        }
        await Promise.all(batch.map((r) => this.makeOne(r.options).then(r.resolve, r.reject)));
      }
    } finally {
      this.vethRunning = false;
    }
  }

  /**
   * A pair as `ip -batch` lines: the host end in the plugin's device group (the firewall drops what the host's
   * own stack would take from it), without ARP (it would answer for every address of the host, and a
   * container that took its MAC for its gateway's would send into the drop) and without an IPv6 link-local
   * address (it would speak for the host to the container), then up.
   */
  private static addLines(o: VethOptions): string[] {
    return [
      ['link', 'add', 'name', o.host, 'mtu', String(o.mtu), 'group', String(VETH_GROUP), 'type', 'veth', 'peer', 'name', o.peer, 'mtu', String(o.mtu), 'address', o.peerMac].join(' '),
      `link set dev ${o.host}${NO_LINK_LOCAL} arp off up`,
    ];
  }

  /** Several pairs: `ip -batch`, then ethtool on each end that needs it, all from one shell. */
  private async makeMany(pairs: readonly VethOptions[]): Promise<void> {
    const input = pairs.flatMap((o) => IpLinks.addLines(o)).join('\n') + '\n';
    const offload = pairs.filter((o) => o.txOffloadOff).flatMap((o) => [o.host, o.peer]);
    if (offload.length === 0) {
      await this.run('ip', ['-batch', '-'], { input });
      return;
    }
    await this.run('sh', ['-c', 'ip -batch - || exit; for dev do ethtool -K "$dev" tx off || exit; done', 'sh', ...offload], { input });
  }

  /** One pair; over a leftover of the same names (an interrupted attempt for this same endpoint), made clean. */
  private async makeOne(options: VethOptions): Promise<void> {
    const { host, peer } = options;
    const input = IpLinks.addLines(options).join('\n') + '\n';
    // With the offload off: ip and both ethtools from one shell, names as its arguments (never in its script).
    // A pair whose offload could not be turned off (or not set up) is deleted again, so a failure leaves nothing.
    const make = () =>
      options.txOffloadOff
        ? this.run('sh', ['-c', 'h=$1 p=$2; ip -batch - && ethtool -K "$h" tx off && ethtool -K "$p" tx off && exit; s=$?; ip link del dev "$h" 2>/dev/null; exit $s', 'sh', host, peer], { input })
        : this.run('sh', ['-c', 'ip -batch - && exit; s=$?; ip link del dev "$1" 2>/dev/null; exit $s', 'sh', host], { input });
    try {
      await make();
    } catch (err) {
      if (!(err instanceof CommandError && /File exists/.test(err.stderr))) throw err;
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
      group?: string | number;
      linkinfo?: { info_kind?: string };
    }>;
    return new Map(links.map((l) => [l.ifname, { kind: l.linkinfo?.info_kind ?? '', up: (l.flags ?? []).includes('UP'), mtu: l.mtu ?? 0, group: Number(l.group) || 0 }]));
  }

  async linkLocalIn(sandbox: string, mac: string): Promise<string | undefined | null> {
    // The sandbox key is Docker's (a path under its exec root): nothing but a plain path may reach nsenter.
    if (!/^\/[A-Za-z0-9/_.-]+$/.test(sandbox) || sandbox.includes('..')) return null;
    // A managed plugin sees Docker's namespaces through a mount of their directory, under another path.
    const at = this.options.netnsDir ? `${this.options.netnsDir}/${sandbox.slice(sandbox.lastIndexOf('/') + 1)}` : sandbox;
    if (!existsSync(at)) return null;
    let stdout: string;
    try {
      // Unfiltered: with a family or scope filter, ip leaves out each link's MAC (and lists filtered addresses as {}).
      ({ stdout } = await this.run('nsenter', [`--net=${at}`, '--', 'ip', '-j', 'address', 'show']));
    } catch (err) {
      if (err instanceof CommandError) return null; // the namespace is gone, or not ours to enter
      throw err;
    }
    const links = JSON.parse(stdout || '[]') as Array<{ address?: string; addr_info?: Array<{ family?: string; local?: string; scope?: string; 'stable-privacy'?: boolean }> }>;
    const link = links.find((l) => l.address?.toLowerCase() === mac.toLowerCase());
    const linkLocal = (link?.addr_info ?? []).filter((a) => a.family === 'inet6' && a.scope === 'link' && a.local?.startsWith('fe80:'));
    // Only one the kernel made: the one of its MAC, or one of addr_gen_mode 2 or 3 (flagged stable-privacy, which
    // nothing but the kernel can set). One added by hand could be a neighbour's or the router's, and is not taken.
    const eui64 = canonicalIp(linkLocalOf(mac));
    return linkLocal.find((a) => a['stable-privacy'])?.local ?? linkLocal.find((a) => canonicalIp(a.local!) === eui64)?.local;
  }

  async isolateVeth(name: string): Promise<void> {
    const dev = assertInterfaceName(name, 'interface name');
    await this.run('ip', ['-batch', '-'], { input: `link set dev ${dev} group ${VETH_GROUP}${NO_LINK_LOCAL} arp off\n${IPV6 ? `address flush dev ${dev} scope link\n` : ''}` });
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

  async routes(family: 4 | 6): Promise<HostRoute[]> {
    const { stdout } = await this.run('ip', [`-${family}`, '-j', 'route', 'show', 'table', 'all']);
    const routes = JSON.parse(stdout || '[]') as Array<{ dst?: string; type?: string; dev?: string; gateway?: string; table?: string }>;
    const out: HostRoute[] = [];
    for (const r of routes) {
      if (!r.dst) continue;
      if (r.type && !['unicast', 'local', 'blackhole', 'unreachable', 'prohibit'].includes(r.type)) continue;
      const isDefault = r.dst === 'default';
      const dst = isDefault ? (family === 4 ? '0.0.0.0/0' : '::/0') : r.dst.includes('/') ? r.dst : `${r.dst}/${family === 4 ? 32 : 128}`;
      out.push({ dst, ...(isDefault ? { isDefault } : {}), ...(r.dev ? { dev: r.dev } : {}), ...(r.gateway ? { via: r.gateway } : {}), ...(r.table && r.table !== 'main' ? { table: r.table } : {}), ...(r.type === 'local' ? { local: true } : {}) });
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
