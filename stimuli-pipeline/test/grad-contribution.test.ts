// Decision contribution against independent computations: zeroing a channel by editing the weights
// that produce it, and removing a direction by recomputing the (linear) head of the demo model in
// plain loops from the tapped layer.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import * as ort from 'onnxruntime-node';
import { Rng } from '@legible/studies/random';
import { attr, makeGraph, makeModel, node, tensorInfo } from '../src/onnx/graph.ts';
import { DataType, decodeModel, encodeModel, float32Tensor, tensorToFloat32, type ModelProto } from '../src/onnx/proto.ts';
import { addTaps } from '../src/onnx/taps.ts';
import { decisionContribution, dictionaryCodes, type ContributionFeature } from '../src/contribution.ts';
import { trainTopKSae } from '../src/train/sae.ts';
import { readFashionMnist } from '../demo-model/fashion-mnist.ts';
import { ROOT } from './torch-ref.ts';

const DEMO = join(ROOT, 'studies/demo/model.onnx');
const built = existsSync(DEMO);

/** Logit drop and accuracy from baseline and changed logits, computed here. */
function score(base: Float32Array, changed: Float32Array, n: number, K: number, labels: Int32Array) {
  const argmax = (v: Float32Array, i: number) => {
    let b = 0;
    for (let k = 1; k < K; k++) if (v[i * K + k] > v[i * K + b]) b = k;
    return b;
  };
  let drop = 0;
  let correct = 0;
  let baseCorrect = 0;
  for (let i = 0; i < n; i++) {
    drop += base[i * K + labels[i]] - changed[i * K + labels[i]];
    if (argmax(changed, i) === labels[i]) correct++;
    if (argmax(base, i) === labels[i]) baseCorrect++;
  }
  return { logitDrop: drop / n, accuracy: correct / n, accuracyDrop: (baseCorrect - correct) / n };
}

async function logitsOf(model: ModelProto | Uint8Array, x: Float32Array, dims: number[], extra: string[] = []) {
  const s = await ort.InferenceSession.create(model instanceof Uint8Array ? model : encodeModel(model));
  const out = await s.run({ [s.inputNames[0]]: new ort.Tensor('float32', x, dims) });
  await s.release();
  return { logits: out[s.outputNames[0]].data as Float32Array, taps: Object.fromEntries(extra.map((t) => [t, out[t]])) };
}

const close = (a: number, b: number, what: string) => assert.ok(Math.abs(a - b) < 1e-4 + 1e-4 * Math.abs(b), `${what}: ${a} vs ${b}`);

