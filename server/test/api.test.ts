// The HTTP contract (server/API.md) against a real server and a real SQLite file.
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CreateSessionResponse, FinishResponse, StudyInfo, TrialAck, type TaskTrial } from '@legible/studies';
import type { Task } from '../src/assign.ts';
import { openDatabase } from '../src/db.ts';
import { makeFixture, type Fixture } from './fixture.ts';
import { answer, bearer, call, createSession, rawGet, serveFixture, type TestServer } from './http.ts';

/** Every body a participant's browser received (in the first suite), for the answer-key check. */
const participantBodies: string[] = [];
const p = async <T = any>(...args: Parameters<typeof call>) => {
  const r = await call<T>(...args);
  participantBodies.push(r.text);
  return r;
};

const create = (who: Record<string, string>) => p<CreateSessionResponse>(srvUrl(), 'POST', '/api/sessions', { study: 'fixture', ...who });
let srvUrl = () => '';

const serverTasks = (srv: TestServer, session: string): Task[] => JSON.parse(srv.db.sessionById(session)!.tasks) as Task[];

/** The choice answerAll makes: catch trials right or wrong as asked, a third of the others wrong. */
const choiceFor = (t: Task, catchCorrect = true) => ((t.kind === 'catch' ? catchCorrect : t.seq % 3 !== 0) ? t.answer : 1 - t.answer) as 0 | 1;

/** Answer every trial; catch trials right or wrong as asked. */
async function answerAll(srv: TestServer, s: CreateSessionResponse, opts: { catchCorrect?: boolean; skip?: number[] } = {}) {
  const tasks = serverTasks(srv, s.session);
  const acks: TrialAck[] = [];
  for (const t of tasks) {
    if (opts.skip?.includes(t.seq)) continue;
    const r = await p<TrialAck>(srv.url, 'PUT', `/api/sessions/${s.session}/trials/${t.seq}`, answer(choiceFor(t, opts.catchCorrect)), bearer(s.token));
    assert.equal(r.status, 200, r.text);
    acks.push(r.body);
  }
  return acks;
}

