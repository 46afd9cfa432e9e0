import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import { decodeModel } from '../src/onnx/proto.ts';
import { addTaps } from '../src/onnx/taps.ts';
import { paramsFromModel, INPUT_NAME, OUTPUT_NAME } from '../demo-model/export.ts';
import { CLASSES, readFashionMnist, type FashionMnist } from '../demo-model/fashion-mnist.ts';
import { BN_CHANNELS, Im2colConv, inferForward, loadImages, normalisePixel, TRAIN_PARAMS, trainStep, WinogradConv, Workspace } from '../demo-model/net.ts';
import { Rng } from '@legible/studies/random';
import { DEFAULTS, train } from '../demo-model/train.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const ONNX = join(root, 'studies/demo/model.onnx');
const RECORD = join(root, 'studies/demo/model.json');
const built = existsSync(ONNX) && existsSync(RECORD);

let data: FashionMnist;
before(() => {
  data = readFashionMnist();
});

function normalised(images: { pixels: Uint8Array }[]): Float32Array {
  const x = new Float32Array(images.length * 784);
  images.forEach((img, i) => {
    for (let j = 0; j < 784; j++) x[i * 784 + j] = normalisePixel(img.pixels[j]);
  });
  return x;
}

describe('Fashion-MNIST reader', () => {
  it('returns the fixed 60,000 / 10,000 split, 6000 / 1000 per class, 784 grey levels each', () => {
    assert.equal(data.train.length, 60000);
    assert.equal(data.test.length, 10000);
    assert.deepEqual(data.classes, CLASSES);
    for (let c = 0; c < 10; c++) {
      assert.equal(data.train.filter((i) => i.label === c).length, 6000);
      assert.equal(data.test.filter((i) => i.label === c).length, 1000);
    }
    assert.deepEqual([data.train[0].id, data.train[5999].index, data.test[0].index, data.test[9999].id], ['0-00000', 5999, 6000, '9-06999']);
    assert.equal(data.test[123].pixels.length, 784);
    assert.ok(data.test[123].pixels.some((p) => p > 200), 'an image should have bright pixels');
  });
});

describe('demo model: studies/demo/model.onnx', { skip: !built && 'not built yet: node --import tsx stimuli-pipeline/demo-model/train.ts' }, () => {
  const bytes = built ? readFileSync(ONNX) : new Uint8Array();
  const record = built ? JSON.parse(readFileSync(RECORD, 'utf8')) : {};

  it('is small, and model.json describes this exact file', () => {
    assert.ok(statSync(ONNX).size <= 5 * 1024 * 1024);
    assert.equal(record.sha256, createHash('sha256').update(bytes).digest('hex'));
    assert.equal(record.bytes, bytes.length);
    const model = decodeModel(bytes);
    assert.equal(model.graph!.input![0].name, INPUT_NAME);
    assert.deepEqual(model.graph!.output!.map((o) => o.name), [OUTPUT_NAME]);
    assert.deepEqual(
      model.graph!.node!.map((n) => n.op_type),
      ['Conv', 'Relu', 'MaxPool', 'Conv', 'Relu', 'MaxPool', 'Conv', 'Relu', 'GlobalAveragePool', 'Flatten', 'Gemm'],
    );
    assert.deepEqual(model.graph!.node!.filter((n) => n.op_type === 'Relu').map((n) => n.output![0]), ['block1', 'block2', 'block3']);
  });

  it('scores on the 10,000 test images (onnxruntime) what model.json says, and at least 88%', async () => {
    const session = await ort.InferenceSession.create(bytes);
    let correct = 0;
    try {
      for (let s = 0; s < data.test.length; s += 2000) {
        const batch = data.test.slice(s, s + 2000);
        const out = await session.run({ [INPUT_NAME]: new ort.Tensor('float32', normalised(batch), [batch.length, 1, 28, 28]) });
        const logits = out[OUTPUT_NAME].data as Float32Array;
        batch.forEach((img, i) => {
          let best = 0;
          for (let j = 1; j < 10; j++) if (logits[i * 10 + j] > logits[i * 10 + best]) best = j;
          if (best === img.label) correct++;
        });
      }
    } finally {
      await session.release();
    }
    const accuracy = correct / data.test.length;
    assert.ok(Math.abs(accuracy - record.accuracy.test) <= 0.001, `onnxruntime ${accuracy}, model.json ${record.accuracy.test}`);
    assert.ok(accuracy >= 0.88, `test accuracy ${accuracy}`);
  });

  it("agrees with the trainer's TypeScript forward pass, logits and tapped blocks", async () => {
    const params = paramsFromModel(decodeModel(bytes));
    const images = data.test.filter((_, i) => i % 97 === 0).slice(0, 64); // every class
    const B = images.length;
    const ws = new Workspace(B);
    loadImages(ws, Uint8Array.from(images.flatMap((i) => [...i.pixels])), images.map((_, i) => i), null, B);
    const taps = { block1: new Float32Array(B * 16 * 784), block2: new Float32Array(B * 32 * 196), block3: new Float32Array(B * 64 * 49) };
    const ts = inferForward(ws, params, B, taps).slice(0, B * 10);

    const session = await ort.InferenceSession.create(addTaps(bytes, ['block1', 'block2', 'block3']));
    try {
      const out = await session.run({ [INPUT_NAME]: new ort.Tensor('float32', normalised(images), [B, 1, 28, 28]) });
      const diff = (a: Float32Array, b: Float32Array) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);
      assert.ok(diff(ts, out[OUTPUT_NAME].data as Float32Array) < 1e-4, 'logits differ');
      for (const name of ['block1', 'block2', 'block3'] as const) {
        const d = diff(taps[name], out[name].data as Float32Array);
        assert.ok(d < 1e-4, `${name} differs by ${d}`);
      }
      assert.ok(taps.block3.some((v) => v > 0));
    } finally {
      await session.release();
    }
  });
});

