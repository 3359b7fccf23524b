/**
 * What guarding a port costs, on one simulated host, each kind beside the others in one run:
 *  - container start and removal on a network with the whole guard (the default) and on one with none
 *    (anti_spoofing=false, allow_ra=true, allow_dhcp_server=true: no flow on its ports), interleaved;
 *  - a TCP stream between two containers of each, interleaved, and one of the first-hop guard alone
 *    (anti_spoofing=false);
 *  - how closely a rate limit holds a stream to its rate;
 *  - how long an ovs-vswitchd restart cuts off the containers of a bridge that fails closed: from
 *    ovs-vswitchd answering again until a ping between two containers goes through.
 *
 *   npm run bench:guard -- [rounds, default 7] [megabytes per stream, default 200] [containers per kind, default 20]
 *   OVSNET_E2E_ENGINE=28.5 npm run bench:guard
 */
import { SimHost } from '../test/e2e/harness/sim-host.js';
import { TEST_IMAGE } from '../test/e2e/harness/image.js';
import { waitFor } from '../test/e2e/harness/proc.js';
import { containerAddress, ping, runContainer, tcpStream } from '../test/e2e/support.js';

const ROUNDS = Number(process.argv[2] ?? 7);
const MEGABYTES = Number(process.argv[3] ?? 200);
const STARTS = Number(process.argv[4] ?? 20);
if (![ROUNDS, MEGABYTES, STARTS].every((n) => Number.isInteger(n) && n >= 1)) {
  console.error('usage: npm run bench:guard -- [rounds >= 1] [megabytes per stream >= 1] [containers per kind >= 1]');
  process.exit(2);
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor((values.length - 1) / 2)]!;
const mbit = (bytesPerSecond: number) => (bytesPerSecond * 8) / 1e6;
const row = (name: string, values: number[], unit: string, digits = 0) =>
  `  ${name.padEnd(12)} median ${median(values).toFixed(digits).padStart(7)} ${unit}   min ${Math.min(...values).toFixed(digits).padStart(7)}   max ${Math.max(...values).toFixed(digits).padStart(7)}`;

async function main(): Promise<void> {
  const host = await SimHost.start({ name: 'bench-guard' });
  try {
    const create = (name: string, vlan: number, ...options: string[]) =>
      host.docker(['network', 'create', '-d', host.driver, '--ipam-driver', host.driver, '--subnet', `10.7${vlan}.0.0/24`, '-o', `vlan=${vlan}`, ...options.flatMap((o) => ['-o', o]), name]);
    await create('guarded', 1);
    await create('firsthop', 2, 'anti_spoofing=false');
    await create('bare', 4, 'anti_spoofing=false', 'allow_ra=true', 'allow_dhcp_server=true');
    await create('limited', 3, 'rate=200');

    // Start and removal, interleaved: the whole guard against no flow at all.
    const starts = { guarded: [] as number[], bare: [] as number[] };
    const removals = { guarded: [] as number[], bare: [] as number[] };
    for (let i = 0; i < STARTS; i++) {
      for (const net of (i % 2 === 0 ? ['guarded', 'bare'] : ['bare', 'guarded']) as Array<'guarded' | 'bare'>) {
        const name = `t-${net}-${i}`;
        let at = performance.now();
        await host.docker(['run', '-d', '--name', name, '--net', net, TEST_IMAGE, 'sleep', '1d']);
        starts[net].push(performance.now() - at);
        at = performance.now();
        await host.docker(['rm', '-f', name]);
        removals[net].push(performance.now() - at);
        await waitFor('the plugin to settle', async () => !(await host.pluginState()).sparesBusy, 10_000, 20);
      }
    }

    const kinds = { guarded: [] as number[], firsthop: [] as number[], bare: [] as number[], limited: [] as number[] };
    for (const net of Object.keys(kinds)) for (const role of ['s', 'r']) await runContainer(host, `${role}-${net}`, net);
    const target = async (net: string) => (await containerAddress(host, `r-${net}`, net)).ip;
    for (let round = 0; round < ROUNDS; round++) {
      // Rotate which goes first, so none always has the warmer caches.
      const order = (['guarded', 'firsthop', 'bare'] as const).map((_, i, all) => all[(i + round) % all.length]!);
      for (const net of order) kinds[net].push(mbit(await tcpStream(host, `s-${net}`, `r-${net}`, await target(net), MEGABYTES)));
      if (round < 3) kinds.limited.push(mbit(await tcpStream(host, 's-limited', 'r-limited', await target('limited'), 50)));
    }

    // An ovs-vswitchd restart: the bridge forwards nothing until the plugin's guards and base flow are back.
    const outages: number[] = [];
    const peer = await target('guarded');
    for (let i = 0; i < 3; i++) {
      await host.stopVswitchd();
      await host.startVswitchd();
      const at = performance.now();
      await waitFor('a ping through the bridge', async () => (await ping(host, 's-guarded', peer)) || undefined, 60_000, 0);
      outages.push(performance.now() - at);
    }

    console.log(`Docker ${host.engineVersion}, userspace datapath`);
    console.log(`container start and removal, ${STARTS} of each kind, interleaved (ms)`);
    console.log(row('start, guard', starts.guarded, 'ms', 1));
    console.log(row('start, none', starts.bare, 'ms', 1));
    console.log(row('rm, guard', removals.guarded, 'ms', 1));
    console.log(row('rm, none', removals.bare, 'ms', 1));
    console.log(`  ratios guard / none: start ${(median(starts.guarded) / median(starts.bare)).toFixed(3)}, removal ${(median(removals.guarded) / median(removals.bare)).toFixed(3)}`);
    console.log(`TCP streams of ${MEGABYTES} MB between two containers of one network, ${ROUNDS} rounds (Mbit/s)`);
    console.log(row('whole guard', kinds.guarded, 'Mbit/s'));
    console.log(row('first hop', kinds.firsthop, 'Mbit/s'));
    console.log(row('no flow', kinds.bare, 'Mbit/s'));
    console.log(`  whole guard / no flow: ${(median(kinds.guarded) / median(kinds.bare)).toFixed(3)}; first hop / no flow: ${(median(kinds.firsthop) / median(kinds.bare)).toFixed(3)}`);
    console.log(`  rate=200: ${median(kinds.limited).toFixed(1)} Mbit/s (${((median(kinds.limited) / 200) * 100).toFixed(0)}% of the rate)`);
    console.log(`ovs-vswitchd restarted, 3 times: containers cut off after it answered again for ${outages.map((o) => o.toFixed(0)).join(', ')} ms`);
  } finally {
    await host.stop();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
