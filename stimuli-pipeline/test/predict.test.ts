// The machine observer (`legible predict`): its decisions on constructed embeddings where the right
// answer is known, a random-embedding observer at chance, an observer that sees the feature itself
// near 1, and the whole command on the demo study (a copy of its build, so other tests' builds stay
// as they are).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { loadStudy, Manifest, rng } from '@legible/studies';
import { splitOf } from '../src/dataset.ts';
import { ensureBuilt, studyFeatureSet } from '../src/build.ts';
import { featureId } from '../src/exemplars.ts';
import { BAND, centre, cosine, decide, DEFAULT_PAIRS, delta, drawQueries, misProbability, parseObserverInput, predictStudy, readPrediction, scoreTasks } from '../src/predict.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const v = (...xs: number[]) => Float32Array.from(xs);

describe('machine observer: decisions', () => {
  it('computes Δ and P(correct) by the MIS rule on embeddings whose answer is known', () => {
    // Max side along x, min side along y; cosines are 1 or 0.
    const max = [v(1, 0), v(2, 0)];
    const min = [v(0, 1), v(0, 3)];
    assert.equal(delta(v(5, 0), max, min), 1);
    assert.equal(delta(v(0, 2), max, min), -1);
    const right = decide({ max, min, qMax: v(1, 0), qMin: v(0, 1) }, 2);
    assert.equal(right.decision, 2);
    assert.equal(right.p, 1 / (1 + Math.exp(-4)));
    // Swapping the queries turns the decision round: the observer picks the other one.
    const wrong = decide({ max, min, qMax: v(0, 1), qMin: v(1, 0) }, 2);
    assert.equal(wrong.decision, -2);
    assert.ok(Math.abs(wrong.p + right.p - 1) < 1e-12);
    // A query at 45° between the sides is undecided.
    assert.equal(decide({ max, min, qMax: v(1, 1), qMin: v(1, 1) }, 2).p, 0.5);
    assert.equal(misProbability(0, 7), 0.5);
  });

  it('picks the query nearer the maximal references in noisy high-dimensional embeddings', () => {
    const r = rng(3);
    const d = 32;
    const noisy = (centreOf: Float32Array, s: number) => Float32Array.from(centreOf, (x) => x + s * r.normal());
    const a = Float32Array.from({ length: d }, () => r.normal());
    const b = Float32Array.from({ length: d }, () => r.normal());
    let right = 0;
    for (let t = 0; t < 50; t++) {
      const max = Array.from({ length: 9 }, () => noisy(a, 0.5));
      const min = Array.from({ length: 9 }, () => noisy(b, 0.5));
      // Queries placed by construction: q+ 70% of the way to a, q− 70% of the way to b.
      const mix = (w: number) => Float32Array.from(a, (x, i) => w * x + (1 - w) * b[i] + 0.3 * r.normal());
      if (decide({ max, min, qMax: mix(0.7), qMin: mix(0.3) }, 4).decision > 0) right++;
    }
    assert.equal(right, 50, 'every decision right where the answer is built in');
  });

  it('centres embeddings on their mean, so that shared positive offsets do not make images alike', () => {
    const e = centre([v(10, 1), v(10, -1), v(12, 0)]);
    assert.deepEqual([...e[0]].map((x) => Number(x.toFixed(6))), [-0.666667, 1]);
    assert.ok(Math.abs(cosine(e[0], e[1])) < 1, 'no longer nearly parallel');
    assert.ok(cosine(v(10, 1), v(10, -1)) > 0.98);
  });
});

