// The fuzz test: `node --import tsx server/bench/fuzz.ts [--requests 10000] [--seed 1]`
//
// Thousands of malformed or hostile requests against a `legible serve` process, over raw TCP so
// that anything can be sent: wrong types and shapes, huge bodies and headers, broken JSON and
// HTTP, bad tokens and other sessions' tokens and ids, SQL and HTML in every string, odd methods,
// content types and encodings. Then: no 5xx, the process is alive and still serves, nothing was
// written to or read from a session without its token, and the two real participants can finish.
import { mkdirSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { gzipSync } from 'node:zlib';
import Database from 'better-sqlite3';
import { rng, type Rng } from '@legible/studies';
import { makeFixture } from '../test/fixture.ts';
import { HttpClient } from './loadgen.ts';
import { spawnServe } from './spawn.ts';

export interface FuzzReport {
  requests: number;
  /** Responses by status ("none": the server closed the connection without one). */
  statuses: Record<string, number>;
  seconds: number;
  problems: string[];
}

interface RawResult {
  status: number | 'none';
  head: string;
  body: string;
}

/** Send raw bytes on a new connection, read one response (or none), close. */
export function rawRequest(port: number, data: Buffer, timeoutMs = 5000): Promise<RawResult> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    let buf = Buffer.alloc(0);
    let settled = false;
    const done = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      const text = buf.toString('latin1');
      const end = text.indexOf('\r\n\r\n');
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(text);
      resolve({ status: m ? Number(m[1]) : 'none', head: end >= 0 ? text.slice(0, end) : text, body: end >= 0 ? buf.subarray(end + 4).toString('utf8') : '' });
    };
    const timer = setTimeout(done, timeoutMs);
    socket.on('data', (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      // One response is enough: stop at its end (Content-Length or the last chunk).
      const text = buf.toString('latin1');
      const end = text.indexOf('\r\n\r\n');
      if (end < 0) return;
      const length = /\r\ncontent-length: (\d+)/i.exec(text.slice(0, end));
      if (length && buf.length >= end + 4 + Number(length[1])) done();
      else if (/\r\ntransfer-encoding: chunked/i.test(text.slice(0, end)) && text.endsWith('\r\n0\r\n\r\n')) done();
      else if (!length && !/transfer-encoding/i.test(text.slice(0, end)) && /^HTTP\/1\.[01] (204|304)/.test(text)) done();
    });
    socket.on('error', done);
    socket.on('close', done);
    socket.write(data, () => {});
  });
}

const HOSTILE = [
  "' OR 1=1 --",
  "'; DROP TABLE trials; --",
  '" OR ""="',
  '1; DELETE FROM sessions',
  '<script>alert(1)</script>',
  '<img src=x onerror=alert(1)>',
  '"><svg onload=alert(1)>',
  'javascript:alert(1)',
  '../../../../etc/passwd',
  '..%2F..%2Fetc%2Fpasswd',
  '%00',
  '\u0000',
  '\u202e\u202d',
  '𝕏'.repeat(20),
  '__proto__',
  'constructor',
  '{{7*7}}',
  '${7*7}',
  'NaN',
  'Infinity',
  '-0',
  '1e309',
  ' ',
  '',
];

const METHODS = ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD', 'TRACE', 'PROPFIND', 'CONNECT', 'FOO', 'get'];

function pick<T>(r: Rng, xs: readonly T[]): T {
  return xs[Math.floor(r.next() * xs.length)];
}

