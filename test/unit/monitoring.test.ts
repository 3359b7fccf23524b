/**
 * The Grafana dashboard and the Prometheus alert rules in docs/monitoring: the rules pass `promtool check rules`
 * and their own tests (`promtool test rules`), every dashboard query is PromQL that promtool accepts, and every
 * metric the two name is one the plugin's registry exports.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, it } from 'node:test';
import { Metrics } from '../../src/http/metrics.js';
import { State } from '../../src/driver/state.js';
import { MemoryStore } from '../fakes/index.js';

const ROOT = path.resolve(fileURLToPath(import.meta.url), '../../../..');
const DIR = path.join(ROOT, 'docs/monitoring');
const run = promisify(execFile);

/** promtool, installed by plugin/setup-host.sh. */
async function promtool(args: string[], cwd = DIR): Promise<string> {
  try {
    const { stdout, stderr } = await run('promtool', args, { cwd });
    return stdout + stderr;
  } catch (err) {
    const e = err as { code?: string; stdout?: string; stderr?: string; message: string };
    if (e.code === 'ENOENT') throw new Error('promtool is not installed: plugin/setup-host.sh unpacks it from Debian\'s prometheus package');
    throw new Error(`promtool ${args.join(' ')} failed:\n${e.stdout ?? ''}${e.stderr ?? e.message}`);
  }
}

/** Every metric name the plugin's registry serves, with the series a histogram's family stands for. */
async function exported(): Promise<Set<string>> {
  const metrics = new Metrics(await State.open(new MemoryStore()));
  metrics.describe({ version: '0.0.0', logLevel: 'info' });
  metrics.watchGuards(async () => [], () => {});
  metrics.watchNorthbound(() => 0, () => true);
  const names = new Set<string>();
  for (const family of await metrics.registry.getMetricsAsJSON()) {
    names.add(family.name);
    if (String(family.type) === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) names.add(family.name + suffix);
  }
  return names;
}

/** The metric names a PromQL expression reads: the plugin's, the process's, and Prometheus's own `up`. */
function namesIn(expr: string): string[] {
  return [...expr.matchAll(/\b((?:ovsnet|process|nodejs)_[a-z0-9_]+|up)\b(?=\s*[{[)]|\s*$|\s*[=<>!])/g)].map((m) => m[1]!);
}

async function dashboardExprs(): Promise<string[]> {
  const dashboard = JSON.parse(await readFile(path.join(DIR, 'ovsnet-dashboard.json'), 'utf8')) as { panels: Array<{ title: string; targets?: Array<{ expr: string }> }> };
  assert.ok(dashboard.panels.length >= 10, 'the dashboard has its panels');
  for (const panel of dashboard.panels) assert.ok(panel.targets?.length, `panel "${panel.title}" has a query`);
  return dashboard.panels.flatMap((p) => p.targets!.map((t) => t.expr));
}

async function ruleExprs(): Promise<string[]> {
  const text = await readFile(path.join(DIR, 'ovsnet-alerts.yml'), 'utf8');
  return [...text.matchAll(/^\s+expr: (.+)$/gm)].map((m) => m[1]!);
}

describe('monitoring: the dashboard and the alert rules', () => {
  it('the alert rules pass promtool check rules and their tests, which fire each alert and only where it belongs', async () => {
    assert.match(await promtool(['check', 'rules', 'ovsnet-alerts.yml']), /SUCCESS: 6 rules found/);
    assert.match(await promtool(['test', 'rules', 'ovsnet-alerts.test.yml']), /SUCCESS/);
    const alerts = [...(await readFile(path.join(DIR, 'ovsnet-alerts.yml'), 'utf8')).matchAll(/alert: (\w+)/g)].map((m) => m[1]!);
    const tested = await readFile(path.join(DIR, 'ovsnet-alerts.test.yml'), 'utf8');
    for (const alert of alerts) assert.match(tested, new RegExp(`alertname: ${alert}\\n\\s+exp_alerts:\\n\\s+- exp_labels`), `${alert} is tested firing`);
  });

  it('every dashboard query is PromQL that promtool accepts', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'ovsnet-dash-'));
    try {
      // Each query as a recording rule, Grafana's variable as the regex it stands for.
      const rules = (await dashboardExprs()).map((expr, i) => `      - record: ovsnet_dashboard_query_${i}\n        expr: ${JSON.stringify(expr.replaceAll('$instance', '.*'))}`);
      await writeFile(path.join(dir, 'dashboard.yml'), `groups:\n  - name: dashboard\n    rules:\n${rules.join('\n')}\n`);
      assert.match(await promtool(['check', 'rules', 'dashboard.yml'], dir), new RegExp(`SUCCESS: ${rules.length} rules found`));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('every metric the dashboard and the rules name is one the plugin exports', async () => {
    const have = await exported();
    const exprs = [...(await dashboardExprs()), ...(await ruleExprs())];
    const used = new Set(exprs.flatMap(namesIn));
    for (const name of ['ovsnet_guard_dropped_packets_total', 'ovsnet_drift', 'ovsnet_ovn_northbound_connected', 'ovsnet_ovn_install_wait_seconds_bucket', 'up']) {
      assert.ok(used.has(name), `${name} is read (the finder finds names)`);
    }
    const unknown = [...used].filter((n) => n !== 'up' && !have.has(n));
    assert.deepEqual(unknown, [], 'names the plugin does not export');
    assert.deepEqual(namesIn('rate(ovsnet_requests_totl{x="y"}[5m])').filter((n) => !have.has(n)), ['ovsnet_requests_totl'], 'a misspelt name would be caught');
  });
});
