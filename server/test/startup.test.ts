// Start-up of `legible serve` (issue 11, item 12: a restart serving within 1 s): what a restart
// loads before it listens. Run from the TypeScript sources it loads the server and its dependencies
// only — not @legible/analysis (exports, dashboard counts), not the stimuli pipeline (the study's
// check, skipped for an unchanged study), nor their native modules. With the server bundle
// (server/bundle.mjs, built by `npm install`) it loads no TypeScript and not tsx at all, and still
// serves, checks new studies and exports through the packages it imports on first use. The bundle
// is used only while it is up to date with every source file that went into it. Real processes,
// real SQLite files, the real bundle built by esbuild.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { bundleStale, buildServerBundle, defaultBundleDir } from '../bundle.mjs';
import { openDatabase } from '../src/db.ts';
import { fixtureMaker } from './fixture.ts';
import { answer, bearer, call } from './http.ts';

const makeFixture = fixtureMaker();
const repo = fileURLToPath(new URL('../..', import.meta.url));
const trace = fileURLToPath(new URL('./load-trace.mjs', import.meta.url));

interface Started {
  url: string;
  out: () => string;
  /** URLs of the ES modules loaded so far. */
  loaded: () => string[];
  stop: () => Promise<void>;
}

/** `node bin/legible.mjs serve …` as `npm start` runs it, with the load trace; resolves once it listens. */
async function serve(args: string[], env: Record<string, string> = {}): Promise<Started> {
  const traceFile = join(makeFixture().root, 'loaded.txt');
  writeFileSync(traceFile, '');
  const child = spawn(process.execPath, ['--import', trace, join(repo, 'bin/legible.mjs'), 'serve', ...args], {
    cwd: repo,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, LOG_LEVEL: 'warn', LEGIBLE_LOAD_TRACE: traceFile, ...env },
  });
  let out = '';
  const exited = once(child, 'exit');
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
      const m = /serving on (http:\/\/\S+)[^\n]*\n.*\?study=/.exec(out);
      if (m) resolve(m[1].replace('//localhost:', '//127.0.0.1:'));
    });
    child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
    child.once('exit', (code) => reject(new Error(`serve exited (${code}) before listening:\n${out}`)));
  });
  const loadedAtStart = readFileSync(traceFile, 'utf8').split('\n').filter(Boolean);
  return {
    url,
    out: () => out,
    loaded: () => loadedAtStart,
    stop: async () => {
      child.kill('SIGTERM');
      await exited;
    },
  };
}

const lazyPackages = /\/(analysis|stimuli-pipeline)\/src\/|\/node_modules\/(sharp|onnxruntime-node|@img)\//;

test('a restart from the sources loads neither @legible/analysis nor the stimuli pipeline before it listens', async () => {
  const fx = makeFixture();
  const args = ['--port', '0', '--db', join(fx.root, 'source.db'), '--studies', fx.studiesDir, '--study', 'fixture', '--client', join(fx.root, 'none')];
  // The first start checks the study (the pipeline is loaded for that); the restart finds it unchanged.
  const first = await serve(args, { LEGIBLE_FROM_SOURCE: '1' });
  await first.stop();
  const again = await serve(args, { LEGIBLE_FROM_SOURCE: '1' });
  try {
    assert.match(again.out(), /unchanged since it was last checked, not re-checked/);
    assert.ok(again.loaded().some((u) => u.endsWith('/server/src/app.ts')), 'runs the sources');
    const lazy = again.loaded().filter((u) => lazyPackages.test(u));
    assert.deepEqual(lazy, [], 'loaded before listening although not needed to serve');
    // Still there when asked for: the study's texts, rendered on first request.
    const info = await call(again.url, 'GET', '/api/studies/fixture');
    assert.equal(info.status, 200);
    assert.match(info.body.html.consent, /<h2>/);
  } finally {
    await again.stop();
  }
});

