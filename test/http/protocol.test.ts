/**
 * The HTTP API as dockerd speaks it: bodies exactly as captured from Docker
 * 20.10 (no Content-Type, a trailing newline, empty bodies for calls without
 * arguments), errors in `Err` for the network driver and `Error` for IPAM.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import request from 'supertest';
import { createApp } from '../../src/http/app.js';
import { listen } from '../../src/http/server.js';
import { silentLogger } from '../../src/log.js';
import { world, id } from '../unit/setup.js';

const NET = id('a');
const EP = id('b');

async function app() {
  const w = await world();
  return { ...w, app: createApp({ network: w.network, ipam: w.ipam, state: w.state, log: silentLogger }) };
}

/** A POST the way dockerd sends it: JSON text plus newline, and no Content-Type. */
function dockerPost(server: ReturnType<typeof request>, call: string, body?: unknown) {
  const req = server.post(`/${call}`).set('Accept', 'application/vnd.docker.plugins.v1.2+json');
  if (body === undefined) return req;
  return req.send(JSON.stringify(body) + '\n').unset('Content-Type');
}

describe('plugin protocol over HTTP', () => {
  it('activates with both interfaces from an empty body', async () => {
    const { app: a } = await app();
    const res = await dockerPost(request(a), 'Plugin.Activate');
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, { Implements: ['NetworkDriver', 'IpamDriver'] });
  });

  it('answers the three capability calls Docker makes at activation', async () => {
    const { app: a } = await app();
    assert.deepEqual((await dockerPost(request(a), 'NetworkDriver.GetCapabilities')).body, { Scope: 'local', ConnectivityScope: 'global' });
    assert.deepEqual((await dockerPost(request(a), 'IpamDriver.GetCapabilities')).body, { RequiresMACAddress: false, RequiresRequestReplay: true });
    assert.deepEqual((await dockerPost(request(a), 'IpamDriver.GetDefaultAddressSpaces')).body, {
      LocalDefaultAddressSpace: 'local',
      GlobalDefaultAddressSpace: 'global',
    });
  });

  it('runs sequence A and E of the captured calls: network create, then a container start', async () => {
    const { app: a } = await app();
    const s = request(a);
    const pool = await dockerPost(s, 'IpamDriver.RequestPool', { AddressSpace: 'local', Pool: '10.201.0.0/24', SubPool: '10.201.0.128/25', Options: {}, V6: false });
    assert.deepEqual(pool.body, { PoolID: 'local/10.201.0.0/24', Pool: '10.201.0.0/24', Data: {} });
    const gw = await dockerPost(s, 'IpamDriver.RequestAddress', { PoolID: pool.body.PoolID, Address: '10.201.0.1', Options: { RequestAddressType: 'com.docker.network.gateway' } });
    assert.deepEqual(gw.body, { Address: '10.201.0.1/24', Data: {} });
    const aux = await dockerPost(s, 'IpamDriver.RequestAddress', { PoolID: pool.body.PoolID, Address: '10.201.0.5', Options: null });
    assert.equal(aux.body.Address, '10.201.0.5/24');
    const created = await dockerPost(s, 'NetworkDriver.CreateNetwork', {
      NetworkID: NET,
      Options: { 'com.docker.network.enable_ipv6': false, 'com.docker.network.generic': { vlan: '100' } },
      IPv4Data: [{ AddressSpace: 'local', AuxAddresses: { a: '10.201.0.5/24' }, Gateway: '10.201.0.1/24', Pool: '10.201.0.0/24' }],
      IPv6Data: [],
    });
    assert.equal(created.status, 200);
    assert.deepEqual(created.body, {});

    const ip = await dockerPost(s, 'IpamDriver.RequestAddress', { PoolID: pool.body.PoolID, Address: '', Options: null });
    assert.equal(ip.body.Address, '10.201.0.128/24');
    const ep = await dockerPost(s, 'NetworkDriver.CreateEndpoint', {
      NetworkID: NET,
      EndpointID: EP,
      Interface: { Address: ip.body.Address, AddressIPv6: '', MacAddress: '' },
      Options: { 'com.docker.network.endpoint.exposedports': [], 'com.docker.network.portmap': [] },
    });
    assert.deepEqual(ep.body, { Interface: { MacAddress: '02:42:0a:c9:00:80' } });
    const join = await dockerPost(s, 'NetworkDriver.Join', {
      NetworkID: NET,
      EndpointID: EP,
      SandboxKey: '/var/run/docker/netns/0123456789ab',
      Options: { 'com.docker.network.endpoint.exposedports': [], 'com.docker.network.portmap': [] },
    });
    assert.deepEqual(join.body, { InterfaceName: { SrcName: 'ovcbbbbbbbbbbbb', DstPrefix: 'eth' }, Gateway: '10.201.0.1' });
    const program = await dockerPost(s, 'NetworkDriver.ProgramExternalConnectivity', { NetworkID: NET, EndpointID: EP, Options: {} });
    assert.deepEqual(program.body, {});
    const info = await dockerPost(s, 'NetworkDriver.EndpointOperInfo', { NetworkID: NET, EndpointID: EP });
    assert.equal(info.status, 200);
    assert.equal(info.body.Value.port, 'ovsbbbbbbbbbbbb');

    for (const call of ['NetworkDriver.RevokeExternalConnectivity', 'NetworkDriver.Leave', 'NetworkDriver.DeleteEndpoint']) {
      assert.deepEqual((await dockerPost(s, call, { NetworkID: NET, EndpointID: EP })).body, {});
    }
    assert.deepEqual((await dockerPost(s, 'IpamDriver.ReleaseAddress', { PoolID: pool.body.PoolID, Address: '10.201.0.128' })).body, {});
  });

  it('puts network driver errors in Err and IPAM errors in Error, with a status that says what kind', async () => {
    const { app: a } = await app();
    const s = request(a);
    const bad = await dockerPost(s, 'NetworkDriver.CreateNetwork', {
      NetworkID: NET,
      Options: { 'com.docker.network.generic': { vlan: '9999' } },
      IPv4Data: [{ AddressSpace: 'local', Pool: '10.0.0.0/24', Gateway: '10.0.0.1/24' }],
      IPv6Data: [],
    });
    assert.equal(bad.status, 400);
    assert.match(bad.body.Err, /^invalid value "9999" for option vlan: must be an integer from 1 to 4094/);
    const missing = await dockerPost(s, 'IpamDriver.RequestAddress', { PoolID: 'local/10.9.9.0/24', Address: '', Options: null });
    assert.equal(missing.status, 404);
    assert.match(missing.body.Error, /unknown pool "local\/10.9.9.0\/24"/);
    assert.equal(missing.body.Err, missing.body.Error, 'non-200 answers are read from Err, so both are set');
  });

  it('answers malformed, mistyped and oversized bodies with 400/413 and a clear message', async () => {
    const { app: a, state } = await app();
    const s = request(a);
    const notJson = await s.post('/NetworkDriver.CreateNetwork').send('{"NetworkID": ').unset('Content-Type');
    assert.equal(notJson.status, 400);
    assert.match(notJson.body.Err, /^invalid request: body is not valid JSON/);
    const wrongType = await dockerPost(s, 'NetworkDriver.Join', { NetworkID: 5, EndpointID: EP });
    assert.equal(wrongType.status, 400);
    assert.match(wrongType.body.Err, /field NetworkID must be a network id \(Docker's: 64 lower-case hex characters; a swarm's: 25 lower-case letters and digits\) \(got 5\)/);
    const array = await dockerPost(s, 'IpamDriver.RequestPool', [1, 2]);
    assert.equal(array.status, 400);
    assert.match(array.body.Error, /field body must be a JSON object/);
    const huge = await dockerPost(s, 'NetworkDriver.CreateNetwork', { NetworkID: NET, pad: 'x'.repeat(300_000) });
    assert.equal(huge.status, 413);
    assert.match(huge.body.Err, /larger than/);
    assert.equal(state.networks.size, 0, 'nothing half-written');
  });

  it('answers bad values with a clear error in the field Docker reads, the right status, and no record', async () => {
    const { app: a, state } = await app();
    const s = request(a);
    const create = (ipv4: unknown[], generic: Record<string, string> = {}) =>
      dockerPost(s, 'NetworkDriver.CreateNetwork', { NetworkID: NET, Options: { 'com.docker.network.generic': generic }, IPv4Data: ipv4, IPv6Data: [] });
    const cases: Array<[Promise<request.Response>, number, string, RegExp]> = [
      [create([{ AddressSpace: 'local', Pool: 'fd00::/64', Gateway: 'fd00::1/64' }]), 400, 'Err', /IPv4Data\[0\]\.Pool must be an IPv4 prefix without host bits \(got "fd00::\/64"\)/],
      [create([{ AddressSpace: 'local', Pool: '10.0.0.1/24', Gateway: '10.0.0.1/24' }]), 400, 'Err', /IPv4Data\[0\]\.Pool must be an IPv4 prefix without host bits/],
      [create([{ AddressSpace: 'local', Pool: '10.0.0.0/24', Gateway: '10.9.0.1/24' }]), 400, 'Err', /IPv4Data\[0\]\.Gateway "10\.9\.0\.1\/24" is not an address of 10\.0\.0\.0\/24/],
      [create([{ AddressSpace: 'local', Pool: '10.0.0.0/24', Gateway: '10.0.0.1/24' }], { bridge: 'br;rm -rf' }), 400, 'Err', /invalid value "br;rm -rf" for option bridge/],
      [create([{ AddressSpace: 'local', Pool: '10.0.0.0/24', Gateway: '10.0.0.1/24' }], { uplink: '../eth0' }), 400, 'Err', /invalid value "\.\.\/eth0" for option uplink/],
      [dockerPost(s, 'NetworkDriver.Join', { NetworkID: NET, EndpointID: EP, SandboxKey: '' }), 404, 'Err', /network aaaaaaaaaaaa is not known to the ovs plugin/],
      [dockerPost(s, 'NetworkDriver.EndpointOperInfo', { NetworkID: NET, EndpointID: EP }), 404, 'Err', /not known/],
      [dockerPost(s, 'IpamDriver.RequestPool', { AddressSpace: 'local', Pool: 'fd00::/64', SubPool: '', Options: {}, V6: false }), 400, 'Error', /subnet fd00::\/64 is IPv6 but an IPv4 pool was requested/],
      [dockerPost(s, 'IpamDriver.RequestPool', { AddressSpace: 'local', Pool: '10.0.0.1/24', SubPool: '', Options: {}, V6: false }), 400, 'Error', /host bits are set; did you mean 10\.0\.0\.0\/24\?/],
      [dockerPost(s, 'IpamDriver.ReleaseAddress', { PoolID: 'local/10.0.0.0/24', Address: 'not-an-ip' }), 400, 'Error', /invalid address "not-an-ip"/],
    ];
    for (const [pending, status, field, message] of cases) {
      const res = await pending;
      assert.equal(res.status, status, res.text);
      assert.match(res.body[field], message);
    }
    assert.deepEqual([state.networks.size, state.endpoints.size, state.pools.size], [0, 0, 0], 'nothing half-written');
  });

  it('answers unknown calls with a plain 404, which Docker tolerates for optional methods', async () => {
    const { app: a } = await app();
    const res = await dockerPost(request(a), 'NetworkDriver.AllocateNetwork', {});
    assert.equal(res.status, 404);
    assert.equal(res.text, '404 page not found\n');
  });

  it('never answers with an empty body', async () => {
    const { app: a } = await app();
    const res = await dockerPost(request(a), 'NetworkDriver.DeleteNetwork', { NetworkID: NET });
    assert.equal(res.status, 200);
    assert.equal(res.text, '{}');
  });
});

