/**
 * A host whose Docker writes its rules with legacy iptables while plain `iptables` is iptables-nft (as on a
 * Debian host whose alternatives were switched, or a managed plugin's image against such a host): the plugin
 * writes where Docker's rules are. Both iptables apply to every packet, and an accept in one does not undo a
 * drop in the other, so a nat network gets out past the legacy FORWARD policy DROP only with the plugin's
 * accepts there; and a port Docker publishes is known from its legacy DOCKER chain only.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { waitFor } from './harness/proc.js';
import { SimHost, type OutsideNamespace } from './harness/sim-host.js';
import { assertPluginSaid, runContainer, startWhoAmI, tcpSay } from './support.js';

describe('the iptables the host uses', () => {
  let host: SimHost;
  let wan: OutsideNamespace;
  let whoami: { stop: () => void };
  /** The plugin's rules in one iptables: every line of its chains. */
  const ours = async (tool: 'iptables-legacy' | 'iptables-nft') =>
    (await host.exec(`${tool}-save`, [])).stdout.split('\n').filter((l) => l.startsWith('-A OVSNET-'));
  const out = () => tcpSay(host, 'n1', wan.address, 9000);

  before(async () => {
    // No docker-proxy: Docker's DNAT rules alone say which ports its bridge publishes.
    host = await SimHost.start({ name: 'ipt', dockerIptablesVariant: 'legacy', userlandProxy: false });
    wan = await host.addOutside('ipt-wan', { hostAddress: '198.18.4.1', address: '198.18.4.2', prefix: 30 });
    whoami = await startWhoAmI(wan.ns, 9000);
    // What Docker does when it turns forwarding on itself, and what a host firewall does: forward nothing unless accepted.
    await host.exec('iptables-legacy', ['-w', '-P', 'FORWARD', 'DROP']);
  });
  after(async () => {
    whoami?.stop();
    await host?.stop();
  });

  it("writes with the iptables Docker's rules are in: a nat network gets out past its FORWARD policy DROP; with its accepts in the other iptables only, it would not", async () => {
    assert.ok((await host.exec('iptables-legacy-save', ['-t', 'filter'])).stdout.includes(':DOCKER-USER'), "Docker's chains are in legacy iptables");
    assert.equal((await host.exec('iptables', ['--version'])).stdout.includes('nf_tables'), true, 'plain iptables is iptables-nft');
    await host.docker(['network', 'create', '-d', host.driver, '--ipam-driver', host.driver, '--subnet', '10.34.0.0/24', '-o', 'vlan=34', 'natnet']);
    await runContainer(host, 'n1', 'natnet');
    assert.equal(await out(), wan.hostAddress, 'the nat network reaches the world, masqueraded');
    assert.ok((await ours('iptables-legacy')).some((l) => l.startsWith('-A OVSNET-FORWARD ')), "the plugin's accepts are in legacy iptables");
    assert.deepEqual(await ours('iptables-nft'), [], 'none in iptables-nft');

    // Positive control: the plugin told to write with iptables-nft moves its rules there (and empties its chains
    // in legacy iptables): the nft accepts do not undo legacy iptables' DROP.
    await host.stopPlugin();
    await host.startPlugin({ OVSNET_IPTABLES: 'nft' });
    await waitFor("the plugin's rules in iptables-nft, and none left in legacy iptables", async () => (await ours('iptables-nft')).length > 0 && (await ours('iptables-legacy')).length === 0, 20_000, 200);
    assert.equal(await out(), undefined, 'with its accepts in iptables-nft only, nothing gets out');

    // Back to auto: the plugin finds Docker's chains in legacy iptables again, moves its rules there, and the traffic flows.
    await host.stopPlugin();
    await host.startPlugin({ OVSNET_IPTABLES: 'auto' });
    await waitFor("the plugin's rules back in legacy iptables, and none left in iptables-nft", async () => (await ours('iptables-legacy')).length > 0 && (await ours('iptables-nft')).length === 0, 20_000, 200);
    assert.equal(await out(), wan.hostAddress, 'out again');
    assert.match(await host.pluginLog(), /"iptables chosen".*"variant":"iptables-legacy".*Docker's rules are there/);
  });

  it("refuses a host port Docker publishes, known from its DOCKER chain in legacy iptables", async () => {
    await host.docker(['run', '-d', '--name', 'b1', '--net', 'bridge', '-p', '8092:80', 'local/busybox', 'sleep', '1d']);
    const taken = await host.docker(['run', '-d', '--name', 'n2', '--net', 'natnet', '-p', '8092:80', 'local/busybox', 'sleep', '1d'], { check: false });
    assert.notEqual(taken.exitCode, 0);
    assertPluginSaid(taken.stderr, 'NetworkDriver.ProgramExternalConnectivity', "host port 8092/tcp is already in use: published by Docker's own bridge network (a DNAT rule in iptables' DOCKER chain); publish on another host port, or leave the host port out (-p 80) for a free one");
    await host.docker(['rm', '-f', 'b1', 'n2']);
  });
});
