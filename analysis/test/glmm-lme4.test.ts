// legible's GLMM against R's lme4 (glmer, Laplace) on simulated 2AFC studies with known effects:
// balanced and unbalanced designs, a three-level factor, a numeric covariate, a variance at the
// boundary, a single random term. For each data set legible fits the model and writes model.R
// and glmm-data.csv as `legible analyze` does; the test runs that model.R with the real Rscript
// and compares: fixed effects and log-likelihood within 1e-3 relative, random-effect SDs within
// 1e-2, the likelihood-ratio tests of dropped terms, and (bigger designs) recovery of the true
// effects within 3 standard errors.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { parseCsvRecords } from '../src/csv.ts';
import { writeModelScript } from '../src/rscript.ts';
import { dropTermTests, fitModel, type FittedModel, type LikelihoodRatio } from '../src/stats/models.ts';
import { simulateStudy, type SimulationSpec } from '../src/stats/simulate.ts';
import { Table } from '../src/table.ts';

const tmp = mkdtempSync(join(tmpdir(), 'legible-lme4-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

interface Case {
  name: string;
  spec: SimulationSpec;
  formula: string;
  /** True coefficients by column name (for the recovery check). */
  truth?: Record<string, number>;
}

const base = { factors: { basis: ['channels', 'nmf'], layer: ['block2', 'block3'] }, intercept: 0.4, sdParticipant: 0.5, sdFeature: 0.7 };
const cases: Case[] = [
  {
    name: 'balanced 2×2 with interaction',
    spec: { ...base, participants: 60, featuresPerCell: 10, trialsPerParticipant: 40, effects: { 'basis=nmf': 0.6, 'layer=block3': -0.5, 'basis=nmf:layer=block3': 0.4 }, seed: 11 },
    formula: 'correct ~ basis * layer + (1|participant) + (1|feature)',
  },
  {
    name: 'unbalanced, three layers',
    spec: {
      ...base,
      factors: { basis: ['channels', 'nmf'], layer: ['block1', 'block2', 'block3'] },
      participants: 70,
      featuresPerCell: 8,
      trialsPerParticipant: [6, 40],
      effects: { 'basis=nmf': 0.5, 'layer=block2': -0.3, 'layer=block3': -0.7, 'basis=nmf:layer=block3': 0.5 },
      seed: 12,
    },
    formula: 'correct ~ basis * layer + (1|participant) + (1|feature)',
  },
  {
    name: 'numeric covariate',
    spec: { ...base, participants: 50, featuresPerCell: 8, trialsPerParticipant: [15, 32], effects: { 'basis=nmf': 0.7, 'layer=block3': -0.4 }, covariateSlope: 0.45, seed: 13 },
    formula: 'correct ~ basis + layer + skill_z + (1|participant) + (1|feature)',
  },
  {
    name: 'no participant variance (boundary)',
    spec: { ...base, sdParticipant: 0, participants: 40, featuresPerCell: 8, trialsPerParticipant: 24, effects: { 'basis=nmf': 0.8 }, seed: 14 },
    formula: 'correct ~ basis + (1|participant) + (1|feature)',
  },
  {
    name: 'one random term',
    spec: { ...base, participants: 30, featuresPerCell: 10, trialsPerParticipant: 30, effects: { 'basis=nmf': 0.5, 'layer=block3': -0.6 }, seed: 15 },
    formula: 'correct ~ basis + layer + (1|feature)',
  },
  {
    name: 'large, for recovery',
    spec: { ...base, participants: 250, featuresPerCell: 25, trialsPerParticipant: 60, effects: { 'basis=nmf': 0.6, 'layer=block3': -0.5, 'basis=nmf:layer=block3': 0.4 }, seed: 16 },
    formula: 'correct ~ basis * layer + (1|participant) + (1|feature)',
    truth: { '(Intercept)': 0.4, basisnmf: 0.6, layerblock3: -0.5, 'basisnmf:layerblock3': 0.4 },
  },
];

interface Lme4 {
  fixef: Map<string, { value: number; se: number }>;
  sd: Map<string, number>;
  logLik: number;
  lrt: Map<string, { chisq: number; p: number }>;
}

function runModelR(dir: string): Lme4 {
  const r = spawnSync('Rscript', [join(dir, 'model.R')], { encoding: 'utf8', timeout: 120_000 });
  assert.ok(!r.error, `cannot run Rscript (${r.error?.message}): this test needs R with lme4 (Debian: apt-get install r-cran-lme4)`);
  assert.equal(r.status, 0, `Rscript model.R failed:\n${r.stderr}`);
  const rows = parseCsvRecords(readFileSync(join(dir, 'lme4-estimates.csv'), 'utf8'));
  const out: Lme4 = { fixef: new Map(), sd: new Map(), logLik: NaN, lrt: new Map() };
  for (const row of rows) {
    if (row.kind === 'fixef') out.fixef.set(row.name, { value: Number(row.value), se: Number(row.se) });
    if (row.kind === 'sd') out.sd.set(row.name, Number(row.value));
    if (row.kind === 'logLik') out.logLik = Number(row.value);
    if (row.kind === 'lrt') out.lrt.set(row.name, { chisq: Number(row.value), p: Number(row.p) });
  }
  return out;
}

const rel = (a: number, b: number) => Math.abs(a - b) / Math.max(Math.abs(b), 1e-12);
const agreement: string[] = [];

for (const [i, c] of cases.entries()) {
  test(`GLMM agrees with lme4: ${c.name}`, () => {
    const rows = simulateStudy(c.spec);
    const frame = Table.fromRows(rows);
    const model: FittedModel = fitModel(c.formula, frame);
    const { tests } = dropTermTests(model, frame);
    const dir = join(tmp, `case${i}`);
    mkdirSync(dir);
    writeModelScript(dir, model, frame, 'the lme4 agreement test');
    const r = runModelR(dir);
    const fit = model.fit;
    assert.ok(fit.converged, `converged (${fit.warnings.join('; ')})`);
    let worstB = 0;
    let worstSe = 0;
    fit.xNames.forEach((name, j) => {
      const ref = r.fixef.get(name);
      assert.ok(ref, `lme4 has coefficient ${name}`);
      worstB = Math.max(worstB, rel(fit.beta[j], ref.value));
      worstSe = Math.max(worstSe, rel(fit.se[j], ref.se));
      assert.ok(rel(fit.beta[j], ref.value) < 1e-3, `${name}: legible ${fit.beta[j]} vs lme4 ${ref.value}`);
      // lme4's SEs come from a coarser finite-difference Hessian than ours (see BENCHMARKS.md).
      assert.ok(rel(fit.se[j], ref.se) < 2e-2, `SE of ${name}: legible ${fit.se[j]} vs lme4 ${ref.se}`);
    });
    assert.equal(r.fixef.size, fit.xNames.length, 'same coefficients');
    assert.ok(rel(fit.logLik, r.logLik) < 1e-3, `logLik: legible ${fit.logLik} vs lme4 ${r.logLik}`);
    let worstSd = 0;
    for (const g of fit.groups) {
      const ref = r.sd.get(g.name)!;
      const d = ref < 0.05 ? Math.abs(g.sd - ref) : rel(g.sd, ref);
      worstSd = Math.max(worstSd, d);
      assert.ok(d < 1e-2, `SD of ${g.name}: legible ${g.sd} vs lme4 ${ref}`);
    }
    for (const t of tests as LikelihoodRatio[]) {
      const ref = r.lrt.get(t.dropped);
      assert.ok(ref, `lme4 tested ${t.dropped}`);
      assert.ok(Math.abs(t.chisq - ref.chisq) < 1e-3 * Math.max(1, ref.chisq), `LRT χ² for ${t.dropped}: legible ${t.chisq} vs lme4 ${ref.chisq}`);
    }
    if (c.truth) {
      for (const [name, value] of Object.entries(c.truth)) {
        const j = fit.xNames.indexOf(name);
        assert.ok(Math.abs(fit.beta[j] - value) < 3 * fit.se[j], `recovers ${name}: ${fit.beta[j].toFixed(3)} ± ${fit.se[j].toFixed(3)} vs true ${value}`);
      }
      assert.ok(Math.abs(fit.groups[0].sd - c.spec.sdParticipant) < 0.15, `participant SD ${fit.groups[0].sd} vs true ${c.spec.sdParticipant}`);
      assert.ok(Math.abs(fit.groups[1].sd - c.spec.sdFeature) < 0.2, `feature SD ${fit.groups[1].sd} vs true ${c.spec.sdFeature}`);
    }
    agreement.push(
      `${c.name}: n=${fit.n}, max rel. diff β ${worstB.toExponential(1)}, SE ${worstSe.toExponential(1)}, SD ${worstSd.toExponential(1)}, logLik ${rel(fit.logLik, r.logLik).toExponential(1)} (${fit.seconds.toFixed(2)} s)`,
    );
  });
}

after(() => {
  if (agreement.length) console.log(`lme4 agreement:\n  ${agreement.join('\n  ')}`);
});
