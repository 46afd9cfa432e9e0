// Human answers per feature: accuracy, and a participant-level interval (participants resampled,
// not trials), from a trials file that `legible export` writes.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { readAnswers, summarise, type Answer } from '../src/human.ts';

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
    const got = readAnswers(csv, 'demo');
    assert.deepEqual(got.map((a) => [a.participant, a.correct, a.confidence, a.rt_ms]), [
      ['p1', true, 3, 800],
      ['p2', false, 1, 1200],
    ]);
    const bad = join(dir, 'other.csv');
    writeFileSync(bad, 'participant,feature\np1,f\n');
    assert.throws(() => readAnswers(bad, 'demo'), /other\.csv has no "trial_id" column: give a trials file that `legible export` wrote/);
    assert.throws(() => readAnswers(join(dir, 'missing.db'), 'demo'), /missing\.db: no such file/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
