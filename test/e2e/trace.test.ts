/**
 * `ovsnet trace` on a real host: each verdict is checked against what decides it. A guard drop names the
 * flow Open vSwitch really holds (its cookie, priority and action in `ovs-ofctl dump-flows`) and the reason
 * of the rule; an iptables verdict names a rule the kernel really holds (`iptables -S`); a delivery names the
 * container Docker calls so. Where the network guards nothing, the same spoofed packets must pass.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { linkLocalOf } from '../../src/domain/flows.js';
import { REPO_ROOT, SimHost } from './harness/sim-host.js';
import { containerAddress, endpointPortName, runContainer } from './support.js';

const CLI = `${REPO_ROOT}/dist/src/cli/main.js`;

describe('ovsnet trace', () => {
  let host: SimHost;
  const cli = (args: string[]) =>
    host.exec(process.execPath, [CLI, ...args], { check: false, env: { OVSNET_SOCKET: host.socket, DOCKER_HOST: host.dockerHost } });
  /** A trace as JSON, with its exit code. */
  async function trace(...args: string[]): Promise<{ exit: number; report: any }> {
    const r = await cli(['trace', ...args, '--json']);
    assert.ok((r.exitCode === 0 || r.exitCode === 1) && r.stdout.startsWith('{'), `trace ${args.join(' ')}: exit ${r.exitCode}: ${r.stderr}`);
    return { exit: r.exitCode ?? -1, report: JSON.parse(r.stdout) };
  }
  const flows = async () => (await host.ofctl(['dump-flows', 'ovs0'])).stdout;
  let t1: { ip: string; endpointId: string };
  let t2: { ip: string };
  let t3: { ip: string };

  before(async () => {
    host = await SimHost.start({ name: 'trace' });
    const net = (name: string, subnet: string, ...opts: string[]) => host.docker(['network', 'create', '-d', host.driver, '--ipam-driver', host.driver, '--subnet', subnet, ...opts, name]);
    await net('tnet', '10.71.0.0/24', '-o', 'vlan=71');
    await net('tint', '10.72.0.0/24', '-o', 'vlan=72', '--internal');
    await net('tother', '10.73.0.0/24', '-o', 'vlan=73');
    await runContainer(host, 't1', 'tnet');
    await runContainer(host, 't2', 'tnet');
    await runContainer(host, 't3', 'tnet', { extra: ['-p', '8080:80'] });
    await runContainer(host, 'ti', 'tint');
    await runContainer(host, 'to', 'tother');
    await net('topen', '10.74.0.0/24', '-o', 'vlan=74', '-o', 'anti_spoofing=false', '-o', 'allow_ra=true', '-o', 'allow_dhcp_server=true');
    await runContainer(host, 'oa', 'topen');
    await runContainer(host, 'ob', 'topen');
    t1 = await containerAddress(host, 't1', 'tnet');
    t2 = await containerAddress(host, 't2', 'tnet');
    t3 = await containerAddress(host, 't3', 'tnet');
  });
  after(async () => {
    await host?.stop();
  });

  it('a packet to a neighbour: admitted by the guard flow that holds the container to its own addresses, delivered to the neighbour by name', async () => {
    const { exit, report } = await trace('t1', 't2:80/tcp');
    assert.equal(exit, 0);
    assert.equal(report.verdict.outcome, 'delivered');
    assert.equal(report.to.container.name, 't2');
    assert.equal(report.to.address, t2.ip);
    assert.equal(report.from.name, 't1');
    assert.equal(report.from.port, await endpointPortName(host, t1.endpointId));
    const [guard] = report.steps;
    assert.match(guard.says, /admitted by the guard: from the container's own MAC/);
    assert.match(await flows(), new RegExp(`cookie=${guard.detail.cookie}\\b.*priority=${guard.detail.flow.split('priority ')[1]},.*nw_src=${t1.ip.replace(/\./g, '\\.')}`), 'the flow named is the one OVS holds');
    const text = await cli(['trace', 't1', 't2:80/tcp']);
    assert.match(text.stdout, new RegExp(`^trace t1 ${t1.ip.replace(/\./g, '\\.')} -> t2 `));
    assert.match(text.stdout, /^verdict: DELIVERED: delivered to t2 /m);
  });

  it('what a hostile container sends is dropped by the guard rule that stops it, and the flow it names is a drop OVS holds', async () => {
    const port = await endpointPortName(host, t1.endpointId);
    const cases: Array<[string[], string, RegExp]> = [
      [['t2', '--source', '10.71.0.200'], 'source', /source address 10\.71\.0\.200 is not the container's/],
      [['t2', '--source-mac', '02:00:00:00:00:99'], 'source', /source MAC 02:00:00:00:00:99 is not the container's/],
      [['t2', '--vlan', '12'], 'source', /tagged with VLAN 12/],
      [['ff02::1', '--icmp-type', '134', '--source', linkLocalOf(((await host.pluginState()) as any).endpoints.find((e: any) => e.id === t1.endpointId).mac)], 'router-advertisement', /router advertisements/],
      [[`${t2.ip}:68/udp`], 'dhcp-server', /DHCP server messages/],
    ];
    const dump = await flows();
    for (const [args, reason, says] of cases) {
      const { exit, report } = await trace('t1', ...args);
      assert.equal(exit, 1, `${args.join(' ')}: exit 1 when dropped`);
      assert.equal(report.verdict.outcome, 'dropped', args.join(' '));
      assert.equal(report.steps.length, 1, 'nothing after the guard');
      const [step] = report.steps;
      assert.equal(step.detail.reason, reason, args.join(' '));
      assert.equal(step.detail.port, port);
      assert.match(step.says, says);
      assert.match(dump, new RegExp(`cookie=${step.detail.cookie}\\b[^\\n]*actions=drop`), `${args.join(' ')}: the drop flow named is in OVS`);
    }
  });

  it('through the host: --internal and the isolation of networks named by the plugin rule that drops, a published port by its DNAT rule', async () => {
    const isolate = (await host.exec('iptables', ['-t', 'mangle', '-S', 'OVSNET-ISOLATE'])).stdout
      .split('\n')
      .filter((l) => l.startsWith('-A '))
      .map((l) => l.replace(/^-A OVSNET-ISOLATE /, '').replace(/"/g, ''));
    for (const destination of ['to', 'outside']) {
      const internal = await trace('ti', destination);
      assert.equal(internal.report.verdict.outcome, 'dropped', destination);
      const drop = internal.report.steps.find((s: any) => s.detail.chain === 'OVSNET-ISOLATE' && s.detail.rule);
      assert.ok(drop, JSON.stringify(internal.report.steps));
      assert.match(drop.says, /--internal/);
      assert.equal(isolate[drop.detail.number - 1], drop.detail.rule, 'the rule named is the one the kernel holds, at that place');
    }

    const apart = await trace('t1', 'to');
    assert.equal(apart.report.verdict.outcome, 'dropped');
    assert.match(apart.report.verdict.says, /OVSNET-ISOLATE.*never reach each other/);

    const gateway = (await host.pluginState()).networks.find((n) => n.ipv4[0]!.pool === '10.71.0.0/24')!.ipv4[0]!.gateway!;
    const published = await trace('t1', `${gateway}:8080/tcp`);
    assert.equal(published.exit, 0);
    const dnat = published.report.steps.find((s: any) => s.detail.chain === 'OVSNET-DNAT');
    assert.ok(dnat, JSON.stringify(published.report.steps));
    assert.match(dnat.says, new RegExp(`taken to ${t3.ip.replace(/\./g, '\\.')}:80`));
    assert.equal(published.report.verdict.outcome, 'delivered');
    assert.match(published.report.verdict.says, /^delivered to t3 /);
  });

  it('positive control: where the network guards nothing, the same spoofed packets pass, and trace says why', async () => {
    for (const args of [['--source', '10.74.0.200'], ['--source-mac', '02:00:00:00:00:99']]) {
      const { exit, report } = await trace('oa', 'ob', ...args);
      assert.equal(exit, 0, args.join(' '));
      assert.equal(report.verdict.outcome, 'delivered', `${args.join(' ')}: ${JSON.stringify(report.steps)}`);
      assert.match(report.steps[0].says, /the network guards nothing: anti_spoofing off, allow_ra and allow_dhcp_server on, no rate/);
    }
    // A tagged frame is still dropped: by the port itself (an access port of its VLAN), not by a guard flow.
    const tagged = await trace('oa', 'ob', '--vlan', '12');
    assert.equal(tagged.report.verdict.outcome, 'dropped', JSON.stringify(tagged.report.steps));
    assert.match(tagged.report.verdict.says, /^dropped by Open vSwitch on bridge ovs0/);
  });

  it('bad input is refused with what was wrong and what is valid', async () => {
    const cases: Array<[string[], number, RegExp]> = [
      [['trace', 't1', 't2', '--vlan', '5000'], 2, /--vlan is a whole number from 0 to 4095 \(given: 5000\)/],
      [['trace', 't1', 't2:99999'], 2, /port 99999 is not a port: 1 to 65535/],
      [['trace', 't1', 't2:80/sctp'], 2, /protocol "sctp" is not one trace knows: tcp, udp or icmp/],
      [['trace', 'nobody', 't2'], 1, /no container "nobody" on an ovs network of this host/],
      [['trace', 't1', 'nowhere'], 1, /destination "nowhere" is neither an address, outside, nor a container/],
      [['trace', 't1', 't2', '--source', 'fd00::1'], 1, /field Source is "fd00::1": an address of the destination's family/],
      [['trace', 't1', 't2', '--source-mac', '01:00:5e:00:00:01'], 1, /field SourceMac is "01:00:5e:00:00:01": a unicast MAC address/],
    ];
    for (const [args, exit, message] of cases) {
      const r = await cli(args);
      assert.equal(r.exitCode, exit, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, message);
    }
  });
});
