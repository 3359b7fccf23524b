/**
 * OVSDB server addresses as settings give them: `unix:<path>`,
 * `tcp:<host>:<port>` or `ssl:<host>:<port>` (IPv6 hosts in brackets), and
 * lists of them for the members of a clustered database.
 */
export type OvsdbRemote = { readonly path: string } | { readonly host: string; readonly port: number; readonly tls?: boolean };

export const OVSDB_REMOTE_RULE = 'use unix:<path>, tcp:<host>:<port> or ssl:<host>:<port>';

export function parseOvsdbRemote(text: string): OvsdbRemote | undefined {
  if (text.startsWith('unix:') && text.length > 5) return { path: text.slice(5) };
  const inet = /^(tcp|ssl):(.+):(\d{1,5})$/.exec(text);
  if (inet && Number(inet[3]) > 0 && Number(inet[3]) < 65536) {
    const host = inet[2]!.replace(/^\[|\]$/g, '');
    return inet[1] === 'ssl' ? { host, port: Number(inet[3]), tls: true } : { host, port: Number(inet[3]) };
  }
  return undefined;
}

/** Whether any of the remotes is reached over TLS. */
export function needsTls(remotes: readonly OvsdbRemote[]): boolean {
  return remotes.some((r) => 'tls' in r && r.tls === true);
}

/** Comma-separated remotes (the members of a Raft cluster); undefined when any item is not a remote. */
export function parseOvsdbRemotes(text: string): OvsdbRemote[] | undefined {
  const items = text.split(',').map((s) => s.trim()).filter((s) => s !== '');
  const remotes = items.map(parseOvsdbRemote);
  return items.length > 0 && remotes.every((r) => r !== undefined) ? (remotes as OvsdbRemote[]) : undefined;
}

export function formatOvsdbRemote(remote: OvsdbRemote): string {
  return 'path' in remote ? `unix:${remote.path}` : `${remote.tls ? 'ssl' : 'tcp'}:${remote.host.includes(':') ? `[${remote.host}]` : remote.host}:${remote.port}`;
}
