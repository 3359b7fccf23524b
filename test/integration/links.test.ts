/**
 * The iproute2 and ethtool adapter inside a scratch network namespace: the
 * Links contract, plus offload, routes and the errors the tools print.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { run, type Runner, CommandError } from '../../src/adapters/exec.js';
import { IpLinks } from '../../src/adapters/links.js';
import { linksContract } from '../contract/links.js';
import { cmd } from '../e2e/harness/proc.js';

const NS = 'ovsnet-t-it-links';
/** Every command of the adapter runs inside the scratch namespace. */
const inNamespace: Runner = (file, args, options) => run('nsenter', [`--net=/run/netns/${NS}`, '--', file, ...args], options);

describe('links adapter in a scratch namespace', () => {
  const links = new IpLinks(inNamespace);

  before(async () => {
    await cmd('ip', ['netns', 'del', NS], { check: false });
    await cmd('ip', ['netns', 'add', NS]);
    await cmd('ip', ['-n', NS, 'link', 'set', 'lo', 'up']);
  });
  after(async () => {
    await cmd('ip', ['netns', 'del', NS], { check: false });
  });

  describe('the Links contract', () => {
    linksContract(async () => links);
  });

  it("reads the link-local address the kernel gave a container's interface, by its MAC, in the container's namespace; never one added by hand", async () => {
    const sandbox = 'ovsnet-t-it-sbx';
    const ns = `/run/netns/${sandbox}`;
    await cmd('ip', ['netns', 'del', sandbox], { check: false });
    await cmd('ip', ['netns', 'add', sandbox]);
    try {
      for (const [dev, mac] of [['eth0', '02:42:0a:00:00:21'], ['eth2', '02:42:0a:00:00:22']] as const) {
        await cmd('ip', ['-n', sandbox, 'link', 'add', dev, 'address', mac, 'type', 'veth', 'peer', 'name', `${dev}p`]);
        await cmd('ip', ['-n', sandbox, 'link', 'set', `${dev}p`, 'up']);
      }
      // eth0: random interface identifiers (addr_gen_mode 3, as an endpoint sysctl makes), and one added by hand.
      await cmd('ip', ['-n', sandbox, 'link', 'set', 'eth0', 'addrgenmode', 'random']);
      await cmd('ip', ['-n', sandbox, 'address', 'add', 'fe80::21:1234/64', 'dev', 'eth0', 'nodad']);
      await cmd('ip', ['-n', sandbox, 'link', 'set', 'eth0', 'up']);
      // eth2: the one of its MAC (EUI-64).
      await cmd('ip', ['-n', sandbox, 'link', 'set', 'eth2', 'up']);
      const kernel = async (dev: string) => {
        const out = JSON.parse((await cmd('ip', ['-n', sandbox, '-j', 'address', 'show', 'dev', dev])).stdout) as Array<{ addr_info: Array<{ local: string; scope: string }> }>;
        return out[0]!.addr_info.filter((a) => a.scope === 'link' && a.local !== 'fe80::21:1234').map((a) => a.local);
      };
      const [random] = await kernel('eth0');
      assert.ok(random && random !== 'fe80::40:aff:fe00:21', `a random one: ${random}`);
      assert.equal(await links.linkLocalIn(ns, '02:42:0A:00:00:21'), random, "the kernel's, not the one added by hand");
      assert.equal(await links.linkLocalIn(ns, '02:42:0a:00:00:22'), 'fe80::42:aff:fe00:22');
      await cmd('ip', ['-n', sandbox, 'address', 'flush', 'dev', 'eth0', 'scope', 'link']);
      await cmd('ip', ['-n', sandbox, 'address', 'add', 'fe80::21:1234/64', 'dev', 'eth0', 'nodad']);
      assert.equal(await links.linkLocalIn(ns, '02:42:0a:00:00:21'), undefined, 'one added by hand alone is not taken');
      assert.equal(await links.linkLocalIn(ns, '02:42:0a:00:00:99'), undefined, 'no interface of that MAC (yet)');
      assert.equal(await links.linkLocalIn('/run/netns/ovsnet-t-it-none', '02:42:0a:00:00:21'), null, 'no such namespace');
      assert.equal(await links.linkLocalIn('/run/netns/../x', '02:42:0a:00:00:21'), null, 'not a plain path');
    } finally {
      await cmd('ip', ['netns', 'del', sandbox], { check: false });
    }
  });

  it('turns TX checksum offload off on both ends', async () => {
    await links.createVeth({ host: 'itvh0', peer: 'itvp0', mtu: 1500, peerMac: '02:42:0a:00:00:09' });
    await links.disableTxOffload(['itvh0', 'itvp0']);
    for (const dev of ['itvh0', 'itvp0']) {
      assert.match((await cmd('ip', ['netns', 'exec', NS, 'ethtool', '-k', dev])).stdout, /tx-checksumming: off/);
    }
    assert.equal((await cmd('ip', ['-n', NS, '-j', 'link', 'show', 'dev', 'itvp0'])).stdout.includes('02:42:0a:00:00:09'), true, 'the peer has its MAC');
    await assert.rejects(links.disableTxOffload(['itvh0', 'itvnone0']), /itvnone0/, 'a device that is not there fails the call, named');
    await links.deleteLink('itvh0');
  });

  it('makes a veth pair with TX checksum offload off on both ends in one go, also over a leftover, and leaves none when that fails', async () => {
    for (let i = 0; i < 2; i++) await links.createVeth({ host: 'itvh3', peer: 'itvp3', mtu: 1450, peerMac: '02:42:0a:00:00:0b', txOffloadOff: true });
    for (const dev of ['itvh3', 'itvp3']) {
      assert.match((await cmd('ip', ['netns', 'exec', NS, 'ethtool', '-k', dev])).stdout, /tx-checksumming: off/);
    }
    assert.deepEqual([(await links.list()).get('itvp3')?.mtu, (await links.list()).get('itvh3')?.up], [1450, true]);
    await links.deleteLink('itvh3');
    // ethtool refuses: the pair it could not finish is deleted again.
    const withoutEthtool = new IpLinks((file, args, options) => inNamespace(file, file === 'sh' ? ['-c', `ethtool() { echo 'ethtool: no' >&2; return 3; }; ${args[1]}`, ...args.slice(2)] : args, options));
    await assert.rejects(withoutEthtool.createVeth({ host: 'itvh4', peer: 'itvp4', mtu: 1500, peerMac: '02:42:0a:00:00:0c', txOffloadOff: true }), CommandError);
    assert.equal((await links.list()).has('itvh4') || (await links.list()).has('itvp4'), false, 'nothing left');
  });

  it('makes pairs asked for together, or while a spawn runs, by one spawn, each answered for itself', async () => {
    const spawned: string[][] = [];
    const counting = new IpLinks((file, args, options) => {
      spawned.push([file, ...args]);
      return inNamespace(file, args, options);
    });
    const pairs = Array.from({ length: 10 }, (_, i) => ({ host: `itvb${i}`, peer: `itvc${i}`, mtu: 1400 + i, peerMac: `02:42:0a:00:01:0${i}`, txOffloadOff: i % 4 !== 3 }));
    const first = pairs.slice(0, 7).map((p) => counting.createVeth(p));
    await new Promise((r) => setImmediate(r));
    assert.equal(spawned.length, 1, 'seven asked for in one turn: one spawn');
    await Promise.all([...first, ...pairs.slice(7).map((p) => counting.createVeth(p))]);
    assert.equal(spawned.length, 2, 'three asked for while it ran: one more');
    const listed = await links.list();
    for (const p of pairs) {
      assert.deepEqual([listed.get(p.host)?.mtu, listed.get(p.peer)?.mtu, listed.get(p.host)?.up], [p.mtu, p.mtu, true], p.host);
      if (!p.txOffloadOff) continue;
      for (const dev of [p.host, p.peer]) assert.match((await cmd('ip', ['netns', 'exec', NS, 'ethtool', '-k', dev])).stdout, /tx-checksumming: off/, dev);
    }
    for (const p of pairs) await links.deleteLink(p.host);

    // A pair that cannot be made fails alone. The real batch stops at the leftover of one pair's names (an
    // interrupted attempt); each pair is then made on its own: the one the batch made already is made again,
    // the leftover is made clean, and only the one whose own make is refused fails, leaving nothing.
    await cmd('ip', ['-n', NS, 'link', 'add', 'itvb9', 'type', 'veth', 'peer', 'name', 'itvc9']);
    const refusing = new IpLinks((file, args, options) =>
      file === 'sh' && args[3] === 'itvbx' ? Promise.reject(new CommandError(`${file}`, 'RTNETLINK answers: no', 2, 'exit code 2')) : inNamespace(file, args, options),
    );
    const hosts = ['itvb8', 'itvb9', 'itvbx', 'itvba'];
    const results = await Promise.allSettled(hosts.map((host, i) => refusing.createVeth({ host, peer: host.replace('itvb', 'itvc'), mtu: 1500, peerMac: `02:42:0a:00:02:0${i}`, txOffloadOff: true })));
    assert.deepEqual(results.map((r) => r.status), ['fulfilled', 'fulfilled', 'rejected', 'fulfilled']);
    const after = await links.list();
    assert.deepEqual(['itvb8', 'itvb9', 'itvba', 'itvbx', 'itvcx'].map((n) => after.has(n)), [true, true, true, false, false]);
    for (const dev of ['itvb8', 'itvc8', 'itvb9', 'itvc9', 'itvba', 'itvca']) {
      assert.match((await cmd('ip', ['netns', 'exec', NS, 'ethtool', '-k', dev])).stdout, /tx-checksumming: off/, dev);
    }
    for (const host of ['itvb8', 'itvb9', 'itvba']) await links.deleteLink(host);
    await assert.rejects(links.createVeth({ host: 'itvbm', peer: 'itvcm', mtu: 1500, peerMac: '02:42:0a:00:00:01\nlink del lo' }), { code: 'InvalidMac' });
    await assert.rejects(links.createVeth({ host: 'itvbm', peer: 'itvcm', mtu: 15, peerMac: '02:42:0a:00:00:01' }), { code: 'InvalidMtu' });
  });

  it('reads routes, the route to an address (own or not), and the default route device', async () => {
    await links.createVeth({ host: 'itvh1', peer: 'itvp1', mtu: 1500, peerMac: '02:42:0a:00:00:0a' });
    await links.configureAddresses('itvh1', { mtu: 1500, addresses: ['10.77.0.1/24'] });
    await cmd('ip', ['-n', NS, 'link', 'set', 'itvp1', 'up']);
    await cmd('ip', ['-n', NS, 'route', 'add', 'default', 'via', '10.77.0.254', 'dev', 'itvh1']);
    const routes = await links.routes(4);
    assert.ok(routes.some((r) => r.dst === '10.77.0.0/24' && r.dev === 'itvh1' && !r.isDefault), 'the connected route, with its device');
    assert.ok(routes.some((r) => r.isDefault && r.dst === '0.0.0.0/0' && r.via === '10.77.0.254' && r.dev === 'itvh1'), 'the default route, with its next hop');
    assert.ok(routes.some((r) => r.dst === '10.77.0.1/32' && r.local && r.table === 'local'), 'the host\'s own address, in the local table');
    assert.deepEqual(await links.routeTo('10.77.0.9'), { dev: 'itvh1', local: false });
    assert.deepEqual(await links.routeTo('10.77.0.1'), { dev: 'lo', local: true });
    assert.deepEqual(await links.defaultRouteDevices(), ['itvh1']);
    await links.deleteLink('itvh1');
    assert.equal(await links.routeTo('10.77.0.9'), undefined, 'no route');
  });

  it("keeps the command line and the tool's stderr on a failure, and refuses a bad name before running anything", async () => {
    await assert.rejects(links.configureAddresses('itnosuchdev', { mtu: 1500, addresses: [] }), (err: unknown) => err instanceof CommandError && /Cannot find device|does not exist/.test(err.stderr) && err.message.includes('nsenter'));
    await assert.rejects(links.deleteLink('bad name'), { kind: 'BadRequest', code: 'InvalidName' });
  });
});
