// The experimenter's side: admin tokens made by the real command, the bearer-token admin API
// (progress, participants, streaming CSV, audit log), the dashboard's static page, and
// `legible withdraw` and `legible backup` against a running server.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { connect } from 'node:net';
import { Writable } from 'node:stream';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { pino } from 'pino';
import { TRIAL_COLUMNS, parseCsv } from '@legible/analysis';
import type { CreateSessionResponse } from '@legible/studies';
import type { Task } from '../src/assign.ts';
import { openDatabase } from '../src/db.ts';
import { makeFixture, type Fixture } from './fixture.ts';
import { answer, bearer, call, createSession, runCommand, serveFixture, type TestServer } from './http.ts';

const lastLine = (s: string) => s.trim().split('\n').at(-1)!;

async function newToken(dbFile: string, label?: string): Promise<string> {
  const r = await runCommand('admin-token', ['create', ...(label ? ['--label', label] : []), '--db', dbFile]);
  assert.equal(r.code, 0, r.stderr);
  const token = lastLine(r.stdout);
  assert.match(token, /^lgb_[A-Za-z0-9_-]{43}$/, 'the token alone on the last line');
  return token;
}

/** Run one participant through: answer everything (catch trials right or wrong as asked), finish. */
async function participant(srv: TestServer, who: string, opts: { catchCorrect?: boolean; minutes?: number; finish?: boolean } = {}) {
  const s = (await createSession(srv.url, 'fixture', { PROLIFIC_PID: who })).body as CreateSessionResponse;
  const tasks = JSON.parse(srv.db.sessionById(s.session)!.tasks) as Task[];
  for (const t of tasks) {
    const right = t.kind === 'catch' ? (opts.catchCorrect ?? true) : true;
    const r = await call(srv.url, 'PUT', `/api/sessions/${s.session}/trials/${t.seq}`, answer((right ? t.answer : 1 - t.answer) as 0 | 1), bearer(s.token));
    assert.equal(r.status, 200, r.text);
  }
  srv.clock.ms += (opts.minutes ?? 10) * 60_000;
  if (opts.finish !== false) assert.equal((await call(srv.url, 'POST', `/api/sessions/${s.session}/finish`, undefined, bearer(s.token))).status, 200);
  return s;
}

