// `legible analyze --complexity`: each feature's complexity from the stimuli manifest becomes the
// covariate `complexity` (default formula correct ~ basis * layer * complexity + (…)); per-feature
// accuracy against it gets Spearman's ρ with a bootstrap interval. Expected numbers are recomputed
// here from the rows the test writes.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Rng } from '@legible/studies';
import { analyze } from '../src/analyze.ts';
import { parseCsvRecords } from '../src/csv.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), 'legible-complexity-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const DEPTHS = [1, 2, 4, 7, 13];
const features: { id: string; layer: string; basis: string; order: number | null; explained: number[] }[] = [];
{
  const rng = new Rng(8);
  for (const layer of ['block2', 'block3']) {
    for (const basis of ['channels', 'nmf']) {
      for (let f = 0; f < 8; f++) {
        const k = rng.int(DEPTHS.length);
        const deepest = 0.5 + 0.4 * rng.float();
        features.push({ id: `${layer}/${basis}/${f}`, layer, basis, order: DEPTHS[k], explained: DEPTHS.map((_, j) => (j >= k ? deepest : deepest * (0.3 + 0.1 * j))) });
      }
    }
  }
  features[3].order = null; // the deepest net explained too little
  features[17].order = null;
}
const missing = 'block3/nmf/7'; // no complexity at all in the manifest

// Study file and its build/manifest.json (only what --complexity reads).
const studyFile = join(tmp, 'study.yaml');
writeFileSync(studyFile, readFileSync(join(root, 'studies/demo/study.yaml'), 'utf8'));
mkdirSync(join(tmp, 'build'), { recursive: true });
writeFileSync(
  join(tmp, 'build', 'manifest.json'),
  JSON.stringify({
    complexity: { depths: DEPTHS, width: 32, epochs: 20, threshold: 0.9, layers: [] },
    features: features.map((f) => ({ id: f.id, ...(f.id !== missing && { complexity: { order: f.order, explained: f.explained, rho: [] } }) })),
    trials: [],
  }),
);

// Trials: every participant answers every feature once; accuracy falls with the order.
const data = join(tmp, 'data');
mkdirSync(data, { recursive: true });
const rows = ['study,mode,participant,session,feature,layer,basis,kind,correct,rt_ms,confidence'];
{
  const rng = new Rng(5);
  for (let p = 0; p < 24; p++) {
    const skill = 0.4 * rng.normal();
    for (const f of features) {
      const order = f.order ?? 4;
      const correct = rng.float() < 1 / (1 + Math.exp(-(1.6 + skill - 0.17 * order))) ? 1 : 0;
      rows.push(`demo,live,P${p},S${p},${f.id},${f.layer},${f.basis},main,${correct},${1000 + rng.int(900)},${1 + rng.int(3)}`);
    }
  }
}
writeFileSync(join(data, 'trials.csv'), `${rows.join('\n')}\n`);

/** Spearman's ρ written out: mid-ranks, then Pearson. */
function spearmanRef(x: number[], y: number[]): number {
  const rank = (v: number[]) => v.map((a) => v.filter((b) => b < a).length + (v.filter((b) => b === a).length + 1) / 2);
  const [rx, ry] = [rank(x), rank(y)];
  const m = (v: number[]) => v.reduce((a, b) => a + b, 0) / v.length;
  const [mx, my] = [m(rx), m(ry)];
  const cov = rx.reduce((s, a, i) => s + (a - mx) * (ry[i] - my), 0);
  return cov / Math.sqrt(rx.reduce((s, a) => s + (a - mx) ** 2, 0) * ry.reduce((s, b) => s + (b - my) ** 2, 0));
}

