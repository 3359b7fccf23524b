/**
 * Daemon settings: environment variables with defaults, validated once into a
 * frozen Config. A bad setting stops the daemon with a message naming the
 * variable, the value and what is valid.
 */
import path from 'node:path';
import { type Cidr, contains, formatCidr, formatIp, parseIp } from './domain/cidr.js';
import { type OvnExternal, describeExternal } from './domain/ovn-router.js';
import { usableBounds } from './domain/allocator.js';
import { INTERFACE_NAME_RULE, isValidInterfaceName } from './domain/names.js';
import { DEFAULT_POOL_RULE, type DefaultPool, checkRange, parseDefaultPools as parsePools } from './domain/ranges.js';
import type { DatapathSetting } from './domain/records.js';
import { OVSDB_REMOTE_RULE, parseOvsdbRemote, parseOvsdbRemotes } from './domain/remotes.js';
import { LEVELS, type Level } from './log.js';
import { FAULT_POINTS, type FaultCall, parseFault } from './faults.js';

export interface Config {
  readonly socketPath: string;
  readonly stateDir: string;
  readonly ovsdb: string;
  readonly bridge: string;
  readonly datapath: DatapathSetting;
  readonly logLevel: Level;
  readonly defaultPools: readonly DefaultPool[];
  readonly mtu: number;
  /** Docker API address for reconciliation, or undefined when told not to ask Docker. */
  readonly docker: string | undefined;
  readonly reconcileIntervalMs: number;
  readonly reconcileGraceMs: number;
  /** Veth pairs kept made ahead of need per shape of network (MTU, offload); 0 turns them off. */
  readonly sparePairs: number;
  /** Test-only crash point. */
  readonly fault: { call: FaultCall; point: string } | undefined;
  /** Where the host's sysctls are (/proc/sys, or a mount of its net/ tree in the managed plugin). */
  readonly procSys: string;
  /** Which iptables: auto, legacy or nft. */
  readonly iptables: 'auto' | 'legacy' | 'nft';
  /** Where containers' network namespaces are, when not at the path Docker gives; undefined: at that path. */
  readonly netnsDir: string | undefined;
  /** Where Prometheus metrics are served; undefined means off. */
  readonly metrics: { host: string; port: number } | undefined;
  /** OVN mode: the northbound database's remotes and the integration bridge; undefined means off. */
  readonly ovn: OvnSettings | undefined;
}

export interface OvnSettings {
  readonly nb: string;
  readonly bridge: string;
  readonly timeoutMs: number;
  /** The northbound connection's inactivity probe (0: off). */
  readonly probeMs: number;
  /** How long a registration of this host's chassis name stays its own unrenewed. */
  readonly leaseMs: number;
  /** Where OVN routers SNAT to, on their gateway chassis; undefined: routers have no way out. */
  readonly external: OvnExternal | undefined;
  /** For ssl: remotes of the northbound and southbound databases: this host's key and certificate, and the CA's certificate. */
  readonly tls: { readonly key: string; readonly cert: string; readonly ca: string } | undefined;
}

/** The settings that name the TLS files, for messages. */
export const OVN_TLS_SETTINGS = 'OVSNET_OVN_SSL_KEY, OVSNET_OVN_SSL_CERT and OVSNET_OVN_SSL_CA';

export interface SettingDoc {
  readonly name: string;
  readonly default: string;
  readonly description: string;
}

