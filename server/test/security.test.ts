// Participant integrity, attacked over HTTP (issue 11): no completion code without the work, no
// session taken over by someone who knows the participant's id, no storage flood through client
// events, and the small leaks and gaps. A real server on 127.0.0.1 and a real SQLite file.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { CreateSessionResponse } from '@legible/studies';
import type { Task } from '../src/assign.ts';
import { fixtureMaker } from './fixture.ts';
import { answer, bearer, call, createSession, serveFixture, type TestServer } from './http.ts';

const fixture = fixtureMaker();
const tasksOf = (srv: TestServer, session: string): Task[] => JSON.parse(srv.db.sessionById(session)!.tasks) as Task[];

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
