import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseStudy, rng, type Study } from '@legible/studies';
import { spawnSync } from 'node:child_process';
import { fitNmf as fitNmfOrt, halsRows, NMF_ZERO, NmfEncoder, nmfGram, randomInit } from '../src/nmf.ts';
import { TORCH_PYTHON } from './torch-ref.ts';
import { fitNmf, nmfCodes } from './reference-nmf.ts';
import { checkSplitSizes, exemplarsOf, pickFeatures, rankContext, trialsOf, type FeatureColumn } from '../src/exemplars.ts';

/** Why the SciPy comparison cannot run here (false where it can). */
function scipyMissing(): string | false {
  const r = spawnSync(TORCH_PYTHON, ['-c', 'import scipy.optimize'], { encoding: 'utf8' });
  return r.status === 0 ? false : `no SciPy in ${TORCH_PYTHON}`;
}

/** A non-negative n × c matrix of exact rank k, and its factors. */
function lowRank(n: number, c: number, k: number, seed: number) {
  const r = rng(seed);
  const U = Float64Array.from({ length: n * k }, () => r.next());
  // Sparse-ish, well-separated parts, as NMF finds them.
  const W = Float64Array.from({ length: k * c }, (_, i) => (Math.floor(i / c) === (i % c) % k ? 1 + r.next() : 0.05 * r.next()));
  const A = new Float64Array(n * c);
  for (let i = 0; i < n; i++) for (let j = 0; j < c; j++) for (let q = 0; q < k; q++) A[i * c + j] += U[i * k + q] * W[q * c + j];
  return { A, U, W };
}

describe('NMF reference (multiplicative updates in float64)', () => {
  it('factorises an exactly low-rank non-negative matrix to a small error', () => {
    const { A } = lowRank(300, 24, 4, 1);
    const model = fitNmf(A, 300, 24, 4, { maxIter: 2000, tol: 1e-7, seed: 3 });
    assert.ok(model.relativeError < 0.02, `relative error ${model.relativeError}`);
    assert.ok(model.W.every((v) => v >= 0) && model.U.every((v) => v >= 0), 'factors must be non-negative');
    // Rows of W have unit norm and are ordered by usage.
    for (let j = 0; j < 4; j++) {
      const norm = Math.hypot(...model.W.subarray(j * 24, j * 24 + 24));
      assert.ok(Math.abs(norm - 1) < 1e-9);
    }
    const usage = [0, 1, 2, 3].map((j) => model.U.filter((_, i) => i % 4 === j).reduce((a, b) => a + b, 0));
    assert.deepEqual(usage.slice().sort((a, b) => b - a), usage);
  });

  it('is deterministic for a seed, and stops early at the tolerance', () => {
    const { A } = lowRank(100, 12, 3, 2);
    const a = fitNmf(A, 100, 12, 3, { maxIter: 500, tol: 1e-3, seed: 9 });
    const b = fitNmf(A, 100, 12, 3, { maxIter: 500, tol: 1e-3, seed: 9 });
    assert.deepEqual(a.W, b.W);
    assert.ok(a.converged && a.iterations < 500);
  });

  it('recovers the codes of new rows with W fixed', () => {
    const { A } = lowRank(400, 16, 3, 4);
    const model = fitNmf(A, 400, 16, 3, { maxIter: 3000, tol: 1e-9, seed: 1 });
    const codes = nmfCodes(Float32Array.from(A), 400, 16, model.W, 3, 500);
    // Codes reconstruct the rows about as well as the fitted U does.
    let err = 0;
    let norm = 0;
    for (let i = 0; i < 400; i++) {
      for (let j = 0; j < 16; j++) {
        let v = 0;
        for (let q = 0; q < 3; q++) v += codes[i * 3 + q] * model.W[q * 16 + j];
        err += (v - A[i * 16 + j]) ** 2;
        norm += A[i * 16 + j] ** 2;
      }
    }
    assert.ok(Math.sqrt(err / norm) < 0.03, `code reconstruction error ${Math.sqrt(err / norm)}`);
  });
});

