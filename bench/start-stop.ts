/**
 * Container start and removal on an `ovs` network, on Docker's `bridge`
 * network and with `--net none`, interleaved in one run on one simulated
 * host, so the ratios compare like with like on a noisy machine.
 *
 *   npm run bench -- [containers per kind, default 30]
 *
 * Prints median and p90 of start and removal per kind, the ratios to
 * `bridge`, and the plugin's own work per start (the sum of its protocol call
 * durations from RequestAddress to the last EndpointOperInfo).
 */
import Docker from 'dockerode';
import path from 'node:path';
import { SimHost } from '../test/e2e/harness/sim-host.js';
import { TEST_IMAGE } from '../test/e2e/harness/image.js';

const N = Number(process.argv[2] ?? 30);
if (!Number.isInteger(N) || N < 3) {
  console.error('usage: npm run bench -- [containers per kind, an integer >= 3]');
  process.exit(2);
}

function quantile(values: number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[index]!;
}

const fmt = (ms: number) => `${ms.toFixed(1).padStart(7)} ms`;

async function main(): Promise<void> {
  const host = await SimHost.start({ name: 'bench', dockerIptables: true, pluginEnv: { OVSNET_LOG_LEVEL: 'debug' } });
  try {
    const docker = new Docker({ socketPath: path.join(host.dir, 'docker.sock') });
    await host.docker(['network', 'create', '-d', host.driver, '--ipam-driver', host.driver, '--subnet', '10.60.0.0/16', '-o', 'vlan=60', 'bench-ovs']);
    await host.docker(['network', 'create', '-d', 'bridge', '--subnet', '10.61.0.0/16', 'bench-bridge']);
    const kinds = { ovs: 'bench-ovs', bridge: 'bench-bridge', none: 'none' } as const;
    type Kind = keyof typeof kinds;
    const start: Record<Kind, number[]> = { ovs: [], bridge: [], none: [] };
    const remove: Record<Kind, number[]> = { ovs: [], bridge: [], none: [] };
    const pluginWork: number[] = [];

    const once = async (kind: Kind, record: boolean) => {
      const container = await docker.createContainer({ Image: TEST_IMAGE, Cmd: ['sleep', '1d'], HostConfig: { NetworkMode: kinds[kind] } });
      const logBefore = (await host.pluginLog()).length;
      const t0 = performance.now();
      await container.start();
      const t1 = performance.now();
      const calls = (await host.pluginLog()).slice(logBefore).split('\n').filter((l) => l.includes('"msg":"call"'));
      await container.remove({ force: true });
      const t2 = performance.now();
      if (!record) return;
      start[kind].push(t1 - t0);
      remove[kind].push(t2 - t1);
      if (kind === 'ovs') pluginWork.push(calls.reduce((sum, l) => sum + (JSON.parse(l).durationMs as number), 0));
    };

    for (const kind of ['ovs', 'bridge', 'none'] as const) await once(kind, false); // warm-up
    for (let i = 0; i < N; i++) {
      // Rotate the order so no kind always follows the same one.
      const order: Kind[] = (['ovs', 'bridge', 'none'] as const).map((_, j, all) => all[(i + j) % 3]!);
      for (const kind of order) await once(kind, true);
    }

    console.log(`\n${N} containers per kind, interleaved, on one simulated host (userspace datapath)\n`);
    console.log('kind      start median   start p90   remove median  remove p90');
    for (const kind of ['ovs', 'bridge', 'none'] as const) {
      console.log(`${kind.padEnd(8)} ${fmt(quantile(start[kind], 0.5))} ${fmt(quantile(start[kind], 0.9))} ${fmt(quantile(remove[kind], 0.5))} ${fmt(quantile(remove[kind], 0.9))}`);
    }
    const ratio = (a: number[], b: number[]) => (quantile(a, 0.5) / quantile(b, 0.5)).toFixed(3);
    console.log(`\novs/bridge  start median ratio ${ratio(start.ovs, start.bridge)} (target <= 1.05)`);
    console.log(`ovs/bridge  remove median ratio ${ratio(remove.ovs, remove.bridge)} (target <= 1.00)`);
    console.log(`plugin work per start: median ${fmt(quantile(pluginWork, 0.5))}, p90 ${fmt(quantile(pluginWork, 0.9))} (target median < 25 ms)`);
  } finally {
    await host.stop();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
