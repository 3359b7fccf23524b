/**
 * What every implementation of the Northbound port must do, run against the
 * fake (unit tier) and the real client on a scratch OVN northbound
 * ovsdb-server (integration tier): one switch per subnet, unique port names,
 * conditional deletes, and never a change to another host's port.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import type { Northbound } from '../../src/driver/ports.js';

const mark = (subnet: string, extra: Record<string, string> = {}) => ({ 'ovsnet-owner': 'ovsnet', 'ovsnet-subnet': subnet, ...extra });
const row = (name: string, externalIds: Record<string, string>) => ({ name, externalIds, guard: [] });
const port = (name: string, chassis: string) => ({ name, addresses: [], portSecurity: [], externalIds: { 'ovsnet-owner': 'ovsnet', 'ovsnet-chassis': chassis, 'ovsnet-address': name } });

/** Registers the contract's tests; `fresh` gives a database with none of the plugin's rows. */
export function northboundContract(fresh: () => Promise<Northbound>): void {
  it('makes one switch per subnet: a second create gives the first one', async () => {
    const nb = await fresh();
    const first = await nb.createSwitch('10.9.0.0/24', row('a', mark('10.9.0.0/24')));
    const second = await nb.createSwitch('10.9.0.0/24', row('b', mark('10.9.0.0/24')));
    assert.deepEqual([first.created, second.created, second.sw.uuid, second.sw.name], [true, false, first.sw.uuid, 'a']);
    assert.equal((await nb.findSwitch('10.9.0.0/24'))?.uuid, first.sw.uuid);
    assert.equal(await nb.findSwitch('10.8.0.0/24'), undefined);
  });

  it("makes a switch with its guard ACLs and replaces them whole, leaving another's ACL on it", async () => {
    const nb = await fresh();
    const acl = (match: string) => ({ direction: 'from-lport' as const, priority: 32000, match, action: 'drop' as const, externalIds: mark('10.9.5.0/24') });
    const { sw } = await nb.createSwitch('10.9.5.0/24', { name: 'g', externalIds: mark('10.9.5.0/24'), guard: [acl('udp.src == 67'), acl('icmp6.type == 134')] });
    assert.deepEqual(sw.guard?.map((a) => a.match).sort(), ['icmp6.type == 134', 'udp.src == 67']);
    const found = (await nb.findSwitch('10.9.5.0/24'))!;
    assert.deepEqual(found.guard?.map((a) => a.match).sort(), ['icmp6.type == 134', 'udp.src == 67'], 'read back with the switch');
    assert.equal(await nb.setGuard(found, [acl('udp.src == 547')]), true);
    assert.deepEqual((await nb.findSwitch('10.9.5.0/24'))?.guard?.map((a) => a.match), ['udp.src == 547']);
    assert.deepEqual((await nb.view()).switches.find((s) => s.uuid === sw.uuid)?.guard?.map((a) => a.match), ['udp.src == 547'], 'and in the view');
    await nb.deleteSwitchIf(sw.uuid, (await nb.findSwitch('10.9.5.0/24'))!.externalIds);
    assert.equal(await nb.setGuard(found, []), false, 'no switch, nothing set');
  });

  it('sets and removes external_ids of a switch, and says when the switch is gone', async () => {
    const nb = await fresh();
    const { sw } = await nb.createSwitch('10.9.1.0/24', row('s', mark('10.9.1.0/24', { 'ovsnet-host:a': 'a' })));
    assert.equal(await nb.updateSwitchIds(sw.uuid, { 'ovsnet-host:b': 'b' }, ['ovsnet-host:a']), true);
    assert.deepEqual((await nb.findSwitch('10.9.1.0/24'))?.externalIds, mark('10.9.1.0/24', { 'ovsnet-host:b': 'b' }));
    assert.equal(await nb.deleteSwitchIf(sw.uuid, mark('10.9.1.0/24', { 'ovsnet-host:a': 'a' })), false, 'not while someone changed it');
    assert.equal(await nb.deleteSwitchIf(sw.uuid, mark('10.9.1.0/24', { 'ovsnet-host:b': 'b' })), true);
    assert.equal(await nb.updateSwitchIds(sw.uuid, { x: 'y' }, []), false);
  });

  it('holds a port name once: a second add says who holds it; a port needs its switch', async () => {
    const nb = await fresh();
    const { sw } = await nb.createSwitch('10.9.2.0/24', row('p', mark('10.9.2.0/24')));
    assert.deepEqual(await nb.addPort(sw.uuid, port('p-10.9.2.5', 'a')), { added: true });
    const again = await nb.addPort(sw.uuid, port('p-10.9.2.5', 'b'));
    assert.ok(!again.added && again.reason === 'taken');
    assert.equal(again.holder?.externalIds['ovsnet-chassis'], 'a');
    assert.deepEqual((await nb.view()).ports.get(sw.uuid)?.map((p) => p.name), ['p-10.9.2.5']);
    await nb.deleteSwitchIf(sw.uuid, (await nb.findSwitch('10.9.2.0/24'))!.externalIds);
    assert.equal(await nb.port('p-10.9.2.5'), undefined, "a switch's ports go with it");
    assert.deepEqual(await nb.addPort(sw.uuid, port('p-10.9.2.6', 'a')), { added: false, reason: 'no-switch' });
    assert.equal(await nb.port('p-10.9.2.6'), undefined, 'and nothing is left of the refused port');
  });

  it("changes and deletes only this host's ports", async () => {
    const nb = await fresh();
    const { sw } = await nb.createSwitch('10.9.3.0/24', row('q', mark('10.9.3.0/24')));
    await nb.addPort(sw.uuid, port('q-1', 'a'));
    const changes = { addresses: ['02:42:0a:09:03:01 10.9.3.1'], portSecurity: ['02:42:0a:09:03:01 10.9.3.1'], externalIds: { 'ovsnet-endpoint': 'e1' } };
    assert.equal(await nb.updatePort('q-1', 'b', changes), false);
    assert.equal(await nb.updatePort('q-1', 'a', changes), true);
    const updated = (await nb.port('q-1'))!;
    assert.deepEqual([updated.addresses, updated.portSecurity, updated.externalIds['ovsnet-endpoint'], updated.externalIds['ovsnet-chassis']], [changes.addresses, changes.portSecurity, 'e1', 'a']);
    assert.equal(await nb.deletePort(sw.uuid, 'q-1', 'b'), false);
    // Decided on an older reading: the port changed since (claimed again, say), so it stays.
    const older = { ...updated.externalIds, 'ovsnet-endpoint': 'e0' };
    assert.equal(await nb.deletePort(sw.uuid, 'q-1', 'a', older), false, 'a port changed since it was read is not deleted');
    assert.ok(await nb.port('q-1'));
    assert.equal(await nb.deletePort(sw.uuid, 'q-1', 'a', updated.externalIds), true, 'as read, it is');
    assert.equal(await nb.port('q-1'), undefined);
    assert.equal(await nb.deletePort(sw.uuid, 'q-1', 'a'), false, 'a delete tolerates absence');
  });

  it('reads the ports in scope: those of the subnets asked for, and of one chassis anywhere; every switch always', async () => {
    const nb = await fresh();
    const a = (await nb.createSwitch('10.9.6.0/24', row('s6', mark('10.9.6.0/24')))).sw;
    const b = (await nb.createSwitch('10.9.7.0/24', row('s7', mark('10.9.7.0/24')))).sw;
    await nb.addPort(a.uuid, { ...port('s6-1', 'x'), externalIds: { ...port('s6-1', 'x').externalIds, 'ovsnet-subnet': '10.9.6.0/24' } });
    await nb.addPort(b.uuid, { ...port('s7-1', 'x'), externalIds: { ...port('s7-1', 'x').externalIds, 'ovsnet-subnet': '10.9.7.0/24' } });
    await nb.addPort(b.uuid, { ...port('s7-2', 'y'), externalIds: { ...port('s7-2', 'y').externalIds, 'ovsnet-subnet': '10.9.7.0/24' } });
    const names = (view: Awaited<ReturnType<Northbound['view']>>) => [...view.ports.values()].flat().map((p) => p.name).sort();
    const scoped = await nb.view({ subnets: ['10.9.6.0/24'] });
    assert.deepEqual(scoped.switches.map((s) => s.name), ['s6'], 'the switches of the subnets asked for');
    assert.deepEqual(names(scoped), ['s6-1']);
    assert.deepEqual((await nb.view({ subnets: [], names: ['s7'], ports: false })).switches.map((s) => s.name), ['s7'], 'and of the names asked for');
    await nb.updateSwitchIds(b.uuid, { 'ovsnet-host:y': 'host-y' }, []);
    assert.deepEqual((await nb.view({ subnets: [], chassis: { name: 'y', hostname: 'host-y' }, ports: false })).switches.map((s) => s.name), ['s7'], 'and those that list the chassis');
    assert.deepEqual((await nb.view({ subnets: ['10.9.6.0/24'], chassis: { name: 'x' } })).switches.map((s) => s.name).sort(), ['s6', 's7'], "and those that hold the chassis' ports");
    assert.deepEqual((await nb.view()).switches.map((s) => s.name).sort(), ['s6', 's7'], 'every switch, unscoped');
    assert.deepEqual(names(await nb.view({ subnets: ['10.9.6.0/24'], chassis: { name: 'y' } })), ['s6-1', 's7-2']);
    assert.deepEqual(names(await nb.view({ subnets: [], everySwitch: true, chassis: { name: 'x' } })), ['s6-1', 's7-1']);
    assert.deepEqual(names(await nb.view({ ports: false })), []);
    for (const sw of [a, b]) await nb.deleteSwitchIf(sw.uuid, (await nb.findSwitch(sw.externalIds['ovsnet-subnet']!))!.externalIds);
  });

  it('registers a chassis name once, and changes a registration only while it is as read', async () => {
    const nb = await fresh();
    const chassis = `c-${Math.random().toString(36).slice(2, 8)}`;
    assert.equal(await nb.registration(chassis), undefined);
    assert.equal(await nb.writeRegistration(chassis, { 'ovsnet-host-id': 'h1' }, [], undefined), true);
    assert.equal(await nb.writeRegistration(chassis, { 'ovsnet-host-id': 'h2' }, [], undefined), false, 'a second host cannot make the row again');
    const read = (await nb.registration(chassis))!;
    assert.deepEqual(read.externalIds, { 'ovsnet-owner': 'ovsnet', 'ovsnet-host-id': 'h1' });
    assert.equal(await nb.writeRegistration(chassis, { 'ovsnet-host-id': 'h2' }, [], { ...read.externalIds, 'ovsnet-host-id': 'h0' }), false, 'not on an older reading');
    assert.equal(await nb.writeRegistration(chassis, { 'ovsnet-note': 'n', 'ovsnet-host-id': 'h2' }, [], read.externalIds), true);
    const now = (await nb.registration(chassis))!;
    assert.deepEqual(now.externalIds, { 'ovsnet-owner': 'ovsnet', 'ovsnet-host-id': 'h2', 'ovsnet-note': 'n' });
    assert.equal(await nb.writeRegistration(chassis, {}, ['ovsnet-note'], now.externalIds), true);
    assert.deepEqual((await nb.registration(chassis))!.externalIds, { 'ovsnet-owner': 'ovsnet', 'ovsnet-host-id': 'h2' });
    assert.equal(await nb.writeRegistration(`${chassis}-x`, {}, [], now.externalIds), false, 'no row, nothing written');
    const last = (await nb.registration(chassis))!;
    assert.equal(await nb.writeRegistration(chassis, {}, Object.keys(last.externalIds), last.externalIds), true);
    assert.equal(await nb.registration(chassis), undefined, 'a registration left with nothing goes');
  });

  it('makes one router of a name; a second create gives the first', async () => {
    const nb = await fresh();
    const first = await nb.createRouter('r', { 'ovsnet-owner': 'ovsnet', 'ovsnet-router': 'r' });
    const second = await nb.createRouter('r', { 'ovsnet-owner': 'ovsnet', 'ovsnet-router': 'r' });
    assert.deepEqual([first.created, second.created, second.router.uuid], [true, false, first.router.uuid]);
    assert.equal((await nb.findRouter('r'))?.uuid, first.router.uuid);
    assert.equal(await nb.findRouter('other'), undefined);
  });

  it("gives a router one way out, and never a second router's outside address", async () => {
    const nb = await fresh();
    const outside = await nb.ensureExternalSwitch('physnet');
    assert.equal(await nb.ensureExternalSwitch('physnet'), outside, 'one outside switch per physical network');
    const gateway = (address: string) => ({ physnet: 'physnet', externalSwitchUuid: outside, address, prefix: 24, nexthop: '192.0.2.1', chassis: [{ chassis: 'gw1', priority: 20 }] });
    const r1 = (await nb.createRouter('r1', { 'ovsnet-owner': 'ovsnet', 'ovsnet-router': 'r1' })).router;
    const r2 = (await nb.createRouter('r2', { 'ovsnet-owner': 'ovsnet', 'ovsnet-router': 'r2' })).router;
    assert.equal(await nb.addRouterGateway(r1, gateway('192.0.2.10')), 'added');
    assert.equal(await nb.addRouterGateway(r1, gateway('192.0.2.11')), 'exists', 'a router has one gateway port');
    assert.equal(await nb.addRouterGateway(r2, gateway('192.0.2.10')), 'taken', "r1's address");
    assert.equal(await nb.addRouterGateway(r2, gateway('192.0.2.11')), 'added');
    assert.deepEqual((await nb.findRouter('r1'))?.ports.map((p) => [p.name, p.networks]), [['ovsnet-gw-r1', ['192.0.2.10/24']]]);
    assert.ok(await nb.port('ovsnet-ext-physnet-192.0.2.10'));
    assert.equal(await nb.deleteRouterIf((await nb.findRouter('r1'))!, 'physnet'), true);
    assert.equal(await nb.findRouter('r1'), undefined);
    assert.equal(await nb.port('ovsnet-ext-physnet-192.0.2.10'), undefined, 'its outside address is free again');
    assert.equal(await nb.addRouterGateway(r2, gateway('192.0.2.12')), 'exists');
  });

  it('connects a switch to a router once, with its SNAT and policies, and takes them all away again', async () => {
    const nb = await fresh();
    const router = (await nb.createRouter('r', { 'ovsnet-owner': 'ovsnet', 'ovsnet-router': 'r' })).router;
    const { sw } = await nb.createSwitch('10.9.4.0/24', row('l3', mark('10.9.4.0/24')));
    const attachment = {
      lrp: { name: 'ovsnet-rp-l3', mac: '0a:58:0a:09:04:01', networks: ['10.9.4.1/24'] },
      lsp: 'ovsnet-rsp-l3',
      subnet: '10.9.4.0/24',
      snat: [{ logicalIp: '10.9.4.0/24', externalIp: '192.0.2.10' }],
      policies: [{ priority: 1001, match: 'ip4.dst == 10.9.4.0/24', action: 'allow' as const }, { priority: 1000, match: 'ip4.src == 10.9.4.0/24', action: 'drop' as const }],
    };
    assert.equal(await nb.attachSwitch(router.uuid, sw.uuid, attachment), 'added');
    assert.equal(await nb.attachSwitch(router.uuid, sw.uuid, attachment), 'exists');
    const attached = (await nb.findRouter('r'))!;
    assert.deepEqual(attached.ports.map((p) => [p.name, p.networks]), [['ovsnet-rp-l3', ['10.9.4.1/24']]]);
    assert.deepEqual(attached.nat.map((n) => [n.type, n.logicalIp, n.externalIp]), [['snat', '10.9.4.0/24', '192.0.2.10']]);
    assert.deepEqual(attached.policies.map((p) => [p.priority, p.match, p.action]), [[1001, 'ip4.dst == 10.9.4.0/24', 'allow'], [1000, 'ip4.src == 10.9.4.0/24', 'drop']]);
    assert.ok((await nb.view()).ports.get(sw.uuid)?.some((p) => p.name === 'ovsnet-rsp-l3'), "the switch's port facing the router");
    assert.ok((await nb.view({ subnets: ['10.9.4.0/24'], ports: true })).ports.get(sw.uuid)?.some((p) => p.name === 'ovsnet-rsp-l3'), 'also in a view scoped to its subnet (the port carries no subnet mark)');
    assert.equal(await nb.deleteRouterIf(attached, undefined), false, 'not while a network is connected');
    // Pieces lost (its SNAT rule and policies, deleted by hand): attaching again adds only those.
    await nb.detachSwitch(router.uuid, sw.uuid, { lrp: 'none', lsp: 'none', subnet: '10.9.4.0/24' });
    assert.deepEqual(((await nb.findRouter('r'))!).nat, []);
    assert.equal(await nb.attachSwitch(router.uuid, sw.uuid, attachment), 'added');
    const completed = (await nb.findRouter('r'))!;
    assert.deepEqual([completed.ports.length, completed.nat.length, completed.policies.length], [1, 1, 2], 'the rest was not added twice');
    await nb.detachSwitch(router.uuid, sw.uuid, { lrp: 'ovsnet-rp-l3', lsp: 'ovsnet-rsp-l3', subnet: '10.9.4.0/24' });
    const detached = (await nb.findRouter('r'))!;
    assert.deepEqual([detached.ports, detached.nat, detached.policies], [[], [], []]);
    assert.equal(await nb.port('ovsnet-rsp-l3'), undefined);
    assert.equal(await nb.deleteRouterIf(detached, undefined), true);
    assert.deepEqual((await nb.view()).routers, []);
  });
}
