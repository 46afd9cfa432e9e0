// The database file: durability settings, migrations, the secret, the columns other packages read,
// and the SQL load that balances assignment agreeing with its pure definition (tallyLoad).
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { assignTasks, makePlan, tallyLoad, type Task } from '../src/assign.ts';
import { openDatabase, SCHEMA_VERSION, type SessionRow, type TrialRow } from '../src/db.ts';
import { makeFixture, tempDir } from './fixture.ts';

const dirs: string[] = [];
const dbFile = () => {
  const d = tempDir();
  dirs.push(d);
  return join(d, 'sub', 'legible.db');
};
after(async () => {
  const { rmSync } = await import('node:fs');
  dirs.forEach((d) => rmSync(d, { recursive: true, force: true }));
});

test('opens with WAL, synchronous=FULL, a busy timeout and foreign keys; migrates once', () => {
  const file = dbFile();
  const db = openDatabase(file);
  assert.equal(db.sqlite.pragma('journal_mode', { simple: true }), 'wal');
  assert.equal(db.sqlite.pragma('synchronous', { simple: true }), 2, 'FULL');
  assert.equal(db.sqlite.pragma('foreign_keys', { simple: true }), 1);
  assert.ok((db.sqlite.pragma('busy_timeout', { simple: true }) as number) >= 1000);
  assert.equal(db.schemaVersion, SCHEMA_VERSION);
  db.close();
  const again = openDatabase(file);
  assert.equal(again.schemaVersion, SCHEMA_VERSION);
  again.close();
});

test('the tables have the columns the analysis export reads', () => {
  const db = openDatabase(dbFile());
  const cols = (t: string) => (db.sqlite.prepare(`PRAGMA table_info(${t})`).all() as { name: string }[]).map((c) => c.name);
  const expect: Record<string, string[]> = {
    meta: ['key', 'value'],
    identities: ['participant', 'study', 'prolific_pid', 'prolific_study_id', 'prolific_session_id', 'created_at'],
    sessions: ['id', 'study', 'participant', 'token_hash', 'mode', 'seed', 'condition', 'tasks', 'n_trials', 'status', 'outcome', 'code', 'created_at', 'lease_expires_at', 'finished_at', 'user_agent'],
    trials: [
      'session_id', 'seq', 'study', 'participant', 'trial_id', 'feature', 'layer', 'basis', 'feature_index', 'kind', 'reference_kind', 'query_images', 'answer',
      'choice', 'confidence', 'correct', 'rt_ms', 'query_order', 'input', 'onset_ms', 'response_ms', 'client_time', 'server_time', 'window_w', 'window_h',
      'screen_w', 'screen_h', 'dpr', 'plugin_version', 'payload_hash', 'mode',
    ],
  };
  for (const [table, names] of Object.entries(expect)) {
    const have = cols(table);
    for (const n of names) assert.ok(have.includes(n), `${table}.${n}`);
  }
  db.close();
});

test('a newer schema than this code is refused with a clear message', () => {
  const file = dbFile();
  const db = openDatabase(file);
  db.sqlite.pragma(`user_version = ${SCHEMA_VERSION + 1}`);
  db.close();
  assert.throws(() => openDatabase(file), /newer than this legible/);
});

test('the secret is generated once and kept; LEGIBLE_SECRET must stay the same', () => {
  const file = dbFile();
  const a = openDatabase(file, { secret: '' });
  assert.match(a.secret, /^[0-9a-f]{64}$/);
  const secret = a.secret;
  a.close();
  const b = openDatabase(file, { secret: '' });
  assert.equal(b.secret, secret);
  b.close();
  assert.throws(() => openDatabase(file, { secret: 'another-secret-0123456789' }), /differs from the secret this database was created with/);

  const other = dbFile();
  const c = openDatabase(other, { secret: 'given-secret-0123456789' });
  assert.equal(c.secret, 'given-secret-0123456789');
  assert.equal((c.sqlite.prepare("SELECT count(*) AS n FROM meta WHERE key = 'secret'").get() as { n: number }).n, 0, 'a given secret is not written to the file');
  c.close();
  assert.throws(() => openDatabase(other, { secret: '' }), /created with LEGIBLE_SECRET set/);
  assert.throws(() => openDatabase(dbFile(), { secret: 'short' }), /too short/);
});

test('foreign keys hold: no trial without its session', () => {
  const db = openDatabase(dbFile());
  assert.throws(() => db.insertTrial(trialRow('missing-session', 0, { kind: 'main', feature: 'f', reference_kind: 'natural' } as Task)), /FOREIGN KEY/);
  db.close();
});