describe('the study server over HTTP', () => {
  let fx: Fixture;
  let srv: TestServer;

  before(async () => {
    fx = makeFixture({ consentExtra: '<script>alert("x")</script>\n\n[click](javascript:alert(1)) <img src=x onerror=alert(2)>' });
    srv = await serveFixture(fx);
    srvUrl = () => srv.url;
  });
  after(async () => {
    await srv.close();
    fx.cleanup();
  });

  test('GET /api/studies/:id → StudyInfo with safe HTML, codes and redirects', async () => {
    const r = await p<StudyInfo>(srv.url, 'GET', '/api/studies/fixture');
    assert.equal(r.status, 200);
    const info = StudyInfo.parse(r.body);
    assert.equal(info.id, 'fixture');
    assert.equal(info.platform, 'prolific');
    assert.match(info.html.consent, /<h2>Consent<\/h2>/);
    assert.match(info.html.consent, /<strong>pictures<\/strong>/);
    assert.doesNotMatch(info.html.consent, /<script|<img src=x|javascript:/i, 'raw HTML and script URLs are neutralised');
    assert.match(info.html.consent, /&lt;script&gt;/);
    assert.match(info.html.instructions, /<em>right<\/em>/);
    assert.deepEqual(info.no_consent, { code: 'FIX-NOCONSENT', redirect: 'https://app.prolific.com/submissions/complete?cc=FIX-NOCONSENT' });
    assert.deepEqual(info.incompatible_device, { code: null, redirect: null });
    assert.deepEqual(info.trials, { main: 6, practice: 2 });
    assert.equal((await call(srv.url, 'GET', '/api/studies/nope')).status, 404);
  });

  test('POST /api/sessions creates (201), resumes (200, same session and token), never a second session', async () => {
    const first = await p<CreateSessionResponse>(srv.url, 'POST', '/api/sessions', { study: 'fixture', PROLIFIC_PID: 'pid-resume', STUDY_ID: 's1', SESSION_ID: 'x1' });
    assert.equal(first.status, 201, first.text);
    const s = CreateSessionResponse.parse(first.body);
    assert.equal(s.trials.length, 8);
    assert.equal(s.resume_at, 0);
    assert.deepEqual(s.trials.map((t) => t.practice), [true, true, false, false, false, false, false, false]);
    assert.equal(s.config.max_side, 'right');
    assert.equal(s.config.per_side, 9);
    for (const t of s.trials) {
      for (const url of [t.min_url, t.max_url, ...t.query_urls]) {
        assert.match(url, /^\/stimuli\/fixture\/img\/[0-9a-f]{16}\.png$/);
        const img = await fetch(srv.url + url);
        assert.equal(img.status, 200);
        assert.equal(img.headers.get('content-type'), 'image/png');
        assert.match(img.headers.get('cache-control') ?? '', /immutable/);
        await img.arrayBuffer();
      }
    }
    // Two answers, then come back.
    await p(srv.url, 'PUT', `/api/sessions/${s.session}/trials/0`, answer(0), bearer(s.token));
    await p(srv.url, 'PUT', `/api/sessions/${s.session}/trials/1`, answer(1), bearer(s.token));
    // Another Prolific attempt (SESSION_ID) with the same id is refused (server/API.md, Resuming).
    const other = await p(srv.url, 'POST', '/api/sessions', { study: 'fixture', PROLIFIC_PID: 'pid-resume', STUDY_ID: 's1', SESSION_ID: 'x2' });
    assert.equal(other.status, 403);
    const again = await p<CreateSessionResponse>(srv.url, 'POST', '/api/sessions', { study: 'fixture', PROLIFIC_PID: 'pid-resume', STUDY_ID: 's1', SESSION_ID: 'x1' });
    assert.equal(again.status, 200);
    assert.equal(again.body.session, s.session);
    assert.equal(again.body.token, s.token);
    assert.deepEqual(again.body.trials, s.trials);
    assert.equal(again.body.resume_at, 2);
    // Answers out of order: resume_at is the first unanswered seq.
    await p(srv.url, 'PUT', `/api/sessions/${s.session}/trials/5`, answer(1), bearer(s.token));
    assert.equal((await p<CreateSessionResponse>(srv.url, 'POST', '/api/sessions', { study: 'fixture', PROLIFIC_PID: 'pid-resume', resume: s.resume_secret })).body.resume_at, 2);
    const rows = srv.db.sqlite.prepare("SELECT count(*) AS n FROM sessions WHERE study = 'fixture'").get() as { n: number };
    assert.ok(rows.n >= 1);
    assert.equal((srv.db.sqlite.prepare('SELECT count(*) AS n FROM identities WHERE prolific_pid = ?').get('pid-resume') as { n: number }).n, 1);
  });

  test('concurrent creates for one participant give one session', async () => {
    const replies = await Promise.all(Array.from({ length: 8 }, () => create({ PROLIFIC_PID: 'racer', SESSION_ID: 'racer-attempt' })));
    assert.deepEqual(replies.map((r) => r.status).sort(), [200, 200, 200, 200, 200, 200, 200, 201]);
    assert.equal(new Set(replies.map((r) => r.body.session)).size, 1);
  });

  test('raw Prolific ids are kept only in identities; everything else has the pseudonym', async () => {
    const pid = 'PIDSECRET0123456789abcd';
    const r = await create({ PROLIFIC_PID: pid, STUDY_ID: 'STUDYSECRET', SESSION_ID: 'SESSIONSECRET' });
    await call(srv.url, 'PUT', `/api/sessions/${r.body.session}/trials/0`, answer(0), bearer(r.body.token));
    const id = srv.db.sqlite.prepare('SELECT * FROM identities WHERE prolific_pid = ?').get(pid) as Record<string, string>;
    assert.equal(id.prolific_study_id, 'STUDYSECRET');
    assert.equal(id.prolific_session_id, 'SESSIONSECRET');
    assert.match(id.participant, /^[0-9a-f]{64}$/);
    for (const table of ['sessions', 'trials', 'meta']) {
      const dump = JSON.stringify(srv.db.sqlite.prepare(`SELECT * FROM ${table}`).all());
      for (const raw of [pid, 'STUDYSECRET', 'SESSIONSECRET']) assert.ok(!dump.includes(raw), `${raw} not in ${table}`);
    }
    const session = srv.db.sessionById(r.body.session)!;
    assert.equal(session.participant, id.participant);
  });

  test('bad session requests: 400 naming each field, 404 for an unknown study', async () => {
    let r = await call(srv.url, 'POST', '/api/sessions', { study: 'fixture' });
    assert.equal(r.status, 400);
    assert.match(r.body.error, /participant.*PROLIFIC_PID/);
    r = await call(srv.url, 'POST', '/api/sessions', { study: 'fixture', PROLIFIC_PID: '', colour: 'red' });
    assert.equal(r.status, 400);
    const fields = (r.body.detail.fields as { field: string }[]).map((f) => f.field).sort();
    assert.deepEqual(fields, ['PROLIFIC_PID', 'colour']);
    assert.match(r.body.error, /colour: unknown field; allowed: study, PROLIFIC_PID, STUDY_ID, SESSION_ID/);
    r = await call(srv.url, 'POST', '/api/sessions', { study: 'other', participant: 'p' });
    assert.equal(r.status, 404);
    assert.match(r.body.error, /no study "other"/);
    r = await call(srv.url, 'POST', '/api/sessions', '[1,2]');
    assert.equal(r.status, 400);
    r = await call(srv.url, 'POST', '/api/sessions', '{"study": ');
    assert.equal(r.status, 400);
    assert.equal(r.body.error, 'request body is not valid JSON: send a JSON object');
    r = await call(srv.url, 'POST', '/api/sessions', JSON.stringify({ study: 'fixture', participant: 'x'.repeat(20_000) }));
    assert.equal(r.status, 413);
    assert.match(r.body.error, /too large/);
    r = await call(srv.url, 'POST', '/api/sessions', 'study=fixture', { 'content-type': 'application/x-www-form-urlencoded' });
    assert.equal(r.status, 400);
    assert.match(r.body.error, /Content-Type: application\/json/);
  });

  test('PUT is exactly once: replay → the same ack, different payload → 409, concurrent duplicates → one row', async () => {
    const s = (await create({ participant: 'once' })).body;
    const path = `/api/sessions/${s.session}/trials/3`;
    const body = answer(1, { input: 'key', onset_ms: 10.25, response_ms: 822.75, client_time: 1.9e12, window: [1280, 800], screen: [1920, 1080], dpr: 2, plugin_version: '0.1.0', query_order: [1, 0] });
    const first = await p<TrialAck>(srv.url, 'PUT', path, body, bearer(s.token));
    assert.equal(first.status, 200, first.text);
    TrialAck.parse(first.body);
    assert.equal(first.body.seq, 3);
    assert.equal(first.body.feedback, undefined, 'no feedback on a main or catch trial');

    srv.clock.ms += 5000;
    // The same payload with keys in another order is the same payload.
    const reordered = Object.fromEntries(Object.entries(body).reverse());
    const replay = await p<TrialAck>(srv.url, 'PUT', path, reordered, bearer(s.token));
    assert.equal(replay.status, 200);
    assert.deepEqual(replay.body, first.body, 'same ack, same recorded_at');

    const changed = await call(srv.url, 'PUT', path, { ...body, confidence: 1 }, bearer(s.token));
    assert.equal(changed.status, 409);
    assert.match(changed.body.error, /already recorded with a different answer/);

    // 12 identical PUTs at once for another seq.
    const path4 = `/api/sessions/${s.session}/trials/4`;
    const burst = await Promise.all(Array.from({ length: 12 }, () => call<TrialAck>(srv.url, 'PUT', path4, answer(0), bearer(s.token))));
    assert.ok(burst.every((r) => r.status === 200));
    assert.equal(new Set(burst.map((r) => JSON.stringify(r.body))).size, 1);
    // And conflicting ones at once for a third: exactly one wins.
    const path6 = `/api/sessions/${s.session}/trials/6`;
    const mixed = await Promise.all([0, 1, 0, 1, 0, 1].map((q) => call(srv.url, 'PUT', path6, answer(q as 0 | 1), bearer(s.token))));
    const ok = mixed.filter((r) => r.status === 200).length;
    assert.ok(ok >= 1 && mixed.every((r) => r.status === 200 || r.status === 409));
    const stored = srv.db.sqlite.prepare('SELECT seq, count(*) AS n FROM trials WHERE session_id = ? GROUP BY seq').all(s.session) as { seq: number; n: number }[];
    assert.deepEqual(stored, [
      { seq: 3, n: 1 },
      { seq: 4, n: 1 },
      { seq: 6, n: 1 },
    ]);

    const row = srv.db.sqlite.prepare('SELECT * FROM trials WHERE session_id = ? AND seq = 3').get(s.session) as Record<string, unknown>;
    const task = serverTasks(srv, s.session)[3];
    assert.equal(row.choice, 1);
    assert.equal(row.confidence, 3);
    assert.equal(row.correct, task.answer === 1 ? 1 : 0);
    assert.equal(row.answer, task.answer);
    assert.equal(row.query_images, JSON.stringify(task.query_images));
    assert.equal(row.feature, task.feature);
    assert.equal(row.feature_index, task.feature_index);
    assert.equal(row.window_w, 1280);
    assert.equal(row.screen_h, 1080);
    assert.equal(row.dpr, 2);
    assert.equal(row.query_order, '[1,0]');
    assert.equal(row.input, 'key');
    assert.equal(row.mode, 'pilot');
    assert.equal(row.server_time, first.body.recorded_at);
    assert.match(row.payload_hash as string, /^[0-9a-f]{64}$/);
  });

  test('invalid answers: 400 listing every bad field; seq out of range → 404', async () => {
    const s = (await create({ participant: 'invalid' })).body;
    let r = await call(srv.url, 'PUT', `/api/sessions/${s.session}/trials/2`, { query: 2, confidence: '3', rt_ms: -1, window: [1, 2, 3], extra: true }, bearer(s.token));
    assert.equal(r.status, 400);
    const fields = (r.body.detail.fields as { field: string; message: string }[]).map((f) => f.field).sort();
    assert.deepEqual(fields, ['confidence', 'extra', 'query', 'rt_ms', 'window']);
    assert.match(r.body.error, /query: expected 0 or 1/);
    assert.match(r.body.error, /confidence: expected 1, 2 or 3/);
    r = await call(srv.url, 'PUT', `/api/sessions/${s.session}/trials/2`, { confidence: 2, rt_ms: 100 }, bearer(s.token));
    assert.equal(r.status, 400);
    assert.match(r.body.error, /query: required/);
    for (const seq of ['8', '99', '-1', 'abc', '1.5', '0x1', '07', '1e0']) {
      r = await call(srv.url, 'PUT', `/api/sessions/${s.session}/trials/${seq}`, answer(0), bearer(s.token));
      assert.equal(r.status, 404, `seq ${seq}`);
      assert.match(r.body.error, /seq is a whole number from 0 to 7/);
    }
    assert.equal((srv.db.sqlite.prepare('SELECT count(*) AS n FROM trials WHERE session_id = ?').get(s.session) as { n: number }).n, 0);
  });

  test('tokens: another session\'s token, no token, an unknown session → the same 401; nothing written', async () => {
    const a = (await create({ participant: 'alice' })).body;
    const b = (await create({ participant: 'bob' })).body;
    const tries = [
      ['PUT', `/api/sessions/${a.session}/trials/0`, bearer(b.token)],
      ['PUT', `/api/sessions/${a.session}/trials/0`, {}],
      ['PUT', `/api/sessions/${a.session}/trials/0`, { authorization: `Bearer ${a.token}x` }],
      ['PUT', `/api/sessions/${a.session}/trials/0`, { authorization: a.token }],
      ['PUT', `/api/sessions/00000000-0000-4000-8000-000000000000/trials/0`, bearer(a.token)],
      ['POST', `/api/sessions/${a.session}/finish`, bearer(b.token)],
      ['POST', `/api/sessions/nonexistent/finish`, bearer(b.token)],
      ['PUT', `/api/sessions/${a.session}/trials/999`, bearer(b.token)],
    ] as const;
    const bodies = new Set<string>();
    for (const [method, path, headers] of tries) {
      const r = await call(srv.url, method, path, method === 'PUT' ? answer(0) : undefined, headers);
      assert.equal(r.status, 401, `${method} ${path}`);
      bodies.add(r.text);
    }
    assert.equal(bodies.size, 1, 'one 401 body: nothing tells whether the session exists');
    assert.equal((srv.db.sqlite.prepare('SELECT count(*) AS n FROM trials WHERE session_id IN (?, ?)').get(a.session, b.session) as { n: number }).n, 0);
  });

  test('practice trials get feedback, the others do not', async () => {
    const s = (await create({ participant: 'practice' })).body;
    const tasks = serverTasks(srv, s.session);
    for (const t of tasks) {
      const choice = (t.seq % 2 === 0 ? t.answer : 1 - t.answer) as 0 | 1;
      const r = await p<TrialAck>(srv.url, 'PUT', `/api/sessions/${s.session}/trials/${t.seq}`, answer(choice), bearer(s.token));
      assert.equal(r.status, 200);
      if (t.kind === 'practice') {
        assert.deepEqual(r.body.feedback, { correct: t.seq % 2 === 0 });
        assert.equal(s.trials[t.seq].practice, true);
      } else {
        assert.equal('feedback' in r.body, false);
        assert.equal(s.trials[t.seq].practice, false);
      }
    }
  });

  test('finish: refuses while trials are missing, then completed with code and Prolific redirect; idempotent; 409 after', async () => {
    const s = (await create({ PROLIFIC_PID: 'finisher' })).body;
    await answerAll(srv, s, { skip: [2, 5] });
    let r = await p(srv.url, 'POST', `/api/sessions/${s.session}/finish`, undefined, bearer(s.token));
    assert.equal(r.status, 409);
    assert.deepEqual(r.body.missing, [2, 5]);
    assert.match(r.body.error, /2 trials not yet recorded/);
    await answerAll(srv, s); // replays the others, adds 2 and 5
    srv.clock.ms += 60_000;
    r = await p<FinishResponse>(srv.url, 'POST', `/api/sessions/${s.session}/finish`, undefined, bearer(s.token));
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(FinishResponse.parse(r.body), { outcome: 'completed', code: 'FIX-DONE', redirect: 'https://app.prolific.com/submissions/complete?cc=FIX-DONE' });
    const again = await p(srv.url, 'POST', `/api/sessions/${s.session}/finish`, undefined, bearer(s.token));
    assert.deepEqual(again.body, r.body);
    const row = srv.db.sessionById(s.session)!;
    assert.equal(row.status, 'finished');
    assert.equal(row.outcome, 'completed');
    assert.equal(row.code, 'FIX-DONE');
    // Coming back after finishing: told so, with the code; an answer replay still gets its ack.
    const back = await p(srv.url, 'POST', '/api/sessions', { study: 'fixture', PROLIFIC_PID: 'finisher', resume: s.resume_secret });
    assert.equal(back.status, 409);
    assert.deepEqual(back.body, { error: 'already completed', code: 'FIX-DONE', redirect: 'https://app.prolific.com/submissions/complete?cc=FIX-DONE' });
    const t0 = serverTasks(srv, s.session)[0];
    const replay = await call(srv.url, 'PUT', `/api/sessions/${s.session}/trials/0`, answer(choiceFor(t0)), bearer(s.token));
    assert.equal(replay.status, 200);
  });

  test('finish: failing the catch trials → failed_checks with its code', async () => {
    const s = (await create({ PROLIFIC_PID: 'careless' })).body;
    await answerAll(srv, s, { catchCorrect: false });
    const r = await p<FinishResponse>(srv.url, 'POST', `/api/sessions/${s.session}/finish`, undefined, bearer(s.token));
    assert.deepEqual(r.body, { outcome: 'failed_checks', code: 'FIX-CHECK', redirect: 'https://app.prolific.com/submissions/complete?cc=FIX-CHECK' });
  });

  test('answer keys never reach the participant', async () => {
    const forbidden = new Set<string>(['answer', 'catch', '"kind"', '"order"', 'query_images', 'manifest', 'seed']);
    for (const t of fx.manifest.trials) {
      forbidden.add(t.id);
      for (const q of t.query_images) forbidden.add(q);
    }
    for (const f of fx.manifest.features) forbidden.add(f.id);
    assert.ok(participantBodies.length > 30);
    for (const body of participantBodies) {
      for (const word of forbidden) if (body.includes(word)) assert.fail(`"${word}" in a response: ${body.slice(0, 300)}`);
    }
    // Nor through the stimuli route: the manifest is not a stimulus.
    for (const path of ['/stimuli/fixture/manifest.json', '/stimuli/fixture/build/manifest.json', '/stimuli/fixture/img/', '/stimuli/fixture/img']) {
      const r = await rawGet(srv.url, path);
      assert.equal(r.status, 404, path);
      assert.ok(!r.text.includes('"answer"'));
    }
  });

  test('/stimuli refuses path traversal and anything not in the manifest', async () => {
    const paths = [
      '/stimuli/fixture/../fixture/study.yaml',
      '/stimuli/fixture/img/../../study.yaml',
      '/stimuli/fixture/img/..%2F..%2Fstudy.yaml',
      '/stimuli/fixture/%2e%2e/study.yaml',
      '/stimuli/fixture/..%5c..%5cstudy.yaml',
      '/stimuli/fixture/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc/passwd',
      '/stimuli/fixture//etc/passwd',
      '/stimuli/..%2Ffixture/study.yaml',
      '/stimuli/fixture/img/%00.png',
      '/stimuli/nope/img/a.png',
    ];
    for (const path of paths) {
      const r = await rawGet(srv.url, path);
      assert.ok(r.status === 404 || r.status === 400, `${path} → ${r.status}`);
      assert.ok(!r.text.includes('Server test study') && !r.text.includes('root:'), path);
    }
  });

  test('security headers, JSON 404s for unknown API routes, no stack traces', async () => {
    const r = await call(srv.url, 'GET', '/api/studies/fixture');
    const csp = r.headers.get('content-security-policy') ?? '';
    assert.match(csp, /default-src 'self'/);
    assert.match(csp, /script-src 'self'(;|$)/);
    assert.match(csp, /img-src 'self' data:/);
    assert.match(csp, /frame-ancestors 'none'/);
    assert.equal(r.headers.get('x-powered-by'), null);
    assert.equal(r.headers.get('x-content-type-options'), 'nosniff');
    for (const [method, path] of [
      ['GET', '/api/nothing'],
      ['GET', '/api/sessions'],
      ['DELETE', '/api/sessions/x'],
      ['GET', '/api/sessions/x/trials/0'],
    ] as const) {
      const res = await call(srv.url, method, path);
      assert.equal(res.status, 404, `${method} ${path}`);
      assert.match(res.body.error, /no API route/);
    }
    const bad = await rawGet(srv.url, '/api/studies/%E0%A4%A');
    assert.equal(bad.status, 400);
    assert.ok(!/at .*\.ts:\d+/.test(bad.text), 'no stack trace');
  });

  test('/ answers 503 with what to run while the client is not built', async () => {
    const r = await call(srv.url, 'GET', '/?study=fixture&PROLIFIC_PID=abc');
    assert.equal(r.status, 503);
    assert.match(r.text, /npm run build -w client/);
  });
});

