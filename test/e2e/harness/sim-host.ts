/**
 * A simulated Docker host: a network namespace with its own ovsdb-server,
 * ovs-vswitchd (userspace datapath), dockerd (private roots, its own
 * containerd) and its own plugin instance. Several can run on one machine;
 * each plugin has its own driver name because every dockerd on the machine
 * looks for plugins in the same /run/docker/plugins.
 *
 * Nothing here touches the machine's own network: all links, addresses,
 * routes and iptables rules live inside the namespaces. `stop()` removes
 * everything, and `start()` first removes what a crashed earlier run left.
 */
import { copyFile, mkdir, readdir, readFile, rm, rmdir, stat, symlink, writeFile } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { type ChildProcess, spawn } from 'node:child_process';
import { openSync, closeSync } from 'node:fs';
import { assertUnrouted } from './addresses.js';
import { busyboxTarball, TEST_IMAGE } from './image.js';
import { type LossyCounts, LossyDir, lossyfsBinary } from '../../harness/lossyfs.js';
import { type CmdOptions, type Result, alive, cmd, killAll, pidsMentioning, requireTools, sleep, waitFor } from './proc.js';

export const BASE_DIR = '/tmp/ovsnet-t';
/**
 * OVSNET_E2E_TAG makes every name this run gives (hosts, namespaces, plugin sockets) its own, so that runs on
 * several engines can go at once on one machine: `vlan` on the run tagged `9` is `vlan9`.
 */
export const TAG = process.env.OVSNET_E2E_TAG ?? '';
if (!/^[a-z0-9]{0,3}$/.test(TAG)) throw new Error(`OVSNET_E2E_TAG must be up to 3 lowercase letters or digits, not "${TAG}"`);

/** A name of this run's: a host, or a namespace (ovsnet-t-<name>). */
export function tagged(name: string): string {
  return `${name}${TAG}`;
}
/** Where each host's logs are kept after it is torn down (the last run's, per engine and host name). */
export const LOG_DIR = process.env.OVSNET_E2E_LOGS ?? '/tmp/ovsnet-t-logs';
/**
 * OVSNET_E2E_PLUGIN=managed runs every host's plugin as the managed (v2) plugin, installed with
 * `docker plugin install` from a registry; otherwise the plugin is a process started from dist/.
 */
export const MANAGED = process.env.OVSNET_E2E_PLUGIN === 'managed';
/** Where the managed plugin is pulled from (each host runs a registry on its own loopback, same storage). */
export const MANAGED_REF = process.env.OVSNET_E2E_PLUGIN_REF ?? 'localhost:5000/ovsnet:latest';
export const REGISTRY_STORAGE = process.env.OVSNET_E2E_REGISTRY ?? '/var/lib/ovsnet-test-registry';
/**
 * OVSNET_E2E_ENGINE=28.5, 26.1 or 29.7 runs every host's dockerd from a private Docker Engine that
 * test/install-engines.sh unpacks (with what it needs first in PATH); otherwise the system's dockerd (20.10).
 */
export const ENGINE = process.env.OVSNET_E2E_ENGINE || 'system';
export const ENGINES_DIR = process.env.OVSNET_E2E_ENGINES_DIR ?? '/var/lib/ovsnet-engines';
/**
 * OVSNET_E2E_FIREWALL=nftables starts every dockerd with Docker's nftables firewall (`--firewall-backend`, which
 * Docker 29 has); otherwise each engine's default (iptables).
 */
export const FIREWALL = process.env.OVSNET_E2E_FIREWALL || 'iptables';
if (FIREWALL !== 'iptables' && FIREWALL !== 'nftables') throw new Error(`OVSNET_E2E_FIREWALL=${FIREWALL}: valid are iptables and nftables`);
if (FIREWALL === 'nftables' && !ENGINE.startsWith('29.')) throw new Error(`OVSNET_E2E_FIREWALL=nftables needs Docker 29 (OVSNET_E2E_ENGINE=29.7), not ${ENGINE}`);
/**
 * What goes first in PATH for each engine test/install-engines.sh unpacks: its dockerd (and docker-proxy), then
 * 28.5's containerd, shims and docker-init; 29.7 brings its own runc (it needs 1.2 or newer), the others use
 * bookworm's.
 */
const ENGINE_PATHS: Record<string, readonly string[]> = {
  '28.5': [`${ENGINES_DIR}/docker-28.5/usr/sbin`, `${ENGINES_DIR}/docker-28.5/usr/bin`],
  '26.1': [`${ENGINES_DIR}/docker-26.1/usr/sbin`, `${ENGINES_DIR}/docker-28.5/usr/bin`],
  '29.7': [`${ENGINES_DIR}/docker-29.7`, `${ENGINES_DIR}/docker-28.5/usr/sbin`, `${ENGINES_DIR}/docker-28.5/usr/bin`],
};
const MANAGED_ALIAS = 'ovs';
export const REPO_ROOT = path.resolve(fileURLToPath(import.meta.url), '../../../../..');
export const PLUGIN_MAIN = path.join(REPO_ROOT, 'dist/src/main.js');
const PLUGIN_DIR = '/run/docker/plugins';
const OVS_SCHEMA = '/usr/share/openvswitch/vswitch.ovsschema';

