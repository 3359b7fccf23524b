/**
 * The plugin's firewall: its own chains, replaced as a whole with
 * iptables-restore --noflush (atomic, idempotent), plus one jump into each
 * from the built-in chain. No other rule or chain is touched.
 */
import {
  DNAT_CHAIN, EMPTY_RULES, FORWARD_CHAIN, INPUT_CHAIN, ISOLATE_CHAIN, PORTS_CHAIN, POSTROUTING_CHAIN,
  type FirewallRules, type IptablesSample, type IptablesVariant, type Rule, chooseIptables,
} from '../domain/firewall.js';
import type { ObservedFirewall } from '../domain/host.js';
import type { Firewall } from '../driver/ports.js';
import type { Logger } from '../log.js';
import type { Runner } from './exec.js';

/** The programs of one family: the command, its save and its restore. */
interface FamilyTools {
  readonly cli: string;
  readonly save: string;
  readonly restore: string;
}

export interface IptablesCommands {
  readonly variant: IptablesVariant;
  /** Why this one (for the log and doctor). */
  readonly why: string;
  readonly v4: FamilyTools;
  readonly v6: FamilyTools;
}

/** auto: the variant the host's rules are in (`chooseIptables`); legacy or nft: that one. */
export type IptablesSetting = 'auto' | IptablesVariant;

function toolsOf(variant: IptablesVariant | undefined): { v4: FamilyTools; v6: FamilyTools } {
  const suffix = variant ? `-${variant}` : '';
  const family = (base: string) => ({ cli: `${base}${suffix}`, save: `${base}${suffix}-save`, restore: `${base}${suffix}-restore` });
  return { v4: family('iptables'), v6: family('ip6tables') };
}

/**
 * Which iptables the plugin runs, shared by the firewall and the reader of Docker's published ports. A host has
 * legacy iptables, iptables on nf_tables, or both (Debian's iptables package; the managed plugin's image): the
 * plugin writes where Docker and the operator do. Chosen at the first use and again at each read of the firewall
 * (a reconcile pass), since Docker may write its rules after the plugin started. A choice that moves (seen twice
 * in a row, and never on a failed read) leaves the plugin's chains where they were until the next write has put
 * them in the new one; then they are emptied there, so that nothing is unguarded meanwhile.
 */
export class IptablesTools {
  private chosen: Promise<IptablesCommands> | undefined;
  /** `--version` of each program, undefined when it is not installed. */
  private installed: Promise<{ legacy: string | undefined; nft: string | undefined; plain: string | undefined }> | undefined;
  /** A move seen once, waiting for the next read to confirm it. */
  private moving: IptablesVariant | undefined;
  /** The variant the plugin's chains are to be emptied in, once the next write has put them in the chosen one. */
  private retired: IptablesCommands | undefined;

  constructor(
    private readonly run: Runner,
    /** Or the commands themselves, already chosen. */
    private readonly setting: IptablesSetting | IptablesCommands = 'auto',
    private readonly log?: Logger,
  ) {}

  commands(): Promise<IptablesCommands> {
    this.chosen ??= typeof this.setting === 'object' ? Promise.resolve(this.setting) : this.first(this.setting);
    return this.chosen;
  }

  /** Chooses again (auto only); a move takes effect at its second sighting. */
  async recheck(): Promise<void> {
    if (this.setting !== 'auto' || !this.chosen) return;
    const before = await this.chosen;
    const seen = await this.sample();
    if (!seen) return; // a read failed: keep what there is
    const { variant, why } = chooseIptables(seen.sample);
    if (variant === before.variant) {
      this.moving = undefined;
      return;
    }
    if (this.moving !== variant) {
      this.moving = variant;
      return;
    }
    this.moving = undefined;
    const next = this.commandsOf(variant, why, seen.versions);
    this.log?.warn("iptables chosen again: the host's rules moved; the plugin's move with the next write", { from: before.v4.cli, to: next.v4.cli, why });
    this.retired = before;
    this.chosen = Promise.resolve(next);
  }

  /**
   * The variant whose plugin chains are to be emptied now that the chosen one has them (called by the firewall
   * after a write), at most once.
   */
  takeRetired(): IptablesCommands | undefined {
    const retired = this.retired;
    this.retired = undefined;
    return retired;
  }

  /** The iptables the plugin's chains are yet to be emptied in, if any (a drift until the next write). */
  pendingRetired(): string | undefined {
    return this.retired?.v4.cli;
  }

  private versions() {
    const works = (program: string) => this.run(program, ['--version']).then((r) => r.stdout, () => undefined);
    this.installed ??= Promise.all([works('iptables-legacy'), works('iptables-nft'), works('iptables')]).then(([legacy, nft, plain]) => ({ legacy, nft, plain }));
    return this.installed;
  }

