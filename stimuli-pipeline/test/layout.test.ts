// Token and channels-last tensors (issue 10, items 3 and 4): a ViT's [N, T, D] and a ConvNeXt's
// [N, H, W, C] are read on their own axes, never as NCHW. Models: torchvision's own VisionTransformer
// and ConvNeXt classes at a small size, and the real vit_b_16, exported with random weights by
// torch.onnx.export as the zoo exports them (test/torch-export.ts; the exporter's Identity copies of
// initializers left in: they are constants).
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as ort from 'onnxruntime-node';
import sharp from 'sharp';
import { loadStudy, Manifest, rng, StudyFileError } from '@legible/studies';
import { buildStimuli } from '../src/build.ts';
import { decisionContribution } from '../src/contribution.ts';
import { visualize } from '../src/grad-commands.ts';
import { buildGradientModel } from '../src/grad/vjp.ts';
import { checkModelLayers, modelLayers } from '../src/layout.ts';
import { patchActivations } from '../src/patches.ts';
import { decodeForModel, normalise } from '../src/preprocess.ts';
import { decodeModel, encodeModel, float32Tensor } from '../src/onnx/proto.ts';
import { addReducedTaps, addTaps, reducedName } from '../src/onnx/taps.ts';
import { validate } from '../src/study-check.ts';
import { torchvisionExport, torchvisionMissing } from './torch-export.ts';

const skip = torchvisionMissing() ?? false;
const VIT_BLOCK = '/encoder/layers/encoder_layer_1/Add_1_output_0'; // [N, 17, 32], class token first
const VIT_ATTN = '/encoder/layers/encoder_layer_1/self_attention/Transpose_5_output_0'; // [N, 17, 32], layout not shown by the graph
const CNX_MLP = '/features/features.1/features.1.0/block/block.3/MatMul_output_0'; // [N, 8, 8, 64] nhwc
const CNX_NORM = '/features/features.2/features.2.0/LayerNormalization_output_0'; // [N, 8, 8, 16] nhwc: the downsampling LayerNorm (one op at opset 17) (block outputs are scaled by 1e-6 at init)

function randomImages(n: number, size: number, seed: number): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: n * 3 * size * size }, () => r.normal());
}

async function run(model: Uint8Array, x: Float32Array, n: number, size: number, names: string[]): Promise<Record<string, ort.Tensor>> {
  const s = await ort.InferenceSession.create(model);
  try {
    return (await s.run({ input: new ort.Tensor('float32', x, [n, 3, size, size]) }, names)) as Record<string, ort.Tensor>;
  } finally {
    await s.release();
  }
}

