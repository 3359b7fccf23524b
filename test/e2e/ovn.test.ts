/**
 * OVN mode end to end on three simulated hosts (each with its own Open
 * vSwitch, dockerd, ovn-controller and plugin), joined by an underlay, with
 * the northbound and southbound databases as three-member Raft clusters
 * spread over them and ovn-northd running: one network across the hosts,
 * addresses unique across every host, what a hostile container gets past port
 * security and the switch's guard ACLs (captured at victims on two hosts, with
 * both taken off by hand as the positive control), and the faults: the
 * plugin killed mid-call, dockerd and ovn-controller restarted, the
 * northbound leader killed or silenced, two of three members down, a power cut, a cloned host,
 * a host gone for good; and the northbound database over TLS. After
 * each, no address is held twice, no logical port is without its container,
 * and no container without its port.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { linkLocalOf } from '../../src/domain/flows.js';
import { ATTACKS, type Peer } from './harness/attacks.js';
import { captureDuring, sendFrames } from './harness/capture.js';
import type { Frame } from './harness/frames.js';
import { OvnCluster, OVN_TOOLS } from './harness/ovn.js';
import { requireTools, waitFor } from './harness/proc.js';
import { REPO_ROOT, SimHost } from './harness/sim-host.js';
import { Underlay } from './harness/underlay.js';
import { assertConsistent, assertPluginSaid, containerAddress, dockerError, httpGet, ping, runContainer, startHttp } from './support.js';

const NAMES = ['on1', 'on2', 'on3'] as const;
const ADDR: Record<string, string> = { on1: '10.250.1.1', on2: '10.250.1.2', on3: '10.250.1.3' };
const SUBNET = '10.60.0.0/24';
const FAST = { OVSNET_RECONCILE_INTERVAL: '2', OVSNET_RECONCILE_GRACE: '3', OVSNET_OVN_TIMEOUT: '60', OVSNET_OVN_PROBE: '2', OVSNET_OVN_HOST_LEASE: '9' };
const CLI = `${REPO_ROOT}/dist/src/cli/main.js`;

interface NbPortRow {
  name: string;
  addresses: string[];
  portSecurity: string[];
  ids: Record<string, string>;
}

describe('OVN mode across three hosts', () => {
  let underlay: Underlay;
  let cluster: OvnCluster;
  const hosts: SimHost[] = [];
  const net = (h: SimHost) => ['network', 'create', '-d', h.driver, '--ipam-driver', h.driver];

  /** The logical ports the plugin made, from the northbound database. */
  async function nbPorts(): Promise<NbPortRow[]> {
    const { stdout } = await cluster.nbctl(['--format=json', '--columns=name,addresses,port_security,external_ids', 'find', 'Logical_Switch_Port', 'external_ids:ovsnet-owner=ovsnet']);
    const table = JSON.parse(stdout) as { data: Array<[string, unknown, unknown, ['map', Array<[string, string]>]]> };
    const set = (v: unknown) => (Array.isArray(v) && v[0] === 'set' ? (v[1] as string[]) : typeof v === 'string' ? [v] : []);
    return table.data.map(([name, addresses, security, ids]) => ({ name, addresses: set(addresses), portSecurity: set(security), ids: Object.fromEntries(ids[1]) }));
  }

  /** Containers on OVN networks across all hosts: address, host, container. */
  async function containersEverywhere(network: string): Promise<Array<{ host: string; container: string; ip: string; mac: string }>> {
    const out = [];
    for (const h of hosts) {
      const inspect = await h.docker(['network', 'inspect', network], { check: false });
      if (inspect.exitCode !== 0) continue;
      for (const c of Object.values(JSON.parse(inspect.stdout)[0].Containers ?? {}) as Array<{ Name: string; IPv4Address: string; MacAddress: string }>) {
        out.push({ host: h.name, container: c.Name, ip: c.IPv4Address.split('/')[0]!, mac: c.MacAddress });
      }
    }
    return out;
  }

  /**
   * Across every host: each one's plugin, Docker and Open vSwitch agree; no address is held twice;
   * every container has its logical port (on its host's chassis, with its MAC and address) and no
   * logical port is without a container.
   */
  async function assertOvnConsistent(network = 'web'): Promise<void> {
    await waitFor('the hosts, Docker and OVN to agree', async () => {
      for (const h of hosts) await assertConsistent(h);
      const containers = await containersEverywhere(network);
      assert.equal(new Set(containers.map((c) => c.ip)).size, containers.length, `no address twice: ${containers.map((c) => `${c.host}/${c.container}=${c.ip}`).join(' ')}`);
      const ports = (await nbPorts()).filter((p) => p.ids['ovsnet-subnet'] === SUBNET);
      const byAddress = new Map(ports.map((p) => [p.ids['ovsnet-address'], p]));
      for (const c of containers) {
        const port = byAddress.get(c.ip);
        assert.ok(port, `${c.host}/${c.container} (${c.ip}) has its logical port`);
        assert.equal(port.ids['ovsnet-chassis'], c.host, `the port of ${c.ip} is ${c.host}'s`);
        assert.match(port.portSecurity.join(' '), new RegExp(`^[0-9a-f:]{17} ${c.ip.replace(/\./g, '\\.')}$`), `port security of ${c.ip}`);
      }
      assert.deepEqual(ports.map((p) => p.ids['ovsnet-address']).sort(), containers.map((c) => c.ip).sort(), 'no logical port without its container');
      return true;
    }, 40_000, 1_000).catch(async () => {
      for (const h of hosts) await assertConsistent(h);
      throw new Error(`OVN and the hosts do not agree: ports ${JSON.stringify((await nbPorts()).map((p) => [p.name, p.ids['ovsnet-chassis']]))}, containers ${JSON.stringify(await containersEverywhere(network))}`);
    });
  }

  /** Kills a host's plugin at a fault point during `action`, then starts it again as an operator would. */
  async function crashIn(h: SimHost, fault: string, action: () => Promise<unknown>): Promise<void> {
    await h.stopPlugin();
    await h.startPlugin({ OVSNET_FAULT: fault });
    const done = action().catch(() => undefined);
    await h.waitPluginExit();
    await h.startPlugin({ OVSNET_FAULT: '' });
    await done;
  }

  const cli = (h: SimHost, args: string[], check = true) =>
    h.exec(process.execPath, [CLI, ...args], { check, env: { OVSNET_SOCKET: h.socket, DOCKER_HOST: h.dockerHost, OVSNET_STATE_DIR: `${h.dir}/state`, OVSNET_OVSDB: h.ovsdb, OVSNET_OVN_NB: cluster.nbRemotes } });

  before(async () => {
    await requireTools(OVN_TOOLS);
    underlay = await Underlay.create('ovn-ul');
    for (const name of NAMES) {
      const h = await SimHost.start({ name, plugin: false });
      hosts.push(h);
      await underlay.attach(h, `${ADDR[name]}/24`);
    }
    cluster = await OvnCluster.start(NAMES.map((name, i) => ({ host: hosts[i]!, address: ADDR[name]! })));
    for (const h of hosts) await h.startPlugin({ ...FAST, OVSNET_OVN_NB: cluster.nbRemotes });
  });
  after(async () => {
    for (const h of hosts) await h.stop().catch(() => {});
    await underlay?.destroy();
  });

  it('one logical switch for the same network made on three hosts at once; containers reach each other across hosts by ping and TCP', async () => {
    await Promise.all(hosts.map((h) => h.docker([...net(h), '--subnet', SUBNET, '-o', 'mode=ovn', 'web'])));
    const switches = (await cluster.nbctl(['--bare', '--columns=name', 'find', 'Logical_Switch', `external_ids:ovsnet-subnet="${SUBNET}"`])).stdout.split('\n').filter(Boolean);
    assert.deepEqual(switches, ['ovsnet-10.60.0.0_24'], 'three hosts at the same moment, one switch');
    for (const [i, h] of hosts.entries()) await runContainer(h, `w${i + 1}`, 'web', { extra: ['--restart', 'always'] });
    const ips = await Promise.all(hosts.map((h, i) => containerAddress(h, `w${i + 1}`, 'web')));
    assert.equal(new Set(ips.map((a) => a.ip)).size, 3);
    for (const [i, h] of hosts.entries()) {
      const other = ips[(i + 1) % 3]!;
      assert.ok(await ping(h, `w${i + 1}`, other.ip, 3), `w${i + 1} on ${h.name} pings ${other.ip} on another host`);
    }
    await startHttp(hosts[2]!, 'w3');
    assert.equal(await httpGet(hosts[0]!, 'w1', ips[2]!.ip), (await hosts[2]!.docker(['exec', 'w3', 'hostname'])).stdout.trim(), 'TCP across hosts');
    const mtu = await hosts[0]!.docker(['exec', 'w1', 'cat', '/sys/class/net/eth0/mtu']);
    assert.equal(mtu.stdout.trim(), '1442', 'Geneve: 1500 minus 58');
    const endpoint = (await hosts[0]!.pluginState()).endpoints[0]!;
    assert.equal((await hosts[0]!.links()).find((l) => l.name === endpoint.hostIf)?.mtu, 1442, 'both veth ends');
    const port = await hosts[0]!.vsctl(['get', 'interface', endpoint.hostIf, 'external_ids:ovn-installed']);
    assert.equal(port.stdout.trim(), '"true"', 'installed by ovn-controller before Docker heard back');
    const rows = JSON.parse((await cli(hosts[1]!, ['networks', '--json'])).stdout);
    assert.deepEqual(rows[0].hosts, ['on1', 'on2', 'on3'], 'ovsnet networks shows which hosts use it');
    await assertOvnConsistent();
  });

  it('refuses a host that asks for a known subnet differently, and --ip for an address another host holds, naming that host', async () => {
    await hosts[0]!.docker([...net(hosts[0]!), '--subnet', '10.61.0.0/24', '--gateway', '10.61.0.1', '-o', 'mode=ovn', 'other']);
    const err = await dockerError(hosts[1]!, [...net(hosts[1]!), '--subnet', '10.61.0.0/24', '--gateway', '10.61.0.254', '-o', 'mode=ovn', 'other']);
    assertPluginSaid(err, 'NetworkDriver.CreateNetwork', 'subnet 10.61.0.0/24 is already the OVN network ovsnet-10.61.0.0_24 (made by host on1) with the gateway of 10.61.0.0/24 10.61.0.1; this host asked for 10.61.0.254: give the same --gateway on every host of the network');
    await hosts[0]!.docker(['network', 'rm', 'other']);
    const w1 = (await containerAddress(hosts[0]!, 'w1', 'web')).ip;
    const taken = await dockerError(hosts[1]!, ['run', '-d', '--name', 'thief', '--net', 'web', '--ip', w1, 'local/busybox', 'sleep', '1d']);
    assertPluginSaid(taken, 'IpamDriver.RequestAddress', `address ${w1} of subnet ${SUBNET} is held by host on1; choose another --ip, or leave --ip out for a free one`);
    await hosts[1]!.docker(['rm', '-f', 'thief']);
    await assertOvnConsistent();
  });

  it('3 x 20 parallel docker run on three hosts: 60 distinct addresses, no range split', async () => {
    await Promise.all(hosts.map((h, i) => Promise.all(Array.from({ length: 20 }, (_, n) => runContainer(h, `p${i}x${n}`, 'web')))));
    const containers = await containersEverywhere('web');
    assert.equal(containers.length, 63);
    assert.equal(new Set(containers.map((c) => c.ip)).size, 63, 'every address once');
    await assertOvnConsistent();
    await Promise.all(hosts.map((h, i) => h.docker(['rm', '-f', ...Array.from({ length: 20 }, (_, n) => `p${i}x${n}`)])));
    await assertOvnConsistent();
  });

  it("a hostile container: spoofing, router advertisements, redirects and DHCP servers reach no container on any host; with port security, the switch's ACLs and the plugin's flows taken off by hand they do", async (t) => {
    const [a, b, c] = [hosts[0]!, hosts[1]!, hosts[2]!];
    const SW = 'ovsnet-10.61.0.0_24';
    // A dual-stack network: OVN's port security then lets a container's own link-local address through, router
    // advertisements from it included (no ACL can drop them: OVN passes neighbour discovery before its ACLs).
    for (const h of [a, b, c]) await h.docker([...net(h), '--ipv6', '--subnet', '10.61.0.0/24', '--subnet', 'fd61::/64', '-o', 'mode=ovn', 'web6']);
    // Gone whatever happens here, so that the tests after this one start from a clean cluster.
    t.after(async () => {
      await a.docker(['rm', '-f', 'spoofer', 'near'], { check: false });
      await b.docker(['rm', '-f', 'far'], { check: false });
      await c.docker(['rm', '-f', 'other'], { check: false });
      for (const h of [a, b, c]) await h.docker(['network', 'rm', 'web6'], { check: false });
    });
    await runContainer(a, 'spoofer', 'web6', { extra: ['--cap-add', 'NET_ADMIN'] });
    await runContainer(a, 'near', 'web6');
    await runContainer(b, 'far', 'web6');
    await runContainer(c, 'other', 'web6');
    const peerOf = async (h: SimHost, name: string): Promise<Peer> => {
      const x = await containerAddress(h, name, 'web6');
      return { name, ip: x.ip, ipv6: x.ipv6, mac: x.mac, ll: linkLocalOf(x.mac) };
    };
    const [s, n, far, near] = [await peerOf(a, 'spoofer'), await peerOf(c, 'other'), await peerOf(b, 'far'), await peerOf(a, 'near')];
    assert.ok(await ping(b, 'far', n.ipv6, 3), 'IPv6 across hosts');
    /** Every attack's frames at once, at a victim on another host and one on the same host; what each saw of each attack. */
    const attempt = async () => {
      const frames = ATTACKS.flatMap((x) => [...x.frames(s, n, far), ...x.frames(s, n, near)]);
      let atNear: Frame[] = [];
      const atFar = await captureDuring(b, { container: 'far' }, async () => {
        atNear = await captureDuring(a, { container: 'near' }, () => sendFrames(a, 'spoofer', [...frames, ...frames]));
      });
      return ATTACKS.map((x) => ({ name: x.name, far: atFar.filter((f) => x.seen(f, s, n, far)).length, near: atNear.filter((f) => x.seen(f, s, n, near)).length }));
    };
    const guarded = await attempt();
    assert.deepEqual(guarded.filter((r) => r.far + r.near > 0), [], 'received by a victim');
    assert.ok(await ping(b, 'far', n.ip, 2), 'the neighbour keeps its traffic');

    // Positive control: the spoofer's port security, the switch's guard ACLs and the plugin's flows on its host's
    // integration bridge taken off by hand (the plugins stopped meanwhile, so that no reconciler puts them back
    // first): every attack arrives on the other host.
    const OWNED = 'cookie=0x6f76000000000000/0xffff000000000000';
    const ownedOnA = async () => (await a.ofctl(['dump-flows', 'br-int', OWNED])).stdout.split('\n').filter((l) => l.includes('cookie=')).length;
    const guardFlows = await ownedOnA();
    assert.ok(guardFlows >= 5, "the plugin's first-hop guard on the spoofer's port, and its marker, on the integration bridge");
    for (const h of hosts) await h.stopPlugin();
    try {
      await cluster.nbctl(['lsp-set-port-security', `ovsnet-10.61.0.0_24-${s.ip}`]);
      await cluster.nbctl(['acl-del', SW]);
      await a.ofctl(['del-flows', 'br-int', OWNED]);
      const report = JSON.parse((await cli(a, ['doctor', '--json'], false)).stdout) as { drift: Array<{ kind: string; subject: string }> };
      const kinds = new Set(report.drift.map((d) => d.kind));
      for (const kind of ['ovn-guard-differs', 'ovn-port-differs', 'port-flows-differ', 'bridge-flows-differ']) assert.ok(kinds.has(kind as never), `doctor reports ${kind}`);
      await cluster.nbctl(['--wait=hv', '--timeout=30', 'sync']);
      const open = await attempt();
      // OVN answers a solicitation for an address it knows itself (its ND responder): not even without port
      // security does one reach another container, so that attack has no positive control here.
      const answeredByOvn = (name: string) => name.startsWith('duplicate address detection');
      assert.deepEqual(open.filter((r) => r.far === 0 && !answeredByOvn(r.name)).map((r) => r.name), [], 'positive control: every attack reaches the other host without the protection');
    } finally {
      for (const h of hosts) await h.startPlugin();
    }
    await waitFor(
      'the reconciler to put port security, the ACLs and the flows back',
      async () =>
        (await cluster.nbctl(['acl-list', SW])).stdout.split('\n').filter((l) => l.includes('drop')).length === 4 &&
        (await nbPorts()).find((p) => p.ids['ovsnet-address'] === s.ip)?.portSecurity.length === 1 &&
        (await ownedOnA()) === guardFlows,
      30_000,
      500,
    );
    await cluster.nbctl(['--wait=hv', '--timeout=30', 'sync']);
    assert.deepEqual((await attempt()).filter((r) => r.far + r.near > 0), [], 'stopped again');

    // The kernel's own spoofing, with NET_ADMIN: the neighbour's address taken, or another MAC.
    const kernel = await captureDuring(b, { container: 'far' }, async () => {
      await a.docker(['exec', 'spoofer', 'sh', '-c', `ip address add ${n.ip}/24 dev eth0 && ping -c 2 -W 1 -I ${n.ip} ${far.ip}; ip address del ${n.ip}/24 dev eth0`], { check: false });
      await a.docker(['exec', 'spoofer', 'sh', '-c', `ip link set eth0 address 02:42:de:ad:be:ef && ping -c 2 -W 1 ${far.ip}; ip link set eth0 address ${s.mac}`], { check: false });
    });
    assert.deepEqual(kernel.filter((f) => f.ip?.src === n.ip || f.src === '02:42:de:ad:be:ef'), [], 'nothing of it reached the other host');
    assert.ok(await ping(a, 'spoofer', far.ip, 3), 'with its own address and MAC it does');

    // ovn-controller clears its bridge when it starts, the plugin's guard with it: the plugin notices and puts it back.
    await cluster.stopController(0);
    await cluster.startController(0);
    const restarted = Date.now();
    // Once ovn-controller has caught up (its flows in, which clears the bridge, possibly after the plugin put its
    // own back once), the plugin's are back too. Until then a port is held by OVN's port security alone.
    await cluster.nbctl(['--wait=hv', '--timeout=30', 'sync']);
    await waitFor('the guard back on the cleared integration bridge', async () => (await ownedOnA()) === guardFlows, 20_000, 100);
    const back = Date.now() - restarted;
    assert.deepEqual((await attempt()).filter((r) => r.far + r.near > 0), [], 'stopped after ovn-controller started again');
    t.diagnostic(`the guard was back ${back} ms after ovn-controller started again`);
  });

  it('doctor compares this host with the northbound database; reconcile puts a deleted logical port back', async () => {
    const h = hosts[1]!;
    const ip = (await containerAddress(h, 'w2', 'web')).ip;
    const name = `ovsnet-10.60.0.0_24-${ip}`;
    await h.stopPlugin(); // so that the periodic reconciler does not repair it first
    try {
      await cluster.nbctl(['lsp-del', name]);
      const report = JSON.parse((await cli(h, ['doctor', '--json'], false)).stdout) as { drift: Array<{ kind: string; subject: string; fix: string }> };
      assert.deepEqual(report.drift.filter((d) => d.kind.startsWith('ovn-')).map((d) => [d.kind, d.subject, d.fix]), [['ovn-port-missing', name, 'ovsnet reconcile']]);
    } finally {
      await h.startPlugin();
    }
    await waitFor('the logical port to be back with its addresses', async () => (await nbPorts()).find((p) => p.name === name && p.portSecurity.length === 1), 20_000, 300);
    assert.ok(await ping(hosts[0]!, 'w1', ip, 3));
    await assertOvnConsistent();
  });

  for (const fault of ['CreateNetwork:after-switch', 'RequestAddress:after-claim', 'RequestAddress:after-record', 'CreateEndpoint:after-record', 'Join:after-devices']) {
    it(`the plugin killed in ${fault}: nothing is left half-made, on the host or in OVN`, async () => {
      const h = hosts[2]!;
      if (fault.startsWith('CreateNetwork')) {
        await crashIn(h, fault, () => h.docker([...net(h), '--subnet', '10.62.0.0/24', '-o', 'mode=ovn', 'half']));
        await h.docker(['network', 'rm', 'half'], { check: false });
        await waitFor('the half-made network to be undone, and its switch with it', async () => {
          const switches = (await cluster.nbctl(['--bare', '--columns=name', 'find', 'Logical_Switch', 'external_ids:ovsnet-subnet="10.62.0.0/24"'])).stdout.trim();
          return switches === '' && (await h.pluginState()).networks.length === 1;
        }, 30_000, 500);
      } else {
        await crashIn(h, fault, () => runContainer(h, 'victim', 'web'));
        await h.docker(['rm', '-f', 'victim'], { check: false });
      }
      await assertOvnConsistent();
    });
  }

  it('dockerd restarted: containers come back on the network with their logical ports', async () => {
    const h = hosts[1]!;
    await h.stopDockerd();
    await h.startDockerd();
    await waitFor('w2 to run again', async () => (await h.docker(['ps', '-q', '--filter', 'name=w2'])).stdout.trim() !== '', 60_000, 500);
    await assertOvnConsistent();
    const w2 = (await containerAddress(h, 'w2', 'web')).ip;
    assert.ok(await ping(hosts[0]!, 'w1', w2, 3));
  });

  it('ovn-controller restarted: containers keep talking, and a new one starts once it is back', async () => {
    const w1 = (await containerAddress(hosts[0]!, 'w1', 'web')).ip;
    await cluster.stopController(2);
    assert.ok(await ping(hosts[2]!, 'w3', w1, 3), 'the flows stay in Open vSwitch');
    await cluster.startController(2);
    await runContainer(hosts[2]!, 'after-controller', 'web');
    assert.ok(await ping(hosts[2]!, 'after-controller', w1, 3));
    await hosts[2]!.docker(['rm', '-f', 'after-controller']);
    await assertOvnConsistent();
  });

  it('the northbound leader killed: a start waits for the election, then goes on', async (t) => {
    const leader = (await cluster.leader('nb'))!;
    await cluster.killMember('nb', leader);
    const started = Date.now();
    const h = hosts[(leader + 1) % 3]!;
    await runContainer(h, 'during-election', 'web');
    const took = Date.now() - started;
    assert.ok(await ping(h, 'during-election', (await containerAddress(hosts[0]!, 'w1', 'web')).ip, 3));
    await cluster.startMember('nb', cluster.members[leader]!);
    await cluster.waitForNorthd();
    await h.docker(['rm', '-f', 'during-election']);
    await assertOvnConsistent();
    t.diagnostic(`the start during the election took ${took} ms (OVSNET_OVN_TIMEOUT bounds it)`);
  });

  it('the northbound leader falls silent (its traffic dropped, its process alive): starts on the other hosts go on, no address twice; back, it follows and changes nothing', async (t) => {
    let leader = await cluster.waitForLeader('nb');
    if (leader === 0) {
      // ovn-northd and the test's ovn-nbctl run on the first host: the leadership moves off it first.
      await cluster.killMember('nb', 0);
      await waitFor('a leader on another host', async () => ((await cluster.leader('nb')) ?? 0) > 0, 60_000, 200);
      await cluster.startMember('nb', cluster.members[0]!);
      await cluster.waitForNorthd();
      leader = await cluster.waitForLeader('nb');
    }
    // Each plugin talks to the leader: the silent one is where their calls go.
    const others = hosts.filter((_, i) => i !== leader);
    const before = new Map((await containersEverywhere('web')).map((c) => [c.container, c.ip]));
    const started4 = others.flatMap((h) => [1, 2].map((n) => [h, `silent-${h.name}-${n}`] as const));
    t.after(async () => {
      for (const [h, name] of started4) await h.docker(['rm', '-f', name], { check: false });
    });
    const unsilence = await cluster.silenceMember('nb', leader);
    const started = Date.now();
    try {
      await Promise.all(started4.map(([h, name]) => runContainer(h, name, 'web')));
      t.diagnostic(`four starts on the two other hosts took ${Date.now() - started} ms with the leader silent (OVSNET_OVN_PROBE and ovn-northd's probe 2 s: each leaves it within 4 s)`);
      const newLeader = await cluster.waitForLeader('nb');
      assert.notEqual(newLeader, leader, 'another member leads');
      const w1 = (await containerAddress(hosts[0]!, 'w1', 'web')).ip;
      for (const h of others) assert.ok(await ping(h, `silent-${h.name}-1`, w1, 3));
    } finally {
      await unsilence();
    }
    await waitFor('the old leader to follow', async () => (await cluster.role('nb', leader)) === 'follower', 60_000, 500);
    await cluster.waitForNorthd();
    await assertOvnConsistent();
    const after = await containersEverywhere('web');
    for (const [container, ip] of before) assert.equal(after.find((c) => c.container === container)?.ip, ip, `${container} keeps ${ip}`);
    for (const [h, name] of started4) await h.docker(['rm', '-f', name]);
    await assertOvnConsistent();
  });

  it('two of three northbound members down: creates and starts fail saying there is no quorum, running containers keep talking, nothing half-made stays', async (t) => {
    const w3 = (await containerAddress(hosts[2]!, 'w3', 'web')).ip;
    await cluster.killMember('nb', 1);
    await cluster.killMember('nb', 2);
    try {
      const started = Date.now();
      const run = await dockerError(hosts[0]!, ['run', '-d', '--name', 'noquorum', '--net', 'web', 'local/busybox', 'sleep', '1d']);
      assertPluginSaid(run, 'IpamDriver.RequestAddress', /has no quorum: no member can reach a majority of its cluster/);
      const create = await dockerError(hosts[0]!, [...net(hosts[0]!), '--subnet', '10.63.0.0/24', '-o', 'mode=ovn', 'noquorum']);
      assertPluginSaid(create, 'NetworkDriver.CreateNetwork', /has no quorum/);
      t.diagnostic(`both refusals came ${Date.now() - started} ms after the start`);
      assert.ok(await ping(hosts[0]!, 'w1', w3, 3), 'running containers keep talking');
      await hosts[0]!.docker(['rm', '-f', 'noquorum']);
      assert.equal((await hosts[0]!.pluginState()).networks.length, 1, 'no half-made network');
    } finally {
      await cluster.startMember('nb', cluster.members[1]!);
      await cluster.startMember('nb', cluster.members[2]!);
      await cluster.waitForNorthd();
    }
    await runContainer(hosts[0]!, 'quorum-back', 'web');
    await hosts[0]!.docker(['rm', '-f', 'quorum-back']);
    await assertOvnConsistent();
  });

  it('a power cut of one host: it comes back with its containers and their logical ports', async () => {
    const h = hosts[2]!;
    await h.powerCycle();
    await h.startOvs();
    await underlay.attach(h, `${ADDR.on3}/24`);
    await cluster.restartHost(2);
    await h.startPlugin();
    await h.startDockerd();
    await waitFor('w3 to run again', async () => (await h.docker(['ps', '-q', '--filter', 'name=w3'])).stdout.trim() !== '', 90_000, 500);
    await cluster.waitForLeader('nb');
    await assertOvnConsistent();
    const w3 = (await containerAddress(h, 'w3', 'web')).ip;
    await waitFor('w1 to reach w3 again', () => ping(hosts[0]!, 'w1', w3, 1), 30_000, 500);
  });

  it('the northbound database over TLS (ssl: remotes, a PKI made by ovs-pki): starts go on; a certificate that does not verify is refused, naming the file and the peer', async () => {
    const h = hosts[1]!;
    const w1 = (await containerAddress(hosts[0]!, 'w1', 'web')).ip;
    const withFiles = (files: { key: string; cert: string; ca: string }) => ({ OVSNET_OVN_NB: cluster.tlsRemotes('nb'), OVSNET_OVN_SSL_KEY: files.key, OVSNET_OVN_SSL_CERT: files.cert, OVSNET_OVN_SSL_CA: files.ca });
    const good = cluster.tlsFiles();
    const rogue = cluster.tlsFiles('rogue');
    try {
      // Only ssl: remotes are given: the address claim and the port binding go over TLS, or not at all.
      await h.stopPlugin();
      await h.startPlugin(withFiles(good));
      await runContainer(h, 'over-tls', 'web');
      assert.ok(await ping(h, 'over-tls', w1, 3));
      await h.docker(['rm', '-f', 'over-tls']);

      // This host's certificate signed by a CA the databases do not trust.
      await h.stopPlugin();
      await h.startPlugin(withFiles({ ...rogue, ca: good.ca }));
      const refused = await dockerError(h, ['run', '-d', '--name', 'rogue-client', '--net', 'web', 'local/busybox', 'sleep', '1d']);
      assertPluginSaid(refused, 'IpamDriver.RequestAddress', new RegExp(`ssl:10\\.250\\.1\\.\\d:6651 refused this host's certificate ${rogue.cert.replace(/[.]/g, '\\.')}`));
      await h.docker(['rm', '-f', 'rogue-client'], { check: false });

      // The databases' certificates checked against another CA than theirs.
      await h.stopPlugin();
      await h.startPlugin(withFiles({ ...good, ca: rogue.ca }));
      const unverified = await dockerError(h, ['run', '-d', '--name', 'rogue-server', '--net', 'web', 'local/busybox', 'sleep', '1d']);
      assertPluginSaid(unverified, 'IpamDriver.RequestAddress', new RegExp(`the certificate ssl:10\\.250\\.1\\.\\d:6651 presented does not verify against the CA certificate ${rogue.ca.replace(/[.]/g, '\\.')}`));
      await h.docker(['rm', '-f', 'rogue-server'], { check: false });
    } finally {
      await h.stopPlugin();
      await h.startPlugin({ OVSNET_OVN_NB: cluster.nbRemotes, OVSNET_OVN_SSL_KEY: '', OVSNET_OVN_SSL_CERT: '', OVSNET_OVN_SSL_CA: '' });
    }
    await assertOvnConsistent();
  });

  it("a cloned host (another host's system-id): every OVN call of its plugin is refused, naming both hosts, nothing of the other's is touched, doctor on both names the other; given its own name, it goes on", async () => {
    const [h1, h3] = [hosts[0]!, hosts[2]!];
    const doctor = async (h: SimHost) => (JSON.parse((await cli(h, ['doctor', '--json'], false)).stdout) as { drift: Array<{ kind: string; detail: string; fix: string }> }).drift;
    const on1Ports = async () => (await nbPorts()).filter((p) => p.ids['ovsnet-chassis'] === 'on1').map((p) => p.name).sort();
    const before = await on1Ports();
    // Its ovn-controller is stopped: with on1's name it would take on1's chassis row in the southbound database.
    await cluster.stopController(2);
    await h3.stopPlugin();
    await h3.vsctl(['set', 'open', '.', 'external_ids:system-id=on1']);
    try {
      await h3.startPlugin();
      const refused = await dockerError(h3, ['run', '-d', '--name', 'cloned', '--net', 'web', 'local/busybox', 'sleep', '1d']);
      assertPluginSaid(refused, 'IpamDriver.RequestAddress', /^this host's OVN chassis name on1 \(its Open vSwitch system-id\) is already registered by host on1 \(Geneve address 10\.250\.1\.1, host id [0-9a-f-]{36}\), last seen at \S+; this host is host on3 \(Geneve address 10\.250\.1\.3, host id [0-9a-f-]{36}\)\. .*If that host is gone for good, the name is free from \S+ /);
      await h3.docker(['rm', '-f', 'cloned'], { check: false });
      const onClone = (await doctor(h3)).filter((d) => d.kind === 'ovn-host-conflict');
      assert.equal(onClone.length, 1, 'doctor on the clone reports it');
      assert.match(onClone[0]!.detail, /registered by host on1 \(Geneve address 10\.250\.1\.1/);
      const onFirst = (await doctor(h1)).filter((d) => d.kind === 'ovn-host-conflict');
      assert.equal(onFirst.length, 1, 'doctor on the first host names the clone');
      assert.match(onFirst[0]!.detail, /another host uses this host's OVN chassis name on1: host on3 \(Geneve address 10\.250\.1\.3/);
      assert.deepEqual(await on1Ports(), before, "on1's claims are all there: the clone's reconciler took none for its own strays");
    } finally {
      await h3.stopPlugin();
      await h3.vsctl(['set', 'open', '.', 'external_ids:system-id=on3']);
      await cluster.startController(2);
      await h3.startPlugin();
    }
    await runContainer(h3, 'renamed', 'web');
    await waitFor("the clone's note to be gone from on1's registration", async () => (await doctor(h1)).every((d) => d.kind !== 'ovn-host-conflict'), 20_000, 500);
    await h3.docker(['rm', '-f', 'renamed']);
    await assertOvnConsistent();
  });

  it('a host gone for good: doctor on another names it with the command; forget-host is refused while it is a chassis or claimed recently, then releases its addresses, listing and name; back after all, it takes them again', async () => {
    const [h1, h3] = [hosts[0]!, hosts[2]!];
    type Report = { drift: Array<{ kind: string; subject: string; fix: string }> };
    const gone = async () => ((JSON.parse((await cli(h1, ['doctor', '--json'], false)).stdout) as Report).drift).filter((d) => d.kind === 'ovn-host-gone');
    const on3 = async () => (await nbPorts()).filter((p) => p.ids['ovsnet-chassis'] === 'on3').map((p) => `${SUBNET} ${p.ids['ovsnet-address']}`).sort();
    await runContainer(h3, 'recent', 'web');
    const held = await on3();
    assert.equal(held.length, 2, 'w3 and the container just started');
    const alive = await cli(h1, ['ovn', 'forget-host', 'on3'], false);
    assert.notEqual(alive.exitCode, 0);
    assert.match(alive.stderr, /not forgetting on3: host on3 \(chassis on3, Geneve 10\.250\.1\.3\) is in the southbound database/);
    assert.deepEqual(await gone(), []);
    // The host goes: its plugin stops, and ovn-controller leaves the southbound database as its service does when removed.
    await h3.stopPlugin();
    await cluster.exitController(2);
    try {
      const [reported] = await waitFor('doctor on on1 to report on3 gone', async () => {
        const found = await gone();
        return found.length > 0 && found;
      }, 30_000, 1_000);
      assert.deepEqual([reported!.subject, reported!.fix], ['on3', 'ovsnet ovn forget-host on3']);
      // Reported once its plugin has not renewed its registration for the lease (9 s here); a sign of life within --idle still refuses.
      const recent = await cli(h1, ['ovn', 'forget-host', 'on3', '--idle', '600'], false);
      assert.notEqual(recent.exitCode, 0);
      assert.match(recent.stderr, /not forgetting on3: host on3 \(chassis on3\): (it claimed an address|its plugin renewed its registration) \d+ s ago .*within the last 600 s: it looks alive/);
      assert.deepEqual(await on3(), held, 'nothing released by a refusal');
      // Forgotten once neither its registration nor its last claim is within the lease: the claim of `recent` may
      // be up to a renewal period younger than the registration doctor went by, and is refused until then.
      const forgot = await waitFor('forget-host to take on3 once its last sign of life is older than the lease', async () => {
        const attempt = await cli(h1, ['ovn', 'forget-host', 'on3', '--json'], false);
        if (attempt.exitCode === 0) return attempt;
        assert.match(attempt.stderr, /not forgetting on3: host on3 \(chassis on3\): it claimed an address \d+ s ago .*within the last \d+ s: it looks alive/);
        return false;
      }, 15_000, 1_000);
      const report = JSON.parse(forgot.stdout) as { released: string[]; unlisted: string[]; registration: boolean; kept: string[] };
      assert.deepEqual([report.released.sort(), report.unlisted, report.registration, report.kept], [held, ['ovsnet-10.60.0.0_24'], true, []]);
      assert.deepEqual(await on3(), []);
      const listing = await cluster.nbctl(['--bare', '--columns=external_ids', 'find', 'Logical_Switch', `external_ids:ovsnet-subnet="${SUBNET}"`]);
      assert.doesNotMatch(listing.stdout, /ovsnet-host:on3/);
      assert.equal((await cluster.nbctl(['--bare', '--columns=chassis', 'find', 'Chassis_Template_Var', 'chassis=on3'])).stdout.trim(), '', 'its name is free');
      assert.deepEqual(await gone(), []);
    } finally {
      await cluster.startController(2);
      await h3.startPlugin();
    }
    // It was not gone after all: its reconciler holds its containers' addresses again (nobody took them meanwhile).
    await h3.docker(['rm', '-f', 'recent']);
    await assertOvnConsistent();
  });

  it('the last host to remove the network removes the switch', async () => {
    for (const [i, h] of hosts.entries()) await h.docker(['rm', '-f', `w${i + 1}`]);
    for (const h of hosts.slice(0, 2)) await h.docker(['network', 'rm', 'web']);
    const left = await cluster.nbctl(['--bare', '--columns=external_ids', 'find', 'Logical_Switch', `external_ids:ovsnet-subnet="${SUBNET}"`]);
    assert.match(left.stdout, /ovsnet-host:on3=on3/);
    assert.doesNotMatch(left.stdout, /ovsnet-host:on1/);
    await hosts[2]!.docker(['network', 'rm', 'web']);
    assert.equal((await cluster.nbctl(['--bare', '--columns=name', 'find', 'Logical_Switch', 'external_ids:ovsnet-owner=ovsnet'])).stdout.trim(), '');
    assert.deepEqual(await nbPorts(), []);
  });
});
