// Hardening: rate limits per address and per session (429 + Retry-After, JSON), defaults that a
// real participant never meets, request size limits, and logs without personal data.
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, test } from 'node:test';
import { pino } from 'pino';
import type { CreateSessionResponse } from '@legible/studies';
import type { Task } from '../src/assign.ts';
import { DEFAULT_RATE_LIMITS } from '../src/app.ts';
import { makeFixture } from './fixture.ts';
import { answer, bearer, call, createSession, serveFixture } from './http.ts';

describe('rate limits', () => {
  test('per session: the 6th request in a minute → 429 with Retry-After; other sessions are not held up', async () => {
    const fx = makeFixture();
    const srv = await serveFixture(fx, { limits: { sessionPerMinute: 5 } });
    try {
      const a = (await createSession(srv.url, 'fixture', { participant: 'fast' })).body as CreateSessionResponse;
      const b = (await createSession(srv.url, 'fixture', { participant: 'other' })).body as CreateSessionResponse;
      const statuses: number[] = [];
      let limited;
      for (let seq = 0; seq < 7; seq++) {
        const r = await call(srv.url, 'PUT', `/api/sessions/${a.session}/trials/${seq}`, answer(0), bearer(a.token));
        statuses.push(r.status);
        if (r.status === 429) limited = r;
      }
      assert.deepEqual(statuses, [200, 200, 200, 200, 200, 429, 429]);
      assert.ok(limited);
      const retry = Number(limited.headers.get('retry-after'));
      assert.ok(retry >= 1 && retry <= 60, `Retry-After ${retry}`);
      assert.match(limited.body.error, /too many requests \(per session\): try again in \d+ s/);
      assert.equal(limited.headers.get('cache-control'), 'no-store');
      // Nothing was written for the refused requests.
      assert.deepEqual(srv.db.answeredSeqs(a.session), [0, 1, 2, 3, 4]);
      assert.equal((await call(srv.url, 'PUT', `/api/sessions/${b.session}/trials/0`, answer(0), bearer(b.token))).status, 200);
      // A bad token is a 401, not counted against the session it names.
      assert.equal((await call(srv.url, 'PUT', `/api/sessions/${b.session}/trials/1`, answer(0), bearer('forged'))).status, 401);
    } finally {
      await srv.close();
      fx.cleanup();
    }
  });

  test('per address: API requests and session creations', async () => {
    const fx = makeFixture();
    const srv = await serveFixture(fx, { limits: { ipPerMinute: 12, createPerMinute: 3 } });
    try {
      const creates: number[] = [];
      for (let i = 0; i < 5; i++) creates.push((await createSession(srv.url, 'fixture', { participant: `c${i}` })).status);
      assert.deepEqual(creates, [201, 201, 201, 429, 429]);
      const gets: number[] = [];
      for (let i = 0; i < 9; i++) gets.push((await call(srv.url, 'GET', '/api/studies/fixture')).status);
      assert.deepEqual(gets, [200, 200, 200, 200, 200, 200, 200, 429, 429], 'the limit counts every /api request from the address');
      // Stimuli and the page are not API requests.
      assert.equal((await call(srv.url, 'GET', '/?study=fixture')).status, 503);
    } finally {
      await srv.close();
      fx.cleanup();
    }
  });

  test('the defaults let a fast participant through: a whole session in a burst, with replays, never meets a limit', async () => {
    // 600 requests per minute per session: even answering every trial at once and replaying each
    // one (an outbox flushing after a reconnect) stays far below it.
    assert.ok(DEFAULT_RATE_LIMITS.sessionPerMinute >= 300);
    const fx = makeFixture({ trialsPerParticipant: 8, mainPerFeature: 4, catchTrials: 2 });
    const srv = await serveFixture(fx);
    try {
      const s = (await createSession(srv.url, 'fixture', { participant: 'speedy' })).body as CreateSessionResponse;
      const tasks = JSON.parse(srv.db.sessionById(s.session)!.tasks) as Task[];
      const all = await Promise.all(
        [...tasks, ...tasks, ...tasks].map((t) => call(srv.url, 'PUT', `/api/sessions/${s.session}/trials/${t.seq}`, answer(t.answer), bearer(s.token))),
      );
      assert.ok(all.every((r) => r.status === 200));
      for (let i = 0; i < 20; i++) assert.equal((await call(srv.url, 'POST', `/api/sessions/${s.session}/events`, { events: [{ type: 'blur', at: i }] }, bearer(s.token))).status, 204);
      assert.equal((await call(srv.url, 'POST', `/api/sessions/${s.session}/finish`, undefined, bearer(s.token))).status, 200);
    } finally {
      await srv.close();
      fx.cleanup();
    }
  });
});

