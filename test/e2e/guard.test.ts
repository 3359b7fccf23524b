/**
 * What guards a container's port: anti-spoofing (on by default) and rate
 * limits, on a real bridge with real containers. A container given NET_ADMIN
 * tries to speak with a neighbour's IPv4 address or another MAC and reaches nobody;
 * the plugin's flows come back after being deleted by hand or lost to an
 * ovs-vswitchd restart; a limited container's TCP stream is held to its rate
 * while an unlimited one on the same bridge is not.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { parseFlowCookies } from '../../src/domain/flows.js';
import { waitFor } from './harness/proc.js';
import { REPO_ROOT, SimHost } from './harness/sim-host.js';
import { assertPluginSaid, containerAddress, ping, runContainer, tcpStream } from './support.js';

const CLI = `${REPO_ROOT}/dist/src/cli/main.js`;
const OWNED = 'cookie=0x6f76000000000000/0xffff000000000000';

describe('anti-spoofing and rate limits', () => {
  let host: SimHost;

  const cli = (args: string[], check = true) =>
    host.exec(process.execPath, [CLI, ...args], {
      check,
      env: { OVSNET_SOCKET: host.socket, DOCKER_HOST: host.dockerHost, OVSNET_STATE_DIR: `${host.dir}/state`, OVSNET_OVSDB: host.ovsdb, OVSNET_DOCKER: host.dockerHost },
    });
  const ownedFlows = async () => parseFlowCookies((await host.ofctl(['dump-flows', 'ovs0', OWNED])).stdout);
  const sh = (container: string, script: string, check = false) => host.docker(['exec', container, 'sh', '-c', script], { check, timeoutMs: 30_000 });

  before(async () => {
    // No periodic pass during the test: what doctor reports is what the test did.
    host = await SimHost.start({ name: 'guard', pluginEnv: { OVSNET_RECONCILE_INTERVAL: '3600' } });
    await host.docker(['network', 'create', '-d', host.driver, '--ipam-driver', host.driver, '--ipv6', '--subnet', '10.81.0.0/24', '--subnet', 'fd81::/64', '-o', 'vlan=81', 'guarded']);
    await host.docker(['network', 'create', '-d', host.driver, '--ipam-driver', host.driver, '--subnet', '10.82.0.0/24', '-o', 'vlan=82', '-o', 'anti_spoofing=false', 'open']);
  });
  after(async () => {
    await host?.stop();
  });

  it('lets a container speak only with its own MAC and addresses, IPv4 and IPv6; its neighbour keeps its traffic', async () => {
    for (const name of ['ga', 'gb']) await runContainer(host, name, 'guarded');
    await runContainer(host, 'gm', 'guarded', { extra: ['--cap-add', 'NET_ADMIN'] });
    const a = await containerAddress(host, 'ga', 'guarded');
    const b = await containerAddress(host, 'gb', 'guarded');
    const m = await containerAddress(host, 'gm', 'guarded');
    assert.ok(await ping(host, 'gb', a.ip, 2), 'IPv4 between neighbours');
    assert.ok(await ping(host, 'gb', a.ipv6, 2), 'IPv6 between neighbours');
    assert.ok(await ping(host, 'gm', a.ip), 'the guarded container itself reaches its neighbour');
    assert.ok(await ping(host, 'gm', a.ipv6), 'over IPv6 too');

    // m takes b's address as its own and speaks with it: nothing it sends from it arrives.
    await sh('gm', `ip address add ${b.ip}/24 dev eth0`, true);
    assert.equal((await sh('gm', `ping -c 2 -W 1 -I ${b.ip} ${a.ip}`)).exitCode, 1, "m cannot speak with b's IPv4 address");
    // Nor can it tell a that b's address is at its MAC (an unsolicited ARP reply naming b's address).
    await sh('gm', `arping -c 2 -U -s ${b.ip} -I eth0 ${a.ip}`);
    assert.ok(await ping(host, 'gb', a.ip, 2), 'b keeps its IPv4 traffic');
    assert.ok(await ping(host, 'gb', a.ipv6, 2), 'b keeps its IPv6 traffic');
    await sh('gm', `ip address del ${b.ip}/24 dev eth0`, true);

    // Another MAC: m reaches nobody, over IPv4 or IPv6, until it takes its own back.
    await sh('gm', 'ip link set dev eth0 address 02:00:00:00:81:99', true);
    await sh('gm', 'ip neigh flush dev eth0');
    assert.equal((await sh('gm', `ping -c 2 -W 1 ${a.ip}`)).exitCode, 1, 'no IPv4 from another MAC');
    assert.equal((await sh('gm', `ping6 -c 2 -W 1 ${a.ipv6}`)).exitCode, 1, 'no IPv6 from another MAC');
    await sh('gm', `ip link set dev eth0 address ${m.mac}`, true);
    assert.ok(await ping(host, 'gm', a.ip, 2), 'its own MAC works again');
    assert.ok(await ping(host, 'gm', a.ipv6, 2), 'over IPv6 too');

    // On a network with anti_spoofing=false the same change goes through.
    await runContainer(host, 'oa', 'open');
    await runContainer(host, 'om', 'open', { extra: ['--cap-add', 'NET_ADMIN'] });
    const oa = await containerAddress(host, 'oa', 'open');
    await sh('om', 'ip link set dev eth0 address 02:00:00:00:82:99', true);
    assert.ok(await ping(host, 'om', oa.ip, 2), 'anti_spoofing=false leaves the port open');
  });

  it("marks its flows as the plugin's: doctor reports them deleted by hand or lost to an ovs-vswitchd restart, reconcile puts them back, another's flow stays", async () => {
    const perPort = (await ownedFlows()).length / 3;
    assert.ok(Number.isInteger(perPort) && perPort > 10, `the three guarded ports have the same number of flows each (${perPort})`);
    assert.equal((await cli(['doctor'])).exitCode, 0, 'no drift to begin with');
    await host.ofctl(['add-flow', 'ovs0', 'cookie=0x1234,priority=5,udp,tp_dst=9,actions=drop']);

    await host.ofctl(['del-flows', 'ovs0', OWNED]);
    const report = JSON.parse((await cli(['doctor', '--json'], false)).stdout) as { drift: Array<{ kind: string; subject: string; fix: string; detail: string }> };
    const m = await containerAddress(host, 'gm', 'guarded');
    const port = (await host.pluginState()).endpoints.find((e) => e.id === m.endpointId)!.hostIf;
    const about = report.drift.filter((d) => d.subject === port);
    assert.deepEqual(about.map((d) => [d.kind, d.fix]), [['port-flows-differ', 'ovsnet reconcile']]);
    assert.match(about[0]!.detail, new RegExp(`^container port ${port} \\(endpoint [0-9a-f]{12}\\) is not guarded as it should be: ${perPort} of its ${perPort} guard flows missing$`));
    assert.equal(report.drift.filter((d) => d.kind === 'port-flows-differ').length, 3, 'one per guarded port, nothing for the open network');
    await cli(['reconcile']);
    assert.equal((await ownedFlows()).length, 3 * perPort, 'reconcile put them back');
    assert.equal((await cli(['doctor'])).exitCode, 0);
    await host.docker(['exec', 'gm', 'ip', 'link', 'set', 'dev', 'eth0', 'address', '02:00:00:00:81:98']);
    assert.equal((await sh('gm', `ping -c 2 -W 1 ${(await containerAddress(host, 'ga', 'guarded')).ip}`)).exitCode, 1, 'and they guard again');
    await host.docker(['exec', 'gm', 'ip', 'link', 'set', 'dev', 'eth0', 'address', m.mac]);

    // ovs-vswitchd keeps no flows across a restart.
    await host.stopVswitchd();
    await host.startVswitchd();
    await waitFor('ovs-vswitchd to answer OpenFlow', async () => (await host.ofctl(['dump-flows', 'ovs0'], { check: false })).exitCode === 0, 20_000);
    // The restart lost every flow: the plugin notices the bridge come back and puts them back by itself.
    await waitFor('the guard flows to be back without being asked', async () => (await ownedFlows()).length === 3 * perPort, 10_000, 100);
    assert.equal((await cli(['doctor'])).exitCode, 0);
    assert.ok(await ping(host, 'gb', (await containerAddress(host, 'ga', 'guarded')).ip, 2));

    await host.ofctl(['add-flow', 'ovs0', 'cookie=0x1234,priority=5,udp,tp_dst=9,actions=drop']);
    await host.docker(['rm', '-f', 'gm']);
    assert.equal((await ownedFlows()).length, 2 * perPort, "a removed container's flows go with it");
    assert.ok(parseFlowCookies((await host.ofctl(['dump-flows', 'ovs0'])).stdout).includes('0x0000000000001234'), "another's flow is never touched");
    for (const name of ['ga', 'gb', 'oa', 'om']) await host.docker(['rm', '-f', name]);
    assert.deepEqual(await ownedFlows(), [], 'no flow of the plugin is left');
  });

  it('holds a limited container to its rate (network -o rate, or its own --driver-opt rate) and leaves an unlimited one alone', async (t) => {
    await host.docker(['network', 'create', '-d', host.driver, '--ipam-driver', host.driver, '--subnet', '10.83.0.0/24', '-o', 'vlan=83', '-o', 'rate=20', 'limited']);
    await host.docker(['network', 'create', '-d', host.driver, '--ipam-driver', host.driver, '--subnet', '10.84.0.0/24', '-o', 'vlan=84', 'free']);
    for (const [name, net] of [['ls', 'limited'], ['lr', 'limited'], ['fs', 'free'], ['fr', 'free']] as const) await runContainer(host, name, net);
    const mbit = (bytesPerSecond: number) => (bytesPerSecond * 8) / 1e6;

    const limited = mbit(await tcpStream(host, 'ls', 'lr', (await containerAddress(host, 'lr', 'limited')).ip, 10));
    assert.ok(Math.abs(limited - 20) <= 5, `a container of a network with rate=20 sends at ${limited.toFixed(1)} Mbit/s, within 25% of 20`);
    const free = mbit(await tcpStream(host, 'fs', 'fr', (await containerAddress(host, 'fr', 'free')).ip, 40));
    assert.ok(free > 50, `an unlimited container on the same bridge sends at ${free.toFixed(1)} Mbit/s, well above the limit`);
    const back = mbit(await tcpStream(host, 'lr', 'ls', (await containerAddress(host, 'ls', 'limited')).ip, 10));
    assert.ok(Math.abs(back - 20) <= 5, `the receiver, limited as well, sends at ${back.toFixed(1)} Mbit/s`);

    // One container's own rate, given when it is connected.
    await host.docker(['network', 'connect', '--driver-opt', 'rate=8', 'free', 'ls']);
    const own = mbit(await tcpStream(host, 'ls', 'fr', (await containerAddress(host, 'fr', 'free')).ip, 4));
    assert.ok(Math.abs(own - 8) <= 2, `--driver-opt rate=8 holds it to ${own.toFixed(1)} Mbit/s`);

    t.diagnostic(`rate=20: ${limited.toFixed(1)} and ${back.toFixed(1)} Mbit/s; unlimited: ${free.toFixed(1)} Mbit/s; --driver-opt rate=8: ${own.toFixed(1)} Mbit/s`);
    const refused = await host.docker(['network', 'connect', '--driver-opt', 'rate=fast', 'free', 'lr'], { check: false });
    assert.notEqual(refused.exitCode, 0);
    assertPluginSaid(refused.stderr, 'NetworkDriver.CreateEndpoint', 'invalid value "fast" for option rate: must be an integer from 1 to 100000 (Mbit/s)');
    const meters = (await host.ofctl(['dump-meters', 'ovs0'])).stdout;
    if ((meters.match(/^meter=/gm) ?? []).length !== 3) {
      const ports = (await host.ofctl(['show', 'ovs0'])).stdout;
      const rest = (await host.ofctl(['dump-flows', 'ovs0'])).stdout.split('\n').filter((l) => /priority=36000/.test(l));
      assert.fail(`one meter per limited port: ${meters}\n${ports}\n${rest.join('\n')}\n${JSON.stringify((await host.pluginState()).endpoints)}`);
    }
    for (const name of ['ls', 'lr', 'fs', 'fr']) await host.docker(['rm', '-f', name]);
    assert.equal(((await host.ofctl(['dump-meters', 'ovs0'])).stdout.match(/^meter=/gm) ?? []).length, 0, 'their meters go with them');
    assert.deepEqual(await ownedFlows(), []);
  });
});
