/**
 * Damage done for real, then a full audit: the plugin killed while containers
 * run and killed in the middle of every multi-step call, dockerd restarted
 * with and without live-restore, ovs-vswitchd and ovsdb-server restarted, and
 * a power cut of the whole host. After each, every container still works as
 * before, every port, veth, rule and address is accounted for by something
 * Docker has, and a port and rules the plugin did not create are untouched.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { readFile } from 'node:fs/promises';
import { cmd, waitFor } from './harness/proc.js';
import { SimHost, type OutsideNamespace } from './harness/sim-host.js';
import { assertConsistent, containerAddress, httpGet, inspect, ping, runContainer, startHttp, startWhoAmI, tcpSay } from './support.js';

const FAST_RECONCILE = { OVSNET_RECONCILE_INTERVAL: '2', OVSNET_RECONCILE_GRACE: '3' };
const FOREIGN_RULES = [
  ['filter', 'FORWARD', '-i', 'foreign0', '-j', 'ACCEPT'],
  ['nat', 'POSTROUTING', '-s', '203.0.113.0/24', '-j', 'MASQUERADE'],
] as const;

describe('surviving crashes and restarts', () => {
  let host: SimHost;
  let wan: OutsideNamespace;
  let whoami: { stop: () => void } | undefined;
  const d = () => host.driver;

  async function cableWan(): Promise<void> {
    whoami?.stop();
    wan = await host.addOutside('res-wan', { hostAddress: '198.18.1.1', address: '198.18.1.2', prefix: 30 });
    whoami = await startWhoAmI(wan.ns, 9000);
  }

  async function addForeign(): Promise<void> {
    await host.vsctl(['--may-exist', 'add-port', 'ovs0', 'foreign0', '--', 'set', 'interface', 'foreign0', 'type=internal']);
    for (const [table, chain, ...rule] of FOREIGN_RULES) {
      if ((await host.exec('iptables', ['-w', '-t', table, '-C', chain, ...rule], { check: false })).exitCode !== 0) {
        await host.exec('iptables', ['-w', '-t', table, '-A', chain, ...rule]);
      }
    }
  }

  /** The base network works as before, everything is accounted for, and what is not ours is untouched. */
  async function healthy(): Promise<void> {
    await waitFor('the plugin state to agree with Docker and the host', async () => (await assertConsistent(host), true), 30_000, 500).catch(async () => assertConsistent(host));
    const k2 = await containerAddress(host, 'k2', 'base');
    assert.ok(await ping(host, 'k1', k2.ip, 2), 'k1 reaches k2');
    await startHttp(host, 'k2').catch(() => {});
    assert.equal(await httpGet(host, 'k1', k2.ip), (await host.docker(['exec', 'k2', 'hostname'])).stdout.trim(), 'TCP k1 -> k2');
    assert.equal(await tcpSay(host, 'k1', wan.address, 9000), wan.hostAddress, 'k1 reaches the outside through NAT');
    assert.equal((await host.vsctl(['port-to-br', 'foreign0'])).stdout.trim(), 'ovs0', 'the foreign port is still there');
    for (const [table, chain, ...rule] of FOREIGN_RULES) {
      assert.equal((await host.exec('iptables', ['-w', '-t', table, '-C', chain, ...rule], { check: false })).exitCode, 0, `foreign rule ${rule.join(' ')}`);
    }
  }

  /** What to look at when a wait fails: containers, the plugin's complaints, dockerd's errors. */
  async function diagnosis(): Promise<string> {
    const ps = (await host.docker(['ps', '-a', '--format', '{{.Names}}: {{.Status}}'], { check: false })).stdout;
    const lines = await host.pluginLogLines();
    const plugin = lines.filter((l) => l.level === 'warn' || l.level === 'error').slice(-8).map((l) => JSON.stringify(l));
    // The story of every endpoint a refusal names.
    const named = new Set(plugin.flatMap((l) => [...l.matchAll(/endpoint ([0-9a-f]{12})/g)].map((m) => m[1]!)));
    for (const id of named) {
      plugin.push(`endpoint ${id}: ${lines.filter((l) => String(l.endpointId ?? '').startsWith(id)).map((l) => `${l.time} ${l.msg}${l.call ? ` ${l.call}` : ''}`).join(' | ')}`);
    }
    const dockerd = (await readFile(`${host.dir}/dockerd.log`, 'utf8').catch(() => '')).split('\n').filter((l) => /level=(error|fatal)/.test(l)).slice(-8);
    return `\ncontainers:\n${ps}\nplugin:\n${plugin.join('\n')}\ndockerd:\n${dockerd.join('\n')}`;
  }

  async function waitForBaseContainers(): Promise<void> {
    await waitFor('k1 and k2 to run again', async () => {
      const running = (await host.docker(['ps', '--format', '{{.Names}}'])).stdout.split('\n');
      return running.includes('k1') && running.includes('k2');
    }, 120_000, 500).catch(async (err) => {
      throw new Error(`${(err as Error).message}${await diagnosis()}`);
    });
  }

  /** Waits until the restarted plugin logs `msg` (its repair of what the crash left). */
  async function repaired(msg: string): Promise<void> {
    await waitFor(`the plugin to log "${msg}"`, async () => {
      // After the fault: a managed plugin that died is started again by dockerd (with the fault still set)
      // before crashIn restarts it, and that start may be the one that repairs.
      const msgs = (await host.pluginLogLines()).map((l) => l.msg);
      return msgs.slice(msgs.lastIndexOf('fault injected: the plugin kills itself here')).includes(msg);
    }, 30_000, 250);
  }

  /** Runs `action` with the plugin set to kill itself at `fault`, then restarts it as an operator would. */
  async function crashIn(fault: string, action: () => Promise<unknown>): Promise<void> {
    await host.stopPlugin();
    await host.startPlugin({ OVSNET_FAULT: fault });
    const done = action().then(
      (r) => ({ ok: true, r }),
      (e) => ({ ok: false, e }),
    );
    await host.waitPluginExit(60_000);
    assert.match(await host.pluginLog(), new RegExp(`"fault injected: the plugin kills itself here","fault":"${fault}"`));
    await host.startPlugin({ OVSNET_FAULT: '' });
    await done;
  }

  before(async () => {
    // The plugin's state on lossyfs: the power cut below forgets every write of the plugin's not synced.
    host = await SimHost.start({ name: 'res', pluginEnv: FAST_RECONCILE, lossyState: true });
    await host.docker(['network', 'create', '-d', d(), '--ipam-driver', d(), '--subnet', '10.40.0.0/24', '-o', 'vlan=40', 'base']);
    await runContainer(host, 'k1', 'base', { ip: '10.40.0.10', extra: ['--restart', 'always'] });
    await runContainer(host, 'k2', 'base', { extra: ['--restart', 'always'] });
    await addForeign();
    await cableWan();
    await healthy();
  });
  after(async () => {
    whoami?.stop();
    await host?.stop();
  });

  it('plugin killed (SIGKILL) while containers run: they keep working, and later calls work', async () => {
    await host.stopPlugin('SIGKILL');
    const k2 = await containerAddress(host, 'k2', 'base');
    assert.ok(await ping(host, 'k1', k2.ip, 2), 'traffic does not need the plugin');
    await host.startPlugin();
    await runContainer(host, 'k3', 'base');
    assert.ok(await ping(host, 'k3', k2.ip, 2));
    await host.docker(['rm', '-f', 'k3']);
    await host.docker(['network', 'create', '-d', d(), '--ipam-driver', d(), '--subnet', '10.41.0.0/24', '-o', 'vlan=41', 'scratch']);
    await host.docker(['network', 'rm', 'scratch']);
    await healthy();
  });

  for (const point of ['after-record', 'after-bridge', 'after-gateway']) {
    it(`killed in CreateNetwork (${point}): the half-made network is undone`, async () => {
      await crashIn(`CreateNetwork:${point}`, () =>
        host.docker(['network', 'create', '-d', d(), '--ipam-driver', d(), '--subnet', '10.42.0.0/24', '-o', 'vlan=42', 'halfmade']),
      );
      await host.docker(['network', 'rm', 'halfmade'], { check: false });
      await repaired('reconcile: undid a network whose creation never finished');
      await healthy();
      // Nothing of it is left behind: the same subnet can be used again.
      await host.docker(['network', 'create', '-d', d(), '--ipam-driver', d(), '--subnet', '10.42.0.0/24', '-o', 'vlan=42', 'again']);
      await host.docker(['network', 'rm', 'again']);
    });
  }

  const repairs: Record<string, string | undefined> = {
    // dockerd saw the call fail and never releases what the plugin had already taken
    'RequestAddress:after-record': 'reconcile: released an address no container or aux address holds',
    // dockerd rolls back a failed CreateEndpoint with ReleaseAddress only, never DeleteEndpoint
    'CreateEndpoint:after-record': 'reconcile: removed an endpoint Docker no longer has',
    // dockerd rolls back a failed Join itself (DeleteEndpoint, retried until the plugin is back)
    'Join:after-devices': undefined,
  };
  for (const [fault, repair] of Object.entries(repairs)) {
    it(`killed in ${fault.split(':')[0]} during docker run: nothing is left of the failed start`, async () => {
      await crashIn(fault, () => runContainer(host, 'victim', 'base'));
      await host.docker(['rm', '-f', 'victim'], { check: false });
      if (repair) await repaired(repair);
      await healthy();
    });
  }

  it('killed in Leave during docker stop: the container starts again cleanly', async () => {
    await runContainer(host, 'leaver', 'base');
    await crashIn('Leave:before-record', () => host.docker(['stop', '-t', '1', 'leaver']));
    await host.docker(['start', 'leaver']);
    await healthy();
    await host.docker(['rm', '-f', 'leaver']);
    await healthy();
  });

  it('killed in DeleteEndpoint during docker rm, its record gone and its devices not: nothing of it is left', async () => {
    await runContainer(host, 'goner', 'base');
    const endpointId = (await host.docker(['inspect', '-f', '{{.NetworkSettings.Networks.base.EndpointID}}', 'goner'])).stdout.trim();
    // Its devices may be a spare pair the plugin made ahead of need: named in its record.
    const port = (await host.pluginState()).endpoints.find((e) => e.id === endpointId)?.hostIf;
    assert.ok(port, `the plugin has endpoint ${endpointId}`);
    assert.equal((await host.vsctl(['port-to-br', port])).stdout.trim(), 'ovs0');
    await crashIn('DeleteEndpoint:after-record', () => host.docker(['rm', '-f', 'goner']));
    await host.docker(['rm', '-f', 'goner'], { check: false });
    // Its devices go by Docker's retry of DeleteEndpoint, or as debris of the reconciler's pass.
    await waitFor(`port ${port} to go`, async () => (await host.vsctl(['port-to-br', port], { check: false })).exitCode !== 0, 30_000, 250);
    assert.ok(!(await host.pluginState()).endpoints.some((e) => e.id === endpointId), 'the endpoint record is gone');
    await healthy();
  });

  it('killed in DeleteNetwork: the network Docker removed goes from the plugin too', async () => {
    await host.docker(['network', 'create', '-d', d(), '--ipam-driver', d(), '--subnet', '10.43.0.0/24', '-o', 'vlan=43', 'doomed']);
    await crashIn('DeleteNetwork:after-teardown', () => host.docker(['network', 'rm', 'doomed']));
    await repaired('reconcile: removed a network Docker no longer has');
    await healthy();
  });

  it('dockerd restarted without live-restore: containers come back on their networks, replays change nothing', async () => {
    const poolsBefore = (await host.pluginState()).pools.length;
    await host.stopDockerd();
    await host.startDockerd();
    await waitForBaseContainers();
    assert.equal((await containerAddress(host, 'k1', 'base')).ip, '10.40.0.10', 'a static address comes back');
    assert.equal((await host.pluginState()).pools.length, poolsBefore, 'replayed RequestPool holds no new pool');
    await healthy();
  });

  it('dockerd restarted with live-restore: containers keep running and keep their endpoints, replays change nothing', async () => {
    await host.stopDockerd();
    await host.startDockerd(['--live-restore']);
    await waitFor('k1 and k2 to run again', async () => (await host.docker(['ps', '-q'])).stdout.split('\n').filter(Boolean).length >= 2, 60_000, 500);
    await healthy();
    const before = await host.pluginState();
    const k2 = await containerAddress(host, 'k2', 'base');
    const k1Pid = (await inspect(host, 'container', 'k1')).State.Pid;
    const replaysBefore = (await host.pluginLogLines()).filter((l) => l.call === 'IpamDriver.RequestPool').length;
    await host.stopDockerd('SIGTERM', true);
    const whileDown = await cmd('nsenter', [`--net=/proc/${k1Pid}/ns/net`, 'ping', '-c', '1', '-W', '2', k2.ip], { check: false });
    assert.equal(whileDown.exitCode, 0, 'containers keep talking while dockerd is down');
    await host.startDockerd(['--live-restore']);
    assert.equal((await containerAddress(host, 'k2', 'base')).endpointId, k2.endpointId, 'the same endpoint, not a new one');
    const after = await host.pluginState();
    assert.deepEqual(after.addresses.map((a) => a.address).sort(), before.addresses.map((a) => a.address).sort(), 'replays hold nothing new');
    assert.deepEqual(after.pools.map((p) => p.id).sort(), before.pools.map((p) => p.id).sort());
    const replays = (await host.pluginLogLines()).filter((l) => l.call === 'IpamDriver.RequestPool').length - replaysBefore;
    assert.ok(replays >= 1, 'dockerd replayed its pool');
    await healthy();
    // Back to the plain daemon for what follows.
    await host.stopDockerd();
    await host.startDockerd();
    await waitFor('k1 and k2 to run again', async () => (await host.docker(['ps', '-q'])).stdout.split('\n').filter(Boolean).length >= 2, 60_000, 500);
  });

  it('ovs-vswitchd restarted: the gateway comes back with its address by itself', async (t) => {
    const gateway = (await host.pluginState()).networks.find((n) => n.gatewayPort)!.gatewayPort!;
    await host.stopVswitchd();
    await host.startVswitchd();
    const started = Date.now();
    await waitFor('the gateway address to be back', async () => {
      const out = await host.exec('ip', ['-br', 'address', 'show', 'dev', gateway], { check: false });
      return out.stdout.includes('10.40.0.1/24');
    }, 15_000, 100);
    t.diagnostic(`restored ${Date.now() - started} ms after ovs-vswitchd started again`);
    const offload = await host.exec('ethtool', ['-k', gateway]);
    assert.match(offload.stdout, /tx-checksumming: off/, 'checksum offload is off again on the new device');
    await healthy();
  });

  it('ovsdb-server restarted: the plugin reconnects and keeps working', async () => {
    await host.stopOvsdb();
    await host.startOvsdb();
    await runContainer(host, 'after-ovsdb', 'base');
    assert.ok(await ping(host, 'after-ovsdb', '10.40.0.10', 2));
    await host.docker(['rm', '-f', 'after-ovsdb']);
    await healthy();
  });

  it('a power cut that loses what was not synced: every call answered is kept, and the plugin restores every network before dockerd brings the containers back', async () => {
    // Answered just before the cut: a container started (its endpoint, its join, its address) and one removed
    // (its address let go). dockerd's disk keeps all of it; the plugin's keeps only what the plugin synced.
    await runContainer(host, 'k4', 'base', { ip: '10.40.0.44', extra: ['--restart', 'always'] });
    await runContainer(host, 'gone', 'base', { ip: '10.40.0.45' });
    await host.docker(['rm', '-f', 'gone']);
    await host.powerCycle();
    assert.ok(host.lastCut && host.lastCut.dirtyBytes > 0, `the cut forgot writes the plugin had not synced (${JSON.stringify(host.lastCut)})`);
    await host.startOvs();
    await host.startPlugin();
    await host.startDockerd();
    await waitForBaseContainers();
    const lines = await host.pluginLogLines();
    const lastStart = lines.map((l) => l.msg).lastIndexOf('starting');
    const since = lines.slice(lastStart);
    const restoredAt = since.findIndex((l) => l.msg === 'networks restored');
    const firstJoin = since.findIndex((l) => l.call === 'NetworkDriver.Join');
    assert.ok(restoredAt >= 0 && firstJoin > restoredAt, 'networks were restored before the first Join');
    assert.equal((await host.exec('cat', ['/proc/sys/net/ipv4/ip_forward'])).stdout.trim(), '1');
    assert.ok((await host.chainRules('nat', 'OVSNET-POSTROUTING')).some((r) => r.includes('10.40.0.0/24')), 'NAT is back');
    await addForeign(); // the cut took the foreign rules with it (they lived only in the kernel)
    await cableWan();
    await healthy();
    // k4 came back with its address, and the address of the container removed before the cut is free.
    await waitFor('k4 to run again', async () => (await host.docker(['ps', '--format', '{{.Names}}'])).stdout.split('\n').includes('k4'), 60_000, 500);
    assert.equal((await containerAddress(host, 'k4', 'base')).ip, '10.40.0.44');
    assert.ok(await ping(host, 'k4', '10.40.0.10', 2), 'k4 reaches k1');
    const doctor = await host.ovsnet(['doctor'], { check: false });
    assert.equal(doctor.exitCode, 0, `doctor finds nothing wrong after the cut: ${doctor.stdout}${doctor.stderr}`);
    await runContainer(host, 'again', 'base', { ip: '10.40.0.45' });
    await host.docker(['rm', '-f', 'again', 'k4']);
    await healthy();
  });
});
