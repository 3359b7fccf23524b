/**
 * OVN mode at the size of 1 000 hosts: a northbound database filled as that
 * many hosts would fill it (per host: 4 networks, 10 addresses held on each;
 * 20 hosts per network; so at 1 000 hosts 200 switches with their guard
 * ACLs, 40 000 claimed addresses as logical ports, 1 000 chassis
 * registrations), and a southbound database with as many chassis, both made
 * by a generator that speaks OVSDB to them directly. This host's plugin then
 * joins one of the networks and is measured: CreateNetwork, an address claim
 * and release (the northbound part of a container's start and removal; the
 * rest of a start does not read the northbound database), doctor's drift
 * check, a reconcile pass, a restart to Plugin.Activate, its memory, and
 * what the northbound database sent it for each. At 10, 100 and 1 000 hosts,
 * so that growth shows.
 *
 *   npm run bench:ovn-scale [-- 10,100,1000]
 *
 * The databases are standalone ovsdb-servers on unix sockets (a cluster's
 * leader answers reads the same way) without ovn-northd, which this does not
 * measure. The plugin runs on a simulated host (its own ovsdb-server and
 * ovs-vswitchd, no dockerd): nothing of the machine's own is touched.
 */
import { mkdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { OvsdbClient } from '../src/adapters/ovsdb.js';
import { type Operation, namedUuid, ovsMap, ovsSet } from '../src/adapters/ovsdb-datum.js';
import { REG } from '../src/domain/ovn-identity.js';
import { NB, defaultSwitchName, guardAcls, reservationPort } from '../src/domain/ovn.js';
import { OWNER_KEY, OWNER_VALUE } from '../src/domain/names.js';
import { silentLogger } from '../src/log.js';
import { alive, cmd, killAll, waitFor } from '../test/e2e/harness/proc.js';
import { SimHost } from '../test/e2e/harness/sim-host.js';
import { closeCalls, ok, quantile, rssMiB } from './support.js';

const LEVELS = (process.argv[2] ?? '10,100,1000').split(',').map(Number);
const NETWORKS_PER_HOST = 4;
const HOSTS_PER_NETWORK = 20;
const CLAIMS_PER_NETWORK = 10;
const SAMPLE = 50;
const METRICS = '127.0.0.1:9618';

const subnetOf = (i: number) => `10.${64 + Math.floor(i / 256)}.${i % 256}.0/24`;
const chassisOf = (j: number) => `host-${String(j).padStart(4, '0')}`;

async function startDb(dir: string, db: 'nb' | 'sb'): Promise<string> {
  const file = path.join(dir, `${db}.db`);
  await cmd('ovsdb-tool', ['create', file, `/usr/share/ovn/ovn-${db}.ovsschema`]);
  await cmd('ovsdb-server', [file, `--remote=punix:${dir}/${db}.sock`, `--pidfile=${dir}/${db}.pid`, `--unixctl=${dir}/${db}.ctl`, `--log-file=${dir}/${db}.log`, '--detach']);
  return `unix:${dir}/${db}.sock`;
}

async function stopDb(dir: string, db: 'nb' | 'sb'): Promise<void> {
  const pid = Number((await readFile(path.join(dir, `${db}.pid`), 'utf8').catch(() => '')).trim());
  if (!pid) return;
  await killAll([pid]);
  await waitFor(`${db} to exit`, async () => !alive(pid), 10_000, 50);
}

/** Fills both databases as `hosts` hosts would; returns the rows made. */
async function generate(nbRemote: string, sbRemote: string, hosts: number): Promise<{ switches: number; ports: number; seconds: number }> {
  const started = performance.now();
  const networks = Math.max(2, Math.round((hosts * NETWORKS_PER_HOST) / HOSTS_PER_NETWORK));
  const perHost = Math.min(NETWORKS_PER_HOST, networks);
  const members = Array.from({ length: networks }, () => [] as string[]);
  for (let j = 0; j < hosts; j++) for (let k = 0; k < perHost; k++) members[(j * perHost + k) % networks]!.push(chassisOf(j));
  const nb = new OvsdbClient({ address: nbRemote, database: 'OVN_Northbound', log: silentLogger, requestTimeoutMs: 120_000 });
  const sb = new OvsdbClient({ address: sbRemote, database: 'OVN_Southbound', log: silentLogger, requestTimeoutMs: 120_000 });
  const made = new Date(Date.now() - 3_600_000).toISOString();
  let ports = 0;
  try {
    for (let i = 0; i < networks; i++) {
      const subnet = subnetOf(i);
      const record = { subnet, switchName: defaultSwitchName(subnet) };
      const listed = [...new Set(members[i])];
      const acls = guardAcls(record, { allowRa: false, allowDhcpServer: false });
      const claims: Operation[] = [];
      let next = 2;
      for (const chassis of listed) {
        for (let c = 0; c < CLAIMS_PER_NETWORK; c++) {
          const spec = reservationPort({ ...record, networkId: `net-${i}` }, subnet.replace(/0\/24$/, String(next++)), { name: chassis, hostname: chassis, hostId: `id-${chassis}` }, made);
          claims.push({ op: 'insert', table: 'Logical_Switch_Port', row: { name: spec.name, addresses: ovsSet([...spec.addresses]), port_security: ovsSet([...spec.portSecurity]), external_ids: ovsMap(spec.externalIds) }, 'uuid-name': `p${claims.length}` });
        }
      }
      ports += claims.length;
      await nb.transact([
        ...acls.map((acl, a): Operation => ({ op: 'insert', table: 'ACL', row: { direction: acl.direction, priority: acl.priority, match: acl.match, action: acl.action, external_ids: ovsMap(acl.externalIds) }, 'uuid-name': `acl${a}` })),
        ...claims,
        {
          op: 'insert',
          table: 'Logical_Switch',
          row: {
            name: record.switchName,
            external_ids: ovsMap({ [OWNER_KEY]: OWNER_VALUE, [NB.subnet]: subnet, [NB.createdBy]: listed[0]!, ...Object.fromEntries(listed.map((c) => [`${NB.hostPrefix}${c}`, c])) }),
            acls: ovsSet(acls.map((_, a) => namedUuid(`acl${a}`))),
            ports: ovsSet(claims.map((_, p) => namedUuid(`p${p}`))),
          },
        },
      ]);
    }
    for (let from = 0; from < hosts; from += 500) {
      const batch = Array.from({ length: Math.min(500, hosts - from) }, (_, n) => from + n);
      await nb.transact(batch.map((j): Operation => ({ op: 'insert', table: 'Chassis_Template_Var', row: { chassis: chassisOf(j), external_ids: ovsMap({ [OWNER_KEY]: OWNER_VALUE, [REG.hostId]: `id-${chassisOf(j)}`, [REG.hostname]: chassisOf(j), [REG.encapIp]: `10.252.${j >> 8}.${j & 255}`, [REG.since]: made }) } })));
      await sb.transact(
        batch.flatMap((j): Operation[] => [
          { op: 'insert', table: 'Encap', row: { type: 'geneve', ip: `10.252.${j >> 8}.${j & 255}`, chassis_name: chassisOf(j), options: ovsMap({ csum: 'true' }) }, 'uuid-name': `e${j}` },
          { op: 'insert', table: 'Chassis', row: { name: chassisOf(j), hostname: chassisOf(j), encaps: ovsSet([namedUuid(`e${j}`)]) } },
        ]),
      );
    }
  } finally {
    nb.close();
    sb.close();
  }
  return { switches: networks, ports, seconds: (performance.now() - started) / 1000 };
}

/** What the northbound database has sent the plugin so far, from its metrics. */
async function nbReceived(h: SimHost): Promise<number> {
  const { stdout } = await h.exec('busybox', ['wget', '-q', '-O', '-', `http://${METRICS}/metrics`]);
  return Number(/^ovsnet_ovn_northbound_received_bytes_total (\S+)/m.exec(stdout)?.[1] ?? NaN);
}

interface Row {
  hosts: number;
  rows: string;
  createNetwork: number;
  claim: number[];
  release: number[];
  doctor: number;
  reconcile: number;
  activate: number;
  rss: number;
  bytes: { createNetwork: number; claim: number; doctor: number; reconcile: number; start: number };
}

const median = (v: number[]) => quantile(v, 0.5);
const kib = (n: number) => `${(n / 1024).toFixed(1)} KiB`;

async function level(h: SimHost, hosts: number): Promise<Row> {
  const dir = path.join(h.dir, `ovn-${hosts}`);
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const nbRemote = await startDb(dir, 'nb');
  const sbRemote = await startDb(dir, 'sb');
  try {
    const made = await generate(nbRemote, sbRemote, hosts);
    await h.vsctl(['set', 'open', '.', 'external_ids:system-id=bench-host', 'external_ids:hostname=bench-host', 'external_ids:ovn-encap-type=geneve', 'external_ids:ovn-encap-ip=10.251.0.1', `external_ids:ovn-remote=${sbRemote}`]);
    await h.stopPlugin();
    await rm(path.join(h.dir, 'state'), { recursive: true, force: true });
    const env = { OVSNET_OVN_NB: nbRemote, OVSNET_DOCKER: 'none', OVSNET_LOG_LEVEL: 'warn', OVSNET_RECONCILE_INTERVAL: '3600', OVSNET_RECONCILE_GRACE: '0', OVSNET_METRICS: METRICS };
    await h.startPlugin(env, { until: 'activate' });
    const socket = h.socket;
    const subnet = subnetOf(0);
    const gateway = subnet.replace(/0\/24$/, '1');

    let before = await nbReceived(h);
    const pool = await ok(socket, 'IpamDriver.RequestPool', { AddressSpace: 'local', Pool: subnet, SubPool: '', Options: {}, V6: false });
    await ok(socket, 'IpamDriver.RequestAddress', { PoolID: pool.PoolID, Address: gateway, Options: { RequestAddressType: 'com.docker.network.gateway' } });
    let t = performance.now();
    await ok(socket, 'NetworkDriver.CreateNetwork', {
      NetworkID: 'c'.repeat(64),
      Options: { 'com.docker.network.enable_ipv6': false, 'com.docker.network.generic': { mode: 'ovn' } },
      IPv4Data: [{ AddressSpace: 'local', Pool: subnet, Gateway: `${gateway}/24` }],
      IPv6Data: [],
    });
    const createNetwork = performance.now() - t;
    const createBytes = (await nbReceived(h)) - before;

    // Claims where other hosts hold most of the subnet: the plugin walks past their addresses as it would.
    const claim: number[] = [];
    const release: number[] = [];
    const got: string[] = [];
    before = await nbReceived(h);
    for (let i = 0; i < SAMPLE; i++) {
      t = performance.now();
      const answer = await ok(socket, 'IpamDriver.RequestAddress', { PoolID: pool.PoolID, Address: '', Options: null });
      claim.push(performance.now() - t);
      got.push((answer.Address as string).split('/')[0]!);
    }
    const claimBytes = ((await nbReceived(h)) - before) / SAMPLE;
    for (const address of got.slice(0, SAMPLE - 10)) {
      t = performance.now();
      await ok(socket, 'IpamDriver.ReleaseAddress', { PoolID: pool.PoolID, Address: address });
      release.push(performance.now() - t);
    }

    const doctor: number[] = [];
    const reconcile: number[] = [];
    let doctorBytes = 0;
    let reconcileBytes = 0;
    for (let i = 0; i < 3; i++) {
      before = await nbReceived(h);
      t = performance.now();
      const drift = await h.pluginRequest('GET', '/ovsnet/drift?docker=0');
      doctor.push(performance.now() - t);
      doctorBytes = (await nbReceived(h)) - before;
      const kinds = (JSON.parse(drift.body) as { Drift: Array<{ kind: string }> }).Drift.map((d) => d.kind);
      if (kinds.length > 0) throw new Error(`drift on the bench host: ${kinds.join(', ')}`);
      before = await nbReceived(h);
      t = performance.now();
      const pass = await h.pluginRequest('POST', '/ovsnet/reconcile', '{}');
      reconcile.push(performance.now() - t);
      reconcileBytes = (await nbReceived(h)) - before;
      if (pass.status !== 200) throw new Error(`reconcile failed: ${pass.body}`);
    }
    const rss = await rssMiB(h.pluginPid!);

    // A restart on this state: to Plugin.Activate (what dockerd waits for), and what the start's pass reads.
    await h.stopPlugin();
    t = performance.now();
    await h.startPlugin(env, { until: 'activate' });
    const activate = performance.now() - t;
    await waitFor('the start pass to read the northbound database', async () => (await nbReceived(h)) > 0, 30_000, 100);
    await new Promise((r) => setTimeout(r, 2_000));
    const startBytes = await nbReceived(h);
    await h.stopPlugin();
    return {
      hosts,
      rows: `${made.switches} switches, ${made.ports} ports, ${hosts} chassis (made in ${made.seconds.toFixed(1)} s)`,
      createNetwork,
      claim,
      release,
      doctor: median(doctor),
      reconcile: median(reconcile),
      activate,
      rss,
      bytes: { createNetwork: createBytes, claim: claimBytes, doctor: doctorBytes, reconcile: reconcileBytes, start: startBytes },
    };
  } finally {
    await stopDb(dir, 'nb');
    await stopDb(dir, 'sb');
  }
}

async function main(): Promise<void> {
  const h = await SimHost.start({ name: 'ovnscale', docker: false, plugin: false });
  try {
    await h.vsctl(['--may-exist', 'add-br', 'br-int', '--', 'set', 'bridge', 'br-int', 'datapath_type=netdev', 'fail_mode=secure']);
    const rows: Row[] = [];
    for (const hosts of LEVELS) {
      const row = await level(h, hosts);
      rows.push(row);
      const f = (v: number) => `${v.toFixed(1)} ms`;
      console.log(`${hosts} hosts: ${row.rows}`);
      console.log(`  CreateNetwork ${f(row.createNetwork)} (reads ${kib(row.bytes.createNetwork)}) | claim p50 ${f(median(row.claim))} p99 ${f(quantile(row.claim, 0.99))} (reads ${kib(row.bytes.claim)} each) | release p50 ${f(median(row.release))} p99 ${f(quantile(row.release, 0.99))}`);
      console.log(`  doctor ${f(row.doctor)} (reads ${kib(row.bytes.doctor)}) | reconcile pass ${f(row.reconcile)} (reads ${kib(row.bytes.reconcile)}) | restart to Activate ${f(row.activate)}, its start pass reads ${kib(row.bytes.start)} | RSS ${row.rss.toFixed(0)} MiB`);
    }
    const first = rows[0]!;
    const last = rows[rows.length - 1]!;
    if (rows.length > 1) {
      console.log(`${last.hosts} against ${first.hosts} hosts: claim p50 ${(median(last.claim) / median(first.claim)).toFixed(2)}x, CreateNetwork ${(last.createNetwork / first.createNetwork).toFixed(2)}x, doctor ${(last.doctor / first.doctor).toFixed(2)}x, restart to Activate ${(last.activate / first.activate).toFixed(2)}x`);
    }
  } finally {
    closeCalls();
    await h.stop();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
