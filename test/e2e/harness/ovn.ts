/**
 * OVN across simulated hosts: the northbound and southbound databases as
 * Raft clusters with one member on each host (listening on its underlay
 * address), ovn-northd, and an ovn-controller on every host bound to that
 * host's own Open vSwitch (integration bridge br-int, userspace datapath,
 * Geneve over the underlay). Every daemon runs inside its host's namespace
 * with its files under the host's directory, so a host's stop() or power
 * cut takes them with it.
 */
import { mkdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { alive, cmd, killAll, sleep, waitFor } from './proc.js';
import type { SimHost } from './sim-host.js';

const SCHEMAS = { nb: '/usr/share/ovn/ovn-nb.ovsschema', sb: '/usr/share/ovn/ovn-sb.ovsschema' } as const;
const PORTS = { nb: { client: 6641, raft: 6643, tls: 6651 }, sb: { client: 6642, raft: 6644, tls: 6652 } } as const;
const NAMES = { nb: 'OVN_Northbound', sb: 'OVN_Southbound' } as const;
export const OVN_TOOLS = ['ovs-pki', 'ovsdb-tool', 'ovsdb-server', 'ovn-northd', 'ovn-controller', 'ovn-nbctl', 'ovn-sbctl', 'ovn-appctl'];

type Db = 'nb' | 'sb';

export interface OvnMember {
  host: SimHost;
  /** The host's underlay address, where its members listen. */
  address: string;
}

export class OvnCluster {
  private constructor(
    readonly members: readonly OvnMember[],
    /** Every host with an ovn-controller (the members, and hosts without a database). */
    readonly chassis: readonly OvnMember[],
  ) {}

  /** The northbound remotes, every member: what OVSNET_OVN_NB gets. */
  get nbRemotes(): string {
    return this.remotes('nb');
  }

  remotes(db: Db): string {
    return this.members.map((m) => `tcp:${m.address}:${PORTS[db].client}`).join(',');
  }

  /** The same databases over TLS (every member also listens with `pssl:`, its certificate signed by the PKI's CA). */
  tlsRemotes(db: Db): string {
    return this.members.map((m) => `ssl:${m.address}:${PORTS[db].tls}`).join(',');
  }

  /** Where ovs-pki made the PKI: a CA, the databases' and a client's key and certificate, and a second CA's client. */
  private get pki(): string {
    return path.join(this.chassis[0]!.host.dir, 'ovn-pki');
  }

  /** A client's files, signed by the CA the databases trust (`rogue`: by another CA, which they do not). */
  tlsFiles(who: 'client' | 'rogue' = 'client'): { key: string; cert: string; ca: string } {
    return { key: path.join(this.pki, `${who}-privkey.pem`), cert: path.join(this.pki, `${who}-cert.pem`), ca: path.join(this.pki, who === 'rogue' ? 'rogue' : 'ca', 'switchca', 'cacert.pem') };
  }

  /** The PKI of the databases, made as an operator would (ovs-pki: a CA, then a signed key per party). */
  private async makePki(): Promise<void> {
    await rm(this.pki, { recursive: true, force: true });
    await mkdir(this.pki, { recursive: true });
    for (const [ca, names] of [['ca', ['db', 'client']], ['rogue', ['rogue']]] as const) {
      await cmd('ovs-pki', [`--dir=${path.join(this.pki, ca)}`, `--log=${path.join(this.pki, 'pki.log')}`, 'init']);
      for (const name of names) await cmd('ovs-pki', [`--dir=${path.join(this.pki, ca)}`, `--log=${path.join(this.pki, 'pki.log')}`, '-b', '-u', 'req+sign', path.join(this.pki, name), 'switch']);
    }
  }

  private dir(member: OvnMember): string {
    return path.join(member.host.dir, 'ovn');
  }

  private env(member: OvnMember): Record<string, string> {
    const dir = this.dir(member);
    // OVS_RUNDIR is where ovn-controller finds ovs-vswitchd's OpenFlow socket (br-int.mgmt): the host's own.
    return { OVN_RUNDIR: dir, OVN_LOGDIR: dir, OVN_DBDIR: dir, OVS_RUNDIR: path.join(member.host.dir, 'ovs') };
  }

  /**
   * Builds both clusters, starts ovn-northd on the first host and ovn-controller on every host.
   * `databases` limits the cluster members to the first few hosts (the others only run ovn-controller).
   */
  static async start(all: OvnMember[], options: { electionTimerMs?: number; databases?: number } = {}): Promise<OvnCluster> {
    const members = all.slice(0, options.databases ?? all.length);
    const cluster = new OvnCluster(members, all);
    for (const member of all) {
      await rm(cluster.dir(member), { recursive: true, force: true });
      await mkdir(cluster.dir(member), { recursive: true });
      // Raft and OVSDB clients cross the underlay over TCP from the host's own stack: the userspace
      // datapath forwards partial checksums as they are.
      await member.host.exec('ethtool', ['-K', 'br-phy', 'tx', 'off']);
    }
    await cluster.makePki();
    for (const db of ['nb', 'sb'] as const) {
      for (const [i, member] of members.entries()) {
        const file = path.join(cluster.dir(member), `${db}.db`);
        const local = `tcp:${member.address}:${PORTS[db].raft}`;
        if (i === 0) {
          await cmd('ovsdb-tool', [`--election-timer=${options.electionTimerMs ?? 2000}`, 'create-cluster', file, SCHEMAS[db], local]);
        } else {
          await cmd('ovsdb-tool', ['join-cluster', file, NAMES[db], local, `tcp:${members[0]!.address}:${PORTS[db].raft}`]);
        }
      }
      for (const member of members) await cluster.startMember(db, member);
    }
    await cluster.waitForLeader('nb');
    await cluster.waitForLeader('sb');
    await cluster.nbctl(['init']);
    // ovn-northd leaves a northbound leader that fell silent after twice this (its own inactivity probe).
    await cluster.nbctl(['set', 'NB_Global', '.', 'options:northd_probe_interval=2000']);
    await cluster.startNorthd();
    for (const [i, member] of all.entries()) {
      await member.host.vsctl([
        'set', 'open', '.',
        `external_ids:system-id=${member.host.name}`,
        `external_ids:hostname=${member.host.name}`,
        `external_ids:ovn-remote="${cluster.remotes('sb')}"`,
        'external_ids:ovn-encap-type=geneve',
        `external_ids:ovn-encap-ip=${member.address}`,
        'external_ids:ovn-bridge=br-int',
        'external_ids:ovn-bridge-datapath-type=netdev',
      ]);
      await cluster.startController(i);
    }
    for (const member of all) {
      await waitFor(`br-int on ${member.host.name}`, async () => (await member.host.vsctl(['br-exists', 'br-int'], { check: false })).exitCode === 0, 30_000, 200);
    }
    await waitFor('every chassis in the southbound database', async () => {
      const { stdout } = await members[0]!.host.exec('ovn-sbctl', [`--db=${cluster.remotes('sb')}`, '--timeout=10', '--bare', '--columns=name', 'list', 'Chassis'], { check: false });
      return all.every((m) => stdout.split('\n').includes(m.host.name));
    }, 60_000, 500);
    return cluster;
  }

  async startMember(db: Db, member: OvnMember): Promise<void> {
    const dir = this.dir(member);
    await member.host.exec('ovsdb-server', [
      path.join(dir, `${db}.db`),
      `--remote=punix:${dir}/${db}.sock`,
      `--remote=ptcp:${PORTS[db].client}:${member.address}`,
      `--remote=pssl:${PORTS[db].tls}:${member.address}`,
      `--private-key=${path.join(this.pki, 'db-privkey.pem')}`,
      `--certificate=${path.join(this.pki, 'db-cert.pem')}`,
      `--ca-cert=${path.join(this.pki, 'ca', 'switchca', 'cacert.pem')}`,
      `--pidfile=${dir}/${db}.pid`,
      `--unixctl=${dir}/${db}.ctl`,
      `--log-file=${dir}/${db}.log`,
      '--detach',
    ], { env: this.env(member) });
  }

  /** Kills one member of a cluster (SIGKILL: no goodbye to the others). */
  async killMember(db: Db, index: number): Promise<void> {
    const member = this.members[index]!;
    await this.killPidfile(path.join(this.dir(member), `${db}.pid`));
  }

  /**
   * Silences one member towards the others and their clients without stopping it: its host drops every TCP
   * segment of the database's client and Raft ports to and from the other members' hosts (as a partition or
   * a dead network path would: its connections stay open, nothing arrives). Returns the undo.
   */
  async silenceMember(db: Db, index: number): Promise<() => Promise<void>> {
    const member = this.members[index]!;
    const ports = `${PORTS[db].client},${PORTS[db].raft}`;
    const rules = this.members.filter((m) => m !== member).flatMap((peer) => [
      ['INPUT', '-s', peer.address, '-p', 'tcp', '-m', 'multiport', '--ports', ports, '-j', 'DROP'],
      ['OUTPUT', '-d', peer.address, '-p', 'tcp', '-m', 'multiport', '--ports', ports, '-j', 'DROP'],
    ]);
    const inserted: string[][] = [];
    const undo = async () => {
      for (const rule of inserted) await member.host.exec('iptables', ['-w', '-D', ...rule], { check: false });
    };
    try {
      for (const rule of rules) {
        await member.host.exec('iptables', ['-w', '-I', ...rule]);
        inserted.push(rule);
      }
    } catch (err) {
      await undo();
      throw err;
    }
    return undo;
  }

  /** A member's role in its cluster, as it says itself ('down' when it does not answer). */
  async role(db: Db, index: number): Promise<string> {
    const status = await cmd('ovn-appctl', ['-t', path.join(this.dir(this.members[index]!), `${db}.ctl`), 'cluster/status', NAMES[db]], { check: false, timeoutMs: 5_000 });
    return /^Role: (\w+)$/m.exec(status.stdout)?.[1] ?? 'down';
  }

  /** Which member leads a cluster now, as the members themselves say; undefined while none does. */
  async leader(db: Db): Promise<number | undefined> {
    for (let i = 0; i < this.members.length; i++) if ((await this.role(db, i)) === 'leader') return i;
    return undefined;
  }

  async waitForLeader(db: Db): Promise<number> {
    return waitFor(`a leader of the ${db} cluster`, () => this.leader(db), 60_000, 200);
  }

  /** Waits until ovn-northd has caught up with the northbound database (after an outage it reconnects with a backoff). */
  async waitForNorthd(): Promise<void> {
    await this.waitForLeader('nb');
    // A member that led before the others came back may still say so while the cluster elects: ovn-nbctl then
    // finds no leader it will use and fails at once, so it is asked again until it gets through.
    await waitFor('ovn-northd to catch up with the northbound database', async () => (await this.nbctl(['--wait=sb', '--timeout=20', 'sync'], false)).exitCode === 0, 90_000, 500);
  }

  async startNorthd(): Promise<void> {
    const member = this.members[0]!;
    const dir = this.dir(member);
    await member.host.exec('ovn-northd', [
      `--ovnnb-db=${this.remotes('nb')}`,
      `--ovnsb-db=${this.remotes('sb')}`,
      `--pidfile=${dir}/northd.pid`,
      `--unixctl=${dir}/northd.ctl`,
      `--log-file=${dir}/northd.log`,
      '--detach',
    ], { env: this.env(member) });
  }

  async startController(index: number): Promise<void> {
    const member = this.chassis[index]!;
    const dir = this.dir(member);
    // `ip netns exec` remounts /sys for the namespace, which ovn-controller reads, as ovs-vswitchd does.
    await cmd('ip', ['netns', 'exec', member.host.ns, 'ovn-controller', member.host.ovsdb,
      `--pidfile=${dir}/controller.pid`, `--log-file=${dir}/controller.log`, '--detach'], { env: this.env(member) });
  }

  /** Stops a host's ovn-controller as its service does (`exit`: it takes its chassis out of the southbound database). */
  async exitController(index: number): Promise<void> {
    const dir = this.dir(this.chassis[index]!);
    const pid = Number((await readFile(path.join(dir, 'controller.pid'), 'utf8').catch(() => '')).trim());
    // Its control socket is in its run directory (OVN_RUNDIR), named after its pid.
    await cmd('ovn-appctl', ['-t', path.join(dir, `ovn-controller.${pid}.ctl`), 'exit'], { timeoutMs: 20_000 });
    if (pid) await waitFor(`ovn-controller ${pid} to exit`, async () => !alive(pid), 20_000, 50);
  }

  /** The chassis a logical port is bound to now, as the southbound database says; undefined while none. */
  async boundChassis(logicalPort: string): Promise<string | undefined> {
    const sbctl = (args: string[]) => this.members[0]!.host.exec('ovn-sbctl', [`--db=${this.remotes('sb')}`, '--timeout=10', '--bare', ...args], { check: false });
    const chassis = (await sbctl(['--columns=chassis', 'find', 'Port_Binding', `logical_port=${logicalPort}`])).stdout.trim();
    if (!chassis) return undefined;
    return (await sbctl(['--columns=name', 'list', 'Chassis', chassis])).stdout.trim() || undefined;
  }

  async stopController(index: number): Promise<void> {
    await this.killPidfile(path.join(this.dir(this.chassis[index]!), 'controller.pid'), 'SIGTERM');
  }

  /** After a host's power cut: its members and ovn-controller again (the databases are on its disk). */
  async restartHost(index: number): Promise<void> {
    const member = this.chassis[index]!;
    if (this.members.includes(member)) for (const db of ['nb', 'sb'] as const) await this.startMember(db, member);
    await member.host.exec('ethtool', ['-K', 'br-phy', 'tx', 'off']);
    if (index === 0) await this.startNorthd();
    await this.startController(index);
  }

  /** Runs ovn-nbctl against the cluster (for checks and for damage done on purpose), from the first host: the underlay is only there. */
  nbctl(args: string[], check = true) {
    return this.members[0]!.host.exec('ovn-nbctl', [`--db=${this.nbRemotes}`, '--timeout=20', ...args], { check });
  }

  private async killPidfile(pidfile: string, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const pid = Number((await readFile(pidfile, 'utf8').catch(() => '')).trim());
    if (!pid) return;
    await killAll([pid], signal);
    await waitFor(`process ${pid} to exit`, async () => !alive(pid), 10_000, 50).catch(() => killAll([pid]));
    await sleep(50);
  }
}
