/**
 * The plugin's firewall: its own chains, replaced as a whole with
 * iptables-restore --noflush (atomic, idempotent), plus one jump into each
 * from the built-in chain. No other rule or chain is touched.
 */
import { DNAT_CHAIN, EMPTY_RULES, FORWARD_CHAIN, INPUT_CHAIN, ISOLATE_CHAIN, PORTS_CHAIN, POSTROUTING_CHAIN, type FirewallRules, type Rule } from '../domain/firewall.js';
import type { ObservedFirewall } from '../domain/host.js';
import type { Firewall } from '../driver/ports.js';
import type { Runner } from './exec.js';

const TABLES = ['filter', 'nat', 'mangle', 'raw'] as const;

interface Table {
  name: (typeof TABLES)[number];
  chain: string;
  rules: readonly Rule[];
  /** Built-in chains that jump into it, each with the matches of its jump (as `iptables -S` prints them). */
  jumps: ReadonlyArray<{ parent: string; match: readonly string[] }>;
}

/** Published ports: traffic to the host's own addresses, from outside (PREROUTING) and from the host itself (OUTPUT, not loopback). */
function dnatJumps(family: '4' | '6'): Table['jumps'] {
  return [
    { parent: 'PREROUTING', match: ['-m', 'addrtype', '--dst-type', 'LOCAL'] },
    { parent: 'OUTPUT', match: ['!', '-d', family === '4' ? '127.0.0.0/8' : '::1/128', '-m', 'addrtype', '--dst-type', 'LOCAL'] },
  ];
}

function tables(family: '4' | '6', rules: FirewallRules): Table[] {
  const f = family === '4' ? rules.v4 : rules.v6;
  return [
    { name: 'filter', chain: FORWARD_CHAIN, rules: f.filter, jumps: [{ parent: 'FORWARD', match: [] }] },
    { name: 'nat', chain: POSTROUTING_CHAIN, rules: f.nat, jumps: [{ parent: 'POSTROUTING', match: [] }] },
    { name: 'nat', chain: DNAT_CHAIN, rules: f.dnat, jumps: dnatJumps(family) },
    { name: 'mangle', chain: ISOLATE_CHAIN, rules: f.isolate, jumps: [{ parent: 'FORWARD', match: [] }] },
    { name: 'mangle', chain: INPUT_CHAIN, rules: f.input, jumps: [{ parent: 'INPUT', match: [] }] },
    { name: 'raw', chain: PORTS_CHAIN, rules: f.raw, jumps: [{ parent: 'PREROUTING', match: [] }] },
  ];
}

function restoreInput(list: readonly Table[]): string {
  const lines: string[] = [];
  for (const name of TABLES) {
    const inTable = list.filter((t) => t.name === name);
    if (inTable.length === 0) continue;
    lines.push(`*${name}`, ...inTable.map((t) => `:${t.chain} - [0:0]`));
    for (const table of inTable) for (const rule of table.rules) lines.push(['-A', table.chain, ...rule].join(' '));
    lines.push('COMMIT');
  }
  return lines.join('\n') + '\n';
}

function jumpLine(parent: string, match: readonly string[], chain: string): string {
  return ['-A', parent, ...match, '-j', chain].join(' ');
}

export class IptablesFirewall implements Firewall {
  constructor(private readonly run: Runner) {}

  async sync(rules: FirewallRules): Promise<void> {
    await this.apply('4', tables('4', rules));
    await this.apply('6', tables('6', rules));
  }

  /** One iptables-save per table: the plugin's chains and the jumps into them, in one read each. */
  async read(): Promise<ObservedFirewall> {
    const save = async (tool: string, name: string) => (await this.run(tool, ['-t', name])).stdout.split('\n');
    const chain = (lines: string[], table: Table) => {
      const prefix = `-A ${table.chain} `;
      return {
        // iptables-save quotes comments ("ovsnet:..."); the rules as written carry them bare.
        rules: lines.filter((l) => l.startsWith(prefix)).map((l) => l.slice(prefix.length).replace(/--comment "([^"\s]*)"/g, '--comment $1')),
        jump: table.jumps.every((j) => lines.includes(jumpLine(j.parent, j.match, table.chain))),
      };
    };
    const [filter4, nat4, mangle4, raw4, filter6, nat6, mangle6, raw6] = await Promise.all([
      save('iptables-save', 'filter'),
      save('iptables-save', 'nat'),
      save('iptables-save', 'mangle'),
      save('iptables-save', 'raw'),
      save('ip6tables-save', 'filter'),
      save('ip6tables-save', 'nat'),
      save('ip6tables-save', 'mangle'),
      save('ip6tables-save', 'raw'),
    ]);
    const [f4, n4, d4, i4, in4, r4] = tables('4', EMPTY_RULES);
    const [f6, n6, d6, i6, in6, r6] = tables('6', EMPTY_RULES);
    const read = [
      chain(filter4, f4!), chain(nat4, n4!), chain(nat4, d4!), chain(mangle4, i4!), chain(mangle4, in4!), chain(raw4, r4!),
      chain(filter6, f6!), chain(nat6, n6!), chain(nat6, d6!), chain(mangle6, i6!), chain(mangle6, in6!), chain(raw6, r6!),
    ];
    return {
      filter4: read[0]!.rules,
      nat4: read[1]!.rules,
      dnat4: read[2]!.rules,
      isolate4: read[3]!.rules,
      input4: read[4]!.rules,
      raw4: read[5]!.rules,
      filter6: read[6]!.rules,
      nat6: read[7]!.rules,
      dnat6: read[8]!.rules,
      isolate6: read[9]!.rules,
      input6: read[10]!.rules,
      raw6: read[11]!.rules,
      jumps: read.every((r) => r.jump),
    };
  }

  private async apply(family: '4' | '6', list: Table[]): Promise<void> {
    const tool = family === '4' ? 'iptables' : 'ip6tables';
    await this.run(`${tool}-restore`, ['--noflush', '--wait'], { input: restoreInput(list) });
    // One read per table tells which jumps are there.
    for (const name of TABLES) {
      const inTable = list.filter((t) => t.name === name);
      if (inTable.length === 0) continue;
      const { stdout } = await this.run(tool, ['--wait', '-t', name, '-S']);
      const rules = stdout.split('\n').filter((l) => l.startsWith('-A '));
      for (const table of inTable) {
        for (const jump of table.jumps) if (!rules.includes(jumpLine(jump.parent, jump.match, table.chain))) await this.insertJump(tool, table, jump, rules);
      }
    }
  }

  /**
   * The jump goes right after Docker's DOCKER-USER jump when there is one, so the operator's rules still come
   * first; the mangle table's (isolation) first of all.
   */
  private async insertJump(tool: string, table: Table, jump: Table['jumps'][number], rules: readonly string[]): Promise<void> {
    const inParent = rules.filter((l) => l.startsWith(`-A ${jump.parent} `));
    const dockerUser = table.name === 'filter' ? inParent.findIndex((l) => l === `-A ${jump.parent} -j DOCKER-USER`) : -1;
    const position = dockerUser >= 0 ? dockerUser + 2 : 1;
    await this.run(tool, ['--wait', '-t', table.name, '-I', jump.parent, String(position), ...jump.match, '-j', table.chain]);
  }
}
