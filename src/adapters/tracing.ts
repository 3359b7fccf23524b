/**
 * The programs `ovsnet trace` asks (a diagnostic may spawn them; none changes anything): ovs-vswitchd's
 * `ofproto/trace` and `dpif/show` through ovs-appctl, the devices' MACs from `ip link`, and ovn-trace on the
 * southbound database.
 */
import { access, readFile } from 'node:fs/promises';
import { unavailable } from '../errors.js';
import type { Tracing } from '../driver/ports.js';
import { type Runner, run as runCommand } from './exec.js';

const TIMEOUT_MS = 15_000;

export class SpawnedTracing implements Tracing {
  constructor(
    private readonly o: {
      /** ovs-vswitchd's run directory (its pidfile and control socket). */
      rundir: string;
      /** ovn-trace's TLS files for ssl: remotes. */
      tls?: { key: string; cert: string; ca: string };
      run?: Runner;
    },
  ) {}

  private get run(): Runner {
    return this.o.run ?? runCommand;
  }

  /** ovs-vswitchd's control socket: `<rundir>/ovs-vswitchd.<pid>.ctl` as packaged, or one it was given (--unixctl) there. */
  private async target(): Promise<string> {
    const pid = (await readFile(`${this.o.rundir}/ovs-vswitchd.pid`, 'utf8').catch(() => '')).trim();
    for (const name of [...(pid ? [`ovs-vswitchd.${pid}.ctl`] : []), 'ovs-vswitchd.ctl']) {
      const socket = `${this.o.rundir}/${name}`;
      if (await access(socket).then(() => true, () => false)) return socket;
    }
    throw unavailable('VswitchdTimeout', `ovs-vswitchd's control socket is not in ${this.o.rundir} (ovs-vswitchd.<pid>.ctl or ovs-vswitchd.ctl): is ovs-vswitchd running, with its run directory beside the OVSDB socket?`);
  }

  async ofprotoTrace(bridge: string, flow: string): Promise<string> {
    return (await this.run('ovs-appctl', ['-t', await this.target(), 'ofproto/trace', bridge, flow], { timeoutMs: TIMEOUT_MS })).stdout;
  }

  async datapathPorts(): Promise<string> {
    return (await this.run('ovs-appctl', ['-t', await this.target(), 'dpif/show'], { timeoutMs: TIMEOUT_MS })).stdout;
  }

  async macs(): Promise<Map<string, string>> {
    const { stdout } = await this.run('ip', ['-j', 'link', 'show'], { timeoutMs: TIMEOUT_MS });
    const links = JSON.parse(stdout || '[]') as Array<{ ifname: string; address?: string }>;
    return new Map(links.filter((l) => l.address).map((l) => [l.ifname, l.address!.toLowerCase()]));
  }

  async ovnTrace(southbound: string, datapath: string, microflow: string): Promise<string> {
    const tls = this.o.tls && southbound.includes('ssl:') ? ['-p', this.o.tls.key, '-c', this.o.tls.cert, '-C', this.o.tls.ca] : [];
    return (await this.run('ovn-trace', [`--db=${southbound}`, ...tls, '--detailed', datapath, microflow], { timeoutMs: TIMEOUT_MS })).stdout;
  }
}
