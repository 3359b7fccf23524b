/**
 * The one place adapters are built from settings, shared by the composition
 * roots: the daemon (main.ts) and the command line (cli/). Nothing else
 * constructs an adapter; everything else gets them through its constructor.
 */
import path from 'node:path';
import { type Config, OVN_TLS_SETTINGS } from './config.js';
import type { Logger } from './log.js';
import { DockerodeView } from './adapters/docker.js';
import { run } from './adapters/exec.js';
import { IptablesFirewall, IptablesTools } from './adapters/iptables.js';
import { NotedChassis, loadHostId } from './adapters/host-id.js';
import { LevelStore, SCHEMA } from './adapters/level-store.js';
import { IpLinks } from './adapters/links.js';
import { OvsBridgeClient } from './adapters/ovs.js';
import { OvsdbClient } from './adapters/ovsdb.js';
import { ModuleDatapathProbe, ProcHostPorts, ProcSysctl, nftError } from './adapters/system.js';
import { type EngineProblem, engineProblems } from './domain/engine.js';
import { type LinkChange, LinkWatcher } from './adapters/watch.js';
import { NB_DATABASE, OvnNorthbound } from './adapters/ovn-nb.js';
import { OvnSouthbound, SB_DATABASE } from './adapters/ovn-sb.js';
import { LocalHost } from './driver/host.js';
import { OvnBackend } from './driver/ovn-backend.js';
import type { DockerView, Northbound, Tracing } from './driver/ports.js';
import { SpawnedTracing } from './adapters/tracing.js';
import type { State } from './driver/state.js';

export interface HostAdapters {
  /** The connection to this host's OVSDB (for its reconnect hook). */
  readonly ovsdb: OvsdbClient;
  /** This host: OVS, links, firewall, forwarding, datapath. */
  readonly host: LocalHost;
  /** Docker, for the reconciler; undefined with OVSNET_DOCKER=none. */
  readonly docker: DockerView | undefined;
  /** The OVN northbound database (its cluster's leader), when OVN mode is on. */
  readonly nb: Northbound | undefined;
  /** How much the northbound database has sent this process (characters of JSON), for metrics. */
  readonly nbReceived: (() => number) | undefined;
  /** Whether this process is connected to the northbound database's leader now, for metrics. */
  readonly nbConnected: (() => boolean) | undefined;
  close(): void;
}

export function openHost(config: Config, log: Logger, options: { requestTimeoutMs?: number } = {}): HostAdapters {
  const ovsdb = new OvsdbClient({ address: config.ovsdb, log, requestTimeoutMs: options.requestTimeoutMs });
  const links = new IpLinks(run, { netnsDir: config.netnsDir });
  const ovs = new OvsBridgeClient(ovsdb, { rundir: ovsRundir(config.ovsdb) });
  const iptables = new IptablesTools(run, config.iptables, log);
  const host = new LocalHost({
    ovs,
    links,
    firewall: new IptablesFirewall(run, iptables, log),
    sysctl: new ProcSysctl(config.procSys),
    hostPorts: new ProcHostPorts(run, iptables),
    datapathProbe: new ModuleDatapathProbe(),
    datapath: config.datapath,
    log,
  });
  const nbClient = config.ovn
    ? new OvsdbClient({ address: config.ovn.nb, database: NB_DATABASE, leaderOnly: true, label: 'the OVN northbound database', log, requestTimeoutMs: config.ovn.timeoutMs, probeIntervalMs: config.ovn.probeMs, tls: config.ovn.tls, tlsSettings: OVN_TLS_SETTINGS })
    : undefined;
  return {
    ovsdb,
    host,
    docker: config.docker ? dockerView(config.docker) : undefined,
    nb: nbClient && new OvnNorthbound(nbClient),
    nbReceived: nbClient && (() => nbClient.received),
    nbConnected: nbClient && (() => nbClient.connected),
    close: () => {
      ovsdb.close();
      ovs.close();
      nbClient?.close();
    },
  };
}

/** The backend of OVN networks, when OVN mode is on. */
export function ovnBackend(config: Config, adapters: HostAdapters, state: State, log: Logger, options: { register: boolean } = { register: true }): OvnBackend | undefined {
  if (!config.ovn || !adapters.nb) return undefined;
  return new OvnBackend({
    // The daemon makes its host id at its first start in OVN mode; doctor only reads it.
    hostId: loadHostId(config.stateDir, options.register),
    register: options.register,
    leaseMs: config.ovn.leaseMs,
    notes: new NotedChassis(config.stateDir),
    openSouthbound: (remotes) =>
      new OvnSouthbound(new OvsdbClient({ address: remotes, database: SB_DATABASE, label: 'the OVN southbound database', log, requestTimeoutMs: config.ovn!.timeoutMs, probeIntervalMs: config.ovn!.probeMs, tls: config.ovn!.tls, tlsSettings: OVN_TLS_SETTINGS })),
    host: adapters.host,
    state,
    nb: adapters.nb,
    bridge: config.ovn.bridge,
    installTimeoutMs: config.ovn.timeoutMs,
    external: config.ovn.external,
    defaults: { mtu: config.mtu },
    log,
  });
}

export async function openStore(config: Config, log?: Logger): Promise<LevelStore> {
  const store = await LevelStore.open(`${config.stateDir}/db`, {
    onWriteError: (err) => log?.error('LevelDB refused a write; the journal keeps the changes and the write is tried again every second', { error: err.message }),
  });
  if (store.opened.schema < SCHEMA) log?.info('state migrated', { fromSchema: store.opened.schema, toSchema: SCHEMA, lastWrittenBy: store.opened.writtenBy });
  return store;
}

/** The programs `ovsnet trace` asks: ovs-vswitchd's (in its run directory), ip, ovn-trace. */
export function openTracing(config: Config): Tracing {
  return new SpawnedTracing({ rundir: ovsRundir(config.ovsdb), ...(config.ovn?.tls ? { tls: config.ovn.tls } : {}) });
}

/** Watches the kernel for changes to gateway ports (ovs-vswitchd recreates them without their addresses). */
export function watchLinks(onChange: (change: LinkChange) => void, log: Logger): LinkWatcher {
  const watcher = new LinkWatcher(onChange, log);
  watcher.start();
  return watcher;
}

/**
 * Where ovs-vswitchd's management sockets are: beside the OVSDB socket when
 * that is a unix socket (ovs-vswitchd and ovsdb-server share a run directory),
 * else the packages' default.
 */
export function ovsRundir(ovsdb: string): string {
  return ovsdb.startsWith('unix:') ? path.dirname(ovsdb.slice('unix:'.length)) : '/var/run/openvswitch';
}

/** What the plugin cannot do well with the Docker Engine it serves (`engineProblems`); throws when Docker cannot be asked. */
export async function checkEngine(docker: DockerView): Promise<EngineProblem[]> {
  const [engine, nft] = await Promise.all([docker.engine(), nftError(run)]);
  return engineProblems({ ...engine, nftError: nft });
}

/** Docker's API at an address (unix://<path> or tcp://<host>:<port>). */
export function dockerView(address: string): DockerView {
  return new DockerodeView(address);
}
