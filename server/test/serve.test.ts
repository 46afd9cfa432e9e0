// `legible serve` as a real process: it prints the participant URLs, answers over HTTP, and on
// SIGTERM finishes the requests in flight and closes the database — every acknowledged answer is
// in the file afterwards.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import type { CreateSessionResponse } from '@legible/studies';
import { openDatabase } from '../src/db.ts';
import { makeFixture } from './fixture.ts';
import { answer, bearer, call } from './http.ts';

const repo = fileURLToPath(new URL('../..', import.meta.url));
const commands = fileURLToPath(new URL('../src/commands.ts', import.meta.url));

function serve(args: string[], env: Record<string, string> = {}): { child: ChildProcess; output: () => string; url: Promise<string> } {
  // The serve command itself, without the other packages' commands that bin/legible.mjs loads.
  const script = `import { serve } from ${JSON.stringify(commands)}; process.exitCode = await serve.run(process.argv.slice(1));`;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script, '--', ...args], {
    cwd: repo,
    env: { ...process.env, ...env, LOG_LEVEL: 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const url = new Promise<string>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      out += chunk.toString();
      // The URL once the participant links after it are printed too.
      const m = /serving on (http:\/\/\S+)[^\n]*\n.*\?study=/.exec(out);
      if (m) resolve(m[1].replace('//localhost:', '//127.0.0.1:'));
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
    child.once('exit', (code) => reject(new Error(`serve exited (${code}) before listening:\n${out}`)));
  });
  return { child, output: () => out, url };
}

test('legible serve: URLs printed, answers recorded, SIGTERM drains in-flight writes and exits 0', async () => {
  // No model file: the server serves the build as it is (no stimuli pipeline involved).
  const fx = makeFixture({ noModel: true });
  const dbFile = join(fx.root, 'served.db');
  const proc = serve(['--port', '0', '--db', dbFile, '--studies', fx.studiesDir, '--study', 'fixture', '--client', join(fx.root, 'none')]);
  try {
    const url = await proc.url;
    assert.match(proc.output(), new RegExp(`http://localhost:${new URL(url).port}/\\?study=fixture   Server test study`));
    const s = (await call<CreateSessionResponse>(url, 'POST', '/api/sessions', { study: 'fixture', PROLIFIC_PID: 'cli-pid' })).body;
    assert.equal(s.trials.length, 8);

    // Send every answer at once and SIGTERM while they are in flight.
    const puts = s.trials.map((t) =>
      call(url, 'PUT', `/api/sessions/${s.session}/trials/${t.seq}`, answer(0), bearer(s.token)).then(
        (r) => ({ seq: t.seq, status: r.status }),
        () => ({ seq: t.seq, status: 0 }),
      ),
    );
    await new Promise((r) => setTimeout(r, 5));
    proc.child.kill('SIGTERM');
    const results = await Promise.all(puts);
    const [code] = (await once(proc.child, 'exit')) as [number | null];
    assert.equal(code, 0, proc.output());
    assert.match(proc.output(), /"msg":"stopped"/);

    const db = openDatabase(dbFile);
    try {
      const stored = new Set(db.answeredSeqs(s.session));
      const acked = results.filter((r) => r.status === 200).map((r) => r.seq);
      for (const seq of acked) assert.ok(stored.has(seq), `acknowledged seq ${seq} is in the database`);
      assert.ok(results.every((r) => r.status === 200 || r.status === 0), JSON.stringify(results));
      const mode = db.sqlite.pragma('journal_mode', { simple: true });
      assert.equal(mode, 'wal');
    } finally {
      db.close();
    }
    // Logs carry no personal data.
    assert.ok(!proc.output().includes('cli-pid'));
    assert.ok(!proc.output().includes(s.session), 'no session ids in the logs');
  } finally {
    if (proc.child.exitCode === null) proc.child.kill('SIGKILL');
    fx.cleanup();
  }
});

test('legible serve: env PORT and LEGIBLE_DB; a port in use is a clear error', async () => {
  // No model file: the server serves the build as it is (no stimuli pipeline involved).
  const fx = makeFixture({ noModel: true });
  const dbFile = join(fx.root, 'env.db');
  const first = serve(['--studies', fx.studiesDir], { PORT: '0', LEGIBLE_DB: dbFile });
  try {
    const url = await first.url;
    assert.match(first.output(), new RegExp(`database ${dbFile.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
    const port = new URL(url).port;
    const second = serve(['--port', port, '--db', join(fx.root, 'other.db'), '--studies', fx.studiesDir]);
    await assert.rejects(second.url, /port \d+ is in use: choose another with --port or PORT/);
    first.child.kill('SIGINT');
    const [code] = (await once(first.child, 'exit')) as [number | null];
    assert.equal(code, 0);
  } finally {
    if (first.child.exitCode === null) first.child.kill('SIGKILL');
    fx.cleanup();
  }
});
