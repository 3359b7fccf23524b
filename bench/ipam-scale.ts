/**
 * IPAM and state at scale, spoken on the plugin's socket as dockerd speaks
 * it (one keep-alive connection, the same request bodies): one /16 filled to
 * 60 000 addresses. At 1 000, 10 000 and 60 000 held addresses it prints
 * RequestAddress and ReleaseAddress latency over 1 000 calls each (p50, p99,
 * max), the plugin's resident memory, and how long the plugin, restarted on
 * that state, takes to answer Plugin.Activate. Then 1 000 endpoints on the
 * bridge (veths and OVS ports made through CreateEndpoint and Join) and how
 * long one reconcile pass and one drift check take.
 *
 *   npm run bench:scale [-- <addresses, default 60000>]
 *   BENCH_ENDPOINTS=0 ...                 (the IPAM part only)
 *   BENCH_NODE_OPTIONS='--max-old-space-size=128' ...   (NODE_OPTIONS for the plugin process)
 *   BENCH_STATE=tmpfs ...                 (the state directory on tmpfs, where a sync costs nothing: what
 *                                          the calls cost but for the disk; no durability, for comparison only)
 *
 * Runs on a simulated host without dockerd (its own ovsdb-server and
 * ovs-vswitchd): nothing of the machine's own is touched.
 */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { cmd } from '../test/e2e/harness/proc.js';
import { SimHost } from '../test/e2e/harness/sim-host.js';
import { closeCalls, ok, rssMiB, stats } from './support.js';

const TOTAL = Number(process.argv[2] ?? 60_000);
const LEVELS = [1_000, 10_000, 60_000].filter((n) => n <= TOTAL);
const SAMPLE = 1_000;
const ENDPOINTS = Number(process.env.BENCH_ENDPOINTS ?? 1_000);

/** The plugin's JS heap in use and allocated, from its own metrics. */
async function heapMiB(h: SimHost): Promise<string> {
  const { stdout } = await h.exec('busybox', ['wget', '-q', '-O', '-', 'http://127.0.0.1:9617/metrics']);
  const value = (name: string) => Number(new RegExp(`^${name} (\\S+)`, 'm').exec(stdout)?.[1] ?? NaN) / 2 ** 20;
  return `heap ${value('nodejs_heap_size_used_bytes').toFixed(0)}/${value('nodejs_heap_size_total_bytes').toFixed(0)} MiB, external ${value('nodejs_external_memory_bytes').toFixed(0)} MiB`;
}

