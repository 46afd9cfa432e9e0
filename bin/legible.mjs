#!/usr/bin/env node
// The `legible` command line. The packages are TypeScript run from source through tsx,
// so there is no build step to forget; each package contributes its subcommands.
// `legible serve` loads only the server (bin/serve.ts), and runs the server bundle instead while
// that is up to date with the sources (built by `npm install`; see server/bundle.mjs): a restart
// then loads neither tsx nor hundreds of separate modules.
const argv = process.argv.slice(2);
const serve = argv[0] === 'serve';
const bundle = serve ? (await import('../server/bundle.mjs')).freshBundle() : undefined;
if (bundle) {
  const { main } = await import(bundle);
  process.exitCode = await main(argv.slice(1));
} else {
  const { register } = await import('tsx/esm/api');
  register();
  const { main } = serve ? await import('./serve.ts') : await import('./cli.ts');
  process.exitCode = await main(serve ? argv.slice(1) : argv);
}