export const REQUIRED_TOOLS = [
  'dockerd', 'docker', 'ovsdb-server', 'ovs-vswitchd', 'ovs-vsctl', 'ovs-ofctl', 'ovsdb-tool', 'ip', 'nsenter',
  'iptables', 'iptables-restore', 'ip6tables-restore', 'ethtool',
];

export interface SimHostOptions {
  /** Short name: the namespace is ovsnet-t-<name>. */
  name: string;
  /** Plugin (driver) name; default "ovs-<name>". */
  driver?: string;
  /** Extra settings for the plugin process. */
  pluginEnv?: Record<string, string>;
  /** Extra dockerd flags. */
  dockerArgs?: string[];
  /**
   * dockerd's own firewall and default bridge in the namespace, as Docker runs by default (default true); false
   * only for a case about turning them off.
   */
  dockerIptables?: boolean;
  /** docker-proxy for Docker's published ports, as Docker runs by default (default true). */
  userlandProxy?: boolean;
  /**
   * Which iptables dockerd writes its rules with: `legacy` puts iptables-legacy (and its save and restore, for
   * both families) first in dockerd's PATH, as on a host whose alternatives point there; default the machine's.
   */
  dockerIptablesVariant?: 'legacy';
  /**
   * Give dockerd a private mount namespace in which /sys/class/net shows the simulated host's own devices, as
   * on a real machine. Without it dockerd sees the machine's, and Docker 28.5's bridge driver, which reads its
   * port's state there after each Join, cannot find it and waits 20 ms per container start instead (benchmarks
   * use this).
   */
  ownSysfs?: boolean;
  /** Start the plugin (default true). */
  plugin?: boolean;
  /** Start dockerd (default true); a host without it is just a namespace with Open vSwitch (a switch). */
  docker?: boolean;
  /**
   * The plugin's state directory on lossyfs (test/harness/lossyfs.c), so that a power cut forgets every write
   * of the plugin's that was not synced, as a disk's cache would (the plugin as a daemon only).
   */
  lossyState?: boolean;
}

export interface OutsideNamespace {
  ns: string;
  /** Address of the host end of the link. */
  hostAddress: string;
  /** Address inside the outside namespace. */
  address: string;
}

export class SimHost {
  readonly name: string;
  readonly ns: string;
  readonly dir: string;
  readonly driver: string;
  /** The plugin socket; for a managed plugin it is known once the plugin is installed. */
  socket: string;
  readonly dockerHost: string;
  readonly ovsdb: string;
  /** What the host's dockerd says its version is. */
  engineVersion = '';
  private plugin: ChildProcess | undefined;
  private dockerd: ChildProcess | undefined;
  private readonly extraNamespaces: string[] = [];
  private pluginEnv: Record<string, string>;
  private lossy: LossyDir | undefined;
  /** What the last power cut made the plugin's state directory forget (with `lossyState`). */
  lastCut: LossyCounts | undefined;

  private constructor(private readonly options: SimHostOptions) {
    this.name = tagged(options.name);
    this.ns = `ovsnet-t-${this.name}`;
    this.dir = path.join(BASE_DIR, this.name);
    // A managed plugin is named with its tag in -d and --ipam-driver.
    this.driver = MANAGED ? `${MANAGED_ALIAS}:latest` : (options.driver ?? `ovs-${this.name}`);
    this.socket = path.join(PLUGIN_DIR, `${this.driver}.sock`);
    this.dockerHost = `unix://${this.dir}/docker.sock`;
    this.ovsdb = `unix:${this.dir}/ovs/db.sock`;
    this.pluginEnv = options.pluginEnv ?? {};
  }

  static async start(options: SimHostOptions): Promise<SimHost> {
    await requireTools(REQUIRED_TOOLS);
    if (ENGINE !== 'system') {
      const dirs = ENGINE_PATHS[ENGINE];
      if (!dirs) throw new Error(`OVSNET_E2E_ENGINE=${ENGINE} is not an engine the tests know (system, ${Object.keys(ENGINE_PATHS).join(', ')})`);
      if (!(await stat(`${dirs[0]}/dockerd`).catch(() => undefined))) throw new Error(`${dirs[0]}/dockerd is missing: run "bash test/install-engines.sh"`);
    }
    if (!(await stat(PLUGIN_MAIN).catch(() => undefined))) throw new Error(`${PLUGIN_MAIN} is missing: run "npm run build" first`);
    const host = new SimHost(options);
    await host.destroy();
    try {
      await mkdir(path.join(host.dir, 'ovs'), { recursive: true });
      if (options.lossyState) {
        if (MANAGED) throw new Error('lossyState is for the plugin as a daemon: a managed plugin keeps its state where dockerd mounts it');
        host.lossy = await LossyDir.mount(await lossyfsBinary(BASE_DIR), path.join(host.dir, 'state-disk'), path.join(host.dir, 'state'), path.join(host.dir, 'lossyfs.log'));
      }
      await cmd('ip', ['netns', 'add', host.ns]);
      await host.exec('ip', ['link', 'set', 'lo', 'up']);
      await host.startOvs();
      if (options.docker ?? true) {
        await host.startDockerd();
        const tarball = await busyboxTarball(BASE_DIR);
        await host.docker(['import', tarball, TEST_IMAGE]);
        if (options.plugin ?? true) await host.startPlugin();
      }
    } catch (err) {
      await host.stop().catch(() => {});
      throw err;
    }
    return host;
  }