describe('admin tokens, the admin API and the dashboard', () => {
  let fx: Fixture;
  let srv: TestServer;
  let token: string;

  before(async () => {
    fx = makeFixture({
      recruitment: ['  platform: prolific', '  completed:', '    code: OK-1', '  failed_checks:', '    code: FAIL-1', '  reward:', '    amount: 1.5', '    currency: GBP'],
      exclusions: ['  catch_accuracy_min: 0.5', '  min_distinct_responses: 2', '  instruction_time_s_min: 5'],
    });
    srv = await serveFixture(fx, { limits: { adminFailuresPer15Min: 8 } });
    token = await newToken(srv.dbFile, 'tests');
  });
  after(async () => {
    await srv.close();
    fx.cleanup();
  });

  test('admin-token create stores only a hash; list shows it; no token → 401', async () => {
    const stored = srv.db.sqlite.prepare('SELECT * FROM admin_tokens').all() as { token_hash: string; label: string }[];
    assert.equal(stored.length, 1);
    assert.equal(stored[0].label, 'tests');
    assert.match(stored[0].token_hash, /^[0-9a-f]{64}$/);
    const dump = JSON.stringify(srv.db.sqlite.prepare('SELECT * FROM admin_tokens').all()) + JSON.stringify(srv.db.sqlite.prepare('SELECT * FROM audit').all());
    assert.ok(!dump.includes(token) && !dump.includes(token.slice(4)), 'the token itself is nowhere in the database');
    const list = await runCommand('admin-token', ['list', '--db', srv.dbFile]);
    assert.equal(list.code, 0);
    assert.match(list.stdout, /^1\ttests\t\d{4}-/m);
    assert.ok(!list.stdout.includes(token));
    for (const headers of [{}, { authorization: 'Bearer nope' }, { authorization: `Bearer ${token}x` }, { authorization: token }] as Record<string, string>[]) {
      const r = await call(srv.url, 'GET', '/api/admin/studies', undefined, headers);
      assert.equal(r.status, 401);
      assert.match(r.body.error, /legible admin-token create/);
    }
    const bad = await runCommand('admin-token', ['frobnicate', '--db', srv.dbFile]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /unknown subcommand "frobnicate"/);
  });

  test('progress per condition and unit, completion and exclusion counts, median time and hourly pay', async () => {
    await participant(srv, 'PID-A', { minutes: 10 });
    await participant(srv, 'PID-B', { minutes: 20, catchCorrect: false });
    await participant(srv, 'PID-C', { minutes: 30 });
    await participant(srv, 'PID-D', { finish: false });
    const r = await call(srv.url, 'GET', '/api/admin/studies', undefined, bearer(token));
    assert.equal(r.status, 200, r.text);
    const [study] = r.body.studies;
    assert.equal(study.id, 'fixture');
    assert.equal(study.mode, 'pilot');
    assert.deepEqual(study.sessions, { total: 4, active: 1, leased: 1, finished: 3, completed: 2, failed_checks: 1 });
    assert.equal(study.median_completion_minutes, 20);
    assert.deepEqual(study.reward, { amount: 1.5, currency: 'GBP' });
    assert.equal(study.hourly_pay, 4.5, '1.50 GBP per 20 minutes');
    assert.deepEqual(study.pay_guidance, { minimum: 6, recommended: 9 });
    // PID-B fails the catch trials; the button rule depends on the keys each one drew (checked against the participant list below).
    assert.ok(study.exclusions.excluded >= 1);
    assert.equal(study.exclusions.by_rule.catch_accuracy, 1);
    // The counts as export and analyze define them (analysis/test/counts.test.ts checks all three agree):
    // PID-D did not press finish but answered every trial, so it is not incomplete.
    assert.equal(study.exclusions.counts.sessions, 4);
    assert.equal(study.exclusions.counts.incomplete, 0);
    assert.equal(study.exclusions.excluded, study.exclusions.counts.excluded_by_rules);
    // Unit progress equals the database's count of main responses per feature.
    const counts = new Map((srv.db.sqlite.prepare("SELECT feature, count(*) AS n FROM trials WHERE kind = 'main' GROUP BY feature").all() as { feature: string; n: number }[]).map((x) => [x.feature, x.n]));
    const [cond] = study.conditions;
    assert.equal(cond.condition, '');
    assert.equal(cond.units.length, 8);
    for (const u of cond.units) {
      assert.equal(u.responses, counts.get(u.feature) ?? 0, u.feature);
      assert.equal(u.target, 30);
      assert.equal(u.leased, 0, 'every leased trial is answered');
    }
    assert.equal(cond.responses, 16);
    assert.equal(cond.target, 8 * 30);
    assert.deepEqual(cond.sessions, { active: 1, finished: 3 });
    const one = await call(srv.url, 'GET', '/api/admin/studies/fixture', undefined, bearer(token));
    assert.deepEqual(one.body.sessions, study.sessions);
    assert.equal((await call(srv.url, 'GET', '/api/admin/studies/nope', undefined, bearer(token))).status, 404);
    assert.equal((await call(srv.url, 'GET', '/api/admin/studies/fixture?mode=weird', undefined, bearer(token))).status, 400);
  });

  test('participants: pseudonyms only, unless ?identities=1 (audited separately)', async () => {
    const r = await call(srv.url, 'GET', '/api/admin/studies/fixture/participants', undefined, bearer(token));
    assert.equal(r.status, 200);
    assert.equal(r.body.participants.length, 4);
    assert.ok(!r.text.includes('PID-A'), 'no raw Prolific ids by default');
    const progress = (await call(srv.url, 'GET', '/api/admin/studies/fixture', undefined, bearer(token))).body;
    assert.equal(progress.exclusions.excluded, r.body.participants.filter((p: { excluded_by: string[] }) => p.excluded_by.length > 0).length);
    const b = r.body.participants.find((p: { catch: { correct: number; n: number } }) => p.catch.n > 0 && p.catch.correct === 0);
    assert.deepEqual(b.excluded_by.includes('catch_accuracy'), true);
    assert.equal(b.outcome, 'failed_checks');
    assert.equal(b.answered, 8);
    assert.equal(b.required, 8);
    assert.match(b.participant, /^[0-9a-f]{12}$/);
    const withIds = await call(srv.url, 'GET', '/api/admin/studies/fixture/participants?identities=1', undefined, bearer(token));
    assert.deepEqual(withIds.body.participants.map((p: { identity: { prolific_pid: string } }) => p.identity.prolific_pid).sort(), ['PID-A', 'PID-B', 'PID-C', 'PID-D']);
    const audit = await call(srv.url, 'GET', '/api/admin/audit', undefined, bearer(token));
    const actions = audit.body.entries.map((e: { action: string }) => e.action);
    assert.ok(actions.includes('participants.identities') && actions.includes('participants.list') && actions.includes('studies.list'));
    assert.equal(actions[0], 'audit.read', 'newest first');
    assert.ok(audit.body.entries.every((e: { actor: string; at: string }) => /^(token 1 \(tests\)|cli)$/.test(e.actor) && /^\d{4}-/.test(e.at)));
    assert.ok(!audit.text.includes('PID-A'));
  });

  test('trials.csv streams the tidy CSV of every answered trial; a study without sessions → just the header', async () => {
    const r = await fetch(`${srv.url}/api/admin/studies/fixture/trials.csv`, { headers: bearer(token) });
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type') ?? '', /^text\/csv/);
    assert.match(r.headers.get('content-disposition') ?? '', /attachment; filename="fixture-trials.csv"/);
    const rows = parseCsv(await r.text());
    assert.deepEqual(rows[0], TRIAL_COLUMNS.map((c) => c.name));
    const n = (srv.db.sqlite.prepare('SELECT count(*) AS n FROM trials').get() as { n: number }).n;
    assert.equal(rows.length - 1, n);
    assert.ok(n >= 32);
    const dict = await call(srv.url, 'GET', '/api/admin/studies/fixture/data-dictionary.md', undefined, bearer(token));
    assert.match(dict.text, /# trials.csv — data dictionary/);
    assert.equal((await call(srv.url, 'GET', '/api/admin/studies/nope/trials.csv', undefined, bearer(token))).status, 404);
    assert.equal((await call(srv.url, 'GET', '/api/admin/studies/fixture/trials.csv')).status, 401);
  });

  test('the dashboard: static page, script and style sheet, no inline script, CSP', async () => {
    const page = await call(srv.url, 'GET', '/admin');
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type') ?? '', /text\/html/);
    assert.match(page.text, /<script type="module" src="\/admin\/admin.js"><\/script>/);
    assert.doesNotMatch(page.text.replace(/<script[^>]*src="[^"]+"[^>]*><\/script>/g, ''), /<script/i, 'no inline scripts');
    assert.doesNotMatch(page.text, /\son[a-z]+=/i, 'no inline event handlers');
    assert.match(page.headers.get('content-security-policy') ?? '', /script-src 'self'(;|$)/);
    const js = await call(srv.url, 'GET', '/admin/admin.js');
    assert.equal(js.status, 200);
    assert.match(js.headers.get('content-type') ?? '', /javascript/);
    assert.match(js.text, /sessionStorage/);
    assert.doesNotMatch(js.text, /innerHTML|outerHTML|insertAdjacentHTML|document\.write/, 'server text goes in as text only');
    const css = await call(srv.url, 'GET', '/admin/admin.css');
    assert.equal(css.status, 200);
    assert.match(css.headers.get('content-type') ?? '', /text\/css/);
    assert.equal((await call(srv.url, 'GET', '/admin/nope.js')).status, 404);
  });

  test('revoked tokens stop working at once', async () => {
    const second = await newToken(srv.dbFile);
    assert.equal((await call(srv.url, 'GET', '/api/admin/audit', undefined, bearer(second))).status, 200);
    const r = await runCommand('admin-token', ['revoke', '2', '--db', srv.dbFile]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((await call(srv.url, 'GET', '/api/admin/audit', undefined, bearer(second))).status, 401);
    const again = await runCommand('admin-token', ['revoke', '2', '--db', srv.dbFile]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /no live admin token with id 2/);
  });

  test('failed admin logins are rate limited per address (429 with Retry-After); a valid token keeps working', async () => {
    const statuses: number[] = [];
    let retryAfter: string | null = null;
    for (let i = 0; i < 10; i++) {
      const r = await call(srv.url, 'GET', '/api/admin/studies', undefined, { authorization: 'Bearer lgb_guessguessguessguessguess' });
      statuses.push(r.status);
      if (r.status === 429) retryAfter = r.headers.get('retry-after');
    }
    // Earlier tests made 6 failed attempts; the limit is 8 per 15 minutes.
    assert.deepEqual(statuses, [401, 401, 429, 429, 429, 429, 429, 429, 429, 429]);
    assert.ok(Number(retryAfter) > 0 && Number(retryAfter) <= 900, `Retry-After: ${retryAfter}`);
    assert.equal((await call(srv.url, 'GET', '/api/admin/studies', undefined, bearer(token))).status, 200);
  });
});

test('a large trials.csv streams; a client that goes away stops the export (and its database connection)', async () => {
  const fx = makeFixture();
  const lines: string[] = [];
  const log = pino({ level: 'info' }, new Writable({ write: (c, _e, done) => (lines.push(String(c)), done()) }));
  const srv = await serveFixture(fx, { log });
  try {
    const s = (await createSession(srv.url, 'fixture', { participant: 'bulk' })).body as CreateSessionResponse;
    // 60,000 rows under one session (written directly: the export does not care how they came),
    // about 15 MB of CSV: more than the socket buffers hold, so the export has to wait for the client.
    const insert = srv.db.sqlite.prepare(
      `INSERT INTO trials (session_id, seq, study, participant, trial_id, feature, layer, basis, feature_index, kind, reference_kind, query_images, answer, choice,
                           confidence, correct, rt_ms, server_time, payload_hash, mode)
       VALUES (?, ?, 'fixture', 'p', 't', 'block1/nmf/0', 'block1', 'nmf', 0, 'main', 'natural', '["a","b"]', 0, 0, 3, 1, 500, '2030-01-01T00:00:00.000Z', 'h', 'pilot')`,
    );
    srv.db.write(() => {
      for (let i = 100; i < 60_100; i++) insert.run(s.session, i);
    });
    const { token } = srv.db.createAdminToken('bulk');

    // Read the first bytes, then hang up.
    const url = new URL(srv.url);
    await new Promise<void>((resolve, reject) => {
      const socket = connect({ host: url.hostname, port: Number(url.port) }, () => {
        socket.write(`GET /api/admin/studies/fixture/trials.csv HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\n\r\n`);
      });
      socket.once('data', () => {
        socket.pause();
        setTimeout(() => {
          socket.destroy();
          resolve();
        }, 100);
      });
      socket.on('error', reject);
    });
    // The export notices, stops reading and closes its database connection (it would otherwise wait
    // for the client forever, holding a read transaction that keeps the WAL from being checkpointed).
    for (let i = 0; i < 40 && !lines.some((l) => l.includes('export stopped: the client went away')); i++) await new Promise((r) => setTimeout(r, 50));
    assert.ok(lines.some((l) => l.includes('export stopped: the client went away')), 'the export stopped');
    const full = await fetch(`${srv.url}/api/admin/studies/fixture/trials.csv`, { headers: bearer(token) });
    const reader = full.body!.getReader();
    let newlines = 0;
    for (let r = await reader.read(); !r.done; r = await reader.read()) for (const byte of r.value) if (byte === 10) newlines++;
    assert.equal(newlines, 60_001, 'the whole export: header and every row');
  } finally {
    await srv.close();
    fx.cleanup();
  }
});

describe('withdraw and backup, against a running server', () => {
  test('legible withdraw deletes identity, sessions, trials and events of one participant, and audits it', async () => {
    const fx = makeFixture();
    const srv = await serveFixture(fx);
    try {
      const keep = await participant(srv, 'KEEP-ME');
      const gone = await participant(srv, 'WITHDRAW-ME', { finish: false });
      const ev = await call(srv.url, 'POST', `/api/sessions/${gone.session}/events`, { events: [{ type: 'blur', at: 1 }, { type: 'focus', at: 2 }] }, bearer(gone.token));
      assert.equal(ev.status, 204);
      const r = await runCommand('withdraw', ['WITHDRAW-ME', '--study', 'fixture', '--db', srv.dbFile]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /1 session\(s\), 8 trial\(s\), 2 event\(s\) deleted/);
      const count = (sql: string, ...args: unknown[]) => (srv.db.sqlite.prepare(sql).get(...args) as { n: number }).n;
      assert.equal(count('SELECT count(*) AS n FROM identities WHERE prolific_pid = ?', 'WITHDRAW-ME'), 0);
      assert.equal(count('SELECT count(*) AS n FROM sessions WHERE id = ?', gone.session), 0);
      assert.equal(count('SELECT count(*) AS n FROM trials WHERE session_id = ?', gone.session), 0);
      assert.equal(count('SELECT count(*) AS n FROM events WHERE session_id = ?', gone.session), 0);
      assert.equal(count('SELECT count(*) AS n FROM trials WHERE session_id = ?', keep.session), 8, 'the others stay');
      const audit = srv.db.auditLog(10).find((e) => e.action === 'withdraw')!;
      assert.equal(audit.actor, 'cli');
      assert.deepEqual(JSON.parse(audit.detail!), { participants: 1, sessions: 1, trials: 8, events: 2 });
      assert.ok(!JSON.stringify(srv.db.auditLog(100)).includes('WITHDRAW-ME'), 'the audit log has counts, not the id');
      // Their token no longer opens anything; nothing can be written for the deleted session.
      const put = await call(srv.url, 'PUT', `/api/sessions/${gone.session}/trials/0`, answer(0), bearer(gone.token));
      assert.equal(put.status, 401);
      const none = await runCommand('withdraw', ['NOBODY', '--study', 'fixture', '--db', srv.dbFile]);
      assert.equal(none.code, 1);
      assert.match(none.stdout, /nothing stored for that participant/);
      const usage = await runCommand('withdraw', ['X', '--db', srv.dbFile]);
      assert.equal(usage.code, 2);
      assert.match(usage.stderr, /--study ID is required/);
    } finally {
      await srv.close();
      fx.cleanup();
    }
  });

  test('legible backup under concurrent writes: the copy opens, passes its check, and holds every answer acknowledged before it began', async () => {
    const fx = makeFixture({ trialsPerParticipant: 8, mainPerFeature: 2 });
    const srv = await serveFixture(fx);
    try {
      const acked: { session: string; seq: number; at: number }[] = [];
      let stop = false;
      // 12 writers, each taking part as one participant after another, until the backup is done.
      const writers = Array.from({ length: 12 }, async (_, i) => {
        for (let k = 0; !stop; k++) {
          const s = (await createSession(srv.url, 'fixture', { participant: `bk-${i}-${k}` })).body as CreateSessionResponse;
          for (const t of s.trials) {
            if (stop) return;
            const r = await call(srv.url, 'PUT', `/api/sessions/${s.session}/trials/${t.seq}`, answer(0), bearer(s.token));
            if (r.status === 200) acked.push({ session: s.session, seq: t.seq, at: performance.now() });
          }
        }
      });
      while (acked.length < 30) await new Promise((r) => setTimeout(r, 20));
      const out = join(fx.root, 'backup.db');
      const startedAt = performance.now();
      const r = await runCommand('backup', ['--db', srv.dbFile, '--out', out]);
      const during = acked.filter((a) => a.at > startedAt).length;
      stop = true;
      await Promise.all(writers);
      assert.ok(during > 0, 'answers were being written while the backup ran');
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /integrity ok/);
      assert.ok(existsSync(out) && !existsSync(`${out}.partial`));
      const before = acked.filter((a) => a.at < startedAt);
      assert.ok(before.length >= 30, `answers acknowledged before the backup: ${before.length}`);
      const copy = new Database(out, { readonly: true, fileMustExist: true });
      try {
        assert.equal(copy.pragma('integrity_check', { simple: true }), 'ok');
        assert.equal(copy.pragma('journal_mode', { simple: true }), 'delete', 'a self-contained file');
        const has = copy.prepare('SELECT 1 FROM trials WHERE session_id = ? AND seq = ?');
        for (const a of before) assert.ok(has.get(a.session, a.seq), `acknowledged ${a.session}/${a.seq} is in the backup`);
        const dup = copy.prepare('SELECT count(*) AS n FROM (SELECT session_id, seq FROM trials GROUP BY session_id, seq HAVING count(*) > 1)').get() as { n: number };
        assert.equal(dup.n, 0);
      } finally {
        copy.close();
      }
      // The copy is a working legible database.
      const db = openDatabase(out);
      assert.ok(db.sessionsOfStudy('fixture').length >= 12);
      db.close();
      assert.ok(srv.db.auditLog(5).some((e) => e.action === 'backup'));
      const exists = await runCommand('backup', ['--db', srv.dbFile, '--out', out]);
      assert.equal(exists.code, 1);
      assert.match(exists.stderr, /exists: choose another --out, or add --force/);
    } finally {
      await srv.close();
      fx.cleanup();
    }
  });
});
