// Feature visualization: the Fourier parameterisation and augmentation graph against plain loops,
// and visualizations of the demo model that drive their objective above every natural image.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import * as ort from 'onnxruntime-node';
import sharp from 'sharp';
import { Rng } from '@legible/studies/random';
import { decodeModel, encodeModel } from '../src/onnx/proto.ts';
import { addTapsToModel } from '../src/onnx/taps.ts';
import { addTaps } from '../src/onnx/taps.ts';
import { sampleWarp, warpSampling, DEFAULT_AUGMENTATION } from '../src/fv/augment.ts';
import { colourMatrix, DEFAULT_COLOUR_MATRIX } from '../src/fv/colour.ts';
import { averageMagnitude, imageMagnitude, inverseHalfSpectrum, normaliseMagnitude, powerLawMagnitude } from '../src/fv/fourier.ts';
import { compose, visualizeFeatures, type FeatureObjective } from '../src/fv/visualize.ts';
import { readFashionMnist } from '../demo-model/fashion-mnist.ts';
import { ROOT } from './torch-ref.ts';

const DEMO = join(ROOT, 'studies/demo/model.onnx');
const built = existsSync(DEMO);
const DEMO_INPUT = { size: 28, channels: 'gray' as const, range: 1 as const, mean: [0.286], std: [0.353] };
const sigmoid = (v: number) => 1 / (1 + Math.exp(-v));