describe('NMF on onnxruntime (src/nmf.ts)', () => {
  it('MU from the same start follows the float64 reference, iterate for iterate', async () => {
    const { A } = lowRank(200, 16, 3, 5);
    const A32 = Float32Array.from(A);
    const init = randomInit(A32, 200, 16, 3, 11);
    const ort = await fitNmfOrt(A32, 200, 16, { k: 3, maxIter: 50, tol: 0, seed: 0, solver: 'mu', init });
    const ref = fitNmf(A, 200, 16, 3, { maxIter: 50, tol: 0, seed: 0, init });
    assert.equal(ort.iterations, 50);
    let diff = 0;
    for (let i = 0; i < ref.W.length; i++) diff = Math.max(diff, Math.abs(ort.W[i] - ref.W[i]));
    assert.ok(diff < 1e-3, `max |ΔW| = ${diff}`);
    assert.ok(Math.abs(ort.relativeError - ref.relativeError) < 1e-4, `${ort.relativeError} vs ${ref.relativeError}`);
  });

  it('HALS fits an exactly low-rank matrix closely and beats MU at equal iterations', async () => {
    const { A } = lowRank(400, 24, 4, 6);
    const A32 = Float32Array.from(A);
    const init = randomInit(A32, 400, 24, 4, 3);
    const hals = await fitNmfOrt(A32, 400, 24, { k: 4, maxIter: 100, tol: 0, seed: 0, solver: 'hals', init });
    const mu = await fitNmfOrt(A32, 400, 24, { k: 4, maxIter: 100, tol: 0, seed: 0, solver: 'mu', init });
    assert.ok(hals.relativeError < 0.01, `hals relative error ${hals.relativeError}`);
    assert.ok(hals.relativeError < mu.relativeError, `hals ${hals.relativeError} ≥ mu ${mu.relativeError}`);
    assert.ok(hals.W.every((v) => v >= 0) && hals.U.every((v) => v >= 0));
    // The error history only goes down.
    for (let i = 1; i < hals.history.length; i++) assert.ok(hals.history[i].error <= hals.history[i - 1].error * (1 + 1e-6));
  });

  it('one HALS sweep over rows is the classic column-by-column update, from a given or a computed gradient', () => {
    const n = 60;
    const k = 5;
    const r = rng(21);
    // Codes with zeros (held at the floor) and a symmetric positive-definite W·Wᵀ.
    const U0 = Float32Array.from({ length: n * k }, () => (r.next() < 0.3 ? NMF_ZERO : r.next()));
    const Wm = Float64Array.from({ length: k * 9 }, () => r.next());
    const G = new Float64Array(k * k);
    for (let a = 0; a < k; a++) for (let b = 0; b < k; b++) for (let q = 0; q < 9; q++) G[a * k + b] += Wm[a * 9 + q] * Wm[b * 9 + q];
    const AWt = Float32Array.from({ length: n * k }, () => r.next() * 3 - 0.5);
    // Classic HALS (Cichocki & Phan), one column at a time, in float64.
    const classic = Float64Array.from(U0);
    for (let j = 0; j < k; j++)
      for (let i = 0; i < n; i++) {
        let s = 0;
        for (let l = 0; l < k; l++) s += classic[i * k + l] * G[l * k + j];
        classic[i * k + j] = Math.max(NMF_ZERO, classic[i * k + j] + (AWt[i * k + j] - s) / G[j * k + j]);
      }
    const computed = Float32Array.from(U0);
    halsRows(computed, AWt, G, n, k, 1, 0);
    const grad = new Float32Array(n * k);
    for (let i = 0; i < n; i++)
      for (let j = 0; j < k; j++) {
        let s = -AWt[i * k + j];
        for (let l = 0; l < k; l++) s += U0[i * k + l] * G[l * k + j];
        grad[i * k + j] = s;
      }
    const given = Float32Array.from(U0);
    halsRows(given, AWt, G, n, k, 1, 0, grad);
    for (let i = 0; i < n * k; i++) {
      assert.ok(Math.abs(computed[i] - classic[i]) <= 1e-5 * (1 + Math.abs(classic[i])), `computed gradient: U[${i}] ${computed[i]} vs ${classic[i]}`);
      assert.ok(Math.abs(given[i] - classic[i]) <= 1e-5 * (1 + Math.abs(classic[i])), `given gradient: U[${i}] ${given[i]} vs ${classic[i]}`);
      assert.ok(given[i] >= NMF_ZERO * (1 - 1e-6));
    }
    // More sweeps solve each row's non-negative least squares: the row's objective does not rise.
    const objective = (U: ArrayLike<number>) => {
      let f = 0;
      for (let i = 0; i < n; i++)
        for (let a = 0; a < k; a++) {
          f -= 2 * AWt[i * k + a] * U[i * k + a];
          for (let b = 0; b < k; b++) f += U[i * k + a] * G[a * k + b] * U[i * k + b];
        }
      return f;
    };
    const many = Float32Array.from(given);
    halsRows(many, AWt, G, n, k, 50, 0);
    assert.ok(objective(many) <= objective(given) + 1e-6, `${objective(many)} > ${objective(given)}`);
  });

  it('accelerated HALS (several sweeps per pair of products) fits the low-rank matrix too', async () => {
    const { A } = lowRank(400, 24, 4, 6);
    const A32 = Float32Array.from(A);
    const init = randomInit(A32, 400, 24, 4, 3);
    const fit = await fitNmfOrt(A32, 400, 24, { k: 4, maxIter: 100, tol: 0, seed: 0, init, sweeps: { U: 4, W: 4 } });
    assert.ok(fit.relativeError < 0.01, `relative error ${fit.relativeError}`);
    for (let i = 1; i < fit.history.length; i++) assert.ok(fit.history[i].error <= fit.history[i - 1].error * (1 + 1e-6));
  });

  it('stops at the tolerance, is deterministic for a seed, and reports where it ran', async () => {
    const { A } = lowRank(150, 12, 3, 7);
    const A32 = Float32Array.from(A);
    const a = await fitNmfOrt(A32, 150, 12, { k: 3, maxIter: 1000, tol: 1e-3, seed: 4 });
    const b = await fitNmfOrt(A32, 150, 12, { k: 3, maxIter: 1000, tol: 1e-3, seed: 4 });
    assert.ok(a.converged && a.iterations < 1000);
    assert.deepEqual(a.W, b.W);
    assert.equal(a.device, 'cpu');
  });

  it('encodes new rows at the exact non-negative least-squares optimum, also with nearly parallel concepts', async () => {
    // Concepts with cosines of about 0.999 (as NMF finds on deep layers: ResNet-50's layer3 at k = 4
    // gave 0.9988 and a WWᵀ with condition number 5,300), rows built from them with some codes at 0
    // and noise: the optimum has zeros and a long, flat valley.
    const r = rng(31);
    const k = 5;
    const c = 48;
    const W = nearlyParallel(r, k, c, 0.04, 0.01);
    const n = 40;
    const rows = new Float32Array(n * c);
    for (let i = 0; i < n; i++) {
      const u = Array.from({ length: k }, () => (r.next() < 0.3 ? 0 : 10 * r.next()));
      for (let q = 0; q < c; q++) rows[i * c + q] = Math.max(0, u.reduce((s, uj, j) => s + uj * W[j * c + q], 0) + 0.05 * r.normal());
    }
    const encoder = await NmfEncoder.create(W, k, c);
    const codes = await encoder.encode(rows, n);
    const G = nmfGram(W, k, c);
    let zeros = 0;
    for (let i = 0; i < n; i++) {
      // KKT in float64: the gradient G·u − W·a is 0 where u > 0 and ≥ 0 where u = 0 (to 1e-6 of W·a).
      const b = Array.from({ length: k }, (_, j) => rows.subarray(i * c, (i + 1) * c).reduce((s, v, q) => s + v * W[j * c + q], 0));
      const scale = Math.max(...b.map(Math.abs));
      for (let j = 0; j < k; j++) {
        const u = codes[i * k + j];
        let g = -b[j];
        for (let l = 0; l < k; l++) g += G[j * k + l] * (codes[i * k + l] <= NMF_ZERO ? 0 : codes[i * k + l]);
        assert.ok(u >= NMF_ZERO, `row ${i}: code ${j} ${u} below the floor`);
        if (u <= NMF_ZERO) {
          zeros++;
          assert.ok(g >= -1e-6 * scale, `row ${i}: code ${j} held at 0 though the gradient ${g} says it should grow`);
        } else assert.ok(Math.abs(g) <= 1e-6 * scale, `row ${i}: code ${j} = ${u} is not at the optimum (gradient ${g}, scale ${scale})`);
      }
    }
    assert.ok(zeros > 0, 'some codes at 0 (the constraint binds)');
    // 200 HALS sweeps from the clipped projection — the earlier encoder — stop far from that optimum here.
    const AWt = Float32Array.from({ length: n * k }, (_, x) => rows.subarray(Math.floor(x / k) * c, Math.floor(x / k) * c + c).reduce((s, v, q) => s + v * W[(x % k) * c + q], 0));
    const hals = Float32Array.from(AWt, (v, x) => Math.max(NMF_ZERO, v / G[(x % k) * (k + 1)]));
    halsRows(hals, AWt, G, n, k, 200, 0);
    let off = 0;
    for (let x = 0; x < n * k; x++) off = Math.max(off, Math.abs(hals[x] - codes[x]) / Math.max(codes[x], 1));
    assert.ok(off > 1e-3, `HALS after 200 sweeps is within ${off} of the optimum: the case is not ill-conditioned enough to test`);
  });

  it('encodes as scipy.optimize.nnls does (where Python with SciPy is installed)', { skip: scipyMissing() }, async () => {
    const r = rng(32);
    const k = 6;
    const c = 40;
    const W = nearlyParallel(r, k, c, 0.05, 0.02);
    const n = 30;
    const rows = Float32Array.from({ length: n * c }, () => 5 * r.next());
    const codes = await (await NmfEncoder.create(W, k, c)).encode(rows, n);
    const script = 'import json,sys\nimport numpy as np\nfrom scipy.optimize import nnls\nd=json.load(sys.stdin)\nW=np.array(d["W"],dtype=np.float64).reshape(d["k"],d["c"])\nA=np.array(d["A"],dtype=np.float64).reshape(-1,d["c"])\nprint(json.dumps([nnls(W.T,a,maxiter=10000)[0].tolist() for a in A]))';
    const out = spawnSync(TORCH_PYTHON, ['-c', script], { input: JSON.stringify({ W: Array.from(W), A: Array.from(rows), k, c }), encoding: 'utf8' });
    assert.equal(out.status, 0, out.stderr);
    const ref = (JSON.parse(out.stdout) as number[][]).flat();
    const scale = Math.max(...ref);
    for (let x = 0; x < n * k; x++) {
      const u = codes[x] <= NMF_ZERO ? 0 : codes[x];
      assert.ok(Math.abs(u - ref[x]) <= 1e-5 * Math.max(Math.abs(ref[x]), 1e-3 * scale), `code ${x}: ${u} vs scipy ${ref[x]}`);
    }
  });

  it('encodes new rows with W fixed as well as the reference non-negative least squares', async () => {
    const { A } = lowRank(300, 16, 3, 8);
    const A32 = Float32Array.from(A);
    const fit = await fitNmfOrt(A32, 300, 16, { k: 3, maxIter: 500, tol: 1e-7, seed: 1 });
    const encoder = await NmfEncoder.create(fit.W, 3, 16);
    const codes = await encoder.encode(A32, 300);
    await encoder.release();
    const reference = nmfCodes(A32, 300, 16, Float64Array.from(fit.W), 3, 2000);
    const residual = (U: ArrayLike<number>) => {
      let err = 0;
      for (let i = 0; i < 300; i++)
        for (let j = 0; j < 16; j++) {
          let v = 0;
          for (let q = 0; q < 3; q++) v += U[i * 3 + q] * fit.W[q * 16 + j];
          err += (v - A[i * 16 + j]) ** 2;
        }
      return Math.sqrt(err);
    };
    assert.ok(residual(codes) <= residual(reference) * 1.001 + 1e-6, `encoder ${residual(codes)} vs reference ${residual(reference)}`);
    assert.ok(codes.every((v) => v >= 0));
  });
});

