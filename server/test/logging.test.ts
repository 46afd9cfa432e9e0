// `legible serve`'s log as an experimenter meets it: a terminal gets human-readable start-up lines
// and warnings, not one line per request; per-request lines are at debug level (LOG_LEVEL=debug)
// or in the --log-file, as JSON; output that is not a terminal is JSON. Real processes, a real
// pseudo-terminal (util-linux `script`) where it is installed.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import type { CreateSessionResponse } from '@legible/studies';
import { prettyLine } from '../src/logging.ts';
import { fixtureMaker } from './fixture.ts';
import { answer, bearer, call } from './http.ts';

const repo = fileURLToPath(new URL('../..', import.meta.url));
const commands = fileURLToPath(new URL('../src/commands.ts', import.meta.url));
const makeFixture = fixtureMaker();

interface Proc {
  output(): string;
  url: Promise<string>;
  stop(): Promise<number | null>;
}

/** `legible serve` with stdout a pipe, or (tty) inside `script`, which gives it a pseudo-terminal. */
function serve(root: string, args: string[], env: Record<string, string>, tty = false): Proc {
  const launcher = join(root, `serve-${Math.random().toString(36).slice(2)}.mjs`);
  writeFileSync(launcher, `import { serve } from ${JSON.stringify(commands)};\nprocess.exitCode = await serve.run(${JSON.stringify(args)});\n`);
  const node = [process.execPath, '--import', 'tsx', launcher];
  const baseEnv: NodeJS.ProcessEnv = { ...process.env };
  delete baseEnv.LOG_LEVEL;
  delete baseEnv.LOG_FORMAT;
  delete baseEnv.LOG_FILE;
  const child = tty
    ? spawn('script', ['-qefc', node.map((a) => `'${a}'`).join(' '), '/dev/null'], { cwd: repo, env: { ...baseEnv, ...env }, stdio: ['pipe', 'pipe', 'pipe'] })
    : spawn(node[0], node.slice(1), { cwd: repo, env: { ...baseEnv, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const url = new Promise<string>((resolve, reject) => {
    child.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
      const m = /serving on (http:\/\/\S+)[^\n]*\n.*\?study=/.exec(out);
      if (m) resolve(m[1].replace('//localhost:', '//127.0.0.1:'));
    });
    child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
    child.once('exit', (code) => reject(new Error(`serve exited (${code}) before listening:\n${out}`)));
  });
  url.catch(() => {});
  const exited = once(child, 'exit');
  return {
    output: () => out,
    url,
    stop: async () => {
      if (child.exitCode !== null) return child.exitCode;
      // Under `script` the server is a grandchild: SIGTERM goes to script, which hangs up the terminal.
      child.kill('SIGTERM');
      const [code] = (await exited) as [number | null];
      return code;
    },
  };
}

/** One participant: a session, every answer, finish — about a dozen requests. */
async function participant(url: string, id: string): Promise<number> {
  const s = (await call<CreateSessionResponse>(url, 'POST', '/api/sessions', { study: 'fixture', participant: id })).body;
  for (const t of s.trials) await call(url, 'PUT', `/api/sessions/${s.session}/trials/${t.seq}`, answer(0), bearer(s.token));
  await call(url, 'POST', `/api/sessions/${s.session}/finish`, undefined, bearer(s.token));
  return s.trials.length + 2;
}

const jsonLines = (text: string) =>
  text
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);

