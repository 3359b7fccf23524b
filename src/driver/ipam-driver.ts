/**
 * The IpamDriver use cases: address pools and the addresses inside them.
 *
 * Replays. With RequiresRequestReplay, dockerd re-sends RequestPool and
 * RequestAddress for everything it holds when it starts, and these requests
 * look exactly like new ones. So identical requests are idempotent: the same
 * pool gets the same PoolID, an address already held for the same purpose is
 * handed out again.
 *
 * A real clash (a second network with the same subnet, a `--ip` another
 * container holds) therefore passes here, and is caught by the network
 * driver, which knows every network and endpoint. It refuses the request and
 * calls `shieldFromRollback`, so that the ReleaseAddress/ReleasePool Docker
 * sends to roll back do not free what the existing owner still uses.
 *
 * RequiresMACAddress stays off: Docker would then give every endpoint a random
 * MAC, and a restarted container with a static address would be unreachable
 * until its peers' ARP entries expire. The network driver derives the MAC from
 * the address instead, as Docker's bridge driver does.
 */
import { badRequest, conflict, exhausted, notFound } from '../errors.js';
import {
  type Cidr,
  contains,
  formatCidr,
  formatIp,
  overlaps,
  parseCidr,
  parseCidrWithHost,
  parseIp,
} from '../domain/cidr.js';
import { boundsSize, isAssignable, nextFree, usableBounds } from '../domain/allocator.js';
import { type DefaultPool, freeSubnet, parseRange, rangeInside } from '../domain/ranges.js';
import { type AddressKind, type NetworkRecord, type PoolRecord, GLOBAL_SPACE, LOCAL_SPACE, addressKey, isOwnAddressSpace, nameKey, poolIdOf } from '../domain/records.js';
import type { RequestAddressRequest, RequestAddressResponse, RequestPoolRequest, RequestPoolResponse, ReleaseAddressRequest } from '../protocol/ipam.js';
import type { Logger } from '../log.js';
import { type Faults, noFaults } from '../faults.js';
import { KeyedMutex } from './locks.js';
import type { Links, StoreOp } from './ports.js';
import type { State } from './state.js';

/**
 * Addresses held across hosts (OVN networks): a backend whose hosts share a subnet holds each
 * address in its control plane, so that two hosts never give out the same one.
 */
export interface DistributedAddresses {
  /** The network of a pool, when its addresses are held across hosts. */
  networkOf(poolId: string): NetworkRecord | undefined;
  /** False for what every host holds alike: the gateway and aux addresses. */
  isShared(network: NetworkRecord, address: string): boolean;
  /** Holds an address for this host, or says who holds it. */
  claim(network: NetworkRecord, address: string, options: { explicit: boolean }): Promise<{ claimed: true } | { claimed: false; holder: string }>;
  release(network: NetworkRecord, address: string): Promise<void>;
  /** The addresses other hosts hold in a network. */
  heldElsewhere(network: NetworkRecord): Promise<string[]>;
  /** Where this host starts in a range, so that hosts rarely race for one address. */
  startOffset(): Promise<number>;
}

export interface IpamDriverOptions {
  state: State;
  /** Set when OVN mode is on. */
  distributed?: DistributedAddresses;
  routes: Pick<Links, 'routes'>;
  defaultPools: readonly DefaultPool[];
  log: Logger;
  now?: () => number;
  /** Test-only crash points (OVSNET_FAULT). */
  faults?: Faults;
}

/** The lock of a pool's addresses (pools themselves are made and removed under the lock 'ipam'). */
function poolLock(poolId: string): string {
  return `pool:${poolId}`;
}

/** How long after an idempotent answer its rollback may still arrive. */
const ROLLBACK_WINDOW_MS = 60_000;

/** How many `--ip` addresses a pool remembers for their owners. */
const MAX_STATICS = 1024;
/** How many endpoint names a pool remembers the last address of. */
const MAX_NAMES = 4096;

export class IpamDriver {
  private readonly lock = new KeyedMutex();
  /** poolId -> addresses answered idempotently since the pool was last requested again. */
  private readonly recentHits = new Map<string, Map<string, number>>();
  /** poolId -> what Docker's next rollback must not release, and until when. */
  private readonly shields = new Map<string, { until: number; pool: boolean; addresses: Set<string> }>();
  private readonly now: () => number;

