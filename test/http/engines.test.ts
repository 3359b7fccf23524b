/**
 * What changed for remote drivers between Docker 20.10 and 29, with request
 * bodies as those engines send them (moby's remote driver and IPAM proxy are
 * the reference: libnetwork/drivers/remote and ipams/remote of v28.5.2 and
 * docker-v29.7.2).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import request from 'supertest';
import { createApp } from '../../src/http/app.js';
import { silentLogger } from '../../src/log.js';
import { id, world } from '../unit/setup.js';

const NET = id('a');
const EP = id('b');
const EP2 = id('c');

async function app() {
  const w = await world();
  return { ...w, s: request(createApp({ network: w.network, ipam: w.ipam, state: w.state, log: silentLogger })) };
}

function post(s: ReturnType<typeof request>, call: string, body: unknown) {
  return s.post(`/${call}`).set('Accept', 'application/vnd.docker.plugins.v1.2+json').send(JSON.stringify(body) + '\n').unset('Content-Type');
}

/** A VLAN network as Docker 28 creates it: enable_ipv4 is always sent. */
async function network28(s: ReturnType<typeof request>, ipv4 = true) {
  const pool = await post(s, 'IpamDriver.RequestPool', { AddressSpace: 'local', Pool: '10.44.0.0/24', SubPool: '', Options: {}, V6: false });
  await post(s, 'IpamDriver.RequestAddress', { PoolID: pool.body.PoolID, Address: '10.44.0.1', Options: { RequestAddressType: 'com.docker.network.gateway' } });
  const created = await post(s, 'NetworkDriver.CreateNetwork', {
    NetworkID: NET,
    Options: { 'com.docker.network.enable_ipv4': ipv4, 'com.docker.network.enable_ipv6': false, 'com.docker.network.generic': { vlan: '44' } },
    IPv4Data: [{ AddressSpace: 'local', Pool: '10.44.0.0/24', Gateway: '10.44.0.1/24' }],
    IPv6Data: [],
  });
  return { poolId: pool.body.PoolID as string, created };
}

describe('Docker 28: enable_ipv4 and IPv6-only networks', () => {
  it('takes enable_ipv4 with an ordinary network', async () => {
    const { s, state } = await app();
    const { created } = await network28(s);
    assert.deepEqual([created.status, created.body], [200, {}]);
    assert.equal(state.networks.get(NET)?.state, 'ready');
  });

  it('makes an IPv6-only network: no IPv4 pool, an IPv6 gateway, no IPv4 rules or forwarding', async () => {
    const { s, state, firewall, links, sysctl } = await app();
    const pool = await post(s, 'IpamDriver.RequestPool', { AddressSpace: 'local', Pool: 'fd00:44::/64', SubPool: '', Options: {}, V6: true });
    await post(s, 'IpamDriver.RequestAddress', { PoolID: pool.body.PoolID, Address: '', Options: { RequestAddressType: 'com.docker.network.gateway' } });
    const created = await post(s, 'NetworkDriver.CreateNetwork', {
      NetworkID: NET,
      Options: { 'com.docker.network.enable_ipv4': false, 'com.docker.network.enable_ipv6': true, 'com.docker.network.generic': { vlan: '45' } },
      IPv4Data: [],
      IPv6Data: [{ AddressSpace: 'local', Pool: 'fd00:44::/64', Gateway: 'fd00:44::1/64' }],
    });
    assert.deepEqual([created.status, created.body], [200, {}]);
    assert.deepEqual([...state.pools.keys()], ['local/fd00:44::/64']);
    const gateway = state.networks.get(NET)!.gatewayPort!;
    assert.deepEqual(links.links.get(gateway)?.addresses, ['fd00:44::1/64']);
    assert.deepEqual(firewall.current?.v4, { filter: [], nat: [], dnat: [], isolate: [], input: [], raw: firewall.current?.v6.raw }, 'no IPv4 rule, no masquerade (but what guards the host from veths, for both families)');
    assert.ok(firewall.current!.v6.filter.length > 0, 'the IPv6 filter rules keep networks apart');
    assert.equal(sysctl.forwarding, false, 'IPv4 forwarding is not needed');

    const address = await post(s, 'IpamDriver.RequestAddress', { PoolID: pool.body.PoolID, Address: '', Options: null });
    const ep = await post(s, 'NetworkDriver.CreateEndpoint', { NetworkID: NET, EndpointID: EP, Interface: { Address: '', AddressIPv6: address.body.Address, MacAddress: '' }, Options: {} });
    assert.match(ep.body.Interface.MacAddress, /^02:bb:bb:bb:bb:bb$/, 'without IPv4 the MAC comes from the endpoint id');
    const join = await post(s, 'NetworkDriver.Join', { NetworkID: NET, EndpointID: EP, SandboxKey: '/var/run/docker/netns/x', Options: {} });
    // No IPv4 gateway, and none wanted from docker_gwbridge either: the network has no IPv4.
    assert.deepEqual(join.body, { InterfaceName: { SrcName: 'ovcbbbbbbbbbbbb', DstPrefix: 'eth' }, GatewayIPv6: 'fd00:44::1', DisableGatewayService: true });
  });

  it('refuses a network with neither IPv4 nor IPv6, saying which flags to give, and keeps nothing', async () => {
    const { s, state } = await app();
    const res = await post(s, 'NetworkDriver.CreateNetwork', {
      NetworkID: NET,
      Options: { 'com.docker.network.enable_ipv4': false, 'com.docker.network.enable_ipv6': false, 'com.docker.network.generic': {} },
      IPv4Data: [],
      IPv6Data: [],
    });
    assert.equal(res.status, 400);
    assert.equal(res.body.Err, 'a network needs IPv4 or IPv6, and this one has both off (--ipv4=false without --ipv6): add --ipv6 (with an IPv6 --subnet for a fixed one), or leave IPv4 on');
    assert.equal(state.networks.size, 0);
  });
});

