import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { CreateNetworkRequest } from '../../src/protocol/network.js';
import { tunnelPortName } from '../../src/domain/names.js';
import { id, world } from './setup.js';

const NET = id('1');
const NET2 = id('2');
const EP = id('e');

function req(generic: Record<string, string>, o: Partial<CreateNetworkRequest> & { pool?: string } = {}): CreateNetworkRequest {
  const pool = o.pool ?? '192.168.0.0/24';
  return {
    networkId: NET,
    generic,
    ipv6: false,
    internal: false,
    ipv4Data: [{ addressSpace: 'local', pool, gateway: pool.replace('.0/24', '.1/24'), auxAddresses: {} }],
    ipv6Data: [],
    ...o,
  };
}

/** A host whose underlay address is on a netdev bridge br-phy (MTU 1500), with two peers reachable through it. */
async function underlayWorld() {
  const w = await world();
  w.ovs.bridges.set('br-phy', { name: 'br-phy', datapathType: 'netdev', externalIds: {}, ports: ['br-phy'] });
  w.links.links.set('br-phy', { kind: 'openvswitch', mtu: 1500, addresses: ['10.250.0.1/24'], txOff: false });
  w.links.links.set('eth9', { kind: 'device', mtu: 9000, addresses: [], txOff: false });
  for (const peer of ['10.250.0.2', '10.250.0.3']) w.links.routeTable.set(peer, { dev: 'br-phy', local: false });
  w.links.routeTable.set('10.250.0.1', { dev: 'lo', local: true });
  w.links.routeTable.set('10.99.0.1', { dev: 'eth9', local: false });
  return w;
}

describe('overlays', () => {
  it('adds one keyed tunnel port per peer on a tag of its own, and derives the MTU', async () => {
    const { network, ovs, state } = await underlayWorld();
    await network.createNetwork(req({ mode: 'vxlan', vni: '5001', peers: '10.250.0.2,10.250.0.3' }));
    const record = state.networks.get(NET)!;
    assert.equal(record.localTag, 4094);
    assert.equal(record.mtu, 1450, '1500 minus 50 bytes of VXLAN');
    assert.equal(record.gatewayPort, undefined, 'no gateway on the host for an overlay');
    const port = ovs.ports.get(tunnelPortName(NET, '10.250.0.2'))!;
    assert.equal(port.type, 'vxlan');
    assert.equal(port.tag, 4094);
    assert.deepEqual(port.options, { remote_ip: '10.250.0.2', key: '5001' });
    assert.equal(port.protected, true, 'split horizon: tunnels never forward to each other');
    assert.deepEqual(port.externalIds, { 'ovsnet-owner': 'ovsnet', 'ovsnet-network': NET, 'ovsnet-role': 'tunnel', 'ovsnet-peer': '10.250.0.2' });
    assert.ok(ovs.ports.has(tunnelPortName(NET, '10.250.0.3')));
  });

  it('takes GRE overhead, and four bytes more for a VLAN tag carried inside', async () => {
    const gre = await underlayWorld();
    await gre.network.createNetwork(req({ mode: 'gre', key: '77', peers: '10.250.0.2' }));
    assert.equal(gre.state.networks.get(NET)?.mtu, 1458);
    const tagged = await underlayWorld();
    await tagged.network.createNetwork(req({ mode: 'vxlan', vni: '9', vlan: '300', peers: '10.250.0.2' }));
    assert.equal(tagged.state.networks.get(NET)?.mtu, 1446);
    const port = tagged.ovs.ports.get(tunnelPortName(NET, '10.250.0.2'))!;
    assert.deepEqual([port.tag, port.trunks], [undefined, [300]], 'a trunk of one VLAN: the tag travels inside');
  });

  it('refuses an MTU the path cannot carry, naming the maximum and why', async () => {
    const { network, state } = await underlayWorld();
    await assert.rejects(network.createNetwork(req({ mode: 'vxlan', vni: '5', peers: '10.250.0.2', mtu: '1500' })), {
      kind: 'BadRequest',
      message: 'invalid value "1500" for option mtu: at most 1450 (the path to 10.250.0.2 (MTU 1500 on br-phy) minus VXLAN encapsulation takes 50 bytes)',
    });
    assert.equal(state.networks.size, 0);
  });

  it('refuses peers it cannot tunnel to, and says how to fix the userspace datapath', async () => {
    const { network } = await underlayWorld();
    await assert.rejects(network.createNetwork(req({ mode: 'vxlan', vni: '5', peers: '10.250.0.1' })), /invalid peer 10.250.0.1: it is an address of this host/);
    await assert.rejects(network.createNetwork(req({ mode: 'vxlan', vni: '5', peers: '10.77.0.1' })), /invalid peer 10.77.0.1: this host has no route to it/);
    await assert.rejects(
      network.createNetwork(req({ mode: 'vxlan', vni: '5', peers: '10.99.0.1' })),
      /on the userspace \(netdev\) datapath, tunnel packets must leave through an OVS netdev bridge .* the route to 10.99.0.1 goes through eth9\. .*ovs-vsctl add-br br-phy/,
    );
  });

  it('refuses a VNI another network uses, and a vlan an overlay would share', async () => {
    const { network } = await underlayWorld();
    await network.createNetwork(req({ mode: 'vxlan', vni: '5001', peers: '10.250.0.2' }));
    await assert.rejects(network.createNetwork(req({ mode: 'vxlan', vni: '5001' }, { networkId: NET2, pool: '192.168.5.0/24' })), /vni 5001 is already used by network 111111111111/);
    await assert.rejects(network.createNetwork(req({ vlan: '4094' }, { networkId: NET2, pool: '192.168.5.0/24' })), /vlan 4094 on bridge ovs0 is already used by network 111111111111 \(mode=vxlan\)/);
    await network.createNetwork(req({ mode: 'gre', key: '5001' }, { networkId: NET2, pool: '192.168.6.0/24' }));
  });

  it('leaves the default route of an overlay in nat mode to docker_gwbridge', async () => {
    const { network } = await underlayWorld();
    await network.createNetwork(req({ mode: 'vxlan', vni: '5', peers: '10.250.0.2' }));
    await network.createEndpoint({ networkId: NET, endpointId: EP, address: '192.168.0.7/24', addressIpv6: '', macAddress: '', optionMac: '' });
    const answer = await network.join({ networkId: NET, endpointId: EP, sandboxKey: '', options: {} });
    assert.deepEqual(answer, { InterfaceName: { SrcName: 'ovceeeeeeeeeeee', DstPrefix: 'eth' } });
  });

  it('changes peers without recreating the network, checking the new path', async () => {
    const { network, ovs, state } = await underlayWorld();
    await network.createNetwork(req({ mode: 'vxlan', vni: '5', peers: '10.250.0.2' }));
    await network.setPeers(NET, ['10.250.0.3']);
    assert.ok(!ovs.ports.has(tunnelPortName(NET, '10.250.0.2')));
    assert.ok(ovs.ports.has(tunnelPortName(NET, '10.250.0.3')));
    const peers = () => {
      const spec = state.networks.get(NET)!.spec;
      return spec.mode === 'vxlan' || spec.mode === 'gre' ? spec.peers : undefined;
    };
    assert.deepEqual(peers(), ['10.250.0.3']);
    await assert.rejects(network.setPeers(NET, ['10.250.0.1']), /it is an address of this host/);
    assert.deepEqual(peers(), ['10.250.0.3'], 'a refused change keeps the peers');
  });

  it('removes its tunnel ports with the network', async () => {
    const { network, ovs } = await underlayWorld();
    await network.createNetwork(req({ mode: 'vxlan', vni: '5', peers: '10.250.0.2,10.250.0.3' }));
    await network.deleteNetwork(NET);
    assert.deepEqual([...ovs.ports.keys()], []);
  });
});

