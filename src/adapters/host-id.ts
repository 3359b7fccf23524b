/**
 * This host's id: a UUID made once and kept in the state directory, so that
 * two hosts that share an OVN chassis name (a cloned image) can tell each
 * other apart (domain/ovn-identity.ts). Written whole or not at all: to a
 * temporary file, synced, then renamed.
 */
import { randomUUID } from 'node:crypto';
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import path from 'node:path';

const FILE = 'host-id';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** The host id kept in `stateDir`; made when there is none and `create` is set (else undefined). */
export function loadHostId(stateDir: string, create: boolean): string | undefined {
  const file = path.join(stateDir, FILE);
  try {
    const text = readFileSync(file, 'utf8').trim();
    if (UUID.test(text)) return text;
    throw new Error(`${file} does not hold a host id (a UUID) but ${JSON.stringify(text.slice(0, 40))}: remove it, and the plugin makes a new one at its next start`);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (!create) return undefined;
  const id = randomUUID();
  const temporary = `${file}.new`;
  const fd = openSync(temporary, 'w', 0o600);
  try {
    writeSync(fd, `${id}\n`);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(temporary, file);
  const dir = openSync(stateDir, 'r');
  try {
    fsyncSync(dir);
  } finally {
    closeSync(dir);
  }
  return id;
}

const NOTES = 'ovn-conflict-notes';

/**
 * The chassis names whose registration holds a note this host left when it was refused that name, kept
 * beside the host id: so that, given a name of its own, it removes exactly those notes without reading
 * every chassis' registration.
 */
export class NotedChassis {
  constructor(private readonly stateDir: string) {}

  read(): string[] {
    try {
      return readFileSync(path.join(this.stateDir, NOTES), 'utf8').split('\n').filter((line) => line !== '');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
  }

  write(chassis: readonly string[]): void {
    const file = path.join(this.stateDir, NOTES);
    if (chassis.length === 0) {
      rmSync(file, { force: true });
      return;
    }
    writeFileSync(`${file}.new`, chassis.map((c) => `${c}\n`).join(''), { mode: 0o600 });
    renameSync(`${file}.new`, file);
  }
}
