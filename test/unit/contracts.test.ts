/** The ports' contracts (test/contract) held against the in-memory fakes; test/integration holds them against the real adapters. */
import { describe } from 'node:test';
import { firewallContract } from '../contract/firewall.js';
import { linksContract } from '../contract/links.js';
import { northboundContract } from '../contract/northbound.js';
import { ovsContract } from '../contract/ovs.js';
import { storeContract } from '../contract/store.js';
import { FakeFirewall, FakeLinks, FakeNorthbound, FakeOvs, MemoryStore } from '../fakes/index.js';

describe('contract: FakeOvs', () => {
  ovsContract(async () => {
    const ovs = new FakeOvs();
    ovs.autoInstall = false; // no ovn-controller here
    return {
      ovs,
      foreignBridge: async (name) => void ovs.bridges.set(name, { name, datapathType: 'netdev', externalIds: {} }),
      foreignPort: async (bridge, name) => void ovs.ports.set(name, { bridge, name, type: 'internal', tag: undefined, externalIds: {} }),
      device: async () => {},
      foreignFlow: async (bridge, cookie) => {
        const table = ovs.flowTables.get(bridge) ?? new Map();
        table.set(`foreign|${cookie}`, { cookie, text: 'priority=5,udp,tp_dst=9,actions=drop' });
        ovs.flowTables.set(bridge, table);
      },
      allCookies: async (bridge) => [...(ovs.flowTables.get(bridge)?.values() ?? [])].map((f) => f.cookie),
    };
  });
});

describe('contract: FakeLinks', () => {
  linksContract(async () => new FakeLinks());
});

describe('contract: FakeNorthbound', () => {
  northboundContract(async () => new FakeNorthbound());
});

describe('contract: MemoryStore', () => {
  storeContract(async () => {
    const store = new MemoryStore();
    return { store, reopen: async () => store };
  });
});

describe('contract: FakeFirewall', () => {
  firewallContract(async () => new FakeFirewall());
});
