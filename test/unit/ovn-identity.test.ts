/**
 * Which host a chassis name is: the pure decisions, and two hosts that share
 * a name (a cloned image) on a fake northbound database.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CONFLICT_FRESH_MS, type HostIdentity, conflictNote, decideRegistration, registrationIds } from '../../src/domain/ovn-identity.js';
import { Reconciler } from '../../src/driver/reconcile.js';
import { silentLogger } from '../../src/log.js';
import { FakeDocker, FakeNorthbound } from '../fakes/index.js';
import { id, memoryNotes, world } from './setup.js';

const ME: HostIdentity = { chassis: 'c1', hostId: 'id-me', hostname: 'alpha', encapIp: '172.31.9.1' };
const NOW = Date.parse('2026-12-07T12:00:00Z');
const row = (ids: Record<string, string>) => ({ externalIds: { 'ovsnet-owner': 'ovsnet', ...ids } });

describe('chassis name: decisions', () => {
  it('registers a name nobody holds, also on a row someone else made for template variables', () => {
    assert.equal(decideRegistration(undefined, ME, NOW).kind, 'register');
    const decision = decideRegistration({ externalIds: { other: 'x' } }, ME, NOW);
    assert.deepEqual(decision, { kind: 'register', set: registrationIds(ME, new Date(NOW).toISOString()) });
  });

  it('keeps a name it holds, bringing hostname and address up to date and dropping stale notes', () => {
    const stale = conflictNote({ ...ME, hostId: 'id-old', hostname: 'gone' }, NOW - CONFLICT_FRESH_MS - 1);
    const fresh = conflictNote({ ...ME, hostId: 'id-clone', hostname: 'beta', encapIp: '172.31.9.2' }, NOW - 1_000);
    const decision = decideRegistration(row({ ...registrationIds({ ...ME, hostname: 'old-name' }, new Date(NOW - 1_000).toISOString()), ...stale, ...fresh }), ME, NOW);
    assert.equal(decision.kind, 'held');
    if (decision.kind !== 'held') return;
    assert.deepEqual(decision.set, { 'ovsnet-hostname': 'alpha' });
    assert.deepEqual(decision.remove, Object.keys(stale));
    assert.deepEqual(decision.others.map((o) => [o.hostId, o.hostname, o.encapIp]), [['id-clone', 'beta', '172.31.9.2']]);
  });

  it('refuses a name another host id holds and renewed within the lease, even with this Geneve address (a clone carries it too); takes it over after', () => {
    const at = (ms: number) => new Date(ms).toISOString();
    const other = { ...ME, hostId: 'id-other', hostname: 'beta', encapIp: '172.31.9.2' };
    const refused = decideRegistration(row(registrationIds(other, at(NOW - 60_000))), ME, NOW, 900_000);
    assert.deepEqual(refused, { kind: 'refused', holder: { hostId: 'id-other', hostname: 'beta', encapIp: '172.31.9.2', seen: at(NOW - 60_000), freeAt: at(NOW + 840_000) } });
    assert.equal(decideRegistration(row(registrationIds({ ...ME, hostId: 'id-before' }, at(NOW - 60_000))), ME, NOW, 900_000).kind, 'refused', 'the same Geneve address within the lease');
    const taken = decideRegistration(row(registrationIds({ ...ME, hostId: 'id-before' }, at(NOW - 900_001))), ME, NOW, 900_000);
    assert.equal(taken.kind, 'take-over');
    assert.equal(decideRegistration(row(registrationIds(other, at(NOW - 900_001))), ME, NOW, 900_000).kind, 'take-over', 'and a host gone for good');
  });

  it('renews a name it holds once a third of the lease has passed', () => {
    const at = (ms: number) => new Date(ms).toISOString();
    const recent = decideRegistration(row(registrationIds(ME, at(NOW - 299_000))), ME, NOW, 900_000);
    assert.deepEqual(recent.kind === 'held' && recent.set, {});
    const due = decideRegistration(row(registrationIds(ME, at(NOW - 301_000))), ME, NOW, 900_000);
    assert.deepEqual(due.kind === 'held' && due.set, { 'ovsnet-seen-at': at(NOW) });
  });
});

const NET = id('a');

/** A host in OVN mode with chassis name c1, its id and Geneve address given. */
async function host(nb: FakeNorthbound, hostId: string, encapIp: string, register = true, chassis = 'c1', notes = memoryNotes()) {
  const w = await world({ ovn: { nb, chassis, hostId, encapIp, register, notes } });
  const reconciler = new Reconciler({ state: w.state, network: w.network, ipam: w.ipam, docker: new FakeDocker(), graceMs: 0, log: silentLogger });
  return { ...w, reconciler };
}

