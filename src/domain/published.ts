/**
 * Published ports (`docker run -p`, `-P`): what Docker asks for in the
 * portmap of ProgramExternalConnectivity, and which host port each gets. A
 * request names a protocol, a container port, a host address (or none: every
 * address) and a host port, a range of them, or none (any free one).
 */
import { badRequest, conflict } from '../errors.js';
import { formatIp, parseIp } from './cidr.js';

export const PROTOCOLS = { 6: 'tcp', 17: 'udp', 132: 'sctp' } as const;
export type PortProto = (typeof PROTOCOLS)[keyof typeof PROTOCOLS];

export interface PortRequest {
  readonly proto: PortProto;
  /** Canonical host address; "" for every address of the host. "0.0.0.0" and "::" mean every address of one family. */
  readonly hostIp: string;
  /** 0: any free port. */
  readonly hostPort: number;
  readonly hostPortEnd: number;
  readonly port: number;
}

/** A request with the host port it got. */
export interface PublishedPort {
  readonly proto: PortProto;
  readonly hostIp: string;
  readonly hostPort: number;
  readonly port: number;
}

/** Something that holds a host port already: a port this plugin published, Docker's, a listening program. */
export interface PortHolder {
  readonly proto: PortProto;
  /** "" or a wildcard for every address. */
  readonly address: string;
  readonly port: number;
  readonly holder: string;
}

function portNumber(value: unknown, what: string, i: number, allowZero: boolean): number {
  if ((value === undefined || value === null) && allowZero) return 0;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < (allowZero ? 0 : 1) || value > 65535) {
    throw badRequest('InvalidRequest', `invalid request: portmap[${i}].${what} must be a port number (${allowZero ? 0 : 1}-65535), got ${JSON.stringify(value)}`);
  }
  return value;
}

/** The portmap of a Join or ProgramExternalConnectivity request, checked and canonical. */
export function parsePortmap(list: readonly unknown[]): PortRequest[] {
  return list.map((raw, i) => {
    if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw badRequest('InvalidRequest', `invalid request: portmap[${i}] must be an object`);
    const entry = raw as Record<string, unknown>;
    const protoNumber = entry.Proto;
    const proto = PROTOCOLS[protoNumber as keyof typeof PROTOCOLS];
    if (!proto) throw badRequest('InvalidRequest', `invalid request: portmap[${i}].Proto ${JSON.stringify(protoNumber)} is not a protocol ports can be published for (6 tcp, 17 udp, 132 sctp)`);
    const port = portNumber(entry.Port, 'Port', i, false);
    const hostPort = portNumber(entry.HostPort, 'HostPort', i, true);
    let hostPortEnd = portNumber(entry.HostPortEnd, 'HostPortEnd', i, true);
    if (hostPortEnd === 0) hostPortEnd = hostPort;
    if (hostPort === 0 && hostPortEnd !== 0) throw badRequest('InvalidRequest', `invalid request: portmap[${i}] has HostPortEnd ${hostPortEnd} without HostPort`);
    if (hostPortEnd < hostPort) throw badRequest('InvalidPort', `invalid host port range ${hostPort}-${hostPortEnd} for ${port}/${proto}: the end is below the start`);
    const rawIp = entry.HostIP;
    let hostIp = '';
    if (rawIp !== undefined && rawIp !== null && rawIp !== '') {
      const ip = typeof rawIp === 'string' ? parseIp(rawIp) : undefined;
      if (!ip) throw badRequest('InvalidRequest', `invalid request: portmap[${i}].HostIP ${JSON.stringify(rawIp)} is not an IP address`);
      hostIp = formatIp(ip);
    }
    return { proto, hostIp, hostPort, hostPortEnd, port };
  });
}

export const isWildcard = (address: string) => address === '' || address === '0.0.0.0' || address === '::';

/** The address families a host address covers: "" both, "0.0.0.0" and IPv4 addresses 4, "::" and IPv6 ones 6. */
export function families(address: string): Array<4 | 6> {
  if (address === '') return [4, 6];
  return address.includes(':') ? [6] : [4];
}

function overlaps(a: string, b: string): boolean {
  if (!families(a).some((f) => families(b).includes(f))) return false;
  return isWildcard(a) || isWildcard(b) || a === b;
}

/** "0.0.0.0:8080->80/tcp", as Docker shows its own. */
export function describePort(p: PublishedPort): string {
  const host = p.hostIp === '' ? '*' : p.hostIp.includes(':') ? `[${p.hostIp}]` : p.hostIp;
  return `${host}:${p.hostPort}->${p.port}/${p.proto}`;
}

/**
 * A host port for every request: the one asked for, the first free one of a
 * range, or the first free one of `ephemeral` (the kernel's local port range,
 * as Docker's own allocator uses). Ports given to earlier requests of the same
 * call count as taken. A port that is taken is refused, naming who holds it.
 */