describe('the participant page and client assets', () => {
  test('/ serves index.html with its query string intact; /assets are immutable', async () => {
    const fx = makeFixture();
    const clientDir = join(fx.root, 'dist');
    mkdirSync(join(clientDir, 'assets'), { recursive: true });
    writeFileSync(join(clientDir, 'index.html'), '<!doctype html><title>legible</title><script type="module" src="/assets/app-1a2b.js"></script>');
    writeFileSync(join(clientDir, 'assets', 'app-1a2b.js'), 'console.log(location.search)');
    const srv = await serveFixture(fx, { clientDir });
    try {
      const page = await call(srv.url, 'GET', '/?study=fixture&PROLIFIC_PID=abc&STUDY_ID=s&SESSION_ID=t');
      assert.equal(page.status, 200);
      assert.match(page.text, /<title>legible<\/title>/);
      assert.match(page.headers.get('content-type') ?? '', /text\/html/);
      assert.equal(page.headers.get('cache-control'), 'no-cache');
      const js = await call(srv.url, 'GET', '/assets/app-1a2b.js');
      assert.equal(js.status, 200);
      assert.match(js.headers.get('cache-control') ?? '', /immutable/);
      assert.equal((await call(srv.url, 'GET', '/assets/')).status, 404);
      assert.equal((await rawGet(srv.url, '/assets/../index.html')).status, 404);
      assert.equal((await call(srv.url, 'GET', '/index.html.bak')).status, 404);
      // A link without a study goes to the one study this server serves, keeping its parameters.
      const bare = await fetch(`${srv.url}/?PROLIFIC_PID=abc`, { redirect: 'manual' });
      assert.equal(bare.status, 302);
      assert.equal(bare.headers.get('location'), '/?PROLIFIC_PID=abc&study=fixture');
    } finally {
      await srv.close();
      fx.cleanup();
    }
  });
});

