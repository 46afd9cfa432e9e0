// Feature-level tests when the same features are tested in every condition (the usual case for a
// within-feature factor such as the reference kind): Wilcoxon signed-rank and Friedman with
// Conover's pairwise tests, checked against R (wilcox.test, friedman.test, Conover's formula
// evaluated in R, PMCMRplus where it is installed), and `legible analyze` choosing them — and
// saying why — over Kruskal–Wallis, which treats paired accuracies as independent samples.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { Rng } from '@legible/studies';
import { analyze } from '../src/analyze.ts';
import { friedman, kruskalWallis, wilcoxonSignedRank } from '../src/stats/nonparametric.ts';

const tmp = mkdtempSync(join(tmpdir(), 'legible-paired-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const haveR = spawnSync('Rscript', ['-e', 'cat(1)'], { encoding: 'utf8' }).status === 0;
const noR = haveR ? false : 'Rscript is not installed (Debian: apt-get install r-base-core): these checks compare with R';

function R(code: string): Map<string, number[]> {
  const r = spawnSync('Rscript', ['-e', code], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  const out = new Map<string, number[]>();
  for (const line of r.stdout.trim().split('\n')) {
    const [k, ...v] = line.trim().split(/\s+/);
    out.set(k, v.map(Number));
  }
  return out;
}
const rv = (xs: ArrayLike<number>) => `c(${Array.from(xs, (x) => x.toPrecision(17)).join(',')})`;
const close = (a: number, b: number, tol: number, what: string) => assert.ok(Math.abs(a - b) <= tol * Math.max(1e-300, Math.abs(b)), `${what}: ${a} vs R ${b}`);

/** Accuracies of features over 16 trials (exact binary fractions, so x − y is exact in R too). */
function accuracies(rng: Rng, n: number, shift: number[]): number[][] {
  return Array.from({ length: n }, () => {
    const ease = rng.normal() * 1.2;
    return shift.map((s) => {
      const p = 1 / (1 + Math.exp(-(ease + s)));
      let k = 0;
      for (let t = 0; t < 16; t++) k += rng.float() < p ? 1 : 0;
      return k / 16;
    });
  });
}

test('Wilcoxon signed-rank matches R\'s wilcox.test(paired = TRUE): exact, and with ties and zeros', { skip: noR }, () => {
  // No ties, no zeros, n < 50: R uses the exact distribution.
  const x1 = [1.83, 0.5, 1.62, 2.48, 1.68, 1.88, 1.55, 3.06, 1.3, 0.96, 2.1];
  const y1 = [0.878, 0.647, 0.598, 2.05, 1.06, 1.29, 1.06, 3.14, 1.29, 1.5, 1.2];
  // Ties and zeros (per-feature accuracies): the normal approximation with corrections.
  const acc = accuracies(new Rng(3), 40, [0, 0.35]);
  const x2 = acc.map((a) => a[1]);
  const y2 = acc.map((a) => a[0]);
  const r = R(`
    w <- wilcox.test(${rv(x1)}, ${rv(y1)}, paired = TRUE); cat("w1", w$statistic, format(w$p.value, digits = 17), "\\n")
    w <- suppressWarnings(wilcox.test(${rv(x2)}, ${rv(y2)}, paired = TRUE)); cat("w2", w$statistic, format(w$p.value, digits = 17), "\\n")
    w <- suppressWarnings(wilcox.test(${rv(y2)}, ${rv(x2)}, paired = TRUE)); cat("w3", w$statistic, format(w$p.value, digits = 17), "\\n")
  `);
  const w1 = wilcoxonSignedRank(x1, y1);
  assert.equal(w1.method, 'exact');
  assert.equal(w1.V, r.get('w1')![0]);
  close(w1.p, r.get('w1')![1], 1e-10, 'exact p');
  const w2 = wilcoxonSignedRank(x2, y2);
  assert.equal(w2.method, 'normal');
  assert.ok(w2.zeros > 0 && w2.ties, 'the data have zero differences and ties');
  assert.equal(w2.V, r.get('w2')![0]);
  close(w2.p, r.get('w2')![1], 1e-10, 'normal p');
  const w3 = wilcoxonSignedRank(y2, x2);
  assert.equal(w3.V, r.get('w3')![0]);
  close(w3.p, r.get('w3')![1], 1e-10, 'normal p, other direction');
});

test('Friedman matches R\'s friedman.test; Conover\'s pairwise tests match their formula in R (and PMCMRplus where installed)', { skip: noR }, () => {
  const y = accuracies(new Rng(11), 25, [0, 0.2, 0.6, 0.1]);
  const labels = ['A', 'B', 'C', 'D'];
  const fr = friedman(y, labels);
  const hasPMCMR = spawnSync('Rscript', ['-e', 'library(PMCMRplus)'], { encoding: 'utf8' }).status === 0;
  const r = R(`
    y <- matrix(${rv(y.flat())}, ncol = 4, byrow = TRUE)
    ft <- friedman.test(y); cat("fr", format(c(ft$statistic, ft$parameter, ft$p.value), digits = 17), "\\n")
    # Conover (1999) §5.8: t = (R_i - R_j) / sqrt(2 (b A - sum R^2) / ((b - 1)(k - 1))), df (b - 1)(k - 1)
    rk <- t(apply(y, 1, rank)); b <- nrow(y); k <- ncol(y); Rs <- colSums(rk); A <- sum(rk^2)
    se <- sqrt(2 * (b * A - sum(Rs^2)) / ((b - 1) * (k - 1))); t <- c(); p <- c()
    for (i in 1:(k - 1)) for (j in (i + 1):k) { tt <- (Rs[i] - Rs[j]) / se; t <- c(t, tt); p <- c(p, 2 * pt(-abs(tt), (b - 1) * (k - 1))) }
    cat("t", format(t, digits = 17), "\\n"); cat("p", format(p, digits = 17), "\\n"); cat("holm", format(p.adjust(p, "holm"), digits = 17), "\\n")
    ${hasPMCMR ? 'suppressMessages(library(PMCMRplus)); cp <- frdAllPairsConoverTest(y, p.adjust.method = "holm"); cat("pm", format(cp$p.value[lower.tri(cp$p.value, diag = TRUE)], digits = 17), "\\n")' : ''}
  `);
  const [Q, df, p] = r.get('fr')!;
  close(fr.Q, Q, 1e-10, 'Friedman Q');
  assert.equal(fr.df, df);
  close(fr.p, p, 1e-8, 'Friedman p');
  fr.pairwise.forEach((pw, i) => {
    close(pw.t, r.get('t')![i], 1e-9, `t ${pw.a}-${pw.b}`);
    close(pw.p, r.get('p')![i], 1e-8, `p ${pw.a}-${pw.b}`);
    close(pw.pHolm, r.get('holm')![i], 1e-8, `Holm ${pw.a}-${pw.b}`);
  });
  if (hasPMCMR) {
    // PMCMRplus lists the lower triangle column by column: (B,A), (C,A), (D,A), (C,B), (D,B), (D,C) — our order.
    fr.pairwise.forEach((pw, i) => close(pw.pHolm, r.get('pm')![i], 1e-6, `PMCMRplus ${pw.a}-${pw.b}`));
  }
});

/** A legible-style trials.csv where every feature is shown with both reference kinds (or three cues). */
function writeWithinFeatureTrials(file: string, levels: string[], shift: number[]): Map<string, number[]> {
  const rng = new Rng(21);
  const rows = ['participant,session,feature,kind,correct,rt_ms,confidence,reference_kind,cue'];
  const ease = Array.from({ length: 24 }, () => rng.normal() * 1.5);
  const k = new Map<string, number[]>();
  for (let p = 0; p < 16; p++) {
    for (let f = 0; f < ease.length; f++) {
      levels.forEach((level, j) => {
        const correct = rng.float() < 1 / (1 + Math.exp(-(ease[f] + shift[j]))) ? 1 : 0;
        const key = `f${f}`;
        const a = k.get(key) ?? levels.map(() => 0);
        a[j] += correct;
        k.set(key, a);
        const kindLevel = levels.length === 2 ? level : 'natural';
        rows.push(`P${p},S${p},${key},main,${correct},${1500 + rng.int(1000)},${1 + rng.int(3)},${kindLevel},${level}`);
      });
    }
  }
  writeFileSync(file, `${rows.join('\n')}\n`);
  return new Map([...k].map(([f, a]) => [f, a.map((x) => x / 16)]));
}

test('legible analyze pairs the features: Wilcoxon for two conditions, says why, and finds the within-feature effect Kruskal–Wallis misses', async () => {
  const file = join(tmp, 'two', 'trials.csv');
  spawnSync('mkdir', ['-p', join(tmp, 'two')]);
  const acc = writeWithinFeatureTrials(file, ['natural', 'visualization'], [0, 0.45]);
  const out = join(tmp, 'out-two');
  const result = await analyze({ input: file, out, boot: 200, permutations: 4000, power: false });
  assert.deepEqual(result.factors, ['reference_kind']);
  const rt = result.rankTest!;
  assert.equal(rt.test, 'wilcoxon-signed-rank');
  assert.match(rt.reason, /every one of the 24 features was tested in all 2 conditions/);
  // Recomputed here from the rows written: the same test on the same pairs.
  const features = [...acc.keys()];
  const ref = wilcoxonSignedRank(
    features.map((f) => acc.get(f)![1]),
    features.map((f) => acc.get(f)![0]),
  );
  assert.equal(rt.statistic, ref.V);
  assert.equal(rt.p, ref.p);
  assert.ok(rt.p < 0.01, `a consistent within-feature shift is detected (p = ${rt.p})`);
  // The test the analysis used to run treats the 48 accuracies as independent and misses it.
  const kw = kruskalWallis(
    features.flatMap((f) => acc.get(f)!),
    features.flatMap(() => [0, 1]),
    ['natural', 'visualization'],
  );
  assert.ok(kw.p > 0.05, `Kruskal–Wallis on the same accuracies: p = ${kw.p}`);
  const perm = result.permutation.find((p) => p.factor === 'reference_kind')!;
  assert.equal(perm.design, 'paired');
  assert.equal(perm.na, 24);
  assert.ok(perm.p < 0.01, `paired permutation p = ${perm.p}`);
  const mean = features.reduce((s, f) => s + acc.get(f)![1] - acc.get(f)![0], 0) / features.length;
  assert.ok(Math.abs(perm.difference - mean) < 1e-12, 'the difference is the mean within-feature difference');
  const html = readFileSync(join(out, 'report.html'), 'utf8');
  assert.match(html, /<b>Wilcoxon signed-rank test<\/b>/);
  assert.match(html, /Why this test:<\/i> every one of the 24 features/);
  assert.doesNotMatch(html, /Kruskal–Wallis over/);
  if (haveR) {
    const r = R(`w <- suppressWarnings(wilcox.test(${rv(features.map((f) => acc.get(f)![1]))}, ${rv(features.map((f) => acc.get(f)![0]))}, paired = TRUE)); cat("w", w$statistic, format(w$p.value, digits = 17), "\\n")`);
    assert.equal(rt.statistic, r.get('w')![0]);
    close(rt.p, r.get('w')![1], 1e-10, 'analyze\'s Wilcoxon p against R');
  }
});

test('three conditions on the same features: Friedman with Conover–Holm; a feature-nested factor keeps Kruskal–Wallis', async () => {
  const dir = join(tmp, 'three');
  spawnSync('mkdir', ['-p', dir]);
  const acc = writeWithinFeatureTrials(join(dir, 'trials.csv'), ['a', 'b', 'c'], [0, 0.3, 0.6]);
  const result = await analyze({ input: join(dir, 'trials.csv'), by: ['cue'], out: join(tmp, 'out-three'), boot: 100, permutations: 500, power: false });
  const rt = result.rankTest!;
  assert.equal(rt.test, 'friedman');
  const features = [...acc.keys()];
  const ref = friedman(features.map((f) => acc.get(f)!), ['a', 'b', 'c']);
  assert.equal(rt.statistic, ref.Q);
  assert.equal(rt.pairwise.length, 3);
  rt.pairwise.forEach((pw, i) => assert.equal(pw.pHolm, ref.pairwise[i].pHolm));
  assert.ok(result.permutation.every((p) => p.design === 'paired'));
  assert.match(readFileSync(join(tmp, 'out-three', 'report.html'), 'utf8'), /<b>Friedman test<\/b>/);

  // Features nested in a factor (each feature in one condition): independent samples.
  const nested = join(tmp, 'nested');
  spawnSync('mkdir', ['-p', nested]);
  const rows = ['participant,session,feature,kind,correct,basis'];
  const rng = new Rng(4);
  for (let p = 0; p < 10; p++) for (let f = 0; f < 20; f++) rows.push(`P${p},S${p},f${f},main,${rng.float() < 0.7 ? 1 : 0},${f < 10 ? 'channels' : 'nmf'}`);
  writeFileSync(join(nested, 'trials.csv'), `${rows.join('\n')}\n`);
  const r2 = await analyze({ input: join(nested, 'trials.csv'), out: join(tmp, 'out-nested'), boot: 100, permutations: 500, power: false });
  assert.equal(r2.rankTest!.test, 'kruskal-wallis');
  assert.match(r2.rankTest!.reason, /each feature was tested in one condition only/);
  assert.equal(r2.permutation[0].design, 'unpaired');
});

test('a within-feature factor beside a between-feature one: no single rank test, said why; permutation tests pair where they can', async () => {
  const dir = join(tmp, 'mixed');
  spawnSync('mkdir', ['-p', dir]);
  const rng = new Rng(8);
  const rows = ['participant,session,feature,kind,correct,basis,reference_kind'];
  for (let p = 0; p < 10; p++) {
    for (let f = 0; f < 12; f++) {
      for (const rk of ['natural', 'visualization']) rows.push(`P${p},S${p},f${f},main,${rng.float() < 0.7 ? 1 : 0},${f < 6 ? 'channels' : 'nmf'},${rk}`);
    }
  }
  writeFileSync(join(dir, 'trials.csv'), `${rows.join('\n')}\n`);
  const r = await analyze({ input: join(dir, 'trials.csv'), out: join(tmp, 'out-mixed'), boot: 50, permutations: 200, power: false });
  assert.equal(r.rankTest!.test, 'none');
  assert.match(r.rankTest!.reason, /^reference_kind varies within features and basis between them/);
  const overall = (f: string) => r.permutation.find((p) => p.factor === f && p.within === '')!;
  assert.equal(overall('reference_kind').design, 'paired');
  assert.equal(overall('reference_kind').na, 12);
  assert.equal(overall('basis').design, 'unpaired');
  assert.match(readFileSync(join(tmp, 'out-mixed', 'report.html'), 'utf8'), /No rank test over all conditions/);
});
