/**
 * Small host facts and switches: IP forwarding and which OVS datapath works.
 */
import { access, readFile, writeFile } from 'node:fs/promises';
import type { Datapath } from '../domain/records.js';
import { unavailable } from '../errors.js';
import type { DatapathProbe, Sysctl } from '../driver/ports.js';

export class ProcSysctl implements Sysctl {
  constructor(private readonly root = '/proc/sys') {}

  async enableIpv4Forwarding(): Promise<void> {
    if (await this.ipv4Forwarding()) return;
    try {
      await writeFile(`${this.root}/net/ipv4/ip_forward`, '1\n');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'EROFS' && code !== 'EACCES' && code !== 'EPERM') throw err;
      // Inside a managed plugin /proc/sys is read-only; dockerd normally turns forwarding on already.
      throw unavailable(
        'ForwardingOff',
        'IPv4 forwarding is off and the plugin cannot turn it on here (/proc/sys is read-only): run "sysctl -w net.ipv4.ip_forward=1" on the host, or keep dockerd\'s --ip-forward on',
      );
    }
  }

  async ipv4Forwarding(): Promise<boolean> {
    return (await readFile(`${this.root}/net/ipv4/ip_forward`, 'utf8')).trim() === '1';
  }
}

/**
 * The kernel datapath needs the openvswitch module; without it only the
 * userspace (netdev) datapath works. ovs-vswitchd cannot load the module
 * itself, so its presence decides.
 */
export class ModuleDatapathProbe implements DatapathProbe {
  constructor(private readonly sysModule = '/sys/module/openvswitch') {}

  async detect(): Promise<Datapath> {
    try {
      await access(this.sysModule);
      return 'system';
    } catch {
      return 'netdev';
    }
  }
}
