/**
 * Published ports follow the container's gateway, as current engines (28 and later, with `gw-priority`) tell a
 * remote driver: ProgramExternalConnectivity when its endpoint becomes the gateway, RevokeExternalConnectivity
 * when it stops being one. Run on Docker 28.5 and 29.7 (what only 29 does: test/e2e-29).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { TEST_IMAGE } from '../e2e/harness/image.js';
import { cmd, waitFor } from '../e2e/harness/proc.js';
import { SimHost, type OutsideNamespace } from '../e2e/harness/sim-host.js';
import { startHttp } from '../e2e/support.js';

describe('published ports follow the gateway role', () => {
  let host: SimHost;
  let wan: OutsideNamespace;
  /** The plugin's DNAT rules. */
  const dnat = async () => host.chainRules('nat', 'OVSNET-DNAT');
  /** Docker's own bridge's DNAT rules for a host port (iptables' DOCKER chain). */
  const dockers = async (port: number) => (await host.chainRules('nat', 'DOCKER')).filter((r) => r.includes(`--dport ${port} `));
  const fromWan = async (port: number) => {
    const r = await cmd('ip', ['netns', 'exec', wan.ns, 'timeout', '3', 'busybox', 'wget', '-q', '-O', '-', `http://${wan.hostAddress}:${port}/hostname`], { check: false });
    return r.exitCode === 0 ? r.stdout.trim() : undefined;
  };

  before(async () => {
    host = await SimHost.start({ name: 'gwr' });
    const major = Number(host.engineVersion.split('.')[0]);
    assert.ok(major >= 28, `these tests need Docker Engine 28 or later (gw-priority), not ${host.engineVersion}`);
    wan = await host.addOutside('gwr-wan', { hostAddress: '198.18.6.1', address: '198.18.6.2', prefix: 30 });
    await host.docker(['network', 'create', '-d', host.driver, '--ipam-driver', host.driver, '--subnet', '10.36.0.0/24', '-o', 'vlan=36', 'ovs4']);
  });
  after(async () => {
    await host?.stop();
  });

  it('moves a published port to the network that becomes the gateway, and back when it leaves', async () => {
    await host.docker(['run', '-d', '--name', 'g1', '--network', 'ovs4', '-p', '8085:80', TEST_IMAGE, 'sleep', '1d']);
    await startHttp(host, 'g1', 80);
    const name = (await host.docker(['exec', 'g1', 'hostname'])).stdout.trim();
    assert.equal(await fromWan(8085), name);
    assert.equal((await dnat()).filter((r) => r.includes('--dport 8085 ')).length, 1, "the plugin's DNAT");

    // A Docker bridge network with a higher gateway priority: Docker revokes the port on the plugin's network and
    // publishes it on its own bridge.
    await host.docker(['network', 'create', 'dbr']);
    await host.docker(['network', 'connect', '--gw-priority', '10', 'dbr', 'g1']);
    await waitFor('the port to move to Docker\'s bridge', async () => (await dnat()).every((r) => !r.includes('--dport 8085 ')) && (await dockers(8085)).length === 1, 10_000, 100);
    assert.equal(await fromWan(8085), name, "through Docker's bridge now");

    await host.docker(['network', 'disconnect', 'dbr', 'g1']);
    await waitFor('the port back on the plugin\'s network', async () => (await dnat()).some((r) => r.includes('--dport 8085 ')) && (await dockers(8085)).length === 0, 10_000, 100);
    assert.equal(await fromWan(8085), name, "through the plugin's network again");
    await host.docker(['rm', '-f', 'g1']);
    await host.docker(['network', 'rm', 'dbr']);
  });
});