describe('decision contribution on the demo model', { skip: !built && 'demo model not built' }, () => {
  const bytes = built ? readFileSync(DEMO) : new Uint8Array();
  const imgs = built ? readFashionMnist().test.filter((_, i) => i % 25 === 0) : [];
  const n = imgs.length;
  const x = Float32Array.from(imgs.flatMap((img) => Array.from(img.pixels, (p) => (p / 255 - 0.286) / 0.353)));
  const labels = Int32Array.from(imgs.map((img) => img.label));
  const batches = [x.subarray(0, 150 * 784), x.subarray(150 * 784)];

  it('channel removal at block2 matches zeroing the channel through conv2\'s weights', async () => {
    const channels = [0, 5, 12, 31];
    const result = await decisionContribution(bytes, 'block2', channels.map((channel) => ({ channel })), batches, labels, { featureBatch: 3 });
    assert.equal(result.images, n);
    const base = (await logitsOf(bytes, x, [n, 1, 28, 28])).logits;
    for (const [f, channel] of channels.entries()) {
      // block2 = ReLU(conv2): weights 0 and bias −1 make the channel exactly 0 after the ReLU.
      const model = decodeModel(bytes);
      const w = model.graph!.initializer!.find((t) => t.name === 'conv2.weight')!;
      const b = model.graph!.initializer!.find((t) => t.name === 'conv2.bias')!;
      const wv = tensorToFloat32(w);
      const bv = tensorToFloat32(b);
      const per = wv.length / 32;
      wv.fill(0, channel * per, (channel + 1) * per);
      bv[channel] = -1;
      Object.assign(w, float32Tensor(w.name!, w.dims!.map(Number), wv));
      Object.assign(b, float32Tensor(b.name!, b.dims!.map(Number), bv));
      const edited = (await logitsOf(model, x, [n, 1, 28, 28])).logits;
      const want = score(base, edited, n, 10, labels);
      const got = result.features[f];
      close(got.logitDrop, want.logitDrop, `channel ${channel} logit drop`);
      close(got.accuracy, want.accuracy, `channel ${channel} accuracy`);
      close(got.accuracyDrop, want.accuracyDrop, `channel ${channel} accuracy drop`);
    }
    assert.ok(result.features.some((f) => f.logitDrop > 0.05), 'some channel matters');
  });

  it('channel and direction removal at block3 match the head recomputed in plain loops (projection and given codes)', async () => {
    const rng = new Rng(8);
    const dir = Float32Array.from({ length: 64 }, () => Math.abs(rng.normal()));
    // A caller-supplied code: any function of the position's activation vector.
    const codes = (rows: Float32Array, count: number) => Float32Array.from({ length: count }, (_, q) => 0.5 * rows[q * 64 + 3] + 0.1);
    const features: ContributionFeature[] = [{ channel: 9 }, { direction: dir }, { direction: dir, codes }];
    const result = await decisionContribution(bytes, 'block3', features, batches, labels);
    const { logits: base, taps } = await logitsOf(addTaps(bytes, ['block3']), x, [n, 1, 28, 28], ['block3']);
    const A = taps.block3.data as Float32Array;
    const model = decodeModel(bytes);
    const fcW = tensorToFloat32(model.graph!.initializer!.find((t) => t.name === 'fc.weight')!);
    const fcB = tensorToFloat32(model.graph!.initializer!.find((t) => t.name === 'fc.bias')!);
    const norm = dir.reduce((s, v) => s + v * v, 0);
    for (const [f, feature] of features.entries()) {
      const changed = new Float32Array(n * 10);
      for (let i = 0; i < n; i++) {
        // Mean over the 7 × 7 positions of the ablated activation, then the fully connected layer.
        const mean = new Float64Array(64);
        for (let p = 0; p < 49; p++) {
          const a = Array.from({ length: 64 }, (_, c) => A[(i * 64 + c) * 49 + p]);
          let u = 0;
          if ('direction' in feature) u = feature.codes ? 0.5 * a[3] + 0.1 : Math.max(0, a.reduce((s, v, c) => s + v * dir[c], 0)) / norm;
          for (let c = 0; c < 64; c++) mean[c] += ('channel' in feature ? (c === feature.channel ? 0 : a[c]) : a[c] - u * dir[c]) / 49;
        }
        for (let k = 0; k < 10; k++) changed[i * 10 + k] = fcB[k] + mean.reduce((s, v, c) => s + v * fcW[k * 64 + c], 0);
      }
      const want = score(base, changed, n, 10, labels);
      close(result.features[f].logitDrop, want.logitDrop, `feature ${f} logit drop`);
      close(result.features[f].accuracy, want.accuracy, `feature ${f} accuracy`);
    }
  });

  it('SAE latents (codes per position from the trained encoder) match the head recomputed in plain loops', async () => {
    const { taps } = await logitsOf(addTaps(bytes, ['block3']), x, [n, 1, 28, 28], ['block3']);
    const A = taps.block3.data as Float32Array;
    // The SAE is trained on position rows: one 64-channel vector per image and position.
    const rows = new Float32Array(n * 49 * 64);
    for (let i = 0; i < n; i++) for (let c = 0; c < 64; c++) for (let p = 0; p < 49; p++) rows[(i * 49 + p) * 64 + c] = A[(i * 64 + c) * 49 + p];
    const sae = await trainTopKSae(rows, n * 49, 64, { dictionary: 32, k: 4, epochs: 2, seed: 1 });
    try {
      let calls = 0;
      const codes = dictionaryCodes((r, count) => {
        calls++;
        return sae.encode(r, count);
      }, 32);
      const picked = [0, 7, 19];
      const features = picked.map((j) => ({ direction: sae.decoderDirections.slice(j * 64, (j + 1) * 64), codes: codes[j] }));
      const result = await decisionContribution(bytes, 'block3', features, [x], labels);
      assert.equal(calls, 1, 'one encoder call for all features of a batch');
      const all = await sae.encode(rows);
      const model = decodeModel(bytes);
      const fcW = tensorToFloat32(model.graph!.initializer!.find((t) => t.name === 'fc.weight')!);
      const fcB = tensorToFloat32(model.graph!.initializer!.find((t) => t.name === 'fc.bias')!);
      const base = (await logitsOf(bytes, x, [n, 1, 28, 28])).logits;
      for (const [f, j] of picked.entries()) {
        const changed = new Float32Array(n * 10);
        for (let i = 0; i < n; i++) {
          const mean = new Float64Array(64);
          for (let p = 0; p < 49; p++) {
            const u = all[(i * 49 + p) * 32 + j];
            for (let c = 0; c < 64; c++) mean[c] += (A[(i * 64 + c) * 49 + p] - u * sae.decoderDirections[j * 64 + c]) / 49;
          }
          for (let k = 0; k < 10; k++) changed[i * 10 + k] = fcB[k] + mean.reduce((s, v, c) => s + v * fcW[k * 64 + c], 0);
        }
        const want = score(base, changed, n, 10, labels);
        close(result.features[f].logitDrop, want.logitDrop, `latent ${j} logit drop`);
        close(result.features[f].accuracy, want.accuracy, `latent ${j} accuracy`);
      }
    } finally {
      await sae.release();
    }
  });

  it('without labels, scores against the original predictions', async () => {
    const result = await decisionContribution(bytes, 'block3', [{ channel: 1 }, { channel: 2 }], [x]);
    assert.equal(result.labels, 'predicted');
    assert.equal(result.baselineAccuracy, 1);
    for (const f of result.features) assert.ok(Math.abs(f.accuracy + f.accuracyDrop - 1) < 1e-12 && Math.abs(1 - f.accuracy - f.changed) < 1e-12);
  });

  it('says what is wrong', async () => {
    await assert.rejects(decisionContribution(bytes, 'block3', [{ channel: 64 }], [x]), /"block3" has 64 channels, no channel 64/);
    await assert.rejects(decisionContribution(bytes, 'block9', [{ channel: 0 }], [x]), /no tensor "block9"/);
    await assert.rejects(decisionContribution(bytes, 'block3', [{ direction: new Float32Array(5) }], [x]), /needs 64 values, got 5/);
  });
});

