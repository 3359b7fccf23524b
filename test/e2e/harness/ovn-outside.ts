/**
 * The world outside an OVN deployment, for routers' way out: a namespace
 * with a Linux bridge standing for the physical network the gateway hosts
 * are cabled to (OVSNET_OVN_EXTERNAL's subnet), holding the next hop, and
 * behind it an address standing for the Internet (where a test's server
 * answers). Only the gateway hosts are
 * cabled in: a container on any other host reaches it only through OVN.
 */
import { assertUnrouted } from './addresses.js';
import { cmd } from './proc.js';
import { tagged } from './sim-host.js';
import type { SimHost } from './sim-host.js';

/** The bridge each gateway host maps its physical network to (ovn-bridge-mappings). */
export const EXTERNAL_BRIDGE = 'br-ext';

export class OutsideWorld {
  readonly ns: string;

  private constructor(
    name: string,
    /** The next hop on the outside subnet, with its prefix (e.g. 198.51.100.1/24). */
    readonly nexthop: string,
    /** An address beyond the next hop, where the server answers. */
    readonly farAddress: string,
    readonly physnet: string,
  ) {
    this.ns = `ovsnet-t-${tagged(name)}`;
  }

  static async create(name: string, options: { nexthop: string; farAddress: string; physnet: string }): Promise<OutsideWorld> {
    const world = new OutsideWorld(name, options.nexthop, options.farAddress, options.physnet);
    const ip = (...args: string[]) => cmd('ip', ['-n', world.ns, ...args]);
    await cmd('ip', ['netns', 'del', world.ns], { check: false });
    await cmd('ip', ['netns', 'add', world.ns]);
    await ip('link', 'set', 'lo', 'up');
    await ip('link', 'add', 'ext0', 'type', 'bridge');
    await ip('link', 'set', 'ext0', 'up');
    await assertUnrouted([options.nexthop, options.farAddress], 'the outside network of OVN routers');
    await ip('address', 'add', options.nexthop, 'dev', 'ext0');
    await ip('address', 'add', `${options.farAddress}/32`, 'dev', 'lo');
    // Segments are sent as built: the userspace datapath on the far side forwards partial checksums as they are.
    await cmd('ip', ['netns', 'exec', world.ns, 'ethtool', '-K', 'ext0', 'tx', 'off']);
    return world;
  }

  get nexthopAddress(): string {
    return this.nexthop.split('/')[0]!;
  }

  /** Cables a gateway host in: eth2 on its bridge br-ext, mapped to the physical network. */
  async cable(host: SimHost): Promise<void> {
    const cable = `ext-${host.name}`.slice(0, 15);
    await cmd('ip', ['-n', this.ns, 'link', 'del', cable], { check: false });
    await cmd('ip', ['-n', this.ns, 'link', 'add', 'name', cable, 'type', 'veth', 'peer', 'name', 'eth2', 'netns', host.ns]);
    await cmd('ip', ['-n', this.ns, 'link', 'set', cable, 'master', 'ext0', 'up']);
    await cmd('ip', ['netns', 'exec', this.ns, 'ethtool', '-K', cable, 'tx', 'off']);
    await host.exec('ip', ['link', 'set', 'eth2', 'up']);
    await host.exec('ethtool', ['-K', 'eth2', 'tx', 'off']);
    await host.vsctl(['--may-exist', 'add-br', EXTERNAL_BRIDGE, '--', 'set', 'bridge', EXTERNAL_BRIDGE, 'datapath_type=netdev', '--', '--may-exist', 'add-port', EXTERNAL_BRIDGE, 'eth2']);
    await host.exec('ip', ['link', 'set', EXTERNAL_BRIDGE, 'up']);
    await host.vsctl(['set', 'open', '.', `external_ids:ovn-bridge-mappings=${this.physnet}:${EXTERNAL_BRIDGE}`]);
  }

  /** A route of the outside world to a subnet behind OVN (a routed network, through its router's outside address). */
  async route(subnet: string, via: string): Promise<void> {
    await cmd('ip', ['-n', this.ns, 'route', 'replace', subnet, 'via', via]);
  }

  async destroy(): Promise<void> {
    await cmd('ip', ['netns', 'del', this.ns], { check: false });
  }
}
