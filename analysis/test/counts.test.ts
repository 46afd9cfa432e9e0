// One definition of each session count: `legible export`, `legible analyze` and the dashboard
// (GET /api/admin/studies/:id) report the same numbers for the same database — every session of
// the mode (also one that never answered), those that did not finish, those a study rule excludes,
// all excluded, and those analysed — and the data dictionary defines them. A real server on
// 127.0.0.1 with a real SQLite file; the two commands run as real processes.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { CreateSessionResponse } from '@legible/studies';
import { makeFixture, type Fixture } from '../../server/test/fixture.ts';
import { answer, bearer, call, createSession, serveFixture, type TestServer } from '../../server/test/http.ts';
import { COUNT_DEFINITIONS, formatCounts, type SessionCounts } from '../src/exclusions.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
let fx: Fixture;
let srv: TestServer;

interface Plan {
  who: string;
  catchRight: boolean;
  answer: number | 'all';
  finish: boolean;
}
const plans: Plan[] = [
  { who: 'C-1', catchRight: true, answer: 'all', finish: true },
  { who: 'C-2', catchRight: true, answer: 'all', finish: true },
  { who: 'C-3', catchRight: false, answer: 'all', finish: true }, // catch accuracy 0 < 0.5
  { who: 'C-4', catchRight: true, answer: 3, finish: false }, // left after three trials
  { who: 'C-5', catchRight: true, answer: 0, finish: false }, // consented, never answered
];

before(async () => {
  fx = makeFixture({ exclusions: ['  catch_accuracy_min: 0.5'] });
  srv = await serveFixture(fx);
  for (const p of plans) {
    const s = (await createSession(srv.url, 'fixture', { PROLIFIC_PID: p.who })).body as CreateSessionResponse;
    const tasks = JSON.parse(srv.db.sessionById(s.session)!.tasks) as { seq: number; kind: string; answer: 0 | 1 }[];
    const n = p.answer === 'all' ? tasks.length : p.answer;
    for (const t of tasks.slice(0, n)) {
      const right = t.kind === 'catch' ? p.catchRight : true;
      const r = await call(srv.url, 'PUT', `/api/sessions/${s.session}/trials/${t.seq}`, answer((right ? t.answer : 1 - t.answer) as 0 | 1), bearer(s.token));
      assert.equal(r.status, 200, r.text);
    }
    srv.clock.ms += 5 * 60_000;
    if (p.finish) assert.equal((await call(srv.url, 'POST', `/api/sessions/${s.session}/finish`, undefined, bearer(s.token))).status, 200);
  }
});
after(async () => {
  await srv?.close();
  fx?.cleanup();
});

/** A legible command as a real process, without blocking this process's server. */
function legible(...args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(root, 'bin/legible.mjs'), ...args], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 300_000 });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.once('error', reject);
    child.once('exit', (status) => resolve({ status, stdout, stderr }));
  });
}

test('export, analyze and the dashboard give the same session counts, defined once in the data dictionary', async () => {
  // Worked out from the plans: what each count must be under its definition.
  const expected: SessionCounts = { mode: 'pilot', sessions: 5, incomplete: 2, excluded_by_rules: 1, excluded: 3, analysed: 2, by_rule: { catch_accuracy: 1 } };

  const exp = await legible('export', 'fixture', '--db', srv.dbFile, '--studies', fx.studiesDir, '--out', join(fx.root, 'export'));
  assert.equal(exp.status, 0, exp.stderr);
  assert.ok(exp.stdout.includes(formatCounts(expected)), `export says:\n${exp.stdout}`);

  const out = join(fx.root, 'analysis');
  const an = await legible('analyze', 'fixture', '--db', srv.dbFile, '--studies', fx.studiesDir, '--out', out, '--no-power', '--boot', '50', '--permutations', '50');
  assert.equal(an.status, 0, an.stderr);
  assert.ok(an.stdout.includes(formatCounts(expected)), `analyze says:\n${an.stdout}`);
  const results = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8'));
  assert.deepEqual(results.sessionCounts, expected);
  assert.ok(readFileSync(join(out, 'report.html'), 'utf8').includes(formatCounts(expected)), 'the report says the same');
  assert.equal(results.exclusions.participants, 5, 'the session without answers is counted too');
  assert.equal(results.exclusions.excluded, 3);

  const tok = await legible('admin-token', 'create', '--db', srv.dbFile);
  assert.equal(tok.status, 0, tok.stderr);
  const token = tok.stdout.trim().split('\n').at(-1)!;
  const dash = await call(srv.url, 'GET', '/api/admin/studies/fixture', undefined, bearer(token));
  assert.equal(dash.status, 200, dash.text);
  assert.deepEqual(dash.body.exclusions.counts, expected);
  assert.equal(dash.body.exclusions.excluded, expected.excluded_by_rules, 'the dashboard\'s "excluded (study rules)"');
  assert.equal(dash.body.sessions.total, expected.sessions);
  const list = await call(srv.url, 'GET', '/api/admin/studies/fixture/participants', undefined, bearer(token));
  assert.equal(list.body.participants.filter((p: { excluded_by: string[] }) => p.excluded_by.length > 0).length, expected.excluded_by_rules);

  const dict = readFileSync(join(fx.root, 'export', 'data-dictionary.md'), 'utf8');
  assert.match(dict, /## Session counts/);
  for (const d of COUNT_DEFINITIONS) assert.ok(dict.includes(`**${d.label}** (\`${d.key}\`): ${d.definition}`), d.key);
});