describe('plugin socket', () => {
  let dir: string;
  let server: http.Server;
  let socket: string;

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'ovsnet-http-'));
    socket = path.join(dir, 'ovs.sock');
    const w = await world();
    server = await listen(createApp({ network: w.network, ipam: w.ipam, state: w.state, log: silentLogger }), socket);
  });
  after(async () => {
    server.closeAllConnections();
    server.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('is a socket only root can use (mode 0600)', async () => {
    const s = await stat(socket);
    assert.ok(s.isSocket());
    assert.equal(s.mode & 0o777, 0o600);
  });

  it('serves calls with exactly the headers dockerd sends, on a kept-alive connection', async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const call = (name: string, body: string) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = http.request(
          { socketPath: socket, agent, method: 'POST', path: `/${name}`, headers: { Host: '', 'User-Agent': 'Go-http-client/1.1', Accept: 'application/vnd.docker.plugins.v1.2+json', 'Content-Length': Buffer.byteLength(body) } },
          (res) => {
            let text = '';
            res.on('data', (c) => (text += c));
            res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
          },
        );
        req.on('error', reject);
        req.end(body);
      });
    assert.deepEqual(JSON.parse((await call('Plugin.Activate', '')).body), { Implements: ['NetworkDriver', 'IpamDriver'] });
    const pool = await call('IpamDriver.RequestPool', '{"AddressSpace":"local","Pool":"10.77.0.0/24","SubPool":"","Options":{},"V6":false}\n');
    assert.equal(JSON.parse(pool.body).PoolID, 'local/10.77.0.0/24');
    agent.destroy();
  });

  it('refuses to take over a socket another plugin is serving', async () => {
    const w = await world();
    await assert.rejects(listen(createApp({ network: w.network, ipam: w.ipam, state: w.state, log: silentLogger }), socket), /already serves/);
  });
});

