// The answer route's fast path (fastpath.ts) against the Express route it stands in for: the same
// requests to a server with the fast path and one without must get the same status, the same
// JSON body and the same headers — for valid answers, replays, conflicts, every kind of bad body,
// bad tokens, odd content types, oversize bodies and rate limits.
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, describe, test } from 'node:test';
import type { CreateSessionResponse } from '@legible/studies';
import type { Task } from '../src/assign.ts';
import { startServer, type RunningServer } from '../src/app.ts';
import { makeFixture, type Fixture } from './fixture.ts';
import { T0 } from './http.ts';

interface Raw {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function send(url: string, method: string, path: string, body: Buffer | string | undefined, headers: Record<string, string>): Promise<Raw> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = request({ host: u.hostname, port: u.port, method, path, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

describe('fast path ≡ Express route', () => {
  let fx: Fixture;
  const servers: { fast: RunningServer; express: RunningServer }[] = [];
  let fast: RunningServer;
  let slow: RunningServer;
  const sessions = new Map<RunningServer, { s: CreateSessionResponse; tasks: Task[] }>();
  const others = new Map<RunningServer, CreateSessionResponse>();

  before(async () => {
    fx = makeFixture();
    const common = {
      port: 0,
      studiesDir: fx.studiesDir,
      studies: [fx.studyFile],
      clientDir: `${fx.root}/none`,
      signals: false,
      now: () => new Date(T0),
      limits: { sessionPerMinute: 40 },
      build: async () => {
        throw new Error('no builds in tests');
      },
    };
    fast = await startServer({ ...common, db: `${fx.root}/fast.db` });
    slow = await startServer({ ...common, db: `${fx.root}/express.db`, fastPath: false });
    servers.push({ fast, express: slow });
    for (const srv of [fast, slow]) {
      const r = await send(srv.url, 'POST', '/api/sessions', JSON.stringify({ study: 'fixture', participant: 'same' }), { 'content-type': 'application/json' });
      const s = JSON.parse(r.body) as CreateSessionResponse;
      sessions.set(srv, { s, tasks: JSON.parse(srv.db.sessionById(s.session)!.tasks) as Task[] });
      const o = await send(srv.url, 'POST', '/api/sessions', JSON.stringify({ study: 'fixture', participant: 'other' }), { 'content-type': 'application/json' });
      others.set(srv, JSON.parse(o.body) as CreateSessionResponse);
    }
  });
  after(async () => {
    await fast.close();
    await slow.close();
    fx.cleanup();
  });

  /** Send the same request (built per server: its own session and token) to both; compare. */
  async function same(label: string, build: (ctx: { s: CreateSessionResponse; tasks: Task[]; other: CreateSessionResponse }) => { path: string; body?: Buffer | string; headers?: Record<string, string> }) {
    const replies: Raw[] = [];
    for (const srv of [fast, slow]) {
      const ctx = { ...sessions.get(srv)!, other: others.get(srv)! };
      const { path, body, headers = {} } = build(ctx);
      replies.push(await send(srv.url, 'PUT', path, body, headers));
    }
    const [f, e] = replies;
    assert.equal(f.status, e.status, `${label}: status (fast ${f.body} / express ${e.body})`);
    if (f.status === 429) {
      // The two servers' limiters keep separate windows that open a few milliseconds apart (each at
      // its own first request, on the real clock), so "try again in N s" may round to seconds one
      // apart across a second boundary. Each must be within the 60 s window and agree with its own
      // Retry-After header; the two may differ by at most 1 s; the rest of the message is the same.
      const seconds = (r: Raw, which: string) => {
        const m = /try again in (\d+) s/.exec(r.body);
        assert.ok(m, `${label}: ${which} 429 body names the wait: ${r.body}`);
        const n = Number(m[1]);
        assert.ok(n >= 1 && n <= 60, `${label}: ${which} wait ${n} s within the 60 s window`);
        assert.equal(r.headers['retry-after'], String(n), `${label}: ${which} Retry-After matches the message`);
        return n;
      };
      const [sf, se] = [seconds(f, 'fast'), seconds(e, 'express')];
      assert.ok(Math.abs(sf - se) <= 1, `${label}: waits ${sf} s (fast) and ${se} s (express) differ by more than 1 s`);
      const norm = (b: string) => b.replace(/try again in \d+ s/, 'try again in N s');
      assert.equal(norm(f.body), norm(e.body), `${label}: body`);
    } else {
      assert.equal(f.body, e.body, `${label}: body`);
    }
    const strip = (h: Raw['headers']) => Object.fromEntries(Object.entries(h).filter(([k]) => k !== 'date' && k !== 'retry-after'));
    assert.deepEqual(strip(f.headers), strip(e.headers), `${label}: headers`);
    assert.equal(f.headers['retry-after'] === undefined, e.headers['retry-after'] === undefined, `${label}: Retry-After`);
    return f;
  }

  const json = { 'content-type': 'application/json' };
  const auth = (token: string) => ({ authorization: `Bearer ${token}` });
  const answerFor = (t: Task, extra: Record<string, unknown> = {}) => JSON.stringify({ query: t.answer, confidence: 2, rt_ms: 640.5, ...extra });

  test('valid answers (practice with feedback, main without), replays, conflicts', async () => {
    const first = await same('practice answer', ({ s, tasks }) => ({ path: `/api/sessions/${s.session}/trials/0`, body: answerFor(tasks[0]), headers: { ...json, ...auth(s.token) } }));
    assert.equal(first.status, 200);
    assert.match(first.body, /"feedback":\{"correct":true\}/);
    await same('main answer with every optional field', ({ s, tasks }) => ({
      path: `/api/sessions/${s.session}/trials/3`,
      body: answerFor(tasks[3], { query_order: [1, 0], input: 'pointer', onset_ms: 1.5, response_ms: 900.25, client_time: 1.9e12, window: [1280, 800], screen: [1920, 1080], dpr: 1.5, plugin_version: '0.1.0' }),
      headers: { ...json, ...auth(s.token) },
    }));
    await same('replay, keys reordered', ({ s, tasks }) => ({ path: `/api/sessions/${s.session}/trials/0`, body: JSON.stringify({ rt_ms: 640.5, confidence: 2, query: tasks[0].answer }), headers: { ...json, ...auth(s.token) } }));
    await same('conflict', ({ s, tasks }) => ({ path: `/api/sessions/${s.session}/trials/0`, body: answerFor(tasks[0], { confidence: 3 }), headers: { ...json, ...auth(s.token) } }));
    await same('charset=utf-8', ({ s, tasks }) => ({ path: `/api/sessions/${s.session}/trials/4`, body: answerFor(tasks[4]), headers: { 'content-type': 'application/json; charset=UTF-8', ...auth(s.token) } }));
    await same('byte-order mark and whitespace', ({ s, tasks }) => ({ path: `/api/sessions/${s.session}/trials/5`, body: `\ufeff \n${answerFor(tasks[5])}`, headers: { ...json, ...auth(s.token) } }));
  });

  test('bad bodies: fields, JSON, strictness, empty, missing, oversize', async () => {
    const bodies: [string, string | Buffer | undefined, Record<string, string>][] = [
      ['invalid fields', JSON.stringify({ query: 2, confidence: '3', rt_ms: -1, window: [1, 2, 3], extra: true }), json],
      ['missing fields', JSON.stringify({ confidence: 2 }), json],
      ['not JSON', '{"query": ', json],
      ['a string at the top', '"hello"', json],
      ['null', 'null', json],
      ['an array', '[1, 2]', json],
      ['empty body', '', { ...json, 'content-length': '0' }],
      ['no body at all', undefined, {}],
      ['text/plain', 'query=1', { 'content-type': 'text/plain' }],
      ['form', 'query=1', { 'content-type': 'application/x-www-form-urlencoded' }],
      ['latin1 charset', answerFor({ answer: 0 } as Task), { 'content-type': 'application/json; charset=latin1' }],
      ['+json type', answerFor({ answer: 0 } as Task), { 'content-type': 'application/vnd.api+json' }],
      ['over 16 kB', JSON.stringify({ query: 0, confidence: 1, rt_ms: 1, plugin_version: 'x'.repeat(17_000) }), json],
      ['__proto__ key', '{"query":0,"confidence":1,"rt_ms":1,"__proto__":{"polluted":true}}', json],
      ['duplicate keys', '{"query":0,"query":1,"confidence":1,"rt_ms":1}', json],
    ];
    for (const [label, body, headers] of bodies) {
      await same(label, ({ s }) => ({ path: `/api/sessions/${s.session}/trials/6`, body, headers: { ...headers, ...auth(s.token) } }));
    }
    // Chunked (no Content-Length), over the limit.
    const big = Buffer.from(JSON.stringify({ query: 0, confidence: 1, rt_ms: 1, plugin_version: 'y'.repeat(20_000) }));
    for (const srv of [fast, slow]) {
      const { s } = sessions.get(srv)!;
      const r = await new Promise<Raw>((resolve, reject) => {
        const u = new URL(srv.url);
        const req = request({ host: u.hostname, port: u.port, method: 'PUT', path: `/api/sessions/${s.session}/trials/6`, headers: { ...json, ...auth(s.token) } }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }));
        });
        req.on('error', reject);
        req.write(big.subarray(0, 10_000));
        req.end(big.subarray(10_000));
      });
      assert.equal(r.status, 413, `${srv === fast ? 'fast' : 'express'}: chunked over the limit`);
      assert.match(r.body, /too large/);
    }
  });

