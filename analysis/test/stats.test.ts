// The statistics around the GLMM, against R where R has the same thing: distribution functions
// (pnorm, qnorm, pchisq, pt), model matrices (model.matrix: contrasts, column names, the margin
// rule), Kruskal–Wallis (kruskal.test), Holm (p.adjust), quantiles (quantile type 7); the
// Conover–Iman statistic against its textbook formula evaluated in R; permutation p-values
// against exact enumeration; the GLMM's analytic gradient against finite differences.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { Rng } from '@legible/studies';
import { pchisqUpper, pnorm, pTwoSidedT, qnorm } from '../src/stats/distributions.ts';
import { modelMatrix, parseFormula } from '../src/stats/formula.ts';
import { clusterBootstrapCI, quantileSorted } from '../src/stats/descriptive.ts';
import { holm, kruskalWallis, permutationTest } from '../src/stats/nonparametric.ts';
import { LaplaceObjective } from '../src/stats/glmm.ts';
import { buildInput, fitModel } from '../src/stats/models.ts';
import { simulateStudy } from '../src/stats/simulate.ts';
import { Table } from '../src/table.ts';
import { decide, type ParticipantFacts } from '../src/exclusions.ts';

/** Run R code; its stdout lines of "key value value …" become a map. */
function R(code: string): Map<string, number[]> {
  const r = spawnSync('Rscript', ['-e', code], { encoding: 'utf8', timeout: 60_000 });
  assert.ok(!r.error, `cannot run Rscript (${r.error?.message}): these tests compare with R (Debian: apt-get install r-base-core)`);
  assert.equal(r.status, 0, r.stderr);
  const out = new Map<string, number[]>();
  for (const line of r.stdout.trim().split('\n')) {
    const [k, ...v] = line.trim().split(/\s+/);
    out.set(k, v.map(Number));
  }
  return out;
}
const rv = (xs: number[]) => `c(${xs.map((x) => x.toPrecision(17)).join(',')})`;
const close = (a: number, b: number, tol: number, what: string) => assert.ok(Math.abs(a - b) <= tol * Math.max(1, Math.abs(b)), `${what}: ${a} vs R ${b}`);

test('distribution functions match R to 1e-12', () => {
  const z = [-12, -6, -3.2, -1.96, -0.5, 0, 0.3, 1.1, 2.58, 4.4, 8];
  const p = [1e-12, 1e-6, 0.001, 0.025, 0.2, 0.5, 0.77, 0.975, 0.999999];
  const chi = [
    [0.1, 1],
    [3.84, 1],
    [7, 3],
    [40, 4],
    [120, 10],
    [300, 2],
  ];
  const t = [
    [0.5, 3],
    [2.1, 8],
    [-4, 20],
    [12, 50],
    [1.7, 300],
  ];
  const r = R(
    [
      `cat("pnorm", format(pnorm(${rv(z)}), digits = 17), "\\n")`,
      `cat("qnorm", format(qnorm(${rv(p)}), digits = 17), "\\n")`,
      `cat("pchisq", format(pchisq(${rv(chi.map((c) => c[0]))}, ${rv(chi.map((c) => c[1]))}, lower.tail = FALSE), digits = 17), "\\n")`,
      `cat("pt", format(2 * pt(-abs(${rv(t.map((c) => c[0]))}), ${rv(t.map((c) => c[1]))}), digits = 17), "\\n")`,
    ].join(';'),
  );
  // Relative accuracy, including the far tails.
  z.forEach((x, i) => assert.ok(Math.abs(pnorm(x) - r.get('pnorm')![i]) <= 1e-12 * r.get('pnorm')![i], `pnorm(${x})`));
  p.forEach((x, i) => close(qnorm(x), r.get('qnorm')![i], 1e-12, `qnorm(${x})`));
  chi.forEach(([x, df], i) => assert.ok(Math.abs(pchisqUpper(x, df) - r.get('pchisq')![i]) <= 1e-12 * r.get('pchisq')![i], `pchisq(${x}, ${df})`));
  t.forEach(([x, df], i) => assert.ok(Math.abs(pTwoSidedT(x, df) - r.get('pt')![i]) <= 1e-10 * r.get('pt')![i], `pt(${x}, ${df})`));
});