function trialRow(session: string, seq: number, t: Pick<Task, 'kind' | 'feature' | 'reference_kind'>): TrialRow {
  return {
    session_id: session, seq, study: 'fixture', participant: 'p', trial_id: 't', feature: t.feature, layer: 'l', basis: 'b', feature_index: 0,
    kind: t.kind, reference_kind: t.reference_kind, query_images: '[]', answer: 0, choice: 0, confidence: 1, correct: 1, rt_ms: 1, query_order: null,
    input: null, onset_ms: null, response_ms: null, client_time: null, server_time: '2030-01-01T00:00:00.000Z', window_w: null, window_h: null,
    screen_w: null, screen_h: null, dpr: null, plugin_version: null, payload_hash: 'h', mode: 'pilot', practice_round: null,
  };
}

test('the SQL load equals tallyLoad over the same sessions (leases, expiry, finished, partial answers)', () => {
  const fx = makeFixture();
  try {
    const plan = makePlan(fx.loaded.study.design, fx.manifest);
    const db = openDatabase(join(fx.root, 'load.db'));
    const T0 = Date.parse('2030-01-01T00:00:00Z');
    const iso = (ms: number) => new Date(ms).toISOString();
    for (let i = 0; i < 30; i++) {
      const created = T0 + i * 120_000;
      const { conditionKey, tasks } = assignTasks(plan, i, tallyLoad([], iso(created)));
      const status: SessionRow['status'] = i % 5 === 0 ? 'finished' : i % 7 === 0 ? 'released' : 'active';
      const row: SessionRow = {
        id: `s${i}`, study: 'fixture', participant: `p${i}`, token_hash: 'x', mode: i === 29 ? 'live' : 'pilot', seed: i, condition: conditionKey,
        tasks: JSON.stringify(tasks), n_trials: tasks.length, status, outcome: null, code: null, created_at: iso(created),
        lease_expires_at: iso(created + 30 * 60_000), finished_at: null, user_agent: null, manifest_sha256: null,
      };
      db.insertSession(row);
      const answered = status === 'finished' ? tasks.length : i % 3;
      for (const t of tasks.slice(0, answered)) db.insertTrial(trialRow(row.id, t.seq, t));
    }
    for (const nowMs of [T0, T0 + 20 * 60_000, T0 + 45 * 60_000, T0 + 90 * 60_000]) {
      const now = iso(nowMs);
      const snapshots = db.sessionsOfStudy('fixture').filter((s) => s.mode === 'pilot').map((s) => ({
        status: s.status,
        lease_expires_at: s.lease_expires_at,
        condition: s.condition,
        tasks: JSON.parse(s.tasks) as Task[],
        answered: db.answeredSeqs(s.id),
      }));
      const expected = tallyLoad(snapshots, now);
      const actual = db.load('fixture', 'pilot', now);
      assert.deepEqual(new Map([...actual.units].sort()), new Map([...expected.units].sort()), `units at ${now}`);
      assert.deepEqual(actual.conditions, expected.conditions, `conditions at ${now}`);
    }
    // Live data is counted apart from pilot data.
    assert.ok([...db.load('fixture', 'live', iso(T0 + 60 * 60_000)).units.values()].every((n) => n <= 1));
    db.close();
  } finally {
    fx.cleanup();
  }
});

test('group commit: a batch of trials commits together; duplicates resolve to the first; a bad row fails alone', async () => {
  const db = openDatabase(dbFile());
  try {
    const session: SessionRow = {
      id: 'g1', study: 'fixture', participant: 'p', token_hash: 'x', mode: 'pilot', seed: 1, condition: '{}', tasks: '[]', n_trials: 10, status: 'active',
      outcome: null, code: null, created_at: '2030-01-01T00:00:00.000Z', lease_expires_at: '2030-01-01T01:00:00.000Z', finished_at: null, user_agent: null,
      manifest_sha256: null,
    };
    db.insertSession(session);
    const t = { kind: 'main' as const, feature: 'f', reference_kind: 'natural' as const };
    const results = await Promise.allSettled([
      db.recordTrial({ ...trialRow('g1', 0, t), payload_hash: 'first' }),
      db.recordTrial({ ...trialRow('g1', 0, t), payload_hash: 'second' }),
      db.recordTrial(trialRow('no-such-session', 0, t)),
      db.recordTrial(trialRow('g1', 1, t)),
    ]);
    assert.deepEqual(results[0], { status: 'fulfilled', value: { inserted: true } });
    assert.equal(results[1].status, 'fulfilled');
    const dup = (results[1] as PromiseFulfilledResult<Awaited<ReturnType<typeof db.recordTrial>>>).value;
    assert.equal(dup.inserted, false);
    assert.equal(!dup.inserted && 'prior' in dup && dup.prior.payload_hash, 'first');
    assert.equal(results[2].status, 'rejected');
    assert.match(String((results[2] as PromiseRejectedResult).reason), /FOREIGN KEY/);
    assert.deepEqual(results[3], { status: 'fulfilled', value: { inserted: true } });
    assert.deepEqual(db.answeredSeqs('g1'), [0, 1]);
    assert.deepEqual(db.tasks('g1'), []);
    assert.equal(db.tasks('nope'), undefined);
  } finally {
    db.close();
  }
});
