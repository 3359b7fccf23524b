/**
 * Checks the end-to-end tests share: start containers, ping, TCP, and an
 * audit of everything the plugin holds on a host.
 */
import assert from 'node:assert/strict';
import { TEST_IMAGE } from './harness/image.js';
import type { PluginState, SimHost } from './harness/sim-host.js';
import { waitFor } from './harness/proc.js';

export interface RunOptions {
  ip?: string;
  extra?: string[];
  command?: string[];
}

export async function runContainer(host: SimHost, name: string, network: string, options: RunOptions = {}): Promise<string> {
  const args = ['run', '-d', '--name', name, '--net', network];
  if (options.ip) args.push('--ip', options.ip);
  args.push(...(options.extra ?? []), TEST_IMAGE, ...(options.command ?? ['sleep', '1d']));
  return (await host.docker(args)).stdout.trim();
}

export async function ping(host: SimHost, container: string, target: string, count = 1): Promise<boolean> {
  const tool = target.includes(':') ? 'ping6' : 'ping';
  const result = await host.docker(['exec', container, tool, '-c', String(count), '-W', '1', target], { check: false, timeoutMs: 15_000 });
  return result.exitCode === 0;
}

/** Starts an HTTP server in the container serving /etc (so /hostname answers with the container's hostname). */
export async function startHttp(host: SimHost, container: string, port = 8080): Promise<void> {
  await host.docker(['exec', '-d', container, 'httpd', '-f', '-p', String(port), '-h', '/etc']);
  await waitFor(`httpd in ${container}`, async () => {
    const local = await host.docker(['exec', container, 'timeout', '1', 'wget', '-q', '-O', '-', `http://127.0.0.1:${port}/hostname`], { check: false });
    return local.exitCode === 0;
  }, 10_000);
}

/**
 * Fetches a path over TCP from inside a container; undefined when the
 * connection fails. (busybox 1.35's `wget -T` crashes, hence `timeout`.)
 */
export async function httpGet(host: SimHost, container: string, address: string, port = 8080, path = '/hostname'): Promise<string | undefined> {
  const target = address.includes(':') ? `[${address}]` : address;
  const result = await host.docker(['exec', container, 'timeout', '3', 'wget', '-q', '-O', '-', `http://${target}:${port}${path}`], {
    check: false,
    timeoutMs: 20_000,
  });
  return result.exitCode === 0 ? result.stdout.trim() : undefined;
}

export async function inspect(host: SimHost, what: 'container' | 'network', name: string): Promise<any> {
  const { stdout } = await host.docker([what, 'inspect', name]);
  return JSON.parse(stdout)[0];
}

export async function containerAddress(host: SimHost, container: string, network: string): Promise<{ ip: string; endpointId: string; mac: string; ipv6: string }> {
  const info = await inspect(host, 'container', container);
  const settings = info.NetworkSettings.Networks[network];
  assert.ok(settings, `${container} is not on ${network}`);
  return { ip: settings.IPAddress, endpointId: settings.EndpointID, mac: settings.MacAddress, ipv6: settings.GlobalIPv6Address };
}

/** The host end of an endpoint's veth, which is its OVS port: named for the endpoint, or for the spare pair it took. */
export async function endpointPortName(host: SimHost, endpointId: string): Promise<string> {
  const mine = (await host.ownedPorts()).filter((p) => p.externalIds['ovsnet-endpoint'] === endpointId);
  assert.equal(mine.length, 1, `endpoint ${endpointId.slice(0, 12)} has exactly one OVS port`);
  assert.match(mine[0]!.name, PLUGIN_VETH);
  return mine[0]!.name;
}

export async function containerHostname(host: SimHost, container: string): Promise<string> {
  return (await host.docker(['exec', container, 'hostname'])).stdout.trim();
}

export interface Audit {
  /** OVS ports owned by the plugin, by role. */
  endpointPorts: string[];
  gatewayPorts: string[];
  /** Plugin veth ends present in the host namespace, but for the spares the plugin holds. */
  veths: string[];
  /** Veth ends the plugin made ahead of need and holds (no endpoint's; host ends parked on their bridges); each is in the host namespace. */
  spares: string[];
  endpoints: number;
  networks: number;
  pools: number;
  /** Held addresses by kind. */
  addresses: Record<string, number>;
  forwardRules: number;
  natRules: number;
  /** Aux addresses the networks reserve (held by IPAM like container addresses). */
  auxAddresses: number;
}

