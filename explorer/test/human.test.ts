// Human answers per feature: accuracy, and a participant-level interval (participants resampled,
// not trials), from a trials file that `legible export` writes.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { openDatabase } from '@legible/server';
import { readAnswers, summarise, type Answer } from '../src/human.ts';

/** Exclusion rules that exclude nothing but unfinished sessions. */
const NONE = { repeat_participation: false, practice_pass_required: false };

const answers = (participant: string, n: number, correct: number): Answer[] =>
  Array.from({ length: n }, (_, i) => ({ participant, feature: 'l/channels/1', trial: `t${i}`, kind: 'main', mode: 'live', correct: i < correct, confidence: 2, rt_ms: 900 + i }));

test('the interval is over participants: one prolific participant cannot make it narrow', () => {
  // 1 participant right on 200 trials, 9 participants wrong on their 1 trial each.
  const lopsided = [...answers('p0', 200, 200), ...Array.from({ length: 9 }, (_, i) => answers(`q${i}`, 1, 0)).flat()];
  const h = summarise(lopsided, 'x')!;
  assert.equal(h.trials, 209);
  assert.equal(h.participants, 10);
  assert.ok(Math.abs(h.accuracy - 200 / 209) < 1e-12);
  // Resampling participants: draws without p0 have accuracy 0, so the interval reaches 0 — a
  // trial-level (binomial) interval around 0.957 would be about ±0.03.
  assert.equal(h.ci![0], 0);
  assert.ok(h.ci![1] > 0.95);
  // Ten alike participants at 70 % over 20 trials each: a tight interval around 0.7.
  const alike = Array.from({ length: 10 }, (_, i) => answers(`a${i}`, 20, 14)).flat();
  const g = summarise(alike, 'y')!;
  assert.equal(g.accuracy, 0.7);
  assert.deepEqual(g.ci, [0.7, 0.7]);
  // Seeded: the same answers give the same interval.
  assert.deepEqual(summarise(lopsided, 'x')!.ci, h.ci);
  assert.equal(g.median_rt_ms, 909.5);
  assert.equal(summarise([], 'z'), null);
});