  /** Removes every trace of a host of that name (processes, mounts, cgroups, namespaces, files). */
  static async cleanup(name: string): Promise<void> {
    await new SimHost({ name }).destroy();
  }

  // ---- running things inside ----

  exec(file: string, args: readonly string[], options?: CmdOptions): Promise<Result> {
    return cmd('nsenter', [`--net=/run/netns/${this.ns}`, '--', file, ...args], options);
  }

  async docker(args: readonly string[], options: CmdOptions = {}): Promise<Result> {
    if (args[0] === 'network' && args[1] === 'create') await assertUnrouted(networkAddresses(args), `a network of simulated host ${this.name}`);
    return cmd('docker', args, { ...options, env: { DOCKER_HOST: this.dockerHost, ...options.env } });
  }

  vsctl(args: readonly string[], options?: CmdOptions): Promise<Result> {
    return cmd('ovs-vsctl', [`--db=${this.ovsdb}`, '--timeout=20', ...args], options);
  }

  /** The `ovsnet` command, as an operator on this host runs it. */
  ovsnet(args: readonly string[], options: { check?: boolean } = {}): Promise<Result> {
    return this.exec(process.execPath, [path.join(REPO_ROOT, 'dist/src/cli/main.js'), ...args], {
      check: options.check ?? true,
      env: { OVSNET_SOCKET: this.socket, DOCKER_HOST: this.dockerHost, OVSNET_STATE_DIR: path.join(this.dir, 'state'), OVSNET_OVSDB: this.ovsdb, OVSNET_DOCKER: this.dockerHost },
    });
  }

  /** ovs-ofctl (OpenFlow 1.3) on a bridge of this host: `args` is the command, the bridge, then the rest. */
  ofctl(args: readonly string[], options?: CmdOptions): Promise<Result> {
    const [command, bridge, ...rest] = args;
    return cmd('ovs-ofctl', ['-O', 'OpenFlow13', command!, `unix:${this.dir}/ovs/${bridge}.mgmt`, ...rest], options);
  }

  private ovsEnv(): Record<string, string> {
    const run = path.join(this.dir, 'ovs');
    return { OVS_RUNDIR: run, OVS_LOGDIR: run, OVS_DBDIR: run };
  }

  // ---- Open vSwitch ----

  async startOvs(): Promise<void> {
    const run = path.join(this.dir, 'ovs');
    const env = this.ovsEnv();
    if (!(await stat(path.join(run, 'conf.db')).catch(() => undefined))) {
      await cmd('ovsdb-tool', ['create', path.join(run, 'conf.db'), OVS_SCHEMA], { env });
    }
    await this.startOvsdb();
    await this.vsctl(['--no-wait', 'init']);
    await this.startVswitchd();
  }

  async startOvsdb(): Promise<void> {
    const run = path.join(this.dir, 'ovs');
    await cmd('nsenter', [`--net=/run/netns/${this.ns}`, '--', 'ovsdb-server', path.join(run, 'conf.db'),
      `--remote=punix:${run}/db.sock`, `--pidfile=${run}/ovsdb-server.pid`, `--unixctl=${run}/ovsdb-server.ctl`,
      `--log-file=${run}/ovsdb-server.log`, '--detach'], { env: this.ovsEnv() });
  }

  async startVswitchd(): Promise<void> {
    const run = path.join(this.dir, 'ovs');
    // `ip netns exec` remounts /sys for the namespace, which ovs-vswitchd reads.
    await cmd('ip', ['netns', 'exec', this.ns, 'ovs-vswitchd', this.ovsdb, `--pidfile=${run}/ovs-vswitchd.pid`,
      `--unixctl=${run}/ovs-vswitchd.ctl`, `--log-file=${run}/ovs-vswitchd.log`, '--detach'], { env: this.ovsEnv() });
    await this.vsctl(['show']);
  }

  async stopVswitchd(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    await this.stopByPidfile(path.join(this.dir, 'ovs/ovs-vswitchd.pid'), signal);
  }

  async stopOvsdb(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    await this.stopByPidfile(path.join(this.dir, 'ovs/ovsdb-server.pid'), signal);
  }

  private async stopByPidfile(pidfile: string, signal: NodeJS.Signals): Promise<void> {
    const pid = Number((await readFile(pidfile, 'utf8').catch(() => '')).trim());
    if (!pid) return;
    await killAll([pid], signal);
    await waitFor(`process ${pid} to exit`, async () => !alive(pid), 10_000).catch(() => killAll([pid]));
  }

  // ---- dockerd ----

