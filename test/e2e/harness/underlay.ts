/**
 * The network between simulated hosts: a namespace with a Linux bridge that
 * every host is cabled to with a veth pair. On each host the cable (eth1)
 * is a port of an OVS netdev bridge br-phy that holds the host's underlay
 * address, which is what userspace tunnels need (the tunnel endpoint address
 * must live on an OVS bridge of the netdev datapath).
 */
import { assertUnrouted } from './addresses.js';
import { cmd } from './proc.js';
import { tagged } from './sim-host.js';
import type { SimHost } from './sim-host.js';

export class Underlay {
  readonly ns: string;
  private readonly attached: SimHost[] = [];

  private constructor(readonly name: string) {
    this.ns = `ovsnet-t-${tagged(name)}`;
  }

  static async create(name: string): Promise<Underlay> {
    const underlay = new Underlay(name);
    await cmd('ip', ['netns', 'del', underlay.ns], { check: false });
    await cmd('ip', ['netns', 'add', underlay.ns]);
    await cmd('ip', ['-n', underlay.ns, 'link', 'add', 'ul0', 'type', 'bridge']);
    await cmd('ip', ['-n', underlay.ns, 'link', 'set', 'ul0', 'up']);
    return underlay;
  }

  /** Cables a host in and gives it `address` (CIDR) on br-phy; again after the host's power cut, too. */
  async attach(host: SimHost, address: string, mtu = 1500): Promise<void> {
    await assertUnrouted([address], `the underlay address of ${host.name}`);
    await this.cable(host, 'eth1', mtu);
    await host.vsctl(['--may-exist', 'add-br', 'br-phy', '--', 'set', 'bridge', 'br-phy', 'datapath_type=netdev', '--', '--may-exist', 'add-port', 'br-phy', 'eth1']);
    await host.exec('ip', ['link', 'set', 'br-phy', 'mtu', String(mtu), 'up']);
    await host.exec('ip', ['address', 'replace', address, 'dev', 'br-phy']);
    if (!this.attached.includes(host)) this.attached.push(host);
  }

  /**
   * Cables a host in with a bare NIC `ifname` (no address, on no bridge): a trunk port of the physical
   * network, for VLAN networks with `-o uplink=<ifname>`. The segment's Linux bridge forwards tagged frames as
   * they are.
   */
  async cable(host: SimHost, ifname: string, mtu = 1500): Promise<void> {
    const cable = `ul-${host.name}`.slice(0, 15);
    await cmd('ip', ['-n', this.ns, 'link', 'del', cable], { check: false });
    await cmd('ip', ['-n', this.ns, 'link', 'add', 'name', cable, 'mtu', String(mtu), 'type', 'veth', 'peer', 'name', ifname, 'mtu', String(mtu), 'netns', host.ns]);
    await cmd('ip', ['-n', this.ns, 'link', 'set', cable, 'master', 'ul0', 'up']);
    await host.exec('ip', ['link', 'set', ifname, 'up']);
  }

  async destroy(): Promise<void> {
    await cmd('ip', ['netns', 'del', this.ns], { check: false });
  }
}
