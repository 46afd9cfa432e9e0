// The in-memory balancing load (balance.ts) against its definition computed from the database
// (LegibleDb.load, itself checked against tallyLoad in db.test.ts), through a random history of
// creates, answers, abandoned sessions, finishes and expiring leases, with between-subject
// conditions; and the balance it gives when many participants start at once.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { rng } from '@legible/studies';
import type { Task } from '../src/assign.ts';
import { LoadTracker } from '../src/balance.ts';
import { openDatabase } from '../src/db.ts';
import { loadRegistry } from '../src/registry.ts';
import { SessionService } from '../src/sessions.ts';
import { makeFixture } from './fixture.ts';

const sorted = <K, V>(m: Map<K, V>) => new Map([...m].sort((a, b) => (String(a[0]) < String(b[0]) ? -1 : 1)));

test('the tracked load equals the SQL load through a random history (creates, answers, abandons, finishes, expiries)', async () => {
  const fx = makeFixture({ design: ['between: [basis]'], within: ['layer'], timeLimitMinutes: 20, trialsPerParticipant: 2, catchTrials: 1 });
  try {
    const { registry } = await loadRegistry({ studiesDir: fx.studiesDir, studies: [fx.studyFile], build: async () => {} });
    const db = openDatabase(join(fx.root, 'balance.db'));
    let clock = Date.parse('2030-01-01T00:00:00Z');
    const svc = new SessionService({ db, registry, now: () => new Date(clock) });
    // A second tracker that never resyncs: it must follow every change by itself.
    const tracked = new LoadTracker(db, Number.POSITIVE_INFINITY);
    const r = rng(11);
    const live: { session: string; token: string; tasks: Task[]; next: number }[] = [];
    const check = (label: string) => {
      const now = new Date(clock).toISOString();
      const expected = db.load('fixture', 'pilot', now);
      for (const [name, t] of [['service', svc.loads], ['never resynced', tracked]] as const) {
        const got = t.load('fixture', 'pilot', now);
        assert.deepEqual(sorted(got.units), sorted(expected.units), `${name} units ${label}`);
        assert.deepEqual(sorted(got.conditions), sorted(expected.conditions), `${name} conditions ${label}`);
      }
    };
    check('empty');
    for (let step = 0; step < 400; step++) {
      const x = r.next();
      if (x < 0.2) {
        const res = await svc.create({ study: 'fixture', participant: `b${step}` });
        const s = res.body;
        const tasks = db.tasks(s.session)!;
        live.push({ session: s.session, token: s.token, tasks, next: 0 });
        tracked.created('fixture', 'pilot', s.session, db.sessionById(s.session)!.condition, db.sessionById(s.session)!.lease_expires_at, tasks);
      } else if (x < 0.85 && live.length) {
        const p = live[Math.floor(r.next() * live.length)];
        if (p.next < p.tasks.length) {
          const t = p.tasks[p.next++];
          await svc.answer(p.session, `Bearer ${p.token}`, String(t.seq), { query: t.answer, confidence: 2, rt_ms: 500 });
          if (t.kind === 'main') tracked.recorded('fixture', 'pilot', p.session, t);
        } else {
          const fin = svc.finish(p.session, `Bearer ${p.token}`);
          assert.equal(fin.outcome, 'completed');
          tracked.finished('fixture', 'pilot', p.session, db.sessionById(p.session)!.condition);
          live.splice(live.indexOf(p), 1);
        }
      } else {
        clock += Math.floor(r.next() * 6 * 60_000); // leases run out as time passes
      }
      if (step % 10 === 0) check(`at step ${step}`);
    }
    check('at the end');
    assert.ok(db.sessionsOfStudy('fixture').length > 50);
    db.close();
  } finally {
    fx.cleanup();
  }
});

test('200 participants starting together: every feature within one response of the others, creation stays cheap', async () => {
  const fx = makeFixture({ trialsPerParticipant: 4, mainPerFeature: 2 });
  try {
    const { registry } = await loadRegistry({ studiesDir: fx.studiesDir, studies: [fx.studyFile], build: async () => {} });
    const db = openDatabase(join(fx.root, 'burst.db'));
    const svc = new SessionService({ db, registry });
    const t0 = performance.now();
    // All at once: each is assigned before the others are committed, and must still see them.
    const created = await Promise.all(Array.from({ length: 200 }, (_, i) => svc.create({ study: 'fixture', participant: `burst-${i}` })));
    const perCreate = (performance.now() - t0) / 200;
    assert.ok(created.every((c) => c.status === 201));
    const leased = [...db.load('fixture', 'pilot', new Date().toISOString()).units.values()];
    assert.ok(Math.max(...leased) - Math.min(...leased) <= 1, `leased main trials per unit: ${leased.join(', ')}`);
    assert.ok(perCreate < 20, `${perCreate.toFixed(2)} ms per create`);
    db.close();
  } finally {
    fx.cleanup();
  }
});
