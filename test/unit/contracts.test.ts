/** The ports' contracts (test/contract) held against the in-memory fakes; test/integration holds them against the real adapters. */
import { describe } from 'node:test';
import { linksContract } from '../contract/links.js';
import { northboundContract } from '../contract/northbound.js';
import { ovsContract } from '../contract/ovs.js';
import { FakeLinks, FakeNorthbound, FakeOvs } from '../fakes/index.js';

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