describe('uplinks', () => {
  async function uplinkWorld() {
    const w = await world();
    w.links.links.set('eth1', { kind: 'veth', mtu: 1500, addresses: [], txOff: false });
    w.links.links.set('eth2', { kind: 'veth', mtu: 1500, addresses: ['192.168.50.2/24'], txOff: false });
    w.links.links.set('eth3', { kind: 'veth', mtu: 1500, addresses: [], txOff: false });
    return w;
  }

  it('attaches the uplink as a trunk of the VLANs that name it, and detaches it with the last one', async () => {
    const { network, ovs } = await uplinkWorld();
    await network.createNetwork(req({ vlan: '100', uplink: 'eth1', gateway_mode: 'external' }));
    assert.deepEqual(ovs.ports.get('eth1')?.trunks, [100]);
    assert.equal(ovs.ports.get('eth1')?.externalIds['ovsnet-role'], 'uplink');
    await network.createNetwork(req({ vlan: '200', uplink: 'eth1', gateway_mode: 'external' }, { networkId: NET2, pool: '192.168.2.0/24' }));
    assert.deepEqual(ovs.ports.get('eth1')?.trunks, [100, 200]);
    await network.deleteNetwork(NET);
    assert.deepEqual(ovs.ports.get('eth1')?.trunks, [200]);
    await network.deleteNetwork(NET2);
    assert.ok(!ovs.ports.has('eth1'));
  });

  it('refuses an interface with addresses and says how to move them', async () => {
    const { network, ovs } = await uplinkWorld();
    await assert.rejects(network.createNetwork(req({ vlan: '100', uplink: 'eth2' })), (err: Error) => {
      assert.match(err.message, /^invalid value "eth2" for option uplink: it carries 192\.168\.50\.2\/24, and attaching it to a bridge would cut the host off that network/);
      assert.match(err.message, /ip address add 192\.168\.50\.2\/24 dev ovs0/);
      return true;
    });
    assert.ok(!ovs.ports.has('eth2'));
  });

  it('refuses a missing interface, the default route interface, a port someone else attached, and a second uplink', async () => {
    const { network, ovs, links } = await uplinkWorld();
    await assert.rejects(network.createNetwork(req({ uplink: 'eth7' })), /no such interface on this host/);
    links.defaultDevices.push('eth3');
    await assert.rejects(network.createNetwork(req({ uplink: 'eth3' })), /it carries the host default route/);
    ovs.bridges.set('ovs0', { name: 'ovs0', datapathType: 'netdev', externalIds: {}, ports: ['ovs0'] });
    ovs.ports.set('eth1', { bridge: 'ovs0', name: 'eth1', type: '', tag: undefined, externalIds: {} });
    await assert.rejects(network.createNetwork(req({ uplink: 'eth1' })), /already a port of an OVS bridge, attached by someone else/);
    ovs.ports.delete('eth1');
    await network.createNetwork(req({ vlan: '100', uplink: 'eth1' }));
    links.links.set('eth4', { kind: 'veth', mtu: 1500, addresses: [], txOff: false });
    await assert.rejects(network.createNetwork(req({ vlan: '101', uplink: 'eth4' }, { networkId: NET2, pool: '192.168.2.0/24' })), /bridge ovs0 already has uplink eth1/);
  });

  it('caps the MTU at the uplink MTU', async () => {
    const { network } = await uplinkWorld();
    await assert.rejects(network.createNetwork(req({ vlan: '100', uplink: 'eth1', mtu: '9000' })), /at most 1500 \(the MTU of uplink eth1\)/);
  });
});