describe('balance, leases and durability through the server', () => {
  test('40 participants over HTTP: every feature within one response of the others', async () => {
    const fx = makeFixture();
    const srv = await serveFixture(fx);
    try {
      for (let i = 0; i < 40; i++) {
        srv.clock.ms += 1000;
        const r = await createSession(srv.url, 'fixture', { participant: `sim-${i}` });
        assert.equal(r.status, 201);
        await answerAll(srv, r.body);
        assert.equal((await call(srv.url, 'POST', `/api/sessions/${r.body.session}/finish`, undefined, bearer(r.body.token))).status, 200);
      }
      const counts = srv.db.sqlite.prepare("SELECT feature, count(*) AS n FROM trials WHERE kind = 'main' GROUP BY feature").all() as { n: number }[];
      assert.equal(counts.length, 8);
      const ns = counts.map((c) => c.n);
      assert.equal(ns.reduce((a, b) => a + b, 0), 160);
      assert.ok(Math.max(...ns) - Math.min(...ns) <= 1, ns.join(','));
      // Every trial row of a finished session: 8 per participant, no duplicates.
      assert.equal((srv.db.sqlite.prepare('SELECT count(*) AS n FROM trials').get() as { n: number }).n, 320);
    } finally {
      await srv.close();
      fx.cleanup();
    }
  });

  test('a lease not finished within the time limit is released; the session can still be resumed', async () => {
    const fx = makeFixture({ timeLimitMinutes: 30 });
    const srv = await serveFixture(fx);
    const mains = (session: string) => new Set(serverTasks(srv, session).filter((t) => t.kind === 'main').map((t) => t.feature));
    try {
      const a = (await createSession(srv.url, 'fixture', { participant: 'abandoner' })).body;
      srv.clock.ms += 60_000;
      const b = (await createSession(srv.url, 'fixture', { participant: 'second' })).body;
      assert.equal(new Set([...mains(a.session), ...mains(b.session)]).size, 8, 'B avoids what A holds');
      srv.clock.ms += 29 * 60_000 + 1000; // 30 min 1 s after A started: A's lease is over, B's is not
      const c = (await createSession(srv.url, 'fixture', { participant: 'third' })).body;
      assert.deepEqual(mains(c.session), mains(a.session), "C gets A's released features");
      const resumed = await createSession(srv.url, 'fixture', { participant: 'abandoner', resume: a.resume_secret });
      assert.equal(resumed.status, 200);
      assert.equal(resumed.body.session, a.session);
      assert.equal(srv.db.sessionById(a.session)!.status, 'active');
    } finally {
      await srv.close();
      fx.cleanup();
    }
  });

  test('everything survives closing the server and reopening the database file', async () => {
    const fx = makeFixture();
    let srv = await serveFixture(fx);
    const s = (await createSession(srv.url, 'fixture', { PROLIFIC_PID: 'durable' })).body;
    const acks = await answerAll(srv, s, { skip: [7] });
    await srv.close();
    assert.equal(srv.db.sqlite.open, false, 'close() closes the database');

    const db = openDatabase(srv.dbFile);
    assert.equal((db.sqlite.prepare('SELECT count(*) AS n FROM trials WHERE session_id = ?').get(s.session) as { n: number }).n, 7);
    db.close();

    srv = await serveFixture(fx, { dbFile: srv.dbFile, clock: srv.clock });
    try {
      const back = await createSession(srv.url, 'fixture', { PROLIFIC_PID: 'durable', resume: s.resume_secret });
      assert.equal(back.status, 200);
      assert.equal(back.body.session, s.session);
      assert.equal(back.body.token, s.token, 'the same token after a restart (same secret)');
      assert.equal(back.body.resume_at, 7);
      const t0 = serverTasks(srv, s.session)[0];
      const replay = await call<TrialAck>(srv.url, 'PUT', `/api/sessions/${s.session}/trials/0`, answer(choiceFor(t0)), bearer(s.token));
      assert.deepEqual(replay.body, acks[0]);
      await answerAll(srv, back.body);
      const fin = await call<FinishResponse>(srv.url, 'POST', `/api/sessions/${s.session}/finish`, undefined, bearer(s.token));
      assert.equal(fin.body.outcome, 'completed');
    } finally {
      await srv.close();
      fx.cleanup();
    }
  });
});

