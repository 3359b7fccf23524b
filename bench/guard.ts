/**
 * What guarding a port costs: a TCP stream between two containers of a
 * network with anti-spoofing (the default) beside one between two containers
 * of a network without it, interleaved on one simulated host; and how closely
 * a rate limit holds a stream to its rate.
 *
 *   npm run bench:guard -- [rounds, default 7] [megabytes per stream, default 200]
 *   OVSNET_E2E_ENGINE=28.5 npm run bench:guard
 *
 * Prints the median and spread of each kind in Mbit/s, and their ratio.
 */
import { SimHost } from '../test/e2e/harness/sim-host.js';
import { containerAddress, runContainer, tcpStream } from '../test/e2e/support.js';

const ROUNDS = Number(process.argv[2] ?? 7);
const MEGABYTES = Number(process.argv[3] ?? 200);
if (!Number.isInteger(ROUNDS) || ROUNDS < 1 || !Number.isInteger(MEGABYTES) || MEGABYTES < 1) {
  console.error('usage: npm run bench:guard -- [rounds >= 1] [megabytes per stream >= 1]');
  process.exit(2);
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor((values.length - 1) / 2)]!;
const mbit = (bytesPerSecond: number) => (bytesPerSecond * 8) / 1e6;

async function main(): Promise<void> {
  const host = await SimHost.start({ name: 'bench-guard' });
  try {
    const create = (name: string, vlan: number, ...options: string[]) =>
      host.docker(['network', 'create', '-d', host.driver, '--ipam-driver', host.driver, '--subnet', `10.7${vlan}.0.0/24`, '-o', `vlan=${vlan}`, ...options.flatMap((o) => ['-o', o]), name]);
    await create('guarded', 1);
    await create('open', 2, 'anti_spoofing=false');
    await create('limited', 3, 'rate=200');
    const kinds = { guarded: [] as number[], open: [] as number[], limited: [] as number[] };
    for (const net of Object.keys(kinds)) for (const role of ['s', 'r']) await runContainer(host, `${role}-${net}`, net);
    const target = async (net: string) => (await containerAddress(host, `r-${net}`, net)).ip;
    for (let round = 0; round < ROUNDS; round++) {
      // Alternate which goes first, so neither always has the warmer caches.
      const order = round % 2 === 0 ? (['guarded', 'open'] as const) : (['open', 'guarded'] as const);
      for (const net of order) kinds[net].push(mbit(await tcpStream(host, `s-${net}`, `r-${net}`, await target(net), MEGABYTES)));
      if (round < 3) kinds.limited.push(mbit(await tcpStream(host, 's-limited', 'r-limited', await target('limited'), 50)));
    }
    console.log(`Docker ${host.engineVersion}; TCP streams of ${MEGABYTES} MB between two containers of one network, ${ROUNDS} rounds (Mbit/s)`);
    for (const [name, values] of Object.entries(kinds)) {
      console.log(`  ${name.padEnd(8)} median ${median(values).toFixed(0).padStart(6)}   min ${Math.min(...values).toFixed(0).padStart(6)}   max ${Math.max(...values).toFixed(0).padStart(6)}`);
    }
    console.log(`  anti-spoofing on / off: ${(median(kinds.guarded) / median(kinds.open)).toFixed(3)}`);
    console.log(`  rate=200: ${median(kinds.limited).toFixed(1)} Mbit/s (${((median(kinds.limited) / 200) * 100).toFixed(0)}% of the rate)`);
  } finally {
    await host.stop();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