describe('layouts of token and channels-last tensors', { skip }, () => {
  let vit: Uint8Array;
  let cnx: Uint8Array;
  before(() => {
    vit = readFileSync(torchvisionExport('tiny_vit').file);
    cnx = readFileSync(torchvisionExport('tiny_convnext').file);
  });

  it('resolves a ViT block as 32 channels over 16 patch tokens (class token left out), a ConvNeXt MLP as nhwc', async () => {
    const [block] = await modelLayers(vit, [{ name: 'b', tensor: VIT_BLOCK }]);
    assert.deepEqual([block.layout, block.classTokens, block.channels, block.positions, block.shape], ['tokens', 1, 32, 16, [17, 32]]);
    const [mlp] = await modelLayers(cnx, [{ name: 'm', tensor: CNX_MLP }]);
    assert.deepEqual([mlp.layout, mlp.channels, mlp.positions, mlp.shape], ['nhwc', 64, 64, [8, 8, 64]]);
  });

  it('extraction averages each channel over the positions on the right axes (in-graph mean and max taps)', async () => {
    const n = 3;
    const x = randomImages(n, 32, 1);
    for (const [model, tensor, layout] of [
      [vit, VIT_BLOCK, { channelsLast: true, skip: 1 }],
      [cnx, CNX_MLP, { channelsLast: true }],
    ] as const) {
      const raw = (await run(addTaps(model, [tensor]), x, n, 32, [tensor]))[tensor];
      const dims = raw.dims.map(Number);
      const values = raw.data as Float32Array;
      const reduced = await run(addReducedTaps(model, [{ tensor, rank: dims.length, layout }]), x, n, 32, [reducedName(tensor, 'mean'), reducedName(tensor, 'max')]);
      const mean = reduced[reducedName(tensor, 'mean')].data as Float32Array;
      const max = reduced[reducedName(tensor, 'max')].data as Float32Array;
      const C = dims[dims.length - 1];
      const P = values.length / n / C;
      const skip = layout.channelsLast && 'skip' in layout ? layout.skip : 0;
      assert.equal(mean.length, n * C);
      for (let b = 0; b < n; b++)
        for (let c = 0; c < C; c++) {
          let s = 0;
          let m = -Infinity;
          for (let p = skip; p < P; p++) {
            s += values[(b * P + p) * C + c];
            m = Math.max(m, values[(b * P + p) * C + c]);
          }
          assert.ok(Math.abs(mean[b * C + c] - s / (P - skip)) < 1e-4, `${tensor} image ${b} channel ${c}: ${mean[b * C + c]} vs ${s / (P - skip)}`);
          assert.ok(Math.abs(max[b * C + c] - m) < 1e-5);
        }
    }
  });

  it('NMF patches average each patch over the patch tokens (class token left out), as extraction does', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'legible-vit-patch-'));
    try {
      const input = { size: 32, channels: 'rgb' as const, range: 1 as const, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };
      const r = rng(4);
      const px = Buffer.from(Array.from({ length: 32 * 32 * 3 }, () => Math.floor(256 * r.next())));
      const path = join(dir, 'a.png');
      await sharp(px, { raw: { width: 32, height: 32, channels: 3 } }).png().toFile(path);
      // One patch the size of the image: its row must be the image's mean over the 16 patch tokens.
      const rows = await patchActivations({ model: vit, input, layers: [{ name: 'b', tensor: VIT_BLOCK }], images: [{ id: 'a.png', path, bytes: 0 }], patch: { size: 32, stride: 32 }, quiet: true, device: 'cpu' });
      assert.deepEqual([rows.rows, rows.channels], [1, [32]]);
      const x = new Float32Array(3 * 32 * 32);
      normalise(await decodeForModel(readFileSync(path), input), input, x);
      const raw = (await run(addTaps(vit, [VIT_BLOCK]), x, 1, 32, [VIT_BLOCK]))[VIT_BLOCK].data as Float32Array;
      for (let c = 0; c < 32; c++) {
        let sum = 0;
        for (let t = 1; t < 17; t++) sum += raw[t * 32 + c];
        assert.ok(Math.abs(rows.perLayer[0][c] - sum / 16) < 1e-3, `channel ${c}: ${rows.perLayer[0][c]} vs ${sum / 16}`);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('ablates a channel on the last axis: the logit drop equals the model with that channel multiplied by 0', async () => {
    const n = 4;
    const x = randomImages(n, 32, 2);
    for (const [model, tensor, C] of [
      [cnx, CNX_NORM, 16],
      [vit, VIT_BLOCK, 32],
    ] as const) {
      const channel = 7;
      // The reference: the graph with Mul(layer, mask) inserted after the layer, mask 0 at the channel.
      const m = decodeModel(model);
      const g = m.graph!;
      const mask = Float32Array.from({ length: C }, (_, c) => (c === channel ? 0 : 1));
      const masked = `${tensor}/masked`;
      const nodes = g.node!.map((nd) => ({ ...nd, input: (nd.input ?? []).map((i) => (i === tensor ? masked : i)) }));
      const at = nodes.findIndex((nd) => nd.output?.includes(tensor));
      nodes.splice(at + 1, 0, { op_type: 'Mul', input: [tensor, 'test_mask'], output: [masked], name: 'test_mask_mul' });
      const ablatedModel = encodeModel({ ...m, graph: { ...g, node: nodes, initializer: [...(g.initializer ?? []), float32Tensor('test_mask', [C], mask)] } });
      const base = (await run(model, x, n, 32, ['logits'])).logits.data as Float32Array;
      const ablated = (await run(ablatedModel, x, n, 32, ['logits'])).logits.data as Float32Array;
      let drop = 0;
      for (let i = 0; i < n; i++) {
        let best = 0;
        for (let k = 1; k < 5; k++) if (base[i * 5 + k] > base[i * 5 + best]) best = k;
        drop += base[i * 5 + best] - ablated[i * 5 + best];
      }
      async function* batches() {
        yield x;
      }
      const r = await decisionContribution(model, tensor, [{ channel }], batches(), undefined, { channelsLast: true, device: 'cpu' });
      assert.ok(Math.abs(r.features[0].logitDrop - drop / n) < 1e-4, `${tensor}: ${r.features[0].logitDrop} vs ${drop / n}`);
      assert.ok(Math.abs(drop) > 1e-4, 'the channel matters to the logit');
      // The channel count comes from the last axis (16 and 32 channels), not from axis 1 (8 rows, 17 tokens).
      await assert.rejects(decisionContribution(model, tensor, [{ channel: C }], batches(), undefined, { channelsLast: true }), new RegExp(`has ${C} channels, no channel ${C}`));
    }
  });

  it('the visualization objective is the channel mean over patch tokens, and its gradient matches finite differences', async () => {
    const n = 2;
    const grad = await buildGradientModel(vit, { wrt: ['input'], objective: { tensor: VIT_BLOCK, layout: { channelsLast: true, skip: 1 } } });
    assert.equal(grad.meta.get(VIT_BLOCK)!.dims.at(-1), 32);
    const s = await ort.InferenceSession.create(encodeModel(grad.model));
    const x = randomImages(n, 32, 3);
    const w = new Float32Array(n * 32);
    w[5] = 1; // image 0: channel 5
    w[32 + 20] = 1; // image 1: channel 20
    const feed = (img: Float32Array) => ({ input: new ort.Tensor('float32', img, [n, 3, 32, 32]), [grad.objectiveInputs[0]!]: new ort.Tensor('float32', w, [n, 32]) });
    const out = await s.run(feed(x));
    const objective = out[grad.objective].data as Float32Array;
    const raw = (await run(addTaps(vit, [VIT_BLOCK]), x, n, 32, [VIT_BLOCK]))[VIT_BLOCK].data as Float32Array;
    const expect = (b: number, c: number) => {
      let sum = 0;
      for (let t = 1; t < 17; t++) sum += raw[(b * 17 + t) * 32 + c];
      return sum / 16;
    };
    assert.ok(Math.abs(objective[0] - expect(0, 5)) < 1e-4, `${objective[0]} vs ${expect(0, 5)}`);
    assert.ok(Math.abs(objective[1] - expect(1, 20)) < 1e-4);
    // Finite differences (float64 accumulation of a float32 model: a loose tolerance) at a few pixels.
    const g = out[grad.grads.input].data as Float32Array;
    const h = 1e-2;
    for (const i of [5, 1000, 3 * 32 * 32 + 77]) {
      const plus = Float32Array.from(x);
      const minus = Float32Array.from(x);
      plus[i] += h;
      minus[i] -= h;
      const op = (await s.run(feed(plus)))[grad.objective].data as Float32Array;
      const om = (await s.run(feed(minus)))[grad.objective].data as Float32Array;
      const fd = (op[0] + op[1] - om[0] - om[1]) / (2 * h);
      assert.ok(Math.abs(fd - g[i]) < 2e-3 + 0.05 * Math.abs(fd), `pixel ${i}: gradient ${g[i]}, finite difference ${fd}`);
    }
    await s.release();
  });
});

describe('legible visualize on a ViT', { skip }, () => {
  it('counts channels on the hidden axis (--channel 40 of 32 is refused, not read as token 40) and asks for an unknown layout', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'legible-vit-fv-'));
    try {
      const file = join(dir, 'vit.onnx');
      writeFileSync(file, readFileSync(torchvisionExport('tiny_vit').file));
      const args = (tensor: string, ...more: string[]) => [file, '--tensor', tensor, '--out', join(dir, 'out'), '--size', '32', '--steps', '2', '--batch', '1', ...more];
      await assert.rejects(visualize.run(args(VIT_BLOCK, '--channel', '20', '--channel', '40')), /has 32 channels; channel 40 does not exist/);
      await assert.rejects(visualize.run(args(VIT_ATTN, '--channel', '5')), /--tensor .*Transpose_5_output_0: the layout of .* cannot be inferred/);
      await assert.rejects(visualize.run(args(VIT_BLOCK, '--channel', '5', '--layout', 'nchw')), /is tokens .* layout: nchw would read it wrongly/);
      assert.equal(await visualize.run(args(VIT_ATTN, '--channel', '20', '--layout', 'tokens', '--class-token', 'yes')), 0);
      assert.ok(readdirSync(join(dir, 'out')).some((f) => f.endsWith('.png')));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('a ViT study: validate and stimuli', { skip }, () => {
  let dir: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'legible-vit-'));
    writeFileSync(join(dir, 'model.onnx'), readFileSync(torchvisionExport('tiny_vit').file));
    const r = rng(9);
    for (let i = 0; i < 48; i++) {
      const cls = `c${i % 5}`;
      mkdirSync(join(dir, 'images', cls), { recursive: true });
      const px = Buffer.alloc(32 * 32 * 3);
      const [a, b] = [r.next(), r.next()];
      for (let p = 0; p < 32 * 32; p++) {
        const y = Math.floor(p / 32) / 32;
        const xx = (p % 32) / 32;
        px[p * 3] = Math.round(255 * Math.min(1, a * y + 0.4 * r.next()));
        px[p * 3 + 1] = Math.round(255 * Math.min(1, b * xx + 0.4 * r.next()));
        px[p * 3 + 2] = Math.round(255 * r.next());
      }
      await sharp(px, { raw: { width: 32, height: 32, channels: 3 } }).png().toFile(join(dir, 'images', cls, `img${String(i).padStart(2, '0')}.png`));
    }
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const yaml = (layers: string, extra = '') => `id: vit
title: ViT
seed: 2
model:
  onnx: model.onnx
  input: { size: 32, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] }
  layers:
${layers}
dataset:
  images: images
  split: { seed: 1, reference: 0.7, query: 0.3 }
bases:
  - kind: channels
  - kind: sae
    dictionary: 8
    k: 2
    epochs: 2
features: { select: random, count: 2, seed: 1 }
references: { per_side: 3, columns: 3${extra} }
queries: { difficulty: extreme }
contribution: { images: 6 }
stimuli: { cell_px: 32, gap_px: 2, quality: 80 }
design: { trials_per_participant: 4, practice_trials: 1 }
text: { consent: c, instructions: i }
`;

  async function validateFile(text: string): Promise<{ code: number; err: string }> {
    const file = join(dir, 'study.yaml');
    writeFileSync(file, text);
    const lines: string[] = [];
    const original = console.error;
    console.error = (...a: unknown[]) => void lines.push(a.join(' '));
    try {
      return { code: await validate.run([file]), err: lines.join('\n') };
    } finally {
      console.error = original;
    }
  }

  it('validate names a misspelt tensor, an undeclared unknown layout and a contradicted one, with line, column and nearest names', async () => {
    const text = yaml(
      [
        `    - { name: block, tensor: "${VIT_BLOCK}" }`,
        `    - { name: typo, tensor: "${VIT_BLOCK.replace('Add_1', 'Add_9')}" }`,
        `    - { name: attn, tensor: "${VIT_ATTN}" }`,
        `    - name: wrong`,
        `      tensor: "${VIT_BLOCK}"`,
        `      layout: nchw`,
        `    - { name: cls, tensor: "${VIT_BLOCK}", class_token: false }`,
        `    - { name: ints, tensor: "/Shape_output_0" }`,
      ].join('\n'),
    );
    const { code, err } = await validateFile(text);
    assert.equal(code, 1);
    const lines = text.split('\n');
    const lineOf = (needle: string) => lines.findIndex((l) => l.includes(needle)) + 1;
    assert.match(err, new RegExp(`study\\.yaml:${lineOf('name: typo')}:\\d+  model\\.layers\\[1\\]\\.tensor: the model has no tensor ".*Add_9_output_0"; nearest: "${VIT_BLOCK.replace(/[/.]/g, '\\$&')}"`));
    assert.match(err, new RegExp(`:${lineOf('name: attn')}:\\d+  model\\.layers\\[2\\]\\.layout: the layout of ".*Transpose_5_output_0" \\[N, 17, 32\\] cannot be inferred`));
    assert.match(err, new RegExp(`:${lineOf('layout: nchw')}:15  model\\.layers\\[3\\]\\.layout: ".*" \\[N, 17, 32\\] is tokens`));
    assert.match(err, /model\.layers\[4\]\.class_token: .* begins with 1 class token in the graph; class_token: false contradicts it/);
    assert.match(err, /model\.layers\[5\]\.tensor: "\/Shape_output_0" \(Shape, int64 \[4\]\) is not a feature tensor/);
    assert.doesNotMatch(err, /model\.layers\[0\]/);
    assert.match(err, /5 problems/);
    // stimuli refuses the same file before extracting anything, with the same places.
    await assert.rejects(buildStimuli(loadStudy(join(dir, 'study.yaml')), { quiet: true, log: () => {} }), (e: unknown) => e instanceof StudyFileError && e.problems.some((p) => p.path === 'model.layers[1].tensor'));
  });

  it('validate accepts a declared layout where the graph does not tell, and the ViT study builds (channels, SAE, contribution, visualizations)', async () => {
    const text = yaml([`    - { name: block, tensor: "${VIT_BLOCK}" }`, `    - { name: attn, tensor: "${VIT_ATTN}", layout: tokens, class_token: true }`].join('\n'), ', kinds: [natural, visualization], visualization: { steps: 4, batch: 4 }');
    const { code, err } = await validateFile(text);
    assert.equal(code, 0, err);
    const manifest = Manifest.parse(await buildStimuli(loadStudy(join(dir, 'study.yaml')), { quiet: true, log: () => {} }));
    assert.deepEqual(manifest.layers.map((l) => [l.name, l.shape]), [['block', [17, 32]], ['attn', [17, 32]]]);
    for (const f of manifest.features) {
      if (f.basis === 'channels') assert.ok(f.index < 32, `channel ${f.index} of a 32-channel token tensor`);
    }
    assert.ok(manifest.features.some((f) => f.basis === 'sae'));
  });
});

describe('the real torchvision vit_b_16', { skip }, () => {
  it('has 768 channels over 196 patch tokens at a block output; validate-level checks name the tensor', async () => {
    const { file } = torchvisionExport('vit_b_16');
    const r = await checkModelLayers(file, [
      { name: 'b11', tensor: '/encoder/layers/encoder_layer_11/Add_1_output_0' },
      { name: 'bad', tensor: '/encoder/layers/encoder_layer_11/Add_1_output_0', layout: 'nhwc' },
    ]);
    assert.deepEqual(r.layers.map((l) => [l.layout, l.classTokens, l.channels, l.positions]), [['tokens', 1, 768, 196]]);
    assert.deepEqual(r.problems.map((p) => [p.index, p.field]), [[1, 'layout']]);
    assert.match(r.problems[0].message, /\[N, 197, 768\] is tokens/);
  });
});