describe('MACO parameterisation', () => {
  it('the graph (MatMul, Sin, Cos) computes the inverse real DFT of magnitude · e^{iφ}, and an identity warp copies pixels', { skip: !built && 'demo model not built' }, async () => {
    const [H, W] = [28, 28];
    const magnitude = powerLawMagnitude(H, W, 1);
    const c = compose(decodeModel(readFileSync(DEMO)), DEMO_INPUT, 'maco', H, W, 28, 28, 1, { magnitude, contrast: 1.5 });
    const session = await ort.InferenceSession.create(encodeModel(addTapsToModel(c.model, [c.image, 'image'])));
    const rng = new Rng(2);
    const Wh = W / 2 + 1;
    const phase = Float32Array.from({ length: 2 * H * Wh }, () => Math.PI * (2 * rng.float() - 1));
    const index = new BigInt64Array(2 * 4 * H * W);
    const weight = new Float32Array(2 * 4 * H * W);
    for (let b = 0; b < 2; b++) warpSampling({ dy: 0, dx: 0, scale: 1, angle: 0 }, H, W, H, W, index, weight, b * 4 * H * W);
    const out = await session.run({
      'fv/phase': new ort.Tensor('float32', phase, [2, 1, H, Wh]),
      'fv/warp_index': new ort.Tensor('int64', index, [2, 1, 4 * H * W]),
      'fv/warp_weight': new ort.Tensor('float32', weight, [2, 1, 4, H * W]),
    });
    const image = out[c.image].data as Float32Array;
    const fed = out.image.data as Float32Array;
    const scaled = normaliseMagnitude(magnitude, H, W, 1, 1.5);
    let worst = 0;
    let sum = 0;
    let sum2 = 0;
    for (let b = 0; b < 2; b++) {
      const x = inverseHalfSpectrum(scaled, phase.subarray(b * H * Wh, (b + 1) * H * Wh), H, W);
      for (let p = 0; p < H * W; p++) {
        worst = Math.max(worst, Math.abs(image[b * H * W + p] - sigmoid(x[p])));
        // The model's input: the same pixels, normalised as the study says.
        worst = Math.max(worst, Math.abs(fed[b * H * W + p] - (image[b * H * W + p] - 0.286) / 0.353) * 0.353);
        sum += x[p];
        sum2 += x[p] * x[p];
      }
    }
    assert.ok(worst < 1e-5, `largest difference ${worst}`);
    // normaliseMagnitude's promise: unit-phase images have about the requested standard deviation.
    const n = 2 * H * W;
    const std = Math.sqrt(sum2 / n - (sum / n) ** 2);
    assert.ok(Math.abs(std - 1.5) < 0.3, `pixel std ${std}`);
  });

  it('averageMagnitude recovers the magnitude an image was made from (interior frequencies)', () => {
    const [H, W] = [8, 10];
    const Wh = W / 2 + 1;
    const rng = new Rng(4);
    const mag = Float32Array.from({ length: H * Wh }, () => 0.5 + rng.float());
    const phase = Float32Array.from({ length: H * Wh }, () => Math.PI * (2 * rng.float() - 1));
    const img = Float32Array.from(inverseHalfSpectrum(mag, phase, H, W));
    const got = averageMagnitude([img], H, W, 1);
    for (let u = 0; u < H; u++) for (let v = 1; v < Wh - 1; v++) assert.ok(Math.abs(got[u * Wh + v] - mag[u * Wh + v]) < 1e-4, `bin (${u}, ${v}): ${got[u * Wh + v]} vs ${mag[u * Wh + v]}`);
  });

  it('imageMagnitude undoes the colour matrix: images made from one decorrelated channel have spectrum there only', () => {
    const rng = new Rng(5);
    const M = Float32Array.from([0.6, 0.5, 0.2, 0.6, 0, -0.4, 0.6, -0.5, 0.2]);
    const images = Array.from({ length: 3 }, () => {
      const img = new Uint8Array(12 * 12 * 3);
      for (let p = 0; p < 144; p++) {
        const v = 150 * (rng.float() - 0.5);
        for (let k = 0; k < 3; k++) img[p * 3 + k] = Math.round(128 + M[k * 3] * v);
      }
      return img;
    });
    const mag = imageMagnitude(images, 12, 12, 3, M);
    const plane = 12 * 7;
    const energy = [0, 1, 2].map((k) => mag.subarray(k * plane, (k + 1) * plane).reduce((s, v) => s + v * v, 0));
    assert.ok(energy[0] > 0 && energy[1] < 1e-3 * energy[0] && energy[2] < 1e-3 * energy[0], `energies ${energy}`);
    assert.throws(() => imageMagnitude([new Uint8Array(5)], 12, 12, 3, M), /holds 5 values/);
  });

  it('warps: identity reads each pixel, a one-pixel shift reads its neighbour (wrapping), weights sum to 1', () => {
    const [H, W] = [6, 8];
    const index = new BigInt64Array(4 * H * W);
    const weight = new Float32Array(4 * H * W);
    const plane = Array.from({ length: H * W }, (_, p) => p * p + 1);
    const sampled = (p: number) => [0, 1, 2, 3].reduce((s, k) => s + weight[p + k * H * W] * plane[Number(index[p + k * H * W])], 0);
    warpSampling({ dy: 0, dx: 0, scale: 1, angle: 0 }, H, W, H, W, index, weight);
    for (let p = 0; p < H * W; p++) assert.ok(Math.abs(sampled(p) - plane[p]) < 1e-9 * plane[p], `identity, pixel ${p}`);
    warpSampling({ dy: 0, dx: 1 / W, scale: 1, angle: 0 }, H, W, H, W, index, weight);
    for (let p = 0; p < H * W; p++) {
      const [i, j] = [Math.floor(p / W), p % W];
      const want = plane[i * W + ((j - 1 + W) % W)];
      assert.ok(Math.abs(sampled(p) - want) < 1e-4 * want, `shift, pixel ${p}: ${sampled(p)} vs ${want}`);
    }
    const r = new Rng(1);
    const idx = new BigInt64Array(4 * 144);
    const wts = new Float32Array(4 * 144);
    warpSampling(sampleWarp(r, DEFAULT_AUGMENTATION), 20, 20, 12, 12, idx, wts);
    for (let p = 0; p < 144; p++) {
      const s = wts[p] + wts[p + 144] + wts[p + 288] + wts[p + 432];
      assert.ok(Math.abs(s - 1) < 1e-6 && [0, 1, 2, 3].every((k) => idx[p + 144 * k] >= 0n && idx[p + 144 * k] < 400n));
    }
    // Written into a view that starts inside a larger buffer filled with -1 (every bit set), at an
    // offset: the same int64 indices (high words cleared), nothing written outside the range.
    const big = new BigInt64Array(3 + 2 * 4 * 144).fill(-1n);
    const view = big.subarray(3);
    warpSampling(sampleWarp(new Rng(1), DEFAULT_AUGMENTATION), 20, 20, 12, 12, view, new Float32Array(2 * 4 * 144), 4 * 144);
    assert.deepEqual([...big.subarray(0, 3 + 4 * 144)], Array(3 + 4 * 144).fill(-1n));
    assert.deepEqual([...view.subarray(4 * 144)], [...idx]);
  });

  it('colourMatrix recovers the axes and spreads of colours made from independent sources', () => {
    // rgb = 0.5 + A · z, z independent with spreads 3 : 1 : 0.3 along orthonormal axes A.
    const axes = [
      [0.6, 0.64, 0.48],
      [0.8, -0.48, -0.36],
      [0, 0.6, -0.8],
    ];
    const spread = [0.12, 0.04, 0.012];
    const rng = new Rng(7);
    const img = new Uint8Array(200_000 * 3);
    for (let p = 0; p < 200_000; p++) {
      const z = spread.map((s) => s * rng.normal());
      for (let k = 0; k < 3; k++) img[p * 3 + k] = Math.max(0, Math.min(255, Math.round(255 * (0.5 + z.reduce((t, zj, j) => t + axes[j][k] * zj, 0)))));
    }
    const M = colourMatrix([img]);
    for (let j = 0; j < 3; j++) {
      const col = [M[j], M[3 + j], M[6 + j]];
      const norm = Math.hypot(...col);
      assert.ok(Math.abs(norm - spread[j] / spread[0]) < 0.02, `column ${j} norm ${norm}`);
      const cos = Math.abs(col.reduce((t, v, k) => t + v * axes[j][k], 0)) / norm;
      assert.ok(cos > 0.99, `column ${j} direction, |cos| ${cos}`);
    }
  });

  it('the default colour matrix: opponent axes, luminance first, chromatic spreads 1/3 and 1/6', () => {
    const M = DEFAULT_COLOUR_MATRIX;
    const col = (j: number) => [M[j], M[3 + j], M[6 + j]];
    assert.ok(Math.abs(Math.hypot(...col(0)) - 1) < 1e-6 && col(0).every((v) => Math.abs(v - col(0)[0]) < 1e-6), 'first column: grey, unit');
    assert.ok(Math.abs(Math.hypot(...col(1)) - 1 / 3) < 1e-6 && Math.abs(Math.hypot(...col(2)) - 1 / 6) < 1e-6);
    for (const [a, b] of [[0, 1], [0, 2], [1, 2]]) assert.ok(Math.abs(col(a).reduce((t, v, k) => t + v * col(b)[k], 0)) < 1e-6, 'orthogonal');
  });
});

