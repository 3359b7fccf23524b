import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MemoryStore } from '../fakes/index.js';
import { world } from './setup.js';

const pool = (o: Partial<{ addressSpace: string; pool: string; subPool: string; v6: boolean; options: Record<string, string> }> = {}) => ({
  addressSpace: 'local',
  pool: '',
  subPool: '',
  v6: false,
  options: {},
  ...o,
});
const addr = (poolId: string, address = '', gateway = false) => ({ poolId, address, gateway });

describe('IPAM: pools', () => {
  it('announces its capabilities and address spaces', async () => {
    const { ipam } = await world();
    assert.deepEqual(ipam.capabilities(), { RequiresMACAddress: false, RequiresRequestReplay: true });
    assert.deepEqual(ipam.addressSpaces(), { LocalDefaultAddressSpace: 'local', GlobalDefaultAddressSpace: 'global' });
  });

  it('gives an explicit subnet, persisted before it answers', async () => {
    const { ipam, store } = await world();
    const res = await ipam.requestPool(pool({ pool: '10.13.160.0/24' }));
    assert.deepEqual(res, { PoolID: 'local/10.13.160.0/24', Pool: '10.13.160.0/24', Data: {} });
    assert.equal(store.count('pool'), 1);
  });

  it('answers a replayed request with the same pool', async () => {
    const { ipam, store } = await world();
    const a = await ipam.requestPool(pool({ pool: '10.13.160.0/24', subPool: '10.13.160.128/25' }));
    const b = await ipam.requestPool(pool({ pool: '10.13.160.0/24', subPool: '10.13.160.128/25' }));
    assert.deepEqual(a, b);
    assert.equal(store.count('pool'), 1);
  });

  it('refuses overlapping pools and names both', async () => {
    const { ipam } = await world();
    await ipam.requestPool(pool({ pool: '10.13.0.0/16' }));
    await assert.rejects(ipam.requestPool(pool({ pool: '10.13.160.0/24' })), {
      kind: 'Conflict',
      message: 'subnet 10.13.160.0/24 overlaps subnet 10.13.0.0/16, which is already in use',
    });
    await assert.rejects(ipam.requestPool(pool({ pool: '10.13.0.0/16', subPool: '10.13.1.0/24' })), /already in use with ip-range 10.13.0.0\/16/);
    // another address space is another world
    await ipam.requestPool(pool({ addressSpace: 'global', pool: '10.13.160.0/24' }));
  });

  const bad: Array<[Parameters<typeof pool>[0], RegExp]> = [
    [{ pool: '10.13.160.1/24' }, /^invalid subnet "10.13.160.1\/24": host bits are set; did you mean 10.13.160.0\/24\?$/],
    [{ pool: '10.13.160.0/31' }, /too small: a network needs a gateway and at least one container address; use a \/30 or larger/],
    [{ pool: 'fd00::/64' }, /^subnet fd00::\/64 is IPv6 but an IPv4 pool was requested$/],
    [{ pool: '10.0.0.0/24', v6: true }, /is IPv4 but an IPv6 pool was requested/],
    [{ pool: '10.0.0.0/24', subPool: '10.0.1.0/25' }, /^ip-range 10.0.1.0\/25 is not inside subnet 10.0.0.0\/24$/],
    [{ pool: 'banana' }, /^invalid subnet "banana": not an IPv4 or IPv6 prefix/],
    [{ subPool: '10.0.0.0/25' }, /needs a subnet/],
    [{ addressSpace: 'elsewhere', pool: '10.0.0.0/24' }, /^unknown address space "elsewhere"; this IPAM driver has "local" and "global"$/],
    [{ pool: '10.0.0.0/24', options: { colour: 'blue' } }, /^unknown IPAM option colour=blue/],
  ];
  for (const [request, message] of bad) {
    it(`rejects ${JSON.stringify(request)} and holds nothing`, async () => {
      const { ipam, store } = await world();
      await assert.rejects(ipam.requestPool(pool(request)), (err: Error & { kind: string }) => message.test(err.message) && err.kind === 'BadRequest');
      assert.equal(store.data.size, 0);
    });
  }

  it('chooses automatic pools that avoid pools in use and host routes', async () => {
    const { ipam, links } = await world();
    links.hostRoutes[4] = ['10.200.0.0/24', '192.168.1.0/24'];
    await ipam.requestPool(pool({ pool: '10.200.1.0/24' }));
    const auto = await ipam.requestPool(pool());
    assert.equal(auto.Pool, '10.200.2.0/24');
    const v6 = await ipam.requestPool(pool({ v6: true }));
    assert.equal(v6.Pool, 'fd00:aa::/64');
  });

  it('says so when automatic pools run out', async () => {
    const { ipam } = await world();
    for (let i = 0; i < 4; i++) await ipam.requestPool(pool());
    await assert.rejects(ipam.requestPool(pool()), (err: Error & { kind: string }) => {
      assert.equal(err.kind, 'Exhausted');
      assert.match(err.message, /^no free subnet left in the default ranges 10.200.0.0\/22 \(\/24 each\)/);
      return true;
    });
  });

  it('frees a pool and all its addresses on release, and tolerates a second release', async () => {
    const { ipam, store } = await world();
    const { PoolID } = await ipam.requestPool(pool({ pool: '10.1.0.0/24' }));
    await ipam.requestAddress(addr(PoolID, '', true));
    await ipam.requestAddress(addr(PoolID));
    await ipam.releasePool(PoolID);
    assert.equal(store.data.size, 0);
    await ipam.releasePool(PoolID);
  });
});