/** Spare veth pairs the plugin keeps per network shape by default (OVSNET_SPARE_PAIRS). */
export const SPARES_PER_SHAPE = 4;

/** Both ends of a plugin's veth pair: named for an endpoint (ovs/ovc) or made ahead as a spare (ovp/ovq). */
export const PLUGIN_VETH = /^ov[scpq][0-9a-f]{12}$/;

/**
 * The spares of the plugin's own account, each checked to be a veth pair in the host namespace whose host
 * end is a port parked on VLAN 4095 (no network's) and whose other end is no port; and no parked port
 * but theirs.
 */
function sparesOf(state: PluginState, links: Array<{ name: string; kind: string }>, ports: Array<{ name: string; tag: number | undefined; externalIds: Record<string, string> }>): string[] {
  const names = state.spares.flatMap((p) => [p.host, p.peer]).sort();
  for (const name of names) assert.ok(links.some((l) => l.name === name && l.kind === 'veth'), `spare ${name} is a veth on the host`);
  for (const { host, peer } of state.spares) {
    const port = ports.find((p) => p.name === host);
    assert.deepEqual([port?.tag, port?.externalIds['ovsnet-role']], [4095, 'spare'], `spare ${host} is a port parked on VLAN 4095`);
    assert.ok(!ports.some((p) => p.name === peer), `the other end of spare ${host} is no port`);
  }
  const parked = ports.filter((p) => p.externalIds['ovsnet-role'] === 'spare').map((p) => p.name).sort();
  assert.deepEqual(parked, state.spares.map((p) => p.host).sort(), 'no parked port but the spares the plugin holds');
  return names;
}

/** The plugin's state once its spares are settled (they are made again a moment after each start). */
async function settledState(host: SimHost): Promise<PluginState> {
  let state = await host.pluginState();
  for (let i = 0; i < 100 && state.sparesBusy; i++) {
    await new Promise((r) => setTimeout(r, 50));
    state = await host.pluginState();
  }
  assert.ok(!state.sparesBusy, 'the spares settle within 5 s');
  return state;
}

export async function audit(host: SimHost): Promise<Audit> {
  const state = await settledState(host);
  const ports = await host.ownedPorts();
  const links = await host.links();
  const spares = sparesOf(state, links, ports);
  const addresses: Record<string, number> = {};
  for (const a of state.addresses) addresses[a.kind] = (addresses[a.kind] ?? 0) + 1;
  return {
    endpointPorts: ports.filter((p) => p.externalIds['ovsnet-role'] === 'endpoint').map((p) => p.name).sort(),
    gatewayPorts: ports.filter((p) => p.externalIds['ovsnet-role'] === 'gateway').map((p) => p.name).sort(),
    veths: links.filter((l) => l.kind === 'veth' && PLUGIN_VETH.test(l.name) && !spares.includes(l.name)).map((l) => l.name).sort(),
    spares,
    endpoints: state.endpoints.length,
    networks: state.networks.length,
    pools: state.pools.length,
    addresses,
    forwardRules: (await host.chainRules('filter', 'OVSNET-FORWARD')).length,
    natRules: (await host.chainRules('nat', 'OVSNET-POSTROUTING')).length,
    auxAddresses: state.networks.reduce((n, net) => n + net.ipv4.reduce((m, s) => m + Object.keys(s.auxAddresses ?? {}).length, 0), 0),
  };
}

/** Asserts that the host holds exactly what `endpoints` running containers need, nothing more. */
export async function assertAccountedFor(host: SimHost, expected: { endpoints: number; networks: number }): Promise<Audit> {
  const a = await audit(host);
  assert.equal(a.endpoints, expected.endpoints, `endpoints in the store: ${JSON.stringify(a)}`);
  assert.equal(a.endpointPorts.length, expected.endpoints, `endpoint OVS ports: ${a.endpointPorts.join(', ')}`);
  assert.equal(a.veths.length, expected.endpoints, `plugin veths in the host namespace: ${a.veths.join(', ')}`);
  assert.equal(a.addresses.address ?? 0, expected.endpoints + a.auxAddresses, `addresses held: ${JSON.stringify(a.addresses)}`);
  assert.equal(a.networks, expected.networks, 'networks in the store');
  assert.ok(a.spares.length <= 2 * SPARES_PER_SHAPE * expected.networks, `spares held (at most ${SPARES_PER_SHAPE} pairs per network shape): ${a.spares.join(', ')}`);
  return a;
}