describe('size limits and logs', () => {
  test('bodies over 16 kB (64 kB for events) → 413; long URLs and headers are refused without a crash', async () => {
    const fx = makeFixture();
    const srv = await serveFixture(fx);
    try {
      const s = (await createSession(srv.url, 'fixture', { participant: 'big' })).body as CreateSessionResponse;
      const big = JSON.stringify({ ...answer(0), plugin_version: 'x'.repeat(17_000) });
      const r = await call(srv.url, 'PUT', `/api/sessions/${s.session}/trials/0`, big, bearer(s.token));
      assert.equal(r.status, 413);
      assert.match(r.body.error, /too large: at most 16kb/);
      const headers = await fetch(`${srv.url}/api/studies/fixture`, { headers: { 'x-padding': 'x'.repeat(20_000) } }).then((x) => x.status);
      assert.equal(headers, 431);
      const longUrl = await call(srv.url, 'GET', `/api/studies/${'a'.repeat(10_000)}`);
      assert.equal(longUrl.status, 404);
      assert.equal((await call(srv.url, 'GET', '/api/studies/fixture')).status, 200, 'still serving');
    } finally {
      await srv.close();
      fx.cleanup();
    }
  });

  test('request logs: route, status and time; no Prolific ids, tokens, session ids or addresses (unless asked)', async () => {
    for (const logIp of [false, true]) {
      const lines: string[] = [];
      const sink = new Writable({
        write(chunk, _enc, done) {
          lines.push(chunk.toString());
          done();
        },
      });
      const fx = makeFixture();
      const { startServer } = await import('../src/app.ts');
      const srv = await startServer({
        port: 0,
        db: `${fx.root}/log.db`,
        studiesDir: fx.studiesDir,
        studies: [fx.studyFile],
        clientDir: `${fx.root}/none`,
        signals: false,
        log: pino({ level: 'debug' }, sink),
        logIp,
        build: async () => {
          throw new Error('no builds in tests');
        },
      });
      try {
        const s = (await createSession(srv.url, 'fixture', { PROLIFIC_PID: 'PID-SECRET-123', STUDY_ID: 'SID-9', SESSION_ID: 'SES-9' })).body as CreateSessionResponse;
        await call(srv.url, 'PUT', `/api/sessions/${s.session}/trials/0`, answer(0), bearer(s.token));
        await call(srv.url, 'PUT', `/api/sessions/${s.session}/trials/1`, answer(0), bearer('wrong-token'));
        await call(srv.url, 'POST', `/api/sessions/${s.session}/events`, { events: [{ type: 'blur', at: 1 }] }, bearer(s.token));
        await call(srv.url, 'GET', '/api/admin/studies', undefined, bearer('lgb_not-a-real-token-at-all-000'));
        const log = lines.join('');
        const entries = lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((e) => e.msg === 'request');
        assert.ok(entries.length >= 5);
        assert.ok(entries.some((e) => e.route === '/sessions/:id/trials/:seq' && e.status === 200 && typeof e.ms === 'number'));
        assert.ok(entries.some((e) => e.route === '/sessions/:id/trials/:seq' && e.status === 401));
        for (const secret of ['PID-SECRET-123', 'SID-9', 'SES-9', s.session, s.token, 'wrong-token', 'lgb_not-a-real']) {
          assert.ok(!log.includes(secret), `"${secret}" is not in the log`);
        }
        if (logIp) assert.ok(entries.every((e) => e.ip === '127.0.0.1' || e.ip === '::ffff:127.0.0.1'), 'addresses when configured');
        else assert.ok(!/127\.0\.0\.1/.test(log), 'no addresses by default');
      } finally {
        await srv.close();
        fx.cleanup();
      }
    }
  });
});