describe('IPAM: addresses', () => {
  it('gives the first address to the gateway and the next ones round-robin', async () => {
    const { ipam } = await world();
    const { PoolID } = await ipam.requestPool(pool({ pool: '10.1.0.0/29' }));
    assert.equal((await ipam.requestAddress(addr(PoolID, '', true))).Address, '10.1.0.1/29');
    const a = (await ipam.requestAddress(addr(PoolID))).Address;
    const b = (await ipam.requestAddress(addr(PoolID))).Address;
    assert.deepEqual([a, b], ['10.1.0.2/29', '10.1.0.3/29']);
    await ipam.releaseAddress({ poolId: PoolID, address: '10.1.0.2' });
    assert.equal((await ipam.requestAddress(addr(PoolID))).Address, '10.1.0.4/29', 'a freed address is not reused at once');
  });

  it('keeps an address asked for with --ip for its owner while other addresses are free, across restarts', async () => {
    const store = new MemoryStore();
    const first = await world({ store });
    const { PoolID } = await first.ipam.requestPool(pool({ pool: '10.1.0.0/29' }));
    await first.ipam.requestAddress(addr(PoolID, '', true));
    await first.ipam.requestAddress(addr(PoolID, '10.1.0.3'));
    // dockerd stops: the static container's address is released with the others.
    await first.ipam.releaseAddress({ poolId: PoolID, address: '10.1.0.3' });
    const { ipam } = await world({ store });
    const dynamic = [];
    for (let i = 0; i < 4; i++) dynamic.push((await ipam.requestAddress(addr(PoolID))).Address);
    assert.deepEqual(dynamic, ['10.1.0.2/29', '10.1.0.4/29', '10.1.0.5/29', '10.1.0.6/29'], '10.1.0.3 is left to its owner');
    assert.equal((await ipam.requestAddress(addr(PoolID))).Address, '10.1.0.3/29', 'and handed out when nothing else is free');
    await ipam.releaseAddress({ poolId: PoolID, address: '10.1.0.3' });
    assert.equal((await ipam.requestAddress(addr(PoolID, '10.1.0.3'))).Address, '10.1.0.3/29');
  });

  it('hands dynamic addresses only from the ip-range, but static ones from the whole subnet', async () => {
    const { ipam } = await world();
    const { PoolID } = await ipam.requestPool(pool({ pool: '10.1.0.0/24', subPool: '10.1.0.128/25' }));
    assert.equal((await ipam.requestAddress(addr(PoolID, '10.1.0.1', true))).Address, '10.1.0.1/24');
    assert.equal((await ipam.requestAddress(addr(PoolID))).Address, '10.1.0.128/24');
    assert.equal((await ipam.requestAddress(addr(PoolID, '10.1.0.5'))).Address, '10.1.0.5/24');
  });

  it('reports exhaustion naming the range', async () => {
    const { ipam } = await world();
    const { PoolID } = await ipam.requestPool(pool({ pool: '10.1.0.0/24', subPool: '10.1.0.252/30' }));
    await ipam.requestAddress(addr(PoolID));
    await ipam.requestAddress(addr(PoolID));
    await ipam.requestAddress(addr(PoolID));
    await assert.rejects(ipam.requestAddress(addr(PoolID)), {
      kind: 'Exhausted',
      message: 'no free address left in ip-range 10.1.0.252/30 of subnet 10.1.0.0/24: all 3 usable addresses are in use',
    });
  });

  it('answers replays of held addresses idempotently and refuses to mix gateway and others', async () => {
    const { ipam, store } = await world();
    const { PoolID } = await ipam.requestPool(pool({ pool: '10.1.0.0/24' }));
    await ipam.requestAddress(addr(PoolID, '10.1.0.1', true));
    await ipam.requestAddress(addr(PoolID, '10.1.0.9'));
    const before = store.data.size;
    assert.equal((await ipam.requestAddress(addr(PoolID, '10.1.0.1', true))).Address, '10.1.0.1/24');
    assert.equal((await ipam.requestAddress(addr(PoolID, '10.1.0.9'))).Address, '10.1.0.9/24');
    assert.equal(store.data.size, before);
    await assert.rejects(ipam.requestAddress(addr(PoolID, '10.1.0.1')), /address 10.1.0.1 is the gateway of subnet 10.1.0.0\/24/);
    await assert.rejects(ipam.requestAddress(addr(PoolID, '10.1.0.9', true)), /address 10.1.0.9 is already in use in subnet/);
  });

  it('rejects addresses that cannot be held', async () => {
    const { ipam } = await world();
    const { PoolID } = await ipam.requestPool(pool({ pool: '10.1.0.0/24' }));
    await assert.rejects(ipam.requestAddress(addr(PoolID, '10.2.0.5')), /address 10.2.0.5 is not in subnet 10.1.0.0\/24/);
    await assert.rejects(ipam.requestAddress(addr(PoolID, '10.1.0.255')), /network or broadcast address/);
    await assert.rejects(ipam.requestAddress(addr(PoolID, 'fd00::5')), /is not in subnet/);
    await assert.rejects(ipam.requestAddress(addr(PoolID, 'nope')), /invalid address "nope"/);
    await assert.rejects(ipam.requestAddress(addr('local/10.9.0.0/24')), { kind: 'NotFound' });
  });

  it('handles IPv6 pools', async () => {
    const { ipam } = await world();
    const { PoolID } = await ipam.requestPool(pool({ pool: 'fd00:1::/64', v6: true }));
    assert.equal((await ipam.requestAddress(addr(PoolID, '', true))).Address, 'fd00:1::1/64');
    assert.equal((await ipam.requestAddress(addr(PoolID))).Address, 'fd00:1::2/64');
    assert.equal((await ipam.requestAddress(addr(PoolID, 'FD00:1:0::ff'))).Address, 'fd00:1::ff/64');
  });

  it('gives 50 concurrent requests 50 distinct addresses', async () => {
    const { ipam, store } = await world();
    const { PoolID } = await ipam.requestPool(pool({ pool: '10.1.0.0/24' }));
    const answers = await Promise.all(Array.from({ length: 50 }, () => ipam.requestAddress(addr(PoolID))));
    assert.equal(new Set(answers.map((a) => a.Address)).size, 50);
    assert.equal(store.count('address'), 50);
  });

  it('holds nothing when the store write fails', async () => {
    const { ipam, store, state } = await world();
    const { PoolID } = await ipam.requestPool(pool({ pool: '10.1.0.0/24' }));
    store.failNext = new Error('disk full');
    await assert.rejects(ipam.requestAddress(addr(PoolID)), /disk full/);
    assert.equal(state.addressesOf(PoolID).size, 0);
    assert.equal((await ipam.requestAddress(addr(PoolID))).Address, '10.1.0.1/24');
  });

  it('keeps state across a restart', async () => {
    const store = new MemoryStore();
    const first = await world({ store });
    const { PoolID } = await first.ipam.requestPool(pool({ pool: '10.1.0.0/24' }));
    await first.ipam.requestAddress(addr(PoolID));
    const second = await world({ store });
    assert.equal((await second.ipam.requestAddress(addr(PoolID))).Address, '10.1.0.2/24');
  });
});

