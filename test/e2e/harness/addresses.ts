/**
 * Test addresses must never shadow the machine's own network: a namespace or
 * a test network holding an address the machine routes (its uplink's subnet,
 * its default gateway) could take the machine off the network, or make a test
 * pass for the wrong reason. Every address the harness gives out, and every
 * subnet a test network is made with, is checked against the machine's own
 * routes first; the run refuses to go on otherwise.
 */
import { type Cidr, overlaps, parseCidrWithHost, parseIp } from '../../../src/domain/cidr.js';
import { cmd } from './proc.js';

let routed: Promise<Array<{ cidr: Cidr; text: string }>> | undefined;

/** What the machine (the namespace the tests run in) routes, in every table: never the test's. */
function machineRoutes(): Promise<Array<{ cidr: Cidr; text: string }>> {
  routed ??= (async () => {
    const out: Array<{ cidr: Cidr; text: string }> = [];
    for (const family of ['-4', '-6']) {
      const { stdout } = await cmd('ip', [family, '-j', 'route', 'show', 'table', 'all']);
      for (const r of JSON.parse(stdout || '[]') as Array<{ dst?: string; dev?: string; type?: string }>) {
        if (!r.dst || r.dst === 'default' || r.dev === 'lo') continue;
        const text = r.dst.includes('/') ? r.dst : `${r.dst}/${family === '-4' ? 32 : 128}`;
        const cidr = cidrOf(text);
        // Link-local and multicast ranges are every interface's; they are no test's to take.
        if (!cidr || /^(fe80:|ff[0-9a-f]{2}:)/.test(text) || r.type === 'multicast' || r.type === 'broadcast') continue;
        out.push({ cidr, text: `${text} (dev ${r.dev ?? '?'}${r.type ? `, ${r.type}` : ''})` });
      }
    }
    return out;
  })();
  return routed;
}

/** Refuses (throws) when any of these addresses or subnets overlaps a route of the machine's own. */
export async function assertUnrouted(addresses: readonly string[], what: string): Promise<void> {
  const routes = await machineRoutes();
  for (const text of addresses) {
    const cidr = cidrOf(text);
    if (!cidr) continue;
    const hit = routes.find((r) => overlaps(r.cidr, cidr));
    if (hit) {
      throw new Error(
        `the test would put ${text} (${what}) where this machine routes ${hit.text}: test addresses must come from ranges the machine does not route, or the test could shadow its network; pick another range`,
      );
    }
  }
}

/** A subnet, an address with its prefix, or a bare address (its own /32 or /128). */
function cidrOf(text: string): Cidr | undefined {
  const bare = parseIp(text);
  if (bare) return { family: bare.family, network: bare.value, prefix: bare.family === 4 ? 32 : 128 };
  return parseCidrWithHost(text)?.cidr;
}
