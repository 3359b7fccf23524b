/**
 * What only a current Docker Engine (28 and later) can show, run in the
 * end-to-end pass on Docker 28.5 (npm run test:e2e:28): IPv6-only networks,
 * `docker run --mac-address`, endpoint options from `docker network connect
 * --driver-opt`, and Docker Compose v2.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ENGINES_DIR, SimHost } from '../e2e/harness/sim-host.js';
import { cmd } from '../e2e/harness/proc.js';
import { assertAccountedFor, assertPluginSaid, audit, containerAddress, dockerError, httpGet, ping, runContainer, startHttp } from '../e2e/support.js';

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

  it('Docker Compose v2: services on an ovs network with driver and IPAM options reach each other by name and address; down leaves nothing; up gives the static service its address again', async () => {
    const project = path.join(host.dir, 'compose');
    await cmd('mkdir', ['-p', project]);
    await writeFile(
      path.join(project, 'compose.yaml'),
      [
        'services:',
        '  web:',
        '    image: local/busybox:latest',
        '    command: ["httpd", "-f", "-p", "8080", "-h", "/etc"]',
        '    networks:',
        '      app:',
        '        ipv4_address: 10.64.0.50',
        '  client:',
        '    image: local/busybox:latest',
        '    command: ["sleep", "1d"]',
        '    networks: [app]',
        'networks:',
        '  app:',
        `    driver: ${d}`,
        '    driver_opts:',
        '      vlan: "64"',
        '    ipam:',
        `      driver: ${d}`,
        '      config:',
        '        - subnet: 10.64.0.0/24',
        '          ip_range: 10.64.0.128/25',
        '          gateway: 10.64.0.1',
        '',
      ].join('\n'),
    );
    const compose = (args: string[]) => host.docker(['compose', '--project-directory', project, '-p', 'ovsdemo', ...args], { env: { DOCKER_CONFIG: ENGINES_DIR }, timeoutMs: 120_000 });
    await compose(['up', '-d']);
    const client = 'ovsdemo-client-1';
    const web = 'ovsdemo-web-1';
    assert.equal((await containerAddress(host, web, 'ovsdemo_app')).ip, '10.64.0.50');
    const clientIp = (await containerAddress(host, client, 'ovsdemo_app')).ip;
    assert.ok(clientIp.startsWith('10.64.0.') && Number(clientIp.split('.')[3]) >= 128, `the client from the ip-range: ${clientIp}`);
    const hostname = (await host.docker(['exec', web, 'hostname'])).stdout.trim();
    assert.equal(await httpGet(host, client, 'web'), hostname, 'by service name');
    assert.equal(await httpGet(host, client, '10.64.0.50'), hostname, 'by address');
    const ports = await host.ownedPorts();
    assert.ok(ports.filter((p) => p.externalIds['ovsnet-role'] === 'endpoint').every((p) => p.tag === 64));
    await compose(['down']);
    const a = await audit(host);
    assert.deepEqual([a.networks, a.endpoints, a.pools, a.endpointPorts.length, a.gatewayPorts.length, a.veths.length, a.forwardRules, a.natRules], [0, 0, 0, 0, 0, 0, 0, 0], JSON.stringify(a));
    assert.deepEqual(a.addresses, {});
    await compose(['up', '-d']);
    assert.equal((await containerAddress(host, web, 'ovsdemo_app')).ip, '10.64.0.50', 'the static service has its address again');
    await startHttp(host, web).catch(() => {});
    assert.ok(await ping(host, client, '10.64.0.50', 2));
    await assertAccountedFor(host, { endpoints: 2, networks: 1 });
    await compose(['down']);
  });
});
