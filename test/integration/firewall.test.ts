/**
 * The iptables adapter inside a scratch network namespace: its chains made
 * exactly as asked, read back with the jumps into them, and nothing else
 * touched.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { run, type Runner } from '../../src/adapters/exec.js';
import { IptablesFirewall } from '../../src/adapters/iptables.js';
import { firewallRules } from '../../src/domain/firewall.js';
import { parseNetworkOptions } from '../../src/domain/options.js';
import type { NetworkRecord } from '../../src/domain/records.js';
import { cmd } from '../e2e/harness/proc.js';
import { firewallContract } from '../contract/firewall.js';

const NS = 'ovsnet-t-it-fw';
const inNamespace: Runner = (file, args, options) => run('nsenter', [`--net=/run/netns/${NS}`, '--', file, ...args], options);
const ipt = (args: string[]) => cmd('ip', ['netns', 'exec', NS, 'iptables', '-w', ...args]);

function network(id: string, gatewayMode: string, internal = false): NetworkRecord {
  return {
    id: id.repeat(64),
    spec: parseNetworkOptions({ gateway_mode: gatewayMode, vlan: '9' }, { internal, ipv6: true }, { bridge: 'ovs0' }),
    ipv4: [{ addressSpace: 'local', pool: `10.8${id}.0.0/24`, gateway: `10.8${id}.0.1`, auxAddresses: {} }],
    ipv6: [{ addressSpace: 'local', pool: `fd00:${id}::/64`, gateway: `fd00:${id}::1`, auxAddresses: {} }],
    gatewayPort: `ovsgw${id.repeat(10)}`,
    localTag: 9,
    mtu: 1500,
    datapath: 'netdev',
    state: 'ready',
    createdAt: new Date(0).toISOString(),
  };
}

describe('iptables adapter in a scratch namespace', () => {
  const firewall = new IptablesFirewall(inNamespace);

  before(async () => {
    await cmd('ip', ['netns', 'del', NS], { check: false });
    await cmd('ip', ['netns', 'add', NS]);
    await ipt(['-N', 'DOCKER-USER']);
    await ipt(['-A', 'FORWARD', '-j', 'DOCKER-USER']);
    await ipt(['-A', 'FORWARD', '-i', 'foreign0', '-j', 'ACCEPT']);
    await ipt(['-t', 'mangle', '-A', 'FORWARD', '-i', 'foreign0', '-j', 'MARK', '--set-mark', '7']);
    await ipt(['-t', 'nat', '-A', 'POSTROUTING', '-s', '203.0.113.0/24', '-j', 'MASQUERADE']);
  });
  after(async () => {
    await cmd('ip', ['netns', 'del', NS], { check: false });
  });

  it('makes its chains exactly the rules, reads them back, and puts its jump right after DOCKER-USER', async () => {
    const nat = network('1', 'nat');
    const endpoint = {
      id: 'e'.repeat(64), networkId: nat.id, address: '10.81.0.5/24', addressIpv6: 'fd00:1::5/64', mac: '02:42:0a:63:01:05', hostIf: 'ovseeeeeeeeeeee', peerIf: 'ovceeeeeeeeeeee',
      joined: true, sandboxKey: '', createdAt: new Date(0).toISOString(),
      ports: [{ proto: 'tcp', hostIp: '', hostPort: 8080, port: 80 }, { proto: 'udp', hostIp: '127.0.0.2', hostPort: 5353, port: 53 }],
    } as const;
    const rules = firewallRules([nat, network('2', 'routed'), network('4', 'nat', true)], [endpoint], ['br-0123456789ab', 'docker0']);
    assert.deepEqual([rules.v4.dnat.length, rules.v6.dnat.length, rules.v4.input.length], [2, 1, 1]);
    await firewall.sync(rules);
    const read = await firewall.read();
    const text = (list: readonly (readonly string[])[]) => list.map((r) => r.join(' '));
    const expected = (f: 'v4' | 'v6') => ({ filter: text(rules[f].filter), nat: text(rules[f].nat), dnat: text(rules[f].dnat), isolate: text(rules[f].isolate), input: text(rules[f].input), raw: text(rules[f].raw) });
    const [v4, v6] = [expected('v4'), expected('v6')];
    assert.deepEqual(read, {
      filter4: v4.filter, nat4: v4.nat, dnat4: v4.dnat, isolate4: v4.isolate, input4: v4.input, raw4: v4.raw,
      filter6: v6.filter, nat6: v6.nat, dnat6: v6.dnat, isolate6: v6.isolate, input6: v6.input, raw6: v6.raw,
      jumps: true,
    }, 'read back exactly as written, the mangle and raw chains included');
    assert.ok((await ipt(['-t', 'raw', '-S', 'PREROUTING'])).stdout.includes('-A PREROUTING -j OVSNET-PORTS'));
    const forward = (await ipt(['-S', 'FORWARD'])).stdout.split('\n').filter((l) => l.startsWith('-A'));
    assert.deepEqual(forward, ['-A FORWARD -j DOCKER-USER', '-A FORWARD -j OVSNET-FORWARD', '-A FORWARD -i foreign0 -j ACCEPT']);
    const mangle = (await ipt(['-t', 'mangle', '-S', 'FORWARD'])).stdout.split('\n').filter((l) => l.startsWith('-A'));
    assert.deepEqual(mangle, ['-A FORWARD -j OVSNET-ISOLATE', '-A FORWARD -i foreign0 -j MARK --set-xmark 0x7/0xffffffff'], 'isolation first of all, before any accept');
    assert.ok((await ipt(['-t', 'mangle', '-S', 'INPUT'])).stdout.includes('-A INPUT -j OVSNET-INPUT'));
  });

  it('replaces its chains whole on the next sync, once, and leaves foreign rules alone', async () => {
    await firewall.sync(firewallRules([network('3', 'nat')]));
    await firewall.sync(firewallRules([network('3', 'nat')]));
    const read = await firewall.read();
    assert.ok(read.filter4.every((r) => r.includes('ovsnet:333333333333')));
    assert.equal(read.nat4.length, 1);
    assert.equal((await ipt(['-S', 'FORWARD'])).stdout.split('\n').filter((l) => l === '-A FORWARD -j OVSNET-FORWARD').length, 1, 'one jump');
    assert.equal((await ipt(['-C', 'FORWARD', '-i', 'foreign0', '-j', 'ACCEPT'])).exitCode, 0);
    assert.equal((await ipt(['-t', 'nat', '-C', 'POSTROUTING', '-s', '203.0.113.0/24', '-j', 'MASQUERADE'])).exitCode, 0);
  });

  it('sees a jump someone removed, and the next sync puts it back', async () => {
    await ipt(['-t', 'nat', '-D', 'POSTROUTING', '-j', 'OVSNET-POSTROUTING']);
    assert.equal((await firewall.read()).jumps, false);
    await firewall.sync(firewallRules([network('3', 'nat')]));
    assert.equal((await firewall.read()).jumps, true);
  });

  describe('the Firewall contract', () => {
    firewallContract(async () => {
      // A namespace of its own each time: no chain of the plugin's in it yet.
      await cmd('ip', ['netns', 'del', NS], { check: false });
      await cmd('ip', ['netns', 'add', NS]);
      return firewall;
    });
  });
});

describe('the iptables the adapter writes with, in a scratch namespace with both', () => {
  const NS2 = 'ovsnet-t-it-fw2';
  const inNs2: Runner = (file, args, options) => run('nsenter', [`--net=/run/netns/${NS2}`, '--', file, ...args], options);
  const tool = (variant: 'legacy' | 'nft', args: string[]) => cmd('ip', ['netns', 'exec', NS2, `iptables-${variant}`, '-w', ...args]);
  /** The plugin's rules in one iptables (its chains' lines). */
  const ours = async (variant: 'legacy' | 'nft') => (await cmd('ip', ['netns', 'exec', NS2, `iptables-${variant}-save`])).stdout.split('\n').filter((l) => l.startsWith('-A OVSNET-'));
  const rules = firewallRules([network('5', 'nat')]);

  before(async () => {
    await cmd('ip', ['netns', 'del', NS2], { check: false });
    await cmd('ip', ['netns', 'add', NS2]);
    // Docker's chains in legacy iptables, with the policy it sets when it turns forwarding on.
    await tool('legacy', ['-N', 'DOCKER-USER']);
    await tool('legacy', ['-A', 'FORWARD', '-j', 'DOCKER-USER']);
    await tool('legacy', ['-P', 'FORWARD', 'DROP']);
  });
  after(async () => {
    await cmd('ip', ['netns', 'del', NS2], { check: false });
  });

  it("writes where Docker's chains are, follows them when they move (seen twice), and empties its chains in the one it left only once the other has them", async () => {
    const firewall = new IptablesFirewall(inNs2);
    await firewall.sync(rules);
    assert.ok((await ours('legacy')).some((l) => l.startsWith('-A OVSNET-FORWARD ')), 'in legacy iptables, with Docker');
    assert.deepEqual(await ours('nft'), []);

    // Docker moves to iptables-nft (as after a host switched its alternatives and rebooted Docker).
    await tool('legacy', ['-D', 'FORWARD', '-j', 'DOCKER-USER']);
    await tool('legacy', ['-X', 'DOCKER-USER']);
    await tool('nft', ['-N', 'DOCKER-USER']);
    await tool('nft', ['-A', 'FORWARD', '-j', 'DOCKER-USER']);
    assert.equal((await firewall.read()).leftIn, undefined, 'one sighting moves nothing');
    assert.ok((await ours('legacy')).length > 0);
    const moved = await firewall.read();
    assert.equal(moved.leftIn, 'iptables-legacy', 'the second does: its rules are yet to be written in the other, and emptied here');
    assert.deepEqual(moved.filter4, [], 'read from iptables-nft now');
    assert.ok((await ours('legacy')).length > 0, 'nothing emptied before the other has them');
    await firewall.sync(rules);
    assert.ok((await ours('nft')).some((l) => l.startsWith('-A OVSNET-FORWARD ')), 'in iptables-nft now');
    assert.deepEqual(await ours('legacy'), [], 'and emptied in legacy iptables');
    assert.equal((await firewall.read()).leftIn, undefined);
  });
});
