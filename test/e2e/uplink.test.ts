/**
 * The production layout: the host's NIC attached to the bridge as a VLAN
 * trunk, so containers sit on VLANs of the physical network. A veth stands in
 * for the NIC, a namespace running its own Open vSwitch stands in for the
 * switch (trunk port to the host, access ports on VLAN 100 and 200), and two
 * namespaces stand in for machines on those VLANs, on the same subnet.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { cmd } from './harness/proc.js';
import { SimHost, tagged } from './harness/sim-host.js';
import { assertPluginSaid, audit, dockerError, ping, runContainer, startWhoAmI, tcpSay } from './support.js';
import { assertUnrouted } from './harness/addresses.js';

describe('VLAN trunk uplink', () => {
  let host: SimHost;
  let sw: SimHost;
  const servers: Array<{ stop: () => void }> = [];
  const machines = { 100: `ovsnet-t-${tagged('up-m100')}`, 200: `ovsnet-t-${tagged('up-m200')}` } as const;

  /** A machine on a VLAN of the switch. Its NIC computes checksums itself, as a physical NIC does. */
  async function machine(vlan: 100 | 200, address: string): Promise<void> {
    const ns = machines[vlan];
    await cmd('ip', ['netns', 'del', ns], { check: false });
    await cmd('ip', ['netns', 'add', ns]);
    const port = `m${vlan}`;
    await sw.exec('ip', ['link', 'add', 'name', port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
    await sw.exec('ethtool', ['-K', port, 'tx', 'off']);
    await sw.exec('ip', ['link', 'set', port, 'up']);
    await sw.vsctl(['add-port', 'sw0', port, `tag=${vlan}`]);
    await cmd('ip', ['netns', 'exec', ns, 'ethtool', '-K', 'eth0', 'tx', 'off']);
    await assertUnrouted([`${address}/24`], `the machine on VLAN ${vlan}`);
    await cmd('ip', ['-n', ns, 'address', 'add', `${address}/24`, 'dev', 'eth0']);
    await cmd('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
    await cmd('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    servers.push(await startWhoAmI(ns, 9000));
  }

  before(async () => {
    host = await SimHost.start({ name: 'up' });
    sw = await SimHost.start({ name: 'up-sw', docker: false });
    await sw.vsctl(['add-br', 'sw0', '--', 'set', 'bridge', 'sw0', 'datapath_type=netdev']);
    // The cable from the host's NIC (eth1) to the switch's trunk port.
    await host.exec('ip', ['link', 'add', 'name', 'eth1', 'type', 'veth', 'peer', 'name', 'trunk0', 'netns', sw.ns]);
    await host.exec('ip', ['link', 'set', 'eth1', 'up']);
    await sw.exec('ip', ['link', 'set', 'trunk0', 'up']);
    await sw.vsctl(['add-port', 'sw0', 'trunk0', 'trunks=100,200']);
    await machine(100, '10.100.0.10');
    await machine(200, '10.100.0.20');
    // A second NIC that carries an address: the plugin must refuse it.
    await host.exec('ip', ['link', 'add', 'name', 'eth2', 'type', 'veth', 'peer', 'name', 'eth2p']);
    await assertUnrouted(['192.168.50.2/24'], 'the host\'s second NIC');
    await host.exec('ip', ['address', 'add', '192.168.50.2/24', 'dev', 'eth2']);
  });
  after(async () => {
    for (const s of servers) s.stop();
    for (const ns of Object.values(machines)) await cmd('ip', ['netns', 'del', ns], { check: false });
    await host?.stop();
    await sw?.stop();
  });

  it('puts containers on VLAN 100 of the physical network, reaching a machine there', async () => {
    await host.docker(['network', 'create', '-d', host.driver, '--ipam-driver', host.driver, '--subnet', '10.100.0.0/24', '--gateway', '10.100.0.1',
      '--ip-range', '10.100.0.128/25', '-o', 'vlan=100', '-o', 'uplink=eth1', '-o', 'gateway_mode=external', 'vlan100']);
    const uplink = (await host.ownedPorts()).find((p) => p.name === 'eth1');
    assert.equal(uplink?.externalIds['ovsnet-role'], 'uplink');
    assert.equal((await host.vsctl(['get', 'port', 'eth1', 'trunks'])).stdout.trim(), '[100]');
    await runContainer(host, 'u1', 'vlan100');
    assert.ok(await ping(host, 'u1', '10.100.0.10', 3), 'the machine on VLAN 100 answers');
    const u1 = (await host.docker(['exec', 'u1', 'ip', '-o', '-4', 'addr', 'show', 'eth0'])).stdout.match(/inet (\S+)\//)![1];
    assert.equal(await tcpSay(host, 'u1', '10.100.0.10', 9000), u1, 'TCP to the machine, which sees the container address');
  });

  it('keeps VLAN 200 of the same switch out', async () => {
    assert.equal(await ping(host, 'u1', '10.100.0.20', 2), false, 'the machine on VLAN 200 is another segment');
    assert.equal(await tcpSay(host, 'u1', '10.100.0.20', 9000), undefined);
  });

  it('extends the trunk when another VLAN network uses the uplink', async () => {
    await host.docker(['network', 'create', '-d', host.driver, '--ipam-driver', host.driver, '--subnet', '10.200.5.0/24', '-o', 'vlan=200', '-o', 'uplink=eth1', '-o', 'gateway_mode=external', 'vlan200']);
    assert.equal((await host.vsctl(['get', 'port', 'eth1', 'trunks'])).stdout.trim(), '[100, 200]');
    await host.docker(['network', 'rm', 'vlan200']);
    assert.equal((await host.vsctl(['get', 'port', 'eth1', 'trunks'])).stdout.trim(), '[100]');
  });

  it('refuses an interface that carries addresses, explaining how to move them', async () => {
    const before = await audit(host);
    const err = await dockerError(host, ['network', 'create', '-d', host.driver, '--ipam-driver', host.driver, '--subnet', '10.100.1.0/24', '-o', 'vlan=101', '-o', 'bridge=ovs1', '-o', 'uplink=eth2', 'refused']);
    assertPluginSaid(err, 'NetworkDriver.CreateNetwork', /^invalid value "eth2" for option uplink: it carries 192\.168\.50\.2\/24, and attaching it to a bridge would cut the host off that network\. Move the addresses to the bridge yourself/);
    assert.match(err, /ip address add 192\.168\.50\.2\/24 dev ovs1/);
    assert.deepEqual(await audit(host), before);
    assert.equal((await host.vsctl(['br-exists', 'ovs1'], { check: false })).exitCode, 2, 'no bridge was created for the refused network');
    assert.equal((await host.vsctl(['port-to-br', 'eth2'], { check: false })).exitCode, 1, 'eth2 was not attached');
    const addr = await host.exec('ip', ['-br', 'address', 'show', 'dev', 'eth2']);
    assert.match(addr.stdout, /192\.168\.50\.2\/24/, 'and keeps its address');
  });

  it('detaches the uplink with the last network that uses it, and leaves the NIC as it was', async () => {
    await host.docker(['rm', '-f', 'u1']);
    await host.docker(['network', 'rm', 'vlan100']);
    assert.equal((await host.vsctl(['port-to-br', 'eth1'], { check: false })).exitCode, 1, 'eth1 is no port any more');
    assert.ok((await host.links()).some((l) => l.name === 'eth1'), 'the interface itself is still there');
  });
});
