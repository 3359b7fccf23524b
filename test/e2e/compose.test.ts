/**
 * Docker Compose v2 (2.40, unpacked by test/install-engines.sh) with an ovs network: on every engine of the
 * compatibility suite, and in the whole suite on 28.5.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ENGINES_DIR, SimHost } from './harness/sim-host.js';
import { cmd } from './harness/proc.js';
import { assertAccountedFor, audit, containerAddress, httpGet, ping, startHttp } from './support.js';

describe('Docker Compose', () => {
  let host: SimHost;
  let d: string;

  before(async () => {
    host = await SimHost.start({ name: 'cmp' });
    d = host.driver;
  });
  after(async () => {
    await host?.stop();
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