  constructor(private readonly options: IpamDriverOptions) {
    this.now = options.now ?? Date.now;
  }

  capabilities() {
    return { RequiresMACAddress: false, RequiresRequestReplay: true };
  }

  addressSpaces() {
    return { LocalDefaultAddressSpace: LOCAL_SPACE, GlobalDefaultAddressSpace: GLOBAL_SPACE };
  }

  requestPool(req: RequestPoolRequest): Promise<RequestPoolResponse> {
    return this.lock.run('ipam', () => this.doRequestPool(req));
  }

  releasePool(poolId: string): Promise<void> {
    return this.lock.run('ipam', () => this.lock.run(poolLock(poolId), () => this.doReleasePool(poolId)));
  }

  // Addresses are locked per pool: a pool whose addresses are held across hosts waits for the control plane,
  // and the other pools need not wait with it.
  requestAddress(req: RequestAddressRequest): Promise<RequestAddressResponse> {
    return this.lock.run(poolLock(req.poolId), () => this.doRequestAddress(req));
  }

  releaseAddress(req: ReleaseAddressRequest): Promise<void> {
    return this.lock.run(poolLock(req.poolId), () => this.doReleaseAddress(req));
  }

  /**
   * Called by the network driver when it refuses a request that Docker will
   * roll back: a network whose pool another network uses (no `address`; the
   * pool and the addresses answered idempotently are kept), or an endpoint
   * whose address another endpoint holds (that one address is kept).
   */
  shieldFromRollback(poolId: string, address?: string): void {
    const shield = this.activeShield(poolId) ?? { until: 0, pool: false, addresses: new Set<string>() };
    shield.until = this.now() + ROLLBACK_WINDOW_MS;
    if (address === undefined) {
      shield.pool = true;
      for (const hit of this.recentHits.get(poolId)?.keys() ?? []) shield.addresses.add(hit);
    } else {
      shield.addresses.add(address);
    }
    this.shields.set(poolId, shield);
    this.options.log.info('refused request; its rollback will not release what others hold', { poolId, address });
  }

  // ---- pools ----

  private async doRequestPool(req: RequestPoolRequest): Promise<RequestPoolResponse> {
    const { state, log } = this.options;
    if (!isOwnAddressSpace(req.addressSpace)) {
      throw badRequest(
        'UnknownAddressSpace',
        `unknown address space "${req.addressSpace}"; this IPAM driver has "${LOCAL_SPACE}" and "${GLOBAL_SPACE}"`,
      );
    }
    for (const [key, value] of Object.entries(req.options)) {
      if (key.startsWith('com.docker.')) continue; // set by Docker itself, not by the user
      throw badRequest('UnknownOption', `unknown IPAM option ${key}=${value}; the ovs IPAM driver takes no --ipam-opt options`);
    }
    const family = req.v6 ? 6 : 4;
    let pool: Cidr;
    let range: Cidr;
    let auto = false;
    if (req.pool) {
      pool = parseRange(req.pool, family, 'subnet');
      range = pool;
      if (req.subPool) {
        range = parseRange(req.subPool, family, 'ip-range');
        if (!rangeInside(range, pool)) {
          throw badRequest('InvalidRange', `ip-range ${formatCidr(range)} is not inside subnet ${formatCidr(pool)}`);
        }
        if (boundsSize(usableBounds(pool, range)) === 0n) {
          throw badRequest('InvalidRange', `ip-range ${formatCidr(range)} holds no usable address of subnet ${formatCidr(pool)}`);
        }
      }
    } else {
      if (req.subPool) throw badRequest('InvalidRange', `ip-range ${req.subPool} needs a subnet (--subnet)`);
      pool = await this.choosePool(family);
      range = pool;
      auto = true;
    }

    const id = poolIdOf(req.addressSpace, formatCidr(pool));
    const existing = state.pools.get(id);
    if (existing) {
      if (existing.range !== formatCidr(range)) {
        throw conflict('PoolOverlap', `subnet ${existing.pool} is already in use with ip-range ${existing.range}`);
      }
      this.recentHits.set(id, new Map());
      log.debug('pool requested again (replay or shared subnet)', { poolId: id });
      return { PoolID: id, Pool: existing.pool, Data: {} };
    }
    for (const other of state.pools.values()) {
      if (other.addressSpace !== req.addressSpace) continue;
      const otherCidr = parseCidr(other.pool);
      if (otherCidr && overlaps(pool, otherCidr)) {
        throw conflict('PoolOverlap', `subnet ${formatCidr(pool)} overlaps subnet ${other.pool}, which is already in use`);
      }
    }
    const record: PoolRecord = {
      id,
      addressSpace: req.addressSpace,
      pool: formatCidr(pool),
      range: formatCidr(range),
      v6: family === 6,
      auto,
      cursor: undefined,
      createdAt: new Date(this.now()).toISOString(),
    };
    await state.commit([{ type: 'put', kind: 'pool', value: record }]);
    log.info('pool allocated', { poolId: id, range: record.range, auto });
    return { PoolID: id, Pool: record.pool, Data: {} };
  }

