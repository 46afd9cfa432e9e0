// legible's GLMM against R's lme4 (glmer, Laplace, nAGQ = 1) on simulated 2AFC studies with known
// effects: balanced and unbalanced designs, a three-level factor, a numeric covariate, a variance
// at the boundary, a single random term; random slopes, correlated and not — (1 + basis | p),
// (1 + basis * layer | p), (0 + x | g), (1 | g1:g2), (1 + x || g) — on a balanced, an unbalanced
// and a near-singular design, and one where lme4's default settings stop short. For each data set
// legible fits the model and writes model.R and glmm-data.csv as `legible analyze` does; the test
// runs that model.R (glmerControl(optimizer = "bobyqa", tolPwrss = 1e-10)) with the real Rscript
// and compares: fixed effects within 1e-3 relative, log-likelihood within 1e-6 relative,
// random-effect SDs and correlations within 1e-2, SEs within 2e-2, the likelihood-ratio tests of
// dropped terms, and (bigger designs) recovery of the true effects within 3 standard errors.
// Without Rscript and lme4 (CI installs both) the tests are skipped, with the reason.
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

const slopeBase = { ...base, sdParticipant: 0.6, sdFeature: 0.5 };
const slopeCases: Case[] = [
  {
    name: 'slopes: balanced, (1 + basis | participant), correlated',
    spec: { ...slopeBase, participants: 50, featuresPerCell: 8, trialsPerParticipant: 32, effects: { 'basis=nmf': 0.6, 'layer=block3': -0.4 }, participantSlopes: [{ effect: 'basis=nmf', sd: 0.8, cor: 0.4 }], seed: 21 },
    formula: 'correct ~ basis * layer + (1 + basis | participant) + (1 | feature)',
  },
  {
    name: 'slopes: unbalanced, (1 + basis * layer | participant)',
    spec: {
      ...slopeBase,
      participants: 60,
      featuresPerCell: 10,
      trialsPerParticipant: [20, 40],
      effects: { 'basis=nmf': 0.5, 'layer=block3': -0.5, 'basis=nmf:layer=block3': 0.3 },
      participantSlopes: [
        { effect: 'basis=nmf', sd: 0.7, cor: -0.3 },
        { effect: 'layer=block3', sd: 0.5, cor: 0.2 },
      ],
      seed: 22,
    },
    formula: 'correct ~ basis * layer + (1 + basis * layer | participant) + (1 | feature)',
  },
  {
    name: 'slopes: near-singular (slope SD 0.05)',
    spec: { ...slopeBase, participants: 40, featuresPerCell: 8, trialsPerParticipant: 32, effects: { 'basis=nmf': 0.5 }, participantSlopes: [{ effect: 'basis=nmf', sd: 0.05, cor: 0.9 }], seed: 23 },
    formula: 'correct ~ basis + (1 + basis | participant) + (1 | feature)',
  },
  {
    name: 'slopes: uncorrelated (1 + basis || participant), (0 + skill_z | feature), (1 | participant:layer)',
    spec: { ...slopeBase, participants: 50, featuresPerCell: 8, trialsPerParticipant: 32, effects: { 'basis=nmf': 0.6 }, covariateSlope: 0.3, participantSlopes: [{ effect: 'basis=nmf', sd: 0.7 }], seed: 24 },
    formula: 'correct ~ basis + skill_z + (1 + basis || participant) + (0 + skill_z | feature) + (1 | participant:layer)',
  },
];

interface Lme4 {
  fixef: Map<string, { value: number; se: number }>;
  sd: Map<string, number>;
  cor: Map<string, number>;
  logLik: number;
  singular: boolean;
  lrt: Map<string, { chisq: number; p: number }>;
}

const rCheck = spawnSync('Rscript', ['-e', 'suppressPackageStartupMessages(library(lme4)); cat("ok")'], { encoding: 'utf8', timeout: 60_000 });
const noR = rCheck.stdout !== 'ok' ? `needs Rscript with lme4 (CI installs them; Debian: apt-get install r-cran-lme4): ${(rCheck.error?.message ?? rCheck.stderr ?? '').trim().split('\n')[0]}` : false;

function readLme4(dir: string): Lme4 {
  const rows = parseCsvRecords(readFileSync(join(dir, 'lme4-estimates.csv'), 'utf8'));
  const out: Lme4 = { fixef: new Map(), sd: new Map(), cor: new Map(), logLik: NaN, singular: false, lrt: new Map() };
  for (const row of rows) {
    if (row.kind === 'fixef') out.fixef.set(row.name, { value: Number(row.value), se: Number(row.se) });
    if (row.kind === 'sd') out.sd.set(row.name, Number(row.value));
    if (row.kind === 'cor') out.cor.set(row.name, Number(row.value));
    if (row.kind === 'logLik') out.logLik = Number(row.value);
    if (row.kind === 'singular') out.singular = row.value === '1';
    if (row.kind === 'lrt') out.lrt.set(row.name, { chisq: Number(row.value), p: Number(row.p) });
  }
  return out;
}

function runModelR(dir: string, env: Record<string, string> = {}): Lme4 {
  const r = spawnSync('Rscript', [join(dir, 'model.R')], { encoding: 'utf8', timeout: 300_000, env: { ...process.env, ...env } });
  assert.ok(!r.error, `cannot run Rscript (${r.error?.message})`);
  assert.equal(r.status, 0, `Rscript model.R failed:\n${r.stderr}`);
  return readLme4(dir);
}

