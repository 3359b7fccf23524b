/**
 * OVN routers end to end on three simulated hosts: two gateway chassis (gw1
 * active, gw2 standby) cabled to an outside network, and a worker (wk3)
 * that is not. Networks on one router reach each other across hosts;
 * networks on another router do not, either way; a container on the worker
 * reaches the outside world through SNAT on the active gateway; an
 * --internal network reaches its router's other networks only; stopping
 * the active gateway's ovn-controller moves the gateway, and traffic
 * resumes (the time it took is printed).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { OvnCluster, OVN_TOOLS } from './harness/ovn.js';
import { OutsideWorld } from './harness/ovn-outside.js';
import { requireTools, waitFor } from './harness/proc.js';
import { REPO_ROOT, SimHost, tagged } from './harness/sim-host.js';
import { Underlay } from './harness/underlay.js';
import { assertConsistent, assertPluginSaid, containerAddress, dockerError, httpGet, inspect, ping, runContainer, startHttp, startWhoAmI, tcpSay } from './support.js';

const NAMES = ['gw1', 'gw2', 'wk3'] as const;
const ADDR: Record<string, string> = { gw1: '10.250.5.1', gw2: '10.250.5.2', wk3: '10.250.5.3' };
const OUTSIDE = { physnet: 'physnet', nexthop: '198.51.100.1/24', farAddress: '203.0.113.10' };
const WHOAMI_PORT = 7070;
const CLI = `${REPO_ROOT}/dist/src/cli/main.js`;
const PLUGIN_ENV = {
  OVSNET_OVN_EXTERNAL: 'physnet,198.51.100.0/24,198.51.100.1,198.51.100.100-198.51.100.150',
  OVSNET_OVN_GATEWAYS: `${tagged('gw1')}:20,${tagged('gw2')}:10`,
  OVSNET_RECONCILE_INTERVAL: '2',
  OVSNET_RECONCILE_GRACE: '3',
};

describe('OVN routers across three hosts, with an outside network on two gateways', () => {
  let underlay: Underlay;
  let cluster: OvnCluster;
  let outside: OutsideWorld;
  let whoami: { stop: () => void } | undefined;
  const hosts: SimHost[] = [];
  const gw1 = () => hosts[0]!;
  const gw2 = () => hosts[1]!;
  const wk3 = () => hosts[2]!;

  /** The same network on every host, as an operator creates it. */
  async function network(name: string, subnet: string, opts: string[], extra: string[] = []): Promise<void> {
    const gateway = subnet.replace(/0\/24$/, '1');
    for (const h of hosts) {
      await h.docker(['network', 'create', '-d', h.driver, '--ipam-driver', h.driver, '--subnet', subnet, '--gateway', gateway, '-o', 'mode=ovn', ...opts.flatMap((o) => ['-o', o]), ...extra, name]);
    }
  }

  /** A router's outside address, from the northbound database. */
  async function outsideAddress(router: string): Promise<string> {
    const networks = (await cluster.nbctl(['--bare', '--columns=networks', 'find', 'Logical_Router_Port', `name=ovsnet-gw-${router}`])).stdout.trim();
    assert.match(networks, /^198\.51\.100\.\d+\/24$/, `router ${router} has an outside address`);
    const address = networks.split('/')[0]!;
    const last = Number(address.split('.')[3]);
    assert.ok(last >= 100 && last <= 150, `${address} is in the routers' range`);
    return address;
  }

  const reachOutside = (h: SimHost, container: string) => tcpSay(h, container, OUTSIDE.farAddress, WHOAMI_PORT);
  const cliEnv = (h: SimHost) => ({ OVSNET_SOCKET: h.socket, DOCKER_HOST: h.dockerHost, OVSNET_STATE_DIR: `${h.dir}/state`, OVSNET_OVSDB: h.ovsdb, OVSNET_OVN_NB: cluster.nbRemotes });

  before(async () => {
    await requireTools([...OVN_TOOLS, 'ethtool']);
    underlay = await Underlay.create('l3-ul');
    outside = await OutsideWorld.create('l3-out', OUTSIDE);
    for (const name of NAMES) {
      const h = await SimHost.start({ name, plugin: false });
      hosts.push(h);
      await underlay.attach(h, `${ADDR[name]}/24`);
    }
    await outside.cable(gw1());
    await outside.cable(gw2());
    cluster = await OvnCluster.start(NAMES.map((name, i) => ({ host: hosts[i]!, address: ADDR[name]! })), { databases: 1 });
    for (const h of hosts) await h.startPlugin({ ...PLUGIN_ENV, OVSNET_OVN_NB: cluster.nbRemotes });
    whoami = await startWhoAmI(outside.ns, WHOAMI_PORT);
  });
  after(async () => {
    whoami?.stop();
    for (const h of hosts) await h.stop().catch(() => {});
    await outside?.destroy();
    await underlay?.destroy();
  });

  it('routes between two subnets of one router across hosts (ping, TCP); the router port is the gateway, with no docker_gwbridge', async () => {
    await network('front', '10.80.0.0/24', ['ovn_router=r1']);
    await network('back', '10.81.0.0/24', ['ovn_router=r1', 'gateway_mode=routed']);
    await runContainer(wk3(), 'fc', 'front');
    await runContainer(gw2(), 'bc', 'back');
    const [f, b] = [await containerAddress(wk3(), 'fc', 'front'), await containerAddress(gw2(), 'bc', 'back')];
    assert.ok(await ping(wk3(), 'fc', b.ip, 3), 'front on wk3 pings back on gw2');
    assert.ok(await ping(gw2(), 'bc', f.ip, 3), 'and the other way');
    await startHttp(gw2(), 'bc');
    assert.equal(await httpGet(wk3(), 'fc', b.ip), (await gw2().docker(['exec', 'bc', 'hostname'])).stdout.trim(), 'TCP across subnets and hosts');
    const routes = (await wk3().docker(['exec', 'fc', 'ip', 'route'])).stdout;
    assert.match(routes, /^default via 10\.80\.0\.1 dev eth0/m, "the router's port is the default gateway");
    assert.deepEqual(Object.keys((await inspect(wk3(), 'container', 'fc')).NetworkSettings.Networks), ['front'], 'no docker_gwbridge');
    const ports = (await cluster.nbctl(['--bare', '--columns=name', 'find', 'Logical_Router_Port', 'name!=""'])).stdout.split('\n').filter(Boolean).sort();
    assert.deepEqual(ports, ['ovsnet-gw-r1', 'ovsnet-rp-10.80.0.0_24', 'ovsnet-rp-10.81.0.0_24'], 'one router, made once for six creates');
    const published = await dockerError(wk3(), ['run', '-d', '--name', 'pub', '--net', 'front', '-p', '8080:80', 'local/busybox', 'sleep', '1d']);
    assertPluginSaid(published, 'NetworkDriver.ProgramExternalConnectivity', /^publishing ports \(-p, -P\) is not supported on OVN networks: /);
    await wk3().docker(['rm', '-f', 'pub']);
    for (const h of hosts) await assertConsistent(h);
  });

  it("SNAT: a container on a host that is not a gateway reaches the outside world as its router's outside address; a routed network with its own", async () => {
    const address = await outsideAddress('r1');
    assert.equal(await reachOutside(wk3(), 'fc'), address, 'seen outside as the router');
    const nat = (await cluster.nbctl(['lr-nat-list', 'r1'])).stdout;
    assert.match(nat, new RegExp(`snat\\s+${address.replace(/\./g, '\\.')}\\s+10\\.80\\.0\\.0/24`));
    assert.doesNotMatch(nat, /10\.81\.0\.0/, 'no SNAT for the routed network');
    // The outside world routes the routed subnet to the router: its containers are seen with their own address.
    await outside.route('10.81.0.0/24', address);
    const b = await containerAddress(gw2(), 'bc', 'back');
    assert.equal(await reachOutside(gw2(), 'bc'), b.ip, 'routed: its own address');
  });

  it("ovsnet trace: across hosts through the router it names both hosts; to the outside, the SNAT address and the active gateway chassis; a spoofed source, OVN's port security", async () => {
    const trace = async (h: SimHost, ...args: string[]) => {
      const r = await h.exec(process.execPath, [CLI, 'trace', ...args, '--json'], { check: false, env: cliEnv(h) });
      assert.ok(r.stdout.startsWith('{'), `trace ${args.join(' ')}: exit ${r.exitCode}: ${r.stderr}`);
      return { exit: r.exitCode, report: JSON.parse(r.stdout) };
    };
    const b = await containerAddress(gw2(), 'bc', 'back');
    const across = await trace(wk3(), 'fc', `${b.ip}:80`);
    assert.equal(across.exit, 0);
    assert.equal(across.report.verdict.outcome, 'delivered', JSON.stringify(across.report.steps));
    assert.equal(across.report.from.host, wk3().name, 'the source on this host');
    assert.match(across.report.verdict.says, new RegExp(`^delivered to the container ${b.ip.replace(/\./g, '\\.')} of host ${gw2().name} \\(logical port `), 'the destination on its host');
    const path = across.report.steps.find((s: any) => s.at === 'ovn' && s.detail.datapaths);
    assert.equal(path.detail.datapaths.length, 3, 'switch, router, switch');
    assert.deepEqual([path.detail.datapaths[0], path.detail.datapaths[2]], ['ovsnet-10.80.0.0_24', 'ovsnet-10.81.0.0_24']);
    assert.ok(across.report.steps.some((s: any) => s.says.includes(`through the tunnel from ${wk3().name} to ${gw2().name}`)), JSON.stringify(across.report.steps));

    // As an operator reads it (printed for docs/ovn.md).
    for (const args of [['fc', `${b.ip}:80`], ['fc', `${OUTSIDE.farAddress}:${WHOAMI_PORT}`]]) {
      const text = await wk3().exec(process.execPath, [CLI, 'trace', ...args], { env: cliEnv(wk3()) });
      for (const line of text.stdout.split('\n')) console.log(`# ${line}`);
    }
    const out = await trace(wk3(), 'fc', `${OUTSIDE.farAddress}:${WHOAMI_PORT}`);
    assert.equal(out.report.verdict.outcome, 'leaves', JSON.stringify(out.report.steps));
    const gateway = out.report.steps.find((s: any) => s.detail.gatewayPort);
    assert.equal(gateway.detail.chassis, await cluster.boundChassis('cr-ovsnet-gw-r1'), 'the active gateway chassis, as the southbound database binds it');
    assert.equal(out.report.steps.find((s: any) => s.detail.snat)?.detail.snat, await outsideAddress('r1'), "SNAT to the router's outside address");

    const spoofed = await trace(wk3(), 'fc', b.ip, '--source', '10.80.0.250');
    assert.equal(spoofed.exit, 1);
    assert.match(spoofed.report.verdict.says, /^dropped by OVN in ingress stage ls_in_\w*port_sec\w* of .*: OVN's port security/);

    // ovsnet graph from the same host: the other host's container, and which gateway chassis is active.
    const t = JSON.parse((await wk3().exec(process.execPath, [CLI, 'graph', '--format', 'json'], { env: cliEnv(wk3()) })).stdout);
    assert.ok(t.remote.some((r: any) => r.address === b.ip && r.host === gw2().name), JSON.stringify(t.remote));
    assert.equal(t.gateways.r1.active.chassis, await cluster.boundChassis('cr-ovsnet-gw-r1'));
    assert.deepEqual(t.gateways.r1.chassis.map((c: any) => c.chassis), [tagged('gw1'), tagged('gw2')], 'highest priority first');
  });

  it('a SNAT rule deleted by hand: doctor names it, and the reconciler puts it back', async () => {
    // Every host of the network would repair it: their plugins are stopped first, so that doctor sees it.
    for (const h of hosts) await h.stopPlugin();
    try {
      await cluster.nbctl(['lr-nat-del', 'r1', 'snat', '10.80.0.0/24']);
      const report = JSON.parse((await wk3().exec(process.execPath, [CLI, 'doctor', '--json'], { check: false, env: cliEnv(wk3()) })).stdout) as { drift: Array<{ kind: string; subject: string; fix: string }> };
      assert.deepEqual(report.drift.filter((d) => d.kind.startsWith('ovn-')).map((d) => [d.kind, d.subject, d.fix]), [['ovn-router-differs', 'r1', 'ovsnet reconcile']]);
    } finally {
      for (const h of hosts) await h.startPlugin();
    }
    await waitFor('the SNAT rule back', async () => /10\.80\.0\.0\/24/.test((await cluster.nbctl(['lr-nat-list', 'r1'])).stdout), 20_000, 300);
    assert.equal(await reachOutside(wk3(), 'fc'), await outsideAddress('r1'));
  });

  it("--internal on a router: reaches the router's other networks, never the outside", async () => {
    await network('db', '10.82.0.0/24', ['ovn_router=r1'], ['--internal']);
    await runContainer(gw1(), 'dc', 'db');
    const f = await containerAddress(wk3(), 'fc', 'front');
    assert.ok(await ping(gw1(), 'dc', f.ip, 3), 'db reaches front');
    await startHttp(gw1(), 'dc');
    assert.ok(await httpGet(wk3(), 'fc', (await containerAddress(gw1(), 'dc', 'db')).ip), 'front reaches db over TCP');
    // Even where the outside world routes the subnet back (as for a routed network), nothing leaves.
    await outside.route('10.82.0.0/24', await outsideAddress('r1'));
    assert.equal(await reachOutside(gw1(), 'dc'), undefined, 'db does not reach the outside');
    assert.equal(await ping(gw1(), 'dc', OUTSIDE.farAddress, 2), false);
  });

  it('networks on different routers do not reach each other, either way, by ping or TCP', async () => {
    await network('other', '10.90.0.0/24', ['ovn_router=r2']);
    await runContainer(wk3(), 'oc', 'other');
    await startHttp(wk3(), 'oc');
    await startHttp(wk3(), 'fc');
    const [f, o] = [await containerAddress(wk3(), 'fc', 'front'), await containerAddress(wk3(), 'oc', 'other')];
    assert.notEqual(await outsideAddress('r2'), await outsideAddress('r1'), 'each router its own outside address');
    assert.ok(await reachOutside(wk3(), 'oc'), 'r2 has its own way out');
    assert.equal(await ping(wk3(), 'oc', f.ip, 2), false, 'other -> front (ping), on the same host');
    assert.equal(await ping(wk3(), 'fc', o.ip, 2), false, 'front -> other (ping)');
    assert.equal(await httpGet(wk3(), 'oc', f.ip), undefined, 'other -> front (TCP)');
    assert.equal(await httpGet(wk3(), 'fc', o.ip), undefined, 'front -> other (TCP)');
    assert.equal(await httpGet(gw2(), 'bc', o.ip), undefined, 'back (routed) -> other (TCP)');
    assert.ok(await httpGet(wk3(), 'oc', o.ip), "other's server answers on its own network");
    assert.ok(await httpGet(gw2(), 'bc', f.ip), "and front's to its router's other network");
  });

  it('the active gateway stopped: the gateway moves to the standby chassis, and traffic resumes', async () => {
    const gatewayPort = 'cr-ovsnet-gw-r1';
    assert.equal(await waitFor('the active gateway', () => cluster.boundChassis(gatewayPort), 20_000, 200), tagged('gw1'), 'the highest priority is active');
    assert.ok(await reachOutside(wk3(), 'fc'));
    const stopped = Date.now();
    await cluster.exitController(0);
    await waitFor('traffic out again', () => reachOutside(wk3(), 'fc'), 60_000, 0);
    const took = Date.now() - stopped;
    console.log(`# gateway failover: traffic resumed ${took} ms after the active gateway's ovn-controller stopped`);
    assert.equal(await cluster.boundChassis(gatewayPort), tagged('gw2'), 'the standby took over');
    await cluster.startController(0);
    await waitFor('gw1 to be active again', async () => (await cluster.boundChassis(gatewayPort)) === tagged('gw1'), 60_000, 300);
    await waitFor('traffic out through gw1', () => reachOutside(wk3(), 'fc'), 30_000, 200);
  });

  it('the last network off a router removes it, with its outside address', async () => {
    for (const h of hosts) await h.docker(['rm', '-f', 'fc', 'bc', 'dc', 'oc'], { check: false });
    for (const name of ['front', 'back', 'db']) for (const h of hosts) await h.docker(['network', 'rm', name]);
    assert.deepEqual((await cluster.nbctl(['--bare', '--columns=name', 'find', 'Logical_Router', 'external_ids:ovsnet-owner=ovsnet'])).stdout.trim(), 'r2');
    for (const h of hosts) await h.docker(['network', 'rm', 'other']);
    assert.equal((await cluster.nbctl(['--bare', '--columns=name', 'find', 'Logical_Router', 'external_ids:ovsnet-owner=ovsnet'])).stdout.trim(), '');
    assert.equal((await cluster.nbctl(['--bare', '--columns=name', 'list', 'HA_Chassis_Group'])).stdout.trim(), '');
    assert.equal((await cluster.nbctl(['--bare', '--columns=_uuid', 'list', 'NAT'])).stdout.trim(), '');
    const left = (await cluster.nbctl(['--bare', '--columns=name', 'find', 'Logical_Switch_Port', 'external_ids:ovsnet-owner=ovsnet'])).stdout.split('\n').filter(Boolean);
    assert.deepEqual(left, ['ovsnet-localnet-physnet'], 'only the outside switch stays, for the next router');
    for (const h of hosts) await assertConsistent(h);
  });
});
