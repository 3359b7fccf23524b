/**
 * What the Docker 29 line tells a remote driver that earlier engines do not, checked on 29.7 (test/run-all.sh
 * runs this directory on 29.7 only): the endpoint's name with each RequestAddress, so that a container started
 * again gets its address back; and, when another network of the container is its IPv6 gateway (the IPv6
 * defaults of 29 make an IPv6-only network one), the hint that the host's IPv6 addresses are that network's.
 * ProgramExternalConnectivity only when the gateway role changes and -P with HostPort 0 are covered on 29.7 by
 * test/e2e-current/gateway-role.test.ts and test/e2e/published.test.ts.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { TEST_IMAGE } from '../e2e/harness/image.js';
import { waitFor } from '../e2e/harness/proc.js';
import { SimHost } from '../e2e/harness/sim-host.js';
import { containerAddress } from '../e2e/support.js';

describe('on Docker 29', () => {
  let host: SimHost;
  /** The plugin's DNAT rules, per family. */
  const dnat = async (tool: 'iptables' | 'ip6tables') => host.chainRules('nat', 'OVSNET-DNAT', tool);

  before(async () => {
    host = await SimHost.start({ name: 'e29' });
    assert.ok(Number(host.engineVersion.split('.')[0]) >= 29, `these tests need Docker Engine 29 (OVSNET_E2E_ENGINE=29.7), not ${host.engineVersion}`);
    await host.docker(['network', 'create', '-d', host.driver, '--ipam-driver', host.driver, '--ipv6', '--subnet', '10.37.0.0/24', '--subnet', 'fd37::/64', '-o', 'vlan=37', 'ovsweb']);
  });
  after(async () => {
    await host?.stop();
  });

  it('gives a container started again the address it had, by its name, even when the next free one is another', async () => {
    // Four addresses to give (--ip-range), handed out in turn: x0 .4, web .5, x1 .6; then web and x0 stop.
    await host.docker(['network', 'create', '-d', host.driver, '--ipam-driver', host.driver, '--subnet', '10.39.0.0/24', '--ip-range', '10.39.0.4/30', '-o', 'vlan=39', 'names']);
    for (const name of ['x0', 'web', 'x1']) await host.docker(['run', '-d', '--name', name, '--network', 'names', TEST_IMAGE, 'sleep', '1d']);
    const had = (await containerAddress(host, 'web', 'names')).ip;
    assert.equal(had, '10.39.0.5');
    await host.docker(['stop', '-t', '0', 'web', 'x0']);
    // The next free address in turn is .7, then .4: without its name, web would get one of those.
    await host.docker(['start', 'web']);
    assert.equal((await containerAddress(host, 'web', 'names')).ip, had, 'its address again');
    await host.docker(['start', 'x0']);
    assert.equal((await containerAddress(host, 'x0', 'names')).ip, '10.39.0.4', 'and x0 its own');
    await host.docker(['rm', '-f', 'x0', 'web', 'x1']);
    await host.docker(['network', 'rm', 'names']);
  });

  it("publishes on the host's IPv4 addresses only when another network is the container's IPv6 gateway", async () => {
    // Alone on the dual-stack network, a container's port is published on both families (the control).
    await host.docker(['run', '-d', '--name', 'g2', '--network', 'ovsweb', '-p', '8086:80', TEST_IMAGE, 'sleep', '1d']);
    assert.equal((await dnat('iptables')).filter((r) => r.includes('--dport 8086 ')).length, 1);
    assert.equal((await dnat('ip6tables')).filter((r) => r.includes('--dport 8086 ')).length, 1);
    // An IPv6-only network connected with a higher priority becomes its IPv6 gateway; this one stays the IPv4 one.
    await host.docker(['network', 'create', '--ipv4=false', '--ipv6', '--subnet', 'fd38::/64', 'd6']);
    await host.docker(['run', '-d', '--name', 'g3', '--network', 'ovsweb', '-p', '8087:80', TEST_IMAGE, 'sleep', '1d']);
    await host.docker(['network', 'connect', '--gw-priority', '10', 'd6', 'g3']);
    assert.match((await host.docker(['exec', 'g3', 'ip', '-6', 'route', 'show', 'default'])).stdout, /via fd38::1 /, "d6 is g3's IPv6 gateway");
    await waitFor("the port on the host's IPv4 addresses only", async () => (await dnat('ip6tables')).every((r) => !r.includes('--dport 8087 ')), 10_000, 100);
    assert.equal((await dnat('iptables')).filter((r) => r.includes('--dport 8087 ')).length, 1, 'IPv4: the plugin publishes it');
    await host.docker(['rm', '-f', 'g2', 'g3']);
    await host.docker(['network', 'rm', 'd6']);
  });
});
