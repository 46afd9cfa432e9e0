// Participant integrity, attacked over HTTP (issue 11): no completion code without the work, no
// session taken over by someone who knows the participant's id, no storage flood through client
// events, and the small leaks and gaps. A real server on 127.0.0.1 and a real SQLite file.
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { Writable } from 'node:stream';
import { describe, test } from 'node:test';
import { pino } from 'pino';
import { parseCsv } from '@legible/analysis';
import type { Task } from '../src/assign.ts';
import { fixtureMaker } from './fixture.ts';
import { answer, bearer, call, createSession, serveFixture, type TestServer } from './http.ts';

const fixture = fixtureMaker();
const tasksOf = (srv: TestServer, session: string): Task[] => JSON.parse(srv.db.sessionById(session)!.tasks) as Task[];
/** A create request whose answer may be a refusal (any body). */
const claim = (srv: TestServer, study: string, who: Record<string, string>) => call(srv.url, 'POST', '/api/sessions', { study, ...who });

describe('1. the completed code only for a finished session', () => {
  test('a session gets the unsynced code, never the completed code, before any trial; without an unsynced code in the study, none', async () => {
    const srv = await serveFixture(fixture());
    const bare = fixture({ id: 'bare', recruitment: ['  platform: generic', '  completed:', '    code: BARE-DONE'] });
    const srvBare = await serveFixture(bare);
    try {
      const seen: string[] = [];
      const created = await createSession(srv.url, 'fixture', { participant: 'early' });
      assert.equal(created.status, 201);
      seen.push(created.text);
      assert.equal(created.body.unsynced_code, 'FIX-UNSYNCED');
      const s = created.body;
      // Everything a participant can get before finishing: study info, a resume, answers, an early finish.
      seen.push((await call(srv.url, 'GET', '/api/studies/fixture')).text);
      seen.push((await createSession(srv.url, 'fixture', { participant: 'early' })).text);
      const tasks = tasksOf(srv, s.session);
      for (const t of tasks.slice(0, -1)) seen.push((await call(srv.url, 'PUT', `/api/sessions/${s.session}/trials/${t.seq}`, answer(t.answer), bearer(s.token))).text);
      const early = await call(srv.url, 'POST', `/api/sessions/${s.session}/finish`, undefined, bearer(s.token));
      assert.equal(early.status, 409);
      seen.push(early.text);
      for (const text of seen) assert.doesNotMatch(text, /FIX-DONE/, 'the completed code before finishing');
      // Finishing gives it.
      const last = tasks.at(-1)!;
      assert.equal((await call(srv.url, 'PUT', `/api/sessions/${s.session}/trials/${last.seq}`, answer(last.answer), bearer(s.token))).status, 200);
      assert.equal((await call(srv.url, 'POST', `/api/sessions/${s.session}/finish`, undefined, bearer(s.token))).body.code, 'FIX-DONE');

      const b = await createSession(srvBare.url, 'bare', { participant: 'x' });
      assert.equal(b.status, 201);
      assert.equal(b.body.unsynced_code, null, 'no unsynced code in the study: no code, never the completed one');
      assert.doesNotMatch(b.text, /BARE-DONE/);
    } finally {
      await srv.close();
      await srvBare.close();
    }
  });

  test('the participant list marks who ended unsynced, with the trials the server holds', async () => {
    const srv = await serveFixture(fixture());
    try {
      const { token } = srv.db.createAdminToken('t');
      const a = (await createSession(srv.url, 'fixture', { participant: 'gone-at-the-end' })).body;
      const tasks = tasksOf(srv, a.session);
      for (const t of tasks.slice(0, 5)) await call(srv.url, 'PUT', `/api/sessions/${a.session}/trials/${t.seq}`, answer(t.answer), bearer(a.token));
      const ev = await call(srv.url, 'POST', `/api/sessions/${a.session}/events`, { events: [{ type: 'unsynced_end', at: 1, detail: { pending: 3 } }] }, bearer(a.token));
      assert.equal(ev.status, 204);
      const b = (await createSession(srv.url, 'fixture', { participant: 'fine' })).body;
      const list = await call(srv.url, 'GET', '/api/admin/studies/fixture/participants', undefined, bearer(token));
      assert.equal(list.status, 200);
      const rows = list.body.participants as { session: string; unsynced_end: boolean; answered: number; required: number }[];
      const ra = rows.find((r) => r.session === a.session)!;
      const rb = rows.find((r) => r.session === b.session)!;
      assert.deepEqual([ra.unsynced_end, ra.answered, ra.required], [true, 5, tasks.length]);
      assert.equal(rb.unsynced_end, false);
    } finally {
      await srv.close();
    }
  });
});

