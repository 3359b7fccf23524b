/**
 * Which of the plugin's own iptables rules a packet meets, for `ovsnet trace`: the rules as the kernel holds
 * them (as `iptables -S` prints them), evaluated in order against one packet, without sending it. Only what
 * the plugin writes is understood (interfaces with `+`, addresses, protocol and destination port, conntrack
 * state, device group, comments, and `!` before any of them); a rule with anything else is reported as not
 * evaluated rather than guessed at.
 */
import { prefixHolds } from './cidr.js';

/** A packet as the host's netfilter sees it at one hook. */
export interface NetfilterPacket {
  readonly family: 4 | 6;
  /** Interface it came in by (absent for one the host sends). */
  readonly in?: string;
  /** Interface it leaves by (absent before routing, or when it is for the host). */
  readonly out?: string;
  readonly src: string;
  readonly dst: string;
  readonly protocol: 'tcp' | 'udp' | 'icmp';
  readonly dport?: number;
  /** Its conntrack states: NEW for a first packet; DNAT too once a published port's rule rewrote it. */
  readonly ctstate: readonly string[];
  /** Device group of the interface it came in by (the plugin's veth pairs have their own). */
  readonly inGroup?: number;
}

export interface RuleHit {
  /** Its place in the chain, from 1 (as `iptables -L --line-numbers` counts). */
  readonly number: number;
  readonly rule: string;
  /** ACCEPT, DROP, MASQUERADE, DNAT, ... */
  readonly target: string;
  /** DNAT's --to-destination. */
  readonly toDestination?: string;
  /** Its `--comment` (ovsnet:<network id>, ovsnet:foreign, ovsnet:ports). */
  readonly comment?: string;
}

export interface ChainResult {
  /** The first rule that matches; undefined when none does (the packet goes on past the chain). */
  readonly hit: RuleHit | undefined;
  /** Rules that could not be evaluated (a match the plugin does not write), each with why. */
  readonly unknown: ReadonlyArray<{ readonly number: number; readonly rule: string; readonly why: string }>;
}

/** Splits a rule as `iptables -S` prints it into words, with double quotes removed. */
export function ruleWords(rule: string): string[] {
  const out: string[] = [];
  for (const m of rule.matchAll(/"((?:[^"\\]|\\.)*)"|(\S+)/g)) out.push(m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : m[2]!);
  return out;
}

/** An interface name against `-i`/`-o`'s value, where a trailing `+` matches any name with that start. */
function interfaceMatches(pattern: string, name: string | undefined): boolean {
  if (name === undefined) return false;
  return pattern.endsWith('+') ? name.startsWith(pattern.slice(0, -1)) : name === pattern;
}

/** An address against `-s`/`-d`'s value: an address or a prefix. */
function addressIn(value: string, address: string): boolean {
  return prefixHolds(value.includes('/') ? value : `${value}/${value.includes(':') ? 128 : 32}`, address);
}

function portIn(value: string, port: number | undefined): boolean {
  if (port === undefined) return false;
  const [low, high] = value.split(':').map(Number);
  return port >= low! && port <= (high ?? low)!;
}

/** Whether a rule matches the packet: true, false, or a string saying why it cannot be told. */
export function ruleMatches(rule: string, packet: NetfilterPacket): boolean | string {
  const words = ruleWords(rule);
  let negate = false;
  for (let i = 0; i < words.length; i++) {
    const word = words[i]!;
    if (word === '!') {
      negate = true;
      continue;
    }
    if (word === '-j' || word === '-g') break;
    let result: boolean | undefined;
    const value = words[i + 1];
    switch (word) {
      case '-i':
        result = interfaceMatches(value!, packet.in);
        i++;
        break;
      case '-o':
        result = interfaceMatches(value!, packet.out);
        i++;
        break;
      case '-s':
        result = addressIn(value!, packet.src);
        i++;
        break;
      case '-d':
        result = addressIn(value!, packet.dst);
        i++;
        break;
      case '-p':
        result = value === packet.protocol || (value === 'ipv6-icmp' && packet.protocol === 'icmp' && packet.family === 6);
        i++;
        break;
      case '-m':
        // A module only says which matches follow; `-m tcp` and the like match the protocol already matched.
        i++;
        continue;
      case '--dport':
        result = portIn(value!, packet.dport);
        i++;
        break;
      case '--ctstate':
        result = value!.split(',').some((s) => packet.ctstate.includes(s));
        i++;
        break;
      case '--src-group':
        result = packet.inGroup !== undefined && Number(value) === packet.inGroup;
        i++;
        break;
      case '--comment':
        i++;
        continue;
      default:
        return `it matches on ${word}, which ovsnet trace does not evaluate`;
    }
    if (result === negate) return false;
    negate = false;
  }
  return true;
}

function hitOf(number: number, rule: string): RuleHit {
  const words = ruleWords(rule);
  const after = (flag: string) => {
    const at = words.indexOf(flag);
    return at >= 0 ? words[at + 1] : undefined;
  };
  const toDestination = after('--to-destination');
  const comment = after('--comment');
  return { number, rule, target: after('-j') ?? after('-g') ?? '', ...(toDestination ? { toDestination } : {}), ...(comment ? { comment } : {}) };
}

/** The first rule of a chain that matches the packet. */
export function evaluateChain(rules: readonly string[], packet: NetfilterPacket): ChainResult {
  const unknown: Array<{ number: number; rule: string; why: string }> = [];
  for (const [at, rule] of rules.entries()) {
    const matched = ruleMatches(rule, packet);
    if (typeof matched === 'string') unknown.push({ number: at + 1, rule, why: matched });
    else if (matched) return { hit: hitOf(at + 1, rule), unknown };
  }
  return { hit: undefined, unknown };
}
