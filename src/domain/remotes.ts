/**
 * OVSDB server addresses as settings give them: `unix:<path>` or
 * `tcp:<host>:<port>` (IPv6 hosts in brackets), and lists of them for the
 * members of a clustered database.
 */
export type OvsdbRemote = { readonly path: string } | { readonly host: string; readonly port: number };

export const OVSDB_REMOTE_RULE = 'use unix:<path> or tcp:<host>:<port>';

export function parseOvsdbRemote(text: string): OvsdbRemote | undefined {
  if (text.startsWith('unix:') && text.length > 5) return { path: text.slice(5) };
  const tcp = /^tcp:(.+):(\d{1,5})$/.exec(text);
  if (tcp && Number(tcp[2]) > 0 && Number(tcp[2]) < 65536) return { host: tcp[1]!.replace(/^\[|\]$/g, ''), port: Number(tcp[2]) };
  return undefined;
}

/** Comma-separated remotes (the members of a Raft cluster); undefined when any item is not a remote. */
export function parseOvsdbRemotes(text: string): OvsdbRemote[] | undefined {
  const items = text.split(',').map((s) => s.trim()).filter((s) => s !== '');
  const remotes = items.map(parseOvsdbRemote);
  return items.length > 0 && remotes.every((r) => r !== undefined) ? (remotes as OvsdbRemote[]) : undefined;
}

export function formatOvsdbRemote(remote: OvsdbRemote): string {
  return 'path' in remote ? `unix:${remote.path}` : `tcp:${remote.host.includes(':') ? `[${remote.host}]` : remote.host}:${remote.port}`;
}