/** A random JSON value, sometimes deep or large. */
function randomValue(r: Rng, depth = 0): unknown {
  const x = r.next();
  if (x < 0.12) return pick(r, HOSTILE);
  if (x < 0.2) return Math.floor(r.next() * 5) - 1;
  if (x < 0.26) return pick(r, [1e308, -1e308, 2 ** 53 + 1, 0.1, -1, 86_400_001, 3.5, 1e-320]);
  if (x < 0.32) return pick(r, [true, false, null]);
  if (x < 0.4 && depth < 4) return Array.from({ length: Math.floor(r.next() * 4) }, () => randomValue(r, depth + 1));
  if (x < 0.48 && depth < 4) return Object.fromEntries(Array.from({ length: Math.floor(r.next() * 4) }, () => [pick(r, ['query', 'a', '__proto__', 'constructor', 'seq', 'type']), randomValue(r, depth + 1)]));
  if (x < 0.5) return 'x'.repeat(Math.floor(r.next() * 2000));
  if (x < 0.55) return JSON.parse(`${'['.repeat(50)}${']'.repeat(50)}`);
  return String(r.next()).slice(2, 8);
}

/** A trial answer with some fields broken. */
function mutatedAnswer(r: Rng): Record<string, unknown> {
  const base: Record<string, unknown> = { query: pick(r, [0, 1]), confidence: pick(r, [1, 2, 3]), rt_ms: 500 + Math.floor(r.next() * 1000) };
  const fields = ['query', 'confidence', 'rt_ms', 'query_order', 'input', 'onset_ms', 'response_ms', 'client_time', 'window', 'screen', 'dpr', 'plugin_version', 'extra', '__proto__'];
  const n = 1 + Math.floor(r.next() * 3);
  for (let i = 0; i < n; i++) {
    const f = pick(r, fields);
    if (r.next() < 0.2) delete base[f];
    else base[f] = randomValue(r);
  }
  return base;
}

