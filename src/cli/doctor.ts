/**
 * `ovsnet doctor`: every difference between the plugin's records, Open
 * vSwitch, the kernel and Docker, each with the command that fixes it. It
 * changes nothing on the host. With the plugin running it asks the plugin;
 * with the plugin down it reads the store and the host itself (opening the
 * store applies the journal the plugin left, as its next start would).
 */
import { loadConfig } from '../config.js';
import type { Drift } from '../domain/drift.js';
import { silentLogger } from '../log.js';
import { readDrift } from '../driver/network/repair.js';
import { State } from '../driver/state.js';
import { openHost, openStore, ovnBackend } from '../wiring.js';
import { CliError, type PluginClient } from './client.js';

export interface DoctorReport {
  pluginRunning: boolean;
  drift: Drift[];
}

export async function doctor(client: PluginClient, env: NodeJS.ProcessEnv): Promise<DoctorReport> {
  if (await client.reachable()) {
    const res = await client.request('GET', '/ovsnet/drift');
    if (res.status !== 200) throw new CliError(`the plugin answered ${res.status}: ${JSON.stringify(res.body)}`);
    return { pluginRunning: true, drift: res.body.Drift as Drift[] };
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
    const drift = await readDrift(host, () => state.records(), { docker: dockerNetworks, now: Date.now(), graceMs: config.reconcileGraceMs, ovn: ovnBackend(config, adapters, state, silentLogger) });
    drift.unshift({
      kind: 'plugin-not-running',
      subject: client.socketPath,
      detail: `the plugin does not answer on ${client.socketPath}: Docker cannot create networks or start containers on them`,
      fix: 'systemctl start ovsnet   (managed plugin: docker plugin enable ovs)',
    });
    return { pluginRunning: false, drift };
  } finally {
    close();
    await store.close();
  }
}

export function doctorLines(report: DoctorReport): string[] {
  if (report.drift.length === 0) return ["no drift: the plugin's records, Open vSwitch, the kernel and Docker agree"];
  const lines: string[] = [];
  for (const d of report.drift) lines.push(`${d.kind}: ${d.detail}`, `    fix: ${d.fix}`);
  lines.push(`${report.drift.length} difference${report.drift.length === 1 ? '' : 's'}`);
  return lines;
}