/** Every setting, its default and meaning; the table in docs/operations.md (Daemon settings) is written from this, and checked against it. */
export const SETTINGS: readonly SettingDoc[] = [
  { name: 'OVSNET_SOCKET', default: '/run/docker/plugins/ovs.sock', description: 'Unix socket the plugin listens on; its file name (minus .sock) is the driver name' },
  { name: 'OVSNET_STATE_DIR', default: '/var/lib/ovsnet', description: 'directory of the LevelDB state' },
  { name: 'OVSNET_OVSDB', default: 'unix:/var/run/openvswitch/db.sock', description: 'OVSDB server: unix:<path> or tcp:<host>:<port>' },
  { name: 'OVSNET_BRIDGE', default: 'ovs0', description: 'OVS bridge of networks that do not set -o bridge' },
  { name: 'OVSNET_DATAPATH', default: 'auto', description: 'datapath of bridges the plugin creates: auto, system or netdev (auto: system when the openvswitch kernel module is loaded, else netdev)' },
  { name: 'OVSNET_MTU', default: '1500', description: 'MTU of networks that do not set -o mtu' },
  { name: 'OVSNET_DEFAULT_POOLS', default: '10.200.0.0/16:24,fd6f:766e:6574::/48:64', description: 'ranges for automatic subnets (no --subnet): comma-separated <base CIDR>:<prefix length of each subnet>' },
  { name: 'OVSNET_LOG_LEVEL', default: 'info', description: 'debug, info, warn or error' },
  { name: 'OVSNET_DOCKER', default: 'unix:///var/run/docker.sock', description: 'Docker API the reconciler compares with (unix://<path> or tcp://<host>:<port>), or none' },
  { name: 'OVSNET_RECONCILE_INTERVAL', default: '60', description: 'seconds between full reconciliations with OVS, the kernel and Docker' },
  { name: 'OVSNET_RECONCILE_GRACE', default: '60', description: 'seconds a record must be old before the reconciler may remove it as debris' },
  { name: 'OVSNET_SPARE_PAIRS', default: '4', description: 'veth pairs kept made ahead of need for each shape of network (bridge, MTU, offload), so a container start runs no program; 0 turns them off' },
  { name: 'OVSNET_METRICS', default: '', description: 'host:port to serve Prometheus metrics on (GET /metrics); empty means off' },
  { name: 'OVSNET_OVN_NB', default: '', description: "OVN mode: the northbound database's remotes, comma-separated (unix:<path>, tcp:<ip>:<port> or ssl:<ip>:<port>, every member of its Raft cluster); empty means OVN mode is off" },
  { name: 'OVSNET_OVN_BRIDGE', default: 'br-int', description: "OVN mode: ovn-controller's integration bridge, where the containers' ports go" },
  { name: 'OVSNET_OVN_TIMEOUT', default: '30', description: 'OVN mode: seconds a call waits for the northbound database and for ovn-controller to install a port' },
  { name: 'OVSNET_OVN_PROBE', default: '5', description: 'OVN mode: seconds without a word from the northbound member in use before the plugin sends it an echo; with no answer within as long again it is left for the member that leads, so a leader that went silent without closing its connection (a dead host, a partition) is left within twice this; 0 turns the probe off' },
  { name: 'OVSNET_OVN_HOST_LEASE', default: '900', description: "OVN mode: seconds a host's registration of its chassis name stays its own without being renewed (the plugin renews it every third of this, at its reconcile passes); after that the name may be taken over, the host is reported gone once out of the southbound database, and forget-host's --idle defaults to it" },
  { name: 'OVSNET_OVN_SSL_KEY', default: '', description: "OVN mode: this host's private key (PEM file) for ssl: remotes of the northbound and southbound databases" },
  { name: 'OVSNET_OVN_SSL_CERT', default: '', description: "OVN mode: this host's certificate (PEM file), signed by a CA the databases trust, for ssl: remotes" },
  { name: 'OVSNET_OVN_SSL_CA', default: '', description: "OVN mode: the CA certificate (PEM file) the databases' certificates must be signed by, for ssl: remotes" },
  { name: 'OVSNET_OVN_EXTERNAL', default: '', description: 'OVN mode: the outside network routers SNAT onto, <physical network>,<subnet>,<next hop>[,<first>-<last>] (e.g. physnet,192.0.2.0/24,192.0.2.1,192.0.2.100-192.0.2.150); the physical network is the name in the gateway chassis\' ovn-bridge-mappings; each router takes one address of the range (default: the whole subnet, which must then be the routers\'); empty means routers have no way out' },
  { name: 'OVSNET_OVN_GATEWAYS', default: '', description: 'OVN mode: the gateway chassis (OVS system-ids) that carry routers\' outside traffic, <chassis>[:<priority>],... (highest priority active, the others standby)' },
  { name: 'OVSNET_PROC_SYS', default: '/proc/sys', description: "where the host's sysctls are (its net/ tree is what the plugin writes: IPv4 forwarding, gateway ports' accept_ra); the managed plugin mounts the host's /proc/sys/net at /host/proc/sys/net, since its own /proc/sys is read-only" },
  { name: 'OVSNET_NETNS_DIR', default: '', description: "where the plugin finds containers' network namespaces (Docker's <exec-root>/netns) when not at the path Docker gives (the managed plugin's mount); empty: at that path. Used to read the link-local address a container's interface has" },
  { name: 'OVSNET_IPTABLES', default: 'auto', description: "which iptables the plugin writes with: auto (the one the host's rules are in: Docker's chains, else the most rules, else what plain iptables is), legacy or nft" },
  { name: 'OVSNET_FAULT', default: '', description: 'testing only: <Call>:<point> where the plugin kills itself (see src/faults.ts)' },
];

