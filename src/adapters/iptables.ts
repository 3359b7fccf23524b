/**
 * The plugin's firewall: its own chains, replaced as a whole with
 * iptables-restore --noflush (atomic, idempotent), plus one jump into each
 * from the built-in chain. No other rule or chain is touched.
 */
import { FORWARD_CHAIN, POSTROUTING_CHAIN, type FirewallRules, type Rule } from '../domain/firewall.js';
import type { ObservedFirewall } from '../domain/host.js';
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

  /** One iptables-save per table: the plugin's chains and the jumps into them, in one read each. */
  async read(): Promise<ObservedFirewall> {
    const table = async (tool: string, name: string, chain: string, parent: string) => {
      const { stdout } = await this.run(tool, ['-t', name]);
      const lines = stdout.split('\n');
      const prefix = `-A ${chain} `;
      return {
        // iptables-save quotes comments ("ovsnet:..."); the rules as written carry them bare.
        rules: lines.filter((l) => l.startsWith(prefix)).map((l) => l.slice(prefix.length).replace(/--comment "([^"\s]*)"/g, '--comment $1')),
        jump: lines.includes(`-A ${parent} -j ${chain}`),
      };
    };
    const [filter4, nat4, filter6] = await Promise.all([
      table('iptables-save', 'filter', FORWARD_CHAIN, 'FORWARD'),
      table('iptables-save', 'nat', POSTROUTING_CHAIN, 'POSTROUTING'),
      table('ip6tables-save', 'filter', FORWARD_CHAIN, 'FORWARD'),
    ]);
    return { filter4: filter4.rules, nat4: nat4.rules, filter6: filter6.rules, jumps: filter4.jump && nat4.jump && filter6.jump };
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
