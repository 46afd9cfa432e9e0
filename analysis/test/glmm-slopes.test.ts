// Random slopes, singular fits and separation, without R (glmm-lme4.test.ts holds the agreement
// with lme4): the formula syntax of random terms, the analytic gradient of the Laplace deviance
// with correlated slopes against central differences, the default formula of `legible analyze`
// (the maximal random-effects structure of a within-subject design) and its reduction when
// singular, and complete separation detected, tested by likelihood ratio and printed by the CLI.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { analyze } from '../src/analyze.ts';
import { parseFormula } from '../src/stats/formula.ts';
import { defaultTheta, LaplaceObjective } from '../src/stats/glmm.ts';
import { buildInput, fitModel, fitWithReduction, separationTests } from '../src/stats/models.ts';
import { simulateStudy, toCsv, type SimulationSpec } from '../src/stats/simulate.ts';
import { Table } from '../src/table.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), 'legible-slopes-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const base: SimulationSpec = {
  participants: 30,
  factors: { basis: ['channels', 'nmf'], layer: ['block2', 'block3'] },
  featuresPerCell: 6,
  intercept: 0.4,
  effects: { 'basis=nmf': 0.6 },
  sdParticipant: 0.6,
  sdFeature: 0.5,
  trialsPerParticipant: 24,
  seed: 5,
};

test('random terms: slopes, no intercept, interactions of grouping columns, uncorrelated', () => {
  const f = parseFormula('correct ~ basis + (1 + basis * layer | participant) + (0 + skill_z | feature) + (1 | participant:layer) + (1 + basis || feature)');
  assert.deepEqual(f.terms, [['basis']], 'random terms add nothing to the fixed part');
  assert.deepEqual(f.variables.map((v) => v.name), ['basis']);
  assert.deepEqual(
    f.random.map((r) => r.text),
    ['(1 + basis + layer + basis:layer | participant)', '(0 + skill_z | feature)', '(1 | participant:layer)', '(1 + basis || feature)'],
  );
  const frame = Table.fromRows(simulateStudy(base));
  const { input } = buildInput(f, frame);
  // (1 + basis || feature) merges with (0 + skill_z | feature): one grouping factor, three uncorrelated blocks.
  assert.deepEqual(
    input.groups.map((g) => [g.name, g.zNames, g.blocks]),
    [
      ['participant', ['(Intercept)', 'basisnmf', 'layerblock3', 'basisnmf:layerblock3'], [0, 0, 0, 0]],
      ['feature', ['skill_z', '(Intercept)', 'basisnmf'], [0, 1, 2]],
      ['participant:layer', ['(Intercept)'], [0]],
    ],
  );
  assert.throws(() => parseFormula('correct ~ basis + (0 | participant)'), /nothing to vary/);
  assert.throws(() => parseFormula('correct ~ basis + ( | participant)'), /left-hand side/);
});

test('the analytic gradient of the Laplace deviance with correlated random slopes matches central differences', () => {
  const frame = Table.fromRows(simulateStudy({ ...base, participants: 16, participantSlopes: [{ effect: 'basis=nmf', sd: 0.7, cor: 0.5 }] }));
  for (const formula of [
    'correct ~ basis * layer + (1 + basis * layer | participant) + (1 | feature)',
    'correct ~ basis + (1 + basis || participant) + (1 + skill_z | feature)',
    'correct ~ basis + (0 + basis | participant) + (1 | participant:layer)',
  ]) {
    const { input } = buildInput(parseFormula(formula), frame);
    const obj = new LaplaceObjective(input);
    const theta = defaultTheta(input.groups).map((v, i) => 0.8 * v + 0.1 * ((i % 3) - 1));
    const x = Float64Array.from([...theta, ...input.X.map((_, j) => 0.1 * j - 0.05)]);
    for (let k = 0; k < 3; k++) obj.evaluate(x);
    const { g } = obj.valueGrad(x);
    for (let j = 0; j < x.length; j++) {
      const h = 1e-5;
      const xp = Float64Array.from(x);
      xp[j] += h;
      const xm = Float64Array.from(x);
      xm[j] -= h;
      const num = (obj.evaluate(xp) - obj.evaluate(xm)) / (2 * h);
      assert.ok(Math.abs(g[j] - num) < 1e-4 * Math.max(1, Math.abs(num)), `${formula}: ∂/∂x${j} analytic ${g[j]} vs numeric ${num}`);
    }
  }
});

test('a singular maximal model is reduced — correlations first, then the smallest slope — and every step says why', () => {
  // No slope variance at all in the data: the by-participant slope of basis is estimated at 0.
  const frame = Table.fromRows(simulateStudy({ ...base, participants: 40, trialsPerParticipant: 24, seed: 1 }));
  const { model, steps } = fitWithReduction('correct ~ basis + (1 + basis | participant) + (1 | feature)', frame);
  assert.equal(steps[0].singular, true, `the maximal model is singular here (${steps[0].warnings.join('; ')})`);
  assert.match(steps[0].warnings.join('\n'), /singular fit: .*participant/);
  assert.equal(steps[1].formula, 'correct ~ basis + (1 + basis || participant) + (1 | feature)');
  assert.match(steps[1].reason, /correlations of participant dropped/);
  const last = steps[steps.length - 1];
  assert.equal(last.formula, model.formula.text);
  if (steps.length > 2) {
    assert.equal(steps[2].formula, 'correct ~ basis + (1 | participant) + (1 | feature)');
    assert.match(steps[2].reason, /random slope of basis by participant, the smallest variance/);
  }
  assert.equal(model.fit.singular, false, 'the reported model is not singular');
});