export async function runFuzz(opts: { requests: number; seed?: number; concurrency?: number; log?: (line: string) => void }): Promise<FuzzReport> {
  const r = rng(opts.seed ?? 1);
  const fx = makeFixture({ mode: 'pilot', noModel: true, trialsPerParticipant: 8, catchTrials: 2, practiceTrials: 2, mainPerFeature: 2 });
  const dbFile = join(fx.root, 'fuzz.db');
  const clientDir = join(fx.root, 'client');
  mkdirSync(join(clientDir, 'assets'), { recursive: true });
  writeFileSync(join(clientDir, 'index.html'), '<!doctype html><title>legible</title><script type="module" src="/assets/app.js"></script>');
  writeFileSync(join(clientDir, 'assets', 'app.js'), 'console.log(1)');
  // Rate limits off, so that the requests reach the code behind them (the failed-admin-login limit stays).
  const server = await spawnServe({ db: dbFile, studiesDir: fx.studiesDir, study: 'fixture', client: clientDir, args: ['--limit-ip', '0', '--limit-create', '0', '--limit-session', '0'], env: { LOG_LEVEL: 'warn' } });
  const port = Number(new URL(server.url).port);
  const problems: string[] = [];
  const statuses: Record<string, number> = {};
  const started = performance.now();
  try {
    // Two real participants; the fuzzer knows only A's token (and B's id, as an attacker might).
    const client = new HttpClient(server.url);
    const a = (await client.send('POST', '/api/sessions', { study: 'fixture', participant: 'alice' })).body;
    const b = (await client.send('POST', '/api/sessions', { study: 'fixture', participant: 'bob' })).body;
    for (const s of [a, b]) {
      for (const seq of [0, 1]) {
        const ok = await client.send('PUT', `/api/sessions/${s.session}/trials/${seq}`, { query: 0, confidence: 2, rt_ms: 700 }, { authorization: `Bearer ${s.token}` });
        if (ok.status !== 200) problems.push(`setup answer failed: ${ok.status}`);
      }
    }
    const before = new Database(dbFile, { readonly: true });
    const snapshot = (id: string) => JSON.stringify(before.prepare('SELECT * FROM trials WHERE session_id = ? ORDER BY seq').all(id));
    const bobBefore = snapshot(b.session);
    before.close();
    /** What the fuzzer may legitimately have written with A's token: (seq → 1). */
    const aliceWritten = new Set<number>([0, 1]);

    const sessionIds = [a.session, b.session, '00000000-0000-4000-8000-000000000000', 'x', a.session.toUpperCase(), `${a.session}/../${b.session}`, encodeURIComponent(pick(r, HOSTILE)) || '%25', 'a'.repeat(300)];
    const tokens = [a.token, b.token, `${a.token}x`, '', 'null', pick(r, HOSTILE), 'lgb_' + 'A'.repeat(43), 'x'.repeat(5000), a.token.slice(0, -1)];
    const paths = () => {
      // Half the requests aim at Alice's own session (where a token opens the door to the deep code).
      const id = r.next() < 0.5 ? a.session : pick(r, sessionIds);
      const seq = r.next() < 0.5 ? String(Math.floor(r.next() * 8)) : pick(r, ['0', '1', '2', '7', '99', '-1', '1.5', '07', '1e0', 'abc', '%00', '9'.repeat(30), encodeURIComponent(pick(r, HOSTILE))]);
      if (r.next() < 0.45) return pick(r, [`/api/sessions/${id}/trials/${seq}`, `/api/sessions/${id}/trials/${seq}`, `/api/sessions/${id}/events`, `/api/sessions/${id}/finish`]);
      return pick(r, [
        `/api/sessions/${id}/trials/${seq}`,
        `/api/sessions/${id}/finish`,
        `/api/sessions/${id}/events`,
        '/api/sessions',
        `/api/studies/${encodeURIComponent(pick(r, ['fixture', ...HOSTILE]))}`,
        `/api/admin/studies`,
        `/api/admin/studies/fixture/trials.csv`,
        `/api/admin/studies/${encodeURIComponent(pick(r, HOSTILE))}/participants?identities=1`,
        `/api/admin/audit?limit=${pick(r, ['-1', '1e9', 'x', '5'])}&before=${pick(r, ['0', '-5', 'x', '3'])}`,
        `/stimuli/fixture/${pick(r, ['../study.yaml', 'manifest.json', 'img/../../study.yaml', '%2e%2e/%2e%2e/etc/passwd', 'img/x.png'])}`,
        `/${pick(r, ['admin', 'admin/admin.js', 'admin/../../package.json', '?study=fixture', 'index.html', 'favicon.ico'])}`,
        `/api/sessions/${id}/trials/${seq}?x=${encodeURIComponent(pick(r, HOSTILE))}`,
        `/API/SESSIONS/${id}/TRIALS/${seq}`,
        `/api/sessions/${id}/trials/${seq}/`,
      ]);
    };

    const build = (): { data: Buffer; path: string; token?: string; body?: unknown; method: string } => {
      const kind = r.next();
      const method = r.next() < 0.75 ? pick(r, ['PUT', 'POST', 'GET']) : pick(r, METHODS);
      const path = paths();
      const token = r.next() < 0.85 ? (r.next() < 0.5 ? a.token : pick(r, tokens)) : undefined;
      const headers: string[] = [`Host: 127.0.0.1:${port}`, 'Connection: close'];
      if (token !== undefined) headers.push(`Authorization: ${pick(r, ['Bearer ', 'Bearer  ', 'bearer ', 'Basic ', '', 'Bearer\t'])}${token}`);
      let body: Buffer | undefined;
      let parsed: unknown;
      if (kind < 0.45) {
        parsed = path.includes('/events') ? { events: Array.from({ length: Math.floor(r.next() * 4) }, () => (r.next() < 0.5 ? { type: pick(r, ['blur', 'x', ...HOSTILE]), at: randomValue(r) } : randomValue(r))) } : path.includes('/trials/') ? mutatedAnswer(r) : randomValue(r);
        body = Buffer.from(JSON.stringify(parsed) ?? 'null');
      } else if (kind < 0.55) {
        body = Buffer.from(pick(r, ['{', '{"query":', '[1,2', 'nul', '{"a":1}}', '\u00ff\u00fe{}', '{"query":0,"query":1,"confidence":2,"rt_ms":1}', '   ', '\ufeff{"query":0}', '{"query":0,"confidence":2,"rt_ms":1,"__proto__":{"x":1}}']));
      } else if (kind < 0.62) {
        body = Buffer.alloc(Math.floor(16_000 + r.next() * 200_000), 'a');
        body[0] = 0x7b;
      } else if (kind < 0.67) {
        body = gzipSync(Buffer.from(JSON.stringify(mutatedAnswer(r))));
        headers.push('Content-Encoding: gzip');
      } else if (kind < 0.7) {
        body = Buffer.from('not gzip at all');
        headers.push(`Content-Encoding: ${pick(r, ['gzip', 'deflate', 'br', 'zstd', 'x-unknown'])}`);
      } else if (kind < 0.75) {
        headers.push(`X-Padding: ${'p'.repeat(Math.floor(r.next() * 20_000))}`);
      } else if (kind < 0.8) {
        headers.push(`X-Forwarded-For: ${pick(r, ['1.2.3.4', 'evil', '::1, 10.0.0.1', HOSTILE[0]])}`);
        body = Buffer.from(JSON.stringify(mutatedAnswer(r)));
      } else if (kind < 0.84) {
        // Broken HTTP: garbage request line, bad header syntax, conflicting lengths, bad chunks.
        const garbage = pick(r, [
          Buffer.from('GARBAGE\r\n\r\n'),
          Buffer.from(`PUT ${path} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\n{}{}{}{`),
          Buffer.from(`PUT ${path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\nZZ\r\nxx\r\n0\r\n\r\n`),
          Buffer.from(`POST /api/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"study":"fixture"`),
          Buffer.from(`GET /${'a'.repeat(70_000)} HTTP/1.1\r\nHost: x\r\n\r\n`),
          Buffer.from(`PUT ${path} HTTP/1.1\r\nHo st: x\r\n\r\n`),
          Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]),
          Buffer.from(`GET / HTTP/9.9\r\n\r\n`),
        ]);
        return { data: garbage, path, method: 'RAW' };
      } else {
        parsed = path.includes('/trials/') ? { query: pick(r, [0, 1]), confidence: pick(r, [1, 2, 3]), rt_ms: Math.floor(r.next() * 5000), plugin_version: pick(r, HOSTILE).slice(0, 32) } : randomValue(r);
        body = Buffer.from(JSON.stringify(parsed) ?? '1');
      }
      if (body) {
        headers.push(`Content-Type: ${r.next() < 0.8 ? 'application/json' : pick(r, ['text/plain', 'application/json; charset=latin1', 'application/json; charset=utf-16', 'multipart/form-data; boundary=x', 'application/x-www-form-urlencoded', 'application/vnd.api+json', 'APPLICATION/JSON', ''])}`);
        headers.push(`Content-Length: ${body.length}`);
      }
      const head = Buffer.from(`${method} ${path} HTTP/1.1\r\n${headers.join('\r\n')}\r\n\r\n`, 'latin1');
      return { data: body ? Buffer.concat([head, body]) : head, path, token, body: parsed, method };
    };

    let sent = 0;
    const worker = async () => {
      while (sent < opts.requests) {
        sent++;
        const req = build();
        const res = await rawRequest(port, req.data);
        statuses[res.status] = (statuses[res.status] ?? 0) + 1;
        if (typeof res.status === 'number' && res.status >= 500) problems.push(`${res.status} for ${req.method} ${req.path.slice(0, 120)}: ${res.body.slice(0, 200)}`);
        // Nothing of Bob's ever reaches anyone who does not hold Bob's token.
        if (req.token !== b.token && res.body.includes(b.token)) problems.push(`Bob's token leaked: ${req.method} ${req.path}`);
        if (/"query_images"|"answer"\s*:/.test(res.body) && !req.path.startsWith('/api/admin')) problems.push(`answer keys in a response: ${req.method} ${req.path}`);
        // With Alice's token on Alice's own trial path, a 200 means the fuzzer wrote that seq.
        // (Express matches paths case-insensitively and with a trailing slash.)
        const own = new RegExp(`^/api/sessions/${a.session}/trials/(\\d+)/?(\\?|$)`, 'i').exec(req.path);
        if (own && req.method === 'PUT' && res.status === 200) aliceWritten.add(Number(own[1]));
      }
    };
    await Promise.all(Array.from({ length: opts.concurrency ?? 24 }, worker));

    // Still alive, still serving.
    if (server.child.exitCode !== null || server.child.signalCode !== null) problems.push(`the server died: ${server.output().slice(-2000)}`);
    const info = await client.send('GET', '/api/studies/fixture');
    if (info.status !== 200) problems.push(`after the fuzz, GET /api/studies/fixture → ${info.status}`);

    // No cross-session writes: Bob's trials are as they were; Alice's are only those her token wrote.
    const after = new Database(dbFile, { readonly: true });
    try {
      if (JSON.stringify(after.prepare('SELECT * FROM trials WHERE session_id = ? ORDER BY seq').all(b.session)) !== bobBefore) problems.push("Bob's trials changed without his token");
      const bobEvents = after.prepare('SELECT count(*) FROM events WHERE session_id = ?').pluck().get(b.session) as number;
      if (bobEvents !== 0) problems.push(`${bobEvents} events written to Bob's session without his token`);
      const bobRow = after.prepare('SELECT status FROM sessions WHERE id = ?').pluck().get(b.session);
      if (bobRow !== 'active') problems.push(`Bob's session is ${String(bobRow)}`);
      const aliceSeqs = after.prepare('SELECT seq FROM trials WHERE session_id = ?').pluck().all(a.session) as number[];
      for (const seq of aliceSeqs) if (!aliceWritten.has(seq)) problems.push(`Alice's seq ${seq} was written without a 200 to her token`);
      const others = after.prepare('SELECT count(*) FROM trials WHERE session_id NOT IN (?, ?)').pluck().get(a.session, b.session) as number;
      const otherSessions = after.prepare('SELECT count(*) FROM sessions WHERE id NOT IN (?, ?)').pluck().get(a.session, b.session) as number;
      if (others > 0 && otherSessions === 0) problems.push('trials without a session');
      if (after.pragma('integrity_check', { simple: true }) !== 'ok') problems.push('integrity_check failed');
      const tables = after.prepare("SELECT name FROM sqlite_schema WHERE type = 'table'").pluck().all() as string[];
      for (const t of ['sessions', 'trials', 'identities', 'events', 'meta', 'audit', 'admin_tokens']) if (!tables.includes(t)) problems.push(`table ${t} is gone`);
    } finally {
      after.close();
    }

    // Bob can still finish: answer the rest and finish.
    for (const t of b.trials as { seq: number }[]) {
      if (t.seq < 2) continue;
      const res = await client.send('PUT', `/api/sessions/${b.session}/trials/${t.seq}`, { query: 1, confidence: 3, rt_ms: 600 }, { authorization: `Bearer ${b.token}` });
      if (res.status !== 200) problems.push(`Bob's answer ${t.seq} after the fuzz: ${res.status}`);
    }
    const fin = await client.send('POST', `/api/sessions/${b.session}/finish`, undefined, { authorization: `Bearer ${b.token}` });
    if (fin.status !== 200) problems.push(`Bob's finish after the fuzz: ${fin.status} ${JSON.stringify(fin.body)}`);
    client.close();
    const out = server.output();
    if (/request failed|uncaught|unhandled/i.test(out)) problems.push(`server log shows a fault: ${out.slice(-1500)}`);
  } finally {
    const code = await server.stop();
    if (code !== 0) problems.push(`the server did not stop cleanly (exit ${code})`);
    fx.cleanup();
  }
  return { requests: opts.requests, statuses, seconds: (performance.now() - started) / 1000, problems };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({ options: { requests: { type: 'string', default: '10000' }, seed: { type: 'string', default: '1' } } });
  const report = await runFuzz({ requests: Number(values.requests), seed: Number(values.seed) });
  console.log(JSON.stringify({ ...report, problems: report.problems.slice(0, 30), problemCount: report.problems.length }, null, 2));
  process.exitCode = report.problems.length ? 1 : 0;
}
