/**
 * The one place adapters are built from settings, shared by the composition
 * roots: the daemon (main.ts) and the command line (cli/). Nothing else
 * constructs an adapter; everything else gets them through its constructor.
 */
import type { Config } from './config.js';
import type { Logger } from './log.js';
import { DockerodeView, dockerFromAddress } from './adapters/docker.js';
import { run } from './adapters/exec.js';
import { IptablesFirewall } from './adapters/iptables.js';
import { LevelStore } from './adapters/level-store.js';
import { IpLinks } from './adapters/links.js';
import { OvsBridgeClient } from './adapters/ovs.js';
import { OvsdbClient } from './adapters/ovsdb.js';
import { ModuleDatapathProbe, ProcSysctl } from './adapters/system.js';
import { GatewayWatcher } from './adapters/watch.js';
import { LocalHost } from './driver/host.js';
import type { DockerView } from './driver/ports.js';

export interface HostAdapters {
  /** The connection to this host's OVSDB (for its reconnect hook). */
  readonly ovsdb: OvsdbClient;
  /** This host: OVS, links, firewall, forwarding, datapath. */
  readonly host: LocalHost;
  /** Docker, for the reconciler; undefined with OVSNET_DOCKER=none. */
  readonly docker: DockerView | undefined;
  close(): void;
}

export function openHost(config: Config, log: Logger, options: { requestTimeoutMs?: number } = {}): HostAdapters {
  const ovsdb = new OvsdbClient({ address: config.ovsdb, log, requestTimeoutMs: options.requestTimeoutMs });
  const links = new IpLinks(run);
  const host = new LocalHost({
    ovs: new OvsBridgeClient(ovsdb),
    links,
    firewall: new IptablesFirewall(run),
    sysctl: new ProcSysctl(),
    datapathProbe: new ModuleDatapathProbe(),
    datapath: config.datapath,
    log,
  });
  return {
    ovsdb,
    host,
    docker: config.docker ? new DockerodeView(dockerFromAddress(config.docker)) : undefined,
    close: () => ovsdb.close(),
  };
}

export function openStore(config: Config): Promise<LevelStore> {
  return LevelStore.open(`${config.stateDir}/db`);
}

/** Watches the kernel for changes to gateway ports (ovs-vswitchd recreates them without their addresses). */
export function watchGateways(onChange: (port: string) => void, log: Logger): GatewayWatcher {
  const watcher = new GatewayWatcher((port) => onChange(port), log);
  watcher.start();
  return watcher;
}
