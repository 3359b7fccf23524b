/**
 * JSON-lines logger. The destination is injected so tests can read lines as
 * objects; `child` binds fields (network and endpoint ids) onto every line.
 */
export type Level = 'debug' | 'info' | 'warn' | 'error';
export const LEVELS: readonly Level[] = ['debug', 'info', 'warn', 'error'];

export type Fields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: Fields): void;
  info(msg: string, fields?: Fields): void;
  warn(msg: string, fields?: Fields): void;
  error(msg: string, fields?: Fields): void;
  child(fields: Fields): Logger;
  enabled(level: Level): boolean;
}

export interface LogDestination {
  write(line: string): void;
}

export function createLogger(options: { level: Level; destination?: LogDestination; fields?: Fields }): Logger {
  const destination = options.destination ?? process.stdout;
  const threshold = LEVELS.indexOf(options.level);
  const make = (bound: Fields): Logger => {
    const emit = (level: Level, msg: string, fields?: Fields) => {
      if (LEVELS.indexOf(level) < threshold) return;
      const line: Fields = { time: new Date().toISOString(), level, msg, ...bound };
      if (fields) {
        for (const [key, value] of Object.entries(fields)) {
          if (value !== undefined) line[key] = value instanceof Error ? value.message : value;
        }
      }
      destination.write(JSON.stringify(line) + '\n');
    };
    return {
      debug: (msg, fields) => emit('debug', msg, fields),
      info: (msg, fields) => emit('info', msg, fields),
      warn: (msg, fields) => emit('warn', msg, fields),
      error: (msg, fields) => emit('error', msg, fields),
      child: (fields) => make({ ...bound, ...fields }),
      enabled: (level) => LEVELS.indexOf(level) >= threshold,
    };
  };
  return make(options.fields ?? {});
}

/** A logger that drops everything; for unit tests that do not look at logs. */
export const silentLogger: Logger = createLogger({ level: 'error', destination: { write: () => {} } });