  async startDockerd(extraArgs: readonly string[] = []): Promise<void> {
    await writeFile(path.join(this.dir, 'daemon.json'), '{}\n');
    if (MANAGED) await this.shareExecRoot();
    const sysfs = path.join(this.dir, 'sysfs');
    if (this.options.ownSysfs) await mkdir(sysfs, { recursive: true });
    const args = [
      `--net=/run/netns/${this.ns}`, '--',
      // A sysfs mounted from inside the namespace lists its devices; its net class is bound over the machine's.
      ...(this.options.ownSysfs ? ['unshare', '--mount', '--propagation', 'private', 'sh', '-c',
        'mount -t sysfs sysfs "$0" && mount --bind "$0/class/net" /sys/class/net && mount --bind "$0/devices/virtual/net" /sys/devices/virtual/net && exec "$@"', sysfs] : []),
      'dockerd',
      `--config-file=${this.dir}/daemon.json`,
      `--data-root=${this.dir}/docker`, `--exec-root=${this.dir}/exec`, `--pidfile=${this.dir}/docker.pid`,
      `-H`, this.dockerHost, `--cgroup-parent=/${this.ns}`, `--log-level=${MANAGED ? 'info' : 'warn'}`,
      ...(this.options.userlandProxy === false ? ['--userland-proxy=false'] : []),
      // The test containers run `sleep` as PID 1, which ignores SIGTERM: do not wait 15 s for each.
      '--shutdown-timeout=3',
      ...(this.options.dockerIptables === false ? ['--bridge=none', '--iptables=false'] : []),
      ...(FIREWALL === 'nftables' ? ['--firewall-backend=nftables'] : []),
      ...(this.options.dockerArgs ?? []),
      ...extraArgs,
    ];
    const log = openSync(path.join(this.dir, 'dockerd.log'), 'a');
    const env = dockerdEnv();
    if (this.options.dockerIptablesVariant === 'legacy') {
      const bin = path.join(this.dir, 'iptables-legacy-bin');
      await mkdir(bin, { recursive: true });
      for (const family of ['iptables', 'ip6tables']) {
        for (const suffix of ['', '-save', '-restore']) {
          await symlink(`/usr/sbin/${family}-legacy${suffix}`, path.join(bin, `${family}${suffix}`)).catch((err: NodeJS.ErrnoException) => {
            if (err.code !== 'EEXIST') throw err;
          });
        }
      }
      env.PATH = `${bin}:${env.PATH ?? ''}`;
    }
    this.dockerd = spawn('nsenter', args, { stdio: ['ignore', log, log], detached: true, env });
    closeSync(log);
    this.dockerd.unref();
    const child = this.dockerd;
    await waitFor('dockerd to answer', async () => {
      if (child.exitCode !== null) throw new Error(`dockerd exited (code ${child.exitCode}); see ${this.dir}/dockerd.log`);
      const version = await this.docker(['version', '--format', '{{.Server.Version}}'], { check: false, timeoutMs: 5_000 });
      if (version.exitCode !== 0) return false;
      if (ENGINE !== 'system' && !version.stdout.trim().startsWith(ENGINE)) throw new Error(`dockerd answers as ${version.stdout.trim()}, not the Docker Engine ${ENGINE} asked for`);
      this.engineVersion = version.stdout.trim();
      return true;
    }, 60_000, 200);
    if (MANAGED && (await this.docker(['plugin', 'inspect', '-f', '{{.Id}}', MANAGED_ALIAS], { check: false })).exitCode === 0) {
      // dockerd enables an installed plugin itself when it starts.
      const id = (await this.docker(['plugin', 'inspect', '-f', '{{.Id}}', MANAGED_ALIAS])).stdout.trim();
      this.socket = path.join(PLUGIN_DIR, id, 'ovs.sock');
    }
  }

  /**
   * dockerd's exec-root, under which it mounts its containers' network namespaces, made a shared mount (as
   * systemd makes a host's mounts), so that those it makes later reach the managed plugin's slave of it.
   */
  private async shareExecRoot(): Promise<void> {
    const dir = path.join(this.dir, 'exec');
    await mkdir(dir, { recursive: true });
    const mounted = (await readFile('/proc/self/mountinfo', 'utf8')).split('\n').some((l) => l.split(' ')[4] === dir);
    if (!mounted) await cmd('mount', ['--bind', dir, dir]);
    await cmd('mount', ['--make-shared', dir]);
  }

  /** Stops dockerd; `keepMounts` for live-restore, whose running containers keep their namespace mounts. */
  async stopDockerd(signal: NodeJS.Signals = 'SIGTERM', keepMounts = false): Promise<void> {
    const pid = Number((await readFile(path.join(this.dir, 'docker.pid'), 'utf8').catch(() => '')).trim()) || this.dockerd?.pid;
    this.dockerd = undefined;
    if (!pid) return;
    await killAll([pid], signal);
    await waitFor('dockerd to exit', async () => !alive(pid), 30_000).catch(() => killAll([pid]));
    if (!keepMounts) await this.unmountUnder(path.join(this.dir, 'exec'));
  }

  // ---- the plugin ----

  /**
   * Starts the plugin and waits until it answers: by default its state view, or (`until: 'activate'`,
   * polled every 5 ms) Plugin.Activate, which is what dockerd waits for.
   */
  async startPlugin(env: Record<string, string> = {}, options: { until?: 'state' | 'activate' } = {}): Promise<void> {
    this.pluginEnv = { ...this.pluginEnv, ...env };
    if (MANAGED) return this.startManagedPlugin();
    const log = openSync(path.join(this.dir, 'plugin.log'), 'a');
    this.plugin = spawn('nsenter', [`--net=/run/netns/${this.ns}`, '--', process.execPath, PLUGIN_MAIN], {
      stdio: ['ignore', log, log],
      env: {
        ...process.env,
        OVSNET_SOCKET: this.socket,
        OVSNET_STATE_DIR: path.join(this.dir, 'state'),
        OVSNET_OVSDB: this.ovsdb,
        OVSNET_DOCKER: this.dockerHost,
        OVSNET_LOG_LEVEL: 'debug',
        ...this.pluginEnv,
      },
    });
    closeSync(log);
    const child = this.plugin;
    const answers = options.until === 'activate' ? () => this.pluginRequest('POST', '/Plugin.Activate', '{}').then((r) => r.status === 200) : () => this.pluginRequest('GET', '/ovsnet/state').then(() => true);
    await waitFor('the plugin socket', async () => {
      if (child.exitCode !== null) throw new Error(`plugin exited (code ${child.exitCode}): ${(await this.pluginLog()).slice(-2000)}`);
      return answers().catch(() => false);
    }, 20_000, options.until === 'activate' ? 5 : 50);
  }