describe('IPAM: named endpoints (Docker 29)', () => {
  const named = (poolId: string, name: string) => ({ poolId, address: '', gateway: false, endpointName: name });

  it('gives a name its last address again across a plugin restart, and forgets the names with the pool', async () => {
    const store = new MemoryStore();
    const first = await world({ store });
    const { PoolID } = await first.ipam.requestPool(pool({ pool: '10.50.0.0/24' }));
    const web = (await first.ipam.requestAddress(named(PoolID, 'web'))).Address;
    await first.ipam.requestAddress(named(PoolID, 'db'));
    await first.ipam.releaseAddress({ poolId: PoolID, address: web.split('/')[0]! });
    const again = await world({ store });
    assert.notEqual((await again.ipam.requestAddress(named(PoolID, 'new'))).Address, web, 'kept for its name while others are free');
    assert.equal((await again.ipam.requestAddress(named(PoolID, 'web'))).Address, web);
    assert.equal(store.count('name'), 3);
    await again.ipam.releasePool(PoolID);
    assert.equal(store.count('name'), 0, 'the names go with the pool');
  });

  it('hands a remembered address to another name only when no other address is free', async () => {
    const { ipam } = await world();
    const { PoolID } = await ipam.requestPool(pool({ pool: '10.51.0.0/29' })); // .1-.6 usable
    await ipam.requestAddress(addr(PoolID, '', true)); // gateway .1
    const first = (await ipam.requestAddress(named(PoolID, 'a'))).Address;
    await ipam.releaseAddress({ poolId: PoolID, address: first.split('/')[0]! });
    const others = [];
    for (const n of ['b', 'c', 'd', 'e']) others.push((await ipam.requestAddress(named(PoolID, n))).Address);
    assert.ok(!others.includes(first));
    assert.equal((await ipam.requestAddress(named(PoolID, 'f'))).Address, first, 'the last free one, although remembered for a');
  });
});

