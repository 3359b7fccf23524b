/**
 * OVN mode over HTTP, with bodies as dockerd sends them: a network's whole
 * life on one host against a fake northbound database, and the refusal when
 * OVN mode is off.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import request from 'supertest';
import { createApp } from '../../src/http/app.js';
import { silentLogger } from '../../src/log.js';
import { FakeNorthbound } from '../fakes/index.js';
import { id, world } from '../unit/setup.js';

const NET = id('a');
const EP = id('b');

const post = (s: ReturnType<typeof request>, call: string, body: unknown) =>
  s.post(`/${call}`).set('Accept', 'application/vnd.docker.plugins.v1.2+json').send(JSON.stringify(body) + '\n').unset('Content-Type');

const createNetwork = {
  NetworkID: NET,
  Options: { 'com.docker.network.enable_ipv4': true, 'com.docker.network.enable_ipv6': false, 'com.docker.network.generic': { mode: 'ovn', ovn_network: 'web' } },
  IPv4Data: [{ AddressSpace: 'local', Pool: '10.60.0.0/24', Gateway: '10.60.0.1/24' }],
  IPv6Data: [],
};

describe('OVN mode over HTTP', () => {
  it('runs a network through create, a container start and stop, and removal', async () => {
    const nb = new FakeNorthbound();
    const w = await world({ ovn: { nb } });
    const s = request(createApp({ network: w.network, ipam: w.ipam, state: w.state, log: silentLogger }));
    const pool = await post(s, 'IpamDriver.RequestPool', { AddressSpace: 'local', Pool: '10.60.0.0/24', SubPool: '', Options: {}, V6: false });
    await post(s, 'IpamDriver.RequestAddress', { PoolID: pool.body.PoolID, Address: '10.60.0.1', Options: { RequestAddressType: 'com.docker.network.gateway' } });
    assert.deepEqual((await post(s, 'NetworkDriver.CreateNetwork', createNetwork)).body, {});
    assert.deepEqual([...nb.switches.values()].map((sw) => sw.name), ['web']);

    const address = await post(s, 'IpamDriver.RequestAddress', { PoolID: pool.body.PoolID, Address: '', Options: { 'com.docker.network.endpoint.name': 'c1' } });
    const ip = (address.body.Address as string).split('/')[0]!;
    assert.ok(nb.named(`ovsnet-10.60.0.0_24-${ip}`), 'held in the northbound database before Docker hears back');
    const ep = await post(s, 'NetworkDriver.CreateEndpoint', { NetworkID: NET, EndpointID: EP, Interface: { Address: address.body.Address, AddressIPv6: '', MacAddress: '' }, Options: {} });
    assert.equal(ep.status, 200);
    const join = await post(s, 'NetworkDriver.Join', { NetworkID: NET, EndpointID: EP, SandboxKey: '/var/run/docker/netns/x', Options: {} });
    assert.deepEqual(join.body, { InterfaceName: { SrcName: 'ovcbbbbbbbbbbbb', DstPrefix: 'eth' } });
    const info = await post(s, 'NetworkDriver.EndpointOperInfo', { NetworkID: NET, EndpointID: EP });
    assert.deepEqual([info.body.Value.bridge, info.body.Value.logicalPort], ['br-int', `ovsnet-10.60.0.0_24-${ip}`]);

    for (const call of ['NetworkDriver.Leave', 'NetworkDriver.DeleteEndpoint']) assert.deepEqual((await post(s, call, { NetworkID: NET, EndpointID: EP })).body, {});
    assert.deepEqual((await post(s, 'IpamDriver.ReleaseAddress', { PoolID: pool.body.PoolID, Address: ip })).body, {});
    assert.equal(nb.named(`ovsnet-10.60.0.0_24-${ip}`), undefined, 'released in the northbound database');
    await post(s, 'IpamDriver.ReleaseAddress', { PoolID: pool.body.PoolID, Address: '10.60.0.1' });
    await post(s, 'IpamDriver.ReleasePool', { PoolID: pool.body.PoolID });
    assert.deepEqual((await post(s, 'NetworkDriver.DeleteNetwork', { NetworkID: NET })).body, {});
    assert.equal(nb.switches.size, 0, 'the last host removed the switch');
  });

  it('refuses mode=ovn in Err, with the setting to give, when OVN mode is off', async () => {
    const w = await world();
    const s = request(createApp({ network: w.network, ipam: w.ipam, state: w.state, log: silentLogger }));
    const res = await post(s, 'NetworkDriver.CreateNetwork', createNetwork);
    assert.equal(res.status, 400);
    assert.match(res.body.Err, /^mode=ovn is off on this host: set OVSNET_OVN_NB to the northbound database's remotes/);
    assert.equal(w.state.networks.size, 0);
  });
});