  async stopPlugin(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    if (MANAGED) return this.stopManagedPlugin(signal);
    const child = this.plugin;
    this.plugin = undefined;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill(signal);
    await Promise.race([exited, sleep(10_000)]);
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }

  get pluginPid(): number | undefined {
    return this.plugin?.pid;
  }

  /** Waits for the plugin process to end by itself (an injected fault). */
  async waitPluginExit(timeoutMs = 30_000): Promise<void> {
    if (MANAGED) {
      // dockerd starts a managed plugin that died again at once (the fault fires once per setting); the
      // plugin's last words tell it happened.
      let fault = -1;
      await waitFor('the plugin to die at its fault', async () => {
        fault = Number((await this.pluginLogLines()).find((l) => l.msg === 'fault injected: the plugin kills itself here' && Number(l.seq) >= this.logMark)?.seq ?? -1);
        return fault >= 0;
      }, timeoutMs, 100);
      await this.dockerdRestarted(fault, timeoutMs);
      return;
    }
    const child = this.plugin;
    if (!child) return;
    await waitFor('the plugin to exit', async () => child.exitCode !== null || child.signalCode !== null, timeoutMs, 50);
    this.plugin = undefined;
  }

  /**
   * A power cut: every process of the host dies at once (containers, dockerd,
   * the plugin, Open vSwitch), then the host comes back with an empty network
   * namespace (no links, no addresses, no iptables rules) and an empty /run
   * (dockerd's exec-root); disks are kept (the OVS database, Docker's data
   * root, the plugin's state).
   */
  async powerCycle(): Promise<void> {
    this.plugin = undefined;
    this.dockerd = undefined;
    // dockerd, containerd and the shims first: a managed plugin killed while dockerd lives is started
    // again at once, and that one (with its shim) would outlive the cut in the old network namespace.
    // lossyfs plays the disk: it stays, and forgets what was not synced.
    const disk = this.lossy?.pid;
    await killAll((await pidsMentioning(this.dir + '/')).filter((pid) => pid !== disk));
    await killAll(await this.cgroupPids());
    await killAll(await this.managedPluginPids());
    await sleep(300);
    if (this.lossy) this.lastCut = await this.lossy.cut();
    await this.unmountUnder(this.dir, this.lossy?.mountpoint);
    await rm(path.join(this.dir, 'exec'), { recursive: true, force: true });
    for (const name of ['ovs/db.sock', 'ovs/ovsdb-server.pid', 'ovs/ovs-vswitchd.pid', 'ovs/ovsdb-server.ctl', 'ovs/ovs-vswitchd.ctl', 'docker.pid', 'docker.sock']) {
      await rm(path.join(this.dir, name), { force: true });
    }
    await rm(this.socket, { force: true });
    await cmd('ip', ['netns', 'del', this.ns]);
    await cmd('ip', ['netns', 'add', this.ns]);
    await this.exec('ip', ['link', 'set', 'lo', 'up']);
  }

  pluginLog(): Promise<string> {
    if (MANAGED) return this.managedPluginLog();
    return readFile(path.join(this.dir, 'plugin.log'), 'utf8').catch(() => '');
  }

  // ---- the managed plugin ----

  /** Log lines seen before the current start (a fault must come after it). */
  private logMark = -1;

  /** Installs the plugin from the registry (once), gives it this host's sockets and state, and enables it. */
  private async startManagedPlugin(): Promise<void> {
    if (!(await stat(path.join(this.dir, 'docker.sock')).catch(() => undefined))) return; // starts with dockerd
    const installed = (await this.docker(['plugin', 'inspect', MANAGED_ALIAS], { check: false })).exitCode === 0;
    if (!installed) {
      await this.startRegistry();
      await this.docker(['plugin', 'install', '--alias', MANAGED_ALIAS, '--grant-all-permissions', '--disable', MANAGED_REF], { timeoutMs: 180_000 });
    } else if ((await this.docker(['plugin', 'inspect', '-f', '{{.Enabled}}', MANAGED_ALIAS])).stdout.trim() === 'true') {
      await this.docker(['plugin', 'disable', '-f', MANAGED_ALIAS]);
    }
    // The enable below creates a containerd container of the plugin's id: the old one must be gone.
    await waitFor('the disabled plugin\'s processes to end', async () => (await this.managedPluginPids()).length === 0, 20_000, 100);
    await mkdir(path.join(this.dir, 'state'), { recursive: true });
    const env = { OVSNET_LOG_LEVEL: 'debug', OVSNET_FAULT: '', ...this.pluginEnv };
    await this.docker(['plugin', 'set', MANAGED_ALIAS,
      `ovs-run.source=${path.join(this.dir, 'ovs')}`, `state.source=${path.join(this.dir, 'state')}`, `docker-sock.source=${path.join(this.dir, 'docker.sock')}`,
      `docker-run.source=${path.join(this.dir, 'exec')}`,
      ...Object.entries(env).map(([k, v]) => `${k}=${v}`)]);
    this.logMark = (await this.pluginLogLines()).length;
    await this.docker(['plugin', 'enable', MANAGED_ALIAS], { timeoutMs: 60_000 });
    const id = (await this.docker(['plugin', 'inspect', '-f', '{{.Id}}', MANAGED_ALIAS])).stdout.trim();
    this.socket = path.join(PLUGIN_DIR, id, 'ovs.sock');
    await waitFor('the managed plugin socket', async () => (await this.pluginRequest('GET', '/ovsnet/state').catch(() => undefined)) !== undefined, 30_000, 100);
  }

