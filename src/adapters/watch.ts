/**
 * Watches the kernel for changes to the plugin's gateway ports. On the
 * userspace datapath ovs-vswitchd recreates its internal ports when it
 * restarts, and they come back without their addresses; someone may also
 * delete an address by hand. One long-running `ip monitor` reports both.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { GATEWAY_PREFIX } from '../domain/names.js';
import type { Logger } from '../log.js';

const LINE = new RegExp(`(?:^|\\s)\\d+:\\s+(${GATEWAY_PREFIX}[0-9a-f]{10})[:@\\s]`);

export class GatewayWatcher {
  private child: ChildProcess | undefined;
  private stopped = false;

  constructor(
    private readonly onChange: (port: string, line: string) => void,
    private readonly log: Logger,
  ) {}

  start(): void {
    if (this.stopped) return;
    const child = spawn('ip', ['-o', 'monitor', 'link', 'address'], { stdio: ['ignore', 'pipe', 'pipe'], shell: false });
    this.child = child;
    let buffer = '';
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (chunk: string) => {
      buffer += chunk;
      let newline: number;
      while ((newline = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + 1);
        const match = LINE.exec(line);
        if (match) this.onChange(match[1]!, line);
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
}
