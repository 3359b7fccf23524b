/**
 * What every implementation of the Firewall port must do, run against the
 * in-memory fake (unit tier) and the iptables adapter in a scratch network
 * namespace (integration tier): its chains read back exactly as synced, a sync
 * replaces them whole, the jumps into them are there after a sync, and no
 * rule leaves nothing of the plugin's.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { EMPTY_RULES, firewallRules } from '../../src/domain/firewall.js';
import { parseNetworkOptions } from '../../src/domain/options.js';
import type { EndpointRecord, NetworkRecord } from '../../src/domain/records.js';
import type { Firewall } from '../../src/driver/ports.js';

function network(c: string, generic: Record<string, string>, internal = false): NetworkRecord {
  return {
    id: c.repeat(64),
    spec: parseNetworkOptions({ vlan: '9', ...generic }, { internal, ipv6: true }, { bridge: 'ovs0' }),
    ipv4: [{ addressSpace: 'local', pool: `10.7${c}.0.0/24`, gateway: `10.7${c}.0.1`, auxAddresses: {} }],
    ipv6: [{ addressSpace: 'local', pool: `fd7${c}::/64`, gateway: `fd7${c}::1`, auxAddresses: {} }],
    gatewayPort: `ovsgw${c.repeat(10)}`,
    localTag: 9,
    mtu: 1500,
    datapath: 'netdev',
    state: 'ready',
    createdAt: new Date(0).toISOString(),
  };
}

const published: EndpointRecord = {
  id: 'e'.repeat(64), networkId: '1'.repeat(64), address: '10.71.0.5/24', addressIpv6: 'fd71::5/64', mac: '02:42:0a:47:00:05', hostIf: 'ovseeeeeeeeeeee', peerIf: 'ovceeeeeeeeeeee',
  joined: true, sandboxKey: '', createdAt: new Date(0).toISOString(), ports: [{ proto: 'tcp', hostIp: '', hostPort: 8080, port: 80 }],
};

/** Registers the contract's tests; `fresh` gives a firewall with none of the plugin's chains yet. */
export function firewallContract(fresh: () => Promise<Firewall>): void {
  it('reads its chains back exactly as synced, in both families and every table, with the jumps into them', async () => {
    const firewall = await fresh();
    const rules = firewallRules([network('1', {}), network('2', { gateway_mode: 'routed' }), network('3', {}, true)], [published], ['docker0']);
    await firewall.sync(rules);
    const text = (list: readonly (readonly string[])[]) => list.map((r) => r.join(' '));
    const read = await firewall.read();
    for (const [family, key] of [['v4', '4'], ['v6', '6']] as const) {
      const f = rules[family];
      assert.deepEqual(
        [read[`filter${key}`], read[`nat${key}`], read[`dnat${key}`], read[`isolate${key}`], read[`input${key}`], read[`raw${key}`]],
        [text(f.filter), text(f.nat), text(f.dnat), text(f.isolate), text(f.input), text(f.raw)],
        `IPv${key}`,
      );
    }
    assert.equal(read.jumps, true);
  });

  it('replaces its chains whole on the next sync; with no rule, nothing of the plugin\'s is left in them', async () => {
    const firewall = await fresh();
    await firewall.sync(firewallRules([network('1', {}), network('2', {})]));
    await firewall.sync(firewallRules([network('2', {})]));
    const read = await firewall.read();
    assert.ok(read.filter4.length > 0 && read.filter4.every((r) => r.includes('ovsnet:222222222222')), 'only the rules of the networks left');
    await firewall.sync(EMPTY_RULES);
    const empty = await firewall.read();
    assert.deepEqual([empty.filter4, empty.nat4, empty.isolate4, empty.raw4, empty.filter6, empty.isolate6], [[], [], [], [], [], []]);
  });
}
