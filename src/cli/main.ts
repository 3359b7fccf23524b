#!/usr/bin/env node
/**
 * ovsnet: the operator's command line for the ovs plugin. It reads the
 * plugin's state over its socket and never disturbs it; only `peers` and
 * `reconcile` change anything, through the plugin.
 */
import { existsSync, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CliError, PluginClient, dockerClient, resolveNetwork } from './client.js';
import { doctor, doctorLines } from './doctor.js';
import { toDot, toSvg, topology } from './graph.js';
import { TRACE_USAGE, runTrace, traceLines } from './trace.js';
import type { ForgetReport } from '../driver/ovn-forget.js';
import { dockerNames, endpointRows, networkRows, table } from './status.js';

const DEFAULT_SOCKET = '/run/docker/plugins/ovs.sock';

const USAGE = `usage: ovsnet <command> [--json] [--socket PATH]
commands:
  networks                             networks: mode, VLAN/VNI, bridge, gateway mode, pool usage, guard (or what weakens it)
  endpoints                            containers on them: name, address, MAC, OVS port, tag
  doctor                               every difference between the plugin's records, OVS, the kernel
                                       and Docker, with the command that fixes it (exit 1 on drift)
  reconcile                            make the plugin reconcile now
  graph [--format svg|dot|json]        a picture of this host's networks: bridges, networks by kind, containers
                                       with their addresses and ports, gateway ports, uplinks, tunnel peers,
                                       OVN routers and the other hosts on each OVN switch (SVG needs graphviz)
  trace CONTAINER DESTINATION[:PORT[/tcp|udp|icmp]]
        [--network N] [--source IP] [--source-mac MAC] [--vlan VID] [--icmp-type N]
                                       the path a packet from the container takes and its verdict: the guard
                                       flow that admits or drops it, where OVS sends it, the host's route and
                                       the plugin's iptables rules, OVN's logical path and hosts (DESTINATION:
                                       a container, an address, or outside; exit 1 when it is dropped)
  peers NETWORK                        the tunnel peers of an overlay network
  peers NETWORK set|add|remove IP...   change them (without recreating the network)
  ovn forget-host NAME [--idle SECONDS]
                                       release the addresses, switch listings and name of an OVN host
                                       gone for good (refused while it is a chassis of the southbound
                                       database, or showed a sign of life within --idle seconds,
                                       default OVSNET_OVN_HOST_LEASE: 900)
options:
  --json          machine-readable output
  --socket PATH   plugin socket (default $OVSNET_SOCKET, ${DEFAULT_SOCKET}, or a managed plugin's
                  /run/docker/plugins/<id>/ovs.sock)`;

interface Parsed {
  socket: string;
  json: boolean;
  args: string[];
  /** ovn forget-host --idle, in seconds. */
  idle: number | undefined;
  /** graph --format. */
  format: 'svg' | 'dot' | 'json';
  /** trace's options. */
  trace: { network?: string; source?: string; sourceMac?: string; vlan?: number; icmpType?: number };
}

/** The managed plugin's socket lives in a directory named after its id. */
function findSocket(env: NodeJS.ProcessEnv): string {
  if (env.OVSNET_SOCKET) return env.OVSNET_SOCKET;
  if (existsSync(DEFAULT_SOCKET)) return DEFAULT_SOCKET;
  const dir = path.dirname(DEFAULT_SOCKET);
  const managed = existsSync(dir) ? readdirSync(dir).map((d) => path.join(dir, d, 'ovs.sock')).filter((p) => existsSync(p)) : [];
  return managed.length === 1 ? managed[0]! : DEFAULT_SOCKET;
}

