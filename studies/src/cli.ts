// The shape of a `legible` subcommand. Packages export a `commands` list; bin/cli.ts gathers them.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { UsageError } from './errors.ts';

export interface Command {
  name: string;
  /** One line, shown in `legible --help`. */
  summary: string;
  /** Arguments after the command name, e.g. "<study> [--out FILE]". */
  usage: string;
  /** More text for `legible <command> --help`. */
  help?: string;
  /** Returns the process exit code. */
  run(argv: string[]): Promise<number>;
}

type Options = NonNullable<ParseArgsConfig['options']>;

/** node:util parseArgs with strict checking and positional arguments counted. */
export function parseCommandArgs<O extends Options>(argv: string[], options: O, positionals: { min: number; max: number }) {
  const parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  const n = parsed.positionals.length;
  if (n < positionals.min) throw new UsageError(`expected ${positionals.min} argument${positionals.min > 1 ? 's' : ''}, got ${n}`);
  if (n > positionals.max) throw new UsageError(`unexpected argument "${parsed.positionals[positionals.max]}"`);
  return parsed;
}

/** A whole number from an option value, or a UsageError naming the option. */
export function intOption(value: string | undefined, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n)) throw new UsageError(`--${name} expects a whole number, got "${value}"`);
  return n;
}
