/**
 * What every implementation of the Links port must do, run against the fake
 * (unit tier) and the real iproute2 adapter inside a scratch network
 * namespace (integration tier).
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { VETH_GROUP } from '../../src/domain/names.js';
import type { Links } from '../../src/driver/ports.js';

/** Registers the contract's tests; `fresh` gives links with none of the test's devices on it. */
export function linksContract(fresh: () => Promise<Links>): void {
  it('makes a veth pair with its MTU, lists both ends, and deletes both with one', async () => {
    const links = await fresh();
    await links.createVeth({ host: 'ctvh0', peer: 'ctvp0', mtu: 1400, peerMac: '02:42:0a:00:00:05' });
    const listed = await links.list();
    assert.deepEqual([listed.get('ctvh0')?.kind, listed.get('ctvh0')?.mtu, listed.get('ctvp0')?.mtu], ['veth', 1400, 1400]);
    assert.equal(await links.deleteLink('ctvh0'), true);
    assert.equal((await links.list()).has('ctvp0'), false, 'the peer goes with it');
    assert.equal(await links.deleteLink('ctvh0'), false, 'a delete tolerates absence');
  });

  it("puts a veth pair's host end in the plugin's device group, and one made before can be put there", async () => {
    const links = await fresh();
    await links.createVeth({ host: 'ctvh3', peer: 'ctvp3', mtu: 1500, peerMac: '02:42:0a:00:00:08' });
    const made = await links.list();
    assert.deepEqual([made.get('ctvh3')?.group, made.get('ctvh3')?.up], [VETH_GROUP, true]);
    await links.configureAddresses('ctvh3', { mtu: 1500, addresses: [] });
    await links.isolateVeth('ctvh3');
    assert.equal((await links.list()).get('ctvh3')?.group, VETH_GROUP);
    await links.deleteLink('ctvh3');
  });

  it('makes a veth pair again over what an interrupted attempt left', async () => {
    const links = await fresh();
    await links.createVeth({ host: 'ctvh1', peer: 'ctvp1', mtu: 1500, peerMac: '02:42:0a:00:00:06' });
    await links.createVeth({ host: 'ctvh1', peer: 'ctvp1', mtu: 1450, peerMac: '02:42:0a:00:00:06' });
    assert.equal((await links.list()).get('ctvh1')?.mtu, 1450);
    await links.deleteLink('ctvh1');
  });

  it('gives a device exactly the addresses asked for, up, with its MTU, and reads them back', async () => {
    const links = await fresh();
    await links.createVeth({ host: 'ctvh2', peer: 'ctvp2', mtu: 1500, peerMac: '02:42:0a:00:00:07' });
    await links.configureAddresses('ctvh2', { mtu: 1480, addresses: ['10.9.0.1/24', 'fd00:9::1/64'] });
    await links.configureAddresses('ctvh2', { mtu: 1480, addresses: ['10.9.0.1/24', '10.9.1.1/24'] });
    assert.deepEqual([...((await links.addresses()).get('ctvh2') ?? [])].sort(), ['10.9.0.1/24', '10.9.1.1/24']);
    const link = (await links.list()).get('ctvh2');
    assert.deepEqual([link?.mtu, link?.up], [1480, true]);
    await links.deleteLink('ctvh2');
  });
}
