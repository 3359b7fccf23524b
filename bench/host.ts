/**
 * Container start and removal as users run them: on this host's own dockerd and Open vSwitch, through the
 * plugin the host runs (`plugin/setup-host.sh`'s), on an `ovs` VLAN network, interleaved with Docker's
 * `bridge` network and `--net none`, then 50 parallel starts on `ovs` beside `bridge`. The simulated hosts
 * (`npm run bench:sim`) stay for OVN and multi-host figures.
 *
 *   sudo npm run bench -- [containers per kind, default 30] [--log-level info|debug]
 *
 * The plugin's own time per start and per removal is read from its metrics (the sum of its protocol calls'
 * durations, and of that the time its commits took to be synced), scraped before and after each container, so
 * it is the same at any log level. The plugin must serve metrics: a plugin started by setup-host.sh (its pid in
 * /run/ovsnet.pid) is restarted here with OVSNET_METRICS (and the log level asked for), its other settings
 * kept, and restarted as it was at the end; one under systemd must have OVSNET_METRICS set by its operator.
 * Prints the settings that matter (engine, Open vSwitch and its datapath, the plugin's version and log level,
 * the kernel) with the figures.
 */
import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { readFile, stat, writeFile } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import Docker from 'dockerode';
import { assertUnrouted } from '../test/e2e/harness/addresses.js';
import { TEST_IMAGE } from '../test/e2e/harness/image.js';
import { alive, cmd, waitFor } from '../test/e2e/harness/proc.js';
import { median, quantile } from './support.js';

const args = process.argv.slice(2);
const levelAt = args.indexOf('--log-level');
const LOG_LEVEL = levelAt >= 0 ? args[levelAt + 1] : undefined;
const N = Number(args.find((a, i) => /^\d+$/.test(a) && i !== levelAt + 1) ?? 30);
if (!Number.isInteger(N) || N < 3 || (LOG_LEVEL !== undefined && !['debug', 'info', 'warn', 'error'].includes(LOG_LEVEL))) {
  console.error('usage: npm run bench -- [containers per kind, an integer >= 3] [--log-level debug|info|warn|error]');
  process.exit(2);
}
const DRIVER = process.env.BENCH_DRIVER ?? 'ovs';
const SOCKET = `/run/docker/plugins/${DRIVER}.sock`;
const METRICS = process.env.BENCH_METRICS ?? '127.0.0.1:9617';
const PIDFILE = '/run/ovsnet.pid';
const LOG = '/var/log/ovsnet.log';
const OVS_SUBNET = '10.93.0.0/16';
const LABEL = 'ovsnet-bench';
const KINDS = ['ovs', 'bridge', 'none'] as const;
type Kind = (typeof KINDS)[number];
const PARALLEL = 50;
const PARALLEL_ROUNDS = 4;
const fmt = (v: number) => `${v.toFixed(1).padStart(7)} ms`;

/** The plugin's metrics, as name{labels} -> value. */
async function scrape(): Promise<Map<string, number>> {
  const [host, port] = [METRICS.slice(0, METRICS.lastIndexOf(':')), Number(METRICS.slice(METRICS.lastIndexOf(':') + 1))];
  const text = await new Promise<string>((resolve, reject) => {
    http.get({ host, port, path: '/metrics' }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve(body));
    }).on('error', reject);
  });
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^([a-z_]+(?:\{[^}]*\})?) (\S+)$/.exec(line);
    if (m) out.set(m[1]!, Number(m[2]));
  }
  return out;
}

/** Milliseconds the plugin spent in protocol calls (in all, and by call), and in commits, so far. */
async function spent(): Promise<{ calls: number; commits: number; byCall: Map<string, number> }> {
  const metrics = await scrape();
  let calls = 0;
  const byCall = new Map<string, number>();
  for (const [name, value] of metrics) {
    const call = /^ovsnet_request_duration_seconds_sum\{call="([^"]+)"\}$/.exec(name)?.[1];
    if (!call) continue;
    calls += value;
    byCall.set(call, value * 1000);
  }
  return { calls: calls * 1000, commits: (metrics.get('ovsnet_store_commit_duration_seconds_sum') ?? 0) * 1000, byCall };
}