describe('feature visualizations of the demo model', { skip: !built && 'demo model not built' }, () => {
  const bytes = built ? readFileSync(DEMO) : new Uint8Array();
  /** Per-channel spatial means of a layer for images given as uint8 (gray, 28 × 28). */
  async function layerMeans(pixels: Uint8Array[], layer: string): Promise<{ values: Float32Array; channels: number }> {
    const session = await ort.InferenceSession.create(addTaps(bytes, [layer]));
    const x = Float32Array.from(pixels.flatMap((p) => Array.from(p, (v) => (v / 255 - 0.286) / 0.353)));
    const t = (await session.run({ image: new ort.Tensor('float32', x, [pixels.length, 1, 28, 28]) }))[layer];
    await session.release();
    const [n, C, h, w] = t.dims;
    const a = t.data as Float32Array;
    const values = new Float32Array(n * C);
    for (let i = 0; i < n * C; i++) for (let p = 0; p < h * w; p++) values[i] += a[i * h * w + p] / (h * w);
    return { values, channels: C };
  }
  const natural = built ? readFashionMnist().test.filter((_, i) => i % 4 === 0).map((img) => img.pixels) : [];

  for (const method of ['maco', 'pixel'] as const) {
    it(`${method}: each optimised image drives its objective above every one of 2500 natural images (block2, block3, a direction)`, async () => {
      const direction = Float32Array.from({ length: 64 }, (_, i) => (i % 5 === 0 ? 1 : 0));
      const objectives: FeatureObjective[] = [
        { tensor: 'block2', channel: 3 },
        { tensor: 'block2', channel: 17 },
        { tensor: 'block3', channel: 5 },
        { tensor: 'block3', channel: 40 },
        { tensor: 'block3', direction },
      ];
      const result = await visualizeFeatures(bytes, DEMO_INPUT, objectives, { seed: 3, method, batch: 5 });
      assert.equal(result.images.length, 5);
      assert.deepEqual([result.width, result.height, result.channels], [28, 28, 1]);
      for (const [i, f] of objectives.entries()) {
        // Independently: the returned uint8 image through a plain forward pass.
        const mine = await layerMeans([result.images[i]], f.tensor);
        const nat = await layerMeans(natural, f.tensor);
        const project = (v: Float32Array, row: number) => ('channel' in f ? v[row * mine.channels + f.channel] : f.direction.reduce((s, d, c) => s + d * v[row * mine.channels + c], 0));
        const ours = project(mine.values, 0);
        let best = -Infinity;
        for (let r = 0; r < natural.length; r++) best = Math.max(best, project(nat.values, r));
        assert.ok(Math.abs(ours - result.objectives[i]) < 0.02 * Math.abs(ours) + 0.02, `feature ${i}: reported ${result.objectives[i]}, measured ${ours}`);
        assert.ok(ours > best, `feature ${i} (${f.tensor}): visualization ${ours.toFixed(3)} vs best natural image ${best.toFixed(3)}`);
        const losses = result.losses[i];
        assert.equal(losses.length, 256);
        assert.ok(losses[255] < losses[0], 'the loss falls');
        const map = result.attributions[i];
        assert.equal(map.length, 28 * 28);
        assert.ok(Math.max(...map) === 1 && Math.min(...map) >= 0, 'attribution in [0, 1], max 1');
      }
    });
  }

  it('is deterministic for a seed; another seed gives another image', async () => {
    const objectives = [{ tensor: 'block3', channel: 7 }];
    const a = await visualizeFeatures(bytes, DEMO_INPUT, objectives, { seed: 9, steps: 32, threads: 1 });
    const b = await visualizeFeatures(bytes, DEMO_INPUT, objectives, { seed: 9, steps: 32, threads: 1 });
    const c = await visualizeFeatures(bytes, DEMO_INPUT, objectives, { seed: 10, steps: 32, threads: 1 });
    assert.deepEqual(a.images, b.images);
    assert.deepEqual(a.attributions, b.attributions);
    assert.notDeepEqual(a.images, c.images);
  });

  it('says what is wrong with a bad objective or input spec', async () => {
    await assert.rejects(visualizeFeatures(bytes, DEMO_INPUT, [{ tensor: 'block3', channel: 64 }], { steps: 1 }), /"block3" has 64 channels; channel 64 does not exist/);
    await assert.rejects(visualizeFeatures(bytes, DEMO_INPUT, [{ tensor: 'block3', direction: new Float32Array(3) }], { steps: 1 }), /needs 64 values, got 3/);
    await assert.rejects(visualizeFeatures(bytes, DEMO_INPUT, [{ tensor: 'block9', channel: 0 }], { steps: 1 }), /no tensor "block9"/);
    await assert.rejects(visualizeFeatures(bytes, { ...DEMO_INPUT, channels: 'rgb' }, [{ tensor: 'block3', channel: 0 }], { steps: 1 }), /input spec says 3 channels/);
  });
});

