/**
 * Watches the kernel for changes that call for a repair: the plugin's gateway
 * ports (on the userspace datapath ovs-vswitchd recreates its internal ports
 * when it restarts, and they come back without their addresses and with the
 * kernel's defaults; someone may also delete an address by hand), and Linux
 * bridges of other container networks coming and going (the firewall keeps
 * the plugin's networks apart from each of them by name). One long-running
 * `ip monitor` reports all of it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { GATEWAY_PREFIX, NETWORK_ID_CHARS } from '../domain/names.js';
import type { Logger } from '../log.js';

const GATEWAY = new RegExp(`(?:^|\\s)\\d+:\\s+(${GATEWAY_PREFIX}${NETWORK_ID_CHARS}{10})[:@\\s]`);
/** A link line of a Linux bridge itself (`-d` prints its bridge settings; its ports say bridge_slave). */
const BRIDGE = /^(Deleted )?\d+:\s+([^:@\s]+)[:@].*\sbridge forward_delay /;

export type LinkChange = { kind: 'gateway'; port: string } | { kind: 'bridge'; name: string; gone: boolean };

export class LinkWatcher {
  private child: ChildProcess | undefined;
  private stopped = false;
  /** Bridges seen: only a new one, or one gone, is news (a bridge reports every port its containers add). */
  private readonly bridges = new Set<string>();

  constructor(
    private readonly onChange: (change: LinkChange) => void,
    private readonly log: Logger,
  ) {}

  start(): void {
    if (this.stopped) return;
    const child = spawn('ip', ['-d', '-o', 'monitor', 'link', 'address'], { stdio: ['ignore', 'pipe', 'pipe'], shell: false });
    this.child = child;
    let buffer = '';
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (chunk: string) => {
      buffer += chunk;
      let newline: number;
      while ((newline = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + 1);
        this.read(line);
      }
    });
    child.once('error', (err) => this.log.warn('cannot watch links (ip monitor)', { error: err.message }));
    child.once('exit', (code) => {
      if (this.stopped) return;
      this.log.warn('ip monitor exited; restarting it', { code });
      setTimeout(() => this.start(), 1_000).unref();
    });
  }

  stop(): void {
    this.stopped = true;
    this.child?.kill();
  }

  private read(line: string): void {
    const gateway = GATEWAY.exec(line);
    if (gateway) {
      this.onChange({ kind: 'gateway', port: gateway[1]! });
      return;
    }
    const bridge = BRIDGE.exec(line);
    if (!bridge) return;
    const [, deleted, name] = bridge;
    const gone = deleted !== undefined;
    if (gone === !this.bridges.has(name!)) return;
    if (gone) this.bridges.delete(name!);
    else this.bridges.add(name!);
    this.onChange({ kind: 'bridge', name: name!, gone });
  }
}
