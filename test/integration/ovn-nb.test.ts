/**
 * The northbound client against real OVN northbound ovsdb-servers: the
 * Northbound contract on a standalone database, and, on a three-member Raft
 * cluster inside a scratch namespace, what leader-only means: writes go to
 * the leader, a killed leader is replaced without an error, and a cluster
 * that lost its majority is reported as such, fast.
 */
import assert from 'node:assert/strict';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { OvnNorthbound, NB_DATABASE } from '../../src/adapters/ovn-nb.js';
import { OvsdbClient } from '../../src/adapters/ovsdb.js';
import { silentLogger } from '../../src/log.js';
import { northboundContract } from '../contract/northbound.js';
import { alive, cmd, killAll, requireTools, waitFor } from '../e2e/harness/proc.js';

const DIR = '/tmp/ovsnet-t/it-nb';
const NS = 'ovsnet-t-it-nb';
const SCHEMA = '/usr/share/ovn/ovn-nb.ovsschema';

async function startServer(name: string, extra: string[] = []): Promise<void> {
  await cmd('nsenter', [`--net=/run/netns/${NS}`, '--', 'ovsdb-server', `${DIR}/${name}.db`, `--remote=punix:${DIR}/${name}.sock`,
    `--pidfile=${DIR}/${name}.pid`, `--unixctl=${DIR}/${name}.ctl`, `--log-file=${DIR}/${name}.log`, '--detach', ...extra]);
}

async function stopServer(name: string): Promise<void> {
  const pid = Number((await readFile(`${DIR}/${name}.pid`, 'utf8').catch(() => '')).trim());
  if (!pid) return;
  await killAll([pid]);
  await waitFor(`${name} to exit`, async () => !alive(pid), 10_000, 50);
}

async function role(name: string): Promise<string> {
  const status = await cmd('ovs-appctl', ['-t', `${DIR}/${name}.ctl`, 'cluster/status', NB_DATABASE], { check: false, timeoutMs: 5_000 });
  return /^Role: (\w+)$/m.exec(status.stdout)?.[1] ?? 'down';
}

