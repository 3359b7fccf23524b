/** Builds both drivers on in-memory fakes, sharing one state, as main.ts does with real adapters. */
import { parseDefaultPools } from '../../src/config.js';
import { LocalHost } from '../../src/driver/host.js';
import { IpamDriver } from '../../src/driver/ipam-driver.js';
import { NetworkDriver } from '../../src/driver/network-driver.js';
import { State } from '../../src/driver/state.js';
import { silentLogger } from '../../src/log.js';
import { FakeFirewall, FakeLinks, FakeOvs, FakeProbe, FakeSysctl, MemoryStore } from '../fakes/index.js';

export async function world(options: { store?: MemoryStore; now?: () => number } = {}) {
  const store = options.store ?? new MemoryStore();
  const state = await State.open(store);
  const ovs = new FakeOvs();
  const links = new FakeLinks();
  const firewall = new FakeFirewall();
  const sysctl = new FakeSysctl();
  const host = new LocalHost({ ovs, links, firewall, sysctl, datapathProbe: new FakeProbe('netdev'), datapath: 'auto', log: silentLogger });
  const ipam = new IpamDriver({
    state,
    routes: links,
    defaultPools: parseDefaultPools('test', '10.200.0.0/22:24,fd00:aa::/62:64'),
    log: silentLogger,
    now: options.now,
  });
  const network = new NetworkDriver({ state, host, ipam, defaults: { bridge: 'ovs0', mtu: 1500 }, log: silentLogger });
  return { store, state, ovs, links, firewall, sysctl, host, ipam, network };
}

export const id = (c: string) => c.repeat(64).slice(0, 64);
