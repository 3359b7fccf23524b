/**
 * A hostile container tries what it can against its neighbours and the host,
 * and each attack is judged by what the victim (or the host) actually
 * received, captured in its own namespace. Each has a positive control: the
 * same attack where the protection is off (a network that allows it, or the
 * protection taken away by hand) must be seen, so no case passes for want of
 * a working attack or capture.
 *
 * The attackers send raw frames with CAP_NET_RAW only, which Docker gives
 * every container by default (rawframe in the test image); the same frames go
 * again from a container given NET_ADMIN, which also tries what its own
 * kernel sends once it takes a neighbour's address or another MAC.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { linkLocalOf } from '../../src/domain/flows.js';
import { ATTACKS, type Attack, type Peer, carries, nonce } from './harness/attacks.js';
import { captureDuring, sendFrames, type Where } from './harness/capture.js';
import { BROADCAST, type Frame, udpFrame } from './harness/frames.js';
import { sleep, waitFor } from './harness/proc.js';
import { SimHost } from './harness/sim-host.js';
import { containerAddress, endpointPortName, httpGet, ping, runContainer, startHttp, startWhoAmI, tcpSay } from './support.js';

describe('attacks from a hostile container', () => {
  let host: SimHost;
  const peers = new Map<string, Peer>();
  const peer = (name: string) => peers.get(name)!;
  const gateway = new Map<string, string>();
  const sh = (container: string, script: string, check = false) => host.docker(['exec', container, 'sh', '-c', script], { check, timeoutMs: 30_000 });

  /** Sends the attack three times (a first frame may find a cold path) while capturing at the victim (and the host). */
  async function attempt(attack: Attack, attacker: string, neighbour: string, victim: string, network: string): Promise<{ victim: Frame[]; host: Frame[] }> {
    const [a, n, v] = [peer(attacker), peer(neighbour), peer(victim)];
    const frames = attack.frames(a, n, v);
    const send = () => sendFrames(host, attacker, [...frames, ...frames, ...frames]);
    const atVictim = (during: () => Promise<unknown>) => captureDuring(host, { container: victim }, during);
    if (!attack.host) return { victim: (await atVictim(send)).filter((f) => attack.seen(f, a, n, v)), host: [] };
    const where: Where = { hostIf: gateway.get(network)! };
    let inVictim: Frame[] = [];
    const atHost = await captureDuring(host, where, async () => {
      inVictim = await atVictim(send);
    });
    return { victim: inVictim.filter((f) => attack.seen(f, a, n, v)), host: atHost.filter((f) => attack.seen(f, a, n, v)) };
  }

  before(async () => {
    // Docker's defaults: its own firewall and bridge, docker-proxy for its published ports.
    host = await SimHost.start({ name: 'attack', pluginEnv: { OVSNET_RECONCILE_INTERVAL: '3600', OVSNET_METRICS: '127.0.0.1:9617' } });
    const create = (name: string, args: string[]) => host.docker(['network', 'create', '-d', host.driver, '--ipam-driver', host.driver, ...args, name]);
    await create('plain', ['--ipv6', '--subnet', '10.71.0.0/24', '--subnet', 'fd71::/64']);
    await create('v237', ['--subnet', '10.72.0.0/24', '-o', 'vlan=237']);
    await create('open', ['--ipv6', '--subnet', '10.73.0.0/24', '--subnet', 'fd73::/64', '-o', 'vlan=238', '-o', 'anti_spoofing=false', '-o', 'allow_ra=true', '-o', 'allow_dhcp_server=true']);
    await create('inside', ['--internal', '--subnet', '10.74.0.0/24', '-o', 'vlan=239']);
    await create('served', ['--subnet', '10.75.0.0/24', '-o', 'vlan=240']);
    // A Docker bridge network that leaves its unpublished ports open itself where the engine can (28 and later:
    // nat-unprotected; under Docker's nftables firewall its own drops would otherwise hold alone): what keeps
    // ovsnet containers from them is then the plugin's isolation.
    const unprotected = Number(host.engineVersion.split('.')[0]) >= 28 ? ['-o', 'com.docker.network.bridge.gateway_mode_ipv4=nat-unprotected'] : [];
    await host.docker(['network', 'create', '--subnet', '10.76.0.0/24', ...unprotected, 'dockers']);
    for (const [name, network, extra] of [
      ['pv', 'plain', []], ['pn', 'plain', []], ['pa', 'plain', []], ['pz', 'plain', ['--cap-add', 'NET_ADMIN']],
      ['va', 'v237', []], ['vb', 'v237', []],
      ['ov', 'open', []], ['on', 'open', []], ['oa', 'open', ['--cap-add', 'NET_ADMIN']],
      ['ia', 'inside', []],
      ['ps', 'served', ['-p', '8080:8080']],
      ['ds', 'dockers', []], ['dp', 'dockers', ['-p', '8081:8080']],
    ] as const) {
      await runContainer(host, name, network, { extra: ['--hostname', name, ...extra] });
      const a = await containerAddress(host, name, network);
      peers.set(name, { name, ip: a.ip, ipv6: a.ipv6, mac: a.mac, ll: linkLocalOf(a.mac) });
    }
    for (const name of ['ps', 'ds', 'dp']) await startHttp(host, name);
    for (const network of ['plain', 'open', 'inside']) {
      const id = (await host.docker(['network', 'inspect', '-f', '{{.Id}}', network])).stdout.trim();
      gateway.set(network, `ovsgw${id.slice(0, 10)}`);
    }
    // The neighbours know each other (as they would after talking), so a poisoned entry would show.
    for (const [from, to] of [['pv', 'pn'], ['ov', 'on']] as const) assert.ok(await ping(host, from, peer(to).ip), `${from} reaches ${to}`);
  });
  after(async () => {
    await host?.stop();
  });

  for (const [attacker, caps] of [['pa', "Docker's default capabilities"], ['pz', 'NET_ADMIN']] as const) {
    for (const attack of ATTACKS) {
      it(`with ${caps}: ${attack.name} reaches neither the victim${attack.host ? ' nor the host' : ''}; on a network that allows it, it does`, async () => {
        const guarded = await attempt(attack, attacker, 'pn', 'pv', 'plain');
        assert.deepEqual(guarded.victim, [], `the victim received: ${JSON.stringify(guarded.victim)}`);
        assert.deepEqual(guarded.host, [], `the host received: ${JSON.stringify(guarded.host)}`);
        const control = await attempt(attack, 'oa', 'on', 'ov', 'open');
        assert.ok(control.victim.length > 0, 'positive control: with anti_spoofing=false, allow_ra and allow_dhcp_server, the victim receives it');
        if (attack.host) assert.ok(control.host.length > 0, 'positive control: the host receives it too');
      });
    }
  }

  it("counts what each guard dropped in the metrics, by container and reason; the victim's first hop and an open network's count nothing", async () => {
    const { stdout } = await host.exec('busybox', ['wget', '-q', '-O', '-', 'http://127.0.0.1:9617/metrics']);
    const drops = new Map<string, number>();
    for (const m of stdout.matchAll(/^ovsnet_guard_dropped_packets_total\{([^}]*)\} (\S+)$/gm)) {
      const labels = Object.fromEntries([...m[1]!.matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1]!, l[2]!]));
      drops.set(`${labels.container}|${labels.reason}`, Number(m[2]));
    }
    // Every attack above was sent by pa and by pz, on the guarded network.
    for (const attacker of ['pa', 'pz']) {
      for (const reason of ['source', 'neighbour-spoof', 'router-advertisement', 'redirect', 'dhcp-server']) {
        assert.ok((drops.get(`${attacker}|${reason}`) ?? 0) > 0, `${attacker}'s guard counts its drops for ${reason}: ${JSON.stringify([...drops])}`);
      }
    }
    for (const reason of ['router-advertisement', 'redirect', 'dhcp-server']) assert.equal(drops.get(`pv|${reason}`), 0, `the victim sent no ${reason}`);
    assert.ok(![...drops.keys()].some((k) => /^(ov|on|oa)\|/.test(k)), 'a network that allows everything has no drop flow to count');
  });

  it('names the networks that run with less of the guard, in ovsnet networks and in doctor', async () => {
    const rows = JSON.parse((await host.ovsnet(['networks', '--json'])).stdout) as Array<{ name: string; weakened: string[] }>;
    assert.deepEqual(rows.find((r) => r.name === 'open')?.weakened, ['anti_spoofing=false', 'allow_ra=true', 'allow_dhcp_server=true']);
    assert.deepEqual(rows.find((r) => r.name === 'plain')?.weakened, []);
    assert.match((await host.ovsnet(['networks'])).stdout, /anti_spoofing=false,allow_ra=true,allow_dhcp_server=true/);
    const openId = (await host.docker(['network', 'inspect', '-f', '{{.Id}}', 'open'])).stdout.trim();
    assert.match((await host.ovsnet(['doctor'], { check: false })).stdout, new RegExp(`guard weakened on network ${openId.slice(0, 12)} by its options: anti_spoofing=false, allow_ra=true, allow_dhcp_server=true`));
  });

  it("takes no route from a router advertisement that reaches a gateway port (accept_ra is off on the host's side)", async () => {
    const gw = gateway.get('open')!;
    const ra = ATTACKS.find((a) => a.name === 'a router advertisement')!;
    const control = await attempt(ra, 'oa', 'on', 'ov', 'open');
    assert.ok(control.host.length > 0, 'positive control: the advertisement reached the gateway port');
    const routes = (await host.exec('ip', ['-6', 'route', 'show'])).stdout;
    assert.ok(!routes.includes(`dev ${gw} proto ra`) && !/fd99:71::\/64/.test(routes), `no route from it: ${routes}`);
    const sysctl = async (path: string) => (await host.exec('cat', [`/proc/sys/net/${path}`])).stdout.trim();
    assert.deepEqual([await sysctl(`ipv6/conf/${gw}/accept_ra`), await sysctl(`ipv6/conf/${gw}/accept_redirects`), await sysctl(`ipv4/conf/${gw}/accept_redirects`)], ['0', '0', '0'], 'no advertisements or redirects taken on the gateway port');
  });

  it("with NET_ADMIN: the neighbour's address taken, or another MAC, on the container's own interface reaches nobody", async () => {
    const [z, n, v] = [peer('pz'), peer('pn'), peer('pv')];
    const spoofed = await captureDuring(host, { container: 'pv' }, async () => {
      await sh('pz', `ip address add ${n.ip}/24 dev eth0 && ping -c 2 -W 1 -I ${n.ip} ${v.ip}; arping -c 2 -U -s ${n.ip} -I eth0 ${v.ip}; ip address del ${n.ip}/24 dev eth0`);
      await sh('pz', `ip link set dev eth0 address 02:00:00:00:71:98 && ip neigh flush dev eth0 && ping -c 2 -W 1 ${v.ip}; ip link set dev eth0 address ${z.mac}`);
    });
    const fromZ = spoofed.filter((f) => (f.src === z.mac && (f.ip?.src === n.ip || f.arp?.spa === n.ip)) || f.src === '02:00:00:00:71:98');
    assert.deepEqual(fromZ, [], `the victim received: ${JSON.stringify(fromZ)}`);
    assert.ok(await ping(host, 'pv', n.ip), 'the neighbour keeps its address');
    assert.ok(await ping(host, 'pz', v.ip), 'and the attacker, back to itself, reaches the victim');
    // Positive control: the same from a container of a network without anti-spoofing arrives.
    const [oa, on, ov] = [peer('oa'), peer('on'), peer('ov')];
    const open = await captureDuring(host, { container: 'ov' }, () => sh('oa', `ip address add ${on.ip}/24 dev eth0 && ping -c 2 -W 1 -I ${on.ip} ${ov.ip}; ip address del ${on.ip}/24 dev eth0`));
    assert.ok(open.some((f) => f.src === oa.mac && f.ip?.src === on.ip), 'positive control: the spoofed ping arrives where anti_spoofing=false');
  });

  it("keeps an untagged network's containers off every other VLAN: they receive no frame of one; with its port a trunk they would", async () => {
    const vb = peer('vb');
    const broadcast = () => sendFrames(host, 'vb', [udpFrame({ dst: BROADCAST, src: vb.mac, srcIp: vb.ip, dstIp: '10.72.0.255', sport: 4001, dport: 4001, data: nonce('vlan') })]);
    const untagged = await captureDuring(host, { container: 'pv' }, broadcast);
    assert.deepEqual(untagged.filter((f) => f.vlan !== undefined || carries(f, 'vlan')), [], 'nothing of VLAN 237 reached the untagged network');
    const sameVlan = await captureDuring(host, { container: 'va' }, broadcast);
    assert.ok(sameVlan.some((f) => carries(f, 'vlan')), 'positive control: the broadcast reaches its own VLAN');

    // The protection taken away by hand: a port without vlan_mode or tag is a trunk of every VLAN.
    const port = await endpointPortName(host, (await containerAddress(host, 'pv', 'plain')).endpointId);
    await host.vsctl(['clear', 'port', port, 'vlan_mode']);
    const doctor = JSON.parse((await host.ovsnet(['doctor', '--json'], { check: false })).stdout) as { drift: Array<{ kind: string; subject: string; detail: string }> };
    assert.match(doctor.drift.find((d) => d.subject === port)?.detail ?? '', /trunk of every VLAN/, 'doctor names the trunk by accident');
    const trunk = await captureDuring(host, { container: 'pv' }, broadcast);
    assert.ok(trunk.some((f) => f.vlan === 237 && carries(f, 'vlan')), "positive control: as a trunk it receives VLAN 237's frames, tagged");
    await host.ovsnet(['reconcile']);
    assert.equal((await host.vsctl(['get', 'port', port, 'vlan_mode'])).stdout.trim(), 'access', 'the reconciler makes it an access port again');
    assert.deepEqual((await captureDuring(host, { container: 'pv' }, broadcast)).filter((f) => carries(f, 'vlan')), []);
  });

  it('lets no tagged frame into another VLAN; from a port that is a trunk it would get there', async () => {
    const tagged = (a: Peer) => [udpFrame({ dst: BROADCAST, src: a.mac, srcIp: a.ip, dstIp: '255.255.255.255', sport: 4002, dport: 4002, data: nonce('tagged'), vlan: 237 })];
    for (const attacker of ['pa', 'pz', 'oa']) {
      const got = await captureDuring(host, { container: 'va' }, () => sendFrames(host, attacker, tagged(peer(attacker))));
      assert.deepEqual(got.filter((f) => carries(f, 'tagged')), [], `nothing tagged from ${attacker} reached VLAN 237 (an access port drops it, anti_spoofing or not)`);
    }
    // Positive control: oa's port (no guard flows: its network allows everything) made a trunk by hand.
    const port = await endpointPortName(host, (await containerAddress(host, 'oa', 'open')).endpointId);
    await host.vsctl(['clear', 'port', port, 'vlan_mode', '--', 'clear', 'port', port, 'tag']);
    const through = await captureDuring(host, { container: 'va' }, () => sendFrames(host, 'oa', tagged(peer('oa'))));
    assert.ok(through.some((f) => carries(f, 'tagged')), 'positive control: from a trunk port the tagged frame reaches VLAN 237');
    await host.ovsnet(['reconcile']);
    assert.equal((await host.vsctl(['get', 'port', port, 'tag'])).stdout.trim(), '238');
  });

  it('keeps an --internal network from every published port, the plugin\'s and Docker\'s, and from the host; a nat network reaches them', async () => {
    const insideGw = '10.74.0.1';
    const ia = peer('ia');
    const fromInside = async (target: string, port: number) => {
      let answer: string | undefined;
      const seen = await captureDuring(host, { container: target }, async () => {
        answer = await httpGet(host, 'ia', insideGw, port);
      });
      return { answer, syn: seen.filter((f) => f.ip?.src === ia.ip) };
    };
    const plugin = await fromInside('ps', 8080);
    assert.deepEqual([plugin.answer, plugin.syn], [undefined, []], "the plugin's published port: no answer, and the server saw nothing of it");
    const docker = await fromInside('dp', 8081);
    assert.deepEqual([docker.answer, docker.syn], [undefined, []], "Docker's published port (docker-proxy or its DNAT): no answer, nothing seen");
    // Positive control: from a nat network both answer.
    assert.equal(await httpGet(host, 'pn', '10.71.0.1', 8080), 'ps');
    assert.equal(await httpGet(host, 'pn', '10.71.0.1', 8081), 'dp');
    // The host's own services: nothing from the internal network, through its gateway address or any other.
    const service = await startWhoAmI(host.ns, 9999);
    try {
      assert.equal(await tcpSay(host, 'ia', insideGw, 9999), undefined, 'an internal network reaches no service of the host through its gateway address');
      assert.equal(await tcpSay(host, 'pn', '10.71.0.1', 9999), peer('pn').ip, 'positive control: a nat network does');
    } finally {
      service.stop();
    }
  });

  it("keeps ovsnet containers from unpublished ports of Docker's bridge networks; its published ones stay reachable", async () => {
    const [pn, ds] = [peer('pn'), peer('ds')];
    let answer: string | undefined = 'not asked';
    const seen = await captureDuring(host, { container: 'ds' }, async () => {
      answer = await httpGet(host, 'pn', ds.ip, 8080);
    });
    assert.deepEqual([answer, seen.filter((f) => f.ip?.src === pn.ip)], [undefined, []], "no answer, and Docker's container saw nothing of it");
    assert.equal(await httpGet(host, 'pn', '10.71.0.1', 8081), 'dp', 'a port Docker publishes is reachable');
    // Docker (nat mode, 28 and later) also drops, in its raw table, what reaches a container's address through
    // another interface: without those rules the plugin's must hold alone; without the plugin's too, it gets through.
    const dockerRaw = (await host.exec('iptables', ['-w', '-t', 'raw', '-S', 'PREROUTING'])).stdout.split('\n').filter((l) => l.startsWith(`-A PREROUTING -d ${ds.ip}/32 `));
    for (const rule of dockerRaw) await host.exec('iptables', ['-w', '-t', 'raw', '-D', ...rule.split(' ').slice(1)]);
    try {
      assert.equal(await httpGet(host, 'pn', ds.ip, 8080), undefined, "the plugin's isolation holds without Docker's own");
      await host.exec('iptables', ['-w', '-t', 'mangle', '-F', 'OVSNET-ISOLATE']);
      assert.equal(await httpGet(host, 'pn', ds.ip, 8080), 'ds', 'positive control: reachable with the isolation rules flushed');
    } finally {
      for (const rule of dockerRaw) await host.exec('iptables', ['-w', '-t', 'raw', ...rule.split(' ')]);
    }
    await host.ovsnet(['reconcile']);
    assert.equal(await httpGet(host, 'pn', ds.ip, 8080), undefined, 'the reconciler puts them back');
  });

  it('lets nothing through while ovs-vswitchd restarts: the bridge fails closed until the guards are back', async (t) => {
    const [a, n, v] = [peer('pa'), peer('pn'), peer('pv')];
    const frames = ATTACKS.filter((x) => /ARP reply|neighbour's address$|router advertisement|DHCP offer|another MAC/.test(x.name)).flatMap((x) => x.frames(a, n, v));
    const seen = (f: Frame) => ATTACKS.some((x) => x.seen(f, a, n, v));
    await host.docker(['exec', '-d', 'pa', 'sh', '-c', `while :; do rawframe send eth0 ${frames.join(' ')}; usleep 20000; done`]);
    let outage = 0;
    const got = await captureDuring(host, { container: 'pv' }, async () => {
      await sleep(300);
      await host.stopVswitchd();
      await sleep(500);
      await host.startVswitchd();
      const started = Date.now();
      await waitFor('the neighbours to reach each other again', async () => (await ping(host, 'pn', v.ip)) || undefined, 60_000, 50);
      outage = Date.now() - started;
      await sleep(1_000);
    });
    await host.docker(['exec', 'pa', 'killall', 'sh'], { check: false });
    assert.deepEqual(got.filter(seen), [], `the victim received during the restart: ${JSON.stringify(got.filter(seen).slice(0, 3))}`);
    assert.equal((await host.vsctl(['get', 'bridge', 'ovs0', 'fail_mode'])).stdout.trim(), 'secure');
    t.diagnostic(`legitimate traffic stopped for ${outage} ms after ovs-vswitchd started again (until the plugin's guards and base flow were back)`);
    // Positive control: the same frames, looped from a network that allows them, get through across a restart.
    const [oa, on, ov] = [peer('oa'), peer('on'), peer('ov')];
    const open = ATTACKS.filter((x) => /ARP reply|router advertisement|DHCP offer/.test(x.name));
    await host.docker(['exec', '-d', 'oa', 'sh', '-c', `while :; do rawframe send eth0 ${open.flatMap((x) => x.frames(oa, on, ov)).join(' ')}; usleep 20000; done`]);
    const control = await captureDuring(host, { container: 'ov' }, async () => {
      await host.stopVswitchd();
      await host.startVswitchd();
      await waitFor('the open network to forward again', async () => (await ping(host, 'on', ov.ip)) || undefined, 60_000, 50);
      await sleep(500);
    });
    await host.docker(['exec', 'oa', 'killall', 'sh'], { check: false });
    assert.deepEqual(open.filter((x) => !control.some((f) => x.seen(f, oa, on, ov))).map((x) => x.name), [], 'positive control: every one arrives where nothing guards');
    assert.equal((await host.ovsnet(['doctor'], { check: false })).exitCode, 0, 'no drift after the restart');
  });
});
