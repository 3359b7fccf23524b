#!/usr/bin/env node
/**
 * Composition root: settings -> adapters -> drivers -> HTTP app -> socket.
 * Nothing imports this file.
 */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { ConfigError, describeConfig, loadConfig } from './config.js';
import { createLogger } from './log.js';
import { errorMessage } from './errors.js';
import { run } from './adapters/exec.js';
import { LevelStore } from './adapters/level-store.js';
import { OvsdbClient } from './adapters/ovsdb.js';
import { OvsBridgeClient } from './adapters/ovs.js';
import { IpLinks } from './adapters/links.js';
import { IptablesFirewall } from './adapters/iptables.js';
import { ModuleDatapathProbe, ProcSysctl } from './adapters/system.js';
import { State } from './driver/state.js';
import { IpamDriver } from './driver/ipam-driver.js';
import { NetworkDriver } from './driver/network-driver.js';
import { createApp } from './http/app.js';
import { listen } from './http/server.js';

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
  const store = await LevelStore.open(path.join(config.stateDir, 'db'));
  const state = await State.open(store);
  const ovsdb = new OvsdbClient({ address: config.ovsdb, log });
  const ovs = new OvsBridgeClient(ovsdb);
  const links = new IpLinks(run);
  const ipam = new IpamDriver({ state, routes: links, defaultPools: config.defaultPools, log });
  const network = new NetworkDriver({
    state,
    ovs,
    links,
    firewall: new IptablesFirewall(run),
    sysctl: new ProcSysctl(),
    datapathProbe: new ModuleDatapathProbe(),
    ipam,
    defaults: { bridge: config.bridge, datapath: config.datapath, mtu: config.mtu },
    log,
  });
  const app = createApp({ network, ipam, state, log });
  const server = await listen(app, config.socketPath);
  log.info('listening', { socket: config.socketPath, networks: state.networks.size, endpoints: state.endpoints.size });

  // Re-apply every network in the background: the socket is already up, so dockerd never waits on this.
  void (async () => {
    for (const record of state.networks.values()) {
      try {
        await network.realise(record);
      } catch (err) {
        log.error('could not restore network', { networkId: record.id, error: errorMessage(err) });
      }
    }
  })();

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info('stopping', { signal });
    server.close();
    server.closeAllConnections();
    ovsdb.close();
    store.close().finally(() => process.exit(0));
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((err) => {
  process.stderr.write(`ovsnet: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
