/**
 * `ovsnet doctor`: every difference between the plugin's records, Open
 * vSwitch, the kernel and Docker, each with the command that fixes it. It
 * changes nothing on the host. With the plugin running it asks the plugin;
 * with the plugin down it reads the store and the host itself (opening the
 * store applies the journal the plugin left, as its next start would).
 */
import { loadConfig } from '../config.js';
import type { Drift } from '../domain/drift.js';
import type { EngineProblem } from '../domain/engine.js';
import { type NetworkSpec, normaliseSpec, weakenedProtections } from '../domain/options.js';
import { silentLogger } from '../log.js';
import { readDrift } from '../driver/network/repair.js';
import { State } from '../driver/state.js';
import { checkEngine, dockerView, openHost, openStore, ovnBackend } from '../wiring.js';
import { CliError, type PluginClient } from './client.js';

export interface DoctorReport {
  pluginRunning: boolean;
  drift: Drift[];
  /** Networks whose options weaken what guards their containers: no drift (they were asked for), but said. */
  weakened: Array<{ networkId: string; options: string[] }>;
  /** What the plugin cannot do well with the Docker Engine it serves (empty when Docker cannot be asked). */
  engine: EngineProblem[];
}

/**
 * The engine's problems, as the plugin sees them (its own nft, its Docker), or with the plugin down as this
 * command does; none when Docker does not answer within a few seconds (the drift then says so).
 */
async function engineOf(env: NodeJS.ProcessEnv, client?: PluginClient): Promise<EngineProblem[]> {
  const timeout = new Promise<EngineProblem[]>((r) => setTimeout(() => r([]), 5_000).unref());
  if (client) {
    const asked = client.request('GET', '/ovsnet/engine').then((res) => (res.status === 200 ? (res.body.Problems as EngineProblem[]) : []), () => []);
    return Promise.race([asked, timeout]);
  }
  const config = loadConfig(env);
  if (!config.docker) return [];
  return Promise.race([checkEngine(dockerView(config.docker)).catch(() => []), timeout]);
}

function weakenedIn(networks: ReadonlyArray<{ id: string; spec: unknown }>): DoctorReport['weakened'] {
  return networks.map((n) => ({ networkId: n.id, options: weakenedProtections(normaliseSpec(n.spec as NetworkSpec)) })).filter((w) => w.options.length > 0);
}

export async function doctor(client: PluginClient, env: NodeJS.ProcessEnv): Promise<DoctorReport> {
  if (await client.reachable()) {
    const res = await client.request('GET', '/ovsnet/drift');
    if (res.status !== 200) throw new CliError(`the plugin answered ${res.status}: ${JSON.stringify(res.body)}`);
    return { pluginRunning: true, drift: res.body.Drift as Drift[], weakened: weakenedIn((await client.state()).networks), engine: await engineOf(env, client) };
  }
  const config = loadConfig(env);
  let store: Awaited<ReturnType<typeof openStore>>;
  try {
    store = await openStore(config);
  } catch (err) {
    throw new CliError(`the plugin does not answer on ${client.socketPath}, and its store in ${config.stateDir} cannot be opened (${(err as Error).message}); give --socket if it serves another socket`);
  }
  const adapters = openHost(config, silentLogger, { requestTimeoutMs: 5_000 });
  const { host, docker, close } = adapters;
  try {
    const state = await State.open(store);
    const dockerNetworks = docker ? await docker.networks().catch(() => undefined) : undefined;
    const ovn = ovnBackend(config, adapters, state, silentLogger, { register: false });
    const drift = await readDrift(host, () => state.records(), { docker: dockerNetworks, now: Date.now(), graceMs: config.reconcileGraceMs, ovn }).finally(() => ovn?.close());
    drift.unshift({
      kind: 'plugin-not-running',
      subject: client.socketPath,
      detail: `the plugin does not answer on ${client.socketPath}: Docker cannot create networks or start containers on them`,
      fix: 'systemctl start ovsnet   (managed plugin: docker plugin enable ovs)',
    });
    return { pluginRunning: false, drift, weakened: weakenedIn(state.records().networks), engine: await engineOf(env) };
  } finally {
    close();
    await store.close();
  }
}

export function doctorLines(report: DoctorReport): string[] {
  const lines: string[] = [];
  for (const p of report.engine) lines.push(`${p.kind}: ${p.detail}`, `    fix: ${p.fix}`);
  if (report.drift.length === 0) lines.push("no drift: the plugin's records, Open vSwitch, the kernel and Docker agree");
  for (const d of report.drift) lines.push(`${d.kind}: ${d.detail}`, `    fix: ${d.fix}`);
  if (report.drift.length > 0) lines.push(`${report.drift.length} difference${report.drift.length === 1 ? '' : 's'}`);
  // Asked for, so no drift; but an operator should see which networks run with less of the guard.
  for (const w of report.weakened) lines.push(`guard weakened on network ${w.networkId.slice(0, 12)} by its options: ${w.options.join(', ')}`);
  return lines;
}
