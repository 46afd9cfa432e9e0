// `legible serve` behind a reverse proxy (docs/deploy.md): X-Forwarded-For is honoured only with
// trust proxy (so that rate limits and the log see the participant, not the proxy), /healthz
// answers without touching the rate limits, and the start-up lines give the link for Prolific.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import type { CreateSessionResponse } from '@legible/studies';
import { startServer, type RateLimits } from '../src/app.ts';
import { makeFixture, type Fixture } from './fixture.ts';
import { answer, bearer, call } from './http.ts';

const repo = fileURLToPath(new URL('../..', import.meta.url));
const commands = fileURLToPath(new URL('../src/commands.ts', import.meta.url));

async function serveBehind(fx: Fixture, trustProxy: boolean | number | string | undefined, limits: Partial<RateLimits>, lines: string[] = []) {
  const sink = new Writable({
    write(chunk, _enc, done) {
      lines.push(chunk.toString());
      done();
    },
  });
  return startServer({
    port: 0,
    host: '127.0.0.1',
    db: join(fx.root, `proxy-${String(trustProxy)}.db`),
    studiesDir: fx.studiesDir,
    studies: [fx.studyFile],
    clientDir: join(fx.root, 'none'),
    signals: false,
    limits,
    trustProxy,
    logIp: true,
    log: pino({ level: 'debug' }, sink),
    watchMs: 0,
    build: async () => {
      throw new Error('the tests bring their own manifest');
    },
  });
}

const from = (ip: string) => ({ 'x-forwarded-for': ip });

describe('behind a reverse proxy', () => {
  test('X-Forwarded-For is honoured only with trust proxy: session creations and answers are limited per participant, not per proxy', async () => {
    const fx = makeFixture();
    try {
      for (const trust of [undefined, 'loopback', 1] as const) {
        const lines: string[] = [];
        const srv = await serveBehind(fx, trust, { createPerMinute: 1, ipPerMinute: 4 }, lines);
        try {
          // Two participants behind the same proxy (the test's loopback connection), one session each.
          const a = await call<CreateSessionResponse>(srv.url, 'POST', '/api/sessions', { study: 'fixture', participant: 'pa' }, from('203.0.113.7'));
          const b = await call<CreateSessionResponse>(srv.url, 'POST', '/api/sessions', { study: 'fixture', participant: 'pb' }, from('198.51.100.9'));
          assert.equal(a.status, 201);
          if (trust === undefined) {
            // Without trust proxy every request counts against the proxy's address: the second
            // participant is refused, whatever the header says.
            assert.equal(b.status, 429, 'a forwarded address is ignored without --trust-proxy');
            const ips = lines.map((l) => JSON.parse(l)).filter((e) => e.msg === 'request').map((e) => e.ip);
            assert.ok(ips.length > 0 && ips.every((ip: string) => ip === '127.0.0.1' || ip === '::ffff:127.0.0.1'), `logged ${ips.join(', ')}`);
            continue;
          }
          assert.equal(b.status, 201, `with trust proxy ${trust} each participant has their own limit`);
          // The answer route (the fast path, not Express) counts per forwarded address too: a
          // makes 3 more /api requests (4 in all, the limit); b is not held up by them.
          const sa = a.body;
          for (const seq of [0, 1, 2]) assert.equal((await call(srv.url, 'PUT', `/api/sessions/${sa.session}/trials/${seq}`, answer(0), { ...bearer(sa.token), ...from('203.0.113.7') })).status, 200);
          assert.equal((await call(srv.url, 'PUT', `/api/sessions/${sa.session}/trials/3`, answer(0), { ...bearer(sa.token), ...from('203.0.113.7') })).status, 429);
          const sb = b.body;
          assert.equal((await call(srv.url, 'PUT', `/api/sessions/${sb.session}/trials/0`, answer(0), { ...bearer(sb.token), ...from('198.51.100.9') })).status, 200);
          // The log (with --log-ip) names the participants' addresses, not the proxy's.
          const ips = new Set(lines.map((l) => JSON.parse(l)).filter((e) => e.msg === 'request').map((e) => e.ip));
          assert.deepEqual([...ips].sort(), ['198.51.100.9', '203.0.113.7']);
        } finally {
          await srv.close();
        }
      }
    } finally {
      fx.cleanup();
    }
  });

  test('an answer as the first API request after a restart (the fast path) prints nothing to stderr: the rate limiter does not look for Express on a plain request', async () => {
    const fx = makeFixture();
    const errors: unknown[][] = [];
    const original = console.error;
    console.error = (...args: unknown[]) => void errors.push(args);
    try {
      for (const trust of [undefined, 1] as const) {
        // A session from before a restart: after it, the server's first API request is an answer.
        const before = await serveBehind(fx, trust, {});
        const s = (await call<CreateSessionResponse>(before.url, 'POST', '/api/sessions', { study: 'fixture', participant: `first-${String(trust)}` })).body;
        await before.close();
        const srv = await serveBehind(fx, trust, {});
        try {
          assert.equal((await call(srv.url, 'PUT', `/api/sessions/${s.session}/trials/0`, answer(0), bearer(s.token))).status, 200);
        } finally {
          await srv.close();
        }
      }
    } finally {
      console.error = original;
      fx.cleanup();
    }
    assert.deepEqual(errors.map((a) => String(a[0]).split('\n')[0]), []);
  });

  test('GET /healthz: 200 with the served studies while the database answers, never rate limited; 503 when the database is gone', async () => {
    const fx = makeFixture();
    const srv = await serveBehind(fx, undefined, { ipPerMinute: 1 });
    try {
      assert.equal((await call(srv.url, 'GET', '/api/studies/fixture')).status, 200);
      assert.equal((await call(srv.url, 'GET', '/api/studies/fixture')).status, 429, 'the address has used its API requests');
      for (let i = 0; i < 5; i++) {
        const r = await call(srv.url, 'GET', '/healthz');
        assert.equal(r.status, 200);
        assert.deepEqual(r.body, { status: 'ok', studies: 1 });
        assert.equal(r.headers.get('cache-control'), 'no-store');
      }
      const head = await fetch(`${srv.url}/healthz`, { method: 'HEAD' });
      assert.equal(head.status, 200);
      srv.db.close();
      const down = await call(srv.url, 'GET', '/healthz');
      assert.equal(down.status, 503);
      assert.equal(down.body.status, 'error');
      assert.match(down.body.error, /database/);
    } finally {
      await srv.close();
      fx.cleanup();
    }
  });
});

