/**
 * Hosts gone for good, on fakes: reported when they leave the southbound
 * database, forgotten only once shown not to be alive, and back to their
 * addresses if they return after all.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Reconciler } from '../../src/driver/reconcile.js';
import { silentLogger } from '../../src/log.js';
import { FakeDocker, FakeNorthbound, FakeSouthbound } from '../fakes/index.js';
import { id, world } from './setup.js';

const NET = id('d');

/** Makes a host's registration look as if its plugin last renewed it an hour ago. */
function age(nb: FakeNorthbound, chassis: string): void {
  nb.registered.get(chassis)!['ovsnet-seen-at'] = new Date(Date.now() - 3_600_000).toISOString();
}

async function host(nb: FakeNorthbound, sb: FakeSouthbound, chassis: string, encapIp: string) {
  const w = await world({ ovn: { nb, chassis, encapIp, southbound: sb } });
  sb.present.set(chassis, { hostname: `host-${chassis}`, encaps: [encapIp] });
  const pool = await w.ipam.requestPool({ addressSpace: 'local', pool: '10.62.0.0/24', subPool: '', options: {}, v6: false });
  await w.ipam.requestAddress({ poolId: pool.PoolID, address: '10.62.0.1', gateway: true });
  await w.network.createNetwork({ networkId: NET, generic: { mode: 'ovn' }, ipv6: false, internal: false, ipv4Data: [{ addressSpace: 'local', pool: '10.62.0.0/24', gateway: '10.62.0.1/24', auxAddresses: {} }], ipv6Data: [] });
  const { Address } = await w.ipam.requestAddress({ poolId: pool.PoolID, address: '', gateway: false });
  const reconciler = new Reconciler({ state: w.state, network: w.network, ipam: w.ipam, docker: new FakeDocker(), graceMs: 0, log: silentLogger });
  return { ...w, reconciler, address: Address.split('/')[0]! };
}

describe('OVN hosts gone for good', () => {
  it('a host gone from the southbound database is reported with the command that releases what it holds, never released by the reconciler', async () => {
    const nb = new FakeNorthbound();
    const sb = new FakeSouthbound();
    const a = await host(nb, sb, 'chassis-a', '10.250.0.1');
    const b = await host(nb, sb, 'chassis-b', '10.250.0.2');
    assert.deepEqual(await a.reconciler.drift(false), []);
    assert.deepEqual(sb.opened, ['tcp:10.250.0.1:6642'], "the southbound database at this host's ovn-remote");
    sb.present.delete('chassis-b');
    assert.deepEqual(await a.reconciler.drift(false), [], 'not while its plugin renewed its registration within the lease (rebooting, say)');
    age(nb, 'chassis-b');
    const drift = await a.reconciler.drift(false);
    assert.deepEqual(drift.map((d) => [d.kind, d.subject, d.fix]), [['ovn-host-gone', 'chassis-b', 'ovsnet ovn forget-host chassis-b']]);
    assert.match(drift[0]!.detail, /^host host-chassis-b \(chassis chassis-b\) is not in the southbound database and has not renewed its registration, yet holds 1 address and is listed on 1 OVN switch of the networks it shares with this host;/);
    await a.reconciler.repair('test');
    assert.ok(nb.named(`ovsnet-10.62.0.0_24-${b.address}`), "the reconciler leaves another host's claim alone");
  });

  it('forget-host is refused while the host is in the southbound database, claimed recently, or is this host; then releases its addresses, listing and name', async () => {
    const nb = new FakeNorthbound();
    const sb = new FakeSouthbound();
    const a = await host(nb, sb, 'chassis-a', '10.250.0.1');
    const b = await host(nb, sb, 'chassis-b', '10.250.0.2');
    await assert.rejects(a.network.forgetOvnHost('chassis-b', {}), { code: 'HostNotGone', message: /^not forgetting chassis-b: host host-chassis-b \(chassis chassis-b, Geneve 10\.250\.0\.2\) is in the southbound database: .*ovn-sbctl chassis-del chassis-b/ });
    sb.present.delete('chassis-b');
    await assert.rejects(a.network.forgetOvnHost('chassis-b', {}), { code: 'HostNotGone', message: /: (its plugin renewed its registration|it claimed an address) \d+ s ago .* within the last 900 s: it looks alive\. Wait, or give --idle SECONDS/ });
    age(nb, 'chassis-b');
    await assert.rejects(a.network.forgetOvnHost('chassis-b', { idleMs: 3_600_000 }), { code: 'HostNotGone', message: /: it claimed an address \d+ s ago .* within the last 3600 s/ });
    await assert.rejects(a.network.forgetOvnHost('chassis-a', { idleMs: 0 }), { code: 'HostNotGone', message: /chassis-a is this host's own chassis name/ });
    await assert.rejects(a.network.forgetOvnHost('chassis-z', { idleMs: 0 }), { code: 'HostUnknown' });
    assert.ok(nb.named(`ovsnet-10.62.0.0_24-${b.address}`), 'nothing released by a refusal');

    const report = await a.network.forgetOvnHost('chassis-b', { idleMs: 0 });
    assert.deepEqual(report, { chassis: 'chassis-b', hostname: 'host-chassis-b', released: [`10.62.0.0/24 ${b.address}`], unlisted: ['ovsnet-10.62.0.0_24'], registration: true, kept: [] });
    assert.equal(nb.named(`ovsnet-10.62.0.0_24-${b.address}`), undefined);
    assert.equal([...nb.switches.values()][0]!.externalIds['ovsnet-host:chassis-b'], undefined);
    assert.equal(nb.registered.get('chassis-b'), undefined);
    assert.ok(nb.named(`ovsnet-10.62.0.0_24-${a.address}`), "this host's own claim stays");
    assert.deepEqual(await a.reconciler.drift(false), []);

    // It was only down after all: back, it holds its name, its listing and its (still free) address again.
    sb.present.set('chassis-b', { hostname: 'host-chassis-b', encaps: ['10.250.0.2'] });
    assert.deepEqual((await b.reconciler.drift(false)).map((d) => d.kind).sort(), ['ovn-host-not-listed', 'ovn-port-missing']);
    await b.reconciler.repair('test');
    assert.deepEqual(await b.reconciler.drift(false), []);
    assert.equal(nb.named(`ovsnet-10.62.0.0_24-${b.address}`)?.externalIds['ovsnet-chassis'], 'chassis-b');
    assert.equal(nb.registered.get('chassis-b')?.['ovsnet-host-id'], 'id-of-chassis-b');
  });
});