describe('2. resume bound to what only the participant holds', () => {
  for (const mode of ['pilot', 'preview'] as const) {
    test(`${mode}: a browser's own resume secret, sent with its first request, resumes a creation whose response was lost; others are refused`, async () => {
      const srv = await serveFixture(fixture({ mode }));
      try {
        const mine = 'chosen-by-the-browser-0123456789abcdef';
        const first = await createSession(srv.url, 'fixture', { participant: 'lost-response', resume: mine });
        assert.equal(first.status, 201);
        // The response never arrived: the browser retries with the secret it kept.
        const retry = await claim(srv, 'fixture', { participant: 'lost-response', resume: mine });
        assert.equal(retry.status, 200, retry.text);
        assert.equal(retry.body.session, first.body.session);
        assert.equal(retry.body.token, first.body.token);
        // The server's own secret works too; the id alone, or another secret, does not.
        assert.equal((await claim(srv, 'fixture', { participant: 'lost-response', resume: first.body.resume_secret })).status, 200);
        for (const who of <Record<string, string>[]>[{ participant: 'lost-response' }, { participant: 'lost-response', resume: 'chosen-by-another-browser-0123456789' }]) {
          const r = await claim(srv, 'fixture', who);
          assert.equal(r.status, 403, `${JSON.stringify(who)}: ${r.text}`);
          assert.ok(!r.text.includes(first.body.token), 'no token in the refusal');
        }
      } finally {
        await srv.close();
      }
    });
  }

  for (const mode of ['pilot', 'preview'] as const) {
    test(`${mode}: a Prolific id with another SESSION_ID, or none, is refused without the token; the same attempt or the resume secret resumes`, async () => {
      const srv = await serveFixture(fixture({ mode }));
      try {
        const victim = await createSession(srv.url, 'fixture', { PROLIFIC_PID: 'victim-pid', STUDY_ID: 'study-1', SESSION_ID: 'attempt-1' });
        assert.equal(victim.status, 201);
        const v = victim.body;
        assert.match(v.resume_secret, /^[A-Za-z0-9_-]{40,}$/);
        if (mode === 'pilot') assert.equal((await call(srv.url, 'PUT', `/api/sessions/${v.session}/trials/0`, answer(tasksOf(srv, v.session)[0].answer), bearer(v.token))).status, 200);

        for (const who of <Record<string, string>[]>[
          { PROLIFIC_PID: 'victim-pid', STUDY_ID: 'study-1', SESSION_ID: 'attacker-attempt' },
          { PROLIFIC_PID: 'victim-pid', STUDY_ID: 'study-1' },
          { PROLIFIC_PID: 'victim-pid' },
          { PROLIFIC_PID: 'victim-pid', SESSION_ID: 'attempt-2', resume: 'not-the-secret' },
        ]) {
          const r = await claim(srv, 'fixture', who);
          assert.equal(r.status, 403, `${JSON.stringify(who)}: ${r.text}`);
          assert.equal(r.body.detail.resume_refused, true);
          assert.match(r.body.error, /another browser/);
          assert.ok(!r.text.includes(v.token) && !r.text.includes(v.session) && !r.text.includes(v.resume_secret), 'no token, session or secret in the refusal');
        }
        // The victim's session is untouched: their token still works and nothing was added.
        if (mode === 'pilot') {
          assert.equal((srv.db.sqlite.prepare('SELECT count(*) AS n FROM sessions').get() as { n: number }).n, 1);
          const t1 = tasksOf(srv, v.session)[1];
          assert.equal((await call(srv.url, 'PUT', `/api/sessions/${v.session}/trials/1`, answer(t1.answer), bearer(v.token))).status, 200);
        }

        // The same attempt (Prolific's SESSION_ID, e.g. the link opened on a second device) resumes…
        const sameAttempt = await createSession(srv.url, 'fixture', { PROLIFIC_PID: 'victim-pid', STUDY_ID: 'study-1', SESSION_ID: 'attempt-1' });
        assert.equal(sameAttempt.status, 200, sameAttempt.text);
        assert.deepEqual([sameAttempt.body.session, sameAttempt.body.token, sameAttempt.body.resume_secret], [v.session, v.token, v.resume_secret]);
        // …and so does the browser's resume secret, whatever the link says.
        const bySecret = await createSession(srv.url, 'fixture', { PROLIFIC_PID: 'victim-pid', resume: v.resume_secret });
        assert.equal(bySecret.status, 200, bySecret.text);
        assert.equal(bySecret.body.session, v.session);
      } finally {
        await srv.close();
      }
    });
  }

  test('generic participant ids: only the resume secret resumes; a finished session gives its code only to the same proof', async () => {
    const srv = await serveFixture(fixture({ platform: 'generic' }));
    try {
      const a = (await createSession(srv.url, 'fixture', { participant: 'p-17' })).body;
      const stolen = await createSession(srv.url, 'fixture', { participant: 'p-17' });
      assert.equal(stolen.status, 403);
      assert.ok(!stolen.text.includes(a.token));
      assert.equal((await createSession(srv.url, 'fixture', { participant: 'p-17', resume: a.resume_secret })).body.session, a.session);
      // Another participant's secret does not open this one.
      const b = (await createSession(srv.url, 'fixture', { participant: 'p-18' })).body;
      assert.equal((await createSession(srv.url, 'fixture', { participant: 'p-17', resume: b.resume_secret })).status, 403);

      for (const t of tasksOf(srv, a.session)) await call(srv.url, 'PUT', `/api/sessions/${a.session}/trials/${t.seq}`, answer(t.answer), bearer(a.token));
      assert.equal((await call(srv.url, 'POST', `/api/sessions/${a.session}/finish`, undefined, bearer(a.token))).body.code, 'FIX-DONE');
      const other = await claim(srv, 'fixture', { participant: 'p-17' });
      assert.equal(other.status, 403, 'someone who only knows the id of a finished participant gets no code');
      assert.doesNotMatch(other.text, /FIX-DONE/);
      const back = await claim(srv, 'fixture', { participant: 'p-17', resume: a.resume_secret });
      assert.equal(back.status, 409);
      assert.equal(back.body.code, 'FIX-DONE');
    } finally {
      await srv.close();
    }
  });

  test('concurrent creates for one participant: one session; the requests that lost the race get no token', async () => {
    const srv = await serveFixture(fixture());
    try {
      const replies = await Promise.all(Array.from({ length: 6 }, () => createSession(srv.url, 'fixture', { participant: 'racer' })));
      assert.deepEqual(replies.map((r) => r.status).sort(), [201, 403, 403, 403, 403, 403]);
      assert.equal((srv.db.sqlite.prepare('SELECT count(*) AS n FROM sessions').get() as { n: number }).n, 1);
      // With the same Prolific attempt, every request gets the one session.
      const same = await Promise.all(Array.from({ length: 6 }, () => createSession(srv.url, 'fixture', { PROLIFIC_PID: 'racer-2', SESSION_ID: 'one-attempt' })));
      assert.deepEqual(same.map((r) => r.status).sort(), [200, 200, 200, 200, 200, 201]);
      assert.equal(new Set(same.map((r) => r.body.session)).size, 1);
    } finally {
      await srv.close();
    }
  });
});