describe('modes', () => {
  test('preview: a working task list, answers scored, nothing stored; finished preview can start over', async () => {
    const fx = makeFixture({ mode: 'preview' });
    const srv = await serveFixture(fx);
    try {
      const r = await createSession(srv.url, 'fixture', { participant: 'experimenter' });
      assert.equal(r.status, 201);
      const s = r.body;
      const again = await createSession(srv.url, 'fixture', { participant: 'experimenter', resume: s.resume_secret });
      assert.equal(again.status, 200);
      assert.equal(again.body.session, s.session);
      let feedback = 0;
      for (const t of s.trials as TaskTrial[]) {
        const ack = await call<TrialAck>(srv.url, 'PUT', `/api/sessions/${s.session}/trials/${t.seq}`, answer(0), bearer(s.token));
        assert.equal(ack.status, 200);
        if (ack.body.feedback) feedback++;
        const replay = await call<TrialAck>(srv.url, 'PUT', `/api/sessions/${s.session}/trials/${t.seq}`, answer(0), bearer(s.token));
        assert.deepEqual(replay.body, ack.body);
        assert.equal((await call(srv.url, 'PUT', `/api/sessions/${s.session}/trials/${t.seq}`, answer(1), bearer(s.token))).status, 409);
      }
      assert.equal(feedback, 2);
      assert.equal((await call(srv.url, 'PUT', `/api/sessions/${s.session}/trials/0`, answer(0), bearer('wrong'))).status, 401);
      const fin = await call<FinishResponse>(srv.url, 'POST', `/api/sessions/${s.session}/finish`, undefined, bearer(s.token));
      assert.equal(fin.status, 200);
      assert.ok(['completed', 'failed_checks'].includes(fin.body.outcome));
      for (const table of ['sessions', 'trials', 'identities']) {
        assert.equal((srv.db.sqlite.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n, 0, `${table} is empty`);
      }
      const fresh = await createSession(srv.url, 'fixture', { participant: 'experimenter' });
      assert.equal(fresh.status, 201);
      assert.notEqual(fresh.body.session, s.session);
    } finally {
      await srv.close();
      fx.cleanup();
    }
  });

  test('live and pilot sessions are stored with their mode; generic platform without redirect → null', async () => {
    const fx = makeFixture({ mode: 'live', recruitment: ['  platform: generic', '  completed:', '    code: LIVE-OK', '  unsynced:', '    code: LIVE-LATE'] });
    const srv = await serveFixture(fx);
    try {
      const s = (await createSession(srv.url, 'fixture', { participant: 'live-1' })).body;
      await answerAll(srv, s, { catchCorrect: false });
      const fin = await call<FinishResponse>(srv.url, 'POST', `/api/sessions/${s.session}/finish`, undefined, bearer(s.token));
      // No failed_checks code in the study: failing the catch trials still completes.
      assert.deepEqual(fin.body, { outcome: 'completed', code: 'LIVE-OK', redirect: null });
      assert.equal(srv.db.sessionById(s.session)!.mode, 'live');
      const modes = srv.db.sqlite.prepare('SELECT DISTINCT mode FROM trials').all() as { mode: string }[];
      assert.deepEqual(modes, [{ mode: 'live' }]);
    } finally {
      await srv.close();
      fx.cleanup();
    }
  });

  test('a custom redirect template gets the code', async () => {
    const fx = makeFixture({ recruitment: ['  platform: generic', '  redirect: https://example.org/done?c={code}&x=1', '  completed:', '    code: GEN-1'] });
    const srv = await serveFixture(fx);
    try {
      const s = (await createSession(srv.url, 'fixture', { participant: 'g' })).body;
      await answerAll(srv, s);
      const fin = await call<FinishResponse>(srv.url, 'POST', `/api/sessions/${s.session}/finish`, undefined, bearer(s.token));
      assert.deepEqual(fin.body, { outcome: 'completed', code: 'GEN-1', redirect: 'https://example.org/done?c=GEN-1&x=1' });
    } finally {
      await srv.close();
      fx.cleanup();
    }
  });
});