  private async stopManagedPlugin(signal: NodeJS.Signals): Promise<void> {
    if (signal === 'SIGKILL') {
      // A crash: dockerd notices and starts the plugin again, as it does for managed plugins.
      const mark = (await this.pluginLogLines()).length;
      const pids = await this.managedPluginPids();
      if (pids.length === 0) throw new Error(`no process of the managed plugin found on ${this.name}`);
      await killAll(pids, 'SIGKILL');
      await this.dockerdRestarted(mark - 1, 30_000);
      return;
    }
    if (!(await stat(path.join(this.dir, 'docker.sock')).catch(() => undefined))) return;
    await this.docker(['plugin', 'disable', '-f', MANAGED_ALIAS], { check: false });
  }

  /**
   * Waits until dockerd has started again a managed plugin that died (it does so at once while the plugin
   * is enabled): the new process listening after log line `afterSeq`, and dockerd's own check of its socket.
   * dockerd dials the socket 500 ms after the start and, while nobody listens, every 3 s after that. A
   * disable sent before that check races dockerd's restart: dockerd can lose track of the new containerd
   * container, and every later enable on the host then fails with "id already in use".
   */
  private async dockerdRestarted(afterSeq: number, timeoutMs: number): Promise<void> {
    await waitFor('dockerd to start the plugin again', async () =>
      (await this.pluginLogLines()).some((l) => l.msg === 'listening' && Number(l.seq) > afterSeq) &&
      (await this.pluginRequest('GET', '/ovsnet/state').then(() => true, () => false)), timeoutMs, 100);
    // The process listens by now: the first of dockerd's dials (0.5, 3.5, 6.5 s ... after the start) from
    // now on finds it, if an earlier one did not already. Wait for that one, and a margin.
    const age = await this.managedPluginAge();
    const dial = 0.5 + 3 * Math.max(0, Math.ceil((age - 0.5) / 3));
    await sleep((dial - age + 0.7) * 1000);
  }

