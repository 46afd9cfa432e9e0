// Study folders added to or changed under a running server are picked up without a restart:
// checked in full first (a broken one is reported and not served), running sessions untouched —
// a session keeps the trials, answer keys and stimuli it started with when the study is rebuilt.
// A real server on 127.0.0.1, a real SQLite file, study folders written while it runs.
import assert from 'node:assert/strict';
import { cpSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { pino } from 'pino';
import type { CreateSessionResponse } from '@legible/studies';
import { startServer, type RunningServer } from '../src/app.ts';
import { fixtureMaker, type Fixture } from './fixture.ts';
import { answer, bearer, call } from './http.ts';

const makeFixture = fixtureMaker();

/** A server on the whole studies folder (as `legible serve --studies DIR`), with its log lines. */
async function serveFolder(fx: Fixture, watchMs = 60_000): Promise<{ srv: RunningServer; logs: Record<string, unknown>[] }> {
  const logs: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk, _enc, done) {
      for (const line of String(chunk).split('\n')) if (line) logs.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  const srv = await startServer({
    port: 0,
    db: join(fx.root, 'watch.db'),
    studiesDir: fx.studiesDir,
    clientDir: join(fx.root, 'none'),
    signals: false,
    log: pino({ level: 'info' }, sink),
    watchMs,
    build: async () => {
      throw new Error('no builds in this test');
    },
  });
  return { srv, logs };
}

/** Copy another fixture's study folder into fx's studies folder as <id>. */
function addStudy(fx: Fixture, from: Fixture, id: string): string {
  const dir = join(fx.studiesDir, id);
  cpSync(from.studyDir, dir, { recursive: true });
  return dir;
}

const until = async (what: string, ok: () => boolean | Promise<boolean>, ms = 10_000) => {
  const end = Date.now() + ms;
  while (!(await ok())) {
    if (Date.now() > end) assert.fail(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
};

test('a study folder added while the server runs is served at its first request, sessions and stimuli included', async () => {
  const fx = makeFixture();
  const { srv } = await serveFolder(fx);
  try {
    assert.equal((await call(srv.url, 'GET', '/api/studies/second')).status, 404);
    addStudy(fx, makeFixture({ id: 'second', title: 'The second study' }), 'second');
    // The first request for it finds it (the scan interval here is a minute).
    const info = await call(srv.url, 'GET', '/api/studies/second');
    assert.equal(info.status, 200, info.text);
    assert.equal(info.body.title, 'The second study');
    const s = await call<CreateSessionResponse>(srv.url, 'POST', '/api/sessions', { study: 'second', participant: 'new-1' });
    assert.equal(s.status, 201, s.text);
    const img = await call(srv.url, 'GET', s.body.trials[0].min_url);
    assert.equal(img.status, 200);
    assert.equal(img.headers.get('content-type'), 'image/png');
    // The study the server started with is as it was.
    assert.equal((await call(srv.url, 'POST', '/api/sessions', { study: 'fixture', participant: 'old-1' })).status, 201);
  } finally {
    await srv.close();
  }
});

test('the periodic scan picks up a new study without any request for it', async () => {
  const fx = makeFixture();
  const { srv, logs } = await serveFolder(fx, 100);
  try {
    addStudy(fx, makeFixture({ id: 'third' }), 'third');
    await until('the scan serves "third"', () => srv.registry.get('third') !== undefined);
    assert.ok(logs.some((l) => l.level === 30 && l.study === 'third' && String(l.msg).startsWith('study added')), JSON.stringify(logs));
  } finally {
    await srv.close();
  }
});

test('a broken new study is reported once and never served; once fixed, it is served', async () => {
  const fx = makeFixture();
  const { srv, logs } = await serveFolder(fx);
  try {
    const dir = addStudy(fx, makeFixture({ id: 'broken' }), 'broken');
    const manifest = join(dir, 'build', 'manifest.json');
    const good = readFileSync(manifest, 'utf8');
    const images = JSON.parse(good).trials.flatMap((t: { assets: { min: string } }) => [t.assets.min]);

    // 1. A stimulus file the manifest names is missing (a copy in progress): not half-served.
    rmSync(join(dir, 'build', images[0]));
    await srv.watcher!.scan();
    assert.equal(srv.registry.get('broken'), undefined);
    assert.equal((await call(srv.url, 'GET', '/api/studies/broken')).status, 404);
    assert.equal((await call(srv.url, 'POST', '/api/sessions', { study: 'broken', participant: 'x' })).status, 404);
    assert.equal((await call(srv.url, 'GET', `/stimuli/broken/${images[1]}`)).status, 404, 'none of its files are served either');
    const warnings = () => logs.filter((l) => l.level === 40 && String(l.file).includes('broken'));
    assert.equal(warnings().length, 1);
    assert.match(String(warnings()[0].problem), /stimulus file.* missing/);
    // Scanning again without a change does not repeat the warning.
    await srv.watcher!.scan();
    assert.equal(warnings().length, 1);

    // 2. An invalid study file: reported with the field.
    writeFileSync(join(dir, 'study.yaml'), readFileSync(join(dir, 'study.yaml'), 'utf8').replace('mode: pilot', 'mode: sometimes'));
    await srv.watcher!.scan();
    assert.equal(warnings().length, 2);
    assert.match(String(warnings()[1].problem), /mode/);
    assert.equal(srv.registry.get('broken'), undefined);

    // 3. Fixed: served.
    writeFileSync(join(dir, 'study.yaml'), readFileSync(join(dir, 'study.yaml'), 'utf8').replace('mode: sometimes', 'mode: pilot'));
    cpSync(join(fx.studyDir, 'build', images[0]), join(dir, 'build', images[0]));
    await srv.watcher!.scan();
    assert.ok(srv.registry.get('broken'), JSON.stringify(warnings()));
    assert.equal((await call(srv.url, 'POST', '/api/sessions', { study: 'broken', participant: 'x' })).status, 201);
  } finally {
    await srv.close();
  }
});

test('a rebuilt study: new sessions get the new stimuli, a running session keeps its own and finishes; a broken change keeps the previous version', async () => {
  const fx = makeFixture();
  const { srv, logs } = await serveFolder(fx);
  try {
    const running = (await call<CreateSessionResponse>(srv.url, 'POST', '/api/sessions', { study: 'fixture', participant: 'running' })).body;
    const oldSha = srv.registry.get('fixture')!.manifestSha256;
    // Answer the first half before the rebuild.
    const half = Math.floor(running.trials.length / 2);
    for (const t of running.trials.slice(0, half)) assert.equal((await call(srv.url, 'PUT', `/api/sessions/${running.session}/trials/${t.seq}`, answer(0), bearer(running.token))).status, 200);

    // The stimuli rebuilt: the same trial ids with new pictures (new content-hashed names), and a
    // new trial; the old pictures stay on disk.
    const manifestFile = join(fx.studyDir, 'build', 'manifest.json');
    const m = JSON.parse(readFileSync(manifestFile, 'utf8')) as { trials: { id: string; assets: { min: string; max: string; queries: string[] } }[] };
    const renamed = (asset: string) => {
      const to = asset.replace('img/', 'img/v2-');
      cpSync(join(fx.studyDir, 'build', asset), join(fx.studyDir, 'build', to));
      return to;
    };
    for (const t of m.trials) t.assets = { min: renamed(t.assets.min), max: renamed(t.assets.max), queries: t.assets.queries.map(renamed) };
    m.trials.push({ ...m.trials[0], id: 't999' });
    writeFileSync(manifestFile, JSON.stringify(m));
    await srv.watcher!.scan();
    const current = srv.registry.get('fixture')!;
    assert.notEqual(current.manifestSha256, oldSha, 'the new build is served');
    assert.ok(logs.some((l) => String(l.msg).startsWith('study reloaded with new stimuli')));

    // A new session is assigned from the new manifest.
    const fresh = (await call<CreateSessionResponse>(srv.url, 'POST', '/api/sessions', { study: 'fixture', participant: 'fresh' })).body;
    const freshRow = srv.db.sessionById(fresh.session)!;
    assert.equal(freshRow.manifest_sha256, current.manifestSha256);
    for (const task of srv.db.tasks(fresh.session)!) assert.ok(current.trials.has(task.trial));

    // The running session resumes with its own trials (the same URLs), shows its images, and finishes.
    const resumed = await call<CreateSessionResponse>(srv.url, 'POST', '/api/sessions', { study: 'fixture', participant: 'running', resume: running.resume_secret });
    assert.equal(resumed.status, 200, resumed.text);
    assert.deepEqual(resumed.body.trials, running.trials);
    assert.equal(resumed.body.resume_at, half);
    assert.equal((await call(srv.url, 'GET', running.trials[half].max_url)).status, 200);
    for (const t of running.trials.slice(half)) {
      const r = await call(srv.url, 'PUT', `/api/sessions/${running.session}/trials/${t.seq}`, answer(0), bearer(running.token));
      assert.equal(r.status, 200, r.text);
    }
    const fin = await call(srv.url, 'POST', `/api/sessions/${running.session}/finish`, undefined, bearer(running.token));
    assert.equal(fin.status, 200, fin.text);
    assert.ok(['completed', 'failed_checks'].includes(fin.body.outcome));

    // A change that breaks the study (a manifest cut short): still served as it was, with a warning.
    const served = srv.registry.get('fixture');
    writeFileSync(join(fx.studyDir, 'build', 'manifest.json'), '{"format": ');
    await srv.watcher!.scan();
    assert.equal(srv.registry.get('fixture'), served);
    assert.ok(logs.some((l) => l.level === 40 && l.study === 'fixture' && /not valid JSON/.test(String(l.problem))), JSON.stringify(logs.filter((l) => l.level === 40)));
    assert.equal((await call(srv.url, 'POST', '/api/sessions', { study: 'fixture', participant: 'after-break' })).status, 201);
  } finally {
    await srv.close();
  }
});
