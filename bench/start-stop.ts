/**
 * Container start and removal on an `ovs` VLAN network, on an `ovs` OVN
 * network, on Docker's `bridge` network and with `--net none`, interleaved in
 * one run on one simulated host, so the ratios compare like with like on a
 * noisy machine. A second simulated host (also an OVN chassis) pings each new
 * OVN container from its own container, to measure how soon after `docker run`
 * returns it answers across hosts.
 *
 *   npm run bench:sim -- [containers per kind, default 30]
 *   OVSNET_E2E_ENGINE=28.5 npm run bench:sim -- 30     (on Docker Engine 28.5; see test/install-engines.sh)
 *
 * Prints median and p90 of start and removal per kind, the ratios to
 * `bridge`, the plugin's own work per start and per removal (the sum of its
 * protocol call durations), the cross-host ping latency of OVN containers,
 * and 50 parallel starts on `ovs` beside `bridge` (wall time, failures; after one unrecorded burst of
 * each, four rounds in alternating order).
 * After each container of the plugin's, the run waits until the plugin has
 * finished its background work (spares made again, veth pairs deleted).
 */
import Docker from 'dockerode';
import path from 'node:path';
import { OvnCluster } from '../test/e2e/harness/ovn.js';
import { cmd } from '../test/e2e/harness/proc.js';
import { ENGINE, SimHost } from '../test/e2e/harness/sim-host.js';
import { TEST_IMAGE } from '../test/e2e/harness/image.js';
import { Underlay } from '../test/e2e/harness/underlay.js';
import { median, quantile } from './support.js';

const N = Number(process.argv[2] ?? 30);
if (!Number.isInteger(N) || N < 3) {
  console.error('usage: npm run bench:sim -- [containers per kind, an integer >= 3]');
  process.exit(2);
}

const fmt = (ms: number) => `${ms.toFixed(1).padStart(7)} ms`;
const PARALLEL = 50;
const PARALLEL_ROUNDS = 4;

/** The sum of the plugin's protocol call durations in a stretch of its debug log. */
function callTime(log: string): number {
  return log.split('\n').filter((l) => l.includes('"msg":"call"')).reduce((sum, l) => sum + (JSON.parse(l).durationMs as number), 0);
}
/** The sum of the times commits took to be durable (journal synced) in a stretch of the debug log: the part of callTime that is the disk. */
function commitTime(log: string): number {
  return log.split('\n').filter((l) => l.includes('"msg":"committed"')).reduce((sum, l) => sum + (JSON.parse(l).durationMs as number), 0);
}
/**
 * `ovn` is an OVN network in the default gateway mode (nat), for which Docker also attaches its
 * docker_gwbridge (a second endpoint it makes itself) for outbound traffic; `ovn-iso` is one in
 * gateway_mode=isolated, without it: the plugin's own path alone.
 */
const KINDS = ['ovs', 'ovn', 'ovn-iso', 'bridge', 'none'] as const;
type Kind = (typeof KINDS)[number];