test('default (not a terminal): no line per request; start-up lines readable; the rest JSON', async () => {
  const fx = makeFixture({ noModel: true });
  const proc = serve(fx.root, ['--port', '0', '--db', join(fx.root, 'a.db'), '--studies', fx.studiesDir, '--client', join(fx.root, 'none')], {});
  try {
    const url = await proc.url;
    const requests = await participant(url, 'quiet');
    assert.ok(requests >= 10);
    assert.equal(await proc.stop(), 0);
    const out = proc.output();
    assert.match(out, /^legible: serving on http:\/\/localhost:\d+ \(database /m);
    const entries = jsonLines(out);
    assert.equal(entries.filter((e) => e.msg === 'request').length, 0, `no per-request lines at the default level:\n${out}`);
    assert.ok(entries.some((e) => e.msg === 'stopped'), 'lifecycle lines are JSON when stdout is not a terminal');
  } finally {
    await proc.stop();
  }
});

test('LOG_LEVEL=debug shows every request as JSON; --log-file gets them whatever the level', async () => {
  const fx = makeFixture({ noModel: true });
  const file = join(fx.root, 'logs', 'requests.jsonl');
  const debug = serve(fx.root, ['--port', '0', '--db', join(fx.root, 'b.db'), '--studies', fx.studiesDir, '--client', join(fx.root, 'none')], { LOG_LEVEL: 'debug' });
  let requests: number;
  try {
    requests = await participant(await debug.url, 'loud');
    assert.equal(await debug.stop(), 0);
  } finally {
    await debug.stop();
  }
  const shown = jsonLines(debug.output()).filter((e) => e.msg === 'request');
  assert.equal(shown.length, requests, debug.output());
  assert.ok(shown.every((e) => e.level === 20 && typeof e.route === 'string' && typeof e.status === 'number' && typeof e.ms === 'number'));

  const filed = serve(fx.root, ['--port', '0', '--db', join(fx.root, 'c.db'), '--studies', fx.studiesDir, '--client', join(fx.root, 'none'), '--log-file', file], { LOG_LEVEL: 'warn' });
  try {
    const n = await participant(await filed.url, 'filed');
    assert.equal(await filed.stop(), 0);
    assert.equal(jsonLines(filed.output()).length, 0, `warn level: nothing on stdout but the start-up lines:\n${filed.output()}`);
    const inFile = jsonLines(readFileSync(file, 'utf8'));
    assert.equal(inFile.filter((e) => e.msg === 'request').length, n);
    assert.ok(inFile.some((e) => e.msg === 'stopped'), 'the file has the info lines too');
  } finally {
    await filed.stop();
  }

  // A wrong level is a usage error that names the variable.
  const bad = serve(fx.root, ['--port', '0', '--db', join(fx.root, 'd.db'), '--studies', fx.studiesDir], { LOG_LEVEL: 'loud' });
  await assert.rejects(bad.url, /LOG_LEVEL="loud": expected one of fatal, error, warn, info, debug, trace, silent/);
});

const hasScript = spawnSync('script', ['--version']).status === 0;

test('on a terminal: human-readable start-up lines and warnings, no JSON, no line per request', { skip: hasScript ? false : 'util-linux `script` is not installed (no pseudo-terminal)' }, async () => {
  const fx = makeFixture({ noModel: true });
  // One session creation per minute: the second participant meets the rate limit, a warning.
  const proc = serve(fx.root, ['--port', '0', '--db', join(fx.root, 'e.db'), '--studies', fx.studiesDir, '--client', join(fx.root, 'none'), '--limit-create', '1'], {}, true);
  try {
    const url = await proc.url;
    await participant(url, 'tty');
    const limited = await call(url, 'POST', '/api/sessions', { study: 'fixture', participant: 'tty-2' });
    assert.equal(limited.status, 429);
    for (let i = 0; i < 40 && !proc.output().includes('rate limited'); i++) await new Promise((r) => setTimeout(r, 50));
    const out = proc.output();
    assert.match(out, /legible: serving on http:\/\/localhost:\d+/);
    assert.match(out, /^\d\d:\d\d:\d\d WARN {2}rate limited {2}limit=session creations per address\b/m);
    assert.doesNotMatch(out, /\{"level"/, `no JSON on a terminal:\n${out}`);
    assert.doesNotMatch(out, /\brequest\b/, `no per-request lines:\n${out}`);
  } finally {
    await proc.stop();
  }
});

test('prettyLine: time, level, message, fields; an error with its stack', () => {
  const at = Date.parse('2030-01-01T12:03:04Z');
  const line = prettyLine(JSON.stringify({ level: 40, time: at, msg: 'rate limited', limit: 'per address', n: 3 }));
  assert.match(line, /^\d\d:\d\d:\d\d WARN {2}rate limited {2}limit=per address n=3\n$/);
  const err = prettyLine(JSON.stringify({ level: 50, time: at, msg: 'request failed', err: { message: 'boom', stack: 'Error: boom\n    at x' } }));
  assert.match(err, /ERROR request failed\n {2}Error: boom\n {4}at x\n$/);
  assert.equal(prettyLine('not json'), 'not json\n');
});
