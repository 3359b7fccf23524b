import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { chooseIptables, firewallRules } from '../../src/domain/firewall.js';
import { foreignBridges } from '../../src/domain/host.js';
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
const NONE = { filter: [], nat: [], dnat: [], isolate: [], input: [], raw: [] };

describe('firewall rules', () => {
  const NOT_ALLOWED = '-m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT';

  it('masquerades a nat network; lets nothing new in but published ports, in the mangle table; accepts what is left', () => {
    const rules = firewallRules([network('a', {})]);
    assert.deepEqual(text(rules.v4.nat), ['-s 10.97.0.0/24 ! -o ovsgwaaaaaaaaaa -m comment --comment ovsnet:aaaaaaaaaaaa -j MASQUERADE']);
    assert.deepEqual(text(rules.v4.isolate), [
      `-i ovsgwaaaaaaaaaa -o ovsgw+ ${NOT_ALLOWED} -m comment --comment ovsnet:aaaaaaaaaaaa -j DROP`,
      `-o ovsgwaaaaaaaaaa ${NOT_ALLOWED} -m comment --comment ovsnet:aaaaaaaaaaaa -j DROP`,
    ]);
    assert.deepEqual(text(rules.v4.filter), [
      '-i ovsgwaaaaaaaaaa -m comment --comment ovsnet:aaaaaaaaaaaa -j ACCEPT',
      '-o ovsgwaaaaaaaaaa -m comment --comment ovsnet:aaaaaaaaaaaa -j ACCEPT',
    ]);
    assert.deepEqual(rules.v4.filter.filter((r) => r.includes('DROP')), [], 'no drop among the accepts: whoever comes first in FORWARD, the drops come before');
    assert.deepEqual([rules.v4.input, rules.v6.filter, rules.v6.isolate], [[], [], []]);
  });

  it('routes without NAT in routed mode, and lets new traffic in from outside but not from other networks', () => {
    const rules = firewallRules([network('b', { gateway_mode: 'routed' })]);
    assert.deepEqual(rules.v4.nat, []);
    assert.deepEqual(text(rules.v4.isolate), [`-i ovsgwbbbbbbbbbb -o ovsgw+ ${NOT_ALLOWED} -m comment --comment ovsnet:bbbbbbbbbbbb -j DROP`]);
    assert.ok(text(rules.v4.filter).includes('-o ovsgwbbbbbbbbbb -m comment --comment ovsnet:bbbbbbbbbbbb -j ACCEPT'));
  });

  it('drops everything through the host for an internal network, published ports and the host itself included, and accepts nothing', () => {
    const rules = firewallRules([network('c', {}, true)]);
    assert.deepEqual(rules.v4.nat, []);
    assert.deepEqual(rules.v4.filter, []);
    assert.deepEqual(text(rules.v4.isolate), [
      '-i ovsgwcccccccccc -m comment --comment ovsnet:cccccccccccc -j DROP',
      '-o ovsgwcccccccccc -m comment --comment ovsnet:cccccccccccc -j DROP',
    ]);
    assert.deepEqual(text(rules.v4.input), ['-i ovsgwcccccccccc -m comment --comment ovsnet:cccccccccccc -j DROP']);
  });

  it('keeps every network apart from the Linux bridges of other container networks, both ways, but for replies and published ports', () => {
    const rules = firewallRules([network('a', {}), network('c', {}, true)], [], ['docker0', 'br-0123456789ab']);
    assert.deepEqual(text(rules.v4.isolate).filter((r) => r.includes('ovsnet:foreign')), [
      `-i ovsgw+ -o br-0123456789ab ${NOT_ALLOWED} -m comment --comment ovsnet:foreign -j DROP`,
      `-i br-0123456789ab -o ovsgw+ ${NOT_ALLOWED} -m comment --comment ovsnet:foreign -j DROP`,
      `-i ovsgw+ -o docker0 ${NOT_ALLOWED} -m comment --comment ovsnet:foreign -j DROP`,
      `-i docker0 -o ovsgw+ ${NOT_ALLOWED} -m comment --comment ovsnet:foreign -j DROP`,
    ]);
    assert.deepEqual(firewallRules([], [], ['docker0']), { v4: NONE, v6: NONE }, 'nothing without a network of the plugin on the host');
  });

  it("takes for other container networks the bridges they name, never the host's own uplink bridge", () => {
    const bridge = { kind: 'bridge', mtu: 1500, up: true };
    const links = new Map(
      ['docker0', 'docker_gwbridge', 'br-0123456789ab', 'virbr0', 'lxcbr0', 'lxdbr0', 'incusbr0', 'podman0', 'cni-podman1', 'cni0', 'br0', 'vmbr0', 'br-lan', 'br-0123'].map((n) => [n, bridge]),
    );
    links.set('veth12', { kind: 'veth', mtu: 1500, up: true });
    assert.deepEqual(foreignBridges(links), ['br-0123456789ab', 'cni-podman1', 'cni0', 'docker0', 'docker_gwbridge', 'incusbr0', 'lxcbr0', 'lxdbr0', 'podman0', 'virbr0']);
  });

  it("drops what the host's own stack would take from the host ends of the plugin's veths, in both families, whatever the networks", () => {
    const rules = firewallRules([network('d', { gateway_mode: 'isolated' })]);
    const ports = ['-m devgroup --src-group 0x6f76 -m comment --comment ovsnet:ports -j DROP'];
    assert.deepEqual([text(rules.v4.raw), text(rules.v6.raw)], [ports, ports]);
  });

  it('has nothing else on the host for external and isolated networks', () => {
    const rules = firewallRules([network('d', { gateway_mode: 'external' }), network('e', { gateway_mode: 'isolated' })], [], ['docker0']);
    assert.deepEqual({ ...rules.v4, raw: [] }, NONE);
    assert.deepEqual({ ...rules.v6, raw: [] }, NONE);
  });

  it('is a pure function of the networks and bridges: same input, same rules, in a stable order', () => {
    const nets = [network('a', {}), network('b', { gateway_mode: 'routed' })];
    assert.deepEqual(firewallRules(nets, [], ['docker0', 'br-1']), firewallRules([...nets].reverse(), [], ['br-1', 'docker0']));
  });
});