/**
 * Asserts that a failed docker command shows the plugin's own answer, whatever each engine wraps
 * around it (Docker 28 prefixes "failed to set up container networking:", for one).
 */
export function assertPluginSaid(stderr: string, call: string, message: string | RegExp): void {
  const said = stderr.indexOf(`${call}: `);
  assert.ok(said >= 0, `the plugin's answer to ${call} is shown: ${stderr}`);
  const text = stderr.slice(said + call.length + 2).split('\n')[0]!.trim();
  if (typeof message === 'string') assert.equal(text, message);
  else assert.match(text, message);
}

export async function dockerError(host: SimHost, args: string[]): Promise<string> {
  const result = await host.docker(args, { check: false });
  assert.notEqual(result.exitCode, 0, `expected "docker ${args.join(' ')}" to fail, but it succeeded: ${result.stdout}`);
  return result.stderr.trim();
}

/**
 * A TCP server in a namespace that answers every connection with the peer
 * address it sees: tells whether traffic arrived masqueraded or routed.
 */
export async function startWhoAmI(ns: string, port: number): Promise<{ stop: () => void }> {
  const { spawn } = await import('node:child_process');
  const script = `require('net').createServer((s) => s.end(s.remoteAddress.replace('::ffff:', '') + '\\n')).listen(${port}, () => console.log('ready'))`;
  const child = spawn('nsenter', [`--net=/run/netns/${ns}`, '--', process.execPath, '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    child.stdout!.once('data', () => resolve());
    child.once('exit', (code) => reject(new Error(`whoami server exited with ${code}`)));
  });
  return { stop: () => child.kill('SIGKILL') };
}

/** Connects from a container and returns what the server said, or undefined if the connection failed. */
export async function tcpSay(host: SimHost, container: string, address: string, port: number): Promise<string | undefined> {
  const result = await host.docker(['exec', container, 'timeout', '3', 'nc', address, String(port)], { check: false, timeoutMs: 15_000 });
  return result.exitCode === 0 && result.stdout.trim() ? result.stdout.trim() : undefined;
}

/**
 * The full audit: everything the plugin holds is accounted for by what Docker
 * has, and the other way round. Networks, endpoints, OVS ports, veths, pools,
 * held addresses and firewall rules; no duplicate address.
 */
