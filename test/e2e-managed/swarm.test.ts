/**
 * Swarm services on ovsnet networks: three simulated hosts as a swarm (one manager, two workers, over the
 * underlay), the managed plugin installed on each from the registry (swarm takes no other kind), OVN mode with
 * one northbound database. The README's commands run as written; then what swarm does with tasks (scaling down,
 * a node drained, a node's power cut, the service removed, a stack) must leave nothing held in Open vSwitch or in
 * the northbound database.
 */
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { TEST_IMAGE } from '../e2e/harness/image.js';
import { OvnCluster, OVN_TOOLS } from '../e2e/harness/ovn.js';
import { requireTools, waitFor } from '../e2e/harness/proc.js';
import { MANAGED, REPO_ROOT, SimHost } from '../e2e/harness/sim-host.js';
import { Underlay } from '../e2e/harness/underlay.js';
import { assertConsistent, ping } from '../e2e/support.js';

/** The README's swarm commands: those for every node, and those for a manager, as written there. */
async function readmeCommands(): Promise<{ everyNode: string[][]; manager: string[][] }> {
  const readme = await readFile(path.join(REPO_ROOT, 'README.md'), 'utf8');
  const section = readme.split('\n## Swarm services\n')[1]?.split('\n## ')[0];
  assert.ok(section, 'README.md has a "Swarm services" section');
  const out = { everyNode: [] as string[][], manager: [] as string[][] };
  let into: string[][] | undefined;
  for (const line of section.split('\n').filter((l) => l.startsWith('    '))) {
    const text = line.trim();
    if (text.startsWith('# on every node')) into = out.everyNode;
    else if (text.startsWith('# once, on a manager')) into = out.manager;
    else if (text.startsWith('docker ')) {
      assert.ok(into, `README.md: "${text}" comes before a comment that says where it runs`);
      // The image is the tests' own busybox (no registry of images here); the rest as written.
      into.push(text.split(/\s+/).slice(1).map((w) => (w === 'busybox' ? TEST_IMAGE : w)));
    }
  }
  assert.ok(out.everyNode.length > 0 && out.manager.length > 0, 'README.md: commands for every node and for a manager');
  return out;
}

interface Task {
  name: string;
  node: string;
  address: string;
}

