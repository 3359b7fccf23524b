/**
 * What only a current Docker Engine (28 and later) can show, run in the
 * end-to-end pass on Docker 28.5 (npm run test:e2e:28): IPv6-only networks,
 * `docker run --mac-address`, endpoint options from `docker network connect
 * --driver-opt`, and a link-local address made by an endpoint sysctl. (Docker
 * Compose is test/e2e/compose.test.ts, on every engine.)
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { linkLocalOf } from '../../src/domain/flows.js';
import { carries, nonce } from '../e2e/harness/attacks.js';
import { captureDuring, sendFrames } from '../e2e/harness/capture.js';
import { udpFrame } from '../e2e/harness/frames.js';
import { TEST_IMAGE } from '../e2e/harness/image.js';
import { SimHost } from '../e2e/harness/sim-host.js';
import { waitFor } from '../e2e/harness/proc.js';
import { assertPluginSaid, audit, containerAddress, dockerError, ping, runContainer } from '../e2e/support.js';

describe('on a current Docker Engine', () => {
  let host: SimHost;
  let d: string;

  before(async () => {
    host = await SimHost.start({ name: 'cur' });
    d = host.driver;
    const major = Number(host.engineVersion.split('.')[0]);
    assert.ok(major >= 28, `these tests need Docker Engine 28 or later (OVSNET_E2E_ENGINE=28.5), not ${host.engineVersion}`);
  });
  after(async () => {
    await host?.stop();
  });

  it('pins a container to the link-local address its interface really has, also one its endpoint sysctls made another way (addr_gen_mode)', async () => {
    await host.docker(['network', 'create', '-d', d, '--ipam-driver', d, '--ipv6', '--subnet', '10.66.0.0/24', '--subnet', 'fd66::/64', '-o', 'vlan=66', 'll']);
    // Random interface identifiers (addr_gen_mode 3): the link-local address is not the one of the MAC.
    await host.docker(['run', '-d', '--name', 'rand', '--network', 'name=ll,driver-opt=com.docker.network.endpoint.sysctls=net.ipv6.conf.IFNAME.addr_gen_mode=3', TEST_IMAGE, 'sleep', '1d']);
    await runContainer(host, 'peer', 'll');
    const [r, p] = [await containerAddress(host, 'rand', 'll'), await containerAddress(host, 'peer', 'll')];
    // busybox's ip: "inet6 fe80::.../64 scope link".
    const own = async (c: string) => {
      const out = (await host.docker(['exec', c, 'ip', '-6', 'address', 'show', 'dev', 'eth0', 'scope', 'link'])).stdout;
      const found = /inet6 (fe80:[0-9a-f:]+)\/64/.exec(out)?.[1];
      assert.ok(found, `a link-local address on ${c}'s eth0: ${out}`);
      return found;
    };
    const real = await own('rand');
    assert.notEqual(real, linkLocalOf(r.mac), 'its link-local address is not the one of its MAC');
    const state = async () => JSON.parse((await host.pluginRequest('GET', '/ovsnet/state')).body) as { endpoints: Array<{ id: string; linkLocal?: string }> };
    await waitFor('the plugin to learn it', async () => (await state()).endpoints.find((e) => e.id === r.endpointId)?.linkLocal === real, 15_000, 100);
    // What it sends from the link-local address it has arrives; from the one of its MAC, nothing does.
    const from = (address: string, what: string) => udpFrame({ dst: p.mac, src: r.mac, srcIp: address, dstIp: linkLocalOf(p.mac), sport: 4003, dport: 4003, data: nonce(what) });
    const got = await captureDuring(host, { container: 'peer' }, () => sendFrames(host, 'rand', [from(real, 'real'), from(linkLocalOf(r.mac), 'eui64'), from(real, 'real'), from(linkLocalOf(r.mac), 'eui64')]));
    assert.ok(got.some((f) => carries(f, 'real')), 'from its own link-local address it is heard');
    assert.ok(!got.some((f) => carries(f, 'eui64')), 'from another it is not');
    const linkLocalPing = await host.docker(['exec', 'rand', 'ping6', '-c', '2', '-W', '1', '-I', 'eth0', await own('peer')], { check: false });
    assert.equal(linkLocalPing.exitCode, 0, `its kernel speaks link-local with the neighbour: ${linkLocalPing.stdout}${linkLocalPing.stderr}`);
    await host.docker(['rm', '-f', 'rand', 'peer']);
    await host.docker(['network', 'rm', 'll']);
  });

  it('IPv6-only network: no IPv4 pool, gateway port or NAT rule; containers reach each other and their gateway over IPv6', async () => {
    await host.docker(['network', 'create', '-d', d, '--ipam-driver', d, '--ipv4=false', '--ipv6', '--subnet', 'fd00:60::/64', '--gateway', 'fd00:60::1', '-o', 'vlan=60', 'v6only']);
    await runContainer(host, 'six1', 'v6only');
    await runContainer(host, 'six2', 'v6only');
    const a = await containerAddress(host, 'six1', 'v6only');
    const b = await containerAddress(host, 'six2', 'v6only');
    assert.equal(a.ip, '', 'no IPv4 address');
    assert.match(a.ipv6, /^fd00:60::/);
    assert.ok(await ping(host, 'six1', b.ipv6, 2), 'six1 reaches six2 over IPv6');
    assert.ok(await ping(host, 'six2', 'fd00:60::1', 2), 'six2 reaches its gateway');
    const routes = (await host.docker(['exec', 'six1', 'ip', '-6', 'route'])).stdout;
    assert.match(routes, /^default via fd00:60::1 dev eth0/m);
    const state = await host.pluginState();
    assert.deepEqual(state.pools.map((p) => p.pool), ['fd00:60::/64'], 'no IPv4 pool');
    const network = state.networks.find((n) => n.gatewayPort)!;
    assert.deepEqual(network.ipv4, []);
    const gw = (await host.exec('ip', ['-j', 'address', 'show', 'dev', network.gatewayPort!])).stdout;
    assert.deepEqual(JSON.parse(gw)[0].addr_info.filter((x: { scope: string }) => x.scope === 'global').map((x: { local: string }) => x.local), ['fd00:60::1'], 'only the IPv6 gateway address');
    assert.deepEqual(await host.chainRules('nat', 'OVSNET-POSTROUTING'), [], 'no NAT rule');
    assert.ok((await host.chainRules('filter', 'OVSNET-FORWARD', 'ip6tables')).length > 0, 'IPv6 filter rules keep networks apart');
    await host.docker(['rm', '-f', 'six1', 'six2']);
    await host.docker(['network', 'rm', 'v6only']);
  });

  it('refuses a network with neither IPv4 nor IPv6, and keeps nothing', async () => {
    const before = await audit(host);
    const err = await dockerError(host, ['network', 'create', '-d', d, '--ipam-driver', d, '--ipv4=false', 'nofamily']);
    assertPluginSaid(err, 'NetworkDriver.CreateNetwork', 'a network needs IPv4 or IPv6, and this one has both off (--ipv4=false without --ipv6): add --ipv6 (with an IPv6 --subnet for a fixed one), or leave IPv4 on');
    assert.deepEqual(await audit(host), before);
  });

  it('honours docker run --mac-address, and derives the MAC otherwise', async () => {
    await host.docker(['network', 'create', '-d', d, '--ipam-driver', d, '--subnet', '10.62.0.0/24', '-o', 'vlan=62', 'macnet']);
    await runContainer(host, 'mac1', 'macnet', { extra: ['--mac-address', '02:42:ab:cd:ef:01'] });
    await runContainer(host, 'mac2', 'macnet');
    const link = (c: string) => host.docker(['exec', c, 'cat', '/sys/class/net/eth0/address']).then((r) => r.stdout.trim());
    assert.equal(await link('mac1'), '02:42:ab:cd:ef:01');
    const mac2 = await containerAddress(host, 'mac2', 'macnet');
    assert.equal(await link('mac2'), `02:42:0a:3e:00:${Number(mac2.ip.split('.')[3]).toString(16).padStart(2, '0')}`);
    assert.ok(await ping(host, 'mac2', (await containerAddress(host, 'mac1', 'macnet')).ip, 2));
  });

  it('refuses an unknown endpoint option from docker network connect --driver-opt by name, and keeps nothing', async () => {
    await host.docker(['network', 'create', '-d', d, '--ipam-driver', d, '--subnet', '10.63.0.0/24', '-o', 'vlan=63', 'optnet']);
    const before = await audit(host);
    const err = await dockerError(host, ['network', 'connect', '--driver-opt', 'colour=blue', 'optnet', 'mac2']);
    assertPluginSaid(err, 'NetworkDriver.CreateEndpoint', /^unknown endpoint option colour=blue \(docker network connect --driver-opt\); valid endpoint options: /);
    assert.deepEqual(await audit(host), before);
    await host.docker(['rm', '-f', 'mac1', 'mac2']);
    await host.docker(['network', 'rm', 'macnet', 'optnet']);
  });
});
