/**
 * OVN mode in brief, for the engines of the compatibility suite: two simulated
 * hosts with one OVN database member and ovn-controller each, one network
 * across both, containers that reach each other across hosts, the plugin's
 * guard on the integration bridge, and nothing left behind. The whole of OVN
 * mode is test/e2e/ovn.test.ts and ovn-l3.test.ts.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { linkLocalOf } from '../../src/domain/flows.js';
import { ATTACKS, type Peer } from './harness/attacks.js';
import { captureDuring, sendFrames } from './harness/capture.js';
import { OvnCluster, OVN_TOOLS } from './harness/ovn.js';
import { requireTools } from './harness/proc.js';
import { SimHost } from './harness/sim-host.js';
import { Underlay } from './harness/underlay.js';
import { assertConsistent, containerAddress, ping, runContainer } from './support.js';

describe('OVN mode on two hosts', () => {
  let underlay: Underlay;
  let cluster: OvnCluster;
  const hosts: SimHost[] = [];

  before(async () => {
    await requireTools(OVN_TOOLS);
    underlay = await Underlay.create('os-ul');
    for (const [i, name] of ['os1', 'os2'].entries()) {
      const h = await SimHost.start({ name, plugin: false });
      hosts.push(h);
      await underlay.attach(h, `10.250.7.${i + 1}/24`);
    }
    cluster = await OvnCluster.start(hosts.map((host, i) => ({ host, address: `10.250.7.${i + 1}` })), { databases: 1 });
    for (const h of hosts) await h.startPlugin({ OVSNET_OVN_NB: cluster.nbRemotes });
  });
  after(async () => {
    for (const h of hosts) await h.stop().catch(() => {});
    await underlay?.destroy();
  });

  it('one network on both hosts: containers reach each other across hosts, each port bound and guarded, and nothing is left after removal', async () => {
    const [a, b] = [hosts[0]!, hosts[1]!];
    for (const h of hosts) await h.docker(['network', 'create', '-d', h.driver, '--ipam-driver', h.driver, '--subnet', '10.67.0.0/24', '-o', 'mode=ovn', 'smoke']);
    await runContainer(a, 'sa', 'smoke');
    await runContainer(b, 'sb', 'smoke');
    const peer = async (h: SimHost, name: string): Promise<Peer> => {
      const x = await containerAddress(h, name, 'smoke');
      return { name, ip: x.ip, ipv6: x.ipv6, mac: x.mac, ll: linkLocalOf(x.mac) };
    };
    const [sa, sb] = [await peer(a, 'sa'), await peer(b, 'sb')];
    assert.notEqual(sa.ip, sb.ip, 'addresses are unique across hosts');
    assert.ok(await ping(a, 'sa', sb.ip, 3), 'across hosts');
    assert.ok(await ping(b, 'sb', sa.ip, 3), 'and back');
    // What port security and the guard hold: a spoofed ARP and a DHCP offer do not reach the other host.
    const attacks = ATTACKS.filter((x) => /gratuitous ARP|DHCP offer/.test(x.name));
    const got = await captureDuring(b, { container: 'sb' }, () => sendFrames(a, 'sa', attacks.flatMap((x) => x.frames(sa, sb, sb))));
    assert.deepEqual(attacks.filter((x) => got.some((f) => x.seen(f, sa, sb, sb))).map((x) => x.name), []);
    assert.equal((await a.ovsnet(['doctor'], { check: false })).exitCode, 0, 'no drift');
    for (const [h, c] of [[a, 'sa'], [b, 'sb']] as const) await h.docker(['rm', '-f', c]);
    for (const h of hosts) await h.docker(['network', 'rm', 'smoke']);
    for (const h of hosts) await assertConsistent(h);
    assert.equal((await cluster.nbctl(['--bare', '--columns=name', 'find', 'Logical_Switch', 'external_ids:ovsnet-owner=ovsnet'])).stdout.trim(), '', 'no switch left');
  });
});