  /** A free subnet of the default ranges: one no pool in use and no host route overlaps. */
  private async choosePool(family: 4 | 6): Promise<Cidr> {
    const { state, defaultPools, routes } = this.options;
    const taken: Cidr[] = [];
    for (const p of state.pools.values()) {
      const cidr = parseCidr(p.pool);
      if (cidr) taken.push(cidr);
    }
    for (const route of await routes.routes(family)) {
      if (route.isDefault) continue;
      const parsed = parseCidrWithHost(route.dst);
      if (parsed && parsed.cidr.prefix > 0) taken.push(parsed.cidr);
    }
    return freeSubnet(defaultPools, family, taken);
  }

  private async doReleasePool(poolId: string): Promise<void> {
    const { state, log } = this.options;
    const shield = this.activeShield(poolId);
    if (shield?.pool) {
      this.shields.delete(poolId);
      log.info('kept pool: release was the rollback of a refused network that shares it', { poolId });
      return;
    }
    const pool = state.pools.get(poolId);
    if (!pool) return;
    const ops: StoreOp[] = [{ type: 'del', kind: 'pool', key: poolId }];
    for (const address of state.addressesOf(poolId).keys()) {
      ops.push({ type: 'del', kind: 'address', key: addressKey(poolId, address) });
    }
    for (const name of state.namesOf(poolId).keys()) ops.push({ type: 'del', kind: 'name', key: nameKey(poolId, name) });
    const addresses = state.addressesOf(poolId).size;
    await state.commit(ops);
    this.recentHits.delete(poolId);
    log.info('pool released', { poolId, addresses });
  }

  // ---- addresses ----

