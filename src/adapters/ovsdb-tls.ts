/**
 * How the OVSDB client reaches a server: a Unix socket, TCP, or TLS with this host's key and certificate and
 * the CA the server's must be signed by (as Open vSwitch does, the chain is checked, not the server's name),
 * and what a TLS failure means for a person: which peer, which file to look at.
 */
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { PluginError } from '../errors.js';
import { type OvsdbRemote, formatOvsdbRemote } from '../domain/remotes.js';

/** A socket with the reason a TLS peer gave for ending it, kept for messages. */
export type Conn = net.Socket & { tlsFailure?: string };

/** This host's TLS identity, read from its files. */
export interface TlsMaterial {
  readonly key: Buffer;
  readonly cert: Buffer;
  readonly ca: Buffer;
}

/** Node's codes for a server certificate that does not verify against the CA. */
const VERIFY_CODES = /CERT|SELF_SIGNED|UNABLE_TO|VERIFY|INVALID_CA|INVALID_PURPOSE|PATH_LENGTH/;

/** Reads the TLS files of `ssl:` remotes and checks that they make an identity; every error names the file and the setting. */
export function tlsIdentity(options: { address: string; label?: string; tls?: { key: string; cert: string; ca: string }; tlsSettings?: string }): TlsMaterial {
  const settings = options.tlsSettings ?? 'the private key, certificate and CA settings';
  if (!options.tls) throw new PluginError('BadRequest', 'InvalidSetting', `${options.label ?? 'OVSDB'} is reached over TLS (${options.address}): set ${settings}`);
  const read = (what: string, file: string) => {
    try {
      return readFileSync(file);
    } catch (err) {
      throw new PluginError('BadRequest', 'InvalidSetting', `cannot read the ${what} ${file} (${settings}): ${(err as Error).message}`);
    }
  };
  const material = { key: read('private key', options.tls.key), cert: read('certificate', options.tls.cert), ca: read('CA certificate', options.tls.ca) };
  try {
    tls.createSecureContext(material);
  } catch (err) {
    throw new PluginError('BadRequest', 'InvalidSetting', `the private key ${options.tls.key}, certificate ${options.tls.cert} and CA certificate ${options.tls.ca} (${settings}) do not make a TLS identity: ${(err as Error).message}`);
  }
  return material;
}

/** Opens a socket to a remote (its handshake still to come: `connect`, or `secureConnect` over TLS). */
export function dial(remote: OvsdbRemote, material: TlsMaterial | undefined): Conn {
  if ('path' in remote) return net.connect(remote.path);
  // OVSDB's TLS checks the chain against the CA, never the peer's name (certificates from ovs-pki name no host).
  if (remote.tls === true) return tls.connect({ host: remote.host, port: remote.port, ...material!, rejectUnauthorized: true, checkServerIdentity: () => undefined });
  return net.connect(remote.port, remote.host);
}

/** A TLS failure, naming the peer and the file to look at; any other error as it is. */
export function tlsError(remote: OvsdbRemote, err: NodeJS.ErrnoException, files: { cert: string; ca: string }): Error {
  const peer = formatOvsdbRemote(remote);
  const code = err.code ?? '';
  let message;
  if (VERIFY_CODES.test(code) && !/ALERT/.test(code)) message = `the certificate ${peer} presented does not verify against the CA certificate ${files.ca} (${code}: ${err.message})`;
  else if (/HANDSHAKE_FAILURE/.test(code)) message = `${peer} ended the TLS handshake (${code}: ${err.message}): it may refuse this host's certificate ${files.cert}, or share no protocol version or cipher with it`;
  else if (/ALERT/.test(code)) message = `${peer} refused this host's certificate ${files.cert} (${code}: ${err.message}): is it signed by the CA the server trusts?`;
  else return err;
  return Object.assign(new Error(message), { code, tlsFailure: true });
}