test('with an up-to-date server bundle, `legible serve` loads no TypeScript and not tsx before it listens, and everything works', { timeout: 240_000 }, async () => {
  await buildServerBundle();
  assert.equal(bundleStale(), undefined);
  const fx = makeFixture();
  const dbFile = join(fx.root, 'bundle.db');
  const args = ['--port', '0', '--db', dbFile, '--studies', fx.studiesDir, '--study', 'fixture', '--client', join(fx.root, 'none')];
  // First start on a fresh database: the study is checked through the stimuli pipeline, which the
  // bundle imports (with tsx) only now.
  const first = await serve(args);
  assert.doesNotMatch(first.out(), /not re-checked/, first.out());
  assert.ok(first.loaded().some((u) => u.endsWith('/server/dist/serve.mjs')), 'runs the bundle');
  await first.stop();

  const again = await serve(args);
  try {
    assert.match(again.out(), /unchanged since it was last checked, not re-checked/);
    const loaded = again.loaded();
    assert.ok(loaded.some((u) => u.endsWith('/server/dist/serve.mjs')), 'runs the bundle');
    assert.deepEqual(loaded.filter((u) => /\.ts$|\/node_modules\/(tsx|esbuild)\//.test(u)), [], 'TypeScript or tsx loaded before listening');
    // The study, a session and its first answer, as from the sources.
    const info = await call(again.url, 'GET', '/api/studies/fixture');
    assert.equal(info.status, 200);
    assert.match(info.body.html.consent, /<h2>/);
    const created = await call(again.url, 'POST', '/api/sessions', { study: 'fixture', participant: 'bundle-1' });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const { session, token } = created.body;
    const put = await call(again.url, 'PUT', `/api/sessions/${session}/trials/0`, answer(0), bearer(token));
    assert.equal(put.status, 200, JSON.stringify(put.body));
    // The admin export imports @legible/analysis (TypeScript) on first use, from inside the bundle.
    const db = openDatabase(dbFile, { withoutSecret: true });
    const { token: admin } = db.write(() => db.createAdminToken('test'));
    db.close();
    const csv = await call(again.url, 'GET', '/api/admin/studies/fixture/trials.csv', undefined, bearer(admin));
    assert.equal(csv.status, 200);
    assert.equal(csv.text.trim().split('\n').length, 2, 'header and the one answer');
    const progress = await call(again.url, 'GET', '/api/admin/studies/fixture', undefined, bearer(admin));
    assert.equal(progress.status, 200, JSON.stringify(progress.body));
    assert.equal(progress.body.sessions.total, 1);
  } finally {
    await again.stop();
  }
});

test('the server bundle is stale as soon as a file that went into it changes or is gone', async () => {
  const fx = makeFixture();
  const src = join(fx.root, 'src');
  mkdirSync(src);
  writeFileSync(join(src, 'entry.ts'), "import { greet } from './dep.ts';\nexport const main = async (_argv: string[]): Promise<number> => (console.log(greet('x')), 0);\n");
  writeFileSync(join(src, 'dep.ts'), "export const greet = (who: string): string => `hello ${who}`;\n");
  const outdir = join(fx.root, 'dist');
  const { inputs } = await buildServerBundle({ outdir, entry: join(src, 'entry.ts') });
  assert.equal(inputs, 2);
  assert.equal(bundleStale(outdir), undefined);
  writeFileSync(join(src, 'dep.ts'), "export const greet = (who: string): string => `hi ${who}`;\n");
  assert.match(String(bundleStale(outdir)), /dep\.ts changed/);
  await buildServerBundle({ outdir, entry: join(src, 'entry.ts') });
  assert.equal(bundleStale(outdir), undefined);
  rmSync(join(src, 'dep.ts'));
  assert.match(String(bundleStale(outdir)), /dep\.ts is gone/);
  assert.match(String(bundleStale(join(fx.root, 'nothing'))), /no bundle/);
  assert.ok(existsSync(defaultBundleDir));
});
