import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { PluginState } from '../../src/cli/client.js';
import { toDot, toSvg, topology } from '../../src/cli/graph.js';
import { id } from './setup.js';

const subnet = (pool: string, gateway?: string) => ({ addressSpace: 'local', pool, ...(gateway ? { gateway } : {}), auxAddresses: {} });
const network = (n: string, spec: Record<string, unknown>, pool: string, o: Record<string, unknown> = {}) => ({
  id: id(n), state: 'ready', createdAt: '', mtu: 1500, ipv4: [subnet(pool, pool.replace('.0/24', '.1'))], ipv6: [], ...o,
  spec: { gatewayMode: 'nat', ...spec },
});
const endpoint = (e: string, n: string, address: string) => ({ id: id(e), networkId: id(n), address, addressIpv6: '', mac: '02:42:00:00:00:01', hostIf: `ovs${e.repeat(12)}`, peerIf: `ovc${e.repeat(12)}`, joined: true, createdAt: '' });

const STATE = {
  networks: [
    network('1', { mode: 'vlan', bridge: 'ovs0', vlan: 860, uplink: 'eth1' }, '10.1.0.0/24', { gatewayPort: 'ovsgw111111111', localTag: 860 }),
    network('2', { mode: 'vxlan', bridge: 'ovs-vxlan', tunnelKey: 42, peers: ['192.168.50.2', '192.168.50.3'] }, '10.2.0.0/24', { localTag: 1 }),
    network('3', { mode: 'ovn', bridge: 'br-int', ovnNetwork: 'web', ovnRouter: 'edge' }, '10.3.0.0/24', { ovn: { switchName: 'ovsnet-10.3.0.0_24', subnet: '10.3.0.0/24' } }),
    network('4', { mode: 'vlan', bridge: 'ovs0', vlan: 861, uplink: 'eth1' }, '10.4.0.0/24', { localTag: 861 }),
  ],
  endpoints: [endpoint('a', '1', '10.1.0.2/24'), endpoint('b', '2', '10.2.0.2/24'), endpoint('c', '3', '10.3.0.2/24')],
  pools: [],
  addresses: [],
  ovnHosts: { [id('3')]: ['h1', 'h2'] },
  ovn: {
    ports: { [id('3')]: [{ port: 'ovsnet-10.3.0.0_24-10.3.0.2', address: '10.3.0.2', host: 'h1' }, { port: 'ovsnet-10.3.0.0_24-10.3.0.7', address: '10.3.0.7', host: 'h2' }] },
    gateways: { edge: { chassis: [{ chassis: 'gw-a', priority: 20 }, { chassis: 'gw-b', priority: 10 }], active: { chassis: 'gw-b', hostname: 'hb' } } },
  },
} as unknown as PluginState;

const NAMES = {
  networks: new Map([[id('1'), 'app "860"'], [id('2'), 'over'], [id('3'), 'web']]),
  containers: new Map([[id('a'), { name: 'web1', id: 'c1' }], [id('b'), { name: 'db1', id: 'c2' }]]),
};

describe('ovsnet graph', () => {
  it('holds each bridge with its networks, and each network with its containers, gateway, uplink, peers, router and hosts', () => {
    const t = topology(STATE, NAMES, 'h1');
    assert.deepEqual(t.bridges.map((b) => [b.name, b.networks.length]), [['br-int', 1], ['ovs-vxlan', 1], ['ovs0', 2]]);
    assert.deepEqual(t.containers.map((c) => [c.container, c.networkId === id('1') ? 1 : c.networkId === id('2') ? 2 : 3]), [['web1', 1], ['db1', 2], ['', 3]]);
    const dot = toDot(t);
    for (const text of ['subgraph "cluster_ovs0"', 'app \\"860\\"', 'vlan 860', 'uplink eth1', 'peer 192.168.50.2', 'peer 192.168.50.3', 'vxlan tunnel', 'OVN router edge', 'host h1 (this one)', 'host h2', 'gateway port ovsgw111111111', 'web1\\n10.1.0.2/24\\nport ovsaaaaaaaaaaaa', 'ccccccccccccc'.slice(0, 12)]) {
      assert.ok(dot.includes(text), `${text} in:\n${dot}`);
    }
    assert.equal(dot.match(/^ +"uplink:eth1" \[label/gm)?.length, 1, 'an uplink two networks share is one node');
    assert.deepEqual(t.remote, [{ networkId: id('3'), port: 'ovsnet-10.3.0.0_24-10.3.0.7', address: '10.3.0.7', host: 'h2' }], "another host's container; this host's own is its container");
    for (const text of ['10.3.0.7\\nlogical port ovsnet-10.3.0.0_24-10.3.0.7\\non host h2', 'gateway chassis gw-a\\npriority 20\\nstandby', 'gateway chassis gw-b\\npriority 10\\nactive (host hb)', '"host:h2" -- "lp:ovsnet-10.3.0.0_24-10.3.0.7"']) {
      assert.ok(dot.includes(text), `${text} in:\n${dot}`);
    }
    assert.match(dot, /"router:edge" -- "chassis:gw-b" \[label="way out \(active\)", style="bold"\]/);
    assert.equal(dot.match(/-- "uplink:eth1"/g)?.length, 2, 'with an edge from each');
  });

  it('is a graph Graphviz lays out as SVG', async () => {
    const svg = await toSvg(toDot(topology(STATE, NAMES, 'h1')));
    assert.match(svg, /<svg /);
    assert.ok(svg.includes('web1') && svg.includes('OVN router edge'));
    await assert.rejects(toSvg('graph {', 'dot'), /dot failed/);
    await assert.rejects(toSvg('graph {}', 'no-such-dot'), /Graphviz's dot, which is not installed/);
  });
});
