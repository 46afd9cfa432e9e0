// The `legible` command line loads what the command it runs needs, and no other command's modules
// (issue 10: `legible layers` on VGG-16 spent about 1.5 s of its time importing the server, the
// analysis and the gradient engine before it read the model). Each run records every module the
// process resolves (a node:module resolve hook, registered before bin/legible.mjs starts tsx).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = fileURLToPath(new URL('../..', import.meta.url));
const scratch = mkdtempSync(join(tmpdir(), 'legible-cli-lazy-'));
writeFileSync(
  join(scratch, 'hooks.mjs'),
  `import { appendFileSync } from 'node:fs';
export async function resolve(specifier, context, next) {
  const r = await next(specifier, context);
  appendFileSync(process.env.LEGIBLE_LOADS_FILE, r.url + '\\n');
  return r;
}
`,
);
writeFileSync(join(scratch, 'record.mjs'), `import { register } from 'node:module';\nregister(${JSON.stringify(pathToFileURL(join(scratch, 'hooks.mjs')).href)});\n`);

/** Runs `legible <args>`; returns its result and the repository files and npm packages it loaded. */
function run(args: string[], env: Record<string, string> = {}) {
  const loads = join(scratch, `loads-${Math.random().toString(36).slice(2)}.txt`);
  writeFileSync(loads, '');
  const r = spawnSync(process.execPath, ['--import', join(scratch, 'record.mjs'), join(root, 'bin/legible.mjs'), ...args], {
    cwd: root,
    encoding: 'utf8',
    timeout: 120_000,
    env: { ...process.env, ...env, LEGIBLE_LOADS_FILE: loads },
  });
  const files = new Set(
    readFileSync(loads, 'utf8')
      .split('\n')
      .filter((u) => u.startsWith('file:'))
      .map((u) => relative(root, fileURLToPath(u))),
  );
  const sources = [...files].filter((f) => !f.includes('node_modules/'));
  const packages = new Set([...files].filter((f) => f.includes('node_modules/')).map((f) => /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(f)![1]));
  return { ...r, sources, packages };
}

/** Packages that only some commands use: none of them may load for a command that does not. */
const HEAVY = ['express', 'pino', 'better-sqlite3', 'marked', 'helmet', 'sharp', 'onnxruntime-node'];
/**
 * The modules that register commands (name, summary, usage, help: what --help shows), which every run
 * loads; they import @legible/studies and types only, and their commands import the rest when they run.
 */
const COMMAND_MODULES = new Set([
  'stimuli-pipeline/src/commands.ts',
  'stimuli-pipeline/src/grad-commands.ts',
  'stimuli-pipeline/src/study-check.ts',
  'stimuli-pipeline/src/setup-commands.ts',
  'server/src/commands.ts',
  'server/src/limits.ts',
  'analysis/src/commands.ts',
  'explorer/src/commands.ts',
]);
/** A package's implementation: its sources beyond the modules that register its commands. */
const implementation = (sources: string[], pkg: string) => sources.filter((f) => f.startsWith(`${pkg}/src/`) && !COMMAND_MODULES.has(f));

describe('legible loads each command\'s modules when that command runs', () => {
  after(() => rmSync(scratch, { recursive: true, force: true }));

  it('`legible --help` lists every command, loading no command\'s implementation', () => {
    const r = run(['--help']);
    assert.equal(r.status, 0, r.stderr);
    for (const name of ['validate', 'layers', 'stimuli', 'visualize', 'serve', 'admin-token', 'backup', 'restore', 'withdraw', 'export', 'analyze', 'predict', 'pilot', 'explore', 'init', 'model']) {
      assert.match(r.stdout, new RegExp(`^  ${name} +\\S`, 'm'), `${name} is not listed`);
    }
    for (const pkg of ['stimuli-pipeline', 'server', 'analysis', 'explorer']) assert.deepEqual(implementation(r.sources, pkg), [], `${pkg} modules loaded`);
    assert.deepEqual(HEAVY.filter((p) => r.packages.has(p)), []);
  });

  // From the sources (LEGIBLE_FROM_SOURCE=1): the server bundle (server/bundle.mjs) is one file that
  // loads its native modules when it loads, and server/test/startup.test.ts covers it.
  it('`legible serve --help` shows the command\'s help without loading the server', () => {
    const r = run(['serve', '--help'], { LEGIBLE_FROM_SOURCE: '1' });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^Usage: legible serve \[--port P\]/);
    assert.match(r.stdout, /--db FILE/);
    assert.deepEqual(implementation(r.sources, 'server'), []);
    assert.deepEqual(HEAVY.filter((p) => r.packages.has(p)), []);
  });

  it('`legible layers` loads the model reader, not the server, the analysis, the gradient engine or onnxruntime', () => {
    const r = run(['layers', join(root, 'studies/demo/model.onnx'), '--json']);
    assert.equal(r.status, 0, r.stderr);
    assert.ok((JSON.parse(r.stdout) as { tensors: unknown[] }).tensors.length > 0);
    assert.ok(r.sources.includes('stimuli-pipeline/src/layout.ts'));
    assert.deepEqual(implementation(r.sources, 'server'), []);
    assert.deepEqual(implementation(r.sources, 'analysis'), []);
    assert.deepEqual(r.sources.filter((f) => /stimuli-pipeline\/src\/(grad|fv|train)\//.test(f)), []);
    assert.deepEqual(HEAVY.filter((p) => r.packages.has(p)), []);
  });

  it('`legible validate` checks the study against its model without loading the server or the analysis', () => {
    const r = run(['validate', join(root, 'studies/demo/study.yaml')]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /valid study "demo"/);
    assert.ok(r.sources.includes('stimuli-pipeline/src/layout.ts'), 'the model check did not run');
    assert.deepEqual(implementation(r.sources, 'server'), []);
    assert.deepEqual(implementation(r.sources, 'analysis'), []);
    assert.deepEqual(HEAVY.filter((p) => r.packages.has(p)), []);
  });
});
