/** Builds both drivers on in-memory fakes, sharing one state, as main.ts does with real adapters. */
import { parseDefaultPools } from '../../src/config.js';
import { LocalHost } from '../../src/driver/host.js';
import { IpamDriver } from '../../src/driver/ipam-driver.js';
import { NetworkDriver } from '../../src/driver/network-driver.js';
import { OvnBackend } from '../../src/driver/ovn-backend.js';
import type { OvnExternal } from '../../src/domain/ovn-router.js';
import { State } from '../../src/driver/state.js';
import { silentLogger } from '../../src/log.js';
import { FakeFirewall, FakeLinks, FakeNorthbound, type FakeSouthbound, FakeOvs, FakeHostPorts, FakeProbe, FakeSysctl, MemoryStore } from '../fakes/index.js';

export interface WorldOptions {
  store?: MemoryStore;
  now?: () => number;
  /** OVN mode on, with this (shared) northbound database; `chassis` names the host (default "chassis-a"). */
  ovn?: { nb: FakeNorthbound; chassis?: string; encapIp?: string; installTimeoutMs?: number; external?: OvnExternal; hostId?: string; register?: boolean; southbound?: FakeSouthbound; notes?: { read(): string[]; write(chassis: readonly string[]): void } };
  /** Veth pairs made ahead of need per network shape (none by default). */
  sparePairs?: number;
}

/** Where a world keeps the chassis names it left notes on (a file in its state directory, for real). */
export function memoryNotes(): { read(): string[]; write(chassis: readonly string[]): void } {
  let noted: string[] = [];
  return { read: () => [...noted], write: (chassis) => void (noted = [...chassis]) };
}

export async function world(options: WorldOptions = {}) {
  const store = options.store ?? new MemoryStore();
  const state = await State.open(store);
  const ovs = new FakeOvs();
  const links = new FakeLinks();
  const firewall = new FakeFirewall();
  const sysctl = new FakeSysctl();
  const hostPorts = new FakeHostPorts();
  const host = new LocalHost({ ovs, links, firewall, sysctl, hostPorts, datapathProbe: new FakeProbe('netdev'), datapath: 'auto', log: silentLogger });
  let ovn: OvnBackend | undefined;
  if (options.ovn) {
    const chassis = options.ovn.chassis ?? 'chassis-a';
    const encapIp = options.ovn.encapIp ?? '10.250.0.1';
    Object.assign(ovs.system, { 'system-id': chassis, hostname: `host-${chassis}`, 'ovn-encap-ip': encapIp, 'ovn-encap-type': 'geneve', 'ovn-remote': 'tcp:10.250.0.1:6642' });
    ovs.bridges.set('br-int', { name: 'br-int', datapathType: 'netdev', externalIds: {} });
    links.links.set('br-phy', { kind: 'openvswitch', mtu: 1500, addresses: [`${encapIp}/24`], txOff: false });
    ovn = new OvnBackend({ host, state, nb: options.ovn.nb, bridge: 'br-int', installTimeoutMs: options.ovn.installTimeoutMs ?? 1_000, external: options.ovn.external, defaults: { mtu: 1500 }, hostId: options.ovn.hostId ?? `id-of-${chassis}`, register: options.ovn.register ?? true, notes: options.ovn.notes ?? memoryNotes(), openSouthbound: options.ovn.southbound && ((remotes) => (options.ovn!.southbound!.opened.push(remotes), options.ovn!.southbound!)), log: silentLogger });
  }
  const ipam = new IpamDriver({
    state,
    routes: links,
    defaultPools: parseDefaultPools('test', '10.200.0.0/22:24,fd00:aa::/62:64'),
    distributed: ovn,
    log: silentLogger,
    now: options.now,
  });
  const network = new NetworkDriver({ state, host, ovn, ipam, defaults: { bridge: 'ovs0', mtu: 1500, ovn: ovn ? { bridge: 'br-int' } : undefined }, log: silentLogger, sparePairs: options.sparePairs, spareRefillDelayMs: 0, retireDelayMs: 0 });
  return { store, state, ovs, links, firewall, sysctl, hostPorts, host, ipam, network, ovn };
}

export const id = (c: string) => c.repeat(64).slice(0, 64);
