// Client events (POST /api/sessions/:id/events), the unsynced completion code, and the three
// modes end to end: preview stores nothing, pilot stores flagged rows, live stores live rows —
// sessions, trials and events, through to the admin CSV.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseCsvRecords } from '@legible/analysis';
import { CreateSessionResponse } from '@legible/studies';
import type { Task } from '../src/assign.ts';
import { MAX_EVENTS_PER_SESSION } from '../src/db.ts';
import { makeFixture } from './fixture.ts';
import { answer, bearer, call, createSession, runCommand, serveFixture, type TestServer } from './http.ts';

const count = (srv: TestServer, sql: string, ...args: unknown[]) => (srv.db.sqlite.prepare(sql).get(...args) as { n: number }).n;

describe('client events', () => {
  test('stored with the server time; a retried batch is stored once; validated field by field; bearer only', async () => {
    const fx = makeFixture();
    const srv = await serveFixture(fx);
    try {
      const a = (await createSession(srv.url, 'fixture', { participant: 'ev-a' })).body as CreateSessionResponse;
      const b = (await createSession(srv.url, 'fixture', { participant: 'ev-b' })).body as CreateSessionResponse;
      const batch = {
        events: [
          { type: 'preload_failed', at: 1_900_000_000_000, seq: 3, detail: { url: '/stimuli/fixture/img/x.png', attempts: 2, fatal: false, note: null } },
          { type: 'fullscreen_exit', at: 1_900_000_000_500 },
          { type: 'blur', at: 1_900_000_000_600, seq: 4 },
        ],
      };
      const path = `/api/sessions/${a.session}/events`;
      const r = await call(srv.url, 'POST', path, batch, bearer(a.token));
      assert.equal(r.status, 204, r.text);
      assert.equal(r.text, '');
      const rows = srv.db.sqlite.prepare('SELECT * FROM events WHERE session_id = ? ORDER BY id').all(a.session) as Record<string, unknown>[];
      assert.equal(rows.length, 3);
      assert.equal(rows[0].type, 'preload_failed');
      assert.equal(rows[0].seq, 3);
      assert.equal(rows[0].at, 1_900_000_000_000);
      assert.deepEqual(JSON.parse(rows[0].detail as string), batch.events[0].detail);
      assert.equal(rows[1].detail, null);
      assert.equal(rows[1].seq, null);
      assert.equal(rows[0].mode, 'pilot');
      assert.equal(rows[0].server_time, new Date(srv.clock.ms).toISOString());
      // The same batch again (a retry after a lost response), plus one new event.
      const again = await call(srv.url, 'POST', path, { events: [...batch.events, { type: 'focus', at: 1_900_000_001_000 }] }, bearer(a.token));
      assert.equal(again.status, 204);
      assert.equal(count(srv, 'SELECT count(*) AS n FROM events WHERE session_id = ?', a.session), 4);

      // Bad bodies: 400 naming the fields; nothing stored.
      const bad = await call(srv.url, 'POST', path, { events: [{ type: 'reboot', at: 'now', extra: 1, detail: { big: 'x'.repeat(501), nested: { a: 1 } } }] }, bearer(a.token));
      assert.equal(bad.status, 400);
      const fields = (bad.body.detail.fields as { field: string }[]).map((f) => f.field).sort();
      assert.deepEqual(fields, ['events[0].at', 'events[0].detail.big', 'events[0].detail.nested', 'events[0].type', 'extra'].sort());
      for (const body of [{}, { events: [] }, { events: Array.from({ length: 101 }, (_, i) => ({ type: 'blur', at: i })) }, [1], 'null']) {
        const res = await call(srv.url, 'POST', path, body, bearer(a.token));
        assert.equal(res.status, 400, JSON.stringify(body).slice(0, 80));
      }
      // Another session's token, no token, an unknown session: the same 401 as the other session routes.
      for (const headers of [bearer(b.token), {}, { authorization: `Bearer ${a.token}x` }]) {
        const res = await call(srv.url, 'POST', path, batch, headers);
        assert.equal(res.status, 401);
      }
      assert.equal((await call(srv.url, 'POST', '/api/sessions/nope/events', batch, bearer(a.token))).status, 401);
      assert.equal(count(srv, 'SELECT count(*) AS n FROM events WHERE session_id = ?', b.session), 0);
      // Larger than the events limit (64 kB) → 413.
      const huge = { events: Array.from({ length: 100 }, (_, i) => ({ type: 'blur', at: i, detail: { a: 'x'.repeat(500), b: 'y'.repeat(500) } })) };
      const tooBig = await call(srv.url, 'POST', path, huge, bearer(a.token));
      assert.equal(tooBig.status, 413);
      assert.equal(count(srv, 'SELECT count(*) AS n FROM events WHERE session_id = ?', a.session), 4);
    } finally {
      await srv.close();
      fx.cleanup();
    }
  });

  test(`at most ${MAX_EVENTS_PER_SESSION} events per session: then 409, nothing lost before`, async () => {
    const fx = makeFixture();
    const srv = await serveFixture(fx, { limits: { sessionPerMinute: 0 } });
    try {
      const s = (await createSession(srv.url, 'fixture', { participant: 'chatty' })).body as CreateSessionResponse;
      const path = `/api/sessions/${s.session}/events`;
      for (let i = 0; i < MAX_EVENTS_PER_SESSION / 100; i++) {
        const r = await call(srv.url, 'POST', path, { events: Array.from({ length: 100 }, (_, j) => ({ type: 'blur', at: i * 100 + j })) }, bearer(s.token));
        assert.equal(r.status, 204);
      }
      const over = await call(srv.url, 'POST', path, { events: [{ type: 'blur', at: -1 }] }, bearer(s.token));
      assert.equal(over.status, 409);
      assert.match(over.body.error, /the most allowed is 5000; further events are not stored/);
      assert.equal(count(srv, 'SELECT count(*) AS n FROM events WHERE session_id = ?', s.session), MAX_EVENTS_PER_SESSION);
      // Answers are not affected.
      assert.equal((await call(srv.url, 'PUT', `/api/sessions/${s.session}/trials/0`, answer(0), bearer(s.token))).status, 200);
    } finally {
      await srv.close();
      fx.cleanup();
    }
  });
});