test('legible analyze fits the maximal model of a within-subject design; its SE for the condition is larger than the intercept-only model\'s', async () => {
  const rows = simulateStudy({ ...base, participants: 40, trialsPerParticipant: 24, participantSlopes: [{ effect: 'basis=nmf', sd: 1.0, cor: 0.3 }], seed: 12 });
  const csv = join(tmp, 'within.csv');
  writeFileSync(csv, toCsv(rows.map(({ participant, feature, basis, correct }) => ({ participant, feature, basis, kind: 'main', correct }))));
  const out = join(tmp, 'within');
  const result = await analyze({ input: csv, out, boot: 100, permutations: 100, power: false });
  const glmm = result.glmm!;
  assert.ok(glmm, result.glmmError);
  assert.equal(glmm.reduction[0].formula, 'correct ~ basis + (1 + basis | participant) + (1 | feature)', 'slopes for the within-participant factor, none for features (basis is between features)');
  assert.equal(glmm.formula, glmm.reduction[glmm.reduction.length - 1].formula);
  const participant = glmm.fit.groups.find((g) => g.name === 'participant')!;
  assert.deepEqual(participant.columns, ['(Intercept)', 'basisnmf']);
  assert.ok(participant.sds[1] > 0.3, `slope SD estimated (${participant.sds[1]})`);
  const intercepts = fitModel('correct ~ basis + (1 | participant) + (1 | feature)', Table.fromRows(rows));
  const j = glmm.fit.xNames.indexOf('basisnmf');
  assert.ok(glmm.fit.se[j] > 1.1 * intercepts.fit.se[j], `SE with the slope ${glmm.fit.se[j]} vs intercepts only ${intercepts.fit.se[j]}`);
  const json = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8'));
  assert.deepEqual(json.glmm.fit.groups[0].columns, ['(Intercept)', 'basisnmf']);
  assert.ok(Array.isArray(json.glmm.reduction) && Array.isArray(json.glmm.warnings) && Array.isArray(json.glmm.separationLrt));
  const html = readFileSync(join(out, 'report.html'), 'utf8');
  assert.match(html, /maximal model the design justifies/);
  assert.match(html, /basisnmf<\/code><\/td><td><\/td><td>[0-9.]+<\/td><td>[0-9.]+<\/td><td>\(Intercept\): -?[0-9.]+/, 'the slope SD and its correlation with the intercept in the random-effects table');
  const glmmCsv = readFileSync(join(out, 'glmm.csv'), 'utf8');
  assert.match(glmmCsv, /^sd\(basisnmf \| participant\),/m);
  assert.match(glmmCsv, /^"cor\(\(Intercept\), basisnmf \| participant\)",-?0\.[0-9]+,/m);
});

test('separation: every nmf trial correct is detected, warned about (results.json, report, CLI) and tested by likelihood ratio', async () => {
  const rows = simulateStudy({ ...base, participants: 24, trialsPerParticipant: 24, seed: 3 }).map((r) => ({ ...r, basis: String(r.basis), correct: r.basis === 'nmf' ? 1 : r.correct }));
  const frame = Table.fromRows(rows);
  const model = fitModel('correct ~ basis + (1 | participant) + (1 | feature)', frame);
  assert.deepEqual(model.fit.separation, ['basisnmf']);
  assert.match(model.fit.warnings.join('\n'), /separation: basisnmf runs off to ±∞/);
  const j = model.fit.xNames.indexOf('basisnmf');
  assert.ok(model.fit.p[j] > 0.5, `the Wald test is void (p ${model.fit.p[j]})`);
  const [lrt] = separationTests(model);
  assert.equal(lrt.dropped, 'basisnmf');
  assert.ok(lrt.p < 1e-6, `likelihood ratio p ${lrt.p}, χ² ${lrt.chisq}`);
  // No separation in ordinary data.
  assert.deepEqual(fitModel('correct ~ basis + (1 | participant) + (1 | feature)', Table.fromRows(simulateStudy(base))).fit.separation, []);

  const csv = join(tmp, 'separated.csv');
  writeFileSync(csv, toCsv(rows.map(({ participant, feature, basis, correct }) => ({ participant, feature, basis, kind: 'main', correct }))));
  const out = join(tmp, 'separated');
  const run = spawnSync(process.execPath, [join(root, 'bin/legible.mjs'), 'analyze', csv, '--out', out, '--no-power', '--boot', '100', '--permutations', '100'], { encoding: 'utf8' });
  assert.equal(run.status, 0, run.stderr);
  assert.match(run.stderr, /warning: .*separation: basisnmf runs off/);
  assert.match(run.stderr, /warning: separation: likelihood-ratio test of basisnmf: χ²\(1\)/);
  assert.match(run.stdout, /basisnmf [0-9.]+ \(separation: LRT p/);
  const json = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8'));
  assert.deepEqual(json.glmm.fit.separation, ['basisnmf']);
  assert.equal(json.glmm.separationLrt[0].dropped, 'basisnmf');
  const html = readFileSync(join(out, 'report.html'), 'utf8');
  assert.match(html, /separation: likelihood-ratio p = /);
});