  private async doRequestAddress(req: RequestAddressRequest): Promise<RequestAddressResponse> {
    const { state } = this.options;
    const pool = state.pools.get(req.poolId);
    if (!pool) throw notFound('UnknownPool', `unknown pool "${req.poolId}": the ovs IPAM driver holds no such pool`);
    const cidr = parseCidr(pool.pool)!;
    const held = state.addressesOf(req.poolId);
    const answer = (address: string) => ({ Address: `${address}/${cidr.prefix}`, Data: {} });

    if (req.address) {
      const ip = parseIp(req.address);
      if (!ip) throw badRequest('InvalidAddress', `invalid address "${req.address}": not an IPv4 or IPv6 address`);
      if (!contains(cidr, ip)) throw badRequest('AddressOutOfPool', `address ${req.address} is not in subnet ${pool.pool}`);
      if (!isAssignable(cidr, ip.value)) {
        throw badRequest('AddressReserved', `address ${req.address} is the network or broadcast address of subnet ${pool.pool}`);
      }
      const address = formatIp(ip);
      const current = held.kindOf(address);
      if (current) {
        // The same kind of address asked for again: a replay (or a clash the network driver will catch).
        if (current !== (req.gateway ? 'gateway' : 'address')) {
          const what = current === 'gateway' ? 'is the gateway of' : 'is already in use in';
          throw conflict('AddressInUse', `address ${address} ${what} subnet ${pool.pool}`);
        }
        this.noteHit(req.poolId, address);
        return answer(address);
      }
      const shared = this.sharedNetwork(req, address);
      if (shared) {
        const claim = await shared.distributed.claim(shared.network, address, { explicit: true });
        if (!claim.claimed) throw conflict('AddressInUse', `address ${address} of subnet ${pool.pool} is held by ${claim.holder}; choose another --ip, or leave --ip out for a free one`);
        (this.options.faults ?? noFaults).point('RequestAddress', 'after-claim');
      }
      await this.hold(pool, address, req, false);
      return answer(address);
    }

    if (req.gateway) {
      const existing = held.gateway();
      if (existing) {
        this.noteHit(req.poolId, existing);
        return answer(existing);
      }
      const value = nextFree(usableBounds(cidr), (v) => held.hasValue(v), held.size);
      if (value === undefined) throw this.exhaustedError(pool);
      const address = formatIp({ family: cidr.family, value });
      await this.hold(pool, address, req, false);
      return answer(address);
    }

    const range = parseCidr(pool.range)!;
    const bounds = usableBounds(cidr, range);
    const name = req.endpointName ?? '';
    // A named endpoint (Docker 29 names each one) gets the address it had last, if it is free:
    // a container that asks again after a dockerd restart keeps its address.
    const before = name ? state.namesOf(req.poolId).get(name) : undefined;
    const again = before && !held.has(before.address) ? parseIp(before.address) : undefined;
    if (again && contains(range, again) && again.value >= bounds.first && again.value <= bounds.last) {
      // On a network held across hosts the address is this host's again only if the control plane says so.
      const shared = this.sharedNetwork(req, before!.address);
      if (!shared || (await shared.distributed.claim(shared.network, before!.address, { explicit: false })).claimed) {
        await this.hold(pool, before!.address, req, false);
        return answer(before!.address);
      }
    }
    const cursor = pool.cursor ? parseIp(pool.cursor)?.value : undefined;
    const text = (v: bigint) => formatIp({ family: cidr.family, value: v });
    const isHeld = (v: bigint) => held.hasValue(v);
    // Addresses a container asked for with --ip, or that another named endpoint had, wait for their
    // owners (after dockerd or the host restarted, Docker released them meanwhile): dynamic requests
    // take such addresses last.
    const statics = new Set(pool.statics ?? []);
    const named = state.namesOf(req.poolId);
    const kept = (v: bigint) => {
      const address = text(v);
      if (statics.has(address)) return true;
      const owner = state.nameOfAddress(req.poolId, address);
      return owner !== undefined && owner !== name;
    };
    // On a network whose addresses are held across hosts, an address is this host's only once the
    // control plane says so; one another host holds is skipped, and the walk goes on.
    const distributed = this.options.distributed;
    const network = distributed?.networkOf(req.poolId);
    const taken = new Set<bigint>();
    let from = cursor ?? (network && distributed ? bounds.first - 1n + (BigInt(await distributed.startOffset()) % boundsSize(bounds)) : undefined);
    for (;;) {
      const free = (v: bigint) => !isHeld(v) && !taken.has(v);
      const count = held.size + taken.size;
      const value =
        (statics.size > 0 || named.size > 0 ? nextFree(bounds, (v) => !free(v) || kept(v), count + statics.size + named.size, from) : undefined) ??
        nextFree(bounds, (v) => !free(v), count, from);
      if (value === undefined) throw this.exhaustedError(pool, [...taken].filter((v) => v >= bounds.first && v <= bounds.last).length);
      const address = text(value);
      if (network && distributed) {
        const claim = await distributed.claim(network, address, { explicit: false });
        if (!claim.claimed) {
          taken.add(value);
          from = value;
          // Walking into addresses another host handed out: learn them all at once.
          if (taken.size === 8) for (const other of await distributed.heldElsewhere(network)) if (parseIp(other)) taken.add(parseIp(other)!.value);
          continue;
        }
        (this.options.faults ?? noFaults).point('RequestAddress', 'after-claim');
      }
      await this.hold(pool, address, req, true);
      return answer(address);
    }
  }

