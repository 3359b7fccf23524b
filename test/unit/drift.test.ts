import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { findDrift } from '../../src/domain/host-diff.js';
import { type ObservedHost, desiredHost } from '../../src/domain/host.js';
import { firewallRules } from '../../src/domain/firewall.js';
import { Reconciler } from '../../src/driver/reconcile.js';
import { silentLogger } from '../../src/log.js';
import { FakeDocker } from '../fakes/index.js';
import { id, world } from './setup.js';

const NET = id('1');
const EP = id('e');

async function healthyWorld() {
  const w = await world();
  const pool = await w.ipam.requestPool({ addressSpace: 'local', pool: '10.13.160.0/24', subPool: '', options: {}, v6: false });
  await w.ipam.requestAddress({ poolId: pool.PoolID, address: '10.13.160.1', gateway: true });
  await w.ipam.requestAddress({ poolId: pool.PoolID, address: '10.13.160.2', gateway: false });
  await w.network.createNetwork({
    networkId: NET,
    generic: { vlan: '860' },
    ipv6: false,
    internal: false,
    ipv4Data: [{ addressSpace: 'local', pool: '10.13.160.0/24', gateway: '10.13.160.1/24', auxAddresses: {} }],
    ipv6Data: [],
  });
  await w.network.createEndpoint({ networkId: NET, endpointId: EP, address: '10.13.160.2/24', addressIpv6: '', macAddress: '', optionMac: '' });
  await w.network.join({ networkId: NET, endpointId: EP, sandboxKey: '', options: {} });
  const docker = new FakeDocker();
  docker.add(NET, '10.13.160.0/24', { [EP]: '10.13.160.2' });
  const reconciler = new Reconciler({ ...w, docker, graceMs: 0, log: silentLogger });
  return { ...w, docker, reconciler };
}

describe('drift', () => {
  it('finds nothing on a healthy host', async () => {
    const w = await healthyWorld();
    assert.deepEqual(await w.reconciler.drift(true), []);
  });

  it('names a missing gateway address with the command that puts it back', async () => {
    const w = await healthyWorld();
    w.links.links.get('ovsgw1111111111')!.addresses = [];
    const [item] = await w.reconciler.drift(true);
    assert.equal(item?.kind, 'gateway-address-missing');
    assert.equal(item?.fix, 'ip address add 10.13.160.1/24 dev ovsgw1111111111 && ip link set ovsgw1111111111 up');
  });

  it('reports firewall drift, forwarding off, OVS port errors and endpoints only Docker knows', async () => {
    const w = await healthyWorld();
    w.firewall.current = { v4: { filter: [], nat: [], dnat: [], isolate: [], input: [], raw: [] }, v6: { filter: [], nat: [], dnat: [], isolate: [], input: [], raw: [] } };
    w.sysctl.forwarding = false;
    w.docker.list[0]!.endpoints.set(id('7'), { addresses: ['10.13.160.9'] });
    const kinds = (await w.reconciler.drift(true)).map((d) => d.kind).sort();
    assert.deepEqual(kinds, ['endpoint-unknown-to-plugin', 'firewall-drift', 'firewall-drift', 'firewall-drift', 'firewall-drift', 'firewall-drift', 'ip-forward-off'], 'filter, nat, mangle isolation, raw ports for each family');
    const forwarding = (await w.reconciler.drift(true)).find((d) => d.kind === 'ip-forward-off');
    assert.equal(forwarding?.fix, 'sysctl -w net.ipv4.ip_forward=1');
  });

  it('is what the reconciler acts on: after a pass, the drift it fixes is gone', async () => {
    const w = await healthyWorld();
    w.ovs.ports.set('ovs999999999999', { bridge: 'ovs0', name: 'ovs999999999999', type: '', tag: 1, externalIds: { 'ovsnet-owner': 'ovsnet', 'ovsnet-role': 'endpoint', 'ovsnet-endpoint': id('9') } });
    w.ovs.ports.delete('ovseeeeeeeeeeee');
    const before = (await w.reconciler.drift(true)).map((d) => d.kind).sort();
    assert.deepEqual(before, ['endpoint-port-missing', 'orphan-port']);
    await w.reconciler.run('test', true);
    assert.deepEqual(await w.reconciler.drift(true), []);
  });

  it('compares firewall rules per network, whatever order iptables prints their matches in', () => {
    const records = { networks: [], endpoints: [], pools: [], addresses: [] };
    const observed: ObservedHost = {
      bridges: new Map(),
      ports: new Map(),
      links: new Map(),
      addresses: new Map(),
      firewall: { filter4: ['-i ovsgw1 -m comment --comment ovsnet:aaaaaaaaaaaa -j ACCEPT'], nat4: [], filter6: [], jumps: true },
      ipv4Forwarding: true,
    };
    const [item] = findDrift(records, desiredHost([], [], { datapath: 'netdev' }), observed, { now: Date.now(), graceMs: 0 });
    assert.equal(item?.kind, 'firewall-drift');
    assert.match(item!.detail, /has 1 rules for ovsnet:aaaaaaaaaaaa where 0 belong/);
    assert.deepEqual(firewallRules([]).v4.filter, []);
  });
});
