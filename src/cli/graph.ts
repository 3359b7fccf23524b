/**
 * `ovsnet graph`: this host's networks as the plugin holds them, as a picture. Bridges hold networks (by kind:
 * a VLAN, untagged, an overlay, an OVN switch); a network has its containers (name, addresses, OVS port), its
 * gateway port, its uplink, its tunnels to peers, or (OVN) its router and the other hosts on its switch. The
 * same topology comes out as JSON (for scripts), DOT, or SVG laid out by Graphviz's `dot`.
 */
import { spawn } from 'node:child_process';
import { CliError, type PluginState } from './client.js';
import { type EndpointRow, type NetworkRow, endpointRows, networkRows } from './status.js';

export interface Topology {
  host: string;
  bridges: Array<{ name: string; networks: string[] }>;
  networks: Array<NetworkRow & { gatewayPort: string | null; router: string | null }>;
  containers: Array<EndpointRow & { networkId: string }>;
  /** OVN: the addresses other hosts hold on this host's switches (their containers), as the northbound database lists them. */
  remote: Array<{ networkId: string; port: string; address: string; host: string }>;
  /** OVN: each router's gateway chassis, highest priority first, and the one active now. */
  gateways: Record<string, { chassis: Array<{ chassis: string; priority: number }>; active: { chassis: string; hostname: string } | null }>;
}

export function topology(state: PluginState, names: { networks: Map<string, string>; containers: Map<string, { name: string; id: string }> }, host: string): Topology {
  const rows = networkRows(state, names.networks);
  const networks = rows.map((row) => {
    const record = state.networks.find((n) => n.id === row.id)!;
    return { ...row, gatewayPort: record.gatewayPort ?? null, router: record.spec.mode === 'ovn' ? (record.spec.ovnRouter ?? null) : null };
  });
  const bridges = [...new Set(networks.map((n) => n.bridge))].sort().map((name) => ({ name, networks: networks.filter((n) => n.bridge === name).map((n) => n.id) }));
  const containers = endpointRows(state, names).map((row) => ({ ...row, networkId: state.endpoints.find((e) => e.id === row.endpointId)!.networkId }));
  // This host's own logical ports are its containers, drawn already.
  const local = new Set(state.endpoints.map((e) => `${e.networkId}|${e.address.split('/')[0] || e.addressIpv6.split('/')[0]}`));
  const remote = Object.entries(state.ovn?.ports ?? {}).flatMap(([networkId, ports]) => ports.filter((p) => !local.has(`${networkId}|${p.address.split(' ')[0]}`)).map((p) => ({ networkId, ...p })));
  const gateways = Object.fromEntries(Object.entries(state.ovn?.gateways ?? {}).map(([router, g]) => [router, { chassis: g.chassis.map((c) => ({ ...c })), active: g.active }]));
  return { host, bridges, networks, containers, remote, gateways };
}

/** A DOT string: quoted, with quotes and backslashes escaped; `\n` in labels stays a line break. */
function q(text: string): string {
  return `"${text.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`;
}

const KIND_COLOUR: Record<string, string> = { vlan: '#dbeafe', vxlan: '#fef3c7', gre: '#fef3c7', ovn: '#ede9fe' };

