/**
 * Veth pairs made ahead of need, so that a container start spawns no
 * program and adds no port: `ip link add`, two `ethtool` runs and a new port
 * cost most of a start's own time. A few pairs are kept for each shape the
 * networks need (their bridge, their MTU, and TX offload off on the userspace
 * datapath). A spare's host end is already a port of the bridge, parked on a
 * VLAN no network has (domain/host.ts, PARKING_TAG), and its other end is
 * down and in no container, so no traffic reaches it. CreateEndpoint takes
 * one and names its endpoint's devices after it; Join then only retags and
 * marks the port, and sets its guard flows at the same time, for the
 * OpenFlow number the port has.
 *
 * Spares are nobody's record: they live only as long as this process. The
 * reconciler's diff leaves alone exactly the names held here, so spares of a
 * process that died (a crash, a power cut) are debris to its next pass,
 * which removes them; and a network's last removal removes its shape's.
 */
import { randomBytes } from 'node:crypto';
import { errorMessage } from '../errors.js';
import { sparePort } from '../domain/host.js';
import { sparePairNames } from '../domain/names.js';
import type { NetworkRecord } from '../domain/records.js';
import type { Logger } from '../log.js';
import type { Links, Ovs } from './ports.js';

export interface SparePair {
  readonly host: string;
  readonly peer: string;
}

/** What a pair must be made with to serve a network: where its port is parked, and how its veth is made. */
export interface SpareShape {
  readonly bridge: string;
  readonly mtu: number;
  readonly txOffloadOff: boolean;
}

export function shapeOf(network: Pick<NetworkRecord, 'mtu' | 'datapath'> & { spec: { bridge: string } }): SpareShape {
  return { bridge: network.spec.bridge, mtu: network.mtu, txOffloadOff: network.datapath === 'netdev' };
}

const keyOf = (shape: SpareShape) => `${shape.bridge}/${shape.mtu}/${shape.txOffloadOff ? 'tx-off' : 'tx-on'}`;

export interface SparePairsOptions {
  links: Links;
  ovs: Pick<Ovs, 'addPort' | 'deletePort'>;
  /** Pairs kept per shape; 0 turns spares off. */
  size: number;
  /** How long after the last take the pool fills again, so that a burst of starts is not slowed by it. */
  refillDelayMs: number;
  /**
   * How long after DeleteEndpoint's answer its devices start to go (RETIRE_DELAY_MS by default): Docker's
   * ReleaseAddress follows at once, and is answered first.
   */
  retireDelayMs?: number;
  log: Logger;
}

/**
 * A deleted endpoint's devices start to go this long after DeleteEndpoint has answered. Docker sends
 * ReleaseAddress at once, whose synced commit took twice as long with the deletion under way (on the host's
 * own Open vSwitch: ovsdb-server's write of the port's removal shares the disk's journal commit with it,
 * and ovs-vswitchd's reconfiguration the two CPUs); see bench/README.md.
 */
export const RETIRE_DELAY_MS = 30;

export class SparePairs {
  /** Made and ready, by shape. */
  private readonly ready = new Map<string, SparePair[]>();
  /** Names being made or deleted, and names taken whose endpoint record is not written yet. */
  private readonly busy = new Set<string>();
  private wanted = new Map<string, SpareShape>();
  /** Shapes whose last fill made nothing: the next tries one pair. */
  private readonly failing = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private filling: Promise<void> = Promise.resolve();
  private running = false;
  private stopped = false;
  /** Devices of endpoints that are gone, being deleted. */
  private readonly retiring = new Set<Promise<void>>();
  /** Of those, the ones waiting for their delay: starts each at once. */
  private readonly waiting = new Set<() => void>();

  constructor(private readonly o: SparePairsOptions) {}

  /** Every device name the pool holds now: made, being made or deleted, taken but not yet recorded, or retiring. */
  names(): Set<string> {
    const out = new Set(this.busy);
    for (const pairs of this.ready.values()) for (const p of pairs) out.add(p.host).add(p.peer);
    return out;
  }