describe('3. byte limits on client events', () => {
  const bytes = (srv: TestServer, session: string) =>
    srv.db.sqlite.prepare('SELECT count(*) AS n, coalesce(sum(length(CAST(detail AS BLOB))), 0) AS b FROM events WHERE session_id = ?').get(session) as { n: number; b: number };

  test('an event over 4 kB of detail: 413, nothing of its request stored, nothing else lost', async () => {
    const srv = await serveFixture(fixture());
    try {
      const s = (await createSession(srv.url, 'fixture', { participant: 'flooder' })).body;
      const t0 = tasksOf(srv, s.session)[0];
      assert.equal((await call(srv.url, 'PUT', `/api/sessions/${s.session}/trials/0`, answer(t0.answer), bearer(s.token))).status, 200);
      assert.equal((await call(srv.url, 'POST', `/api/sessions/${s.session}/events`, { events: [{ type: 'blur', at: 1, detail: { k: 'ok' } }] }, bearer(s.token))).status, 204);
      const flood = Object.fromEntries(Array.from({ length: 120 }, (_, i) => [`k${i}`, 'x'.repeat(500)]));
      const r = await call(srv.url, 'POST', `/api/sessions/${s.session}/events`, { events: [{ type: 'focus', at: 2 }, { type: 'blur', at: 3, detail: flood }] }, bearer(s.token));
      assert.equal(r.status, 413, r.text);
      assert.match(r.body.error, /events\[1\]\.detail.*4096/);
      assert.deepEqual(r.body.detail, { event: 1, bytes: JSON.stringify(flood).length, limit: 4096 });
      // Just under the limit is fine, in bytes of UTF-8 (a 3-byte character counts 3).
      const wide = { s: '€'.repeat(500), t: '€'.repeat(500) }; // 3,000 bytes + keys
      assert.equal((await call(srv.url, 'POST', `/api/sessions/${s.session}/events`, { events: [{ type: 'blur', at: 4, detail: wide }] }, bearer(s.token))).status, 204);
      assert.deepEqual(bytes(srv, s.session).n, 2, 'the first event and the wide one; nothing of the refused request');
      const t1 = tasksOf(srv, s.session)[1];
      assert.equal((await call(srv.url, 'PUT', `/api/sessions/${s.session}/trials/1`, answer(t1.answer), bearer(s.token))).status, 200, 'answers go on');
      assert.deepEqual(srv.db.answeredSeqs(s.session), [0, 1]);
    } finally {
      await srv.close();
    }
  });

  test('a session stores at most 256 kB of event details: the request that would pass it gets 413; answers and finish go on', async () => {
    const srv = await serveFixture(fixture());
    try {
      const s = (await createSession(srv.url, 'fixture', { participant: 'slow-flooder' })).body;
      const big = (i: number) => ({ type: 'blur', at: i, detail: { pad: 'y'.repeat(490), a: 'z'.repeat(490), b: 'w'.repeat(490), c: 'v'.repeat(490), d: 'u'.repeat(490), e: 'x'.repeat(490), f: 't'.repeat(490), g: 's'.repeat(490) } });
      const per = JSON.stringify(big(0).detail).length;
      assert.ok(per < 4096 && per > 3900);
      let refused = 0;
      let at = 0;
      for (let batch = 0; batch < 12; batch++) {
        const r = await call(srv.url, 'POST', `/api/sessions/${s.session}/events`, { events: Array.from({ length: 10 }, () => big(at++)) }, bearer(s.token));
        if (r.status === 413) {
          refused++;
          assert.match(r.body.error, /262144 bytes/);
          assert.ok(r.body.detail.stored <= 262_144);
        } else assert.equal(r.status, 204, r.text);
      }
      const { n, b } = bytes(srv, s.session);
      assert.ok(refused >= 5, `${refused} requests refused`);
      assert.equal(n % 10, 0, 'whole requests stored or refused');
      assert.ok(b <= 262_144 && b > 262_144 - 10 * per, `${b} bytes stored`);
      // Small events that still fit, answers and finish are not affected.
      assert.equal((await call(srv.url, 'POST', `/api/sessions/${s.session}/events`, { events: [{ type: 'unsynced_end', at: 1e12 }] }, bearer(s.token))).status, 204);
      for (const t of tasksOf(srv, s.session)) assert.equal((await call(srv.url, 'PUT', `/api/sessions/${s.session}/trials/${t.seq}`, answer(t.answer), bearer(s.token))).status, 200);
      assert.equal((await call(srv.url, 'POST', `/api/sessions/${s.session}/finish`, undefined, bearer(s.token))).status, 200);
    } finally {
      await srv.close();
    }
  });
});