  /** The network and backend of an address held across hosts (not a gateway or aux address, and not asked before the network was made). */
  private sharedNetwork(req: RequestAddressRequest, address: string): { network: NetworkRecord; distributed: DistributedAddresses } | undefined {
    const distributed = this.options.distributed;
    const network = distributed?.networkOf(req.poolId);
    if (!distributed || !network || req.gateway || !distributed.isShared(network, address)) return undefined;
    return { network, distributed };
  }

  private exhaustedError(pool: PoolRecord, elsewhere = 0) {
    const cidr = parseCidr(pool.pool)!;
    const usable = boundsSize(usableBounds(cidr, parseCidr(pool.range)!));
    const where = pool.range === pool.pool ? `subnet ${pool.pool}` : `ip-range ${pool.range} of subnet ${pool.pool}`;
    const hosts = elsewhere > 0 ? ` (${elsewhere} of them on other hosts)` : '';
    return exhausted('AddressesExhausted', `no free address left in ${where}: all ${usable} usable addresses are in use${hosts}`);
  }

  /**
   * Holds an address: its record, and in the same batch the pool's cursor (a dynamic address), the
   * address remembered for its owner (`--ip`), or for the endpoint that named itself.
   */
  private async hold(pool: PoolRecord, address: string, req: RequestAddressRequest, dynamic: boolean): Promise<void> {
    const { state } = this.options;
    const kind: AddressKind = req.gateway ? 'gateway' : 'address';
    const at = new Date(this.now()).toISOString();
    const ops: StoreOp[] = [{ type: 'put', kind: 'address', value: { poolId: pool.id, address, kind, createdAt: at } }];
    if (dynamic) {
      ops.push({ type: 'put', kind: 'pool', value: { ...pool, cursor: address } });
    } else if (kind === 'address' && req.address && !(pool.statics ?? []).includes(address)) {
      // Remembered, most recent last, up to a bound so that a pool record stays small.
      const statics = [...(pool.statics ?? []), address].slice(-MAX_STATICS);
      ops.push({ type: 'put', kind: 'pool', value: { ...pool, statics } });
    }
    const name = kind === 'address' ? (req.endpointName ?? '') : '';
    if (name) {
      ops.push({ type: 'put', kind: 'name', value: { poolId: pool.id, name, address, usedAt: at } });
      const names = state.namesOf(pool.id);
      if (!names.has(name) && names.size >= MAX_NAMES) {
        const oldest = [...names.values()].reduce((a, b) => (a.usedAt <= b.usedAt ? a : b));
        ops.push({ type: 'del', kind: 'name', key: nameKey(pool.id, oldest.name) });
      }
    }
    await state.commit(ops);
    (this.options.faults ?? noFaults).point('RequestAddress', 'after-record');
  }

  private async doReleaseAddress(req: ReleaseAddressRequest): Promise<void> {
    const { state, log } = this.options;
    const ip = parseIp(req.address);
    if (!ip) throw badRequest('InvalidAddress', `invalid address "${req.address}": not an IPv4 or IPv6 address`);
    const address = formatIp(ip);
    const shield = this.activeShield(req.poolId);
    if (shield?.addresses.delete(address)) {
      log.info('kept address: release was the rollback of a refused request', { poolId: req.poolId, address });
      if (!shield.pool && shield.addresses.size === 0) this.shields.delete(req.poolId);
      return;
    }
    const current = state.addressesOf(req.poolId).kindOf(address);
    if (!current) return;
    // Released in the control plane first: if that fails, the record stays, and the reconciler tries again.
    const shared = current === 'address' ? this.sharedNetwork({ poolId: req.poolId, address, gateway: false }, address) : undefined;
    if (shared) await shared.distributed.release(shared.network, address);
    await state.commit([{ type: 'del', kind: 'address', key: addressKey(req.poolId, address) }]);
  }

  private noteHit(poolId: string, address: string): void {
    const hits = this.recentHits.get(poolId);
    if (!hits) return;
    const now = this.now();
    for (const [a, at] of hits) if (now - at > ROLLBACK_WINDOW_MS) hits.delete(a);
    hits.set(address, now);
  }

  private activeShield(poolId: string) {
    const shield = this.shields.get(poolId);
    if (shield && shield.until < this.now()) {
      this.shields.delete(poolId);
      return undefined;
    }
    return shield;
  }
}
