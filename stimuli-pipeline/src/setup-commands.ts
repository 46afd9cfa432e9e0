// Setting up a lab's own model and study: `legible model init|check` (model-setup.ts) and
// `legible init` (scaffold.ts). Self-contained, so bin/cli.ts can load it on its own.
import type { Command } from '@legible/studies';
import { model } from './model-setup.ts';
import { init } from './scaffold.ts';

export const commands: Command[] = [init, model];