/** A request with a body in the given bytes and Content-Type (fetch would re-encode a string as UTF-8). */
function rawSend(base: string, method: string, path: string, body: Buffer, headers: Record<string, string>): Promise<{ status: number; text: string }> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: url.hostname, port: url.port, path, method, headers: { 'content-length': String(body.length), ...headers } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

describe('4. small leaks and gaps', () => {
  test('rate-limited answers, events and finish are logged without the session id', async () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk, _enc, done) {
        lines.push(chunk.toString());
        done();
      },
    });
    const srv = await serveFixture(fixture(), { limits: { sessionPerMinute: 2 }, log: pino({ level: 'info' }, sink) });
    try {
      const s = (await createSession(srv.url, 'fixture', { participant: 'chatty' })).body;
      const statuses: number[] = [];
      for (let i = 0; i < 3; i++) statuses.push((await call(srv.url, 'POST', `/api/sessions/${s.session}/events`, { events: [{ type: 'blur', at: i }] }, bearer(s.token))).status);
      statuses.push((await call(srv.url, 'POST', `/api/sessions/${s.session}/finish`, undefined, bearer(s.token))).status);
      statuses.push((await call(srv.url, 'PUT', `/api/sessions/${s.session}/trials/0`, answer(0), bearer(s.token))).status);
      assert.deepEqual(statuses, [204, 204, 429, 429, 429]);
      const limited = lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((e) => e.msg === 'rate limited');
      assert.equal(limited.length, 3);
      assert.deepEqual(limited.map((e) => e.route).sort(), ['/api/sessions/:id/events', '/api/sessions/:id/finish', '/api/sessions/:id/trials/:seq']);
      for (const line of lines) assert.ok(!line.includes(s.session) && !line.includes(s.token), `no session id or token in ${line}`);
    } finally {
      await srv.close();
    }
  });

  test('query_order must be [0, 1] or [1, 0]', async () => {
    const srv = await serveFixture(fixture());
    try {
      const s = (await createSession(srv.url, 'fixture', { participant: 'orderly' })).body;
      for (const order of [[0, 0], [1, 1]]) {
        const r = await call(srv.url, 'PUT', `/api/sessions/${s.session}/trials/0`, answer(0, { query_order: order }), bearer(s.token));
        assert.equal(r.status, 400, `${JSON.stringify(order)}: ${r.text}`);
        assert.deepEqual(r.body.detail.fields.map((f: { field: string }) => f.field), ['query_order']);
        assert.match(r.body.error, /\[0, 1\] or \[1, 0\]/);
      }
      assert.deepEqual(srv.db.answeredSeqs(s.session), []);
      assert.equal((await call(srv.url, 'PUT', `/api/sessions/${s.session}/trials/0`, answer(0, { query_order: [1, 0] }), bearer(s.token))).status, 200);
    } finally {
      await srv.close();
    }
  });

  test('trials.csv defuses formulas after leading spaces and line breaks', async () => {
    const srv = await serveFixture(fixture());
    try {
      const { token } = srv.db.createAdminToken('t');
      const versions = [' =1+1', '\n=1+1', '\t=1+1', '  @SUM(A1)', '=1+1', '1.0.0', ' plain', '-'];
      const s = (await createSession(srv.url, 'fixture', { participant: 'spreadsheet' })).body;
      for (const [seq, v] of versions.entries()) {
        const r = await call(srv.url, 'PUT', `/api/sessions/${s.session}/trials/${seq}`, answer(0, { plugin_version: v }), bearer(s.token));
        assert.equal(r.status, 200, r.text);
      }
      const csv = await call(srv.url, 'GET', '/api/admin/studies/fixture/trials.csv', undefined, bearer(token));
      const [header, ...rows] = parseCsv(csv.text);
      const col = header.indexOf('plugin_version');
      assert.deepEqual(
        rows.map((r) => r[col]),
        ["' =1+1", "'\n=1+1", "'\t=1+1", "'  @SUM(A1)", "'=1+1", '1.0.0', ' plain', "'-"],
      );
    } finally {
      await srv.close();
    }
  });

  test('a body in a charset other than UTF-8 gets 415 on every JSON route', async () => {
    const srv = await serveFixture(fixture());
    try {
      const s = (await createSession(srv.url, 'fixture', { participant: 'utf16' })).body;
      const utf16 = (v: unknown) => Buffer.from(JSON.stringify(v), 'utf16le');
      const type = { 'content-type': 'application/json; charset=utf-16le' };
      const create = await rawSend(srv.url, 'POST', '/api/sessions', utf16({ study: 'fixture', participant: 'utf16-b' }), type);
      assert.equal(create.status, 415, create.text);
      assert.match(create.text, /UTF-8/);
      const put = await rawSend(srv.url, 'PUT', `/api/sessions/${s.session}/trials/0`, utf16(answer(0)), { ...type, authorization: `Bearer ${s.token}` });
      assert.equal(put.status, 415, put.text);
      const ev = await rawSend(srv.url, 'POST', `/api/sessions/${s.session}/events`, utf16({ events: [{ type: 'blur', at: 1 }] }), { ...type, authorization: `Bearer ${s.token}` });
      assert.equal(ev.status, 415, ev.text);
      assert.deepEqual(srv.db.answeredSeqs(s.session), []);
      assert.equal((srv.db.sqlite.prepare('SELECT count(*) AS n FROM sessions').get() as { n: number }).n, 1);
      // UTF-8, said or unsaid, is fine.
      const ok = await rawSend(srv.url, 'PUT', `/api/sessions/${s.session}/trials/0`, Buffer.from(JSON.stringify(answer(0))), { 'content-type': 'application/json; charset="UTF-8"', authorization: `Bearer ${s.token}` });
      assert.equal(ok.status, 200, ok.text);
    } finally {
      await srv.close();
    }
  });

  test('audit?before= takes only a whole number above 0', async () => {
    const srv = await serveFixture(fixture());
    try {
      const { token } = srv.db.createAdminToken('t');
      for (const bad of ['1);DROP%20TABLE%20audit;--', '1abc', '0', '-1', '1.5', '%201', '']) {
        const r = await call(srv.url, 'GET', `/api/admin/audit?before=${bad}`, undefined, bearer(token));
        assert.equal(r.status, 400, `before=${bad}: ${r.text}`);
        assert.match(r.body.error, /before: expected an audit entry id/);
      }
      assert.equal((await call(srv.url, 'GET', '/api/admin/audit?before=5', undefined, bearer(token))).status, 200);
    } finally {
      await srv.close();
    }
  });
});
