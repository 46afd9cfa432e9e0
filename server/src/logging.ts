// The server's log, as `legible serve` sets it up (documented in server/API.md, "Logs"):
//
//   - LOG_LEVEL (fatal, error, warn, info, debug, trace, silent; default info) for the terminal.
//     Every request is logged at debug level (5xx at error), so a terminal at the default level
//     shows start-up, warnings (rate limits, skipped studies) and errors, not one line per answer.
//   - On a terminal (stdout is a TTY) the lines are human-readable; otherwise (a pipe, a file,
//     systemd, Docker) one JSON object per line, for log collectors. LOG_FORMAT=json|pretty forces one.
//   - --log-file FILE (env LOG_FILE): every line at debug level and above — one per request —
//     appended to FILE as JSON, whatever LOG_LEVEL says.
import { pino, type DestinationStream, type Level, type Logger, type StreamEntry } from 'pino';
import { UsageError } from '@legible/studies';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export type LogFormat = 'json' | 'pretty';

export interface LogSetup {
  /** Default: env LOG_LEVEL, else info. */
  level?: string;
  /** Default: env LOG_FORMAT, else pretty on a TTY and json otherwise. */
  format?: string;
  /** Also append every line (debug and above) as JSON here. Default: env LOG_FILE. */
  file?: string;
  /** Where terminal lines go (default process.stdout). */
  out?: NodeJS.WritableStream & { isTTY?: boolean };
  env?: NodeJS.ProcessEnv;
}

export interface ServerLog {
  log: Logger;
  level: LogLevel;
  format: LogFormat;
  file?: string;
  /** Write out what is buffered for the log file (call before exiting). */
  flush(): void;
}

export function parseLevel(value: string | undefined, where = 'LOG_LEVEL'): LogLevel {
  if (value === undefined || value === '') return 'info';
  const v = value.trim().toLowerCase();
  if (!(LOG_LEVELS as readonly string[]).includes(v)) {
    throw new UsageError(`${where}=${JSON.stringify(value)}: expected one of ${LOG_LEVELS.join(', ')} (per-request lines are at debug)`);
  }
  return v as LogLevel;
}

const LEVEL_NAMES: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };

/** One JSON log line as a human reads it: "12:03:04 WARN rate limited  limit=per address route=/api/sessions". */
export function prettyLine(json: string): string {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json.endsWith('\n') ? json : `${json}\n`;
  }
  const { level, time, msg, err, ...rest } = o;
  const t = typeof time === 'number' ? new Date(time).toTimeString().slice(0, 8) : '';
  const name = LEVEL_NAMES[level as number] ?? String(level);
  const fields = Object.entries(rest)
    .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
    .join(' ');
  let line = `${t} ${name.padEnd(5)} ${msg ?? ''}${fields ? `  ${fields}` : ''}`;
  const e = err as { message?: string; stack?: string } | undefined;
  if (e) line += `\n  ${e.stack ?? e.message ?? JSON.stringify(e)}`;
  return `${line}\n`;
}

/** A pino destination that writes prettyLine(line) to `out`. */
function prettyStream(out: NodeJS.WritableStream): DestinationStream {
  return { write: (line: string) => void out.write(prettyLine(line)) };
}

export function createServerLog(setup: LogSetup = {}): ServerLog {
  const env = setup.env ?? process.env;
  const out = setup.out ?? process.stdout;
  const level = parseLevel(setup.level ?? env.LOG_LEVEL);
  const formatValue = (setup.format ?? env.LOG_FORMAT ?? '').trim().toLowerCase();
  if (formatValue && formatValue !== 'json' && formatValue !== 'pretty') {
    throw new UsageError(`LOG_FORMAT=${JSON.stringify(setup.format ?? env.LOG_FORMAT)}: expected json or pretty`);
  }
  const format: LogFormat = (formatValue as LogFormat) || (out.isTTY ? 'pretty' : 'json');
  const file = setup.file ?? (env.LOG_FILE || undefined);

  const terminal: DestinationStream = format === 'pretty' ? prettyStream(out) : out === process.stdout ? pino.destination({ dest: 1, sync: true }) : (out as unknown as DestinationStream);
  if (!file) {
    const log = pino({ base: undefined, level }, terminal);
    return { log, level, format, flush: () => {} };
  }
  const fileStream = pino.destination({ dest: file, sync: false, mkdir: true, append: true, minLength: 4096 });
  const streams: StreamEntry[] = [{ stream: fileStream, level: 'debug' }];
  if (level !== 'silent') streams.push({ stream: terminal, level: level as Level });
  // The logger's own level is the lowest of its streams'; each stream filters for itself.
  const lowest = level === 'trace' ? 'trace' : 'debug';
  const log = pino({ base: undefined, level: lowest }, pino.multistream(streams));
  return {
    log,
    level,
    format,
    file,
    flush: () => {
      try {
        fileStream.flushSync();
      } catch {
        /* nothing buffered, or the file is gone */
      }
    },
  };
}
