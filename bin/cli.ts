import type { Command } from '@legible/studies';
import { commands as studyCommands } from '@legible/studies';
import { commands as pipelineCommands } from '@legible/stimuli-pipeline/commands';
import { commands as serverCommands } from '@legible/server/commands';
import { commands as analysisCommands } from '@legible/analysis/commands';
import { commands as setupCommands } from '../stimuli-pipeline/src/setup-commands.ts';
import { commands as explorerCommands } from '@legible/explorer/commands';
import { runCommand } from './run-command.ts';

// Every run loads these command lists (--help shows them all), so a package's commands module
// imports only @legible/studies and types, and each command's run() imports what it needs
// (`const { buildStimuli } = await import('./build.ts')`): `legible layers` then loads no server,
// analysis or onnxruntime code (studies/test/cli-lazy.test.ts checks it).
// A later package's command of the same name replaces an earlier one's (stimuli-pipeline's validate
// also checks the study's layers against its model).
const all: Command[] = [...studyCommands, ...pipelineCommands, ...serverCommands, ...analysisCommands, ...setupCommands, ...explorerCommands].filter((c, i, list) => !list.slice(i + 1).some((d) => d.name === c.name));

function usage(): string {
  const width = Math.max(...all.map((c) => c.name.length));
  const lines = all.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`);
  return `legible — psychophysics of model features\n\nUsage: legible <command> [options]\n\nCommands:\n${lines.join('\n')}\n\nRun \`legible <command> --help\` for a command's options.`;
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    console.log(usage());
    return name ? 0 : 1;
  }
  const command = all.find((c) => c.name === name);
  if (!command) {
    console.error(`legible: unknown command "${name}".\n\n${usage()}`);
    return 2;
  }
  return runCommand(command, rest);
}
