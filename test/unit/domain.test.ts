import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import IPCIDR from 'ip-cidr';
import {
  canonicalIp,
  contains,
  formatCidr,
  formatIp,
  overlaps,
  parseCidr,
  parseCidrWithHost,
  parseIp,
} from '../../src/domain/cidr.js';
import { boundsSize, isAssignable, nextFree, subnets, usableBounds } from '../../src/domain/allocator.js';
import { engineProblems } from '../../src/domain/engine.js';
import { HeldAddresses } from '../../src/domain/held-addresses.js';
import {
  assertInterfaceName,
  gatewayPortName,
  hostVethName,
  isDockerId,
  isHostVethName,
  macForEndpoint,
  macForIpv4,
  normaliseMac,
  peerVethName,
} from '../../src/domain/names.js';

const ID = 'a'.repeat(12) + '0123456789abcdef'.repeat(3) + '0123';

describe('address math', () => {
  it('parses plain addresses of both families and rejects everything else', () => {
    assert.deepEqual(parseIp('10.1.2.3'), { family: 4, value: 0x0a010203n });
    assert.equal(parseIp('fd00::1')?.family, 6);
    for (const bad of ['10.1.2', '010.1.2.3', '10.1.2.3/24', 'fe80::1%eth0', ' 10.1.2.3', '', 'x']) {
      assert.equal(parseIp(bad), undefined, bad);
    }
  });

  it('reads dotted quads directly exactly as ip-cidr would', () => {
    // The direct reading of IPv4 text must accept and value exactly what ip-cidr does.
    const octet = fc.oneof(fc.integer({ min: 0, max: 300 }).map(String), fc.stringMatching(/^[0-9]{1,4}$/));
    const quad = fc.array(octet, { minLength: 3, maxLength: 5 }).map((parts) => parts.join('.'));
    fc.assert(
      fc.property(quad, fc.oneof(fc.constant(''), fc.integer({ min: 0, max: 40 }).map((n) => `/${n}`), fc.stringMatching(/^\/[0-9]{1,3}$/)), (address, length) => {
        const text = address + length;
        if (!length) {
          const expected = IPCIDR.isValidAddress(text) ? BigInt(new IPCIDR(`${text}/32`).start<bigint>({ type: 'bigInteger' })) : undefined;
          assert.equal(parseIp(text)?.value, expected, text);
        } else {
          const valid = IPCIDR.isValidCIDR(text);
          const parsed = parseCidrWithHost(text);
          assert.equal(parsed !== undefined, valid, text);
          if (parsed) assert.equal(parsed.cidr.prefix, Number(length.slice(1)), text);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('reads IPv6 hex groups directly exactly as ip-cidr would', () => {
    // The direct reading of IPv6 text must accept and value exactly what ip-cidr does; what it does not
    // read (a dotted tail) goes to ip-cidr. Groups of 0-5 digits, 1-9 of them, perhaps one or two gaps.
    const group = fc.oneof(fc.stringMatching(/^[0-9a-fA-F]{1,4}$/), fc.constantFrom('', '0', '00000', 'g', '1.2.3.4'));
    const text = fc.tuple(fc.array(group, { minLength: 1, maxLength: 9 }), fc.array(fc.constantFrom(':', '::'), { minLength: 8, maxLength: 8 })).map(([groups, seps]) => groups.map((g, i) => (i === 0 ? g : seps[i - 1] + g)).join(''));
    const ipCidr = (t: string) => {
      if (t.includes('/') || t.includes('%') || !IPCIDR.isValidAddress(t)) return undefined;
      try {
        return BigInt(new IPCIDR(`${t}/${t.includes(':') ? 128 : 32}`).start<bigint>({ type: 'bigInteger' }));
      } catch {
        return undefined;
      }
    };
    fc.assert(
      fc.property(fc.oneof(text, fc.constantFrom('::', '::1', '1::', 'fe80::1:2', '1:2:3:4:5:6:7::', '::2:3:4:5:6:7:8', '1:2:3:4:5:6:7:8', 'FD00::A')), (t) => {
        assert.equal(parseIp(t)?.value, ipCidr(t), t);
      }),
      { numRuns: 5000 },
    );
  });

  it('formats IPv6 in RFC 5952 form', () => {
    assert.equal(canonicalIp('FD00:0:0:0:0:0:0:1'), 'fd00::1');
    assert.equal(canonicalIp('2001:db8:0:0:1:0:0:1'), '2001:db8::1:0:0:1');
    assert.equal(canonicalIp('2001:db8:0:1:1:1:1:1'), '2001:db8:0:1:1:1:1:1');
    assert.equal(canonicalIp('::'), '::');
    assert.equal(canonicalIp('::ffff:1.2.3.4'), undefined, 'IPv4-mapped forms are not accepted');
  });

  it('keeps host bits apart from the prefix and rejects them where a subnet is wanted', () => {
    const gw = parseCidrWithHost('10.13.160.1/24')!;
    assert.equal(formatIp(gw.ip), '10.13.160.1');
    assert.equal(formatCidr(gw.cidr), '10.13.160.0/24');
    assert.equal(parseCidr('10.13.160.1/24'), undefined);
    assert.equal(formatCidr(parseCidr('fd00:1::/64')!), 'fd00:1::/64');
    assert.equal(parseCidr('10.0.0.0/33'), undefined);
  });

  it('tells containment and overlap', () => {
    const a = parseCidr('10.0.0.0/16')!;
    const b = parseCidr('10.0.4.0/24')!;
    const c = parseCidr('10.1.0.0/24')!;
    assert.ok(overlaps(a, b) && overlaps(b, a));
    assert.ok(!overlaps(a, c));
    assert.ok(contains(a, parseIp('10.0.255.255')!));
    assert.ok(!contains(a, parseIp('fd00::1')!), 'families never mix');
  });
});

describe('allocator', () => {
  const pool = parseCidr('10.0.0.0/29')!; // .0 network, .7 broadcast

  it('never hands out the network or broadcast address', () => {
    const bounds = usableBounds(pool);
    assert.equal(formatIp({ family: 4, value: bounds.first }), '10.0.0.1');
    assert.equal(formatIp({ family: 4, value: bounds.last }), '10.0.0.6');
    assert.equal(boundsSize(bounds), 6n);
    assert.ok(!isAssignable(pool, parseIp('10.0.0.0')!.value));
    assert.ok(!isAssignable(pool, parseIp('10.0.0.7')!.value));
    assert.ok(isAssignable(pool, parseIp('10.0.0.6')!.value));
  });

  it('limits dynamic addresses to the ip-range', () => {
    const bounds = usableBounds(parseCidr('10.0.0.0/24')!, parseCidr('10.0.0.128/25')!);
    assert.equal(formatIp({ family: 4, value: bounds.first }), '10.0.0.128');
    assert.equal(formatIp({ family: 4, value: bounds.last }), '10.0.0.254');
  });

  it('walks round-robin from the cursor and wraps around', () => {
    const bounds = usableBounds(pool);
    const taken = new Set([2n, 3n].map((n) => pool.network + n));
    const isTaken = (v: bigint) => taken.has(v);
    assert.equal(nextFree(bounds, isTaken, taken.size), pool.network + 1n);
    assert.equal(nextFree(bounds, isTaken, taken.size, pool.network + 1n), pool.network + 4n);
    assert.equal(nextFree(bounds, isTaken, taken.size, pool.network + 6n), pool.network + 1n, 'wraps');
  });

  it('reports exhaustion', () => {
    const bounds = usableBounds(pool);
    assert.equal(nextFree(bounds, () => true, 6), undefined);
  });

  it('scans a huge IPv6 range only as far as the taken count', () => {
    const v6 = parseCidr('fd00::/64')!;
    let probes = 0;
    const value = nextFree(usableBounds(v6), () => (probes++, true), 5);
    assert.equal(value, undefined);
    assert.equal(probes, 6);
  });

  it('splits a base range into subnets', () => {
    const list = [...subnets(parseCidr('10.200.0.0/22')!, 24)].map(formatCidr);
    assert.deepEqual(list, ['10.200.0.0/24', '10.200.1.0/24', '10.200.2.0/24', '10.200.3.0/24']);
  });
});

describe('names', () => {
  it('derives interface names of at most 15 characters from Docker ids', () => {
    for (const name of [hostVethName(ID), peerVethName(ID), gatewayPortName(ID)]) assert.ok(name.length <= 15, name);
    assert.equal(hostVethName(ID), 'ovsaaaaaaaaaaaa');
    assert.ok(isHostVethName(hostVethName(ID)));
    assert.ok(!isHostVethName('ovs0'));
    assert.equal(gatewayPortName(ID), 'ovsgwaaaaaaaaaa');
  });

  it('validates Docker ids strictly', () => {
    assert.ok(isDockerId(ID));
    assert.ok(!isDockerId(ID.toUpperCase()));
    assert.ok(!isDockerId(ID.slice(1)));
    assert.ok(!isDockerId('../../etc/passwd'));
  });

  it('validates interface names before they reach a command', () => {
    assert.equal(assertInterfaceName('br-ext.1', 'bridge'), 'br-ext.1');
    for (const bad of ['', '-x', 'a b', 'a/b', 'x'.repeat(16), 'eth0;rm', '$(x)']) {
      assert.throws(() => assertInterfaceName(bad, 'bridge'), /invalid bridge/);
    }
  });

  it('derives MACs like Docker and checks given ones', () => {
    assert.equal(macForIpv4('10.13.160.50/24'), '02:42:0a:0d:a0:32');
    assert.equal(macForEndpoint(ID), '02:aa:aa:aa:aa:aa');
    assert.equal(normaliseMac('02:42:AC:11:00:02'), '02:42:ac:11:00:02');
    assert.equal(normaliseMac('01:00:5e:00:00:01'), undefined, 'multicast');
    assert.equal(normaliseMac('00:00:00:00:00:00'), undefined);
    assert.equal(normaliseMac('02:42:ac:11:00'), undefined);
  });
});

describe('held addresses', () => {
  const at = '2026-12-01T22:00:00.123Z';

  it('reads like a map of address records, and gives back exactly what it was given', () => {
    const held = new HeldAddresses('local/10.1.0.0/16', parseCidr('10.1.0.0/16')!);
    held.hold({ poolId: 'local/10.1.0.0/16', address: '10.1.0.1', kind: 'gateway', createdAt: at });
    held.hold({ poolId: 'local/10.1.0.0/16', address: '10.1.255.254', kind: 'address', createdAt: at });
    assert.equal(held.size, 2);
    assert.deepEqual(held.get('10.1.255.254'), { poolId: 'local/10.1.0.0/16', address: '10.1.255.254', kind: 'address', createdAt: at });
    assert.equal(held.kindOf('10.1.0.1'), 'gateway');
    assert.equal(held.gateway(), '10.1.0.1');
    assert.ok(held.hasValue(parseIp('10.1.255.254')!.value) && !held.hasValue(parseIp('10.1.0.2')!.value));
    assert.deepEqual([...held.keys()].sort(), ['10.1.0.1', '10.1.255.254']);
    held.hold({ poolId: 'local/10.1.0.0/16', address: '10.1.0.1', kind: 'address', createdAt: at });
    assert.equal(held.gateway(), undefined, 'held again as a plain address');
    held.release('10.1.0.1');
    held.release('10.1.0.99');
    assert.deepEqual([...held.values()].map((r) => r.address), ['10.1.255.254']);
  });

  it('keeps addresses far into a large IPv6 pool, and records without a valid time', () => {
    const held = new HeldAddresses('local/fd00::/64', parseCidr('fd00::/64')!);
    held.hold({ poolId: 'local/fd00::/64', address: 'fd00::dead:beef:0:1', kind: 'address', createdAt: 'not a time' });
    held.hold({ poolId: 'local/fd00::/64', address: 'fd00::2', kind: 'address', createdAt: at });
    assert.ok(held.has('fd00::dead:beef:0:1') && held.hasValue(parseIp('fd00::dead:beef:0:1')!.value));
    assert.equal(held.get('fd00::dead:beef:0:1')?.createdAt, '', 'an invalid time stays invalid (never old enough to prune)');
    assert.deepEqual([...held.keys()].sort(), ['fd00::2', 'fd00::dead:beef:0:1']);
  });
});

describe('the engine the plugin serves', () => {
  it('names the 29.0 releases that crash on a remote gateway endpoint, and engines older than the oldest tested', () => {
    for (const version of ['29.0.0', '29.0.2']) assert.deepEqual(engineProblems({ version, firewallBackend: 'iptables', nftError: undefined }).map((p) => p.kind), ['engine-version'], version);
    assert.match(engineProblems({ version: '29.0.1', firewallBackend: undefined, nftError: undefined })[0]!.fix, /29\.0\.3 or newer/);
    assert.deepEqual(engineProblems({ version: '19.03.15', firewallBackend: undefined, nftError: undefined }).map((p) => p.kind), ['engine-version']);
    for (const version of ['20.10.24+dfsg1', '26.1.5+dfsg1', '28.5.2', '29.0.3', '29.7.2']) assert.deepEqual(engineProblems({ version, firewallBackend: undefined, nftError: undefined }), [], version);
  });

  it("says when Docker's nftables firewall hides its published ports from the plugin, and what to install", () => {
    const [problem, ...rest] = engineProblems({ version: '29.7.2', firewallBackend: 'nftables', nftError: 'spawn nft ENOENT' });
    assert.equal(rest.length, 0);
    assert.equal(problem!.kind, 'docker-nftables-unseen');
    assert.match(problem!.detail, /spawn nft ENOENT/);
    assert.match(problem!.fix, /apt-get install nftables/);
    assert.deepEqual(engineProblems({ version: '29.7.2', firewallBackend: 'nftables', nftError: undefined }), []);
    assert.deepEqual(engineProblems({ version: '29.7.2', firewallBackend: 'iptables', nftError: 'spawn nft ENOENT' }), []);
  });
});