function parse(argv: readonly string[], env: NodeJS.ProcessEnv): Parsed {
  let socket: string | undefined;
  let json = false;
  let idle: number | undefined;
  let format: Parsed['format'] = 'svg';
  const trace: Parsed['trace'] = {};
  const args: string[] = [];
  const value = (arg: string, name: string, i: number): [string, number] => {
    if (arg.startsWith(`${name}=`)) return [arg.slice(name.length + 1), i];
    const text = argv[i + 1];
    if (text === undefined) throw new CliError(`${name} needs a value`, 2);
    return [text, i + 1];
  };
  const number = (text: string, name: string, high: number): number => {
    if (!/^\d+$/.test(text) || Number(text) > high) throw new CliError(`${name} is a whole number from 0 to ${high} (given: ${text})`, 2);
    return Number(text);
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--socket') {
      socket = argv[++i];
      if (!socket) throw new CliError('--socket needs a path', 2);
    } else if (arg.startsWith('--socket=')) {
      socket = arg.slice('--socket='.length);
    } else if (arg === '--idle' || arg.startsWith('--idle=')) {
      const text = arg === '--idle' ? argv[++i] : arg.slice('--idle='.length);
      if (!text || !/^\d+$/.test(text)) throw new CliError(`--idle needs a whole number of seconds, 0 or more (given: ${text ?? 'nothing'})`, 2);
      idle = Number(text);
    } else if (arg === '--format' || arg.startsWith('--format=')) {
      const text = arg === '--format' ? argv[++i] : arg.slice('--format='.length);
      if (text !== 'svg' && text !== 'dot' && text !== 'json') throw new CliError(`--format is svg, dot or json (given: ${text ?? 'nothing'})`, 2);
      format = text;
    } else if (/^--(network|source|source-mac|vlan|icmp-type)(=|$)/.test(arg)) {
      const name = arg.split('=')[0]!;
      let text: string;
      [text, i] = value(arg, name, i);
      if (name === '--network') trace.network = text;
      else if (name === '--source') trace.source = text;
      else if (name === '--source-mac') trace.sourceMac = text;
      else if (name === '--vlan') trace.vlan = number(text, name, 4095);
      else trace.icmpType = number(text, name, 255);
    } else if (arg === '--json') {
      json = true;
    } else if (arg === '-h' || arg === '--help') {
      throw new CliError(USAGE, 0);
    } else if (arg.startsWith('-')) {
      throw new CliError(`unknown option ${arg}\n${USAGE}`, 2);
    } else {
      args.push(arg);
    }
  }
  return { socket: socket ?? findSocket(env), json, args, idle, format, trace };
}

type Out = (line: string) => void;

async function peers(client: PluginClient, env: NodeJS.ProcessEnv, args: string[], json: boolean, out: Out): Promise<void> {
  const [ref, action, ...values] = args;
  if (!ref) throw new CliError(`ovsnet peers needs a network\n${USAGE}`, 2);
  const network = await resolveNetwork(await client.state(), dockerClient(env), ref);
  if (network.spec.mode !== 'vxlan' && network.spec.mode !== 'gre') throw new CliError(`network ${ref} is a ${network.spec.mode} network; only overlays (mode=vxlan or gre) have peers`);
  const current = network.spec.peers ?? [];
  const given = values.flatMap((v) => v.split(',')).map((v) => v.trim()).filter((v) => v);
  let wanted: string[];
  switch (action) {
    case undefined:
      if (json) out(JSON.stringify({ network: network.id, peers: current }));
      else for (const peer of current) out(peer);
      return;
    case 'set':
      wanted = given;
      break;
    case 'add':
      if (given.length === 0) throw new CliError('ovsnet peers NETWORK add needs at least one address', 2);
      wanted = [...current, ...given];
      break;
    case 'remove': {
      if (given.length === 0) throw new CliError('ovsnet peers NETWORK remove needs at least one address', 2);
      const unknown = given.filter((g) => !current.includes(g));
      if (unknown.length > 0) throw new CliError(`not a peer of ${ref}: ${unknown.join(', ')} (its peers: ${current.join(', ') || 'none'})`);
      wanted = current.filter((p) => !given.includes(p));
      break;
    }
    default:
      throw new CliError(`unknown action "${action}"; valid: set, add, remove\n${USAGE}`, 2);
  }
  const res = await client.request('PUT', `/ovsnet/networks/${network.id}/peers`, { Peers: wanted });
  if (res.status !== 200) throw new CliError(`the plugin refused: ${res.body?.Err ?? JSON.stringify(res.body)}`);
  if (json) out(JSON.stringify({ network: network.id, peers: res.body.Peers }));
  else for (const peer of res.body.Peers as string[]) out(peer);
}

