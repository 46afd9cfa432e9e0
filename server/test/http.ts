// Test helpers: a real server on 127.0.0.1 with an ephemeral port, a real SQLite file, a clock
// the test moves, and small HTTP helpers.
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import type { CreateSessionResponse } from '@legible/studies';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { startServer, type RateLimits, type RunningServer } from '../src/app.ts';
import type { Fixture } from './fixture.ts';

export interface TestServer extends RunningServer {
  clock: { ms: number };
  dbFile: string;
}

export const T0 = Date.parse('2030-01-01T09:00:00Z');

export async function serveFixture(
  fx: Fixture,
  opts: { dbFile?: string; clientDir?: string; clock?: { ms: number }; limits?: Partial<RateLimits>; log?: Logger } = {},
): Promise<TestServer> {
  const clock = opts.clock ?? { ms: T0 };
  const dbFile = opts.dbFile ?? join(fx.root, 'legible.db');
  const running = await startServer({
    port: 0,
    host: '127.0.0.1',
    db: dbFile,
    studiesDir: fx.studiesDir,
    studies: [fx.studyFile],
    clientDir: opts.clientDir ?? join(fx.root, 'no-client'),
    now: () => new Date(clock.ms),
    signals: false,
    limits: opts.limits,
    log: opts.log,
    build: async () => {
      throw new Error('the tests bring their own manifest');
    },
  });
  return Object.assign(running, { clock, dbFile });
}

export interface Reply<T = any> {
  status: number;
  body: T;
  text: string;
  headers: Headers;
}

export async function call<T = any>(base: string, method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Reply<T>> {
  const res = await fetch(base + path, {
    method,
    headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let parsed: unknown = undefined;
  try {
    parsed = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  return { status: res.status, body: parsed as T, text, headers: res.headers };
}

export const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

/** A request with the path sent exactly as written (fetch would normalise "..").  */
export function rawGet(base: string, path: string): Promise<{ status: number; text: string }> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: url.hostname, port: url.port, path, method: 'GET' }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on('error', reject);
    req.end();
  });
}

export async function createSession(base: string, study: string, who: Record<string, string>): Promise<Reply<CreateSessionResponse>> {
  return call<CreateSessionResponse>(base, 'POST', '/api/sessions', { study, ...who });
}

export const answer = (query: 0 | 1, extra: Record<string, unknown> = {}) => ({ query, confidence: 3, rt_ms: 812.5, ...extra });

const repo = fileURLToPath(new URL('../..', import.meta.url));
const commandsModule = fileURLToPath(new URL('../src/commands.ts', import.meta.url));

/**
 * Run one of the server's commands (`legible <name> …`) as a real process — the command itself,
 * without the other packages' commands that bin/legible.mjs loads.
 */
export function runCommand(name: string, args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const runner = [
    `import { commands } from ${JSON.stringify(commandsModule)};`,
    `const c = commands.find((x) => x.name === ${JSON.stringify(name)});`,
    'try { process.exitCode = await c.run(process.argv.slice(1)); }',
    "catch (e) { console.error(`legible ${c.name}: ${e.message}`); process.exitCode = e.name === 'UsageError' ? 2 : 1; }",
  ].join('\n');
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', runner, '--', ...args], {
      cwd: repo,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}
