// Parameter gradients and Adam: least squares to its closed-form optimum, the demo model's
// parameter gradients against finite differences and a few training steps, and the TopK SAE.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import * as ort from 'onnxruntime-node';
import { Rng } from '@legible/studies/random';
import { makeGraph, makeModel, node, tensorInfo } from '../src/onnx/graph.ts';
import { DataType, decodeModel, encodeModel, float32Tensor, tensorToFloat32 } from '../src/onnx/proto.ts';
import { buildGradientModel } from '../src/grad/vjp.ts';
import { Adam } from '../src/train/adam.ts';
import { parameterNames, withCrossEntropy } from '../src/train/loss.ts';
import { trainTopKSae } from '../src/train/sae.ts';
import { addTaps } from '../src/onnx/taps.ts';
import { readFashionMnist } from '../demo-model/fashion-mnist.ts';
import { ROOT } from './torch-ref.ts';

const DEMO = join(ROOT, 'studies/demo/model.onnx');

describe('Adam', () => {
  it('takes the textbook first steps: −lr·sign(g), then the bias-corrected moments', () => {
    const p = { w: Float32Array.from([1, -2]) };
    const adam = new Adam(p, { lr: 0.1 });
    adam.step({ w: [3, -0.5] });
    assert.ok(Math.abs(p.w[0] - 0.9) < 1e-6 && Math.abs(p.w[1] + 1.9) < 1e-6, `step 1: ${p.w}`);
    adam.step({ w: [1, -0.5] });
    // m̂ = (0.9·0.1·3 + 0.1·1)/(1 − 0.81), v̂ = (0.999·0.001·9 + 0.001·1)/(1 − 0.998001).
    const m = (0.09 * 3 + 0.1) / 0.19;
    const v = (0.000999 * 9 + 0.001) / 0.001999;
    assert.ok(Math.abs(p.w[0] - (0.9 - (0.1 * m) / Math.sqrt(v))) < 1e-6);
    const up = { w: Float32Array.from([0]) };
    new Adam(up, { lr: 0.5, maximize: true }).step({ w: [2] });
    assert.ok(Math.abs(up.w[0] - 0.5) < 1e-6, 'maximize climbs');
  });

  it('fits least squares through the gradient engine to the normal-equations solution', async () => {
    const rng = new Rng(3);
    const [n, k] = [64, 4];
    const X = Float32Array.from({ length: n * k }, () => rng.normal());
    const truth = [0.5, -1, 2, 0.25];
    const t = Float32Array.from({ length: n }, (_, i) => truth.reduce((s, w, j) => s + w * X[i * k + j], 0) + 0.1 * rng.normal());
    const model = makeModel({
      graph: makeGraph({
        name: 'lsq',
        inputs: [tensorInfo('X', DataType.FLOAT, [n, k]), tensorInfo('t', DataType.FLOAT, [n])],
        outputs: [tensorInfo('loss', DataType.FLOAT, [])],
        initializers: [float32Tensor('w', [k], new Float32Array(k))],
        nodes: [node('MatMul', ['X', 'w'], ['y']), node('Sub', ['y', 't'], ['r']), node('Mul', ['r', 'r'], ['r2']), node('ReduceMean', ['r2'], ['loss'], [])],
      }),
    });
    const grad = await buildGradientModel(model, { wrt: ['w'], objective: { tensor: 'loss', kind: 'sum' }, params: 'inputs' });
    const session = await ort.InferenceSession.create(encodeModel(grad.model));
    const w = new Float32Array(k);
    const adam = new Adam({ w }, { lr: 0.05 });
    for (let s = 0; s < 600; s++) {
      const out = await session.run({ X: new ort.Tensor('float32', X, [n, k]), t: new ort.Tensor('float32', t, [n]), w: new ort.Tensor('float32', w, [k]) });
      adam.step({ w: out[grad.grads.w].data as Float32Array });
    }
    // Normal equations XᵀX w = Xᵀt, solved by Gaussian elimination in double.
    const A = Array.from({ length: k }, (_, a) => [...Array.from({ length: k }, (_, b) => X.reduce((s, _, i) => (i < n ? s + X[i * k + a] * X[i * k + b] : s), 0)), X.reduce((s, _, i) => (i < n ? s + X[i * k + a] * t[i] : s), 0)]);
    for (let c = 0; c < k; c++)
      for (let r = 0; r < k; r++)
        if (r !== c) {
          const f = A[r][c] / A[c][c];
          for (let j = c; j <= k; j++) A[r][j] -= f * A[c][j];
        }
    const exact = A.map((row, i) => row[k] / row[i]);
    exact.forEach((e, i) => assert.ok(Math.abs(w[i] - e) < 2e-3, `w[${i}] = ${w[i]}, least squares ${e}`));
  });
});