function serveCli(args: string[], env: Record<string, string> = {}): { child: ChildProcess; output: () => string; ready: Promise<string>; exit: Promise<number | null> } {
  const script = `import { serve } from ${JSON.stringify(commands)}; try { process.exitCode = await serve.run(process.argv.slice(1)); } catch (e) { console.error(e.message); process.exitCode = 2; }`;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script, '--', ...args], {
    cwd: repo,
    env: { ...process.env, PUBLIC_URL: '', TRUST_PROXY: '', ...env, LOG_LEVEL: 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const exit = once(child, 'exit').then(([code]) => code as number | null);
  const ready = new Promise<string>((resolve, reject) => {
    child.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      const m = /(?:listening|serving) on (http:\/\/[^\s,]+)/.exec(out);
      // The start-up lines are complete with the Prolific line and, without a public URL, the hint after it.
      if (m && /Prolific study URL/.test(out) && /serving on https|--public-url \(env PUBLIC_URL\)/.test(out)) resolve(m[1]);
    });
    child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
    void exit.then((code) => reject(new Error(`serve exited (${code}) before listening:\n${out}`)));
    setTimeout(() => reject(new Error(`no Prolific line within 60 s:\n${out}`)), 60_000).unref();
  });
  ready.catch(() => {}); // awaited by the tests that expect a start; the others await exit
  return { child, output: () => out, ready, exit };
}

describe('legible serve --public-url and --trust-proxy', () => {
  const placeholders = 'PROLIFIC_PID={{%PROLIFIC_PID%}}&STUDY_ID={{%STUDY_ID%}}&SESSION_ID={{%SESSION_ID%}}';

  test('prints the study URL to paste into Prolific, with its placeholders, under the public address; TRUST_PROXY reaches the log', async () => {
    const fx = makeFixture({ noModel: true, platform: 'prolific' });
    const logFile = join(fx.root, 'requests.log');
    const proc = serveCli(['--port', '0', '--db', join(fx.root, 'p.db'), '--studies', fx.studiesDir, '--client', join(fx.root, 'none'), '--log-ip', '--log-file', logFile], {
      PUBLIC_URL: 'https://study.example.org/',
      TRUST_PROXY: 'loopback',
    });
    try {
      const local = (await proc.ready).replace('//localhost:', '//127.0.0.1:');
      const out = proc.output();
      assert.match(out, /serving on https:\/\/study\.example\.org \(listening on http:\/\/localhost:\d+, database /);
      assert.ok(out.includes(`Prolific study URL: https://study.example.org/?study=fixture&${placeholders}`), out);
      assert.match(out, /trusting X-Forwarded-For from loopback/);
      // Behind the proxy: the forwarded address is the one logged.
      assert.equal((await call(local, 'GET', '/api/studies/fixture', undefined, from('192.0.2.44'))).status, 200);
      proc.child.kill('SIGTERM');
      assert.equal(await proc.exit, 0);
      const logged = readFileSync(logFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
      assert.ok(logged.some((e) => e.msg === 'request' && e.ip === '192.0.2.44'), 'the participant address from X-Forwarded-For is logged');
    } finally {
      if (proc.child.exitCode === null) proc.child.kill('SIGKILL');
      fx.cleanup();
    }
  });

  test('without --public-url, a Prolific study says to set it; a public URL with a path or without http(s) is refused', async () => {
    const fx = makeFixture({ noModel: true, platform: 'prolific' });
    const base = ['--port', '0', '--db', join(fx.root, 'q.db'), '--studies', fx.studiesDir, '--client', join(fx.root, 'none')];
    const proc = serveCli(base);
    try {
      await proc.ready;
      assert.match(proc.output(), /--public-url \(env PUBLIC_URL\)/);
      assert.ok(proc.output().includes(`Prolific study URL: http://localhost:`), proc.output());
      proc.child.kill('SIGTERM');
      assert.equal(await proc.exit, 0);
    } finally {
      if (proc.child.exitCode === null) proc.child.kill('SIGKILL');
    }
    try {
      for (const [url, message] of [
        ['https://lab.example.org/legible/', /must be the address of the host alone/],
        ['study.example.org', /--public-url expects an http:\/\/ or https:\/\/ URL/],
      ] as const) {
        const bad = serveCli([...base, '--public-url', url]);
        assert.equal(await bad.exit, 2, bad.output());
        assert.match(bad.output(), message);
      }
    } finally {
      fx.cleanup();
    }
  });
});