describe('Docker 29: the endpoint name in RequestAddress', () => {
  it('takes a named dynamic request for what it is, neither a gateway nor an error', async () => {
    const { s, state } = await app();
    const { poolId } = await network28(s);
    const res = await post(s, 'IpamDriver.RequestAddress', { PoolID: poolId, Address: '', Options: { 'com.docker.network.endpoint.name': 'web' } });
    assert.deepEqual([res.status, res.body], [200, { Address: '10.44.0.2/24', Data: {} }]);
    assert.equal(state.addressesOf(poolId).get('10.44.0.2')?.kind, 'address');
  });

  it('gives a named endpoint the address it had when it asks again, and keeps that address from others meanwhile', async () => {
    const { s } = await app();
    const { poolId } = await network28(s);
    const ask = async (name: string) => (await post(s, 'IpamDriver.RequestAddress', { PoolID: poolId, Address: '', Options: { 'com.docker.network.endpoint.name': name } })).body.Address as string;
    const web = await ask('web');
    const db = await ask('db');
    // dockerd stops: every address is released.
    for (const address of [web, db]) await post(s, 'IpamDriver.ReleaseAddress', { PoolID: poolId, Address: address.split('/')[0] });
    // At start it brings containers back in any order, and a new one may come first.
    const other = await ask('cache');
    assert.ok(![web, db].includes(other), `a new endpoint gets neither remembered address (${other})`);
    assert.equal(await ask('db'), db);
    assert.equal(await ask('web'), web);
  });
});

describe('Docker 29: external connectivity only for the gateway endpoint', () => {
  it('answers Program twice in a row and Revoke at Leave, each time the same', async () => {
    const { s } = await app();
    await network28(s);
    await post(s, 'NetworkDriver.CreateEndpoint', { NetworkID: NET, EndpointID: EP, Interface: { Address: '10.44.0.2/24', AddressIPv6: '', MacAddress: '' }, Options: {} });
    await post(s, 'NetworkDriver.Join', { NetworkID: NET, EndpointID: EP, SandboxKey: '/var/run/docker/netns/x', Options: {} });
    const options = { 'com.docker.network.endpoint.exposedports': [], 'com.docker.network.portmap': [], 'com.docker.network.driver.private.no_proxy_6to4': true };
    for (let i = 0; i < 2; i++) {
      const program = await post(s, 'NetworkDriver.ProgramExternalConnectivity', { NetworkID: NET, EndpointID: EP, Options: options });
      assert.deepEqual([program.status, program.body], [200, {}]);
    }
    for (let i = 0; i < 2; i++) {
      const revoke = await post(s, 'NetworkDriver.RevokeExternalConnectivity', { NetworkID: NET, EndpointID: EP });
      assert.deepEqual([revoke.status, revoke.body], [200, {}]);
    }
    assert.deepEqual((await post(s, 'NetworkDriver.Leave', { NetworkID: NET, EndpointID: EP })).body, {});
  });
});

describe('Docker 25 and later: MACs and endpoint options', () => {
  it("uses the MAC the engine set (docker run --mac-address) and never returns one of its own then", async () => {
    const { s, links } = await app();
    await network28(s);
    const ep = await post(s, 'NetworkDriver.CreateEndpoint', {
      NetworkID: NET,
      EndpointID: EP,
      Interface: { Address: '10.44.0.2/24', AddressIPv6: '', MacAddress: '02:42:aa:bb:cc:dd' },
      Options: { 'com.docker.network.endpoint.macaddress': 'AkKqu8zd', 'com.docker.network.endpoint.exposedports': [], 'com.docker.network.portmap': [] },
    });
    assert.deepEqual([ep.status, ep.body], [200, {}], 'a MAC returned while one was set fails the endpoint on 25+');
    await post(s, 'NetworkDriver.Join', { NetworkID: NET, EndpointID: EP, SandboxKey: '/var/run/docker/netns/x', Options: {} });
    assert.equal(links.links.get('ovcbbbbbbbbbbbb')?.mac, '02:42:aa:bb:cc:dd');
    const derived = await post(s, 'NetworkDriver.CreateEndpoint', { NetworkID: NET, EndpointID: EP2, Interface: { Address: '10.44.0.3/24', AddressIPv6: '', MacAddress: '' }, Options: {} });
    assert.deepEqual(derived.body, { Interface: { MacAddress: '02:42:0a:2c:00:03' } });
  });

  it('refuses an unknown --driver-opt by name, with the valid ones, and passes Docker\'s own options by', async () => {
    const { s, state } = await app();
    await network28(s);
    const refused = await post(s, 'NetworkDriver.CreateEndpoint', {
      NetworkID: NET,
      EndpointID: EP,
      Interface: { Address: '10.44.0.2/24', AddressIPv6: '', MacAddress: '' },
      Options: { colour: 'blue', 'com.docker.network.endpoint.sysctls': 'net.ipv4.conf.IFNAME.forwarding=1', 'com.docker.network.endpoint.exposedports': [] },
    });
    assert.equal(refused.status, 400);
    assert.match(refused.body.Err, /^unknown endpoint option colour=blue \(docker network connect --driver-opt\); valid endpoint options: /);
    assert.equal(state.endpoints.size, 0);
  });
});