describe('decision contribution through a skip connection', () => {
  it('feeds the tensors from before the layer that later nodes read (a residual block), per feature', async () => {
    // x → conv a → relu r ─┬→ conv b (the layer) → relu → add(·, r) → global pool → gemm
    //                       └──────────────────────────────↗
    const rng = new Rng(3);
    const rand = (k: number, s: number) => Float32Array.from({ length: k }, () => s * rng.normal());
    const weights = { a: rand(4 * 2 * 9, 0.5), ab: rand(4, 0.1), b: rand(4 * 4 * 9, 0.3), bb: rand(4, 0.1), fc: rand(3 * 4, 0.7), fb: rand(3, 0.1) };
    const build = (b: Float32Array, bb: Float32Array) =>
      makeModel({
        graph: makeGraph({
          name: 'residual',
          inputs: [tensorInfo('x', DataType.FLOAT, ['N', 2, 6, 6])],
          outputs: [tensorInfo('logits', DataType.FLOAT, ['N', 3])],
          initializers: [float32Tensor('wa', [4, 2, 3, 3], weights.a), float32Tensor('ba', [4], weights.ab), float32Tensor('wb', [4, 4, 3, 3], b), float32Tensor('bb', [4], bb), float32Tensor('fc', [3, 4], weights.fc), float32Tensor('fb', [3], weights.fb)],
          nodes: [
            node('Conv', ['x', 'wa', 'ba'], ['ca'], [attr.ints('pads', [1, 1, 1, 1])]),
            node('Relu', ['ca'], ['r']),
            node('Conv', ['r', 'wb', 'bb'], ['layer'], [attr.ints('pads', [1, 1, 1, 1])]),
            node('Relu', ['layer'], ['lr']),
            node('Add', ['lr', 'r'], ['sum']),
            node('GlobalAveragePool', ['sum'], ['pool']),
            node('Flatten', ['pool'], ['flat']),
            node('Gemm', ['flat', 'fc', 'fb'], ['logits'], [attr.int('transB', 1)]),
          ],
        }),
      });
    const n = 40;
    const x = rand(n * 72, 1);
    const labels = Int32Array.from({ length: n }, () => rng.int(3));
    const bytes = encodeModel(build(weights.b, weights.bb));
    const result = await decisionContribution(bytes, 'layer', [0, 1, 2, 3].map((channel) => ({ channel })), [x.subarray(0, 25 * 72), x.subarray(25 * 72)], labels);
    const base = (await logitsOf(bytes, x, [n, 2, 6, 6])).logits;
    for (let channel = 0; channel < 4; channel++) {
      const wb = Float32Array.from(weights.b);
      const bb = Float32Array.from(weights.bb);
      wb.fill(0, channel * 36, (channel + 1) * 36);
      bb[channel] = 0;
      const want = score(base, (await logitsOf(build(wb, bb), x, [n, 2, 6, 6])).logits, n, 3, labels);
      close(result.features[channel].logitDrop, want.logitDrop, `channel ${channel}`);
      close(result.features[channel].accuracy, want.accuracy, `channel ${channel} accuracy`);
    }
  });
});