async function main(): Promise<void> {
  const underlay = await Underlay.create('bench-ul');
  const a = await SimHost.start({ name: 'bench', plugin: false, ownSysfs: true });
  const b = await SimHost.start({ name: 'bench2', plugin: false, ownSysfs: true });
  try {
    await underlay.attach(a, '10.250.9.1/24');
    await underlay.attach(b, '10.250.9.2/24');
    const cluster = await OvnCluster.start([{ host: a, address: '10.250.9.1' }, { host: b, address: '10.250.9.2' }], { databases: 1 });
    for (const h of [a, b]) await h.startPlugin({ OVSNET_LOG_LEVEL: 'debug', OVSNET_OVN_NB: cluster.nbRemotes });
    const docker = new Docker({ socketPath: path.join(a.dir, 'docker.sock') });
    await a.docker(['network', 'create', '-d', a.driver, '--ipam-driver', a.driver, '--subnet', '10.60.0.0/16', '-o', 'vlan=60', 'bench-ovs']);
    await a.docker(['network', 'create', '-d', a.driver, '--ipam-driver', a.driver, '--subnet', '10.62.0.0/16', '-o', 'mode=ovn', 'bench-ovn']);
    await b.docker(['network', 'create', '-d', b.driver, '--ipam-driver', b.driver, '--subnet', '10.62.0.0/16', '-o', 'mode=ovn', 'bench-ovn']);
    await a.docker(['network', 'create', '-d', a.driver, '--ipam-driver', a.driver, '--subnet', '10.63.0.0/16', '-o', 'mode=ovn', '-o', 'gateway_mode=isolated', 'bench-ovn-iso']);
    await a.docker(['network', 'create', '-d', 'bridge', '--subnet', '10.61.0.0/16', 'bench-bridge']);
    await b.docker(['run', '-d', '--name', 'pinger', '--net', 'bench-ovn', TEST_IMAGE, 'sleep', '1d']);
    const pingerPid = JSON.parse((await b.docker(['inspect', 'pinger'])).stdout)[0].State.Pid as number;

    const networks: Record<Kind, string> = { ovs: 'bench-ovs', ovn: 'bench-ovn', 'ovn-iso': 'bench-ovn-iso', bridge: 'bench-bridge', none: 'none' };
    const start = Object.fromEntries(KINDS.map((k) => [k, [] as number[]])) as Record<Kind, number[]>;
    const remove = Object.fromEntries(KINDS.map((k) => [k, [] as number[]])) as Record<Kind, number[]>;
    const pluginWork: Record<'ovs' | 'ovn' | 'ovn-iso', number[]> = { ovs: [], ovn: [], 'ovn-iso': [] };
    const removalWork: Record<'ovs' | 'ovn' | 'ovn-iso', number[]> = { ovs: [], ovn: [], 'ovn-iso': [] };
    const commitWork: Record<'ovs' | 'ovn' | 'ovn-iso', number[]> = { ovs: [], ovn: [], 'ovn-iso': [] };
    const removalCommitWork: Record<'ovs' | 'ovn' | 'ovn-iso', number[]> = { ovs: [], ovn: [], 'ovn-iso': [] };
    const parallelRuns: Record<'ovs' | 'bridge', Array<{ wall: number; failed: number; first: string | undefined }>> = { ovs: [], bridge: [] };
    const answered: number[] = [];

    /** From docker run returning to the first reply to a ping from the other host. */
    const answersAfter = async (ip: string, since: number): Promise<number> => {
      for (;;) {
        const reply = await cmd('nsenter', [`--net=/proc/${pingerPid}/ns/net`, 'ping', '-c', '1', '-W', '0.05', ip], { check: false, timeoutMs: 5_000 });
        if (reply.exitCode === 0) return performance.now() - since;
        if (performance.now() - since > 10_000) return Infinity;
      }
    };

    const once = async (kind: Kind, record: boolean) => {
      const container = await docker.createContainer({ Image: TEST_IMAGE, Cmd: ['sleep', '1d'], HostConfig: { NetworkMode: networks[kind] } });
      const logBefore = (await a.pluginLog()).length;
      const t0 = performance.now();
      await container.start();
      const t1 = performance.now();
      let latency: number | undefined;
      if (kind === 'ovn') {
        const ip = (await container.inspect()).NetworkSettings.Networks['bench-ovn']!.IPAddress;
        latency = await answersAfter(ip, t1);
      }
      const log = await a.pluginLog();
      const t2 = performance.now();
      await container.remove({ force: true });
      const t3 = performance.now();
      if (!record) return;
      start[kind].push(t1 - t0);
      remove[kind].push(t3 - t2);
      if (kind === 'ovs' || kind === 'ovn' || kind === 'ovn-iso') {
        pluginWork[kind].push(callTime(log.slice(logBefore)));
        commitWork[kind].push(commitTime(log.slice(logBefore)));
        const removal = (await a.pluginLog()).slice(log.length);
        removalWork[kind].push(callTime(removal));
        removalCommitWork[kind].push(commitTime(removal));
      }
      if (latency !== undefined) answered.push(latency);
      if (kind !== 'bridge' && kind !== 'none') await settled();
    };

    /**
     * Waits until the plugin has finished what it does after answering (spares made again, veth pairs of
     * deleted endpoints deleted), so that no kind is measured while another's work goes on in the background.
     */
    const settled = async () => {
      for (let i = 0; i < 200 && (await a.pluginState()).sparesBusy; i++) await new Promise((r) => setTimeout(r, 25));
    };

    /** 50 containers started at once, then removed at once: wall time and failures. */
    const parallel = async (kind: 'ovs' | 'bridge', round: number | 'warm-up') => {
      const names = Array.from({ length: PARALLEL }, (_, i) => `par-${kind}-${round}-${i}`);
      const t0 = performance.now();
      const results = await Promise.allSettled(
        names.map(async (name) => {
          const container = await docker.createContainer({ name, Image: TEST_IMAGE, Cmd: ['sleep', '1d'], HostConfig: { NetworkMode: networks[kind] } });
          await container.start();
        }),
      );
      const wall = performance.now() - t0;
      const failures = results.filter((r) => r.status === 'rejected');
      await Promise.allSettled(names.map((name) => docker.getContainer(name).remove({ force: true })));
      await settled();
      if (round === 'warm-up') return;
      parallelRuns[kind].push({ wall, failed: failures.length, first: failures[0] ? String((failures[0] as PromiseRejectedResult).reason).slice(0, 200) : undefined });
    };

    for (const kind of KINDS) await once(kind, false); // warm-up
    for (let i = 0; i < N; i++) {
      // Rotate the order so no kind always follows the same one.
      const order = KINDS.map((_, j) => KINDS[(i + j) % KINDS.length]!);
      for (const kind of order) await once(kind, true);
    }
    // The first burst of 50 on a host is slower than later ones, whichever kind it is (dockerd, containerd
    // and the kernel grow to it): one of each, unrecorded, as the sequential runs have their warm-up.
    for (const kind of ['bridge', 'ovs'] as const) await parallel(kind, 'warm-up');
    for (let round = 0; round < PARALLEL_ROUNDS; round++) {
      for (const kind of round % 2 === 0 ? (['ovs', 'bridge'] as const) : (['bridge', 'ovs'] as const)) await parallel(kind, round);
    }

    const version = (await a.docker(['version', '--format', '{{.Server.Version}}'])).stdout.trim();
    console.log(`\n${N} containers per kind, interleaved, on one simulated host (userspace datapath), Docker ${version} (${ENGINE})\n`);
    console.log('kind      start median   start p90   remove median  remove p90');
    for (const kind of KINDS) {
      console.log(`${kind.padEnd(9)}${fmt(quantile(start[kind], 0.5))} ${fmt(quantile(start[kind], 0.9))} ${fmt(quantile(remove[kind], 0.5))} ${fmt(quantile(remove[kind], 0.9))}`);
    }
    const ratio = (x: number[], y: number[]) => (quantile(x, 0.5) / quantile(y, 0.5)).toFixed(3);
    console.log(`\novs/bridge  start median ratio ${ratio(start.ovs, start.bridge)}, remove median ratio ${ratio(remove.ovs, remove.bridge)}`);
    console.log(`ovn/bridge  start median ratio ${ratio(start.ovn, start.bridge)} (target <= 1.3), remove median ratio ${ratio(remove.ovn, remove.bridge)}`);
    console.log(`ovn-iso/bridge  start median ratio ${ratio(start['ovn-iso'], start.bridge)}, remove median ratio ${ratio(remove['ovn-iso'], remove.bridge)}`);
    for (const kind of ['ovs', 'ovn', 'ovn-iso'] as const) {
      console.log(`plugin work per start (${kind}): median ${fmt(quantile(pluginWork[kind], 0.5))}, p90 ${fmt(quantile(pluginWork[kind], 0.9))}, p99 ${fmt(quantile(pluginWork[kind], 0.99))}; per removal: median ${fmt(quantile(removalWork[kind], 0.5))}, p90 ${fmt(quantile(removalWork[kind], 0.9))}`);
      console.log(`  of which durable commits (the state's journal synced): per start median ${fmt(quantile(commitWork[kind], 0.5))}, p99 ${fmt(quantile(commitWork[kind], 0.99))}; per removal median ${fmt(quantile(removalCommitWork[kind], 0.5))}`);
    }
    for (const kind of ['ovs', 'bridge'] as const) {
      const runs = parallelRuns[kind];
      console.log(`${PARALLEL} parallel starts (${kind}): wall ${runs.map((r) => fmt(r.wall).trim()).join(', ')} (median ${fmt(median(runs.map((r) => r.wall))).trim()}); failures ${runs.map((r) => r.failed).join(', ')}${runs.find((r) => r.first) ? ` (first: ${runs.find((r) => r.first)!.first})` : ''}`);
    }
    const medianWall = (kind: 'ovs' | 'bridge') => median(parallelRuns[kind].map((r) => r.wall));
    console.log(`${PARALLEL} parallel starts ovs/bridge: median wall ratio ${(medianWall('ovs') / medianWall('bridge')).toFixed(3)}; rounds in which ovs was faster: ${parallelRuns.ovs.filter((r, i) => r.wall < parallelRuns.bridge[i]!.wall).length} of ${PARALLEL_ROUNDS}`);
    console.log(`ovn: a container answers a ping from another host ${fmt(quantile(answered, 0.5))} (median), ${fmt(quantile(answered, 0.9))} (p90), ${fmt(Math.max(...answered))} (max) after docker run returns (target <= 200 ms)`);
  } finally {
    await b.stop();
    await a.stop();
    await underlay.destroy();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