describe('which iptables the plugin writes with', () => {
  const save = (...rules: string[]) => ['*filter', ':FORWARD DROP [0:0]', ...rules, 'COMMIT'].join('\n');
  const docker = save('-A FORWARD -j DOCKER-USER', '-A FORWARD -j DOCKER-FORWARD', '-A DOCKER-USER -j RETURN');

  it("follows Docker's chains, wherever plain iptables points", () => {
    assert.equal(chooseIptables({ legacy: docker, nft: save(), plain: 'nft' }).variant, 'legacy');
    assert.equal(chooseIptables({ legacy: save(), nft: docker, plain: 'legacy' }).variant, 'nft');
    // The plugin's own rules in the other one do not count.
    assert.equal(chooseIptables({ legacy: docker, nft: save('-A FORWARD -j OVSNET-FORWARD', '-A OVSNET-FORWARD -i ovsgw-1 -j ACCEPT', '-A OVSNET-FORWARD -o ovsgw-1 -j ACCEPT', '-A OVSNET-FORWARD -i ovsgw-2 -j ACCEPT'), plain: 'nft' }).variant, 'legacy');
  });

  it("without Docker's chains (Docker on nftables, or no Docker): the one with more rules, then plain iptables, then nft", () => {
    assert.equal(chooseIptables({ legacy: save('-A INPUT -i eth1 -j DROP'), nft: save(), plain: 'nft' }).variant, 'legacy');
    assert.equal(chooseIptables({ legacy: save(), nft: save(), plain: 'legacy' }).variant, 'legacy');
    assert.equal(chooseIptables({ legacy: save(), nft: save(), plain: undefined }).variant, 'nft');
  });

  it('takes the only one installed', () => {
    assert.equal(chooseIptables({ legacy: undefined, nft: save(), plain: 'legacy' }).variant, 'nft');
    assert.equal(chooseIptables({ legacy: docker, nft: undefined, plain: undefined }).variant, 'legacy');
    assert.equal(chooseIptables({ legacy: undefined, nft: undefined, plain: 'legacy' }).variant, 'legacy');
  });

  it('says why', () => {
    assert.match(chooseIptables({ legacy: docker, nft: save(), plain: 'nft' }).why, /Docker's rules are there \(3 rules/);
  });
});
