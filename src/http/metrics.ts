/**
 * Prometheus metrics (text format, prom-client) on an optional listener, off
 * unless OVSNET_METRICS names an address. Counters and histograms are fed by
 * the HTTP app and the reconciler; gauges are read from the state on scrape.
 */
import http from 'node:http';
import client from 'prom-client';
import { boundsSize, usableBounds } from '../domain/allocator.js';
import { parseCidr } from '../domain/cidr.js';
import { poolIdOf } from '../domain/records.js';
import type { GuardDrops } from '../driver/guard-drops.js';
import type { State } from '../driver/state.js';

export class Metrics {
  readonly registry = new client.Registry();
  private readonly requests = new client.Counter({
    name: 'ovsnet_requests_total',
    help: 'Protocol calls from Docker, by call and outcome (ok or error)',
    labelNames: ['call', 'outcome'] as const,
    registers: [this.registry],
  });
  private readonly duration = new client.Histogram({
    name: 'ovsnet_request_duration_seconds',
    help: 'Time to answer a protocol call, by call',
    labelNames: ['call'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10],
    registers: [this.registry],
  });
  private readonly errors = new client.Counter({
    name: 'ovsnet_errors_total',
    help: 'Refused or failed protocol calls, by error kind (BadRequest, NotFound, Conflict, Exhausted, Unavailable, Internal)',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  });
  private readonly commits = new client.Histogram({
    name: 'ovsnet_store_commit_duration_seconds',
    help: 'Time for a change of the state to be durable (its journal line appended and synced to the disk), which the call that made it waits for',
    buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1],
    registers: [this.registry],
  });
  private readonly passes = new client.Counter({
    name: 'ovsnet_reconcile_passes_total',
    help: 'Reconciliation passes, local (repair) or with Docker (full)',
    labelNames: ['type'] as const,
    registers: [this.registry],
  });
  private readonly changes = new client.Counter({
    name: 'ovsnet_reconcile_changes_total',
    help: 'What reconciliation repaired or removed, by kind',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  });

  /** The build and the settings that change what a benchmark or a dashboard sees: always 1, with them as labels. */
  describe(info: { version: string; logLevel: string }): void {
    new client.Gauge({ name: 'ovsnet_info', help: 'This plugin: its version and log level (always 1)', labelNames: ['version', 'log_level'] as const, registers: [this.registry] }).set({ version: info.version, log_level: info.logLevel }, 1);
  }

  /**
   * What each container's guard dropped, by reason, read from the drop flows' packet counts on each scrape
   * (`read` failing leaves them out of that scrape, and says so once in `onError`).
   */
  watchGuards(read: () => Promise<GuardDrops[]>, onError: (err: unknown) => void): void {
    let failing = false;
    new client.Counter({
      name: 'ovsnet_guard_dropped_packets_total',
      help: "Packets a container sent that its port's guard dropped, by reason (router-advertisement, redirect, dhcp-server, neighbour-spoof, source: not its own MAC or addresses, or tagged); from the drop flows' counts, which start again when the port's flows are set again",
      labelNames: ['network', 'endpoint', 'container', 'port', 'reason'] as const,
      registers: [this.registry],
      async collect() {
        this.reset();
        let drops: GuardDrops[];
        try {
          drops = await read();
          failing = false;
        } catch (err) {
          if (!failing) onError(err);
          failing = true;
          return;
        }
        for (const d of drops) {
          this.inc({ network: d.networkId.slice(0, 12), endpoint: d.endpointId.slice(0, 12), container: d.container ?? '', port: d.port, reason: d.reason }, d.packets);
        }
      },
    });
  }

  private readonly installWaits = new client.Histogram({
    name: 'ovsnet_ovn_install_wait_seconds',
    help: "OVN mode: how long a container's Join waited for this host's ovn-controller to install its port",
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });
  private readonly driftItems = new client.Gauge({
    name: 'ovsnet_drift',
    help: 'What differs between the records, the host and Docker after the last periodic reconcile pass (what ovsnet doctor would report), by kind',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  });

  /** Counts what the OVN northbound database sent, and says whether the plugin is connected to it, read from the client on each scrape. */
  watchNorthbound(received: () => number, connected: () => boolean): void {
    new client.Gauge({
      name: 'ovsnet_ovn_northbound_connected',
      help: "OVN mode: 1 while the plugin is connected to the northbound database's leader, 0 while it is not (it connects at start and stays connected)",
      registers: [this.registry],
      collect() {
        this.set(connected() ? 1 : 0);
      },
    });
    let counted = 0;
    new client.Counter({
      name: 'ovsnet_ovn_northbound_received_bytes_total',
      help: 'What the OVN northbound database sent the plugin (characters of JSON, about bytes): replies to its reads and writes, and its cluster-status updates',
      registers: [this.registry],
      collect() {
        const now = received();
        this.inc(now - counted);
        counted = now;
      },
    });
  }

  constructor(state: State) {
    // Process metrics (memory, CPU, event loop lag) as every Node exporter has them.
    client.collectDefaultMetrics({ register: this.registry });
    new client.Gauge({
      name: 'ovsnet_networks',
      help: 'Networks the plugin holds',
      registers: [this.registry],
      collect() {
        this.set(state.networks.size);
      },
    });
    new client.Gauge({
      name: 'ovsnet_endpoints',
      help: 'Endpoints (container attachments) the plugin holds',
      registers: [this.registry],
      collect() {
        this.set(state.endpoints.size);
      },
    });
    const poolLabels = (poolId: string) => {
      const pool = state.pools.get(poolId)!;
      const network = [...state.networks.values()].find((n) => [...n.ipv4, ...n.ipv6].some((s) => s.pool === pool.pool && s.addressSpace === pool.addressSpace));
      return { network: network?.id.slice(0, 12) ?? '', pool: pool.pool };
    };
    new client.Gauge({
      name: 'ovsnet_pool_addresses',
      help: 'Addresses dynamic allocation can hand out, per pool (its ip-range without network and broadcast)',
      labelNames: ['network', 'pool'] as const,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const pool of state.pools.values()) {
          this.set(poolLabels(pool.id), Number(boundsSize(usableBounds(parseCidr(pool.pool)!, parseCidr(pool.range)!))));
        }
      },
    });
    new client.Gauge({
      name: 'ovsnet_published_ports',
      help: "Ports published on the host (docker run -p) to containers of a network, each protocol and host address counted",
      labelNames: ['network'] as const,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const network of state.networks.values()) {
          const ports = state.endpointsOf(network.id).reduce((n, e) => n + (e.ports?.length ?? 0), 0);
          this.set({ network: network.id.slice(0, 12) }, ports);
        }
      },
    });
    new client.Gauge({
      name: 'ovsnet_ovn_claims',
      help: 'Addresses of an OVN network this host holds in the northbound database (a logical port each): its containers\' and aux addresses',
      labelNames: ['network'] as const,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const network of state.networks.values()) {
          if (network.spec.mode !== 'ovn') continue;
          let claims = 0;
          for (const subnet of [...network.ipv4, ...network.ipv6]) {
            const held = state.addressesOf(poolIdOf(subnet.addressSpace, subnet.pool));
            claims += held.size - (held.gateway() === undefined ? 0 : 1);
          }
          this.set({ network: network.id.slice(0, 12) }, claims);
        }
      },
    });
    new client.Gauge({
      name: 'ovsnet_pool_addresses_used',
      help: 'Addresses held in a pool (containers, gateway and aux addresses)',
      labelNames: ['network', 'pool'] as const,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const pool of state.pools.values()) this.set(poolLabels(pool.id), state.addressesOf(pool.id).size);
      },
    });
  }

  call(call: string, seconds: number, errorKind?: string): void {
    this.requests.inc({ call, outcome: errorKind ? 'error' : 'ok' });
    this.duration.observe({ call }, seconds);
    if (errorKind) this.errors.inc({ kind: errorKind });
  }

  commit(ms: number): void {
    this.commits.observe(ms / 1000);
  }

  ovnInstalled(seconds: number): void {
    this.installWaits.observe(seconds);
  }

  /** What the last look after a pass with Docker found differing, by kind (kinds found before and not now read 0). */
  drift(kinds: readonly string[]): void {
    const counts = new Map<string, number>();
    for (const kind of kinds) counts.set(kind, (counts.get(kind) ?? 0) + 1);
    for (const kind of this.driftKinds) if (!counts.has(kind)) counts.set(kind, 0);
    for (const [kind, n] of counts) {
      this.driftItems.set({ kind }, n);
      this.driftKinds.add(kind);
    }
  }

  private readonly driftKinds = new Set<string>();

  pass(changes: Record<string, number>, withDocker: boolean): void {
    this.passes.inc({ type: withDocker ? 'full' : 'repair' });
    for (const [kind, n] of Object.entries(changes)) this.changes.inc({ kind }, n);
  }
}

/** Serves GET /metrics on host:port. */
export async function serveMetrics(metrics: Metrics, address: { host: string; port: number }): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    if (req.method !== 'GET' || req.url !== '/metrics') {
      res.writeHead(404, { 'Content-Type': 'text/plain' }).end('only GET /metrics here\n');
      return;
    }
    metrics.registry
      .metrics()
      .then((text) => res.writeHead(200, { 'Content-Type': metrics.registry.contentType }).end(text))
      .catch((err: Error) => res.writeHead(500, { 'Content-Type': 'text/plain' }).end(err.message));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(address.port, address.host, resolve);
  });
  return server;
}