describe('IPAM: rollback of refused requests', () => {
  it('keeps a shared pool and its gateway when Docker rolls back a refused network', async () => {
    const { ipam, state } = await world();
    const first = await ipam.requestPool(pool({ pool: '10.1.0.0/24' }));
    await ipam.requestAddress(addr(first.PoolID, '10.1.0.1', true));
    // A second network with the same subnet: the same answers, then the network driver refuses it.
    const second = await ipam.requestPool(pool({ pool: '10.1.0.0/24' }));
    await ipam.requestAddress(addr(second.PoolID, '', true));
    await ipam.requestAddress(addr(second.PoolID, '10.1.0.200'));
    ipam.shieldFromRollback(second.PoolID);
    await ipam.releaseAddress({ poolId: second.PoolID, address: '10.1.0.1' });
    await ipam.releaseAddress({ poolId: second.PoolID, address: '10.1.0.200' });
    await ipam.releasePool(second.PoolID);
    assert.ok(state.pools.has(first.PoolID), 'the pool stays');
    assert.ok(state.addressesOf(first.PoolID).has('10.1.0.1'), 'the gateway stays');
    assert.ok(!state.addressesOf(first.PoolID).has('10.1.0.200'), 'what only the refused network took is released');
    await ipam.releasePool(first.PoolID);
    assert.equal(state.pools.size, 0, 'a later release is real');
  });

  it('keeps one address when a refused endpoint is rolled back, once', async () => {
    const { ipam, state } = await world();
    const { PoolID } = await ipam.requestPool(pool({ pool: '10.1.0.0/24' }));
    await ipam.requestAddress(addr(PoolID, '10.1.0.50'));
    await ipam.requestAddress(addr(PoolID, '10.1.0.50'));
    ipam.shieldFromRollback(PoolID, '10.1.0.50');
    await ipam.releaseAddress({ poolId: PoolID, address: '10.1.0.50' });
    assert.ok(state.addressesOf(PoolID).has('10.1.0.50'));
    await ipam.releaseAddress({ poolId: PoolID, address: '10.1.0.50' });
    assert.ok(!state.addressesOf(PoolID).has('10.1.0.50'));
  });

  it('lets a shield expire', async () => {
    let now = 1_000_000;
    const { ipam, state } = await world({ now: () => now });
    const { PoolID } = await ipam.requestPool(pool({ pool: '10.1.0.0/24' }));
    await ipam.requestAddress(addr(PoolID, '10.1.0.50'));
    ipam.shieldFromRollback(PoolID, '10.1.0.50');
    now += 61_000;
    await ipam.releaseAddress({ poolId: PoolID, address: '10.1.0.50' });
    assert.ok(!state.addressesOf(PoolID).has('10.1.0.50'));
  });
});