async function main(): Promise<void> {
  const h = await SimHost.start({ name: 'scale', docker: false, plugin: false });
  try {
    if (process.env.BENCH_STATE === 'tmpfs') {
      // Unmounted with the host's other mounts when it stops.
      await mkdir(path.join(h.dir, 'state'), { recursive: true });
      await cmd('mount', ['-t', 'tmpfs', '-o', 'size=1g', 'ovsnet-bench-state', path.join(h.dir, 'state')]);
    } else if (process.env.BENCH_STATE) {
      throw new Error(`BENCH_STATE=${process.env.BENCH_STATE}: the one other place for the state is tmpfs (BENCH_STATE=tmpfs)`);
    }
    await h.startPlugin({ OVSNET_LOG_LEVEL: 'warn', OVSNET_RECONCILE_INTERVAL: '3600', OVSNET_METRICS: '127.0.0.1:9617', ...(process.env.BENCH_NODE_OPTIONS ? { NODE_OPTIONS: process.env.BENCH_NODE_OPTIONS } : {}) });
    const socket = h.socket;
    const pool = await ok(socket, 'IpamDriver.RequestPool', { AddressSpace: 'local', Pool: '10.128.0.0/16', SubPool: '', Options: {}, V6: false });
    const poolId = pool.PoolID as string;
    await ok(socket, 'IpamDriver.RequestAddress', { PoolID: poolId, Address: '10.128.0.1', Options: { RequestAddressType: 'com.docker.network.gateway' } });

    console.log(`IPAM on one /16 (${h.name}, state on ${process.env.BENCH_STATE === 'tmpfs' ? 'tmpfs: not durable, for comparison' : 'the disk'}), ${SAMPLE} calls per figure:`);
    let held = 0;
    for (const level of LEVELS) {
      while (held < level - SAMPLE / 2) {
        await ok(socket, 'IpamDriver.RequestAddress', { PoolID: poolId, Address: '', Options: null });
        held++;
      }
      // At this level: SAMPLE requests, then the same addresses released again.
      const request: number[] = [];
      const release: number[] = [];
      const got: string[] = [];
      for (let i = 0; i < SAMPLE; i++) {
        const t = performance.now();
        const answer = await ok(socket, 'IpamDriver.RequestAddress', { PoolID: poolId, Address: '', Options: null });
        request.push(performance.now() - t);
        got.push((answer.Address as string).split('/')[0]!);
      }
      const rss = await rssMiB(h.pluginPid!);
      for (const address of got) {
        const t = performance.now();
        await ok(socket, 'IpamDriver.ReleaseAddress', { PoolID: poolId, Address: address });
        release.push(performance.now() - t);
      }
      // Read after the releases: the scrape (a wget spawned into the host) made the calls right after it slower
      // (ReleaseAddress p99 1.5-2.6 ms at 60 000 with it before them, 0.7-1.3 ms without, in one series of runs).
      const heap = await heapMiB(h);
      // Keep the level: hold half of the sample again.
      for (let i = 0; i < SAMPLE / 2; i++) await ok(socket, 'IpamDriver.RequestAddress', { PoolID: poolId, Address: '', Options: null });
      held += SAMPLE / 2;
      await h.stopPlugin();
      const restarted = performance.now();
      // From the process started to its first answer to Plugin.Activate (asked every 5 ms), as dockerd waits for it.
      await h.startPlugin({}, { until: 'activate' });
      const activate = performance.now() - restarted;
      console.log(`  ${String(level).padStart(6)} held: RequestAddress ${stats(request)} | ReleaseAddress ${stats(release)} | RSS ${rss.toFixed(0)} MiB (${heap}) | restart to Activate ${activate.toFixed(0)} ms`);
    }

    if (ENDPOINTS === 0) return;
    console.log(`${ENDPOINTS} endpoints on the bridge:`);
    const networkId = 'b'.repeat(64);
    const npool = await ok(socket, 'IpamDriver.RequestPool', { AddressSpace: 'local', Pool: '10.129.0.0/20', SubPool: '', Options: {}, V6: false });
    await ok(socket, 'IpamDriver.RequestAddress', { PoolID: npool.PoolID, Address: '10.129.0.1', Options: { RequestAddressType: 'com.docker.network.gateway' } });
    await ok(socket, 'NetworkDriver.CreateNetwork', {
      NetworkID: networkId,
      Options: { 'com.docker.network.enable_ipv6': false, 'com.docker.network.generic': { vlan: '129', gateway_mode: 'isolated' } },
      IPv4Data: [{ AddressSpace: 'local', Pool: '10.129.0.0/20', Gateway: '10.129.0.1/20' }],
      IPv6Data: [],
    });
    const made = performance.now();
    for (let i = 0; i < ENDPOINTS; i++) {
      const endpointId = `${i.toString(16).padStart(8, '0')}${'e'.repeat(56)}`;
      const { Address } = await ok(socket, 'IpamDriver.RequestAddress', { PoolID: npool.PoolID, Address: '', Options: null });
      await ok(socket, 'NetworkDriver.CreateEndpoint', { NetworkID: networkId, EndpointID: endpointId, Interface: { Address, AddressIPv6: '', MacAddress: '' }, Options: {} });
      await ok(socket, 'NetworkDriver.Join', { NetworkID: networkId, EndpointID: endpointId, SandboxKey: '', Options: {} });
    }
    console.log(`  made in ${((performance.now() - made) / 1000).toFixed(1)} s`);
    for (let i = 0; i < 3; i++) {
      const t = performance.now();
      const res = await h.pluginRequest('POST', '/ovsnet/reconcile', '{}');
      const pass = performance.now() - t;
      const d = performance.now();
      const drift = await h.pluginRequest('GET', '/ovsnet/drift?docker=0');
      const check = performance.now() - d;
      console.log(`  reconcile pass ${pass.toFixed(0)} ms (${res.status}, ${res.body.slice(0, 80)}); drift check ${check.toFixed(0)} ms (${JSON.parse(drift.body).Drift?.length ?? '?'} items) | RSS ${(await rssMiB(h.pluginPid!)).toFixed(0)} MiB`);
    }
  } finally {
    closeCalls();
    await h.stop();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