const rel = (a: number, b: number) => Math.abs(a - b) / Math.max(Math.abs(b), 1e-12);
const agreement: string[] = [];
const lme4Settings = new Map<string, string[]>();
const fallsShort: string[] = [];

/** legible's fit against lme4's: the tolerances of the module comment; returns the largest differences. */
function compare(fit: FittedModel['fit'], r: Lme4): { b: number; se: number; sd: number; cor: number; ll: number } {
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
  assert.ok(rel(fit.logLik, r.logLik) < 1e-6, `logLik: legible ${fit.logLik} vs lme4 ${r.logLik} (rel. ${rel(fit.logLik, r.logLik).toExponential(2)})`);
  let worstSd = 0;
  let worstCor = 0;
  let nSd = 0;
  let nCor = 0;
  for (const g of fit.groups) {
    g.columns.forEach((col, a) => {
      const ref = r.sd.get(`${g.name}|${col}`);
      assert.ok(ref !== undefined, `lme4 has SD ${g.name}|${col} (lme4's: ${[...r.sd.keys()].join(', ')})`);
      nSd++;
      const d = ref < 0.05 ? Math.abs(g.sds[a] - ref) : rel(g.sds[a], ref);
      worstSd = Math.max(worstSd, d);
      assert.ok(d < 1e-2, `SD of ${col} | ${g.name}: legible ${g.sds[a]} vs lme4 ${ref}`);
      for (let b = 0; b < a; b++) {
        const c = g.cor[a][b];
        const refCor = r.cor.get(`${g.name}|${g.columns[b]}|${col}`);
        if (c === null) {
          assert.equal(refCor, undefined, `lme4 estimates no correlation of ${g.columns[b]} and ${col} | ${g.name} either`);
          continue;
        }
        assert.ok(refCor !== undefined, `lme4 has cor ${g.name}|${g.columns[b]}|${col}`);
        nCor++;
        // A correlation is defined only where both SDs are not 0.
        if (!(ref > 1e-3) || !(g.sds[b] > 1e-3)) continue;
        worstCor = Math.max(worstCor, Math.abs(c - refCor));
        assert.ok(Math.abs(c - refCor) < 1e-2, `cor(${g.columns[b]}, ${col} | ${g.name}): legible ${c} vs lme4 ${refCor}`);
      }
    });
  }
  assert.equal(r.sd.size, nSd, 'same SDs');
  assert.equal(r.cor.size, nCor, 'same correlations');
  assert.equal(fit.singular, r.singular, `singular: legible ${fit.singular} vs lme4 ${r.singular}`);
  return { b: worstB, se: worstSe, sd: worstSd, cor: worstCor, ll: rel(fit.logLik, r.logLik) };
}

for (const [i, c] of [...cases, ...slopeCases].entries()) {
  test(`GLMM agrees with lme4: ${c.name}`, { skip: noR }, () => {
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
    const worst = compare(fit, r);
    for (const t of tests as LikelihoodRatio[]) {
      const ref = r.lrt.get(t.dropped);
      assert.ok(ref, `lme4 tested ${t.dropped}`);
      assert.ok(Math.abs(t.chisq - ref.chisq) < 1e-3 * Math.max(1, ref.chisq), `LRT χ² for ${t.dropped}: legible ${t.chisq} vs lme4 ${ref.chisq}`);
    }
    if (slopeCases.includes(c)) {
      // The same model.R with the settings (BOBYQA, tolPwrss = 1e-10) and with glmer's
      // defaults: each either agrees as above, or stops short — a lower log-likelihood than
      // legible's, which the tight run above (tolPwrss = 1e-13) reaches.
      const verdicts: string[] = [];
      for (const [label, env] of [
        ['bobyqa, tolPwrss 1e-10', { LEGIBLE_LME4_TOLPWRSS: '1e-10' }],
        ['defaults', { LEGIBLE_LME4_DEFAULTS: '1' }],
      ] as const) {
        const other = runModelR(dir, env);
        try {
          compare(fit, other);
          verdicts.push('agrees');
        } catch (e) {
          const short = fit.logLik - other.logLik;
          assert.ok(short > 0, `lme4 (${label}) disagrees (${(e as Error).message}) but its log-likelihood ${other.logLik} is not below legible's ${fit.logLik}`);
          verdicts.push(`stops short (logLik −${short.toExponential(1)})`);
          fallsShort.push(`${c.name}: lme4 ${label}`);
        }
      }
      lme4Settings.set(c.name, verdicts);
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
      `| ${c.name} | ${fit.n} | ${worst.b.toExponential(1)} | ${worst.se.toExponential(1)} | ${worst.sd.toExponential(1)} | ${worst.cor ? worst.cor.toExponential(1) : '–'} | ${worst.ll.toExponential(1)} | ${fit.singular ? 'yes' : 'no'} | ${fit.seconds.toFixed(2)} s | ${(lme4Settings.get(c.name) ?? []).join(' | ')} |`,
    );
  });
}

test('among the data sets, lme4 stops short of the optimum with the settings of the issue or its defaults at least once (the reason model.R uses tolPwrss = 1e-13)', { skip: noR }, () => {
  assert.ok(fallsShort.length > 0, 'every lme4 setting agreed: the data sets no longer show why model.R tightens lme4');
});

after(() => {
  if (agreement.length) console.log(`lme4 agreement (data set | trials | β | SE | SD | cor | logLik | singular | legible's time | bobyqa 1e-10 | defaults):\n${agreement.join('\n')}`);
});