  /** The spares ready now, for the state view. */
  list(): SparePair[] {
    return [...this.ready.values()].flat();
  }

  /** Nothing being made, deleted or taken, and no fill due: what `list` says stays so until the next call. */
  quiet(): boolean {
    return this.timer === undefined && !this.running && this.busy.size === 0;
  }

  /**
   * A ready pair of this shape, or undefined (the caller makes one itself).
   * Its names stay the pool's until `settle`: once the endpoint's record has them, or they were given up.
   */
  take(shape: SpareShape): SparePair | undefined {
    const pair = this.ready.get(keyOf(shape))?.pop();
    if (!pair) return undefined;
    this.busy.add(pair.host).add(pair.peer);
    this.schedule();
    return pair;
  }

  /** A taken pair is no longer the pool's: its endpoint's record holds it now, or (`discard`) nobody wants it. */
  settle(pair: SparePair, discard = false): void {
    this.busy.delete(pair.host);
    this.busy.delete(pair.peer);
    // Its names stay held (busy) until the pair is gone.
    if (discard) void this.remove(pair);
  }

  /**
   * Sets the shapes the networks need: spares of a shape no network needs
   * are deleted before this returns (also one being made now, so that no
   * port of theirs is left on a bridge about to be removed); missing ones
   * are made in the background.
   */
  async want(networks: readonly NetworkRecord[]): Promise<void> {
    if (this.o.size <= 0 || this.stopped) return;
    this.wanted = new Map(networks.filter((n) => n.state === 'ready').map((n) => [keyOf(shapeOf(n)), shapeOf(n)]));
    for (const key of this.failing) if (!this.wanted.has(key)) this.failing.delete(key);
    await this.dropUnwanted();
    if (this.running) {
      // A fill gives up a pair of a shape no longer wanted once it is made, and stops making more.
      await this.filling;
      await this.dropUnwanted();
    }
    // A fill due after a start keeps its delay.
    if (this.timer === undefined) this.schedule(0);
  }

  private async dropUnwanted(): Promise<void> {
    const unwanted: SparePair[] = [];
    for (const [key, pairs] of this.ready) {
      if (this.wanted.has(key)) continue;
      this.ready.delete(key);
      unwanted.push(...pairs);
    }
    await Promise.all(unwanted.map((p) => this.remove(p)));
  }

  /**
   * Deletes the devices of an endpoint that is gone in the background: `first` (its guard flows and its
   * port, when the caller has not deleted them), then its veth pair, which the kernel takes some 20 ms to
   * delete. DeleteEndpoint need not wait for either: its record is gone, and nothing takes these names
   * again. The names are held here until the work is over, so no reconcile pass or doctor takes the port,
   * its flows or the pair for debris meanwhile; whatever is left (a failure, a crash) the next pass removes
   * as an orphan port, flows or veth, as it does a dead process's spares.
   */
  retire(pair: SparePair, first?: () => Promise<void>): void {
    this.busy.add(pair.host).add(pair.peer);
    const work = new Promise<void>((resolve) => {
      const go = () => {
        clearTimeout(timer);
        this.waiting.delete(go);
        resolve();
      };
      const timer = setTimeout(go, this.o.retireDelayMs ?? RETIRE_DELAY_MS);
      this.waiting.add(go);
    })
      .then(first)
      .then(() => this.o.links.deleteLink(pair.host))
      // Deleting one end of a veth deletes both; the peer only remains if the pair was never complete.
      .then((had) => (had ? undefined : this.o.links.deleteLink(pair.peer)))
      .then(
        () => undefined,
        (err: unknown) => this.o.log.warn("could not delete a deleted endpoint's devices; the next reconcile pass removes what is left", { veth: pair.host, error: errorMessage(err) }),
      )
      .finally(() => {
        this.busy.delete(pair.host);
        this.busy.delete(pair.peer);
        this.retiring.delete(work);
      });
    this.retiring.add(work);
  }

