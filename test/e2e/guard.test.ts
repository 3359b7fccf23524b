/**
 * The guard's flows and meters as the plugin keeps them, on a real bridge with
 * real containers: marked as the plugin's, reported by doctor when deleted by
 * hand or lost to an ovs-vswitchd restart, put back, gone with their
 * container; a rate limit is a meter that drops what a container sends above
 * it, and none is on an unlimited container. (What the guard stops is the
 * attack suite's, attacks.test.ts; how fast a limited stream runs is
 * bench/guard.ts's.)
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { BRIDGE_FLOWS_KEY, cookieMatches, parseFlowCookies, portCookiePrefix } from '../../src/domain/flows.js';
import { waitFor } from './harness/proc.js';
import { SimHost } from './harness/sim-host.js';
import { assertPluginSaid, containerAddress, endpointPortName, ping, runContainer, tcpStream } from './support.js';

const OWNED = 'cookie=0x6f76000000000000/0xffff000000000000';
/** The bridge's own base flow (priority 1, NORMAL) is the plugin's too, and no port's. */
const BASE = portCookiePrefix(BRIDGE_FLOWS_KEY);

describe('anti-spoofing and rate limits', () => {
  let host: SimHost;

  const cli = (args: string[], check = true) => host.ovsnet(args, { check });
  /** The plugin's flows of container ports (its base flow apart). */
  const ownedFlows = async () => parseFlowCookies((await host.ofctl(['dump-flows', 'ovs0', OWNED])).stdout).filter((c) => !cookieMatches(c, BASE));
  const baseFlows = async () => parseFlowCookies((await host.ofctl(['dump-flows', 'ovs0', `cookie=${BASE}`])).stdout);
  const sh = (container: string, script: string, check = false) => host.docker(['exec', container, 'sh', '-c', script], { check, timeoutMs: 30_000 });
  /** Packets each meter's band dropped, by meter id. */
  const meterDrops = async () => {
    const out = new Map<number, number>();
    for (const m of (await host.ofctl(['meter-stats', 'ovs0'])).stdout.matchAll(/meter[:=](\d+)[\s\S]*?bands:\s*0: packet_count:(\d+)/g)) out.set(Number(m[1]), Number(m[2]));
    return out;
  };

  before(async () => {
    // No periodic pass during the test: what doctor reports is what the test did.
    host = await SimHost.start({ name: 'guard', pluginEnv: { OVSNET_RECONCILE_INTERVAL: '3600' } });
    await host.docker(['network', 'create', '-d', host.driver, '--ipam-driver', host.driver, '--ipv6', '--subnet', '10.81.0.0/24', '--subnet', 'fd81::/64', '-o', 'vlan=81', 'guarded']);
    await host.docker(['network', 'create', '-d', host.driver, '--ipam-driver', host.driver, '--subnet', '10.82.0.0/24', '-o', 'vlan=82', '-o', 'anti_spoofing=false', 'open']);
  });
  after(async () => {
    await host?.stop();
  });

  it("marks its flows as the plugin's: doctor reports them deleted by hand, the plugin puts them back by itself (deleted, or lost to an ovs-vswitchd restart), another's flow stays", async (t) => {
    // Gone whatever happens here: the next case counts the bridge's flows.
    t.after(() => host.docker(['rm', '-f', 'ga', 'gb', 'gm', 'oa', 'om'], { check: false }));
    for (const name of ['ga', 'gb']) await runContainer(host, name, 'guarded');
    await runContainer(host, 'gm', 'guarded', { extra: ['--cap-add', 'NET_ADMIN'] });
    for (const name of ['oa', 'om']) await runContainer(host, name, 'open');
    const open = await Promise.all(['oa', 'om'].map(async (c) => endpointPortName(host, (await containerAddress(host, c, 'open')).endpointId)));
    const openPorts = new Set(open.map((p) => portCookiePrefix(p)));
    const all = await ownedFlows();
    const openPerPort = all.filter((c) => [...openPorts].some((p) => cookieMatches(c, p))).length / 2;
    const perPort = (all.length - 2 * openPerPort) / 3;
    assert.ok(Number.isInteger(perPort) && perPort > 10, `the three guarded ports have the same number of flows each (${perPort})`);
    assert.equal(openPerPort, 8, 'a port without anti-spoofing keeps its first-hop guard (RA, redirects of both families, DHCP and DHCPv6 servers both ways) and passes the rest');
    assert.equal((await baseFlows()).length, 1, 'one base flow on the bridge');
    assert.equal((await cli(['doctor'])).exitCode, 0, 'no drift to begin with');
    await host.ofctl(['add-flow', 'ovs0', 'cookie=0x1234,priority=5,udp,tp_dst=9,actions=drop']);

    // With the plugin down (so that nothing puts them back first), doctor reports them deleted by hand.
    await host.stopPlugin();
    try {
      await host.ofctl(['del-flows', 'ovs0', OWNED]);
      const report = JSON.parse((await cli(['doctor', '--json'], false)).stdout) as { drift: Array<{ kind: string; subject: string; fix: string; detail: string }> };
      assert.ok(report.drift.some((d) => d.kind === 'bridge-flows-differ' && d.subject === 'ovs0'), 'the base flow is missed too: the bridge fails closed and forwards nothing');
      const m = await containerAddress(host, 'gm', 'guarded');
      const port = await endpointPortName(host, m.endpointId);
      const about = report.drift.filter((d) => d.subject === port);
      assert.deepEqual(about.map((d) => [d.kind, d.fix]), [['port-flows-differ', 'ovsnet reconcile']]);
      assert.match(about[0]!.detail, new RegExp(`^container port ${port} \\(endpoint [0-9a-f]{12}\\) is not guarded as it should be: ${perPort} of its ${perPort} guard flows missing$`));
      assert.equal(report.drift.filter((d) => d.kind === 'port-flows-differ').length, 5, 'one per container port: the open network keeps its first-hop guard');
      assert.equal(await ping(host, 'gb', (await containerAddress(host, 'ga', 'guarded')).ip, 2), false, 'failing closed: without its base flow the bridge forwards nothing');
    } finally {
      await host.startPlugin();
    }
    // The start's converge runs after the plugin answers (Docker's calls wait for it, not the state view).
    await waitFor('the plugin to put them back when it started, and the base flow', async () => (await ownedFlows()).length === 3 * perPort + 2 * openPerPort && (await baseFlows()).length === 1, 15_000, 100);
    assert.equal((await cli(['doctor'])).exitCode, 0);
    const m = await containerAddress(host, 'gm', 'guarded');
    await host.docker(['exec', 'gm', 'ip', 'link', 'set', 'dev', 'eth0', 'address', '02:00:00:00:81:98']);
    assert.equal((await sh('gm', `ping -c 2 -W 1 ${(await containerAddress(host, 'ga', 'guarded')).ip}`)).exitCode, 1, 'and they guard again');
    await host.docker(['exec', 'gm', 'ip', 'link', 'set', 'dev', 'eth0', 'address', m.mac]);

    // Deleted by hand while it runs: the plugin sees its base flow gone (it asks every second) and puts all back.
    await host.ofctl(['del-flows', 'ovs0', OWNED]);
    await waitFor('the flows to be back without being asked', async () => (await ownedFlows()).length === 3 * perPort + 2 * openPerPort && (await baseFlows()).length === 1, 10_000, 100);
    // One port's guard alone deleted (the bridge forwards on, and that port unguarded): it counts its flows too.
    await host.ofctl(['del-flows', 'ovs0', `cookie=${portCookiePrefix(await endpointPortName(host, m.endpointId))}`]);
    assert.equal((await ownedFlows()).length, 2 * perPort + 2 * openPerPort, "the port's guard is gone");
    await waitFor("the port's guard to be back without being asked", async () => (await ownedFlows()).length === 3 * perPort + 2 * openPerPort, 10_000, 100);

    // ovs-vswitchd keeps no flows across a restart.
    await host.stopVswitchd();
    await host.startVswitchd();
    await waitFor('ovs-vswitchd to answer OpenFlow', async () => (await host.ofctl(['dump-flows', 'ovs0'], { check: false })).exitCode === 0, 20_000);
    // The restart lost every flow: the plugin notices the bridge come back and puts them back by itself.
    await waitFor('the guard flows to be back without being asked', async () => (await ownedFlows()).length === 3 * perPort + 2 * openPerPort && (await baseFlows()).length === 1, 10_000, 100);
    assert.equal((await cli(['doctor'])).exitCode, 0);
    assert.ok(await ping(host, 'gb', (await containerAddress(host, 'ga', 'guarded')).ip, 2));

    await host.ofctl(['add-flow', 'ovs0', 'cookie=0x1234,priority=5,udp,tp_dst=9,actions=drop']);
    await host.docker(['rm', '-f', 'gm']);
    // They go just after DeleteEndpoint's answer.
    await waitFor("a removed container's flows to go with it", async () => (await ownedFlows()).length === 2 * perPort + 2 * openPerPort, 5_000, 50);
    assert.ok(parseFlowCookies((await host.ofctl(['dump-flows', 'ovs0'])).stdout).includes('0x0000000000001234'), "another's flow is never touched");
    for (const name of ['ga', 'gb', 'oa', 'om']) await host.docker(['rm', '-f', name]);
    await waitFor('no flow of the plugin to be left', async () => (await ownedFlows()).length === 0, 5_000, 50).catch(async (err) => {
      assert.deepEqual(await ownedFlows(), [], (err as Error).message);
    });
  });

  it('holds a limited container to its rate with a meter that drops what it sends above it (network -o rate, or its own --driver-opt rate); none on an unlimited one', async (t) => {
    await host.docker(['network', 'create', '-d', host.driver, '--ipam-driver', host.driver, '--subnet', '10.83.0.0/24', '-o', 'vlan=83', '-o', 'rate=20', 'limited']);
    await host.docker(['network', 'create', '-d', host.driver, '--ipam-driver', host.driver, '--subnet', '10.84.0.0/24', '-o', 'vlan=84', 'free']);
    for (const [name, net] of [['ls', 'limited'], ['lr', 'limited'], ['fs', 'free'], ['fr', 'free']] as const) await runContainer(host, name, net);
    const meterOf = async (container: string, network: string) => (await host.vsctl(['get', 'interface', await endpointPortName(host, (await containerAddress(host, container, network)).endpointId), 'ofport'])).stdout.trim();
    const meters = () => host.ofctl(['dump-meters', 'ovs0']).then((r) => r.stdout);
    const [ls, lr, fs] = [await meterOf('ls', 'limited'), await meterOf('lr', 'limited'), await meterOf('fs', 'free')];
    assert.match(await meters(), new RegExp(`meter=${ls} kbps burst[^\n]*\n\s*type=drop rate=20000 burst_size=5000`), 'a meter of 20 Mbit/s on the limited port');
    assert.doesNotMatch(await meters(), new RegExp(`meter=${fs} `), 'none on the unlimited one');

    // Streams far above the rate: the limited port's meter drops, the unlimited stream passes no meter.
    const before = await meterDrops();
    const limited = await tcpStream(host, 'ls', 'lr', (await containerAddress(host, 'lr', 'limited')).ip, 10);
    const free = await tcpStream(host, 'fs', 'fr', (await containerAddress(host, 'fr', 'free')).ip, 20);
    const after = await meterDrops();
    assert.ok((after.get(Number(ls)) ?? 0) > (before.get(Number(ls)) ?? 0), `the limited port's meter dropped what went above 20 Mbit/s (${before.get(Number(ls)) ?? 0} -> ${after.get(Number(ls))})`);
    assert.ok(!after.has(Number(fs)), 'no meter counted the unlimited stream');
    t.diagnostic(`for the figures see bench/guard.ts; here: rate=20 stream ${((limited * 8) / 1e6).toFixed(1)} Mbit/s, unlimited ${((free * 8) / 1e6).toFixed(1)} Mbit/s`);

    // One container's own rate, given when it is connected: a meter of its own on its new port.
    await host.docker(['network', 'connect', '--driver-opt', 'rate=8', 'free', 'ls']);
    assert.match(await meters(), /type=drop rate=8000 burst_size=2000/, '--driver-opt rate=8 gets a meter of 8 Mbit/s');

    const refused = await host.docker(['network', 'connect', '--driver-opt', 'rate=fast', 'free', 'lr'], { check: false });
    assert.notEqual(refused.exitCode, 0);
    assertPluginSaid(refused.stderr, 'NetworkDriver.CreateEndpoint', 'invalid value "fast" for option rate: must be an integer from 1 to 100000 (Mbit/s)');
    assert.equal(((await meters()).match(/^meter=/gm) ?? []).length, 3, `one meter per limited port (${lr} among them)`);
    for (const name of ['ls', 'lr', 'fs', 'fr']) await host.docker(['rm', '-f', name]);
    assert.equal(((await meters()).match(/^meter=/gm) ?? []).length, 0, 'their meters go with them');
    assert.deepEqual(await ownedFlows(), [], 'and their flows');
  });
});