export function toDot(t: Topology): string {
  const out: string[] = [];
  // A node shared by networks (an uplink, a peer, a router, a host) is declared once.
  const declared = new Set<string>();
  const declaredEdges = new Set<string>();
  const node = (id: string, label: string, attrs: Record<string, string> = {}) => {
    if (declared.has(id)) return;
    declared.add(id);
    out.push(`    ${q(id)} [label=${q(label)}${Object.entries(attrs).map(([k, v]) => `, ${k}=${q(v)}`).join('')}];`);
  };
  const edge = (a: string, b: string, attrs: Record<string, string> = {}) =>
    out.push(`  ${q(a)} -- ${q(b)}${Object.keys(attrs).length ? ` [${Object.entries(attrs).map(([k, v]) => `${k}=${q(v)}`).join(', ')}]` : ''};`);
  out.push('graph ovsnet {');
  out.push(`  graph [rankdir=LR, fontname="Helvetica", fontsize=12, labelloc=t, label=${q(`ovsnet on ${t.host}`)}];`);
  out.push('  node [fontname="Helvetica", fontsize=10, shape=box, style="rounded,filled", fillcolor="#ffffff"];');
  out.push('  edge [fontname="Helvetica", fontsize=9];');
  for (const bridge of t.bridges) {
    out.push(`  subgraph ${q(`cluster_${bridge.name}`)} {`);
    out.push(`    label=${q(`bridge ${bridge.name}`)}; style="rounded"; color="#94a3b8";`);
    for (const id of bridge.networks) {
      const n = t.networks.find((x) => x.id === id)!;
      const kind = n.mode === 'vlan' && n.segment === 'untagged' ? 'untagged' : n.mode;
      node(`net:${n.id}`, [`${n.name || n.id.slice(0, 12)}`, `${kind === 'ovn' ? 'OVN ' : ''}${n.segment}`, ...n.subnets.map((s) => s.subnet), `gateway ${n.gatewayMode}`].join('\n'), { fillcolor: KIND_COLOUR[n.mode] ?? '#f1f5f9' });
      for (const c of t.containers.filter((x) => x.networkId === n.id)) {
        node(`ep:${c.endpointId}`, [c.container || c.endpointId.slice(0, 12), ...[c.address, c.addressIpv6].filter(Boolean), `port ${c.port}`].join('\n'), { fillcolor: '#dcfce7' });
      }
      if (n.gatewayPort) {
        node(`gw:${n.id}`, [`gateway port ${n.gatewayPort}`, ...n.subnets.map((s) => s.gateway).filter((g): g is string => !!g)].join('\n'), { shape: 'ellipse', fillcolor: '#fee2e2' });
      }
    }
    out.push('  }');
  }
  for (const n of t.networks) {
    for (const c of t.containers.filter((x) => x.networkId === n.id)) edge(`net:${n.id}`, `ep:${c.endpointId}`, c.tag === null ? {} : { label: `tag ${c.tag}` });
    if (n.gatewayPort) edge(`net:${n.id}`, `gw:${n.id}`);
    if (n.uplink) {
      node(`uplink:${n.uplink}`, `uplink ${n.uplink}`, { shape: 'cds', fillcolor: '#e2e8f0' });
      edge(`net:${n.id}`, `uplink:${n.uplink}`, n.segment === 'untagged' ? {} : { label: n.segment });
    }
    for (const peer of n.peers) {
      node(`peer:${peer}`, `peer ${peer}`, { shape: 'doubleoctagon', fillcolor: '#fef9c3' });
      edge(`net:${n.id}`, `peer:${peer}`, { label: `${n.mode} tunnel`, style: 'dashed' });
    }
    if (n.router) {
      node(`router:${n.router}`, `OVN router ${n.router}`, { shape: 'hexagon', fillcolor: '#fae8ff' });
      edge(`net:${n.id}`, `router:${n.router}`);
    }
    if (n.router) {
      const g = t.gateways[n.router];
      for (const c of g?.chassis ?? []) {
        const active = g!.active?.chassis === c.chassis;
        node(`chassis:${c.chassis}`, [`gateway chassis ${c.chassis}`, `priority ${c.priority}`, active ? `active (host ${g!.active!.hostname})` : 'standby'].join('\n'), { shape: 'component', fillcolor: active ? '#bbf7d0' : '#f1f5f9' });
        if (!declaredEdges.has(`${n.router}|${c.chassis}`)) {
          declaredEdges.add(`${n.router}|${c.chassis}`);
          edge(`router:${n.router}`, `chassis:${c.chassis}`, { label: active ? 'way out (active)' : 'standby', style: active ? 'bold' : 'dashed' });
        }
      }
    }
    // Containers of other hosts on the switch, under their host.
    for (const r of t.remote.filter((x) => x.networkId === n.id)) {
      node(`host:${r.host}`, `host ${r.host}${r.host === t.host ? ' (this one)' : ''}`, { shape: 'box3d', fillcolor: '#f8fafc' });
      node(`lp:${r.port}`, [r.address, `logical port ${r.port}`, `on host ${r.host}`].join('\n'), { fillcolor: '#e0f2fe' });
      edge(`host:${r.host}`, `lp:${r.port}`);
    }
    // Every host with a network on the switch (this one among them), as the northbound database lists them.
    for (const other of n.hosts ?? []) {
      node(`host:${other}`, `host ${other}${other === t.host ? ' (this one)' : ''}`, { shape: 'box3d', fillcolor: '#f8fafc' });
      edge(`net:${n.id}`, `host:${other}`, { label: 'on the switch', style: 'dotted' });
    }
  }
  out.push('}');
  return out.join('\n') + '\n';
}

/** The SVG Graphviz's `dot` lays out for a DOT graph. */
export function toSvg(dot: string, command = 'dot'): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, ['-Tsvg'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => (stdout += c));
    child.stderr.on('data', (c) => (stderr += c));
    child.on('error', (err: NodeJS.ErrnoException) =>
      reject(err.code === 'ENOENT' ? new CliError("ovsnet graph draws SVG with Graphviz's dot, which is not installed (apt-get install graphviz); --format dot or json need nothing") : err),
    );
    child.on('close', (code) => (code === 0 ? resolve(stdout) : reject(new CliError(`dot failed (exit ${code}): ${stderr.trim()}`))));
    child.stdin.end(dot);
  });
}
