// `legible serve` alone, without the other packages' commands: the entry of the server bundle
// (server/bundle.mjs), which bin/legible.mjs runs for `serve` while the bundle is up to date.
import { serve } from '@legible/server/commands';
import { runCommand } from './run-command.ts';

export const main = (argv: string[]): Promise<number> => runCommand(serve, argv);
