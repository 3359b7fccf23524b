/**
 * What operators see: the status CLI (networks, endpoints, doctor, reconcile),
 * Prometheus metrics scraped during real work, the logs at the default level
 * (ids on every line about them, nothing noisy), and the daemon installer.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { lstat, mkdir, readFile, readlink, stat, symlink } from 'node:fs/promises';
import http from 'node:http';
import { after, before, describe, it } from 'node:test';
import { visibleInSvg } from '../harness/browser.js';
import { cmd, killAll, waitFor } from './harness/proc.js';
import { REPO_ROOT, SimHost } from './harness/sim-host.js';
import { containerAddress, endpointPortName, runContainer } from './support.js';

const CLI = `${REPO_ROOT}/dist/src/cli/main.js`;

describe('operating the plugin', () => {
  let host: SimHost;

  /** Runs the CLI inside the host's namespace, as root on that host would. */
  const cli = (args: string[], check = true) =>
    host.exec(process.execPath, [CLI, ...args], {
      check,
      env: {
        OVSNET_SOCKET: host.socket,
        DOCKER_HOST: host.dockerHost,
        OVSNET_STATE_DIR: `${host.dir}/state`,
        OVSNET_OVSDB: host.ovsdb,
        OVSNET_DOCKER: host.dockerHost,
      },
    });

  async function scrape(): Promise<Map<string, number>> {
    const { stdout } = await host.exec('busybox', ['wget', '-q', '-O', '-', 'http://127.0.0.1:9617/metrics']);
    const values = new Map<string, number>();
    for (const line of stdout.split('\n')) {
      if (!line || line.startsWith('#')) continue;
      const at = line.lastIndexOf(' ');
      values.set(line.slice(0, at), Number(line.slice(at + 1)));
    }
    return values;
  }
  const metric = (values: Map<string, number>, name: string) => values.get(name) ?? 0;

  before(async () => {
    host = await SimHost.start({ name: 'ops', pluginEnv: { OVSNET_METRICS: '127.0.0.1:9617', OVSNET_LOG_LEVEL: 'info' } });
    await host.docker(['network', 'create', '-d', host.driver, '--ipam-driver', host.driver, '--subnet', '10.70.0.0/24', '--ip-range', '10.70.0.0/25', '-o', 'vlan=70', 'opsnet']);
  });
  after(async () => {
    await host?.stop();
  });

  it('serves Prometheus metrics whose numbers move with the work done', async () => {
    const before = await scrape();
    for (const name of ['m1', 'm2', 'm3']) await runContainer(host, name, 'opsnet');
    const during = await scrape();
    const joins = 'ovsnet_requests_total{call="NetworkDriver.Join",outcome="ok"}';
    assert.equal(metric(during, joins) - metric(before, joins), 3, 'three joins counted');
    assert.equal(metric(during, 'ovsnet_endpoints'), 3);
    assert.equal(metric(during, 'ovsnet_networks'), 1);
    const id = JSON.parse((await host.docker(['network', 'inspect', 'opsnet'])).stdout)[0].Id.slice(0, 12);
    assert.equal(metric(during, `ovsnet_pool_addresses{network="${id}",pool="10.70.0.0/24"}`), 127, 'the ip-range .0/25 without the network address');
    assert.equal(metric(during, `ovsnet_pool_addresses_used{network="${id}",pool="10.70.0.0/24"}`), 4, 'three containers and the gateway');
    assert.ok(metric(during, 'ovsnet_request_duration_seconds_count{call="NetworkDriver.Join"}') >= 3);
    // Each start commits its address, its endpoint and its join, each synced before its call answers.
    assert.ok(metric(during, 'ovsnet_store_commit_duration_seconds_count') - metric(before, 'ovsnet_store_commit_duration_seconds_count') >= 9, 'durable commits counted');
    await host.docker(['run', '-d', '--name', 'dup', '--net', 'opsnet', '--ip', (await containerAddress(host, 'm1', 'opsnet')).ip, 'local/busybox', 'sleep', '1d'], { check: false });
    await host.docker(['rm', '-f', 'dup']);
    const after = await scrape();
    assert.equal(metric(after, 'ovsnet_errors_total{kind="Conflict"}') - metric(during, 'ovsnet_errors_total{kind="Conflict"}'), 1, 'the refused --ip is counted');
    await cli(['reconcile']);
    assert.ok(metric(await scrape(), 'ovsnet_reconcile_passes_total{type="full"}') >= 1);
  });

  it('lists networks and endpoints with Docker names, pool usage and OVS ports', async () => {
    const networks = (await cli(['networks'])).stdout.split('\n');
    assert.match(networks[0]!, /^NAME +ID +MODE +SEGMENT +BRIDGE +GATEWAY +MTU +SUBNETS \(USED\/SIZE\) +GUARD +UPLINK\/PEERS$/);
    assert.match(networks[1]!, /^opsnet +[0-9a-f]{12} +vlan +vlan 70 +ovs0 +nat +1500 +10\.70\.0\.0\/24 4\/127 +full +-$/);
    const json = JSON.parse((await cli(['networks', '--json'])).stdout);
    assert.equal(json[0].name, 'opsnet');
    assert.deepEqual(json[0].subnets[0], { subnet: '10.70.0.0/24', gateway: '10.70.0.1', range: '10.70.0.0/25', used: 4, size: 127 });
    const endpoints = JSON.parse((await cli(['endpoints', '--json'])).stdout);
    const m1 = endpoints.find((e: any) => e.container === 'm1');
    assert.ok(m1, 'container names come from Docker');
    assert.equal(m1.network, 'opsnet');
    assert.equal(m1.tag, 70);
    assert.equal(m1.address, `${(await containerAddress(host, 'm1', 'opsnet')).ip}/24`);
    assert.equal(m1.port, await endpointPortName(host, (await containerAddress(host, 'm1', 'opsnet')).endpointId));
    assert.equal(endpoints.length, (await host.pluginState()).endpoints.length, 'endpoints only: no spare veth pair is listed');
    const text = (await cli(['endpoints'])).stdout;
    assert.match(text, /^CONTAINER +CONTAINER ID +NETWORK +ADDRESS +MAC +OVS PORT +TAG +PUBLISHED$/m);
    assert.match(text, /^m1 +[0-9a-f]{12} +opsnet +10\.70\.0\.\d+\/24 +02:42:0a:46:00:[0-9a-f]{2} +ov[sp][0-9a-f]{12} +70 +-$/m);
  });

  it('graph: the host\'s networks as JSON, DOT and an SVG picture in which a real browser shows every container and network', async () => {
    const t = JSON.parse((await cli(['graph', '--format', 'json'])).stdout);
    const containers = t.containers.map((c: any) => c.container).sort();
    assert.deepEqual(containers, ['m1', 'm2', 'm3'], 'the containers, named by Docker');
    const network = t.networks.find((n: any) => n.name === 'opsnet');
    assert.deepEqual([network.bridge, network.segment, network.gatewayPort], ['ovs0', 'vlan 70', (await host.pluginState()).networks[0]!.gatewayPort]);
    assert.deepEqual(t.bridges, [{ name: 'ovs0', networks: [network.id] }]);
    const m1 = t.containers.find((c: any) => c.container === 'm1');
    assert.equal(m1.address, `${(await containerAddress(host, 'm1', 'opsnet')).ip}/24`);
    const dot = (await cli(['graph', '--format', 'dot'])).stdout;
    assert.match(dot, /^graph ovsnet \{/);
    for (const name of [...containers, 'opsnet', m1.port]) assert.ok(dot.includes(name), `${name} is in the DOT graph`);
    const svg = (await cli(['graph'])).stdout;
    assert.match(svg, /<svg[^>]*>/, 'SVG by default');
    let why: Record<string, string> = {};
    const seen = await visibleInSvg(svg, [...containers, 'opsnet', 'bridge ovs0', `port ${m1.port}`, 'vlan 70', 'not-a-container'], (w) => (why = w));
    assert.deepEqual(seen, { m1: 'visible', m2: 'visible', m3: 'visible', opsnet: 'visible', 'bridge ovs0': 'visible', [`port ${m1.port}`]: 'visible', 'vlan 70': 'visible', 'not-a-container': 'missing' }, JSON.stringify(why));
    const bad = await cli(['graph', '--format', 'png'], false);
    assert.equal(bad.exitCode, 2);
    assert.match(bad.stderr, /--format is svg, dot or json \(given: png\)/);
  });

  it('doctor: no drift on a healthy host, every difference with its fix otherwise', async () => {
    const healthy = await cli(['doctor']);
    assert.equal(healthy.stdout.trim(), "no drift: the plugin's records, Open vSwitch, the kernel and Docker agree");
    // Debris the periodic reconciliation has not reached yet: a stray veth with a plugin name.
    await host.exec('ip', ['link', 'add', 'name', 'ovs0123456789ab', 'type', 'veth', 'peer', 'name', 'ovc0123456789ab']);
    const sick = await cli(['doctor'], false);
    assert.equal(sick.exitCode, 1, 'drift makes the exit code non-zero');
    assert.match(sick.stdout, /^orphan-veth: veth ovs0123456789ab belongs to no endpoint\n {4}fix: ip link del ovs0123456789ab$/m);
    const report = JSON.parse((await cli(['doctor', '--json'], false)).stdout);
    assert.equal(report.pluginRunning, true);
    const fix = report.drift.find((d: any) => d.subject === 'ovs0123456789ab').fix as string;
    await host.exec(fix.split(' ')[0]!, fix.split(' ').slice(1));
    assert.equal((await cli(['doctor'])).exitCode, 0, 'the printed fix fixes it');
  });

  it('doctor and reconcile compare ports by what they carry: a changed tag or tunnel remote_ip is reported with its fix and put back', async () => {
    // An overlay needs a tunnel path: this host's underlay address on a netdev bridge (no peer needs to answer).
    await host.vsctl(['--may-exist', 'add-br', 'br-phy', '--', 'set', 'bridge', 'br-phy', 'datapath_type=netdev']);
    await host.exec('ip', ['address', 'replace', '10.251.0.1/24', 'dev', 'br-phy']);
    await host.exec('ip', ['link', 'set', 'br-phy', 'up']);
    await host.docker(['network', 'create', '-d', host.driver, '--ipam-driver', host.driver, '--subnet', '10.71.0.0/24', '-o', 'mode=vxlan', '-o', 'vni=71', '-o', 'peers=10.251.0.2', 'opsover']);
    await runContainer(host, 'drifter', 'opsnet');
    await host.vsctl(['--may-exist', 'add-port', 'ovs0', 'foreign9', '--', 'set', 'interface', 'foreign9', 'type=internal', '--', 'set', 'port', 'foreign9', 'tag=70']);
    const ip = (await containerAddress(host, 'drifter', 'opsnet')).ip;
    const endpoint = (await host.pluginState()).endpoints.find((e) => e.address === `${ip}/24`)!;
    const tunnel = (await host.ownedPorts()).find((p) => p.externalIds['ovsnet-role'] === 'tunnel')!;
    assert.equal((await cli(['doctor'])).exitCode, 0, 'no drift to begin with');

    await host.vsctl(['set', 'port', endpoint.hostIf, 'tag=999']);
    await host.vsctl(['set', 'interface', tunnel.name, 'options:remote_ip=10.251.0.9']);
    await host.vsctl(['set', 'port', 'foreign9', 'tag=999']);
    const report = JSON.parse((await cli(['doctor', '--json'], false)).stdout) as { drift: Array<{ kind: string; subject: string; fix: string; detail: string }> };
    const about = (subject: string) => report.drift.filter((d) => d.subject === subject);
    assert.deepEqual(about(endpoint.hostIf).map((d) => [d.kind, d.fix]), [['port-differs', `ovs-vsctl set port ${endpoint.hostIf} tag=70`]]);
    assert.match(about(endpoint.hostIf)[0]!.detail, /tag 999 where 70 belongs/);
    assert.deepEqual(about(tunnel.name).map((d) => [d.kind, d.fix]), [['port-differs', `ovs-vsctl set interface ${tunnel.name} options:remote_ip=10.251.0.2`]]);
    assert.deepEqual(about('foreign9'), [], "a foreign port is none of the plugin's business");
    assert.equal(report.drift.length, 2, JSON.stringify(report.drift));

    await cli(['reconcile']);
    // Counted from the log: a periodic pass may have come first.
    const repaired = (await host.pluginLogLines()).filter((l) => l.msg === 'reconcile: set an OVS port back to what its records say').map((l) => l.port);
    assert.deepEqual(repaired.sort(), [endpoint.hostIf, tunnel.name].sort());
    assert.equal((await cli(['doctor'])).exitCode, 0, 'reconcile put everything back');
    assert.equal((await host.vsctl(['get', 'port', endpoint.hostIf, 'tag'])).stdout.trim(), '70');
    assert.equal((await host.vsctl(['get', 'interface', tunnel.name, 'options:remote_ip'])).stdout.trim(), '"10.251.0.2"');
    assert.equal((await host.vsctl(['get', 'port', 'foreign9', 'tag'])).stdout.trim(), '999', 'the foreign port is untouched');
    await host.vsctl(['del-port', 'foreign9']);
    await host.docker(['rm', '-f', 'drifter']);
    await host.docker(['network', 'rm', 'opsover']);
  });

  it('a removed gateway address: doctor names the command that puts it back, and the plugin puts it back by itself', async () => {
    const gateway = (await host.pluginState()).networks.find((n) => n.gatewayPort)!.gatewayPort!;
    const hasAddress = async () => (await host.exec('ip', ['-br', 'address', 'show', 'dev', gateway])).stdout.includes('10.70.0.1/24');
    // With the plugin running, the kernel watcher sees the address go and a repair follows at once.
    await host.exec('ip', ['address', 'del', '10.70.0.1/24', 'dev', gateway]);
    await waitFor('the gateway address to come back', hasAddress, 10_000, 100);
    // With the plugin down, doctor reads the store and the host itself, with the same diff.
    await host.stopPlugin();
    try {
      await host.exec('ip', ['address', 'del', '10.70.0.1/24', 'dev', gateway]);
      const report = JSON.parse((await cli(['doctor', '--json'], false)).stdout) as { drift: Array<{ kind: string; fix: string }> };
      const missing = report.drift.filter((d) => d.kind === 'gateway-address-missing');
      assert.deepEqual(missing.map((d) => d.fix), [`ip address add 10.70.0.1/24 dev ${gateway} && ip link set ${gateway} up`]);
      for (const step of missing[0]!.fix.split(' && ')) await host.exec(step.split(' ')[0]!, step.split(' ').slice(1));
      const after = JSON.parse((await cli(['doctor', '--json'], false)).stdout) as { drift: Array<{ kind: string }> };
      assert.deepEqual(after.drift.map((d) => d.kind), ['plugin-not-running'], 'the printed fix fixes it');
    } finally {
      await host.startPlugin();
    }
  });

  it('doctor works with the plugin down, and says so', async () => {
    await host.stopPlugin();
    try {
      const down = await cli(['doctor', '--json'], false);
      assert.equal(down.exitCode, 1);
      const report = JSON.parse(down.stdout);
      assert.equal(report.pluginRunning, false);
      assert.deepEqual(report.drift.map((d: any) => d.kind), ['plugin-not-running'], 'nothing else differs');
    } finally {
      await host.startPlugin();
    }
  });

  it('logs JSON lines with the ids, and nothing noisy at the default level', async () => {
    await host.docker(['rm', '-f', 'm1', 'm2', 'm3']);
    for (const name of ['q1', 'q2']) await runContainer(host, name, 'opsnet');
    await host.docker(['rm', '-f', 'q1', 'q2']);
    const lines = await host.pluginLogLines();
    assert.ok(lines.every((l) => typeof l.time === 'string' && typeof l.level === 'string' && typeof l.msg === 'string'));
    assert.ok(!lines.some((l) => l.level === 'debug'), 'no debug lines at info level');
    assert.ok(!lines.some((l) => l.msg === 'call'), 'container starts and stops do not log a line per call');
    const created = lines.find((l) => l.msg === 'network created');
    assert.match(String(created?.networkId), /^[0-9a-f]{64}$/);
    assert.equal(typeof created?.durationMs, 'number', 'network calls say how long they took');
    const refused = lines.find((l) => l.msg === 'call refused');
    assert.equal(refused?.call, 'NetworkDriver.CreateEndpoint');
    assert.match(String(refused?.endpointId), /^[0-9a-f]{64}$/);
    assert.equal(typeof refused?.durationMs, 'number');
  });

  it('installs as a daemon that starts before Docker, and removes it keeping state and settings', async () => {
    const root = `${host.dir}/root`;
    // An install by an earlier build, whose unit docker.service required: the upgrade removes that link.
    await mkdir(`${root}/etc/systemd/system/docker.service.requires`, { recursive: true });
    await symlink('/etc/systemd/system/ovsnet.service', `${root}/etc/systemd/system/docker.service.requires/ovsnet.service`);
    await cmd('bash', [`${REPO_ROOT}/plugin/install-daemon.sh`], { env: { DESTDIR: root }, timeoutMs: 300_000 });
    await assert.rejects(lstat(`${root}/etc/systemd/system/docker.service.requires`), 'no link makes docker.service require the plugin');
    const unit = await readFile(`${root}/etc/systemd/system/ovsnet.service`, 'utf8');
    assert.match(unit, /^Before=docker\.service$/m);
    // docker.service wants the plugin and does not require it: restarting or removing the plugin leaves dockerd be.
    assert.match(unit, /^WantedBy=docker\.service$/m);
    assert.doesNotMatch(unit, /^(RequiredBy|Requires|BindsTo|PartOf|RequisiteOf|Requisite)=/m);
    assert.match(unit, /^After=.*openvswitch-switch\.service/m);
    assert.match(unit, /^EnvironmentFile=-\/etc\/default\/ovsnet$/m);
    if ((await cmd('sh', ['-c', 'command -v systemd-analyze'], { check: false })).exitCode === 0) {
      const verify = await cmd('systemd-analyze', ['verify', '--man=no', `${root}/etc/systemd/system/ovsnet.service`], { check: false });
      assert.ok(!/error|invalid|unknown/i.test(verify.stderr.split('\n').filter((l) => l.includes('ovsnet.service')).join('\n')), verify.stderr);
    }
    assert.match(await readFile(`${root}/etc/default/ovsnet`, 'utf8'), /^#OVSNET_BRIDGE=ovs0 /m, 'every setting, commented out at its default');
    assert.equal(await readlink(`${root}/usr/local/bin/ovsnet`), '/opt/ovsnet/dist/src/cli/main.js');
    assert.equal((await stat(`${root}/var/lib/ovsnet`)).mode & 0o777, 0o700);
    await assert.rejects(lstat(`${root}/opt/ovsnet/node_modules/typescript`), 'no dev dependencies are installed');

    // The installed copy, on its own, serves the protocol on the host.
    const socket = `${host.dir}/daemon.sock`;
    const daemon = spawn('nsenter', [`--net=/run/netns/${host.ns}`, '--', process.execPath, `${root}/opt/ovsnet/dist/src/main.js`], {
      env: { ...process.env, OVSNET_SOCKET: socket, OVSNET_STATE_DIR: `${root}/var/lib/ovsnet`, OVSNET_OVSDB: host.ovsdb, OVSNET_DOCKER: 'none' },
      stdio: 'ignore',
    });
    try {
      const activate = () =>
        new Promise<string>((resolve, reject) => {
          const req = http.request({ socketPath: socket, method: 'POST', path: '/Plugin.Activate' }, (res) => {
            let body = '';
            res.on('data', (c) => (body += c));
            res.on('end', () => resolve(body));
          });
          req.on('error', reject);
          req.end();
        });
      const answer = await waitFor('the installed daemon to answer', () => activate().catch(() => undefined), 30_000, 200);
      assert.deepEqual(JSON.parse(answer), { Implements: ['NetworkDriver', 'IpamDriver'] });
    } finally {
      if (daemon.pid) await killAll([daemon.pid]);
    }
    const help = await cmd(process.execPath, [`${root}/opt/ovsnet/dist/src/cli/main.js`, '--help']);
    assert.match(help.stdout, /^usage: ovsnet <command>/);

    await cmd('bash', [`${REPO_ROOT}/plugin/install-daemon.sh`, '--remove'], { env: { DESTDIR: root } });
    await assert.rejects(stat(`${root}/opt/ovsnet`));
    await assert.rejects(lstat(`${root}/usr/local/bin/ovsnet`));
    await assert.rejects(stat(`${root}/etc/systemd/system/ovsnet.service`));
    assert.ok(await stat(`${root}/var/lib/ovsnet`), 'the state is kept');
    assert.ok(await stat(`${root}/etc/default/ovsnet`), 'the settings are kept');
  });
});
