/**
 * Open vSwitch's own account of a packet, for `ovsnet trace`: the microflow `ovs-appctl ofproto/trace` is
 * given, and what its output says (each table's flow and its cookie, what normal switching did, the datapath
 * actions), with datapath port numbers named after the ports `ovs-appctl dpif/show` lists.
 */

/** A packet as the trace builds it. */
export interface Probe {
  readonly family: 4 | 6;
  readonly protocol: 'tcp' | 'udp' | 'icmp';
  readonly srcMac: string;
  readonly dstMac: string;
  readonly src: string;
  readonly dst: string;
  /** TCP or UDP destination port. */
  readonly dport?: number;
  /** ICMP or ICMPv6 type (echo request when not given). */
  readonly icmpType?: number;
  /** A VLAN tag on the frame as the container sends it. */
  readonly vlan?: number;
}

/** The microflow `ofproto/trace` takes for a probe entering by OpenFlow port `inPort`. */
export function ofprotoFlow(inPort: number, p: Probe): string {
  const kind = p.protocol === 'icmp' ? (p.family === 4 ? 'icmp' : 'icmp6') : p.family === 4 ? p.protocol : `${p.protocol}6`;
  const fields = [kind, `in_port=${inPort}`];
  if (p.vlan !== undefined) fields.push(`dl_vlan=${p.vlan}`);
  fields.push(`dl_src=${p.srcMac}`, `dl_dst=${p.dstMac}`);
  fields.push(p.family === 4 ? `nw_src=${p.src}` : `ipv6_src=${p.src}`, p.family === 4 ? `nw_dst=${p.dst}` : `ipv6_dst=${p.dst}`, 'nw_ttl=64');
  if (p.protocol === 'icmp') fields.push(`${p.family === 4 ? 'icmp' : 'icmpv6'}_type=${p.icmpType ?? (p.family === 4 ? 8 : 128)}`, `${p.family === 4 ? 'icmp' : 'icmpv6'}_code=0`);
  else fields.push(`${p.protocol}_src=40000`, `${p.protocol}_dst=${p.dport ?? 0}`);
  return fields.join(',');
}

/** One table's step in `ofproto/trace` output. */
export interface OfStep {
  readonly bridge: string;
  readonly table: number;
  /** The flow's match as ovs-vswitchd prints it. */
  readonly match: string;
  readonly priority: number;
  /** Its cookie ("0x..."); undefined for cookie 0, which ovs-vswitchd does not print. */
  readonly cookie: string | undefined;
  /** The lines under it: its actions and what they did ("-> forwarding to learned port"). */
  readonly actions: readonly string[];
}

export interface OfTrace {
  readonly steps: readonly OfStep[];
  /** What normal switching said ("no learned MAC for destination, flooding", "forwarding to learned port"). */
  readonly forwarding: readonly string[];
  /** The final datapath actions, as printed ("drop", "push_vlan(vid=77,pcp=0),1,2"). */
  readonly datapathActions: string;
}

const STEP = /^\s*(\d+)\. (.*?), priority (\d+)(?:, cookie (0x[0-9a-f]+))?$/;

export function parseOfprotoTrace(text: string): OfTrace {
  const steps: Array<OfStep & { actions: string[] }> = [];
  const forwarding: string[] = [];
  let bridge = '';
  let datapathActions = '';
  for (const line of text.split('\n')) {
    const b = /^bridge\("([^"]+)"\)$/.exec(line.trim());
    if (b) {
      bridge = b[1]!;
      continue;
    }
    const step = STEP.exec(line);
    if (step) {
      steps.push({ bridge, table: Number(step[1]), match: step[2]!, priority: Number(step[3]), cookie: step[4], actions: [] });
      continue;
    }
    const actions = /^Datapath actions: (.*)$/.exec(line);
    if (actions) {
      datapathActions = actions[1]!.trim();
      continue;
    }
    const note = /^\s+(?:->|>>) (.*)$/.exec(line);
    if (note) forwarding.push(note[1]!.trim());
    if (/^\s{4}\S/.test(line) && steps.length > 0 && !/^(Final flow|Megaflow)/.test(line.trim())) steps.at(-1)!.actions.push(line.trim());
  }
  return { steps, forwarding, datapathActions };
}

/** `ovs-appctl dpif/show`: every bridge's ports by datapath port number. */
export function parseDpifShow(text: string): Map<number, { bridge: string; port: string; ofport: number | undefined }> {
  const out = new Map<number, { bridge: string; port: string; ofport: number | undefined }>();
  let bridge = '';
  for (const line of text.split('\n')) {
    const b = /^ {2}(\S+):$/.exec(line);
    if (b) {
      bridge = b[1]!;
      continue;
    }
    const p = /^ {4}(\S+) (\d+|none)\/(\d+|none):/.exec(line);
    if (p && p[3] !== 'none') out.set(Number(p[3]), { bridge, port: p[1]!, ofport: p[2] === 'none' ? undefined : Number(p[2]) });
  }
  return out;
}

/** Where the datapath sends the packet: one port, with the VLAN tag it carries there, or into a tunnel. */
export interface DatapathOutput {
  readonly dpPort: number;
  /** The port's name; undefined when dpif/show did not list it. */
  readonly port: string | undefined;
  readonly vlan?: number;
  /** For a tunnel: the remote end's address. */
  readonly remote?: string;
}

/** Splits datapath actions at their top-level commas. */
function topLevel(actions: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < actions.length; i++) {
    const c = actions[i];
    if (c === '(') depth++;
    else if (c === ')') depth--;
    else if (c === ',' && depth === 0) {
      out.push(actions.slice(start, i).trim());
      start = i + 1;
    }
  }
  if (actions.slice(start).trim()) out.push(actions.slice(start).trim());
  return out;
}

/**
 * The outputs of datapath actions, in order. Recirculation and connection tracking (OVN's pipeline) leave the
 * rest to a later pass that `ofproto/trace` does not follow without connection state: `continues` says so.
 */
export function datapathOutputs(actions: string, ports: ReadonlyMap<number, { port: string }>): { drop: boolean; outputs: DatapathOutput[]; continues: boolean } {
  const outputs: DatapathOutput[] = [];
  let vlan: number | undefined;
  let continues = false;
  /** The kernel datapath sets a tunnel's remote end, then outputs to the tunnel's port. */
  let remote: string | undefined;
  for (const action of topLevel(actions)) {
    if (/^\d+$/.test(action)) {
      const dpPort = Number(action);
      outputs.push({ dpPort, port: ports.get(dpPort)?.port, ...(vlan === undefined ? {} : { vlan }), ...(remote === undefined ? {} : { remote }) });
      remote = undefined;
    } else if (action.startsWith('push_vlan(')) {
      vlan = Number(/vid=(\d+)/.exec(action)?.[1]);
    } else if (action === 'pop_vlan') {
      vlan = undefined;
    } else if (action.startsWith('tnl_push(')) {
      const dpPort = Number(/tnl_port\((\d+)\)/.exec(action)?.[1]);
      const to = /ipv[46]\(src=[^,]+,dst=([^,)]+)/.exec(action)?.[1];
      outputs.push({ dpPort, port: ports.get(dpPort)?.port, ...(to ? { remote: to } : {}) });
    } else if (action.startsWith('set(tunnel(')) {
      remote = /dst=([^,)]+)/.exec(action)?.[1];
    } else if (action.startsWith('recirc(') || action.startsWith('ct(')) {
      continues = true;
    }
  }
  return { drop: outputs.length === 0 && !continues, outputs, continues };
}