describe('northbound client on real ovsdb-servers', () => {
  const clients: OvsdbClient[] = [];
  const client = (address: string, timeoutMs = 5_000, probeIntervalMs = 0) => {
    const c = new OvsdbClient({ address, database: NB_DATABASE, leaderOnly: true, label: 'the OVN northbound database', log: silentLogger, requestTimeoutMs: timeoutMs, probeIntervalMs });
    clients.push(c);
    return c;
  };

  before(async () => {
    await requireTools(['ovsdb-server', 'ovsdb-tool', 'ovs-appctl']);
    await cmd('ip', ['netns', 'del', NS], { check: false });
    await cmd('ip', ['netns', 'add', NS]);
    await cmd('ip', ['-n', NS, 'link', 'set', 'lo', 'up']);
    await rm(DIR, { recursive: true, force: true });
    await mkdir(DIR, { recursive: true });
  });
  after(async () => {
    for (const c of clients) c.close();
    for (const name of ['standalone', 'm1', 'm2', 'm3']) await stopServer(name).catch(() => {});
    await cmd('ip', ['netns', 'del', NS], { check: false });
    await rm(DIR, { recursive: true, force: true });
  });

  describe('the Northbound contract on a standalone database', () => {
    let db: OvsdbClient;
    before(async () => {
      await cmd('ovsdb-tool', ['create', `${DIR}/standalone.db`, SCHEMA]);
      await startServer('standalone');
      db = client(`unix:${DIR}/standalone.sock`);
    });
    northboundContract(async () => {
      await db.transact([{ op: 'delete', table: 'Logical_Switch', where: [] }, { op: 'delete', table: 'Logical_Router', where: [] }]);
      await db.transact([{ op: 'delete', table: 'HA_Chassis_Group', where: [] }]);
      return new OvnNorthbound(db);
    });
  });

  describe('a three-member Raft cluster', () => {
    const members = ['m1', 'm2', 'm3'];
    const remotes = members.map((m) => `unix:${DIR}/${m}.sock`).join(',');

    before(async () => {
      await cmd('ovsdb-tool', ['--election-timer=1000', 'create-cluster', `${DIR}/m1.db`, SCHEMA, 'tcp:127.0.0.1:16643']);
      await cmd('ovsdb-tool', ['join-cluster', `${DIR}/m2.db`, NB_DATABASE, 'tcp:127.0.0.1:26643', 'tcp:127.0.0.1:16643']);
      await cmd('ovsdb-tool', ['join-cluster', `${DIR}/m3.db`, NB_DATABASE, 'tcp:127.0.0.1:36643', 'tcp:127.0.0.1:16643']);
      for (const m of members) await startServer(m);
      await waitFor('the cluster to elect a leader', async () => (await Promise.all(members.map(role))).includes('leader'), 30_000, 200);
      await waitFor('every member to have joined', async () => (await Promise.all(members.map(role))).every((r) => r === 'leader' || r === 'follower'), 30_000, 200);
    });

    it('writes through the leader, whichever member is listed first', async () => {
      const db = client(remotes);
      const nb = new OvnNorthbound(db);
      await nb.createSwitch('10.9.9.0/24', { name: 'c', externalIds: { 'ovsnet-owner': 'ovsnet', 'ovsnet-subnet': '10.9.9.0/24' }, guard: [] });
      const leader = members[(await Promise.all(members.map(role))).indexOf('leader')]!;
      assert.equal(db.remote, `unix:${DIR}/${leader}.sock`);
    });

    it('moves to the new leader when the leader is killed, without an error', async () => {
      const db = client(remotes, 15_000);
      const nb = new OvnNorthbound(db);
      await nb.view();
      const leader = members[(await Promise.all(members.map(role))).indexOf('leader')]!;
      await stopServer(leader);
      const { sw } = await nb.createSwitch('10.9.10.0/24', { name: 'd', externalIds: { 'ovsnet-owner': 'ovsnet', 'ovsnet-subnet': '10.9.10.0/24' }, guard: [] });
      assert.ok(sw.uuid);
      assert.notEqual(db.remote, `unix:${DIR}/${leader}.sock`);
      await startServer(leader);
      await waitFor('the member to be back', async () => ['leader', 'follower'].includes(await role(leader)), 30_000, 200);
    });

    it('leaves a leader that falls silent (its process hung, its connections open): a call waiting on it goes to the new leader, with the probe; without it, the call waits out its timeout', async () => {
      const pidOf = async (m: string) => Number((await readFile(`${DIR}/${m}.pid`, 'utf8')).trim());
      const probeMs = 2_000;
      const withProbe = client(remotes, 20_000, probeMs);
      const without = client(remotes, 6_000);
      await new OvnNorthbound(withProbe).view();
      await new OvnNorthbound(without).view();
      const leader = members[(await Promise.all(members.map(role))).indexOf('leader')]!;
      assert.equal(withProbe.remote, `unix:${DIR}/${leader}.sock`);
      assert.equal(without.remote, `unix:${DIR}/${leader}.sock`);
      const pid = await pidOf(leader);
      process.kill(pid, 'SIGSTOP');
      try {
        // Both calls go to the hung leader at once; the probe's echo goes unanswered, and the call is sent again.
        const started = performance.now();
        const [made, control] = await Promise.allSettled([
          new OvnNorthbound(withProbe).createSwitch('10.9.12.0/24', { name: 'f', externalIds: { 'ovsnet-owner': 'ovsnet', 'ovsnet-subnet': '10.9.12.0/24' }, guard: [] }).then((r) => ({ ...r, tookMs: performance.now() - started })),
          new OvnNorthbound(without).view(),
        ]);
        assert.equal(made.status, 'fulfilled', made.status === 'rejected' ? String(made.reason) : '');
        assert.ok(made.value.sw.uuid);
        assert.ok(made.value.tookMs >= probeMs, `it waited on the silent leader first (${Math.round(made.value.tookMs)} ms)`);
        const newLeader = members[(await Promise.all(members.map((m) => (m === leader ? 'hung' : role(m))))).indexOf('leader')]!;
        assert.equal(withProbe.remote, `unix:${DIR}/${newLeader}.sock`, 'it left the silent member for the one that leads');
        // The control: a client without the probe stays on the silent member until its call times out.
        assert.equal(control.status, 'rejected');
        assert.equal((control.reason as { code?: string }).code, 'OvsdbTimeout', String(control.reason));
        assert.equal(without.remote, `unix:${DIR}/${leader}.sock`);
      } finally {
        process.kill(pid, 'SIGCONT');
      }
      // The old leader back: it follows, and the client stays where it is, its writes going on.
      await waitFor('the old leader to follow', async () => (await role(leader)) === 'follower', 30_000, 200);
      const { sw } = await new OvnNorthbound(withProbe).createSwitch('10.9.13.0/24', { name: 'g', externalIds: { 'ovsnet-owner': 'ovsnet', 'ovsnet-subnet': '10.9.13.0/24' }, guard: [] });
      assert.ok(sw.uuid);
      assert.notEqual(withProbe.remote, `unix:${DIR}/${leader}.sock`);
      const { switches } = await new OvnNorthbound(withProbe).view();
      assert.equal(switches.filter((x) => x.externalIds['ovsnet-subnet'] === '10.9.12.0/24').length, 1, 'the call sent twice (to the silent leader, then to the new one) made one switch');
    });

    it('says there is no quorum, within seconds, when two of three members are down', async () => {
      const [survivor, ...down] = members;
      for (const m of down) await stopServer(m);
      try {
        const db = client(remotes, 10_000);
        await assert.rejects(new OvnNorthbound(db).createSwitch('10.9.11.0/24', { name: 'e', externalIds: { 'ovsnet-owner': 'ovsnet', 'ovsnet-subnet': '10.9.11.0/24' }, guard: [] }), (err: Error & { code?: string }) => {
          assert.equal(err.code, 'NoQuorum', err.message);
          assert.match(err.message, /^the OVN northbound database has no quorum: no member can reach a majority of its cluster \(members: /);
          assert.match(err.message, new RegExp(`unix:${DIR}/${survivor}\\.sock disconnected`));
          return true;
        });
      } finally {
        for (const m of down) await startServer(m);
      }
    });
  });
});