async function createNetwork(h: Awaited<ReturnType<typeof host>>) {
  const pool = await h.ipam.requestPool({ addressSpace: 'local', pool: '10.61.0.0/24', subPool: '', options: {}, v6: false });
  await h.ipam.requestAddress({ poolId: pool.PoolID, address: '10.61.0.1', gateway: true });
  await h.network.createNetwork({ networkId: NET, generic: { mode: 'ovn' }, ipv6: false, internal: false, ipv4Data: [{ addressSpace: 'local', pool: '10.61.0.0/24', gateway: '10.61.0.1/24', auxAddresses: {} }], ipv6Data: [] });
  return pool.PoolID;
}

describe('chassis name: two hosts with one system-id', () => {
  it('the second is refused every OVN call, naming both hosts, and leaves nothing; doctor on both names the other', async () => {
    const nb = new FakeNorthbound();
    const first = await host(nb, 'id-first', '10.250.0.1');
    const poolId = await createNetwork(first);
    const { Address } = await first.ipam.requestAddress({ poolId, address: '', gateway: false });
    assert.equal(nb.named(`ovsnet-10.61.0.0_24-${Address.split('/')[0]}`)?.externalIds['ovsnet-host-id'], 'id-first', 'a claim names the host id that made it');
    assert.equal(nb.registered.get('c1')?.['ovsnet-host-id'], 'id-first');

    const cloneNotes = memoryNotes();
    const clone = await host(nb, 'id-clone', '10.250.0.2', true, 'c1', cloneNotes);
    const before = structuredClone([...nb.portRows.values()]);
    await assert.rejects(createNetwork(clone), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'OvnHostConflict');
      for (const part of ['c1', 'id-first', '10.250.0.1', 'id-clone', '10.250.0.2', 'the name is free from']) assert.ok(err.message.includes(part), `the refusal names ${part}: ${err.message}`);
      return true;
    });
    assert.equal(clone.state.networks.size, 0, 'nothing kept on the refused host');
    assert.deepEqual([...nb.portRows.values()], before, 'no claim written or removed');
    assert.equal(nb.registered.get('c1')?.['ovsnet-host-id'], 'id-first', 'the name stays with the first');

    const cloneDrift = await clone.reconciler.drift(false);
    assert.deepEqual(cloneDrift.map((d) => d.kind), ['ovn-host-conflict']);
    assert.match(cloneDrift[0]!.detail, /already registered by host host-c1 \(Geneve address 10\.250\.0\.1, host id id-first\)/);
    const firstDrift = await first.reconciler.drift(false);
    assert.deepEqual(firstDrift.map((d) => d.kind), ['ovn-host-conflict']);
    assert.match(firstDrift[0]!.detail, /Geneve address 10\.250\.0\.2, host id id-clone/);
    assert.match(firstDrift[0]!.fix, /external_ids:system-id=<unique name>/);
    assert.deepEqual(await first.reconciler.repair('test'), {}, 'nothing of the first host is repaired away');
    assert.ok(nb.named(`ovsnet-10.61.0.0_24-${Address.split('/')[0]}`), "the first host's claim stays");

    // Given a name of its own, the clone starts again: its note goes, and doctor on the first is quiet.
    assert.deepEqual(cloneNotes.read(), ['c1'], 'the clone keeps where it left its note');
    const renamed = await host(nb, 'id-clone', '10.250.0.2', true, 'c2', cloneNotes);
    await createNetwork(renamed);
    assert.deepEqual(Object.keys(nb.registered.get('c1')!).filter((k) => k.startsWith('ovsnet-conflict:')), []);
    assert.deepEqual(await first.reconciler.drift(false), []);
    assert.deepEqual(cloneNotes.read(), []);
  });

  it("a host whose state directory was made again takes its name back once the lease has passed; doctor only reads", async () => {
    const nb = new FakeNorthbound();
    const before = await host(nb, 'id-before', '10.250.0.1');
    await createNetwork(before);
    const soon = await host(nb, 'id-after', '10.250.0.1');
    await assert.rejects(createNetwork(soon), { code: 'OvnHostConflict', message: /If that was this very host before its state directory was made again, the name is free from / });
    nb.registered.get('c1')!['ovsnet-seen-at'] = new Date(Date.now() - 3_600_000).toISOString();
    const doctor = await host(nb, 'id-after', '10.250.0.1', false);
    // Its own records are empty, so it sees the listing as unused; what matters is that it sees no other host.
    assert.deepEqual((await doctor.reconciler.drift(false)).map((d) => d.kind), ['ovn-switch-unused-here']);
    assert.equal(nb.registered.get('c1')?.['ovsnet-host-id'], 'id-before', 'doctor wrote nothing');
    const after = await host(nb, 'id-after', '10.250.0.1');
    await createNetwork(after);
    assert.equal(nb.registered.get('c1')?.['ovsnet-host-id'], 'id-after');
  });
});