describe('trainer', () => {
  it('convolves correctly by im2col and by Winograd: forward, weight and input gradients', () => {
    const rng = new Rng(9);
    for (const [Cin, Cout, H, B] of [[3, 4, 6, 2], [5, 8, 7, 3]]) {
      const X = Float32Array.from({ length: Cin * B * H * H }, () => rng.normal());
      const W = Float32Array.from({ length: Cout * Cin * 9 }, () => rng.normal());
      const dY = Float32Array.from({ length: Cout * B * H * H }, () => rng.normal());
      // Direct definitions over [C][B][H][W] arrays (zero padding of 1).
      const x = (c: number, b: number, y: number, i: number) => (y < 0 || y >= H || i < 0 || i >= H ? 0 : X[((c * B + b) * H + y) * H + i]);
      const Y = new Float32Array(dY.length);
      const dW = new Float32Array(W.length);
      const dX = new Float32Array(X.length);
      for (let o = 0; o < Cout; o++)
        for (let b = 0; b < B; b++)
          for (let y = 0; y < H; y++)
            for (let i = 0; i < H; i++) {
              const at = ((o * B + b) * H + y) * H + i;
              for (let c = 0; c < Cin; c++)
                for (let t = 0; t < 9; t++) {
                  const [yy, ii] = [y + Math.floor(t / 3) - 1, i + (t % 3) - 1];
                  Y[at] += W[(o * Cin + c) * 9 + t] * x(c, b, yy, ii);
                  dW[(o * Cin + c) * 9 + t] += dY[at] * x(c, b, yy, ii);
                  if (yy >= 0 && yy < H && ii >= 0 && ii < H) dX[((c * B + b) * H + yy) * H + ii] += dY[at] * W[(o * Cin + c) * 9 + t];
                }
            }
      for (const Conv of [Im2colConv, WinogradConv]) {
        const conv = new Conv(Cin, Cout, H, B);
        const got = { Y: new Float32Array(Y.length), dW: new Float32Array(dW.length), dX: new Float32Array(dX.length) };
        conv.forward(X, W, got.Y, B);
        conv.backwardWeights(dY, got.dW, B);
        conv.backwardInput(dY, W, got.dX, B);
        for (const [name, want] of [['Y', Y], ['dW', dW], ['dX', dX]] as const) {
          const d = want.reduce((m, v, i) => Math.max(m, Math.abs(v - got[name][i])), 0);
          assert.ok(d < 1e-4, `${Conv.name} ${Cin}→${Cout} at ${H}×${H}: ${name} off by ${d}`);
        }
      }
    }
  });

  it('back-propagates correctly: gradients match finite differences', () => {
    const rng = new Rng(5);
    const B = 3;
    const ws = new Workspace(B);
    const pixels = Uint8Array.from({ length: B * 784 }, () => rng.int(256));
    loadImages(ws, pixels, [0, 1, 2], [0, 1, 0], B);
    const params = new Float32Array(TRAIN_PARAMS.total);
    for (const p of TRAIN_PARAMS.params) {
      const fanIn = p.size / p.shape[0];
      for (let i = p.offset; i < p.offset + p.size; i++) params[i] = p.name.startsWith('bn') ? (p.name.endsWith('weight') ? 1 : 0) + 0.2 * rng.normal() : rng.normal() * Math.sqrt(2 / fanIn);
    }
    const labels = [3, 7, 1];
    const grad = new Float32Array(TRAIN_PARAMS.total);
    const stats = new Float64Array(2 * BN_CHANNELS);
    trainStep(ws, params, labels, B, 1, grad, stats);
    const scratch = new Float32Array(TRAIN_PARAMS.total);
    const loss = () => trainStep(ws, params, labels, B, 1, scratch, stats).loss;
    const errors: number[] = [];
    for (const p of TRAIN_PARAMS.params) {
      for (let t = 0; t < 3; t++) {
        const i = p.offset + rng.int(p.size);
        const old = params[i];
        const h = 2e-3;
        params[i] = old + h;
        const up = loss();
        params[i] = old - h;
        const down = loss();
        params[i] = old;
        const numeric = (up - down) / (2 * h);
        if (Math.abs(numeric) + Math.abs(grad[i]) > 1e-2) errors.push(Math.abs(numeric - grad[i]) / (Math.abs(numeric) + Math.abs(grad[i])));
      }
    }
    errors.sort((a, b) => a - b);
    assert.ok(errors.length >= 15, `only ${errors.length} gradients large enough to check`);
    assert.ok(errors[Math.floor(errors.length / 2)] < 0.01, `median relative error ${errors[Math.floor(errors.length / 2)]}`);
    assert.ok(errors[errors.length - 1] < 0.1, `worst relative error ${errors[errors.length - 1]}`);
  });

  it('is deterministic, whatever the number of worker threads', async () => {
    const config = { ...DEFAULTS, epochs: 1, trainLimit: 384, testLimit: 100, warmupSteps: 2, workers: 1, out: '' };
    const quiet = () => {};
    const one = await train(config, quiet, data);
    const two = await train({ ...config, workers: 2 }, quiet, data);
    assert.equal(one.history[0].loss, two.history[0].loss);
    assert.deepEqual([...one.folded], [...two.folded]);
    assert.ok(one.history[0].loss > 0.5 && Number.isFinite(one.history[0].loss));
    const other = await train({ ...config, seed: 2 }, quiet, data);
    assert.notDeepEqual([...other.folded], [...one.folded]);
  });
});