  test('tokens, sessions and seqs', async () => {
    await same('no token', ({ s, tasks }) => ({ path: `/api/sessions/${s.session}/trials/2`, body: answerFor(tasks[2]), headers: json }));
    await same('wrong token', ({ s, tasks }) => ({ path: `/api/sessions/${s.session}/trials/2`, body: answerFor(tasks[2]), headers: { ...json, ...auth(`${s.token}x`) } }));
    await same("another session's token", ({ s, tasks, other }) => ({ path: `/api/sessions/${s.session}/trials/2`, body: answerFor(tasks[2]), headers: { ...json, ...auth(other.token) } }));
    await same('unknown session', ({ s, tasks }) => ({ path: '/api/sessions/00000000-0000-4000-8000-000000000000/trials/2', body: answerFor(tasks[2]), headers: { ...json, ...auth(s.token) } }));
    await same('seq out of range', ({ s }) => ({ path: `/api/sessions/${s.session}/trials/99`, body: JSON.stringify({ query: 0, confidence: 1, rt_ms: 1 }), headers: { ...json, ...auth(s.token) } }));
    await same('seq with a leading zero', ({ s }) => ({ path: `/api/sessions/${s.session}/trials/07`, body: JSON.stringify({ query: 0, confidence: 1, rt_ms: 1 }), headers: { ...json, ...auth(s.token) } }));
    await same('query string', ({ s, tasks }) => ({ path: `/api/sessions/${s.session}/trials/2?x=1`, body: answerFor(tasks[2]), headers: { ...json, ...auth(s.token) } }));
    await same('bad token and bad body: 401 first', ({ s }) => ({ path: `/api/sessions/${s.session}/trials/2`, body: '{"query": 7}', headers: { ...json, ...auth('nope') } }));
    // The same rows in both: 6 (the valid "__proto__" body), 2 (the query string); nothing of the failed attempts.
    for (const srv of [fast, slow]) {
      const { s } = sessions.get(srv)!;
      assert.deepEqual(srv.db.answeredSeqs(s.session), [0, 2, 3, 4, 5, 6]);
    }
  });

  test('rate limits answer alike (429, Retry-After, JSON)', async () => {
    let last: Raw | undefined;
    for (let i = 0; i < 45; i++) last = await same(`request ${i}`, ({ s, tasks }) => ({ path: `/api/sessions/${s.session}/trials/3`, body: answerFor(tasks[3], { query_order: [1, 0], input: 'pointer', onset_ms: 1.5, response_ms: 900.25, client_time: 1.9e12, window: [1280, 800], screen: [1920, 1080], dpr: 1.5, plugin_version: '0.1.0' }), headers: { ...json, ...auth(s.token) } }));
    assert.equal(last!.status, 429);
    assert.match(last!.body, /too many requests \(per session\)/);
  });
});
