#!/usr/bin/env node
// The `legible` command line. The packages are TypeScript run from source through tsx,
// so there is no build step to forget; each package contributes its subcommands.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('./cli.ts');
process.exitCode = await main(process.argv.slice(2));