describe('swarm services on an OVN network', { timeout: 900_000 }, () => {
  let underlay: Underlay;
  /** The physical network's VLAN trunk: eth2 on every host. */
  let trunk: Underlay;
  let cluster: OvnCluster;
  const hosts: SimHost[] = [];
  const byName = new Map<string, SimHost>();
  /** Swarm's node id of each host (their hostnames are all the machine's: namespaces share it). */
  const nodeId = new Map<SimHost, string>();
  /** A host while its power is cut: nothing to ask. */
  const down = new Set<SimHost>();
  const manager = () => hosts[0]!;
  const ADDRESSES = ['10.250.11.1', '10.250.11.2', '10.250.11.3'];

  /** The running containers of a service's tasks on every node, with their address on `network`. */
  const tasks = async (service: string, network: string): Promise<Task[]> => {
    const out: Task[] = [];
    for (const h of hosts.filter((x) => !down.has(x))) {
      const names = (await h.docker(['ps', '--filter', `label=com.docker.swarm.service.name=${service}`, '--format', '{{.Names}}'])).stdout.split('\n').filter(Boolean);
      for (const name of names) {
        const info = JSON.parse((await h.docker(['inspect', name])).stdout)[0];
        const address = Object.entries(info.NetworkSettings.Networks as Record<string, { IPAddress: string }>).find(([n]) => n === network || n.endsWith(`_${network}`))?.[1]?.IPAddress ?? '';
        out.push({ name, node: h.name, address });
      }
    }
    return out;
  };
  /** Waits until exactly `count` tasks of the service run, each with an address, and no other is starting. */
  const settled = async (service: string, network: string, count: number): Promise<Task[]> => {
    let last: Task[] = [];
    await waitFor(`${count} running tasks of ${service}`, async () => {
      const ps = (await manager().docker(['service', 'ps', service, '--filter', 'desired-state=running', '--format', '{{.CurrentState}}'], { check: false })).stdout.split('\n').filter(Boolean);
      if (ps.length !== count || !ps.every((s) => s.startsWith('Running'))) return false;
      last = await tasks(service, network);
      return last.length === count && last.every((t) => t.address);
    }, 180_000, 500);
    return last;
  };
  /** The northbound's logical ports of a subnet's switch, with the host each is listed for. */
  const northboundPorts = async (subnet: string): Promise<string[]> => {
    const { stdout } = await cluster.nbctl(['--bare', '--columns=name', 'find', 'Logical_Switch_Port', `external_ids:ovsnet-subnet="${subnet}"`], false);
    return stdout.split('\n').map((l) => l.trim()).filter(Boolean);
  };
  const endpointPorts = async (h: SimHost) => (await h.ownedPorts()).filter((p) => p.externalIds['ovsnet-role'] === 'endpoint');

  before(async () => {
    assert.ok(MANAGED, 'swarm takes only managed plugins: run with OVSNET_E2E_PLUGIN=managed (test/run-all.sh does)');
    await requireTools(OVN_TOOLS);
    underlay = await Underlay.create('sw-ul');
    trunk = await Underlay.create('sw-tr');
    for (const [i, name] of ['sw1', 'sw2', 'sw3'].entries()) {
      const h = await SimHost.start({ name, plugin: false });
      hosts.push(h);
      byName.set(h.name, h);
      await underlay.attach(h, `${ADDRESSES[i]}/24`);
      await trunk.cable(h, 'eth2');
    }
    cluster = await OvnCluster.start(hosts.map((host, i) => ({ host, address: ADDRESSES[i]! })), { databases: 1 });
    for (const h of hosts) await h.startPlugin({ OVSNET_OVN_NB: cluster.nbRemotes });
    await manager().docker(['swarm', 'init', '--advertise-addr', ADDRESSES[0]!, '--listen-addr', `${ADDRESSES[0]}:2377`]);
    const token = (await manager().docker(['swarm', 'join-token', '-q', 'worker'])).stdout.trim();
    for (const [i, h] of hosts.entries()) {
      if (i > 0) await h.docker(['swarm', 'join', '--token', token, '--advertise-addr', ADDRESSES[i]!, '--listen-addr', `${ADDRESSES[i]}:2377`, `${ADDRESSES[0]}:2377`], { timeoutMs: 60_000 });
    }
    for (const h of hosts) nodeId.set(h, (await h.docker(['info', '--format', '{{.Swarm.NodeID}}'])).stdout.trim());
    await waitFor('three nodes ready', async () => {
      const nodes = (await manager().docker(['node', 'ls', '--format', '{{.ID}} {{.Status}} {{.Availability}}'])).stdout.split('\n').filter(Boolean);
      return nodes.length === 3 && hosts.every((h) => nodes.includes(`${nodeId.get(h)} Ready Active`));
    }, 60_000, 500);
  });
  after(async () => {
    for (const h of hosts) await h.docker(['swarm', 'leave', '--force'], { check: false, timeoutMs: 30_000 }).catch(() => {});
    for (const h of hosts) await h.stop().catch(() => {});
    await underlay?.destroy();
    await trunk?.destroy();
  });

  it("the README's commands: six tasks over three nodes, addresses unique across nodes and held in the northbound database, reaching each other across hosts by address and by name", async () => {
    const commands = await readmeCommands();
    for (const h of hosts) for (const args of commands.everyNode) await h.docker(args);
    for (const args of commands.manager) await manager().docker(args.includes('service') ? [...args.slice(0, 2), '--detach', ...args.slice(2)] : args);
    const running = await settled('web', 'web', 6);
    assert.deepEqual(hosts.map((h) => running.filter((t) => t.node === h.name).length), [2, 2, 2], 'swarm spreads the tasks over the nodes');
    const addresses = running.map((t) => t.address);
    assert.equal(new Set(addresses).size, 6, `addresses unique across nodes: ${addresses.join(', ')}`);
    assert.ok(addresses.every((a) => a.startsWith('10.70.0.')), `addresses of the subnet of web-config: ${addresses.join(', ')}`);
    assert.equal((await northboundPorts('10.70.0.0/24')).length, 6, 'a logical port per task in the northbound database');

    const [here, there] = [running.find((t) => t.node === hosts[0]!.name)!, running.find((t) => t.node === hosts[2]!.name)!];
    const h1 = byName.get(here.node)!;
    assert.ok(await ping(h1, here.name, there.address, 3), `${here.name} reaches ${there.name} on ${there.node} by address`);
    assert.ok(await ping(h1, here.name, there.name, 3), `and by its task name ${there.name}`);
    const lookup = async (name: string) => {
      const { stdout } = await h1.docker(['exec', here.name, 'nslookup', name], { check: false });
      return [...stdout.matchAll(/^Address:\s*(\d+\.\d+\.\d+\.\d+)\s*$/gm)].map((m) => m[1]!).filter((a) => a.startsWith('10.70.0.')).sort();
    };
    await waitFor('the service name to resolve to every task', async () => JSON.stringify(await lookup('tasks.web')) === JSON.stringify([...addresses].sort()), 30_000, 500);
    assert.deepEqual(await lookup('web'), [...addresses].sort(), 'dnsrr: the service name resolves to every task');
    for (const h of hosts) assert.equal((await h.ovsnet(['doctor'], { check: false })).exitCode, 0, `no drift on ${h.name}`);
  });

  it("a node whose settings differ from the switch: its tasks are refused with the plugin's words, and its doctor says why", async () => {
    const [first, , odd] = hosts as [SimHost, SimHost, SimHost];
    for (const h of hosts) {
      await h.docker(['network', 'create', '--config-only', '--ipam-driver', 'ovs:latest', '--subnet', '10.72.0.0/24',
        ...(h === odd ? ['--ip-range', '10.72.0.128/25'] : []), '-o', 'mode=ovn', 'odd-config']);
    }
    await manager().docker(['network', 'create', '-d', 'ovs:latest', '--scope', 'swarm', '--config-from', 'odd-config', 'odd']);
    const on = (h: SimHost) => ['--constraint', `node.id==${nodeId.get(h)}`];
    // The first host makes the switch; then a task for the odd host.
    await manager().docker(['service', 'create', '--detach', '--name', 'odd1', '--network', 'odd', '--endpoint-mode', 'dnsrr', ...on(first), TEST_IMAGE, 'sleep', '1d']);
    await settled('odd1', 'odd', 1);
    await manager().docker(['service', 'create', '--detach', '--name', 'odd3', '--network', 'odd', '--endpoint-mode', 'dnsrr', ...on(odd), TEST_IMAGE, 'sleep', '1d']);
    type Report = { drift: Array<{ kind: string; subject: string; detail: string }> };
    let drift: Report['drift'] = [];
    await waitFor("the odd host's doctor to say its refusal", async () => {
      drift = (JSON.parse((await odd.ovsnet(['doctor', '--json'], { check: false })).stdout) as Report).drift;
      return drift.some((d) => d.kind === 'swarm-network-refused');
    }, 60_000, 500);
    const refused = drift.find((d) => d.kind === 'swarm-network-refused')!;
    assert.match(refused.detail, /could not be made on this host when a task came .*: subnet 10\.72\.0\.0\/24 is already the OVN network \S+ \(made by host \S+\) with the ip-range of 10\.72\.0\.0\/24 10\.72\.0\.0\/24; this host asked for 10\.72\.0\.128\/25/);
    // Where Docker shows a config-only network's subnets (28 and earlier; 29 shows none), doctor also names the network.
    const shown = JSON.parse((await odd.docker(['network', 'inspect', 'odd-config'])).stdout)[0].IPAM.Config?.length > 0;
    assert.equal(shown, !odd.engineVersion.startsWith('29.'), `Docker ${odd.engineVersion} ${shown ? 'shows' : 'does not show'} a config-only network's subnets`);
    assert.deepEqual(drift.filter((d) => d.kind === 'ovn-config-differs').map((d) => d.subject), shown ? ['odd-config'] : []);
    const errors = (await manager().docker(['service', 'ps', '--no-trunc', '--format', '{{.Error}}', 'odd3'])).stdout;
    assert.match(errors, /ip-range of 10\.72\.0\.0\/24/, "swarm shows the plugin's refusal as the task's error");
    for (const h of hosts.filter((x) => x !== odd)) assert.equal((await h.ovsnet(['doctor'], { check: false })).exitCode, 0, `${h.name} agrees with the switch: nothing to say`);
    await manager().docker(['service', 'rm', 'odd1', 'odd3']);
    await waitFor('odd1 gone', async () => (await tasks('odd1', 'odd')).length === 0, 60_000, 500);
    await waitFor('the network odd gone from the first host', async () => !(await first.pluginState()).networks.some((n) => n.ipv4.some((s) => s.pool === '10.72.0.0/24')), 30_000, 300);
    await manager().docker(['network', 'rm', 'odd']);
    for (const h of hosts) await h.docker(['network', 'rm', 'odd-config']);
  });

  it('scaling down and draining a node release the addresses and the ports of the tasks that went', async () => {
    await manager().docker(['service', 'scale', '--detach', 'web=3']);
    await settled('web', 'web', 3);
    await waitFor('the northbound to hold three tasks', async () => (await northboundPorts('10.70.0.0/24')).length === 3, 30_000, 300);
    const drained = hosts[2]!;
    await manager().docker(['node', 'update', '--availability', 'drain', nodeId.get(drained)!]);
    const running = await settled('web', 'web', 3);
    assert.deepEqual(running.filter((t) => t.node === drained.name), [], 'no task on the drained node');
    await waitFor('no endpoint port on the drained node', async () => (await endpointPorts(drained)).length === 0, 30_000, 300);
    await waitFor('the northbound to hold the three tasks that run', async () => JSON.stringify((await northboundPorts('10.70.0.0/24')).length) === '3', 30_000, 300);
    for (const h of hosts) await assertConsistent(h);
    await manager().docker(['node', 'update', '--availability', 'active', nodeId.get(drained)!]);
  });

  it("a node's power cut: its tasks start elsewhere, and what it held is released once it is back", async () => {
    await manager().docker(['service', 'scale', '--detach', 'web=6']);
    const before = await settled('web', 'web', 6);
    const victim = hosts[1]!;
    const state = async () => (await manager().docker(['node', 'inspect', '-f', '{{.Status.State}}', nodeId.get(victim)!])).stdout.trim();
    const lost = before.filter((t) => t.node === victim.name);
    assert.ok(lost.length > 0, 'sw2 runs tasks before its power cut');
    down.add(victim);
    await victim.powerCycle();
    await waitFor('the manager to see sw2 down', async () => (await state()) === 'down', 60_000, 500);
    const meanwhile = await settled('web', 'web', 6);
    assert.deepEqual(meanwhile.filter((t) => t.node === victim.name), []);
    assert.equal(new Set(meanwhile.map((t) => t.address)).size, 6, 'addresses unique while sw2 is down');
    const taken = meanwhile.filter((t) => lost.some((l) => l.address === t.address));
    assert.deepEqual(taken, [], `what sw2 held stays held while it is down: ${lost.map((l) => l.address).join(', ')}`);
    await waitFor("the northbound to hold the running tasks' ports and sw2's", async () => (await northboundPorts('10.70.0.0/24')).length === 6 + lost.length, 30_000, 300);
    // Back: its disk kept the swarm's state, the plugin's and the databases'.
    await victim.startOvs();
    await underlay.attach(victim, `${ADDRESSES[1]}/24`);
    await trunk.cable(victim, 'eth2');
    await cluster.restartHost(1);
    await victim.startDockerd();
    down.delete(victim);
    await waitFor('the manager to see sw2 ready', async () => (await state()) === 'ready', 90_000, 500);
    await waitFor("sw2's old tasks gone", async () => (await victim.docker(['ps', '-q', '--filter', 'label=com.docker.swarm.service.name=web'])).stdout.trim() === '', 90_000, 500);
    const after = await settled('web', 'web', 6);
    assert.equal(new Set(after.map((t) => t.address)).size, 6, 'addresses unique across nodes after the power cut');
    await waitFor('the northbound to hold the six running tasks, no more', async () => {
      const ports = await northboundPorts('10.70.0.0/24');
      return ports.length === 6;
    }, 60_000, 500);
    for (const h of hosts) await assertConsistent(h);
  });

  it('docker service rm leaves nothing in Open vSwitch or in the northbound database', async () => {
    await manager().docker(['service', 'rm', 'web']);
    await waitFor('every task gone', async () => (await tasks('web', 'web')).length === 0, 60_000, 500);
    for (const h of hosts) {
      await waitFor(`no endpoint port on ${h.name}`, async () => (await endpointPorts(h)).length === 0, 30_000, 300);
      // The swarm network is made on a node when a task comes, and removed when its last one goes.
      await waitFor(`the network gone from ${h.name}'s plugin`, async () => (await h.pluginState()).networks.length === 0, 30_000, 300);
    }
    // A manager lists every network of the swarm, made on it or not: the audit is for the workers.
    for (const h of hosts.slice(1)) await assertConsistent(h);
    assert.deepEqual(await northboundPorts('10.70.0.0/24'), []);
    const switches = (await cluster.nbctl(['--bare', '--columns=name', 'find', 'Logical_Switch', 'external_ids:ovsnet-subnet="10.70.0.0/24"'], false)).stdout.trim();
    assert.equal(switches, '', 'the switch went with the last node that had the network');
  });

  it('docker stack deploy with the network as external', async () => {
    const file = path.join(manager().dir, 'stack.yml');
    await writeFile(file, [
      'services:',
      '  api:',
      `    image: ${TEST_IMAGE}`,
      '    command: ["sleep", "1d"]',
      '    networks: [web]',
      '    deploy:',
      '      replicas: 3',
      '      endpoint_mode: dnsrr',
      'networks:',
      '  web:',
      '    external: true',
      '',
    ].join('\n'));
    await manager().docker(['stack', 'deploy', '-c', file, 'shop']);
    const running = await settled('shop_api', 'web', 3);
    assert.equal(new Set(running.map((t) => t.address)).size, 3);
    const [a, b] = [running[0]!, running.find((t) => t.node !== running[0]!.node)!];
    assert.ok(b, `the stack's tasks are on more than one node: ${running.map((t) => t.node).join(', ')}`);
    assert.ok(await ping(byName.get(a.node)!, a.name, b.address, 3), `${a.name} reaches ${b.name} across hosts`);
    await manager().docker(['stack', 'rm', 'shop']);
    await waitFor('the stack gone', async () => (await tasks('shop_api', 'web')).length === 0, 60_000, 500);
    for (const h of hosts) await waitFor(`no endpoint port on ${h.name}`, async () => (await endpointPorts(h)).length === 0, 30_000, 300);
    await waitFor('nothing in the northbound', async () => (await northboundPorts('10.70.0.0/24')).length === 0, 30_000, 300);
  });

  it('a VLAN network for services, by the same route: the same VLAN on every node, a range of the subnet per node', async () => {
    // Without OVN each node's plugin hands out addresses of its own: each node's settings give it a range.
    for (const [i, h] of hosts.entries()) {
      await h.docker(['network', 'create', '--config-only', '--ipam-driver', 'ovs:latest', '--subnet', '10.71.0.0/24', '--gateway', '10.71.0.1',
        '--ip-range', `10.71.0.${64 * (i + 1)}/26`, '-o', 'vlan=871', '-o', 'uplink=eth2', '-o', 'gateway_mode=external', 'v871-config']);
    }
    await manager().docker(['network', 'create', '-d', 'ovs:latest', '--scope', 'swarm', '--config-from', 'v871-config', 'v871']);
    await manager().docker(['service', 'create', '--detach', '--name', 'vl', '--replicas', '3', '--network', 'v871', '--endpoint-mode', 'dnsrr', TEST_IMAGE, 'sleep', '1d']);
    const running = await settled('vl', 'v871', 3);
    for (const [i, h] of hosts.entries()) {
      const mine = running.filter((t) => t.node === h.name);
      const low = 64 * (i + 1);
      for (const t of mine) {
        const last = Number(t.address.split('.')[3]);
        assert.ok(t.address.startsWith('10.71.0.') && last >= low && last < low + 64, `${t.name} on ${h.name} has ${t.address}, of its node's range 10.71.0.${low}/26`);
      }
      if (mine.length === 0) continue;
      const ports = await h.ownedPorts();
      assert.equal(ports.find((p) => p.name === 'eth2')?.externalIds['ovsnet-role'], 'uplink', `eth2 is ${h.name}'s uplink`);
      assert.deepEqual(ports.filter((p) => p.externalIds['ovsnet-role'] === 'endpoint').map((p) => p.tag), mine.map(() => 871), `the tasks' ports on ${h.name} are of VLAN 871`);
    }
    const [a, b] = [running[0]!, running.find((t) => t.node !== running[0]!.node)!];
    assert.ok(b, `the tasks are on more than one node: ${running.map((t) => t.node).join(', ')}`);
    assert.ok(await ping(byName.get(a.node)!, a.name, b.address, 3), `${a.name} reaches ${b.name} on another node over the VLAN trunk`);
    assert.ok(await ping(byName.get(a.node)!, a.name, b.name, 3), 'and by its task name');
    await manager().docker(['service', 'rm', 'vl']);
    for (const h of hosts) {
      await waitFor(`the VLAN network gone from ${h.name}, with its uplink`, async () => {
        const ports = await h.ownedPorts();
        return (await h.pluginState()).networks.length === 0 && !ports.some((p) => p.externalIds['ovsnet-role'] === 'endpoint' || p.name === 'eth2');
      }, 60_000, 300);
    }
    for (const h of hosts.slice(1)) await assertConsistent(h);
  });
});