describe('modes end to end', () => {
  for (const mode of ['preview', 'pilot', 'live'] as const) {
    test(`${mode}: session, answers, events, finish, export`, async () => {
      const fx = makeFixture({ mode, recruitment: ['  platform: generic', '  completed:', '    code: DONE-9', '  unsynced:', '    code: LATE-9'] });
      const srv = await serveFixture(fx);
      try {
        const token = (await runCommand('admin-token', ['create', '--db', srv.dbFile])).stdout.trim().split('\n').at(-1)!;
        // Before anyone takes part, the export is the header alone.
        const empty = await call(srv.url, 'GET', '/api/admin/studies/fixture/trials.csv', undefined, bearer(token));
        assert.equal(empty.status, 200);
        assert.equal(empty.text.trim().split('\n').length, 1);

        const created = await createSession(srv.url, 'fixture', { participant: `${mode}-1` });
        const s = CreateSessionResponse.parse(created.body);
        assert.equal(s.unsynced_code, 'LATE-9', 'the unsynced code, never the completed one');
        for (const t of s.trials) assert.equal((await call(srv.url, 'PUT', `/api/sessions/${s.session}/trials/${t.seq}`, answer(1), bearer(s.token))).status, 200);
        assert.equal((await call(srv.url, 'POST', `/api/sessions/${s.session}/events`, { events: [{ type: 'unsynced_end', at: 1 }] }, bearer(s.token))).status, 204);
        const fin = await call(srv.url, 'POST', `/api/sessions/${s.session}/finish`, undefined, bearer(s.token));
        assert.equal(fin.status, 200);
        assert.equal(fin.body.code, 'DONE-9');

        const rows = (table: string) => count(srv, `SELECT count(*) AS n FROM ${table}`);
        if (mode === 'preview') {
          for (const table of ['sessions', 'trials', 'identities', 'events']) assert.equal(rows(table), 0, `preview: ${table} empty`);
        } else {
          assert.equal(rows('sessions'), 1);
          assert.equal(rows('trials'), 8);
          assert.equal(rows('events'), 1);
          for (const table of ['sessions', 'trials', 'events']) {
            assert.deepEqual(srv.db.sqlite.prepare(`SELECT DISTINCT mode FROM ${table}`).pluck().all(), [mode], `${table} flagged ${mode}`);
          }
          const csv = await call(srv.url, 'GET', '/api/admin/studies/fixture/trials.csv', undefined, bearer(token));
          const records = parseCsvRecords(csv.text);
          assert.equal(records.length, 8);
          assert.ok(records.every((r) => r.mode === mode && r.session === s.session));
          const tasks = JSON.parse(srv.db.sessionById(s.session)!.tasks) as Task[];
          assert.deepEqual(records.map((r) => Number(r.correct)), tasks.map((t) => (t.answer === 1 ? 1 : 0)));
          const progress = await call(srv.url, 'GET', '/api/admin/studies/fixture', undefined, bearer(token));
          assert.equal(progress.body.mode, mode);
          assert.deepEqual(progress.body.by_mode, { [mode]: 1 });
          assert.equal(progress.body.sessions.completed, 1);
        }
      } finally {
        await srv.close();
        fx.cleanup();
      }
    });
  }
});