describe('legible visualize', { skip: !built && 'demo model not built' }, () => {
  it('writes each feature\'s image and attribution map as PNG, and a record', async () => {
    const { mkdtempSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { visualize } = await import('../src/grad-commands.ts');
    const dir = mkdtempSync(join(tmpdir(), 'legible-visualize-'));
    const log = console.log;
    const err = console.error;
    console.log = console.error = () => {};
    try {
      const directions = join(dir, 'dirs.json');
      (await import('node:fs')).writeFileSync(directions, JSON.stringify([Array.from({ length: 64 }, (_, i) => (i === 3 ? 1 : 0))]));
      const code = await visualize.run([DEMO, '--study', join(ROOT, 'studies/demo/study.yaml'), '--tensor', 'block3', '--channel', '5', '--directions', directions, '--steps', '16', '--out', dir]);
      assert.equal(code, 0);
      for (const f of ['block3-channel5.png', 'block3-channel5-attribution.png', 'block3-direction0.png', 'block3-direction0-attribution.png']) {
        const meta = await sharp(join(dir, f)).metadata();
        assert.deepEqual([meta.width, meta.height, meta.channels], [28, 28, 1], f);
      }
      const record = JSON.parse(readFileSync(join(dir, 'visualize.json'), 'utf8'));
      assert.equal(record.features.length, 2);
      assert.equal(record.input.channels, 'gray');
      await assert.rejects(visualize.run([DEMO, '--tensor', 'block3', '--out', dir]), /give --channel N/);
    } finally {
      console.log = log;
      console.error = err;
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('feature visualizations of an RGB model, batched', () => {
  it('give each feature the image it gets alone (per-feature seeds, colour channels kept apart), above its start', async () => {
    const { makeGraph, makeModel, node, tensorInfo, attr } = await import('../src/onnx/graph.ts');
    const { DataType, float32Tensor } = await import('../src/onnx/proto.ts');
    const rng = new Rng(6);
    const model = makeModel({
      graph: makeGraph({
        name: 'rgb',
        inputs: [tensorInfo('x', DataType.FLOAT, ['N', 3, 16, 16])],
        outputs: [tensorInfo('feat', DataType.FLOAT, ['N', 4, 8, 8])],
        initializers: [float32Tensor('w', [4, 3, 3, 3], Float32Array.from({ length: 108 }, () => 0.5 * rng.normal())), float32Tensor('w2', [4, 4, 3, 3], Float32Array.from({ length: 144 }, () => 0.4 * rng.normal()))],
        nodes: [
          node('Conv', ['x', 'w'], ['c'], [attr.ints('pads', [1, 1, 1, 1])]),
          node('Relu', ['c'], ['r']),
          node('Conv', ['r', 'w2'], ['c2'], [attr.ints('pads', [1, 1, 1, 1]), attr.ints('strides', [2, 2])]),
          node('Relu', ['c2'], ['feat']),
        ],
      }),
    });
    const bytes = encodeModel(model);
    const input = { size: 16, channels: 'rgb' as const, range: 1 as const, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };
    const objectives = [0, 1, 2].map((channel) => ({ tensor: 'feat', channel }));
    const together = await visualizeFeatures(bytes, input, objectives, { seed: 2, steps: 64, batch: 3, threads: 1 });
    assert.equal(together.images[0].length, 16 * 16 * 3);
    for (const [i, f] of objectives.entries()) {
      const alone = await visualizeFeatures(bytes, input, objectives.slice(0, i + 1), { seed: 2, steps: 64, batch: 1, threads: 1 });
      const a = alone.images[i];
      const b = together.images[i];
      let diff = 0;
      for (let p = 0; p < a.length; p++) diff = Math.max(diff, Math.abs(a[p] - b[p]));
      assert.ok(diff <= 2, `feature ${i}: alone and batched differ by up to ${diff} grey levels`);
      assert.ok(together.losses[i][63] < together.losses[i][0], `feature ${f.channel}: loss ${together.losses[i][0]} → ${together.losses[i][63]}`);
    }
    // Colour channels differ (the decorrelated space is three-dimensional).
    const img = together.images[0];
    let chroma = 0;
    for (let p = 0; p < 256; p++) chroma = Math.max(chroma, Math.abs(img[p * 3] - img[p * 3 + 2]));
    assert.ok(chroma > 0, 'an RGB visualization is not grey');
  });
});
