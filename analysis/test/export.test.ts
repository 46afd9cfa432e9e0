// `legible export` on databases the server's storage code wrote: every row out, both formats,
// the --out file.csv form, databases from before the newer columns, clear errors, and memory
// that does not grow with the number of trials (200k trials exported under a 64 MB JS heap, and
// peak RSS within a fixed margin of a 2k-trial export; a table held in memory would need far more).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { exportStudy } from '../src/export.ts';
import { parseCsvRecords } from '../src/csv.ts';
import { readTable } from '../src/table.ts';
import { TRIAL_COLUMNS } from '../src/columns.ts';
import { PARTICIPANT_COLUMNS } from '../src/participants.ts';
import { generateDb, type GeneratedDb } from './gen-db.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), 'legible-export-'));
let small: GeneratedDb;
let big: GeneratedDb;
before(() => {
  small = generateDb(join(tmp, 'small.db'), { trials: 2000 });
  big = generateDb(join(tmp, 'big.db'), { trials: 200_000 });
});
after(() => rmSync(tmp, { recursive: true, force: true }));

function childExport(db: string, out: string): { rows: number; participants: number; seconds: number; maxRssMB: number } {
  const r = spawnSync(process.execPath, ['--max-old-space-size=64', '--max-semi-space-size=4', '--import', 'tsx', join(root, 'analysis/test/rss-export.ts'), db, out], {
    encoding: 'utf8',
    cwd: root,
  });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

test('memory does not grow with the trials: 200k trials under a 64 MB heap, RSS within 80 MB of a 2k export', () => {
  const a = childExport(small.file, join(tmp, 'mem-small'));
  const b = childExport(big.file, join(tmp, 'mem-big'));
  assert.equal(a.rows, 2000);
  assert.equal(b.rows, 200_000);
  assert.equal(b.participants, big.sessions);
  const lines = readFileSync(join(tmp, 'mem-big', 'trials.csv'), 'utf8').split('\n').length - 2;
  assert.equal(lines, 200_000, 'every trial is in the file');
  const growth = b.maxRssMB - a.maxRssMB;
  console.log(`peak RSS: ${a.maxRssMB.toFixed(0)} MB for 2k trials, ${b.maxRssMB.toFixed(0)} MB for 200k (+${growth.toFixed(0)} MB), ${b.seconds.toFixed(1)} s`);
  assert.ok(growth < 80, `RSS grew by ${growth.toFixed(0)} MB from 2k to 200k trials`);
});

test('a folder gets trials, participants and the dictionary; the CSV reads back to the database\'s values', async () => {
  const out = join(tmp, 'folder');
  const res = await exportStudy(out, { db: small.file, study: 'bench', exclusions: { repeat_participation: true, practice_pass_required: false, catch_accuracy_min: 0.9 } });
  assert.deepEqual(res.files.map((f) => f.slice(out.length + 1)), ['trials.csv', 'participants.csv', 'data-dictionary.md', 'datapackage.json']);
  const pkg = JSON.parse(readFileSync(join(out, 'datapackage.json'), 'utf8'));
  assert.deepEqual(pkg.resources[0].schema.fields.map((f: { name: string }) => f.name), TRIAL_COLUMNS.map((c) => c.name));
  assert.deepEqual(pkg.resources[1].schema.fields.map((f: { name: string }) => f.name), PARTICIPANT_COLUMNS.map((c) => c.name));
  const t = readTable(join(out, 'trials.csv'));
  assert.deepEqual(t.names(), TRIAL_COLUMNS.map((c) => c.name));
  const db = new Database(small.file, { readonly: true });
  const sums = db.prepare("SELECT sum(correct) AS c, sum(kind = 'catch') AS k, sum(rt_ms) AS rt FROM trials").get() as { c: number; k: number; rt: number };
  db.close();
  assert.equal(t.numbers('correct').reduce((a, b) => a + b, 0), sums.c);
  assert.equal(t.numbers('is_catch').reduce((a, b) => a + b, 0), sums.k);
  assert.equal(t.numbers('rt_ms').reduce((a, b) => a + b, 0), sums.rt);
  // Query images hold "/", commas never; practice rounds only on practice trials.
  const kinds = t.column('kind')!;
  const rounds = t.column('practice_round')!;
  kinds.forEach((k, i) => assert.equal(rounds[i] === '', k !== 'practice'));
  const p = parseCsvRecords(readFileSync(join(out, 'participants.csv'), 'utf8'));
  assert.equal(p.length, small.sessions);
  assert.deepEqual(Object.keys(p[0]), PARTICIPANT_COLUMNS.map((c) => c.name));
  // With catch_accuracy_min 0.9, the flag follows each session's catch accuracy.
  for (const row of p) {
    const acc = Number(row.catch_correct) / Number(row.catch_trials);
    assert.equal(row.excl_catch_accuracy, acc < 0.9 ? '1' : '0');
    assert.equal(row.excl_instruction_time, '', 'rule not configured');
  }
  assert.equal(res.exclusions!.rules.find((r) => r.id === 'catch_accuracy')!.excluded, p.filter((r) => r.excl_catch_accuracy === '1').length);
});

test('--out trials.csv keeps working (participants.csv and the dictionary beside it), and JSON Lines', async () => {
  const file = join(tmp, 'as-file', 'my-trials.csv');
  const r = spawnSync(process.execPath, [join(root, 'bin/legible.mjs'), 'export', 'bench', '--out', file, '--db', small.file], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /no study file for "bench"/, 'says that no exclusion flags are set');
  for (const f of ['my-trials.csv', 'participants.csv', 'data-dictionary.md']) assert.ok(existsSync(join(tmp, 'as-file', f)), f);
  assert.equal(parseCsvRecords(readFileSync(file, 'utf8')).length, 2000);
  const j = await exportStudy(join(tmp, 'jsonl'), { db: small.file, study: 'bench', format: 'jsonl' });
  const first = JSON.parse(readFileSync(j.files[0], 'utf8').split('\n')[0]);
  assert.equal(typeof first.is_catch, 'boolean');
  assert.equal(typeof first.rt_ms, 'number');
  assert.match(readFileSync(j.files[2], 'utf8'), /One JSON object per line/);
});

test('databases from before practice rounds and client events still export, with those cells empty', async () => {
  const old = join(tmp, 'old.db');
  copyFileSync(small.file, old);
  const db = new Database(old);
  db.exec('ALTER TABLE trials DROP COLUMN practice_round; DROP TABLE events; ALTER TABLE sessions DROP COLUMN practice_passed; ALTER TABLE sessions DROP COLUMN practice_rounds;');
  db.close();
  const res = await exportStudy(join(tmp, 'old'), { db: old, study: 'bench' });
  assert.equal(res.rows, 2000);
  const p = parseCsvRecords(readFileSync(res.files[1], 'utf8'));
  assert.equal(p[0].blur_events, '');
  assert.equal(p[0].practice_passed, '');
});

test('errors name the problem and the fix', async () => {
  await assert.rejects(exportStudy(join(tmp, 'x'), { db: join(tmp, 'none.db'), study: 'bench' }), /no database at .*none\.db: give the file that `legible serve` writes with --db/);
  await assert.rejects(exportStudy(join(tmp, 'x'), { db: small.file, study: 'other' }), /no sessions for study "other" .* \(it has: bench\)/);
  await assert.rejects(exportStudy(join(tmp, 'x.jsonl'), { db: small.file, study: 'bench', format: 'csv' }), /ends in \.jsonl but --format is csv/);
});