describe('operator endpoints', () => {
  it('shows the records, with the addresses held', async () => {
    const { app: a } = await app();
    const s = request(a);
    const pool = await dockerPost(s, 'IpamDriver.RequestPool', { AddressSpace: 'local', Pool: '10.78.0.0/24', SubPool: '', Options: {}, V6: false });
    await dockerPost(s, 'IpamDriver.RequestAddress', { PoolID: pool.body.PoolID, Address: '10.78.0.1', Options: { RequestAddressType: 'com.docker.network.gateway' } });
    const res = await s.get('/ovsnet/state');
    assert.equal(res.status, 200);
    assert.match(res.headers['content-type'] ?? '', /application\/json/);
    assert.deepEqual(Object.keys(res.body).sort(), ['addresses', 'endpoints', 'networks', 'pools', 'spares', 'sparesBusy']);
    assert.deepEqual([res.body.spares, res.body.sparesBusy], [[], false], 'no spares without a network');
    assert.deepEqual(
      res.body.addresses.map((r: { address: string; kind: string; poolId: string }) => [r.poolId, r.address, r.kind]),
      [['local/10.78.0.0/24', '10.78.0.1', 'gateway']],
    );
    assert.equal(res.body.pools[0].id, 'local/10.78.0.0/24');
  });

  it('serves drift and reconciliation from the reconciler, and says when there is none', async () => {
    const w = await world();
    const bare = request(createApp({ network: w.network, ipam: w.ipam, state: w.state, log: silentLogger }));
    const noDrift = await bare.get('/ovsnet/drift');
    assert.equal(noDrift.status, 404);
    assert.match(noDrift.body.Err, /drift is not available in this process/);
    assert.equal((await bare.post('/ovsnet/reconcile')).status, 404);

    const asked: boolean[] = [];
    const reconciler = {
      drift: async (docker: boolean) => (asked.push(docker), [{ kind: 'ip-forward-off' }]),
      run: async () => ({ bridgesCreated: 1 }),
    } as unknown as NonNullable<Parameters<typeof createApp>[0]['reconciler']>;
    const s = request(createApp({ network: w.network, ipam: w.ipam, state: w.state, log: silentLogger, reconciler }));
    assert.deepEqual((await s.get('/ovsnet/drift?docker=0')).body, { Drift: [{ kind: 'ip-forward-off' }] });
    await s.get('/ovsnet/drift');
    assert.deepEqual(asked, [false, true]);
    const run = await s.post('/ovsnet/reconcile').send('{}').unset('Content-Type');
    assert.deepEqual(run.body, { Changes: { bridgesCreated: 1 } });
  });

  it('checks a peers change before the network driver sees it', async () => {
    const { app: a } = await app();
    const s = request(a);
    const notList = await s.put('/ovsnet/networks/abcd/peers').send('{"Peers": "10.0.0.1"}').unset('Content-Type');
    assert.equal(notList.status, 400);
    assert.match(notList.body.Err, /field Peers must be an array of addresses/);
    const notJson = await s.put('/ovsnet/networks/abcd/peers').send('{"Peers": [').unset('Content-Type');
    assert.equal(notJson.status, 400);
    assert.match(notJson.body.Err, /^invalid request: body is not valid JSON/);
    const unknown = await s.put('/ovsnet/networks/abcd/peers').send('{"Peers": []}').unset('Content-Type');
    assert.equal(unknown.status, 404);
    assert.match(unknown.body.Err, /network "abcd" is not known to the ovs plugin/);
  });

  it('answers anything else with a plain 404', async () => {
    const { app: a } = await app();
    const s = request(a);
    for (const res of [await s.get('/ovsnet/nothing'), await s.get('/Plugin.Activate'), await s.post('/NetworkDriver.Nothing').send('{}')]) {
      assert.equal(res.status, 404);
      assert.equal(res.text, '404 page not found\n');
    }
  });
});