const baseStudy = (overrides: string = ''): Study => {
  const text = `
id: t
title: T
model:
  onnx: m.onnx
  input: { size: 28, channels: gray, mean: [0.5], std: [0.5] }
  layers: [{ name: conv, tensor: conv }]
dataset: { images: d }
bases: [{ kind: channels }]
features: { select: random, count: 2, seed: 5 }
design: { trials_per_participant: 4 }
text: { consent: c, instructions: i }
${overrides}`;
  const parsed = parseStudy(text);
  assert.deepEqual(parsed.problems, []);
  return parsed.study!;
};

describe('features, exemplars and trials', () => {
  const n = 60;
  const ids = Array.from({ length: n }, (_, i) => `img/${String(i).padStart(3, '0')}.png`);
  // Feature 0 rises with the image index; feature 1 falls; feature 2 is dead (constant).
  const columns: FeatureColumn[] = [
    { layer: 'conv', basis: 'channels', index: 0, values: Float32Array.from(ids, (_, i) => i) },
    { layer: 'conv', basis: 'channels', index: 1, values: Float32Array.from(ids, (_, i) => n - i) },
    { layer: 'conv', basis: 'channels', index: 2, values: new Float32Array(n).fill(0.5) },
  ];
  const refRows = ids.map((_, i) => i).filter((i) => i % 3 !== 0);
  const queryRows = ids.map((_, i) => i).filter((i) => i % 3 === 0);

  const pick = (study: Study) =>
    pickFeatures({
      ctx: rankContext(study, ids, refRows, queryRows),
      layer: 'conv',
      basis: 'channels',
      features: columns.length,
      constant: (i) => (i === 2 ? 0.5 : null),
      load: (wanted) => wanted.map((i) => columns[i]),
      spareCount: 0,
    });

  it('leaves out dead features and samples the rest by seed', async () => {
    const study = baseStudy();
    const chosen = await pick(study);
    assert.deepEqual(chosen.selected.map((c) => c.column.index), [0, 1]);
    assert.deepEqual(chosen.rejected.map((r) => [r.id, r.reason]), [['conv/channels/2', 'constant']]);
    await assert.rejects(pick({ ...study, features: { ...study.features, count: 3 } }), /only 2 usable channels features \(1 are constant\)/);
  });

  it('takes the top and bottom of the reference split, queries from the held-out split', () => {
    const study = baseStudy();
    const ex = exemplarsOf(columns[0], rankContext(study, ids, refRows, queryRows));
    assert.equal(ex.max.length, 9);
    assert.equal(ex.max[0], ids[59]); // highest reference row
    assert.equal(ex.min[0], ids[1]); // lowest reference row (0 is a query row)
    assert.equal(ex.queries.max[0], ids[57]); // highest query row
    assert.equal(ex.queries.min[0], ids[0]);
    const refs = new Set([...ex.min, ...ex.max]);
    for (const q of [...ex.queries.min, ...ex.queries.max]) assert.ok(!refs.has(q), 'a query is also a reference');
  });

  it('puts percentile queries at the percentile, not the extreme', () => {
    const study = baseStudy('queries: { difficulty: p85 }');
    const ex = exemplarsOf(columns[0], rankContext(study, ids, refRows, queryRows));
    // 20 query rows (0, 3, …, 57): the 85th percentile from the top is 3 positions down.
    assert.equal(ex.queries.max[0], ids[57 - 3 * 3]);
    assert.equal(ex.queries.min[0], ids[0 + 3 * 3]);
  });

  it('makes main and catch trials with the answer key on the max query, in a seeded order', () => {
    const study = baseStudy();
    const ex = exemplarsOf(columns[0], rankContext(study, ids, refRows, queryRows));
    const trials = trialsOf('conv/channels/0', ex, ['natural'], 1);
    const main = trials.find((t) => t.kind === 'main')!;
    assert.equal(main.queries[main.answer], ex.queries.max[0]);
    assert.equal(main.queries[1 - main.answer], ex.queries.min[0]);
    const katch = trials.find((t) => t.kind === 'catch')!;
    assert.ok(ex.max.includes(katch.queries[katch.answer]), 'catch answer is a max reference');
    assert.ok(ex.min.includes(katch.queries[1 - katch.answer]), 'catch foil is a min reference');
    assert.deepEqual(trialsOf('conv/channels/0', ex, ['natural'], 1), trials);
    // Over many features the answer is not always in the same position.
    const answers = new Set(Array.from({ length: 20 }, (_, i) => trialsOf(`conv/channels/${i}`, ex, ['natural'], 1)[0].answer));
    assert.equal(answers.size, 2);
  });

  it('says how many images are needed when the data set is too small', () => {
    assert.throws(() => checkSplitSizes(baseStudy(), 10, 5, 15), /Needs 18 reference images \(2 × references.per_side\), but the reference split has 10/);
    assert.throws(() => checkSplitSizes(baseStudy('queries: { difficulty: p95 }'), 100, 20, 120), /42 held-out images for queries at difficulty p95/);
    checkSplitSizes(baseStudy(), 18, 2, 20);
  });
});

/** k concepts of c channels that are all close to one random direction: each entry scaled by 1 + spread·N(0,1), plus lift·U(0,1). */
function nearlyParallel(r: ReturnType<typeof rng>, k: number, c: number, spread: number, lift: number): Float32Array {
  const base = Float64Array.from({ length: c }, () => r.next());
  return Float32Array.from({ length: k * c }, (_, i) => base[i % c] * (1 + spread * r.normal()) + lift * r.next());
}
