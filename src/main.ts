#!/usr/bin/env node
/**
 * Composition root: settings -> adapters -> drivers -> HTTP app -> socket,
 * then the reconciler and its watchers. Nothing imports this file.
 */
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import os from 'node:os';
import { ConfigError, describeConfig, loadConfig } from './config.js';
import { type Logger, createLogger } from './log.js';
import type { EngineProblem } from './domain/engine.js';
import { errorMessage } from './errors.js';
import { killAt, noFaults } from './faults.js';
import { State } from './driver/state.js';
import { IpamDriver } from './driver/ipam-driver.js';
import { NetworkDriver } from './driver/network-driver.js';
import { Reconciler } from './driver/reconcile.js';
import { createApp } from './http/app.js';
import { GuardDropReader } from './driver/guard-drops.js';
import { Metrics, serveMetrics } from './http/metrics.js';
import { VERSION } from './version.js';
import { listen } from './http/server.js';
import { checkEngine, openHost, openStore, openTracing, ovnBackend, watchLinks } from './wiring.js';
import { Tracer } from './driver/trace.js';

/** How often each watched bridge is asked whether the plugin's flows are still there (one small OpenFlow question). */
const FLOW_WATCH_MS = 1_000;

/** The longest a driver call waits for the networks to be restored after a start. */
const STARTUP_WAIT_MS = 15_000;

/**
 * Says once what the plugin cannot do well with the engine it serves. Docker answers only once it has
 * started, which may wait on the plugin: asked again every few seconds for a while.
 */
async function sayEngineProblems(check: () => Promise<EngineProblem[]>, log: Logger): Promise<void> {
  for (let attempt = 0; attempt < 60; attempt++) {
    try {
      for (const p of await check()) log.error(p.detail, { problem: p.kind, fix: p.fix });
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 5_000).unref());
    }
  }
}

