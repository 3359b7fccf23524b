/**
 * OVN's account of a packet, for `ovsnet trace`: the microflow ovn-trace takes, and what its detailed
 * output says (the datapaths it crosses, the stage that drops it, the ports it is output to, SNAT, the
 * gateway port), to be named after containers and hosts by the caller.
 */
import type { Probe } from './trace-ofproto.js';

/** ovn-trace's microflow for a probe entering by a logical port. */
export function ovnMicroflow(inport: string, p: Probe): string {
  const ip = p.family === 4 ? 'ip4' : 'ip6';
  const terms = [`inport == "${inport}"`, `eth.src == ${p.srcMac}`, `eth.dst == ${p.dstMac}`, `${ip}.src == ${p.src}`, `${ip}.dst == ${p.dst}`, 'ip.ttl == 64'];
  if (p.protocol === 'icmp') terms.push(`${p.family === 4 ? 'icmp4' : 'icmp6'}.type == ${p.icmpType ?? (p.family === 4 ? 8 : 128)}`, `${p.family === 4 ? 'icmp4' : 'icmp6'}.code == 0`);
  else terms.push(`${p.protocol}.dst == ${p.dport ?? 0}`);
  return terms.join(' && ');
}

export interface OvnHop {
  readonly direction: 'ingress' | 'egress';
  readonly datapath: string;
  readonly inport: string;
  readonly outport?: string;
}

export interface OvnTrace {
  /** Each pipeline it goes through, in order. */
  readonly hops: readonly OvnHop[];
  /** Ports it is output to, with their types ("" for a VIF, "patch", "localnet", ...). */
  readonly outputs: ReadonlyArray<{ readonly port: string; readonly type: string }>;
  /** The stage whose flow dropped it. */
  readonly drop?: { readonly datapath: string; readonly direction: 'ingress' | 'egress'; readonly stage: string; readonly match: string };
  /** The address SNAT gives it. */
  readonly snat?: string;
  /** The gateway (chassisredirect) port it goes out through: the active gateway chassis' port. */
  readonly gatewayPort?: string;
  /** Said instead of forwarding: the router does not know the next hop's MAC yet and sends an ARP request. */
  readonly resolving: boolean;
  /** What ovn-trace said instead of a trace (an unknown datapath, a flow it cannot parse). */
  readonly error?: string;
}

const HOP = /^\s*(ingress|egress)\(dp="([^"]+)", inport="([^"]+)"(?:, outport="([^"]+)")?\)$/;
const STAGE = /^\s*\d+\. (\S+) \([^)]*\): (.*), priority \d+, uuid [0-9a-f]+$/;

export function parseOvnTrace(text: string): OvnTrace {
  const hops: OvnHop[] = [];
  const outputs: Array<{ port: string; type: string }> = [];
  let drop: OvnTrace['drop'];
  let snat: string | undefined;
  let gatewayPort: string | undefined;
  let resolving = false;
  let stage: { name: string; match: string } | undefined;
  const lines = text.split('\n');
  const error = lines.find((l) => /^(unknown datapath|error parsing flow|ovn-trace:)/.test(l.trim()));
  for (const line of lines) {
    const hop = HOP.exec(line);
    if (hop) {
      hops.push({ direction: hop[1] as 'ingress' | 'egress', datapath: hop[2]!, inport: hop[3]!, ...(hop[4] ? { outport: hop[4] } : {}) });
      continue;
    }
    const s = STAGE.exec(line);
    if (s) {
      stage = { name: s[1]!, match: s[2]! };
      continue;
    }
    const text = line.trim();
    if (text === 'drop;' && stage && hops.length > 0 && !drop) {
      const at = hops.at(-1)!;
      drop = { datapath: at.datapath, direction: at.direction, stage: stage.name, match: stage.match };
    }
    const out = /^\/\* output to "([^"]+)", type "([^"]*)" \*\//.exec(text);
    if (out) outputs.push({ port: out[1]!, type: out[2]! });
    const nat = /^ct_snat(?:_in_czone)?\(([^)]+)\);/.exec(text);
    if (nat) snat = nat[1];
    const redirect = /^\/\* Replacing type "chassisredirect" outport "([^"]+)"/.exec(text);
    if (redirect) gatewayPort = redirect[1];
    if (/^arp \{?$/.test(text) || /No MAC binding/.test(text)) resolving = true;
  }
  return { hops, outputs, ...(drop ? { drop } : {}), ...(snat ? { snat } : {}), ...(gatewayPort ? { gatewayPort } : {}), resolving, ...(error && hops.length === 0 ? { error: error.trim() } : {}) };
}

/** What an OVN stage that drops a packet is there for, in words. */
export function stageSays(stage: string): string {
  if (/port_sec/.test(stage)) return "OVN's port security: the logical port sends only from its own MAC and addresses";
  if (/_acl/.test(stage)) return 'an ACL of the switch (the guard ACLs: router advertisements, redirects, DHCP servers; or an --internal policy)';
  if (/ip_routing/.test(stage)) return 'the router has no route for it';
  if (/policy/.test(stage)) return "a policy of the router (networks on one router reach each other only when both are routed; --internal networks nothing outside)";
  if (/admission/.test(stage)) return 'the router does not take it (not addressed to its MAC)';
  return 'a flow of that stage drops it';
}
