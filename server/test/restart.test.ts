// A restart (after a crash, a deploy) does not re-check studies that did not change: the
// fingerprints of checked studies are kept in the database, and only a study whose files changed
// goes through the stimuli pipeline's staleness check again. Real SQLite files, a real
// `legible serve` process.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { appendFileSync, mkdirSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { openDatabase } from '../src/db.ts';
import { loadRegistry, type Builder } from '../src/registry.ts';
import { dbCheckStore } from '../src/studycheck.ts';
import { fixtureMaker, png } from './fixture.ts';

const makeFixture = fixtureMaker();
const repo = fileURLToPath(new URL('../..', import.meta.url));
const commands = fileURLToPath(new URL('../src/commands.ts', import.meta.url));

test('a study is re-checked on a start only when its files changed since the last check', async () => {
  const fx = makeFixture();
  const dbFile = join(fx.root, 'checks.db');
  const checked: string[] = [];
  const build: Builder = async (loaded) => void checked.push(loaded.study.id);
  const start = async () => {
    const db = openDatabase(dbFile);
    try {
      checked.length = 0;
      const r = await loadRegistry({ studiesDir: fx.studiesDir, build, recheck: true, checks: dbCheckStore(db) });
      assert.deepEqual(r.registry.ids(), ['fixture']);
      return { checked: [...checked], rechecked: r.rechecked, unchanged: r.unchanged };
    } finally {
      db.close();
    }
  };
  assert.deepEqual(await start(), { checked: ['fixture'], rechecked: ['fixture'], unchanged: [] }, 'first start: checked');
  assert.deepEqual(await start(), { checked: [], rechecked: [], unchanged: ['fixture'] }, 'second start: not re-checked');

  // The study file edited (a new modification time) → re-checked once, then unchanged again.
  const later = new Date(Date.now() + 5000);
  utimesSync(fx.studyFile, later, later);
  assert.deepEqual((await start()).checked, ['fixture'], 'study file changed');
  assert.deepEqual((await start()).checked, []);
  // An image added to the dataset → re-checked.
  mkdirSync(join(fx.studyDir, 'data', 'new-class'));
  writeFileSync(join(fx.studyDir, 'data', 'new-class', 'b.png'), png(9, 9, 9));
  assert.deepEqual((await start()).checked, ['fixture'], 'image folder changed');
  // The model replaced → re-checked.
  appendFileSync(join(fx.studyDir, 'model.onnx'), 'more bytes');
  assert.deepEqual((await start()).checked, ['fixture'], 'model changed');
  assert.deepEqual((await start()).checked, []);
  // Another database has no record of the check: it checks for itself.
  const other = openDatabase(join(fx.root, 'other.db'));
  try {
    checked.length = 0;
    await loadRegistry({ studiesDir: fx.studiesDir, build, recheck: true, checks: dbCheckStore(other) });
    assert.deepEqual(checked, ['fixture']);
  } finally {
    other.close();
  }
});

test('a study that fails its check is not recorded as checked: the next start checks it again', async () => {
  const fx = makeFixture();
  const dbFile = join(fx.root, 'fail.db');
  let calls = 0;
  let fail = true;
  const build: Builder = async () => {
    calls++;
    if (fail) throw new Error('the pipeline failed');
  };
  for (const expectFail of [true, false]) {
    fail = expectFail;
    const db = openDatabase(dbFile);
    try {
      const run = loadRegistry({ studiesDir: fx.studiesDir, studies: ['fixture'], build, recheck: true, checks: dbCheckStore(db) });
      if (expectFail) await assert.rejects(run, /the pipeline failed/);
      else await run;
    } finally {
      db.close();
    }
  }
  assert.equal(calls, 2);
});

/** Start `legible serve` (stdout a pipe), wait until it listens, stop it; its output. */
async function startAndStop(args: string[]): Promise<string> {
  const script = `import { serve } from ${JSON.stringify(commands)}; process.exitCode = await serve.run(process.argv.slice(1));`;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script, '--', ...args], { cwd: repo, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const exited = once(child, 'exit');
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
      if (/serving on [^\n]*\n.*\?study=/.test(out)) resolve();
    });
    child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
    child.once('exit', (code) => reject(new Error(`serve exited (${code}):\n${out}`)));
  });
  child.kill('SIGTERM');
  await exited;
  return out;
}

test('legible serve: the second start on the same database does not re-check an unchanged study', async () => {
  // The fixture has a model file, so `legible serve` runs the pipeline's staleness check on it.
  const fx = makeFixture();
  const args = ['--port', '0', '--db', join(fx.root, 'serve.db'), '--studies', fx.studiesDir, '--client', join(fx.root, 'none')];
  const first = await startAndStop(args);
  assert.doesNotMatch(first, /not re-checked/, first);
  const second = await startAndStop(args);
  assert.match(second, /study "fixture": unchanged since it was last checked, not re-checked/, second);
});