test('model matrices match R\'s model.matrix: contrasts, names, the margin rule, no-intercept models', () => {
  const rows = [];
  const rng = new Rng(3);
  for (let i = 0; i < 40; i++) rows.push({ y: rng.int(2), a: ['a1', 'a2', 'a3'][i % 3], b: ['b1', 'b2'][Math.floor(i / 3) % 2], c: ['lo', 'hi'][rng.int(2)], x: Number(rng.normal().toFixed(4)), n: 1 + (i % 4) });
  const frame = Table.fromRows(rows);
  const formulas = ['y ~ a * b', 'y ~ a:b', 'y ~ 0 + a + b', 'y ~ a + x + a:x', 'y ~ (a + b + c)^2', 'y ~ a/b', 'y ~ factor(n) + x', 'y ~ b * c - c', 'y ~ x:a'];
  const data = `d <- data.frame(y = ${rv(rows.map((r) => r.y))}, a = c(${rows.map((r) => `"${r.a}"`).join(',')}), b = c(${rows.map((r) => `"${r.b}"`).join(',')}), c = factor(c(${rows.map((r) => `"${r.c}"`).join(',')}), levels = c("hi", "lo")), x = ${rv(rows.map((r) => r.x))}, n = ${rv(rows.map((r) => r.n))})`;
  const code = [
    data,
    ...formulas.map((f, k) => `m <- model.matrix(${f}, d); cat("names${k}", gsub(" ", "_", colnames(m)), "\\n"); cat("values${k}", as.vector(m), "\\n")`),
  ].join('\n');
  const r = spawnSync('Rscript', ['-e', code], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const lines = new Map(r.stdout.trim().split('\n').map((l) => [l.split(' ')[0], l.trim().split(/\s+/).slice(1)]));
  formulas.forEach((f, k) => {
    const mm = modelMatrix(parseFormula(f), frame);
    assert.deepEqual(mm.names.map((n) => n.replace(/ /g, '_')), lines.get(`names${k}`), `column names of ${f}`);
    const values = lines.get(`values${k}`)!.map(Number);
    const ours = mm.columns.flatMap((c) => Array.from(c));
    assert.equal(ours.length, values.length, `size of ${f}`);
    ours.forEach((v, i) => assert.ok(Math.abs(v - values[i]) < 1e-12, `value ${i} of ${f}: ${v} vs R ${values[i]}`));
  });
});

test('Kruskal–Wallis and Holm match R; Conover–Iman matches its formula evaluated in R', () => {
  const rng = new Rng(8);
  // Per-unit accuracies with ties (proportions of 10 trials), four groups of unequal size.
  const groups: number[] = [];
  const values: number[] = [];
  [7, 9, 6, 8].forEach((n, g) => {
    for (let i = 0; i < n; i++) {
      groups.push(g);
      values.push(Math.min(10, Math.max(0, Math.round(5 + g + 2 * rng.normal()))) / 10);
    }
  });
  const k = kruskalWallis(values, groups, ['A', 'B', 'C', 'D']);
  const r = R(`
    x <- ${rv(values)}; g <- factor(${rv(groups)})
    kt <- kruskal.test(x, g); cat("kw", format(c(kt$statistic, kt$parameter, kt$p.value), digits = 17), "\\n")
    # Conover-Iman (Conover 1999, eq. 5.5.x): t = (Rbar_i - Rbar_j) / sqrt(S2 (N-1-H)/(N-k) (1/n_i + 1/n_j)), df N - k
    rk <- rank(x); N <- length(x); kk <- nlevels(g); ni <- tabulate(g); Ri <- tapply(rk, g, mean)
    S2 <- (sum(rk^2) - N * (N + 1)^2 / 4) / (N - 1); H <- kt$statistic
    t <- c(); p <- c()
    for (a in 1:(kk - 1)) for (b in (a + 1):kk) { tt <- (Ri[a] - Ri[b]) / sqrt(S2 * (N - 1 - H) / (N - kk) * (1 / ni[a] + 1 / ni[b])); t <- c(t, tt); p <- c(p, 2 * pt(-abs(tt), N - kk)) }
    cat("t", format(t, digits = 17), "\\n"); cat("p", format(p, digits = 17), "\\n"); cat("holm", format(p.adjust(p, "holm"), digits = 17), "\\n")
  `);
  const [H, df, p] = r.get('kw')!;
  close(k.H, H, 1e-10, 'H');
  assert.equal(k.df, df);
  close(k.p, p, 1e-8, 'p');
  k.pairwise.forEach((pw, i) => {
    close(pw.t, r.get('t')![i], 1e-6, `t ${pw.a}-${pw.b}`);
    close(pw.p, r.get('p')![i], 1e-8, `p ${pw.a}-${pw.b}`);
    close(pw.pHolm, r.get('holm')![i], 1e-8, `Holm ${pw.a}-${pw.b}`);
  });
  assert.deepEqual(holm([0.01, 0.04, 0.03, 0.5]), [0.04, 0.09, 0.09, 0.5]);
});

test('permutation p-values agree with exact enumeration; bootstrap percentiles are R\'s type 7', () => {
  // Two groups of 5: all C(10,5) = 252 splits enumerated.
  const values = [0.9, 0.85, 0.8, 0.7, 0.75, 0.6, 0.65, 0.55, 0.7, 0.5];
  const label = [0, 0, 0, 0, 0, 1, 1, 1, 1, 1];
  const obs = Math.abs(0.8 - 0.6);
  let extreme = 0;
  let total = 0;
  for (let mask = 0; mask < 1024; mask++) {
    let bits = 0;
    for (let i = 0; i < 10; i++) bits += (mask >> i) & 1;
    if (bits !== 5) continue;
    total++;
    let a = 0;
    let b = 0;
    for (let i = 0; i < 10; i++) ((mask >> i) & 1 ? (a += values[i]) : (b += values[i]));
    if (Math.abs(a / 5 - b / 5) >= obs - 1e-12) extreme++;
  }
  const exact = extreme / total;
  const res = permutationTest(values, label, new Array(10).fill(0), 20_000, new Rng(4));
  assert.ok(Math.abs(res.p - exact) < 4 * Math.sqrt((exact * (1 - exact)) / 20_000) + 1e-4, `permutation p ${res.p} vs exact ${exact}`);
  close(res.difference, 0.2, 1e-12, 'difference');
  // Within strata the labels never cross strata: a difference explained by the strata is not significant.
  const strat = permutationTest([1, 1, 0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 1, 1, 0, 0, 1, 1], 2000, new Rng(5));
  assert.equal(strat.difference, 0);
  assert.equal(strat.p, 1);

  const sorted = [0.1, 0.4, 0.45, 0.6, 0.9, 1.3];
  const r = R(`cat("q", quantile(${rv(sorted)}, c(0.025, 0.5, 0.975), type = 7), "\\n")`);
  [0.025, 0.5, 0.975].forEach((p, i) => close(quantileSorted(sorted, p), r.get('q')![i], 1e-12, `quantile ${p}`));
  const same = clusterBootstrapCI([3, 3, 3], [4, 4, 4], 200, new Rng(1));
  assert.deepEqual(same, [0.75, 0.75], 'identical clusters leave no uncertainty');
});

test('the analytic gradient of the Laplace deviance matches finite differences', () => {
  const rows = simulateStudy({
    participants: 25,
    factors: { basis: ['channels', 'nmf'], layer: ['a', 'b', 'c'] },
    featuresPerCell: 4,
    intercept: 0.3,
    effects: { 'basis=nmf': 0.5, 'layer=c': -0.4 },
    sdParticipant: 0.6,
    sdFeature: 0.5,
    trialsPerParticipant: [8, 20],
    seed: 21,
  });
  const frame = Table.fromRows(rows);
  const { input } = buildInput(parseFormula('correct ~ basis * layer + skill_z + (1|participant) + (1|feature)'), frame);
  const obj = new LaplaceObjective(input);
  for (const x of [
    [0.7, 0.4, 0.2, 0.5, -0.1, -0.3, 0.1, 0.2, 0.05],
    [-0.3, 1.1, 0.5, 0.2, 0.3, -0.6, 0, -0.2, 0.3],
  ]) {
    const g = obj.valueGrad(x).g;
    x.forEach((_, j) => {
      const h = 1e-5;
      const xp = x.slice();
      const xm = x.slice();
      xp[j] += h;
      xm[j] -= h;
      const fd = (obj.evaluate(xp) - obj.evaluate(xm)) / (2 * h);
      assert.ok(Math.abs(g[j] - fd) < 1e-4 * Math.max(1, Math.abs(fd)), `∂/∂x${j}: analytic ${g[j]} vs finite difference ${fd}`);
    });
  }
});

test('GLMM errors say what is wrong with the data or the formula', () => {
  const frame = Table.fromRows([
    { correct: 1, basis: 'nmf', participant: 'p1', feature: 'f1', layer: 'l1' },
    { correct: 1, basis: 'channels', participant: 'p2', feature: 'f2', layer: 'l1' },
    { correct: 1, basis: 'nmf', participant: 'p1', feature: 'f2', layer: 'l1' },
  ]);
  assert.throws(() => fitModel('correct ~ basis + (1|participant)', frame), /the response is always 1: there is nothing to model/);
  assert.throws(() => fitModel('correct ~ layer + (1|participant)', frame), /"layer" has only one level \(l1\)/);
  // Random slopes are fitted (test/glmm-slopes.test.ts); a random term without a left-hand side is an error.
  assert.throws(() => fitModel('correct ~ basis + ( | participant)', frame), /expected the random term's left-hand side before "\|"/);
  assert.throws(() => fitModel('correct ~ basis', frame), /has no random intercept: add e\.g\. "\+ \(1\|participant\) \+ \(1\|feature\)"/);
  assert.throws(() => fitModel('correct ~ colour + (1|participant)', frame), /no column "colour" in the data \(columns: correct, basis, participant, feature, layer\)/);
  assert.throws(() => parseFormula('correct ~ basis +'), /formula ends too early/);
  assert.throws(() => parseFormula('correct ~ log(rt)'), /function log\(\) is not supported/);
});

test('exclusion rules: thresholds are strict, missing facts switch a rule off for that participant', () => {
  const facts: ParticipantFacts = {
    session: 's',
    participant: 'p',
    complete: true,
    trials_answered: 10,
    trials_expected: 10,
    total_time_s: 135,
    instruction_time_s: 15,
    catch_trials: 5,
    catch_correct: 4,
    distinct_responses: 5,
    practice_passed: null,
    browser_check_failed: null,
    prior_participation: null,
  };
  const rules = { catch_accuracy_min: 0.8, total_time_s: { min: 135, max: 2500 }, instruction_time_s_min: 15, min_distinct_responses: 5, repeat_participation: true, practice_pass_required: true };
  const d = decide(facts, rules);
  assert.equal(d.excluded, false, 'values at the thresholds pass');
  assert.equal(d.rules.practice.excluded, null, 'no practice criterion result: rule off for this participant');
  assert.equal(d.rules.browser_check.excluded, null);
  const e = decide({ ...facts, catch_correct: 3, total_time_s: 2501, distinct_responses: 4, prior_participation: 'study x', complete: false }, rules);
  assert.deepEqual(
    Object.entries(e.rules)
      .filter(([, o]) => o.excluded)
      .map(([k]) => k),
    ['incomplete', 'catch_accuracy', 'total_time', 'distinct_responses', 'repeat_participation'],
  );
  assert.match(e.reasons.join('; '), /catch accuracy 0\.60 \(3\/5\) < 0\.8; total time 2501 s > 2500 s; used 4 distinct buttons < 5; took part before \(study x\)/);
  assert.equal(decide({ ...facts, complete: false }, rules, { includeIncomplete: true }).excluded, false);
});