export function allocatePorts(requests: readonly PortRequest[], taken: readonly PortHolder[], ephemeral: readonly [number, number]): PublishedPort[] {
  const held = [...taken];
  const out: PublishedPort[] = [];
  const holderOf = (r: PortRequest, port: number) => held.find((h) => h.proto === r.proto && h.port === port && overlaps(h.address, r.hostIp));
  for (const r of requests) {
    const [first, last] = r.hostPort === 0 ? ephemeral : [r.hostPort, r.hostPortEnd];
    let chosen: number | undefined;
    for (let port = first; port <= last; port++) {
      if (!holderOf(r, port)) {
        chosen = port;
        break;
      }
    }
    if (chosen === undefined) {
      const where = r.hostIp === '' ? '' : ` on ${r.hostIp}`;
      if (first === last) {
        throw conflict('PortInUse', `host port ${first}/${r.proto}${where} is already in use: ${holderOf(r, first)!.holder}; publish on another host port, or leave the host port out (-p ${r.port}) for a free one`);
      }
      throw conflict('PortInUse', `no free host port for ${r.port}/${r.proto}${where} in ${first}-${last}: every one is in use (for example ${first}: ${holderOf(r, first)!.holder})`);
    }
    const published = { proto: r.proto, hostIp: r.hostIp, hostPort: chosen, port: r.port };
    out.push(published);
    held.push({ proto: r.proto, address: r.hostIp, port: chosen, holder: `another port of the same container (${describePort(published)})` });
  }
  return out;
}

/** Listening sockets from /proc/net/{tcp,tcp6,udp,udp6}: address and port of each (TCP in LISTEN, UDP bound). */
export function parseProcNet(text: string, proto: 'tcp' | 'udp', v6: boolean): Array<{ address: string; port: number }> {
  const out: Array<{ address: string; port: number }> = [];
  for (const line of text.split('\n').slice(1)) {
    const cols = line.trim().split(/\s+/);
    if (cols.length < 4) continue;
    const [addrHex, portHex] = cols[1]!.split(':');
    if (!addrHex || !portHex) continue;
    if (proto === 'tcp' && cols[3] !== '0A') continue;
    out.push({ address: procAddress(addrHex, v6), port: parseInt(portHex, 16) });
  }
  return out;
}

/** /proc/net's addresses are 32-bit words in host (little-endian) order. */
function procAddress(hex: string, v6: boolean): string {
  const bytes: number[] = [];
  for (let w = 0; w < hex.length; w += 8) {
    const word = hex.slice(w, w + 8);
    for (let b = 6; b >= 0; b -= 2) bytes.push(parseInt(word.slice(b, b + 2), 16));
  }
  if (!v6) return bytes.join('.');
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
  const ip = parseIp(groups.join(':'));
  return ip ? formatIp(ip) : groups.join(':');
}

/**
 * Ports Docker's own bridge publishes: DNAT rules of iptables' DOCKER chain in the nat table (`iptables -t nat -S
 * DOCKER`, or ip6tables' for `family` 6). A rule without a destination holds the port on every address of its family.
 */
export function parseDockerDnat(text: string, family: 4 | 6 = 4): Array<{ proto: PortProto; address: string; port: number }> {
  const out: Array<{ proto: PortProto; address: string; port: number }> = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('-A DOCKER ') || !line.includes('-j DNAT')) continue;
    const proto = /-p (tcp|udp|sctp)\b/.exec(line)?.[1] as PortProto | undefined;
    const port = /--dport (\d+)/.exec(line)?.[1];
    if (!proto || !port) continue;
    const dest = /(?:^|\s)-d ([0-9a-fA-F.:]+)(?:\/\d+)?/.exec(line)?.[1];
    out.push({ proto, address: dest ?? (family === 4 ? '0.0.0.0' : '::'), port: Number(port) });
  }
  return out;
}

/**
 * Ports Docker's own bridge publishes under its nftables firewall (Docker 29, `--firewall-backend=nftables`):
 * the DNAT rules of its `docker-bridges` tables, as `nft -j list table ip docker-bridges` (and `ip6`) print them.
 * A rule without a destination address holds the port on every address of its family.
 */
export function parseNftDockerDnat(json: string): Array<{ proto: PortProto; address: string; port: number }> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch {
    return [];
  }
  const items = (parsed as { nftables?: unknown })?.nftables;
  if (!Array.isArray(items)) return [];
  const out: Array<{ proto: PortProto; address: string; port: number }> = [];
  for (const item of items) {
    const rule = (item as { rule?: { family?: string; expr?: unknown } }).rule;
    if (!rule || !Array.isArray(rule.expr) || !rule.expr.some((e) => e && typeof e === 'object' && 'dnat' in e)) continue;
    let proto: PortProto | undefined;
    let address = rule.family === 'ip6' ? '::' : '0.0.0.0';
    const ports: number[] = [];
    for (const e of rule.expr as Array<Record<string, any>>) {
      const match = e?.match;
      if (!match || match.op !== '==') continue;
      const payload = match.left?.payload;
      if (!payload) continue;
      if (payload.field === 'dport' && (payload.protocol === 'tcp' || payload.protocol === 'udp' || payload.protocol === 'sctp')) {
        proto = payload.protocol;
        const right = match.right;
        if (typeof right === 'number') ports.push(right);
        else if (Array.isArray(right?.range) && right.range.length === 2) {
          const [lo, hi] = right.range.map(Number);
          for (let p = lo; p >= 1 && p <= hi && p <= 65535; p++) ports.push(p);
        } else if (Array.isArray(right?.set)) ports.push(...right.set.filter((v: unknown): v is number => typeof v === 'number'));
      } else if (payload.field === 'daddr' && typeof match.right === 'string') {
        address = match.right;
      }
    }
    if (!proto) continue;
    for (const port of ports) out.push({ proto, address, port });
  }
  return out;
}
