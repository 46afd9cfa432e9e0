// What the report and its tables say: the participant-level SD beside mean ± 1.96·SD/√N, and
// power that is prospective (an effect the study file states) or, when asked for with the data's
// own estimate, labelled post hoc with its caveat — never "about N participants give power ≥ 0.8"
// read off the observed effect by default. Every expected number is recomputed here from the rows
// the test writes.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Rng } from '@legible/studies';
import { analyze } from '../src/analyze.ts';
import { parseCsvRecords } from '../src/csv.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), 'legible-report-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** basis × layer, features nested in them (as legible's studies): per participant and cell, [correct, trials]. */
function writeStudyData(dir: string): Map<string, Map<string, [number, number]>> {
  mkdirSync(dir, { recursive: true });
  const rng = new Rng(31);
  const rows = ['study,mode,participant,session,feature,layer,basis,kind,correct,rt_ms,confidence'];
  const counts = new Map<string, Map<string, [number, number]>>();
  for (let p = 0; p < 12; p++) {
    const skill = rng.normal() * 0.5;
    for (const layer of ['block2', 'block3']) {
      for (const basis of ['channels', 'nmf']) {
        for (let f = 0; f < 6; f++) {
          const correct = rng.float() < 1 / (1 + Math.exp(-(0.3 + skill + (basis === 'nmf' ? 0.7 : 0)))) ? 1 : 0;
          rows.push(`demo,live,P${p},S${p},${layer}/${basis}/${f},${layer},${basis},main,${correct},${1200 + rng.int(900)},${1 + rng.int(3)}`);
          const cell = `${basis} · ${layer}`;
          const m = counts.get(cell) ?? new Map<string, [number, number]>();
          const c = m.get(`P${p}`) ?? [0, 0];
          c[0] += correct;
          c[1]++;
          m.set(`P${p}`, c);
          counts.set(cell, m);
        }
      }
    }
  }
  writeFileSync(join(dir, 'trials.csv'), `${rows.join('\n')}\n`);
  return counts;
}

const data = join(tmp, 'data');
const counts = writeStudyData(data);

/** The demo study file with (or without) an `analysis.power` section, written beside the data. */
function studyFile(extra: string): string {
  const text = readFileSync(join(root, 'studies/demo/study.yaml'), 'utf8');
  const file = join(tmp, `study-${extra ? 'power' : 'plain'}.yaml`);
  writeFileSync(file, `${text}\n${extra}`);
  return file;
}

test('the accuracy table gives the participant-level mean ± SD and ± 1.96·SD/√N', async () => {
  const out = join(tmp, 'out-sd');
  const result = await analyze({ input: join(data, 'trials.csv'), study: studyFile(''), out, boot: 100, permutations: 200, power: false });
  const csv = parseCsvRecords(readFileSync(join(out, 'accuracy.csv'), 'utf8'));
  const html = readFileSync(join(out, 'report.html'), 'utf8');
  assert.match(html, /<th>mean ± SD \(participants\)<\/th>/);
  for (const c of result.cells) {
    const cell = `${c.levels[0]} · ${c.levels[1]}`;
    const acc = [...counts.get(cell)!.values()].map(([k, n]) => k / n);
    const mean = acc.reduce((a, b) => a + b, 0) / acc.length;
    const sd = Math.sqrt(acc.reduce((a, b) => a + (b - mean) ** 2, 0) / (acc.length - 1));
    assert.ok(Math.abs(c.participantSd - sd) < 1e-12, `${cell}: SD ${c.participantSd} vs ${sd}`);
    assert.ok(Math.abs(c.participantHalfWidth - (1.96 * sd) / Math.sqrt(acc.length)) < 1e-12);
    const row = csv.find((r) => r.basis === c.levels[0] && r.layer === c.levels[1])!;
    assert.ok(Math.abs(Number(row.participant_sd) - sd) < 1e-6, 'accuracy.csv participant_sd');
    assert.ok(html.includes(`${(mean * 100).toFixed(1)}% ± ${(sd * 100).toFixed(1)}%`), `${cell}: mean ± SD in the report`);
  }
});

test('power is prospective: not run without a stated effect, simulated at the study file\'s effect, and post hoc only when asked, labelled so', async () => {
  const none = await analyze({ input: join(data, 'trials.csv'), study: studyFile(''), out: join(tmp, 'out-p0'), boot: 50, permutations: 100, power: { sims: 4, ns: [6] } });
  assert.equal(none.power, null);
  assert.equal(none.powerEffect, null);
  assert.match(none.powerNote, /prospective power needs the effect the study is meant to detect/);
  const html0 = readFileSync(join(tmp, 'out-p0', 'report.html'), 'utf8');
  assert.doesNotMatch(html0, /participants give power/i);
  assert.match(html0, /analysis\.power\.effect/);

  const stated = await analyze({
    input: join(data, 'trials.csv'),
    study: studyFile('analysis:\n  power:\n    effect: 0.8\n    source: "pilot, 6 participants"\n'),
    out: join(tmp, 'out-p1'),
    boot: 50,
    permutations: 100,
    power: { sims: 4, ns: [6] },
  });
  assert.equal(stated.power!.effect, 0.8);
  assert.equal(stated.power!.coefficient, 'basisnmf');
  assert.equal(stated.powerEffect!.kind, 'study');
  assert.match(stated.powerNote, /^Prospective, for the effect the study file states \(analysis\.power\.effect = 0\.8 log-odds; source: pilot, 6 participants\)/);
  assert.notEqual(stated.power!.effect, stated.glmm!.fit.beta[stated.glmm!.fit.xNames.indexOf('basisnmf')], 'not the observed estimate');
  assert.doesNotMatch(readFileSync(join(tmp, 'out-p1', 'report.html'), 'utf8'), /Post hoc/);

  const posthoc = await analyze({ input: join(data, 'trials.csv'), study: studyFile(''), out: join(tmp, 'out-p2'), boot: 50, permutations: 100, power: { sims: 4, ns: [6], postHoc: true } });
  const j = posthoc.glmm!.fit.xNames.indexOf('basisnmf');
  assert.equal(posthoc.power!.effect, posthoc.glmm!.fit.beta[j]);
  assert.equal(posthoc.powerEffect!.kind, 'post-hoc');
  assert.match(posthoc.powerNote, /^Post hoc: .*Caveat: observed power is a function of this study's p-value/);
  const html2 = readFileSync(join(tmp, 'out-p2', 'report.html'), 'utf8');
  assert.match(html2, /Post hoc power \(observed effect\) for basisnmf/);
});

test('with pilot data beside the live data and no stated effect, power uses the pilot\'s estimate, labelled so', async () => {
  const dir = join(tmp, 'with-pilot');
  mkdirSync(dir, { recursive: true });
  const rng = new Rng(5);
  const lines = readFileSync(join(data, 'trials.csv'), 'utf8').trim().split('\n');
  for (let p = 0; p < 8; p++) {
    for (const layer of ['block2', 'block3']) {
      for (const basis of ['channels', 'nmf']) {
        for (let f = 0; f < 6; f++) {
          const correct = rng.float() < (basis === 'nmf' ? 0.85 : 0.55) ? 1 : 0;
          lines.push(`demo,pilot,Q${p},T${p},${layer}/${basis}/${f},${layer},${basis},main,${correct},1500,2`);
        }
      }
    }
  }
  writeFileSync(join(dir, 'trials.csv'), `${lines.join('\n')}\n`);
  const live = await analyze({ input: join(dir, 'trials.csv'), study: studyFile(''), out: join(tmp, 'out-pilot'), boot: 50, permutations: 50, power: { sims: 4, ns: [6] } });
  assert.equal(live.mode, 'live');
  assert.equal(live.powerEffect!.kind, 'pilot');
  // The pilot's own analysis, run separately, estimates the same coefficient.
  const pilotOnly = await analyze({ input: join(dir, 'trials.csv'), study: studyFile(''), mode: 'pilot', out: join(tmp, 'out-pilot-only'), boot: 50, permutations: 50, power: false, report: false });
  const beta = pilotOnly.glmm!.fit.beta[pilotOnly.glmm!.fit.xNames.indexOf('basisnmf')];
  assert.ok(Math.abs(live.power!.effect - beta) < 1e-4, `pilot estimate ${live.power!.effect} vs the pilot's own fit ${beta}`);
  assert.match(live.powerNote, /^Prospective, for the pilot's estimate \(\d\.\d{3} log-odds from the pilot data of 8 participants; a pilot's estimate is itself uncertain/);
});