async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig(process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`ovsnet: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const log = createLogger({ level: config.logLevel });
  log.info('starting', { settings: describeConfig(config), pid: process.pid });
  await mkdir(config.stateDir, { recursive: true, mode: 0o700 });
  // A fault fires once per setting: dockerd starts a managed plugin that died again with the same
  // settings, and that start must see what the crash left, not crash again.
  const faultMarker = path.join(config.stateDir, 'fault-fired');
  const faultText = config.fault ? `${config.fault.call}:${config.fault.point}` : '';
  const fired = !!config.fault && existsSync(faultMarker) && readFileSync(faultMarker, 'utf8') === faultText;
  if (!config.fault) rmSync(faultMarker, { force: true });
  if (fired) log.warn('fault already fired once with this setting; not armed', { fault: faultText });
  const faults =
    config.fault && !fired
      ? killAt(config.fault, () => {
          writeFileSync(faultMarker, faultText);
          log.warn('fault injected: the plugin kills itself here', { fault: faultText });
          process.kill(process.pid, 'SIGKILL');
          // As PID 1 of its namespace (a managed plugin) the kernel ignores that: end at once all the same.
          process.exit(137);
        })
      : noFaults;

  const store = await openStore(config, log);
  const state = await State.open(store);
  const adapters = openHost(config, log);
  const { ovsdb, host, docker, close } = adapters;
  const ovn = ovnBackend(config, adapters, state, log);
  const ipam = new IpamDriver({ state, routes: host.links, defaultPools: config.defaultPools, distributed: ovn, log, faults });
  const network = new NetworkDriver({ state, host, ovn, ipam, defaults: { bridge: config.bridge, mtu: config.mtu, ovn: config.ovn && { bridge: config.ovn.bridge } }, log, faults, sparePairs: config.sparePairs });
  const reconciler = new Reconciler({ state, network, ipam, docker, graceMs: config.reconcileGraceMs, log });

  // Restore every network (bridge, gateway port and addresses, tunnels, firewall) before serving changes:
  // after a reboot the plugin starts first, and dockerd's calls wait until the networks are back.
  const restored = reconciler.run('start', false).catch((err) => {
    log.error('could not restore the networks', { error: errorMessage(err) });
  });
  const ready = Promise.race([restored, new Promise<void>((r) => setTimeout(r, STARTUP_WAIT_MS).unref())]).then(() => {});
  const metrics = new Metrics(state);
  metrics.describe({ version: VERSION, logLevel: config.logLevel });
  if (adapters.nbReceived && adapters.nbConnected) metrics.watchNorthbound(adapters.nbReceived, adapters.nbConnected);
  if (ovn) ovn.onInstalled = (seconds) => metrics.ovnInstalled(seconds);
  if (config.metrics) reconciler.onDrift = (drift) => metrics.drift(drift.map((d) => d.kind));
  const guards = new GuardDropReader({ state, ovs: host.ovs, docker });
  metrics.watchGuards(() => guards.read(), (err) => log.warn("could not read the guard flows' counts for metrics", { error: errorMessage(err) }));
  reconciler.onPass = (changes, withDocker) => metrics.pass(changes, withDocker);
  state.onCommit = (ms) => {
    metrics.commit(ms);
    log.debug('committed', { durationMs: ms });
  };
  const tracing = openTracing(config);
  const tracer = new Tracer({
    state,
    ovs: host.ovs,
    links: host.links,
    firewall: host.firewall,
    tracing,
    docker,
    ovn: ovn?.traceContext(tracing),
    hostname: async () => {
      const ids = await host.ovs.systemIds().catch(() => ({}) as Record<string, string>);
      return ids.hostname || ids['system-id'] || os.hostname();
    },
  });
  const app = createApp({ network, ipam, state, log, ready, reconciler, metrics, engine: docker ? () => checkEngine(docker) : undefined, trace: (request) => tracer.trace(request) });
  const server = await listen(app, config.socketPath);
  log.info('listening', { socket: config.socketPath, networks: state.networks.size, endpoints: state.endpoints.size });
  const metricsServer = config.metrics ? await serveMetrics(metrics, config.metrics) : undefined;
  if (config.metrics) log.info('serving metrics', { address: `${config.metrics.host}:${config.metrics.port}` });

  const watcher = watchLinks(
    (change) => reconciler.trigger(change.kind === 'gateway' ? `gateway port ${change.port} changed` : `bridge ${change.name} ${change.gone ? 'went' : 'came'}: another container network`),
    log,
  );
  ovsdb.onReconnect = () => reconciler.trigger('OVSDB connection back');
  host.onFlowsLost = async (bridge) => {
    const changes = await reconciler.trigger(`the plugin's flows on bridge ${bridge} are gone (ovs-vswitchd or ovn-controller started again, or they were deleted)`);
    return (changes.flowsRepaired ?? 0) > 0;
  };
  host.startFlowWatch(FLOW_WATCH_MS);
  void restored.then(() => {
    log.info('networks restored', { networks: state.networks.size });
    reconciler.start(config.reconcileIntervalMs);
    void reconciler.run('start', true);
    if (docker) void sayEngineProblems(() => checkEngine(docker), log);
  });

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info('stopping', { signal });
    reconciler.stop();
    host.stopFlowWatch();
    watcher.stop();
    server.close();
    server.closeAllConnections();
    metricsServer?.close();
    // Spares are this process's alone: gone with it (a second at most; what is left, the next start's reconcile removes).
    const sparesGone = Promise.race([network.stopSpares(), new Promise<void>((r) => setTimeout(r, 1_000))]);
    void sparesGone.finally(() => {
      ovn?.close();
      close();
      store.close().finally(() => process.exit(0));
    });
  };
  // A daemon that dockerd depends on keeps serving: a stray rejection is a bug to log, not a reason to die.
  process.on('unhandledRejection', (err) => log.error('unhandled rejection (a bug; please report it)', { error: errorMessage(err) }));
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((err) => {
  process.stderr.write(`ovsnet: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