describe('parameter gradients of the demo model', { skip: !existsSync(DEMO) && 'studies/demo/model.onnx not built' }, () => {
  const data = () => readFashionMnist().test.filter((_, i) => i % 40 === 0);
  const batchOf = (imgs: { pixels: Uint8Array; label: number }[]) => ({
    x: Float32Array.from(imgs.flatMap((img) => Array.from(img.pixels, (p) => (p / 255 - 0.286) / 0.353))),
    y: BigInt64Array.from(imgs.map((img) => BigInt(img.label))),
  });

  it('match central differences for conv, bias and fully connected weights', async () => {
    const model = withCrossEntropy(decodeModel(readFileSync(DEMO)));
    const params = parameterNames(model);
    assert.deepEqual(params.sort(), ['conv1.bias', 'conv1.weight', 'conv2.bias', 'conv2.weight', 'conv3.bias', 'conv3.weight', 'fc.bias', 'fc.weight']);
    const grad = await buildGradientModel(model, { wrt: params, objective: { tensor: 'loss', kind: 'sum' }, params: 'inputs' });
    const session = await ort.InferenceSession.create(encodeModel(grad.model));
    const { x, y } = batchOf(data().slice(0, 32));
    const values = Object.fromEntries(grad.params.map((t) => [t.name!, tensorToFloat32(t)]));
    const dims = Object.fromEntries(grad.params.map((t) => [t.name!, (t.dims ?? []).map(Number)]));
    const run = async (override: Record<string, Float32Array> = {}) => {
      const feeds: Record<string, ort.Tensor> = { image: new ort.Tensor('float32', x, [32, 1, 28, 28]), labels: new ort.Tensor('int64', y, [32]) };
      for (const name of params) feeds[name] = new ort.Tensor('float32', override[name] ?? values[name], dims[name]);
      return session.run(feeds);
    };
    const out = await run();
    const rng = new Rng(11);
    for (const name of params) {
      const g = out[grad.grads[name]].data as Float32Array;
      // Five coordinates per tensor by central differences. The loss is piecewise smooth (ReLU, MaxPool):
      // a small step (1e-3) keeps most kinks uncrossed; float32 round-off of the loss then allows ~3e-4.
      const picks = Array.from({ length: 5 }, () => rng.int(g.length));
      for (const i of picks) {
        const at = async (h: number) => {
          const p = Float32Array.from(values[name]);
          p[i] += h;
          const plus = ((await run({ [name]: p }))[grad.objective].data as Float32Array)[0];
          p[i] -= 2 * h;
          const minus = ((await run({ [name]: p }))[grad.objective].data as Float32Array)[0];
          return (plus - minus) / (2 * h);
        };
        const fd = await at(1e-3);
        assert.ok(Math.abs(fd - g[i]) <= 1e-2 * Math.abs(fd) + 3e-4, `${name}[${i}]: analytic ${g[i]}, numeric ${fd}`);
      }
    }
  });

  it('trains: Adam on every parameter lowers the loss of a re-initialised classifier head', async () => {
    const model = withCrossEntropy(decodeModel(readFileSync(DEMO)));
    const params = parameterNames(model);
    const grad = await buildGradientModel(model, { wrt: params, objective: { tensor: 'loss', kind: 'sum' }, params: 'inputs' });
    const session = await ort.InferenceSession.create(encodeModel(grad.model));
    const values = Object.fromEntries(grad.params.map((t) => [t.name!, tensorToFloat32(t)]));
    const dims = Object.fromEntries(grad.params.map((t) => [t.name!, (t.dims ?? []).map(Number)]));
    const rng = new Rng(5);
    values['fc.weight'] = values['fc.weight'].map(() => 0.1 * rng.normal());
    values['fc.bias'].fill(0);
    const { x, y } = batchOf(data().slice(0, 128));
    const adam = new Adam(values, { lr: 3e-3 });
    const losses: number[] = [];
    for (let s = 0; s < 40; s++) {
      const feeds: Record<string, ort.Tensor> = { image: new ort.Tensor('float32', x, [128, 1, 28, 28]), labels: new ort.Tensor('int64', y, [128]) };
      for (const name of params) feeds[name] = new ort.Tensor('float32', values[name], dims[name]);
      const out = await session.run(feeds);
      losses.push((out[grad.objective].data as Float32Array)[0]);
      adam.step(Object.fromEntries(params.map((name) => [name, out[grad.grads[name]].data as Float32Array])));
    }
    assert.ok(losses[0] > 1.5, `a random head starts near ln 10: ${losses[0]}`);
    assert.ok(losses.at(-1)! < 0.5 * losses[0], `loss ${losses[0].toFixed(3)} → ${losses.at(-1)!.toFixed(3)}`);
  });
});