describe('machine observer: scores', () => {
  /** Tasks crossed as a study draws them: per feature, references and query candidates per side. */
  function featureTasks(embed: (value: number, r: ReturnType<typeof rng>) => Float32Array, r: ReturnType<typeof rng>, opts: { queries: number; easy: boolean }) {
    // A feature's values over 1000 images; references: top and bottom 9; queries: the next ones (easy)
    // or around the 60th/40th percentiles (hard).
    const values = Array.from({ length: 1000 }, () => r.normal()).sort((x, y) => y - x);
    const all = values.map((x) => embed(x, r));
    const c = centre(all);
    const max = c.slice(0, 9);
    const min = c.slice(-9);
    const at = opts.easy ? 9 : 400;
    const qMax = c.slice(at, at + opts.queries);
    const qMin = c.slice(1000 - at - opts.queries, 1000 - at);
    return [qMax.map((a) => qMin.map((b) => decide({ max, min, qMax: a, qMin: b }, 4).p))];
  }

  it('a random-embedding observer scores 0.5 within its CI', () => {
    const r = rng(11);
    const random = () => Float32Array.from({ length: 64 }, () => r.normal());
    let covered = 0;
    let sum = 0;
    const n = 40;
    for (let f = 0; f < n; f++) {
      const s = scoreTasks(featureTasks(random, r, { queries: 12, easy: true }), 1000 + f);
      assert.ok(s.lo <= s.p && s.p <= s.hi);
      assert.equal(s.n_pairs, 144);
      if (s.lo <= 0.5 && 0.5 <= s.hi) covered++;
      sum += s.p;
    }
    // 95% intervals: about 38 of 40 cover 0.5; fewer than 34 would be a miscalibrated CI (p < 0.01).
    assert.ok(covered >= 34, `CI covered 0.5 for ${covered} of ${n} random features`);
    assert.ok(Math.abs(sum / n - 0.5) < 0.02, `mean score ${sum / n}`);
  });

  it('an observer whose embedding is the feature itself scores near 1 on easy queries', () => {
    const r = rng(12);
    const itself = (x: number) => v(x);
    for (let f = 0; f < 10; f++) {
      const s = scoreTasks(featureTasks(itself, r, { queries: 5, easy: true }), f);
      assert.ok(s.p > 0.99 && s.lo > 0.99, `feature ${f}: ${s.p} [${s.lo}, ${s.hi}]`);
    }
    // With the feature drowned in 63 noise dimensions, queries near the middle are harder to read.
    const diluted = (x: number, rr: ReturnType<typeof rng>) => Float32Array.from({ length: 64 }, (_, i) => (i === 0 ? x : rr.normal()));
    const weak = scoreTasks(featureTasks(diluted, r, { queries: 20, easy: false }), 99);
    assert.ok(weak.p < 0.9 && weak.lo > 0.5, `diluted: ${weak.p} [${weak.lo}, ${weak.hi}]`);
  });

  it('resamples the query images once for every reference kind (the kinds cross the same images)', () => {
    const r = rng(13);
    const random = () => Float32Array.from({ length: 16 }, () => r.normal());
    const [block] = featureTasks(random, r, { queries: 10, easy: true });
    const one = scoreTasks([block], 5);
    // Two kinds over the same queries: resampled together, the interval is the one kind's; resampled
    // apart, it would be narrower, as if twice the images had been seen.
    const two = scoreTasks([block, block], 5);
    for (const key of ['p', 'lo', 'hi'] as const) assert.ok(Math.abs(two[key] - one[key]) < 1e-12, `${key}: ${two[key]} with two kinds, ${one[key]} with one`);
    assert.equal(two.n_pairs, 200);
    assert.ok(one.hi - one.lo > 0);
  });

  it('says which part of --observer-input is wrong', () => {
    assert.deepEqual(parseObserverInput('size=64,resize=none,mean=0.5,std=0.25,channels=gray'), { size: 64, channels: 'gray', range: 1, mean: [0.5], std: [0.25] });
    assert.throws(() => parseObserverInput('size=224,mean=0.5/0.5'), /--observer-input: mean: expected 3 values/);
    assert.throws(() => parseObserverInput('colour=rgb'), /unknown key "colour"/);
  });
});