export class ConfigError extends Error {
  override name = 'ConfigError';
}

function setting(env: NodeJS.ProcessEnv, name: string): string {
  const doc = SETTINGS.find((s) => s.name === name)!;
  const value = env[name];
  return value === undefined || value === '' ? doc.default : value;
}

function invalid(name: string, value: string, rule: string): never {
  throw new ConfigError(`invalid ${name}="${value}": ${rule}`);
}

export function parseDefaultPools(name: string, text: string): DefaultPool[] {
  return parsePools(text) ?? invalid(name, text, DEFAULT_POOL_RULE);
}

const OVN_EXTERNAL_RULE =
  '<physical network name>,<IPv4 subnet of /30 or larger>,<next hop in that subnet>[,<first>-<last> address routers may take>], e.g. physnet,192.0.2.0/24,192.0.2.1,192.0.2.100-192.0.2.150';

function parseOvnExternal(text: string, gatewaysText: string): OvnExternal {
  const [physnet, cidrText, nexthopText, rangeText, ...rest] = text.split(',').map((x) => x.trim());
  const cidr = cidrText ? checkRange(cidrText, { family: 4 }) : undefined;
  const nexthop = nexthopText ? parseIp(nexthopText) : undefined;
  if (rest.length > 0 || !physnet || !/^[A-Za-z0-9_.-]{1,63}$/.test(physnet) || !cidr?.ok || !nexthop || !contains(cidr.cidr, nexthop) || cidr.cidr.prefix > 30) {
    invalid('OVSNET_OVN_EXTERNAL', text, OVN_EXTERNAL_RULE);
  }
  const subnet = (cidr as { cidr: Cidr }).cidr;
  let routerRange: string | undefined;
  if (rangeText) {
    const ends = rangeText.split('-').map((a) => parseIp(a.trim()));
    const usable = usableBounds(subnet);
    const inside = (ip: { value: bigint } | undefined) => ip !== undefined && ip.value >= usable.first && ip.value <= usable.last;
    if (ends.length !== 2 || !inside(ends[0]) || !inside(ends[1]) || ends[0]!.value > ends[1]!.value) {
      invalid('OVSNET_OVN_EXTERNAL', text, `the addresses routers may take must be <first>-<last>, both usable addresses of ${formatCidr(subnet)}, first not after last`);
    }
    routerRange = `${formatIp(ends[0]!)}-${formatIp(ends[1]!)}`;
  }
  const gateways = gatewaysText.split(',').map((x) => x.trim()).filter(Boolean).map((item, i) => {
    const match = /^([A-Za-z0-9_.:-]+?)(?::(\d{1,5}))?$/.exec(item);
    const priority = match?.[2] === undefined ? 100 - i : Number(match[2]);
    if (!match || priority > 32767) invalid('OVSNET_OVN_GATEWAYS', gatewaysText, '<chassis name>[:<priority 0-32767>], comma-separated, e.g. gw1:20,gw2:10');
    return { chassis: match[1]!, priority };
  });
  if (gateways.length === 0) invalid('OVSNET_OVN_GATEWAYS', gatewaysText, 'name at least one gateway chassis (the system-id of a host with ovn-bridge-mappings for the physical network) when OVSNET_OVN_EXTERNAL is set');
  return { physnet: physnet!, subnet: formatCidr(subnet), nexthop: formatIp(nexthop!), ...(routerRange ? { routerRange } : {}), gateways };
}

