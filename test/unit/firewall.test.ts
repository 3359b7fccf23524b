import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { firewallRules } from '../../src/domain/firewall.js';
import { parseNetworkOptions } from '../../src/domain/options.js';
import type { NetworkRecord } from '../../src/domain/records.js';

function network(id: string, generic: Record<string, string>, internal = false): NetworkRecord {
  const spec = parseNetworkOptions(generic, { internal, ipv6: false }, { bridge: 'ovs0' });
  return {
    id: id.repeat(64).slice(0, 64),
    spec,
    ipv4: [{ addressSpace: 'local', pool: `10.${id.charCodeAt(0) % 250}.0.0/24`, gateway: '10.0.0.1', auxAddresses: {} }],
    ipv6: [],
    gatewayPort: spec.gatewayMode === 'nat' || spec.gatewayMode === 'routed' ? `ovsgw${id.repeat(10).slice(0, 10)}` : undefined,
    localTag: spec.mode === 'ovn' ? undefined : spec.vlan,
    mtu: 1500,
    datapath: 'netdev',
    state: 'ready',
    createdAt: '',
  };
}

const text = (rules: readonly (readonly string[])[]) => rules.map((r) => r.join(' '));

describe('firewall rules', () => {
  it('masquerades a nat network and lets only replies in', () => {
    const rules = firewallRules([network('a', {})]);
    assert.deepEqual(text(rules.v4.nat), ['-s 10.97.0.0/24 ! -o ovsgwaaaaaaaaaa -m comment --comment ovsnet:aaaaaaaaaaaa -j MASQUERADE']);
    assert.deepEqual(text(rules.v4.filter), [
      '-i ovsgwaaaaaaaaaa -o ovsgw+ -m comment --comment ovsnet:aaaaaaaaaaaa -j DROP',
      '-i ovsgwaaaaaaaaaa -m comment --comment ovsnet:aaaaaaaaaaaa -j ACCEPT',
      '-o ovsgwaaaaaaaaaa -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment ovsnet:aaaaaaaaaaaa -j ACCEPT',
      '-o ovsgwaaaaaaaaaa -m comment --comment ovsnet:aaaaaaaaaaaa -j DROP',
    ]);
    assert.deepEqual(rules.v6.filter, []);
  });

  it('routes without NAT in routed mode', () => {
    const rules = firewallRules([network('b', { gateway_mode: 'routed' })]);
    assert.deepEqual(rules.v4.nat, []);
    assert.ok(text(rules.v4.filter).includes('-o ovsgwbbbbbbbbbb -m comment --comment ovsnet:bbbbbbbbbbbb -j ACCEPT'));
  });

  it('drops everything through the host for an internal network', () => {
    const rules = firewallRules([network('c', {}, true)]);
    assert.deepEqual(rules.v4.nat, []);
    assert.deepEqual(text(rules.v4.filter).slice(1), [
      '-i ovsgwcccccccccc -m comment --comment ovsnet:cccccccccccc -j DROP',
      '-o ovsgwcccccccccc -m comment --comment ovsnet:cccccccccccc -j DROP',
    ]);
  });

  it('has nothing on the host for external and isolated networks', () => {
    const rules = firewallRules([network('d', { gateway_mode: 'external' }), network('e', { gateway_mode: 'isolated' })]);
    assert.deepEqual(rules, { v4: { filter: [], nat: [], dnat: [] }, v6: { filter: [], nat: [], dnat: [] } });
  });

  it('puts every isolation rule before any accept rule', () => {
    const rules = text(firewallRules([network('b', { gateway_mode: 'routed' }), network('a', {})]).v4.filter);
    const lastDrop = rules.map((r) => r.includes('-o ovsgw+')).lastIndexOf(true);
    const firstAccept = rules.findIndex((r) => r.endsWith('ACCEPT'));
    assert.equal(lastDrop, 1);
    assert.ok(firstAccept > lastDrop);
  });

  it('is a pure function of the networks: same input, same rules, in a stable order', () => {
    const nets = [network('a', {}), network('b', { gateway_mode: 'routed' })];
    assert.deepEqual(firewallRules(nets), firewallRules([...nets].reverse()));
  });
});
