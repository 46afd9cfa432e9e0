// Runs one command with its arguments: `--help`, and the exit codes and messages for usage errors
// (2) and LegibleErrors (1). Shared by cli.ts (every command) and serve.ts (the server bundle's entry).
import type { Command } from '@legible/studies';

export async function runCommand(command: Command, rest: string[]): Promise<number> {
  if (rest.includes('--help') || rest.includes('-h')) {
    console.log(`Usage: legible ${command.name} ${command.usage}\n\n${command.summary}${command.help ? `\n\n${command.help}` : ''}`);
    return 0;
  }
  try {
    return await command.run(rest);
  } catch (err) {
    const e = err as Error & { hint?: string };
    // node's parseArgs: ERR_PARSE_ARGS_UNKNOWN_OPTION, _INVALID_OPTION_VALUE (a value that starts with a
    // dash: its message says to write --option=-value), _UNEXPECTED_POSITIONAL.
    if ((e as { name?: string }).name === 'UsageError' || /^ERR_PARSE_ARGS_/.test((e as { code?: string }).code ?? '')) {
      console.error(`legible ${command.name}: ${e.message}\nUsage: legible ${command.name} ${command.usage}`);
      return 2;
    }
    if ((e as { name?: string }).name === 'LegibleError') {
      console.error(`legible ${command.name}: ${e.message}`);
      return 1;
    }
    throw err;
  }
}