export function loadConfig(env: NodeJS.ProcessEnv): Config {
  const socketPath = setting(env, 'OVSNET_SOCKET');
  if (!path.isAbsolute(socketPath) || !socketPath.endsWith('.sock')) {
    invalid('OVSNET_SOCKET', socketPath, 'must be an absolute path ending in .sock');
  }
  const stateDir = setting(env, 'OVSNET_STATE_DIR');
  if (!path.isAbsolute(stateDir)) invalid('OVSNET_STATE_DIR', stateDir, 'must be an absolute path');
  const ovsdb = setting(env, 'OVSNET_OVSDB');
  if (!parseOvsdbRemote(ovsdb)) invalid('OVSNET_OVSDB', ovsdb, OVSDB_REMOTE_RULE);
  const bridge = setting(env, 'OVSNET_BRIDGE');
  if (!isValidInterfaceName(bridge)) invalid('OVSNET_BRIDGE', bridge, `a bridge name is ${INTERFACE_NAME_RULE}`);
  const datapath = setting(env, 'OVSNET_DATAPATH');
  if (!['auto', 'system', 'netdev'].includes(datapath)) invalid('OVSNET_DATAPATH', datapath, 'valid values are auto, system, netdev');
  const logLevel = setting(env, 'OVSNET_LOG_LEVEL');
  if (!(LEVELS as readonly string[]).includes(logLevel)) invalid('OVSNET_LOG_LEVEL', logLevel, `valid values are ${LEVELS.join(', ')}`);
  const mtuText = setting(env, 'OVSNET_MTU');
  const mtu = Number(mtuText);
  if (!/^\d+$/.test(mtuText) || mtu < 68 || mtu > 65535) invalid('OVSNET_MTU', mtuText, 'must be an integer from 68 to 65535');
  const defaultPools = parseDefaultPools('OVSNET_DEFAULT_POOLS', setting(env, 'OVSNET_DEFAULT_POOLS'));
  const dockerText = setting(env, 'OVSNET_DOCKER');
  if (dockerText !== 'none' && !/^(unix:\/\/\/.+|tcp:\/\/[^/]+:\d+)$/.test(dockerText)) {
    invalid('OVSNET_DOCKER', dockerText, 'use unix:///<path>, tcp://<host>:<port>, or none');
  }
  const seconds = (name: string, min: number) => {
    const text = setting(env, name);
    if (!/^\d+$/.test(text) || Number(text) < min || Number(text) > 86400) invalid(name, text, `must be a whole number of seconds from ${min} to 86400`);
    return Number(text) * 1000;
  };
  const spareText = setting(env, 'OVSNET_SPARE_PAIRS');
  if (!/^\d+$/.test(spareText) || Number(spareText) > 64) invalid('OVSNET_SPARE_PAIRS', spareText, 'must be a whole number from 0 to 64');
  const metricsText = setting(env, 'OVSNET_METRICS');
  let metrics: { host: string; port: number } | undefined;
  if (metricsText) {
    const match = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(metricsText);
    const port = match ? Number(match[2]) : 0;
    if (!match || port < 1 || port > 65535) invalid('OVSNET_METRICS', metricsText, 'use <host>:<port>, e.g. 127.0.0.1:9617, or leave it empty for no metrics');
    metrics = { host: match[1]!.replace(/^\[|\]$/g, ''), port };
  }
  const nbText = setting(env, 'OVSNET_OVN_NB');
  if (nbText && !parseOvsdbRemotes(nbText)) invalid('OVSNET_OVN_NB', nbText, `a comma-separated list of remotes: ${OVSDB_REMOTE_RULE}`);
  const ovnBridge = setting(env, 'OVSNET_OVN_BRIDGE');
  if (!isValidInterfaceName(ovnBridge)) invalid('OVSNET_OVN_BRIDGE', ovnBridge, `a bridge name is ${INTERFACE_NAME_RULE}`);
  const ovnTimeoutMs = seconds('OVSNET_OVN_TIMEOUT', 1);
  const ovnProbeMs = seconds('OVSNET_OVN_PROBE', 0);
  if (nbText && ovnProbeMs > 0 && 2 * ovnProbeMs >= ovnTimeoutMs) {
    invalid('OVSNET_OVN_PROBE', String(ovnProbeMs / 1000), `a silent member is left within twice the probe, which must be less than OVSNET_OVN_TIMEOUT (${ovnTimeoutMs / 1000} s) for the calls waiting on it to go on: at most ${Math.ceil(ovnTimeoutMs / 2000) - 1}, or 0 for no probe`);
  }
  const ovnLeaseMs = seconds('OVSNET_OVN_HOST_LEASE', 1);
  const intervalMs = seconds('OVSNET_RECONCILE_INTERVAL', 1);
  if (nbText && ovnLeaseMs <= 2 * intervalMs) {
    invalid('OVSNET_OVN_HOST_LEASE', String(ovnLeaseMs / 1000), `a host renews its registration at its reconcile passes, so the lease must be more than twice OVSNET_RECONCILE_INTERVAL (${intervalMs / 1000} s): at least ${(2 * intervalMs) / 1000 + 1}`);
  }
  const tlsFiles = { key: setting(env, 'OVSNET_OVN_SSL_KEY'), cert: setting(env, 'OVSNET_OVN_SSL_CERT'), ca: setting(env, 'OVSNET_OVN_SSL_CA') };
  const tlsGiven = Object.values(tlsFiles).filter((f) => f !== '').length;
  for (const [name, file] of [['OVSNET_OVN_SSL_KEY', tlsFiles.key], ['OVSNET_OVN_SSL_CERT', tlsFiles.cert], ['OVSNET_OVN_SSL_CA', tlsFiles.ca]] as const) {
    if (tlsGiven > 0 && file === '') invalid(name, file, `give all of ${OVN_TLS_SETTINGS}, or none`);
    if (file !== '' && !path.isAbsolute(file)) invalid(name, file, 'must be the absolute path of a PEM file');
  }
  if (nbText && nbText.split(',').some((r) => r.trim().startsWith('ssl:')) && tlsGiven === 0) {
    invalid('OVSNET_OVN_NB', nbText, `ssl: remotes need ${OVN_TLS_SETTINGS} (this host's key and certificate, and the CA that signed the databases' certificates)`);
  }
  const externalText = setting(env, 'OVSNET_OVN_EXTERNAL');
  const gatewaysText = setting(env, 'OVSNET_OVN_GATEWAYS');
  const external = externalText ? parseOvnExternal(externalText, gatewaysText) : undefined;
  if (!externalText && gatewaysText) invalid('OVSNET_OVN_GATEWAYS', gatewaysText, 'gateway chassis need OVSNET_OVN_EXTERNAL too (the outside network they carry traffic to)');
  const iptables = setting(env, 'OVSNET_IPTABLES');
  if (iptables !== 'auto' && iptables !== 'legacy' && iptables !== 'nft') invalid('OVSNET_IPTABLES', iptables, 'use auto, legacy or nft');
  const procSys = setting(env, 'OVSNET_PROC_SYS');
  if (!path.isAbsolute(procSys)) invalid('OVSNET_PROC_SYS', procSys, 'must be an absolute path');
  const netnsDir = setting(env, 'OVSNET_NETNS_DIR');
  if (netnsDir && !path.isAbsolute(netnsDir)) invalid('OVSNET_NETNS_DIR', netnsDir, 'must be an absolute path, or empty');
  const faultText = setting(env, 'OVSNET_FAULT');
  const fault = faultText ? parseFault(faultText) : undefined;
  if (faultText && !fault) {
    const all = Object.entries(FAULT_POINTS).flatMap(([call, points]) => points.map((p) => `${call}:${p}`));
    invalid('OVSNET_FAULT', faultText, `valid values are ${all.join(', ')}`);
  }
  return Object.freeze({
    socketPath,
    stateDir,
    ovsdb,
    bridge,
    datapath: datapath as DatapathSetting,
    logLevel: logLevel as Level,
    defaultPools,
    mtu,
    docker: dockerText === 'none' ? undefined : dockerText,
    reconcileIntervalMs: seconds('OVSNET_RECONCILE_INTERVAL', 1),
    reconcileGraceMs: seconds('OVSNET_RECONCILE_GRACE', 0),
    sparePairs: Number(spareText),
    fault,
    procSys,
    iptables,
    netnsDir: netnsDir || undefined,
    metrics,
    ovn: nbText ? { nb: nbText, bridge: ovnBridge, timeoutMs: ovnTimeoutMs, probeMs: ovnProbeMs, leaseMs: ovnLeaseMs, external, tls: tlsGiven > 0 ? tlsFiles : undefined } : undefined,
  });
}

export function describeConfig(config: Config): Record<string, unknown> {
  return {
    ...config,
    defaultPools: config.defaultPools.map((p) => `${formatCidr(p.base)}:${p.size}`),
    fault: config.fault ? `${config.fault.call}:${config.fault.point}` : undefined,
    metrics: config.metrics ? `${config.metrics.host}:${config.metrics.port}` : undefined,
    ovn: config.ovn ? `${config.ovn.nb} (bridge ${config.ovn.bridge}${config.ovn.external ? `, external ${describeExternal(config.ovn.external)}` : ''})` : 'off',
  };
}