/** Each call's time between two scrapes. */
function perCall(from: Map<string, number>, to: Map<string, number>, into: Map<string, number[]>): void {
  for (const [call, value] of to) {
    const delta = value - (from.get(call) ?? 0);
    if (delta > 0) into.set(call, [...(into.get(call) ?? []), delta]);
  }
}

function pluginGet(path: string): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    http.get({ socketPath: SOCKET, path }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve(JSON.parse(body || '{}') as Record<string, unknown>));
    }).on('error', reject);
  });
}

/** The plugin started by setup-host.sh: its pid, command line and environment. */
async function hostPlugin(): Promise<{ pid: number; argv: string[]; env: Record<string, string> } | undefined> {
  const pid = Number((await readFile(PIDFILE, 'utf8').catch(() => '')).trim());
  if (!pid || !alive(pid)) return undefined;
  const argv = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0').filter(Boolean);
  const env = Object.fromEntries((await readFile(`/proc/${pid}/environ`, 'utf8')).split('\0').filter(Boolean).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
  return { pid, argv, env };
}

/** Stops the plugin at pid and starts argv with env, as setup-host.sh does; waits until it answers. */
async function restartPlugin(pid: number, argv: string[], env: Record<string, string>): Promise<number> {
  process.kill(pid, 'SIGTERM');
  await waitFor('the plugin to stop', async () => !alive(pid), 30_000, 100);
  const log = openSync(LOG, 'a');
  const child = spawn(argv[0]!, argv.slice(1), { env, stdio: ['ignore', log, log], detached: true });
  closeSync(log);
  child.unref();
  await writeFile(PIDFILE, `${child.pid}\n`);
  await waitFor('the plugin to answer', async () => (await pluginGet('/ovsnet/state').then(() => true, () => false)), 30_000, 100);
  return child.pid!;
}

async function main(): Promise<void> {
  if (!(await stat(SOCKET).catch(() => undefined))) throw new Error(`no plugin socket ${SOCKET}: start the plugin (sudo bash plugin/setup-host.sh), or name another with BENCH_DRIVER`);
  const docker = new Docker();
  const version = (await docker.version()).Version;
  const original = await hostPlugin();
  let restarted: number | undefined;
  const info = async () => [...(await scrape()).keys()].find((k) => k.startsWith('ovsnet_info{'));
  let described = await info().catch(() => undefined);
  if (!described || (LOG_LEVEL && !described.includes(`log_level="${LOG_LEVEL}"`))) {
    if (!original) {
      throw new Error(`the plugin serves no metrics at ${METRICS}${LOG_LEVEL ? ` with log level ${LOG_LEVEL}` : ''}: set OVSNET_METRICS=${METRICS}${LOG_LEVEL ? ` and OVSNET_LOG_LEVEL=${LOG_LEVEL}` : ''} in its settings and restart it (or set BENCH_METRICS to where it serves them)`);
    }
    restarted = await restartPlugin(original.pid, original.argv, { ...original.env, OVSNET_METRICS: METRICS, ...(LOG_LEVEL ? { OVSNET_LOG_LEVEL: LOG_LEVEL } : {}) });
    described = await info();
  }
  // Docker 20.10 can keep a bridge network it counts endpoints on after its containers went (a race in removing
  // many at once): such a network cannot be removed until dockerd restarts, so each run makes one of its own.
  const tag = Date.now().toString(36);
  const networks: Record<Kind, string> = { ovs: `bench-host-ovs-${tag}`, bridge: `bench-host-bridge-${tag}`, none: 'none' };
  try {
    await removeBenchWork(docker, networks); // what an interrupted run left
    await assertUnrouted([OVS_SUBNET], 'a benchmark network');
    let bridgeSubnet: string | undefined;
    for (let n = 0; n < 6 * 256 && !bridgeSubnet; n++) {
      const candidate = `10.${94 + (n >> 8)}.${n & 255}.0/24`;
      if (await assertUnrouted([candidate], 'a benchmark network').then(() => true, () => false)) bridgeSubnet = candidate;
    }
    if (!bridgeSubnet) throw new Error('every /24 of 10.94.0.0/15 to 10.99.0.0/16 is routed here: remove the benchmark networks left behind (docker network ls)');
    await docker.createNetwork({ Name: networks.ovs, Driver: DRIVER, IPAM: { Driver: DRIVER, Config: [{ Subnet: OVS_SUBNET }] }, Options: { vlan: '93' } });
    await docker.createNetwork({ Name: networks.bridge, Driver: 'bridge', IPAM: { Config: [{ Subnet: bridgeSubnet }] } });
    const id = (await docker.getNetwork(networks.ovs).inspect()).Id as string;
    const records = (await pluginGet('/ovsnet/state')) as { networks?: Array<{ id: string; datapath?: string }> };
    const datapath = records.networks?.find((n) => n.id === id)?.datapath ?? 'unknown';
    const ovsVersion = (await cmd('ovs-vsctl', ['--version'])).stdout.split('\n')[0];

    const start = Object.fromEntries(KINDS.map((k) => [k, [] as number[]])) as Record<Kind, number[]>;
    const remove = Object.fromEntries(KINDS.map((k) => [k, [] as number[]])) as Record<Kind, number[]>;
    const work = { start: [] as number[], startCommits: [] as number[], removal: [] as number[], removalCommits: [] as number[] };
    const startCalls = new Map<string, number[]>();
    const removalCalls = new Map<string, number[]>();
    const settled = async () => {
      for (let i = 0; i < 200 && (await pluginGet('/ovsnet/state')).sparesBusy; i++) await new Promise((r) => setTimeout(r, 25));
    };

    const once = async (kind: Kind, record: boolean) => {
      const before = kind === 'ovs' ? await spent() : undefined;
      const t0 = performance.now();
      const container = await docker.createContainer({ Image: TEST_IMAGE, Cmd: ['sleep', '1d'], Labels: { [LABEL]: '1' }, HostConfig: { NetworkMode: networks[kind] } });
      await container.start();
      const t1 = performance.now();
      const started = kind === 'ovs' ? await spent() : undefined;
      const t2 = performance.now();
      await container.remove({ force: true });
      const t3 = performance.now();
      const removed = kind === 'ovs' ? await spent() : undefined;
      if (kind === 'ovs') await settled();
      if (!record) return;
      start[kind].push(t1 - t0);
      remove[kind].push(t3 - t2);
      if (before && started && removed) {
        work.start.push(started.calls - before.calls);
        work.startCommits.push(started.commits - before.commits);
        work.removal.push(removed.calls - started.calls);
        work.removalCommits.push(removed.commits - started.commits);
        perCall(before.byCall, started.byCall, startCalls);
        perCall(started.byCall, removed.byCall, removalCalls);
      }
    };
    const parallelRuns: Record<'ovs' | 'bridge', Array<{ wall: number; failed: number }>> = { ovs: [], bridge: [] };
    const parallel = async (kind: 'ovs' | 'bridge', record: boolean) => {
      const t0 = performance.now();
      const results = await Promise.allSettled(
        Array.from({ length: PARALLEL }, async () => {
          const container = await docker.createContainer({ Image: TEST_IMAGE, Cmd: ['sleep', '1d'], Labels: { [LABEL]: '1' }, HostConfig: { NetworkMode: networks[kind] } });
          await container.start();
        }),
      );
      const wall = performance.now() - t0;
      await removeLabelled(docker);
      await settled();
      if (record) parallelRuns[kind].push({ wall, failed: results.filter((r) => r.status === 'rejected').length });
    };

    for (const kind of KINDS) await once(kind, false);
    for (let i = 0; i < N; i++) for (const kind of KINDS.map((_, j) => KINDS[(i + j) % KINDS.length]!)) await once(kind, true);
    for (const kind of ['bridge', 'ovs'] as const) await parallel(kind, false);
    for (let round = 0; round < PARALLEL_ROUNDS; round++) for (const kind of round % 2 === 0 ? (['ovs', 'bridge'] as const) : (['bridge', 'ovs'] as const)) await parallel(kind, true);

    console.log(`\n${N} containers per kind, interleaved, on this host: Docker ${version}, ${ovsVersion} (datapath ${datapath}), plugin ${described ?? '(no ovsnet_info)'}, kernel ${os.release()}, ${os.cpus().length} CPUs\n`);
    console.log('kind      start median   start p90   remove median  remove p90');
    for (const kind of KINDS) console.log(`${kind.padEnd(9)}${fmt(quantile(start[kind], 0.5))} ${fmt(quantile(start[kind], 0.9))} ${fmt(quantile(remove[kind], 0.5))} ${fmt(quantile(remove[kind], 0.9))}`);
    const ratio = (x: number[], y: number[]) => (quantile(x, 0.5) / quantile(y, 0.5)).toFixed(3);
    console.log(`\novs/bridge  start median ratio ${ratio(start.ovs, start.bridge)}, remove median ratio ${ratio(remove.ovs, remove.bridge)}`);
    console.log(`plugin time per start (ovs): median ${fmt(quantile(work.start, 0.5))}, p90 ${fmt(quantile(work.start, 0.9))}, p99 ${fmt(quantile(work.start, 0.99))}; of which synced commits: median ${fmt(quantile(work.startCommits, 0.5))}`);
    console.log(`plugin time per removal (ovs): median ${fmt(quantile(work.removal, 0.5))}, p90 ${fmt(quantile(work.removal, 0.9))}, p99 ${fmt(quantile(work.removal, 0.99))}; of which synced commits: median ${fmt(quantile(work.removalCommits, 0.5))}`);
    const calls = (m: Map<string, number[]>) => [...m].map(([call, v]) => `${call.replace(/^(NetworkDriver|IpamDriver)\./, '')} ${quantile(v, 0.5).toFixed(2)}`).join(', ');
    console.log(`  per call, medians in ms: start: ${calls(startCalls)}; removal: ${calls(removalCalls)}`);
    for (const kind of ['ovs', 'bridge'] as const) {
      const runs = parallelRuns[kind];
      console.log(`${PARALLEL} parallel starts (${kind}): wall ${runs.map((r) => fmt(r.wall).trim()).join(', ')} (median ${fmt(median(runs.map((r) => r.wall))).trim()}); failures ${runs.map((r) => r.failed).join(', ')}`);
    }
    const medianWall = (kind: 'ovs' | 'bridge') => median(parallelRuns[kind].map((r) => r.wall));
    console.log(`${PARALLEL} parallel starts ovs/bridge: median wall ratio ${(medianWall('ovs') / medianWall('bridge')).toFixed(3)}`);
  } finally {
    await removeBenchWork(docker, networks);
    if (restarted && original) await restartPlugin(restarted, original.argv, original.env);
  }
}

/** Removes the benchmark's containers and networks (a network whose last container just went may need a moment). */
async function removeBenchWork(docker: Docker, networks: Record<Kind, string>): Promise<void> {
  await removeLabelled(docker);
  for (const name of [networks.ovs, networks.bridge]) {
    await waitFor(`network ${name} to be removed`, async () => {
      const gone = await docker.getNetwork(name).remove().then(() => true, (err: { statusCode?: number }) => err.statusCode === 404);
      return gone;
    }, 10_000, 250).catch((err: Error) => console.error(`${err.message} (Docker still counts endpoints on it): it goes with a restart of dockerd`));
  }
}

/**
 * Removes every container the benchmark started, four at a time: Docker 20.10, removing 50 at once, can go on
 * counting an endpoint on their network after they are gone, and the network then cannot be removed.
 */
async function removeLabelled(docker: Docker): Promise<void> {
  const left = await docker.listContainers({ all: true, filters: { label: [LABEL] } });
  for (let i = 0; i < left.length; i += 4) await Promise.allSettled(left.slice(i, i + 4).map((c) => docker.getContainer(c.Id).remove({ force: true })));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