  /** Seconds since the oldest process of this host's managed plugin (the plugin itself) started. */
  private async managedPluginAge(): Promise<number> {
    const uptime = Number((await readFile('/proc/uptime', 'utf8')).split(' ')[0]);
    let age = 0;
    for (const pid of await this.managedPluginPids()) {
      const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
      // Field 22, starttime, in clock ticks since boot (USER_HZ, 100 on Linux); counted after the command's ")".
      const started = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]) / 100;
      if (started > 0) age = Math.max(age, uptime - started);
    }
    return age;
  }

  /**
   * Processes whose root is a plugin rootfs of this host's dockerd, compared by device and inode: across
   * mount namespaces /proc/<pid>/root reads as "/" (by its path no process was ever found).
   */
  private async managedPluginPids(): Promise<number[]> {
    const base = path.join(this.dir, 'docker/plugins');
    const roots = new Set<string>();
    for (const id of await readdir(base).catch(() => [] as string[])) {
      const root = await stat(path.join(base, id, 'rootfs')).catch(() => undefined);
      if (root) roots.add(`${root.dev}:${root.ino}`);
    }
    const pids: number[] = [];
    if (roots.size === 0) return pids;
    for (const entry of await readdir('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      const root = await stat(`/proc/${entry}/root/`).catch(() => undefined);
      if (root && roots.has(`${root.dev}:${root.ino}`)) pids.push(Number(entry));
    }
    return pids;
  }

  /** The plugin's stdout, as dockerd logs it (one JSON line in `msg`, per line, with plugin=<id>). */
  private async managedPluginLog(): Promise<string> {
    const text = await readFile(path.join(this.dir, 'dockerd.log'), 'utf8').catch(() => '');
    const out: string[] = [];
    let seq = 0;
    for (const line of text.split('\n')) {
      if (!line.includes(' plugin=')) continue;
      const match = /msg="((?:[^"\\]|\\.)*)"/.exec(line);
      if (!match) continue;
      let msg: string;
      try {
        msg = JSON.parse(`"${match[1]}"`) as string;
      } catch {
        continue;
      }
      if (!msg.startsWith('{')) continue;
      // Number the lines so that "since this start" can be told apart from earlier runs.
      out.push(msg.replace(/^\{/, `{"seq":${seq++},`));
    }
    return out.join('\n');
  }

  private async startRegistry(): Promise<void> {
    if ((await this.exec('busybox', ['wget', '-q', '-O', '/dev/null', 'http://127.0.0.1:5000/v2/'], { check: false })).exitCode === 0) return;
    const config = path.join(this.dir, 'registry.yml');
    await writeFile(config, `version: 0.1\nlog: { level: warn }\nstorage: { filesystem: { rootdirectory: ${REGISTRY_STORAGE} } }\nhttp: { addr: 127.0.0.1:5000 }\n`);
    const log = openSync(path.join(this.dir, 'registry.log'), 'a');
    spawn('nsenter', [`--net=/run/netns/${this.ns}`, '--', 'docker-registry', 'serve', config], { stdio: ['ignore', log, log], detached: true }).unref();
    closeSync(log);
    await waitFor('the registry in the host', async () => (await this.exec('busybox', ['wget', '-q', '-O', '/dev/null', 'http://127.0.0.1:5000/v2/'], { check: false })).exitCode === 0, 20_000, 100);
  }

  /** Log lines of the plugin as objects. */
  async pluginLogLines(): Promise<Array<Record<string, unknown>>> {
    return (await this.pluginLog())
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  }

  /** A raw HTTP request to the plugin socket, as dockerd would send it. */
  pluginRequest(method: string, urlPath: string, body?: string): Promise<{ status: number; body: string }> {
    return new Promise((resolve, reject) => {
      const req = http.request({ socketPath: this.socket, method, path: urlPath, headers: body === undefined ? {} : { 'Content-Length': Buffer.byteLength(body) } }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      });
      req.on('error', reject);
      req.setTimeout(10_000, () => req.destroy(new Error('plugin request timed out')));
      req.end(body);
    });
  }

  async pluginState(): Promise<PluginState> {
    const res = await this.pluginRequest('GET', '/ovsnet/state');
    if (res.status !== 200) throw new Error(`state request failed: ${res.status} ${res.body}`);
    return JSON.parse(res.body) as PluginState;
  }

  // ---- what is on the host ----

  /** OVS ports the plugin owns, with their tag and external_ids. */
  async ownedPorts(): Promise<Array<{ name: string; tag: number | undefined; externalIds: Record<string, string> }>> {
    const { stdout } = await this.vsctl(['--format=json', '--columns=name,tag,external_ids', 'find', 'Port', 'external_ids:ovsnet-owner=ovsnet']);
    const table = JSON.parse(stdout) as { data: Array<[string, unknown, ['map', Array<[string, string]>]]> };
    return table.data.map(([name, tag, ids]) => ({
      name,
      tag: typeof tag === 'number' ? tag : undefined,
      externalIds: Object.fromEntries(ids[1]),
    }));
  }

  async links(): Promise<Array<{ name: string; kind: string; mtu: number }>> {
    const { stdout } = await this.exec('ip', ['-j', '-d', 'link', 'show']);
    return (JSON.parse(stdout) as Array<{ ifname: string; mtu: number; linkinfo?: { info_kind?: string } }>).map((l) => ({
      name: l.ifname,
      kind: l.linkinfo?.info_kind ?? '',
      mtu: l.mtu,
    }));
  }

  /** Rules in one of the plugin's chains (without the chain declaration). */
  async chainRules(table: 'filter' | 'nat', chain: string, tool = 'iptables'): Promise<string[]> {
    const { stdout } = await this.exec(tool, ['-w', '-t', table, '-S', chain], { check: false });
    return stdout.split('\n').filter((l) => l.startsWith('-A '));
  }

  /**
   * A namespace standing in for the world beyond the host: linked to the host
   * by a veth pair with a /30 on each end.
   */
  async addOutside(name: string, subnet: { hostAddress: string; address: string; prefix: number }): Promise<OutsideNamespace> {
    await assertUnrouted([`${subnet.hostAddress}/${subnet.prefix}`, `${subnet.address}/${subnet.prefix}`], `the outside namespace ${name}`);
    const ns = `ovsnet-t-${tagged(name)}`;
    await cmd('ip', ['netns', 'del', ns], { check: false });
    await cmd('ip', ['netns', 'add', ns]);
    this.extraNamespaces.push(ns);
    const hostEnd = `up-${name}`.slice(0, 15);
    await this.exec('ip', ['link', 'add', 'name', hostEnd, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
    await this.exec('ip', ['address', 'add', `${subnet.hostAddress}/${subnet.prefix}`, 'dev', hostEnd]);
    await this.exec('ip', ['link', 'set', 'dev', hostEnd, 'up']);
    await cmd('ip', ['-n', ns, 'address', 'add', `${subnet.address}/${subnet.prefix}`, 'dev', 'eth0']);
    await cmd('ip', ['-n', ns, 'link', 'set', 'dev', 'eth0', 'up']);
    await cmd('ip', ['-n', ns, 'link', 'set', 'dev', 'lo', 'up']);
    return { ns, hostAddress: subnet.hostAddress, address: subnet.address };
  }

  async newNamespace(name: string): Promise<string> {
    const ns = `ovsnet-t-${tagged(name)}`;
    await cmd('ip', ['netns', 'del', ns], { check: false });
    await cmd('ip', ['netns', 'add', ns]);
    this.extraNamespaces.push(ns);
    return ns;
  }

  // ---- teardown ----

  async stop(): Promise<void> {
    if (await stat(path.join(this.dir, 'docker.sock')).catch(() => undefined)) {
      const ids = await this.docker(['ps', '-aq'], { check: false, timeoutMs: 10_000 });
      if (ids.exitCode === 0 && ids.stdout.trim()) {
        await this.docker(['rm', '-f', ...ids.stdout.trim().split('\n')], { check: false, timeoutMs: 60_000 });
      }
    }
    await this.stopDockerd().catch(() => {});
    await this.stopPlugin().catch(() => {});
    await this.lossy?.unmount().catch(() => {});
    this.lossy = undefined;
    await this.destroy();
  }

  /** Removes every trace of this host, whatever state a crash left it in. */
  private async destroy(): Promise<void> {
    await killAll(await this.managedPluginPids());
    await killAll(await pidsMentioning(this.dir + '/'));
    await killAll(await this.cgroupPids());
    await sleep(100);
    await this.unmountUnder(this.dir);
    await this.removeCgroups();
    for (const ns of [...this.extraNamespaces, this.ns]) await cmd('ip', ['netns', 'del', ns], { check: false });
    this.extraNamespaces.length = 0;
    await rm(this.socket, { force: true });
    await this.keepLogs();
    await rm(this.dir, { recursive: true, force: true, maxRetries: 3 });
  }

  /** Keeps the host's logs (the plugin's, dockerd's, OVS's and OVN's) in LOG_DIR/<engine>/<host>, to read after a failed run. */
  private async keepLogs(): Promise<void> {
    const dest = path.join(LOG_DIR, `${ENGINE}${MANAGED ? '-managed' : ''}`, this.name);
    await rm(dest, { recursive: true, force: true });
    await mkdir(dest, { recursive: true });
    for (const dir of ['', 'ovs', 'ovn']) {
      const names = await readdir(path.join(this.dir, dir)).catch(() => [] as string[]);
      for (const name of names.filter((n) => n.endsWith('.log'))) {
        await copyFile(path.join(this.dir, dir, name), path.join(dest, dir ? `${dir}-${name}` : name)).catch(() => {});
      }
    }
  }

  private async cgroupDirs(): Promise<string[]> {
    const dirs: string[] = [];
    const walk = async (dir: string) => {
      dirs.push(dir);
      for (const entry of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
        if (entry.isDirectory()) await walk(path.join(dir, entry.name));
      }
    };
    for (const controller of await readdir('/sys/fs/cgroup').catch(() => [] as string[])) {
      const dir = path.join('/sys/fs/cgroup', controller, this.ns);
      if (await stat(dir).catch(() => undefined)) await walk(dir);
    }
    const top = path.join('/sys/fs/cgroup', this.ns); // cgroup v2
    if (!dirs.includes(top) && (await stat(path.join(top, 'cgroup.procs')).catch(() => undefined))) await walk(top);
    return dirs;
  }

  private async cgroupPids(): Promise<number[]> {
    const pids = new Set<number>();
    for (const dir of await this.cgroupDirs()) {
      const text = await readFile(path.join(dir, 'cgroup.procs'), 'utf8').catch(() => '');
      for (const line of text.split('\n')) if (line.trim()) pids.add(Number(line));
    }
    return [...pids];
  }

  private async removeCgroups(): Promise<void> {
    const dirs = (await this.cgroupDirs()).sort((a, b) => b.length - a.length);
    for (const dir of dirs) await rmdir(dir).catch(() => {});
  }

  /** Unmounts everything at or under `prefix`, but `keep`. */
  private async unmountUnder(prefix: string, keep?: string): Promise<void> {
    const mountinfo = await readFile('/proc/self/mountinfo', 'utf8');
    const points = mountinfo
      .split('\n')
      .map((l) => l.split(' ')[4])
      .filter((p): p is string => !!p && p !== keep && (p === prefix || p.startsWith(prefix + '/')))
      .sort((a, b) => b.length - a.length);
    for (const point of points) await cmd('umount', ['-l', point], { check: false });
  }
}

/** The addresses a `docker network create` gives: subnets, gateways, ranges, aux addresses. */
function networkAddresses(args: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const [flag, inline] = args[i]!.split(/=(.*)/s);
    if (!['--subnet', '--gateway', '--ip-range', '--aux-address'].includes(flag!)) continue;
    const value = inline ?? args[++i] ?? '';
    out.push(flag === '--aux-address' ? value.split('=').pop()! : value);
  }
  return out;
}

/** The environment dockerd runs in: for a private engine, its binaries (dockerd, containerd, shims) first in PATH. */
export function dockerdEnv(): NodeJS.ProcessEnv {
  const dirs = ENGINE_PATHS[ENGINE];
  return dirs ? { ...process.env, PATH: `${dirs.join(':')}:${process.env.PATH ?? ''}` } : { ...process.env };
}

export interface PluginState {
  networks: Array<{ id: string; spec: Record<string, unknown>; gatewayPort?: string; ipv4: Array<{ pool: string; gateway?: string; auxAddresses?: Record<string, string> }> }>;
  endpoints: Array<{ id: string; networkId: string; address: string; hostIf: string; peerIf: string; joined: boolean }>;
  pools: Array<{ id: string; pool: string; range: string }>;
  addresses: Array<{ poolId: string; address: string; kind: string }>;
  /** Veth pairs made ahead of need that the plugin holds (no records). */
  spares: Array<{ host: string; peer: string }>;
  /** Spares are being made or deleted now, or due to be. */
  sparesBusy: boolean;
}