/** Rows drawn from a planted sparse dictionary: each row k random atoms with positive weights, plus noise. */
function planted(n: number, c: number, atoms: number, k: number, seed: number) {
  const r = new Rng(seed);
  const dict = Float32Array.from({ length: atoms * c }, () => r.normal());
  for (let j = 0; j < atoms; j++) {
    let s = 0;
    for (let i = 0; i < c; i++) s += dict[j * c + i] ** 2;
    for (let i = 0; i < c; i++) dict[j * c + i] /= Math.sqrt(s);
  }
  const acts = new Float32Array(n * c);
  for (let i = 0; i < n; i++)
    for (let t = 0; t < k; t++) {
      const j = r.int(atoms);
      const a = 1 + 2 * r.float();
      for (let q = 0; q < c; q++) acts[i * c + q] += a * dict[j * c + q];
    }
  for (let i = 0; i < acts.length; i++) acts[i] += 0.01 * r.normal() + 0.5;
  return { dict, acts };
}

describe('TopK sparse autoencoder', () => {
  it('recovers a planted sparse dictionary, with low unexplained variance and no dead latents', async () => {
    const [n, c, atoms, k] = [3000, 24, 48, 3];
    const { dict, acts } = planted(n, c, atoms, k, 1);
    const sae = await trainTopKSae(acts, n, c, { dictionary: atoms, k, epochs: 15, seed: 1, batchSize: 128, lr: 4e-3 });
    try {
      assert.ok(sae.info.fvu < 0.1, `fvu ${sae.info.fvu}`);
      assert.ok(sae.info.history.at(-1)! < sae.info.history[0], 'training loss falls');
      assert.equal(sae.info.dead, 0);
      let recovered = 0;
      for (let j = 0; j < atoms; j++) {
        let best = 0;
        for (let m = 0; m < atoms; m++) {
          let s = 0;
          for (let q = 0; q < c; q++) s += dict[j * c + q] * sae.decoderDirections[m * c + q];
          best = Math.max(best, s);
        }
        if (best > 0.9) recovered++;
      }
      assert.ok(recovered >= 0.9 * atoms, `${recovered} of ${atoms} planted directions recovered (cos > 0.9)`);
      // Codes: k non-negative per row, in data units: x̂ = b_pre + Σ code_j d_j reproduces the fvu.
      const codes = await sae.encode(acts.subarray(0, 100 * c), 100);
      let sq = 0;
      for (let i = 0; i < 100; i++) {
        const row = codes.subarray(i * atoms, (i + 1) * atoms);
        assert.ok(row.filter((v) => v !== 0).length <= k && row.every((v) => v >= 0));
        for (let q = 0; q < c; q++) {
          let xh = sae.bias[q];
          for (let j = 0; j < atoms; j++) xh += row[j] * sae.decoderDirections[j * c + q];
          sq += (xh - acts[i * c + q]) ** 2;
        }
      }
      assert.ok(Math.abs(sq / (100 * c) - sae.info.mse) < 0.5 * sae.info.mse + 1e-4, `reconstruction from codes ${sq / (100 * c)} vs reported mse ${sae.info.mse}`);
    } finally {
      await sae.release();
    }
  });

  it('is deterministic for a seed, and another seed gives another dictionary', async () => {
    const { acts } = planted(600, 16, 32, 2, 2);
    const opts = { dictionary: 32, k: 2, epochs: 3, batchSize: 64, threads: 1 };
    const a = await trainTopKSae(acts, 600, 16, { ...opts, seed: 4 });
    const b = await trainTopKSae(acts, 600, 16, { ...opts, seed: 4 });
    const c = await trainTopKSae(acts, 600, 16, { ...opts, seed: 5 });
    try {
      assert.deepEqual(a.decoderDirections, b.decoderDirections);
      assert.deepEqual(await a.encode(acts), await b.encode(acts));
      assert.equal(a.info.mse, b.info.mse);
      assert.notDeepEqual(a.decoderDirections, c.decoderDirections);
    } finally {
      await Promise.all([a.release(), b.release(), c.release()]);
    }
  });

  it('resamples latents an epoch left dead: fewer dead latents on the demo model\'s block3', { skip: !existsSync(DEMO) && 'demo model not built' }, async () => {
    const session = await ort.InferenceSession.create(addTaps(readFileSync(DEMO), ['block3']));
    const imgs = readFashionMnist().train.filter((_, i) => i % 20 === 0);
    const n = imgs.length;
    const x = Float32Array.from(imgs.flatMap((img) => Array.from(img.pixels, (p) => (p / 255 - 0.286) / 0.353)));
    const a = (await session.run({ image: new ort.Tensor('float32', x, [n, 1, 28, 28]) })).block3.data as Float32Array;
    await session.release();
    const acts = new Float32Array(n * 64);
    for (let i = 0; i < n * 64; i++) for (let p = 0; p < 49; p++) acts[i] += a[i * 49 + p] / 49;
    const opts = { dictionary: 128, k: 4, epochs: 10, seed: 1 };
    const plain = await trainTopKSae(acts, n, 64, { ...opts, resample: false });
    const resampled = await trainTopKSae(acts, n, 64, opts);
    try {
      assert.ok(plain.info.dead > 0, `expected dead latents without resampling (got ${plain.info.dead})`);
      assert.ok(resampled.info.resampled.some((v) => v > 0), 'something was resampled');
      assert.ok(resampled.info.dead < plain.info.dead, `${resampled.info.dead} dead with resampling vs ${plain.info.dead} without`);
      assert.ok(resampled.info.fvu < 0.25, `fvu ${resampled.info.fvu}`);
    } finally {
      await Promise.all([plain.release(), resampled.release()]);
    }
  });

  // The zoo's GoogLeNet and EfficientNet-B0 (random torchvision weights) have layer activations of
  // about 1e-9: the SAE diverged there (variance explained about −1e10). Whatever the activations'
  // unit, the fit is the same: few rows (a zoo build's 39), few steps, scales from 1e-9 to 1e6.
  it('trains the same at any activation scale, on little data: variance explained > 0 and directions independent of the unit', async () => {
    const [n, c, atoms, k] = [39, 64, 16, 4];
    const { acts } = planted(n, c, atoms, k, 7);
    const opts = { dictionary: atoms, k, epochs: 3, seed: 3, threads: 1 };
    const unit = await trainTopKSae(acts, n, c, opts);
    try {
      assert.ok(unit.info.fvu < 1, `scale 1: variance explained ${1 - unit.info.fvu}`);
      for (const scale of [1e-9, 1e-4, 1e3, 1e6]) {
        const scaled = await trainTopKSae(acts.map((v) => v * scale), n, c, opts);
        try {
          const ve = 1 - scaled.info.fvu;
          assert.ok(ve > 0 && Math.abs(ve - (1 - unit.info.fvu)) < 1e-3, `scale ${scale}: variance explained ${ve} (at scale 1: ${1 - unit.info.fvu})`);
          let worst = 1;
          for (let j = 0; j < atoms; j++) {
            let dot = 0;
            for (let q = 0; q < c; q++) dot += unit.decoderDirections[j * c + q] * scaled.decoderDirections[j * c + q];
            worst = Math.min(worst, dot);
          }
          assert.ok(worst > 0.999, `scale ${scale}: a decoder direction differs from scale 1's (cosine ${worst})`);
          // Codes are in data units: they scale with the data.
          const [a, b] = [await unit.encode(acts.subarray(0, c), 1), await scaled.encode(acts.subarray(0, c).map((v) => v * scale), 1)];
          for (let j = 0; j < atoms; j++) assert.ok(Math.abs(b[j] - scale * a[j]) <= 1e-3 * scale * (Math.max(...a) + 1e-6), `scale ${scale}: code ${j} is ${b[j]}, not ${scale} × ${a[j]}`);
        } finally {
          await scaled.release();
        }
      }
    } finally {
      await unit.release();
    }
  });

  it('refuses bad input with a clear message', async () => {
    await assert.rejects(trainTopKSae(new Float32Array(10), 2, 5, { dictionary: 4, k: 8 }), /k = 8 must be between 1 and the dictionary size \(4\)/);
    await assert.rejects(trainTopKSae(new Float32Array(9), 2, 5, { dictionary: 4, k: 1 }), /9 values is not 2 rows × 5 channels/);
    await assert.rejects(trainTopKSae(Float32Array.from([0, NaN, 0, 0]), 2, 2, { dictionary: 4, k: 1 }), /row 0 holds NaN/);
  });
});