describe('legible analyze --complexity', () => {
  it('adds the complexity order as a covariate and correlates it with per-feature accuracy', async () => {
    const out = join(tmp, 'out-order');
    const r = await analyze({ input: join(data, 'trials.csv'), out, study: studyFile, complexity: 'order', boot: 400, permutations: 200, power: false });
    const c = r.complexity!;
    // Features without an order (2) and without complexity (1) are left out, with their trials.
    assert.deepEqual(c.dropped, { features: 3, trials: 3 * 24 });
    assert.equal(c.features.length, features.length - 3);
    assert.ok(r.notes.some((n) => /3 features \(72 main trials\) have no complexity order/.test(n)));
    // Per-feature accuracy from the rows, and ρ against the orders.
    const acc = new Map<string, [number, number]>();
    for (const line of rows.slice(1)) {
      const cells = line.split(',');
      const a = acc.get(cells[4]) ?? [0, 0];
      a[0] += Number(cells[8]);
      a[1]++;
      acc.set(cells[4], a);
    }
    const kept = features.filter((f) => f.order !== null && f.id !== missing);
    const rho = spearmanRef(
      kept.map((f) => f.order!),
      kept.map((f) => acc.get(f.id)![0] / acc.get(f.id)![1]),
    );
    assert.ok(Math.abs(c.spearman.rho - rho) < 1e-12, `ρ ${c.spearman.rho}, recomputed ${rho}`);
    assert.equal(c.spearman.n, kept.length);
    assert.ok(c.spearman.ci[0] < rho && rho < c.spearman.ci[1], `CI ${c.spearman.ci} around ${rho}`);
    assert.ok(c.spearman.ci[1] < 0, `accuracy falls with complexity: ρ ${rho}, CI ${c.spearman.ci}`);
    assert.deepEqual(c.byBasis.map((b) => [b.basis, b.n]), [
      ['channels', kept.filter((f) => f.basis === 'channels').length],
      ['nmf', kept.filter((f) => f.basis === 'nmf').length],
    ]);
    // The GLMM: basis * layer * complexity by default; the complexity slope is negative and clear.
    assert.match(r.glmm!.formula, /^correct ~ basis \+ layer \+ complexity \+ .*basis:layer:complexity \+ \(/);
    const fit = r.glmm!.fit;
    const j = fit.xNames.indexOf('complexity');
    assert.ok(j >= 0, `coefficients: ${fit.xNames}`);
    assert.ok(fit.beta[j] < 0 && fit.p[j] < 0.05, `complexity ${fit.beta[j]} (p ${fit.p[j]})`);
    // complexity.csv: one row per feature with its order and accuracy.
    const csv = parseCsvRecords(readFileSync(join(out, 'complexity.csv'), 'utf8'));
    assert.deepEqual(Object.keys(csv[0]), ['feature', 'layer', 'basis', 'complexity_order', 'trials', 'correct', 'accuracy']);
    assert.equal(csv.length, kept.length);
    for (const row of csv) {
      const f = features.find((x) => x.id === row.feature)!;
      assert.equal(Number(row.complexity_order), f.order);
      assert.equal(Number(row.correct), acc.get(f.id)![0]);
      assert.equal(Number(row.trials), 24);
    }
    // The report: the scatter figure and the correlation table.
    const html = readFileSync(join(out, 'report.html'), 'utf8');
    assert.match(html, /<h2>Feature complexity<\/h2>/);
    assert.match(html, /Feature accuracy against complexity \(order\)/);
    assert.match(html, new RegExp(`Spearman ρ = ${c.spearman.rho.toFixed(2)}`));
    assert.ok(r.files.some((f) => f.endsWith('figures/complexity.svg')));
  });

  it('takes the low-order share instead, in [0, 1]', async () => {
    const r = await analyze({ input: join(data, 'trials.csv'), out: join(tmp, 'out-share'), study: studyFile, complexity: 'share', boot: 100, permutations: 100, power: false, report: false });
    const c = r.complexity!;
    // Every feature with complexity has a share (even those without an order); only `missing` is left out.
    assert.deepEqual(c.dropped, { features: 1, trials: 24 });
    for (const p of c.features) {
      const f = features.find((x) => x.id === p.feature)!;
      assert.ok(Math.abs(p.complexity - f.explained[0] / f.explained[4]) < 1e-12);
    }
  });

  it('says what to do when the manifest has no complexity', async () => {
    const bare = join(tmp, 'bare');
    mkdirSync(join(bare, 'build'), { recursive: true });
    writeFileSync(join(bare, 'build', 'manifest.json'), JSON.stringify({ features: [], trials: [] }));
    await assert.rejects(
      analyze({ input: join(data, 'trials.csv'), out: join(tmp, 'out-bare'), study: studyFile, manifest: join(bare, 'build', 'manifest.json'), complexity: 'order', power: false, report: false }),
      /has no complexity.*Add one and run legible stimuli again/,
    );
  });
});