  /** Deletes the devices retiring now without further delay, and waits until they are gone (or given up). */
  async retired(): Promise<void> {
    for (const go of [...this.waiting]) go();
    await Promise.all([...this.retiring]);
  }

  /** Deletes every spare, and finishes deleting retiring pairs (the plugin is stopping; a next start makes its own). */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.filling;
    const all = this.list();
    this.ready.clear();
    await Promise.all([...all.map((p) => this.remove(p)), this.retired()]);
  }

  private schedule(delayMs = this.o.refillDelayMs): void {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.running = true;
      this.filling = this.filling.then(() => this.fill()).finally(() => {
        this.running = false;
      });
    }, delayMs);
    this.timer.unref();
  }

  /**
   * Makes the missing spares, those of a shape together (one spawn makes their veth pairs, and their ports
   * go in side by side); a shape that fails (its bridge is not there: br-int before ovn-controller made it)
   * is left until the next fill, and the others are still made.
   */
  private async fill(): Promise<void> {
    for (const [key, shape] of this.wanted) {
      // A shape whose last fill failed (its bridge is not there yet) is tried with one pair until one is made.
      const missing = Math.min(this.o.size - (this.ready.get(key)?.length ?? 0), this.failing.has(key) ? 1 : Infinity);
      if (missing <= 0 || this.stopped || !this.wanted.has(key)) continue;
      const pairs = Array.from({ length: missing }, () => sparePairNames(randomBytes(6).toString('hex')));
      for (const pair of pairs) this.busy.add(pair.host).add(pair.peer);
      const made = await Promise.allSettled(
        pairs.map(async (pair) => {
          try {
            // A locally administered MAC for now: Docker sets the endpoint's own when it moves the end into the container.
            await this.o.links.createVeth({ host: pair.host, peer: pair.peer, mtu: shape.mtu, peerMac: `02:${randomBytes(5).toString('hex').replace(/(..)(?!$)/g, '$1:')}`, txOffloadOff: shape.txOffloadOff });
            await this.o.ovs.addPort(sparePort(shape.bridge, pair.host));
          } catch (err) {
            await this.o.ovs.deletePort(pair.host).catch(() => false);
            await this.o.links.deleteLink(pair.host).catch(() => false);
            this.busy.delete(pair.host);
            this.busy.delete(pair.peer);
            throw err;
          }
        }),
      );
      const failed = made.findIndex((m) => m.status === 'rejected');
      if (failed >= 0) {
        const reason = (made[failed] as PromiseRejectedResult).reason;
        this.o.log.warn('could not make a spare veth pair; starts make their own meanwhile', { veth: pairs[failed]!.host, bridge: shape.bridge, failed: made.filter((m) => m.status === 'rejected').length, error: errorMessage(reason) });
      }
      const good = pairs.filter((_, i) => made[i]!.status === 'fulfilled');
      if (good.length > 0) this.failing.delete(key);
      else if (failed >= 0) this.failing.add(key);
      if (this.stopped || !this.wanted.has(key)) {
        await Promise.all(good.map((p) => this.remove(p)));
        continue;
      }
      // Held (busy) until ready, in the same step: no moment in which a reconcile pass could take them for debris.
      this.ready.set(key, [...(this.ready.get(key) ?? []), ...good]);
      for (const pair of good) {
        this.busy.delete(pair.host);
        this.busy.delete(pair.peer);
      }
    }
  }

  private async remove(pair: SparePair): Promise<void> {
    this.busy.add(pair.host).add(pair.peer);
    try {
      await this.o.ovs.deletePort(pair.host).catch((err) => this.o.log.warn('could not delete the port of a spare veth pair', { port: pair.host, error: errorMessage(err) }));
      await this.o.links.deleteLink(pair.host).catch((err) => this.o.log.warn('could not delete a spare veth pair', { veth: pair.host, error: errorMessage(err) }));
    } finally {
      this.busy.delete(pair.host);
      this.busy.delete(pair.peer);
    }
  }
}