test('answers from a trials.csv of `legible export`: main trials of the study only; a file without the columns is refused by name', () => {
  const dir = mkdtempSync(join(tmpdir(), 'legible-human-'));
  try {
    const csv = join(dir, 'trials.csv');
    writeFileSync(
      csv,
      'study,mode,participant,trial_id,kind,feature,correct,confidence,rt_ms\n' +
        'demo,live,p1,t1,main,l/channels/1,1,3,800\n' +
        'demo,live,p1,t2,catch,l/channels/1,1,3,700\n' +
        'demo,live,p2,t1,main,l/channels/1,0,1,1200\n' +
        'other,live,p3,t1,main,l/channels/1,1,2,900\n',
    );
    const got = readAnswers(csv, 'demo', { rules: NONE }).answers;
    assert.deepEqual(got.map((a) => [a.participant, a.correct, a.confidence, a.rt_ms]), [
      ['p1', true, 3, 800],
      ['p2', false, 1, 1200],
    ]);
    const bad = join(dir, 'other.csv');
    writeFileSync(bad, 'participant,feature\np1,f\n');
    assert.throws(() => readAnswers(bad, 'demo', { rules: NONE }), /other\.csv has no "trial_id" column: give a trials file that `legible export` wrote/);
    assert.throws(() => readAnswers(join(dir, 'missing.db'), 'demo', { rules: NONE }), /missing\.db: no such file/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// A trials.csv as `legible export` writes it (no participants.csv beside it: the fact sheets come
// from the rows, as in `legible analyze`).
const HEADER = 'study,mode,session,participant,trial_id,kind,feature,button,correct,confidence,rt_ms,simulated\n';
const row = (mode: string, session: string, kind: string, trial: string, button: string, correct: 0 | 1, simulated: 0 | 1 = 0) =>
  `demo,${mode},${session},${session},${trial},${kind},l/channels/1,${button},${correct},2,900,${simulated}\n`;
/** A session: two main trials (right, wrong) with both buttons, and two catch trials with `catchRight` of them right. */
const session = (mode: string, id: string, catchRight: number, simulated: 0 | 1 = 0) =>
  row(mode, id, 'main', 't1', 'left', 1, simulated) + row(mode, id, 'main', 't2', 'right', 0, simulated) + row(mode, id, 'catch', 'c1', 'left', catchRight >= 1 ? 1 : 0, simulated) + row(mode, id, 'catch', 'c2', 'right', catchRight >= 2 ? 1 : 0, simulated);

test('only the live sessions the study\'s exclusion rules keep, as `legible analyze`; another mode on request', () => {
  const dir = mkdtempSync(join(tmpdir(), 'legible-human-'));
  try {
    const csv = join(dir, 'trials.csv');
    // Live: s1 passes, s2 fails the catch trials (0 of 2 < 0.5); pilot: p1 passes.
    writeFileSync(csv, HEADER + session('live', 's1', 2) + session('live', 's2', 0) + session('pilot', 'p1', 2));
    const rules = { ...NONE, catch_accuracy_min: 0.5 };
    const live = readAnswers(csv, 'demo', { rules });
    assert.equal(live.mode, 'live');
    assert.equal(live.simulated, false);
    assert.deepEqual([live.sessions, live.excluded], [2, 1]);
    assert.deepEqual(live.answers.map((a) => [a.participant, a.trial, a.kind, a.correct]), [
      ['s1', 't1', 'main', true],
      ['s1', 't2', 'main', false],
    ]);
    // Without rules nothing is excluded, but pilot sessions still stay out of the live figures.
    assert.deepEqual(new Set(readAnswers(csv, 'demo', { rules: NONE }).answers.map((a) => a.participant)), new Set(['s1', 's2']));
    const pilot = readAnswers(csv, 'demo', { rules, mode: 'pilot' });
    assert.deepEqual([pilot.mode, pilot.sessions, pilot.excluded, pilot.answers.length], ['pilot', 1, 0, 2]);
    assert.deepEqual(new Set(pilot.answers.map((a) => a.participant)), new Set(['p1']));
    assert.equal(readAnswers(csv, 'demo', { rules, mode: 'all' }).answers.length, 4);
    // Pilot data alone: shown (mode all), as `legible analyze` analyses it.
    const pilotOnly = join(dir, 'pilot.csv');
    writeFileSync(pilotOnly, HEADER + session('pilot', 'p1', 2));
    assert.deepEqual([readAnswers(pilotOnly, 'demo', { rules }).mode, readAnswers(pilotOnly, 'demo', { rules }).answers.length], ['all', 2]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('simulated participants (`legible pilot`) are flagged; a file mixing them with real ones is refused', () => {
  const dir = mkdtempSync(join(tmpdir(), 'legible-human-'));
  try {
    const sim = join(dir, 'sim.csv');
    writeFileSync(sim, HEADER + session('live', 'sim1', 2, 1) + session('live', 'sim2', 2, 1));
    const got = readAnswers(sim, 'demo', { rules: NONE });
    assert.equal(got.simulated, true);
    assert.equal(got.answers.length, 4);
    const real = join(dir, 'real.csv');
    writeFileSync(real, HEADER + session('live', 's1', 2));
    assert.equal(readAnswers(real, 'demo', { rules: NONE }).simulated, false);
    const mixed = join(dir, 'mixed.csv');
    writeFileSync(mixed, HEADER + session('live', 's1', 2) + session('live', 'sim1', 2, 1));
    assert.throws(
      () => readAnswers(mixed, 'demo', { rules: NONE }),
      /mixed\.csv: 4 of 8 rows of study demo come from simulated participants \(`legible pilot`, column simulated = 1\) and the others from real ones: .*Give the export of one database/,
    );
    // A database of simulated participants (meta.simulated) is flagged as well; a plain one is not.
    const simDb = openDatabase(join(dir, 'pilot.db'));
    simDb.markSimulated('test');
    simDb.close();
    assert.equal(readAnswers(join(dir, 'pilot.db'), 'demo', { rules: NONE }).simulated, true);
    openDatabase(join(dir, 'live.db')).close();
    assert.equal(readAnswers(join(dir, 'live.db'), 'demo', { rules: NONE }).simulated, false);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
