/**
 * Small host facts and switches: IP forwarding and which OVS datapath works.
 */
import { access, readFile, writeFile } from 'node:fs/promises';
import type { Datapath } from '../domain/records.js';
import type { DatapathProbe, Sysctl } from '../driver/ports.js';

export class ProcSysctl implements Sysctl {
  constructor(private readonly root = '/proc/sys') {}

  async enableIpv4Forwarding(): Promise<void> {
    const path = `${this.root}/net/ipv4/ip_forward`;
    if ((await readFile(path, 'utf8')).trim() === '1') return;
    await writeFile(path, '1\n');
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
