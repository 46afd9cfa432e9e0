// Session creation under a burst of arrivals: participants who arrive a moment apart (each in its
// own turn of the event loop, as separate HTTP requests do) share a commit instead of paying a
// transaction and an fsync each — the cause of the burst latency in server/BENCHMARKS.md — while
// every creation is still balanced against the others and durable before it is answered. Real
// SQLite file; the HTTP benchmark is server/bench/burst.ts.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { openDatabase } from '../src/db.ts';
import { loadRegistry } from '../src/registry.ts';
import { SessionService } from '../src/sessions.ts';
import { fixtureMaker } from './fixture.ts';

const makeFixture = fixtureMaker();

test('creations arriving one event-loop turn apart share commits; each is durable when answered, and balanced', async () => {
  const fx = makeFixture({ mode: 'live', trialsPerParticipant: 4, mainPerFeature: 2 });
  const { registry } = await loadRegistry({ studiesDir: fx.studiesDir, studies: [fx.studyFile], build: async () => {} });
  const dbFile = join(fx.root, 'burst.db');
  const db = openDatabase(dbFile);
  const svc = new SessionService({ db, registry });
  // A second connection, as another process would see the file: a creation is answered only once it is committed.
  const reader = new Database(dbFile, { readonly: true });
  const stored = reader.prepare<[string], number>('SELECT count(*) FROM sessions WHERE id = ?').pluck();
  try {
    const n = 40;
    const commitsBefore = db.commits;
    const answered: Promise<void>[] = [];
    let notDurable = 0;
    // Each arrival in its own macrotask, one after the other (not all in one turn).
    await new Promise<void>((done) => {
      let i = 0;
      const next = () => {
        const k = i++;
        answered.push(
          svc.create({ study: 'fixture', participant: `arrival-${k}` }).then((r) => {
            assert.equal(r.status, 201);
            if (stored.get(r.body.session) !== 1) notDurable++;
          }),
        );
        if (i < n) setImmediate(next);
        else done();
      };
      setImmediate(next);
    });
    await Promise.all(answered);
    assert.equal(notDurable, 0, 'every creation is in the database file when it is answered');
    const commits = db.commits - commitsBefore;
    assert.ok(commits <= n / 4, `${n} creations took ${commits} commits (expected them grouped)`);
    assert.equal(reader.prepare('SELECT count(*) FROM sessions').pluck().get(), n);
    const leased = [...db.load('fixture', 'live', new Date().toISOString()).units.values()];
    assert.ok(Math.max(...leased) - Math.min(...leased) <= 1, `leased main trials per unit: ${leased.join(', ')}`);
  } finally {
    reader.close();
    db.close();
  }
});

test('a lone creation is not held up for long waiting for company', async () => {
  const fx = makeFixture({ mode: 'live' });
  const { registry } = await loadRegistry({ studiesDir: fx.studiesDir, studies: [fx.studyFile], build: async () => {} });
  const db = openDatabase(join(fx.root, 'lone.db'));
  const svc = new SessionService({ db, registry });
  try {
    await svc.create({ study: 'fixture', participant: 'warm-up' });
    const t0 = performance.now();
    const r = await svc.create({ study: 'fixture', participant: 'alone' });
    assert.equal(r.status, 201);
    // The commit window (20 ms) plus one commit; generous for a loaded machine.
    assert.ok(performance.now() - t0 < 1000, `${(performance.now() - t0).toFixed(0)} ms`);
    // An answer arriving meanwhile is not delayed by the window: it commits at the next turn and takes the creation along.
    const s = await svc.create({ study: 'fixture', participant: 'with-answer' });
    const pending = svc.create({ study: 'fixture', participant: 'rides-along' });
    const commitsBefore = db.commits;
    await svc.answer(s.body.session, `Bearer ${s.body.token}`, '0', { query: 0, confidence: 2, rt_ms: 500 });
    await pending;
    assert.equal(db.commits - commitsBefore, 1, 'the creation waiting for its window committed with the answer');
  } finally {
    db.close();
  }
});