export async function assertConsistent(host: SimHost): Promise<void> {
  const state = await settledState(host);
  const ids = (await host.docker(['network', 'ls', '--no-trunc', '--filter', `driver=${host.driver}`, '--format', '{{.ID}}'])).stdout.split('\n').filter(Boolean);
  const docker: any[] = ids.length ? JSON.parse((await host.docker(['network', 'inspect', ...ids])).stdout) : [];
  const sorted = (xs: Iterable<string>) => [...xs].sort();

  assert.deepEqual(sorted(state.networks.map((n) => n.id)), sorted(ids), 'plugin networks = Docker networks of the driver');
  const dockerEndpoints = new Map<string, { ip: string; network: string }>();
  for (const n of docker) {
    for (const c of Object.values(n.Containers ?? {}) as any[]) dockerEndpoints.set(c.EndpointID, { ip: String(c.IPv4Address).split('/')[0]!, network: n.Id });
    const ips = Object.values(n.Containers ?? {}).map((c: any) => c.IPv4Address);
    assert.equal(new Set(ips).size, ips.length, `no duplicate address on ${n.Name}: ${ips.join(', ')}`);
  }
  assert.deepEqual(sorted(state.endpoints.map((e) => e.id)), sorted(dockerEndpoints.keys()), 'plugin endpoints = Docker endpoints');

  const ports = await host.ownedPorts();
  const byRole = (role: string) => sorted(ports.filter((p) => p.externalIds['ovsnet-role'] === role).map((p) => p.name));
  assert.deepEqual(byRole('endpoint'), sorted(state.endpoints.map((e) => e.hostIf)), 'an OVS port per endpoint, no other');
  assert.deepEqual(byRole('gateway'), sorted(state.networks.flatMap((n) => (n.gatewayPort ? [n.gatewayPort] : []))), 'a gateway port per nat/routed network, no other');
  const links = await host.links();
  const veths = links.filter((l) => l.kind === 'veth' && PLUGIN_VETH.test(l.name)).map((l) => l.name);
  const known = new Set([...state.endpoints.flatMap((e) => [e.hostIf, e.peerIf]), ...sparesOf(state, links, ports)]);
  assert.deepEqual(veths.filter((v) => !known.has(v)), [], 'no veth without an endpoint, but for the spares the plugin holds');
  for (const e of state.endpoints) assert.ok(veths.includes(e.hostIf), `endpoint ${e.id.slice(0, 12)} has its veth`);

  const ownIpam = docker.filter((n) => n.IPAM?.Driver === host.driver);
  assert.deepEqual(sorted(state.pools.map((p) => p.pool)), sorted(ownIpam.flatMap((n) => n.IPAM.Config.map((c: any) => c.Subnet))), 'a pool per subnet, no other');
  const expected = new Set<string>();
  for (const n of ownIpam) {
    for (const c of n.IPAM.Config) for (const a of Object.values(c.AuxiliaryAddresses ?? {})) expected.add(a as string);
    for (const c of Object.values(n.Containers ?? {}) as any[]) expected.add(String(c.IPv4Address).split('/')[0]!);
  }
  const held = state.addresses.filter((a) => a.kind !== 'gateway').map((a) => a.address);
  assert.deepEqual(sorted(held), sorted(expected), 'held addresses = containers and aux addresses');
  for (const pool of state.pools) {
    assert.ok(state.addresses.filter((a) => a.poolId === pool.id && a.kind === 'gateway').length <= 1, `one gateway in ${pool.pool}`);
  }

  const gatewayPorts = new Set(state.networks.flatMap((n) => (n.gatewayPort ? [n.gatewayPort] : [])));
  for (const rule of [...(await host.chainRules('filter', 'OVSNET-FORWARD')), ...(await host.chainRules('nat', 'OVSNET-POSTROUTING'))]) {
    const port = /ovsgw[0-9a-z]{10}/.exec(rule)?.[0];
    assert.ok(port && gatewayPorts.has(port), `firewall rule of a live network: ${rule}`);
  }
}

/**
 * Bytes per second of a TCP stream of `megabytes` from container `from` to
 * container `to` (which listens at `address`), timed from the sender's start
 * to the receiver's end on the host's clock (/proc/uptime, 10 ms steps).
 */
export async function tcpStream(host: SimHost, from: string, to: string, address: string, megabytes: number): Promise<number> {
  const sh = (container: string, script: string, check = false) => host.docker(['exec', container, 'sh', '-c', script], { check, timeoutMs: 120_000 });
  const port = 5000 + Math.floor(Math.random() * 1000);
  await host.docker(['exec', '-d', to, 'sh', '-c', `rm -f /tmp/end; nc -l -p ${port} | wc -c > /tmp/bytes; cut -d' ' -f1 /proc/uptime > /tmp/end`]);
  await waitFor(`${to} to listen`, async () => (await sh(to, `netstat -ltn | grep -q ':${port} '`)).exitCode === 0, 10_000, 100);
  const sent = await sh(from, `cut -d' ' -f1 /proc/uptime; nc ${address} ${port} -e dd if=/dev/zero bs=65536 count=${megabytes * 16} 2>/dev/null`, true);
  const start = Number(sent.stdout.trim().split('\n')[0]);
  await waitFor(`${to} to receive the stream`, async () => (await sh(to, 'test -s /tmp/end')).exitCode === 0, 120_000, 100);
  const bytes = Number((await sh(to, 'cat /tmp/bytes', true)).stdout.trim());
  const end = Number((await sh(to, 'cat /tmp/end', true)).stdout.trim());
  assert.equal(bytes, megabytes * 1024 * 1024, 'the whole stream arrived');
  return bytes / (end - start);
}
