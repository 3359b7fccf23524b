/**
 * The OVSDB client and the OVS bridge client against a real ovsdb-server and
 * ovs-vswitchd (userspace datapath) in a scratch network namespace: the
 * Ovs contract, plus what only the real thing does (waiting for
 * ovs-vswitchd, OVS's own errors, reconnecting).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { OvsBridgeClient } from '../../src/adapters/ovs.js';
import { OvsdbClient } from '../../src/adapters/ovsdb.js';
import { gatewayPort, ownedBridge } from '../../src/domain/host.js';
import { silentLogger } from '../../src/log.js';
import { ovsRundir } from '../../src/wiring.js';
import { guardFor, parseFlowCookies, portCookiePrefix, portFlows } from '../../src/domain/flows.js';
import { ovsContract } from '../contract/ovs.js';
import { SimHost } from '../e2e/harness/sim-host.js';
import { waitFor } from '../e2e/harness/proc.js';

describe('OVS adapters on a real ovsdb-server and ovs-vswitchd', () => {
  let host: SimHost;
  let db: OvsdbClient;
  let ovs: OvsBridgeClient;

  before(async () => {
    host = await SimHost.start({ name: 'it-ovs', docker: false });
    db = new OvsdbClient({ address: host.ovsdb, log: silentLogger, requestTimeoutMs: 5_000 });
    ovs = new OvsBridgeClient(db, { applyTimeoutMs: 3_000, rundir: ovsRundir(host.ovsdb) });
  });
  after(async () => {
    ovs?.close();
    db?.close();
    await host?.stop();
  });

  /** Nothing of an earlier test left: no bridge, no test device. */
  async function clean(): Promise<void> {
    for (const bridge of (await host.vsctl(['list-br'])).stdout.split('\n').filter(Boolean)) await host.vsctl(['--if-exists', 'del-br', bridge]);
    for (const link of await host.links()) if (link.kind === 'veth') await host.exec('ip', ['link', 'del', 'dev', link.name], { check: false });
  }

  describe('the Ovs contract', () => {
    ovsContract(async () => {
      await clean();
      return {
        ovs,
        foreignBridge: async (name) => void (await host.vsctl(['add-br', name, '--', 'set', 'bridge', name, 'datapath_type=netdev'])),
        foreignPort: async (bridge, name) => void (await host.vsctl(['add-port', bridge, name, '--', 'set', 'interface', name, 'type=internal'])),
        device: async (name) => void (await host.exec('ip', ['link', 'add', 'name', name, 'up', 'type', 'veth', 'peer', 'name', `${name.slice(0, 12)}pp`])),
        foreignFlow: async (bridge, cookie) => void (await host.ofctl(['add-flow', bridge, `cookie=${cookie},priority=5,udp,tp_dst=9,actions=drop`])),
        allCookies: async (bridge) => parseFlowCookies((await host.ofctl(['dump-flows', bridge])).stdout),
      };
    });
  });

  it('answers only once ovs-vswitchd has the port, with its OpenFlow port number', async () => {
    await clean();
    await ovs.ensureBridge(ownedBridge('itbr0', 'netdev'));
    const port = { ...gatewayPort({ id: '2'.repeat(64), gatewayPort: 'ovsgw2222222222', spec: { bridge: 'itbr0' }, localTag: 9, mtu: 1500 } as never), bridge: 'itbr0' };
    await ovs.addPort(port);
    const ofport = Number((await host.vsctl(['get', 'interface', port.name, 'ofport'])).stdout.trim());
    assert.ok(ofport > 0, `ofport ${ofport}`);
    assert.ok((await host.links()).some((l) => l.name === port.name), 'the internal port exists in the kernel already');
  });

  it("reports OVS's own error for a port whose device does not exist", async () => {
    await clean();
    await ovs.ensureBridge(ownedBridge('itbr0', 'netdev'));
    const port = { ...gatewayPort({ id: '3'.repeat(64), gatewayPort: 'ovsnodevice0001', spec: { bridge: 'itbr0' }, localTag: 9, mtu: 1500 } as never), type: '', mtuRequest: undefined };
    await assert.rejects(ovs.addPort(port), (err: Error & { code?: string }) => err.code === 'PortFailed' && /ovsnodevice0001/.test(err.message) && /could not open|No such device/i.test(err.message));
  });

  it('writes each guard flow over OpenFlow exactly as ovs-ofctl reads it back, and again after ovs-vswitchd restarts', async () => {
    await clean();
    await ovs.ensureBridge(ownedBridge('itbr0', 'netdev'));
    const guard = guardFor({ antiSpoofing: true, allowRa: false, allowDhcpServer: false, rate: { mbit: 3, burstKbit: 300 } }, { mac: '02:42:0a:09:00:07', address: '10.9.0.7/24', addressIpv6: 'fd00::7/64' })!;
    const flows = portFlows('itbr0', 'ovs777777777777', 41, guard);
    /** Each flow's match and actions, as sorted terms, from our text and from ovs-ofctl's dump. */
    const terms = (text: string) => text.replace(/^table=0,/, '').replace(/,?actions=/, ',actions=').split(',').filter(Boolean).sort().join(',');
    const dumped = async () => {
      const out = new Map<string, string>();
      for (const line of (await host.ofctl(['dump-flows', 'itbr0', '--no-stats'])).stdout.split('\n')) {
        const m = /cookie=(0x[0-9a-f]+), (.*) actions=(.*)$/.exec(line.trim());
        if (m) out.set(BigInt(m[1]!).toString(16), terms(`${m[2]},actions=${m[3]}`));
      }
      return out;
    };
    await ovs.setPortFlows(flows, { before: [portCookiePrefix('ovs777777777777')] });
    let seen = await dumped();
    for (const f of flows.flows) assert.equal(seen.get(BigInt(f.cookie).toString(16)), terms(f.text), `flow ${f.text}`);
    assert.equal(seen.size, flows.flows.length);

    // ovs-vswitchd restarts: the kept connection is gone; a watched bridge says when it is back, and the next change opens another.
    const back: string[] = [];
    ovs.watchFlows(['itbr0'], (bridge) => back.push(bridge));
    await host.stopVswitchd();
    await host.startVswitchd();
    await waitFor('the watch to see the bridge back', async () => back.length > 0, 15_000, 100);
    assert.deepEqual(back, ['itbr0']);
    ovs.watchFlows([], () => {});
    await ovs.setPortFlows(flows, {});
    seen = await dumped();
    assert.equal(seen.size, flows.flows.length, 'the flows are back');
    await ovs.deleteFlows('itbr0', [portCookiePrefix('ovs777777777777')], [41]);
    assert.equal((await dumped()).size, 0);
  });

  it('names the failing operation of a transaction', async () => {
    await assert.rejects(
      db.transact([{ op: 'insert', table: 'Bridge', row: { name: 'x', no_such_column: 1 } }]),
      (err: Error) => /OVSDB transaction failed \(operation 0: insert Bridge\)/.test(err.message),
    );
  });

  it('says ovs-vswitchd is not applying changes when it is down, once the timeout is over', async () => {
    await clean();
    await ovs.ensureBridge(ownedBridge('itbr0', 'netdev'));
    await host.stopVswitchd();
    try {
      const port = { ...gatewayPort({ id: '4'.repeat(64), gatewayPort: 'ovsgw4444444444', spec: { bridge: 'itbr0' }, localTag: 9, mtu: 1500 } as never), bridge: 'itbr0' };
      await assert.rejects(ovs.addPort(port), { kind: 'Unavailable', code: 'VswitchdTimeout' });
    } finally {
      await host.startVswitchd();
    }
  });

  it('reconnects after ovsdb-server restarts, and says so', async () => {
    let reconnected = 0;
    db.onReconnect = () => reconnected++;
    await host.stopOvsdb();
    await host.startOvsdb();
    await waitFor('the client to reconnect', async () => reconnected > 0, 15_000, 100);
    assert.ok(Array.isArray((await ovs.snapshot()).bridges));
    db.onReconnect = undefined;
  });
});