describe('legible predict on the demo study', () => {
  let dir: string;
  after(() => dir && rmSync(dir, { recursive: true, force: true }));

  it('writes machine_score into every manifest feature, per-trial probabilities and the report section', async () => {
    const demo = loadStudy('demo');
    await ensureBuilt(demo, { quiet: true });
    // A copy of the study beside its build (model and images by absolute path), so predict writes there.
    dir = mkdtempSync(join(tmpdir(), 'legible-predict-'));
    const yaml = readFileSync(demo.file, 'utf8').replace('onnx: model.onnx', `onnx: ${demo.paths.model}`).replace('images: data/fashion-mnist', `images: ${demo.paths.images}`);
    writeFileSync(join(dir, 'study.yaml'), yaml);
    for (const f of ['manifest.json', 'report.html', 'stamp.json', 'img', 'cache']) cpSync(join(demo.paths.build, f), join(dir, 'build', f), { recursive: true });
    const copy = loadStudy(join(dir, 'study.yaml'));
    const before = Manifest.parse(JSON.parse(readFileSync(join(dir, 'build/manifest.json'), 'utf8')));

    const p = await predictStudy(copy, { log: () => {} });
    assert.equal(p.weak_proxy, true);
    assert.equal(p.pairs, DEFAULT_PAIRS);
    assert.match(p.observer, /model\.onnx:block3 .*weak proxy/);
    const after = Manifest.parse(JSON.parse(readFileSync(join(dir, 'build/manifest.json'), 'utf8')));
    assert.equal(after.features.length, before.features.length);
    for (const f of after.features) {
      const s = f.machine_score;
      assert.ok(s, `${f.id} has a machine score`);
      assert.ok(s.lo <= s.p && s.p <= s.hi && s.lo >= 0 && s.hi <= 1, `${f.id}: ${JSON.stringify(s)}`);
      // 10 × 10 queries per reference kind wherever the feature's band holds them (the demo's held-out
      // split has ~600 images: bands of 16 ranks at its difficulty, extreme).
      assert.equal(s.n_pairs, DEFAULT_PAIRS * new Set(after.trials.filter((t) => t.feature === f.id).map((t) => t.reference_kind)).size, `${f.id}: ${s.n_pairs} pairs`);
      assert.equal(s.weak_proxy, true);
    }
    // Everything else in the manifest is as it was (the build's, or an earlier prediction's).
    const unscored = (m: Manifest) => ({ ...m, features: m.features.map(({ machine_score: _, ...rest }) => rest) });
    assert.deepEqual(unscored(after), unscored(before));
    // Every trial has a probability; catch trials (a reference as the query) are easier than chance.
    assert.deepEqual(Object.keys(p.trials).sort(), after.trials.map((t) => t.id).sort());
    const catches = after.trials.filter((t) => t.kind === 'catch').map((t) => p.trials[t.id]);
    assert.ok(catches.reduce((a, b) => a + b, 0) / catches.length > 0.6, `catch trials: ${catches}`);
    assert.deepEqual(readPrediction(join(dir, 'build')), p);
    const report = readFileSync(join(dir, 'build/report.html'), 'utf8');
    assert.match(report, /<h2>Machine observer<\/h2>/);
    assert.match(report, /Weak proxy/);
    // Running it again replaces the section rather than adding one.
    await predictStudy(copy, { log: () => {}, alpha: 2 });
    assert.equal(readFileSync(join(dir, 'build/report.html'), 'utf8').split('<h2>Machine observer</h2>').length, 2);
    assert.equal(readPrediction(join(dir, 'build'))!.alpha, 2);
  });

  it('draws query pairs the way the study draws its queries: held-out images around its query ranks, seeded', async () => {
    const copy = loadStudy(join(dir, 'study.yaml'));
    const manifest = Manifest.parse(JSON.parse(readFileSync(join(dir, 'build/manifest.json'), 'utf8')));
    const drawn = await drawQueries(copy, manifest, 100);
    assert.deepEqual(await drawQueries(copy, manifest, 100), drawn, 'seeded: the same draw again');
    const { fs } = await studyFeatureSet(copy, { quiet: true, log: () => {} });
    try {
      const columns = new Map([...fs.selected, ...fs.spare].map((c) => [featureId(c), c]));
      const rowOf = new Map(fs.ids.map((id, r) => [id, r]));
      const m = fs.queryRows.length;
      for (const f of manifest.features) {
        const q = drawn.get(f.id)!;
        const v = (id: string) => columns.get(f.id)!.values[rowOf.get(id)!];
        assert.equal(q.max.length, 10);
        assert.equal(q.min.length, 10);
        assert.equal(new Set([...q.max, ...q.min]).size, 20, 'no image twice');
        // The study's own queries are among them (first), and every query is a held-out image.
        assert.equal(q.max[0], f.queries.max[0]);
        assert.equal(q.min[0], f.queries.min[0]);
        for (const id of [...q.max, ...q.min]) assert.equal(splitOf(id, copy.study.dataset.split), 'query', `${f.id}: ${id} is held out`);
        // Clearly apart as the study's pair: every max query above every min query by min_separation × range.
        const required = copy.study.features.min_separation * (f.stats.max - f.stats.min);
        const weakestMax = Math.min(...q.max.map(v));
        const strongestMin = Math.max(...q.min.map(v));
        assert.ok(weakestMax - strongestMin >= required * (1 - 1e-5), `${f.id}: max queries down to ${weakestMax}, min queries up to ${strongestMin}`);
        // Near the study's query ranks (the demo's difficulty is extreme: the top and bottom of the
        // held-out ranking): at most BAND of the split's images beyond them, on each side.
        const above = (x: number) => fs.queryRows.filter((r) => columns.get(f.id)!.values[r] > x).length;
        const below = (x: number) => fs.queryRows.filter((r) => columns.get(f.id)!.values[r] < x).length;
        assert.ok(above(weakestMax) <= Math.round(BAND * m) + 1, `${f.id}: ${above(weakestMax)} held-out images above its weakest max query`);
        assert.ok(below(strongestMin) <= Math.round(BAND * m) + 1, `${f.id}: ${below(strongestMin)} held-out images below its strongest min query`);
      }
    } finally {
      await fs.release();
    }
    // One pair: the study's own, so the feature's score is its natural main trial's probability.
    const one = await predictStudy(copy, { log: () => {}, pairs: 1 });
    const main = manifest.trials.find((t) => t.kind === 'main' && t.reference_kind === 'natural')!;
    const f = manifest.features.find((x) => x.id === main.feature)!;
    assert.equal(one.features[f.id].n_pairs, 1);
    assert.equal(f.queries.max[0], main.query_images[main.answer]);
    assert.equal(one.features[f.id].p, one.trials[main.id]);
  });

  it('the CLI names a missing build, an unknown layer and an observer without its tensor', () => {
    const cli = (...args: string[]) => spawnSync(process.execPath, [join(root, 'bin/legible.mjs'), 'predict', ...args], { encoding: 'utf8' });
    const empty = mkdtempSync(join(tmpdir(), 'legible-predict-empty-'));
    try {
      const demo = loadStudy('demo');
      writeFileSync(join(empty, 'study.yaml'), readFileSync(demo.file, 'utf8').replace('onnx: model.onnx', `onnx: ${demo.paths.model}`).replace('images: data/fashion-mnist', `images: ${demo.paths.images}`));
      const noBuild = cli(join(empty, 'study.yaml'));
      assert.equal(noBuild.status, 1);
      assert.match(noBuild.stderr, /no stimuli built for demo .*run `legible stimuli demo` first/);
      assert.ok(dir && existsSync(join(dir, 'study.yaml')));
      const badLayer = cli(join(dir, 'study.yaml'), '--observer-layer', 'block9');
      assert.equal(badLayer.status, 1);
      assert.match(badLayer.stderr, /--observer-layer "block9": the study has no layer .*layers: block2, block3/);
      const noPairs = cli(join(dir, 'study.yaml'), '--pairs', '2.5');
      assert.equal(noPairs.status, 2);
      assert.match(noPairs.stderr, /--pairs expects a whole number ≥ 1, got "2\.5"/);
      const noTensor = cli(join(dir, 'study.yaml'), '--observer', demo.paths.model);
      assert.equal(noTensor.status, 1);
      assert.match(noTensor.stderr, /needs --observer-layer TENSOR/);
      const ok = cli(join(dir, 'study.yaml'), '--observer', demo.paths.model, '--observer-layer', 'block2', '--observer-input', 'size=28,resize=none,channels=gray,mean=0.286,std=0.353', '--json');
      assert.equal(ok.status, 0, ok.stderr);
      const out = JSON.parse(ok.stdout) as { observer: string; weak_proxy: boolean };
      assert.equal(out.weak_proxy, false);
      assert.equal(out.observer, 'model.onnx:block2');
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });
});
