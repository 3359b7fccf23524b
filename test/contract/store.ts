/**
 * What every implementation of the Store port must do, run against the
 * in-memory fake (unit tier) and the LevelDB store on a temporary directory
 * (integration tier): what a commit wrote is what a load reads, of every kind,
 * after a reopen too; a put replaces, a delete deletes and tolerates absence.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import type { AddressRecord, EndpointRecord, NameRecord, NetworkRecord, PoolRecord } from '../../src/domain/records.js';
import type { Snapshot, Store } from '../../src/driver/ports.js';

const at = new Date(0).toISOString();
const pool = (n: number): PoolRecord => ({ id: `local/10.${n}.0.0/24`, addressSpace: 'local', pool: `10.${n}.0.0/24`, range: `10.${n}.0.0/24`, v6: false, auto: false, cursor: undefined, createdAt: at });
const address = (n: number, last: number): AddressRecord => ({ poolId: pool(n).id, address: `10.${n}.0.${last}`, kind: 'address', createdAt: at });
const network = (c: string): NetworkRecord => ({
  id: c.repeat(64),
  spec: { mode: 'vlan', bridge: 'ovs0', vlan: 9, mtu: undefined, gatewayMode: 'nat', internal: false, ipv6: false, allowRa: false, allowDhcpServer: false, allowHostOverlap: false, antiSpoofing: true, rate: undefined, uplink: undefined },
  ipv4: [{ addressSpace: 'local', pool: '10.1.0.0/24', gateway: '10.1.0.1', auxAddresses: {} }],
  ipv6: [],
  gatewayPort: undefined,
  localTag: 9,
  mtu: 1500,
  datapath: 'netdev',
  state: 'ready',
  createdAt: at,
});
const endpoint = (c: string): EndpointRecord => ({
  id: c.repeat(64), networkId: 'a'.repeat(64), address: '10.1.0.5/24', addressIpv6: '', mac: '02:42:0a:01:00:05', hostIf: `ovs${c.repeat(12)}`, peerIf: `ovc${c.repeat(12)}`,
  joined: true, sandboxKey: '/var/run/docker/netns/x', createdAt: at, linkLocal: 'fe80::1',
});
const name = (n: string): NameRecord => ({ poolId: pool(1).id, name: n, address: '10.1.0.5', usedAt: at });

async function everything(snapshot: Snapshot): Promise<unknown> {
  const addresses: AddressRecord[] = [];
  for await (const batch of snapshot.addresses) addresses.push(...batch);
  const by = <T>(list: T[], key: (x: T) => string) => [...list].sort((a, b) => key(a).localeCompare(key(b)));
  return JSON.parse(
    JSON.stringify({
      networks: by(snapshot.networks, (n) => n.id),
      endpoints: by(snapshot.endpoints, (e) => e.id),
      pools: by(snapshot.pools, (p) => p.id),
      addresses: by(addresses, (a) => a.address),
      names: by(snapshot.names, (n) => n.name),
    }),
  );
}

/** Registers the contract's tests; `fresh` gives an empty store and a way to open it again after closing it. */
export function storeContract(fresh: () => Promise<{ store: Store; reopen: () => Promise<Store> }>): void {
  it('reads back what commits wrote, records of every kind, also after a close and a reopen', async () => {
    const { store, reopen } = await fresh();
    await store.commit([{ type: 'put', kind: 'network', value: network('a') }, { type: 'put', kind: 'endpoint', value: endpoint('e') }]);
    await store.commit([{ type: 'put', kind: 'pool', value: pool(1) }, { type: 'put', kind: 'address', value: address(1, 5) }, { type: 'put', kind: 'address', value: address(1, 6) }]);
    await store.commit([{ type: 'put', kind: 'name', value: name('web') }]);
    // As JSON keeps them: a field that is undefined is no field.
    const want = JSON.parse(JSON.stringify({ networks: [network('a')], endpoints: [endpoint('e')], pools: [pool(1)], addresses: [address(1, 5), address(1, 6)], names: [name('web')] }));
    assert.deepEqual(await everything(await store.load()), want);
    await store.close();
    const again = await reopen();
    assert.deepEqual(await everything(await again.load()), want, 'after a reopen');
    await again.close();
  });

  it('replaces a record put again, deletes one, and tolerates deleting what is not there', async () => {
    const { store } = await fresh();
    await store.commit([{ type: 'put', kind: 'pool', value: pool(2) }, { type: 'put', kind: 'address', value: address(2, 7) }]);
    await store.commit([{ type: 'put', kind: 'pool', value: { ...pool(2), range: '10.2.0.128/25' } }, { type: 'del', kind: 'address', key: `${pool(2).id}|10.2.0.7` }]);
    await store.commit([{ type: 'del', kind: 'endpoint', key: 'f'.repeat(64) }]);
    const read = (await everything(await store.load())) as { pools: PoolRecord[]; addresses: AddressRecord[] };
    assert.deepEqual([read.pools.map((p) => p.range), read.addresses], [['10.2.0.128/25'], []]);
    await store.close();
  });
}