export async function runCli(argv: readonly string[], env: NodeJS.ProcessEnv, out: Out): Promise<number> {
  const { socket, json, args, idle, format, trace } = parse(argv, env);
  const [command, ...rest] = args;
  const client = new PluginClient(socket);
  switch (command) {
    case 'networks': {
      const rows = networkRows(await client.state({ ovn: true }), (await dockerNames(dockerClient(env))).networks);
      if (json) return out(JSON.stringify(rows, null, 2)), 0;
      const cells = rows.map((r) => [
        r.name || '-',
        r.id.slice(0, 12),
        r.mode,
        r.segment,
        r.bridge,
        r.gatewayMode,
        String(r.mtu),
        r.subnets.map((s) => `${s.subnet}${s.used === null ? '' : ` ${s.used}/${s.size}`}`).join(' '),
        r.weakened.join(',') || 'full',
        r.mode === 'vlan' ? (r.uplink ?? '-') : r.mode === 'ovn' ? `hosts: ${r.hosts?.join(',') ?? '(northbound database unreachable)'}` : r.peers.join(',') || '-',
      ]);
      for (const line of table(['NAME', 'ID', 'MODE', 'SEGMENT', 'BRIDGE', 'GATEWAY', 'MTU', 'SUBNETS (USED/SIZE)', 'GUARD', 'UPLINK/PEERS'], cells)) out(line);
      return 0;
    }
    case 'endpoints': {
      const rows = endpointRows(await client.state(), await dockerNames(dockerClient(env)));
      if (json) return out(JSON.stringify(rows, null, 2)), 0;
      const cells = rows.map((r) => [r.container || '-', r.containerId.slice(0, 12) || '-', r.network, r.address || r.addressIpv6, r.mac, r.port, r.tag === null ? '-' : String(r.tag), r.published.join(', ') || '-']);
      for (const line of table(['CONTAINER', 'CONTAINER ID', 'NETWORK', 'ADDRESS', 'MAC', 'OVS PORT', 'TAG', 'PUBLISHED'], cells)) out(line);
      return 0;
    }
    case 'doctor': {
      const report = await doctor(client, env);
      if (json) out(JSON.stringify(report, null, 2));
      else for (const line of doctorLines(report)) out(line);
      return report.drift.length === 0 && report.engine.length === 0 ? 0 : 1;
    }
    case 'reconcile': {
      const res = await client.request('POST', '/ovsnet/reconcile');
      if (res.status !== 200) throw new CliError(`the plugin answered ${res.status}: ${JSON.stringify(res.body)}`);
      const changes = res.body.Changes as Record<string, number>;
      if (json) out(JSON.stringify(changes));
      else out(Object.keys(changes).length === 0 ? 'nothing to change' : Object.entries(changes).map(([k, n]) => `${k}: ${n}`).join('\n'));
      return 0;
    }
    case 'peers':
      await peers(client, env, rest, json, out);
      return 0;
    case 'graph': {
      if (rest.length > 0) throw new CliError(`ovsnet graph takes no arguments (given: ${rest.join(' ')})\n${USAGE}`, 2);
      const t = topology(await client.state({ ovn: true, picture: true }), await dockerNames(dockerClient(env)), os.hostname());
      if (json || format === 'json') return out(JSON.stringify(t, null, 2)), 0;
      const dot = toDot(t);
      out(format === 'dot' ? dot.trimEnd() : (await toSvg(dot)).trimEnd());
      return 0;
    }
    case 'trace': {
      const [container, destination, ...extra] = rest;
      if (!container || !destination || extra.length > 0) throw new CliError(TRACE_USAGE, 2);
      const names = await dockerNames(dockerClient(env));
      const state = await client.state();
      const report = await runTrace(client, state, names, { container, destination, ...trace });
      // The Docker names of the plugin's networks, which the report gives by id.
      if (json) out(JSON.stringify({ ...report, networks: Object.fromEntries([...names.networks].filter(([id]) => state.networks.some((n) => n.id === id))) }, null, 2));
      else for (const line of traceLines(report, names.networks)) out(line);
      return report.verdict.outcome === 'dropped' ? 1 : 0;
    }
    case 'ovn': {
      const [action, name, ...extra] = rest;
      if (action !== 'forget-host' || !name || extra.length > 0) throw new CliError(`usage: ovsnet ovn forget-host NAME [--idle SECONDS]\n${USAGE}`, 2);
      const res = await client.request('POST', '/ovsnet/ovn/forget-host', { Chassis: name, ...(idle === undefined ? {} : { IdleSeconds: idle }) });
      if (res.status !== 200) throw new CliError(`the plugin refused: ${res.body?.Err ?? JSON.stringify(res.body)}`);
      const report = res.body as ForgetReport;
      if (json) return out(JSON.stringify(report, null, 2)), 0;
      out(`forgot host ${report.hostname} (chassis ${report.chassis}): released ${report.released.length} address${report.released.length === 1 ? '' : 'es'}${report.released.length ? ` (${report.released.join(', ')})` : ''}; taken off ${report.unlisted.length} OVN switch${report.unlisted.length === 1 ? '' : 'es'}${report.unlisted.length ? ` (${report.unlisted.join(', ')})` : ''}; ${report.registration ? 'its name is free' : 'its name was not registered, or was left (below)'}`);
      for (const k of report.kept) out(`left alone: ${k}`);
      return report.kept.length === 0 ? 0 : 1;
    }
    case undefined:
      throw new CliError(USAGE, 2);
    default:
      throw new CliError(`unknown command "${command}"\n${USAGE}`, 2);
  }
}

runCli(process.argv.slice(2), process.env, (line) => process.stdout.write(line + '\n')).then(
  (code) => process.exit(code),
  (err) => {
    const code = err instanceof CliError ? err.exitCode : 1;
    (code === 0 ? process.stdout : process.stderr).write(`${err instanceof CliError ? err.message : (err as Error).stack}\n`);
    process.exit(code);
  },
);