  /** Both variants' rules (both families), or undefined when a save of an installed one failed. */
  private async sample(): Promise<{ sample: IptablesSample; versions: Awaited<ReturnType<IptablesTools['versions']>> } | undefined> {
    const versions = await this.versions();
    let failed = false;
    const save = async (variant: IptablesVariant): Promise<string | undefined> => {
      if (versions[variant] === undefined) return undefined;
      const tools = toolsOf(variant);
      const outputs = await Promise.all([tools.v4.save, tools.v6.save].map((program) => this.run(program, []).then((r) => r.stdout, () => ((failed = true), ''))));
      return outputs.join('\n');
    };
    const [legacy, nft] = await Promise.all([save('legacy'), save('nft')]);
    if (failed) return undefined;
    const plain: IptablesVariant | undefined = versions.plain?.includes('(legacy)') ? 'legacy' : versions.plain?.includes('(nf_tables)') ? 'nft' : undefined;
    return { sample: { legacy, nft, plain }, versions };
  }

  private commandsOf(variant: IptablesVariant, why: string, versions: { legacy: string | undefined; nft: string | undefined }): IptablesCommands {
    return { variant, why, ...toolsOf(versions[variant] === undefined ? undefined : variant) };
  }

  private async first(setting: IptablesSetting): Promise<IptablesCommands> {
    const versions = await this.versions();
    let commands: IptablesCommands;
    let other: string | undefined;
    const seen = await this.sample();
    if (setting !== 'auto') {
      if (versions[setting] === undefined && !(versions.plain ?? '').includes(setting === 'legacy' ? '(legacy)' : '(nf_tables)')) {
        this.log?.error('the iptables asked for is not installed', { setting: `OVSNET_IPTABLES=${setting}`, missing: `iptables-${setting}` });
      }
      commands = this.commandsOf(setting, `OVSNET_IPTABLES=${setting}`, versions);
      other = setting === 'legacy' ? seen?.sample.nft : seen?.sample.legacy;
    } else {
      const { variant, why } = chooseIptables(seen?.sample ?? { legacy: undefined, nft: undefined, plain: undefined });
      commands = this.commandsOf(variant, why, versions);
      other = variant === 'legacy' ? seen?.sample.nft : seen?.sample.legacy;
    }
    this.log?.info('iptables chosen', { variant: commands.v4.cli, why: commands.why });
    // The plugin's rules in the other one (a start after the host's rules moved, or another setting): emptied
    // once the first write has put them in this one.
    if (other !== undefined && /^-A OVSNET-/m.test(other)) {
      const otherVariant: IptablesVariant = commands.variant === 'legacy' ? 'nft' : 'legacy';
      this.retired = { variant: otherVariant, why: commands.why, ...toolsOf(otherVariant) };
    }
    return commands;
  }
}

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
  constructor(
    private readonly run: Runner,
    private readonly tools: IptablesTools = new IptablesTools(run),
    private readonly log?: Logger,
  ) {}

  async sync(rules: FirewallRules): Promise<void> {
    const commands = await this.tools.commands();
    await this.apply(commands.v4, tables('4', rules));
    await this.apply(commands.v6, tables('6', rules));
    // The rules are in the chosen iptables: the plugin's chains in the one it left are emptied (their jumps stay).
    const retired = this.tools.takeRetired();
    if (retired && retired.variant !== commands.variant) {
      this.log?.warn("emptying the plugin's chains in the iptables it left", { variant: retired.v4.cli, now: commands.v4.cli });
      await this.apply(retired.v4, tables('4', EMPTY_RULES), false);
      await this.apply(retired.v6, tables('6', EMPTY_RULES), false);
    }
  }

  /**
   * One iptables-save per table: the plugin's chains and the jumps into them, in one read each. Each read
   * (a reconcile pass) first checks that the host's rules are still in the iptables the plugin writes with.
   */
  async read(): Promise<ObservedFirewall> {
    await this.tools.recheck();
    const { v4, v6 } = await this.tools.commands();
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
      save(v4.save, 'filter'),
      save(v4.save, 'nat'),
      save(v4.save, 'mangle'),
      save(v4.save, 'raw'),
      save(v6.save, 'filter'),
      save(v6.save, 'nat'),
      save(v6.save, 'mangle'),
      save(v6.save, 'raw'),
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
      ...(this.tools.pendingRetired() ? { leftIn: this.tools.pendingRetired() } : {}),
    };
  }

  /** Writes the chains; `jumps` false leaves the jumps into them as they are (emptying a variant the plugin left). */
  private async apply(tools: FamilyTools, list: Table[], jumps = true): Promise<void> {
    const tool = tools.cli;
    await this.run(tools.restore, ['--noflush', '--wait'], { input: restoreInput(list) });
    if (!jumps) return;
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
