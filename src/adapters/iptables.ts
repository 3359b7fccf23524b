/**
 * The plugin's firewall: its own chains, replaced as a whole with
 * iptables-restore --noflush (atomic, idempotent), plus one jump into each
 * from the built-in chain. No other rule or chain is touched.
 */
import { FORWARD_CHAIN, POSTROUTING_CHAIN, type FirewallRules, type Rule } from '../domain/firewall.js';
import type { Firewall } from '../driver/ports.js';
import type { Runner } from './exec.js';

interface Table {
  name: 'filter' | 'nat';
  chain: string;
  parent: string;
  rules: readonly Rule[];
}

function restoreInput(tables: readonly Table[]): string {
  const lines: string[] = [];
  for (const table of tables) {
    lines.push(`*${table.name}`, `:${table.chain} - [0:0]`);
    for (const rule of table.rules) lines.push(['-A', table.chain, ...rule].join(' '));
    lines.push('COMMIT');
  }
  return lines.join('\n') + '\n';
}

export class IptablesFirewall implements Firewall {
  constructor(private readonly run: Runner) {}

  async sync(rules: FirewallRules): Promise<void> {
    await this.apply('4', [
      { name: 'filter', chain: FORWARD_CHAIN, parent: 'FORWARD', rules: rules.v4.filter },
      { name: 'nat', chain: POSTROUTING_CHAIN, parent: 'POSTROUTING', rules: rules.v4.nat },
    ]);
    await this.apply('6', [{ name: 'filter', chain: FORWARD_CHAIN, parent: 'FORWARD', rules: rules.v6.filter }]);
  }

  async read(): Promise<{ filter4: string[]; nat4: string[]; filter6: string[] }> {
    const rules = async (tool: string, table: string, chain: string) => {
      const { stdout } = await this.run(tool, ['--wait', '-t', table, '-S', chain]).catch(() => ({ stdout: '' }));
      const prefix = `-A ${chain} `;
      return stdout.split('\n').filter((l) => l.startsWith(prefix)).map((l) => l.slice(prefix.length));
    };
    return {
      filter4: await rules('iptables', 'filter', FORWARD_CHAIN),
      nat4: await rules('iptables', 'nat', POSTROUTING_CHAIN),
      filter6: await rules('ip6tables', 'filter', FORWARD_CHAIN),
    };
  }

  private async apply(family: '4' | '6', tables: Table[]): Promise<void> {
    const tool = family === '4' ? 'iptables' : 'ip6tables';
    await this.run(`${tool}-restore`, ['--noflush', '--wait'], { input: restoreInput(tables) });
    for (const table of tables) await this.ensureJump(tool, table);
  }

  /** The jump goes right after Docker's DOCKER-USER jump when there is one, so the operator's rules still come first. */
  private async ensureJump(tool: string, table: Table): Promise<void> {
    const { stdout } = await this.run(tool, ['--wait', '-t', table.name, '-S', table.parent]);
    const rules = stdout.split('\n').filter((l) => l.startsWith('-A '));
    if (rules.some((l) => l === `-A ${table.parent} -j ${table.chain}`)) return;
    const dockerUser = rules.findIndex((l) => l === `-A ${table.parent} -j DOCKER-USER`);
    const position = dockerUser >= 0 ? dockerUser + 2 : 1;
    await this.run(tool, ['--wait', '-t', table.name, '-I', table.parent, String(position), '-j', table.chain]);
  }
}
