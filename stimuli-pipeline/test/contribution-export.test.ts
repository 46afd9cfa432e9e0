// Decision contribution and gradients on a standard torch.onnx export (issue 10, item 2): PyTorch's
// exporter stores identical initializers once and reads the copies through Identity nodes (a
// ResNet-18 with torchvision's initialisation has 16: its folded BatchNorm biases are all zero).
// Those Identity outputs are constants, not per-image tensors: the contribution's cut graph must
// compute them itself, not take them from before the layer and repeat them per image and feature
// (onnxruntime then failed with "bias must be a 1D tensor of size output_channels").
// The ablations are checked against the whole model with the layer edited in place (a mask or a
// projection inserted after the layer), run by onnxruntime. The gradient builder reads the values
// of such copies where a rule needs a constant (Pad's pads).
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import * as ort from 'onnxruntime-node';
import sharp from 'sharp';
import { rng } from '@legible/studies';
import { decisionContribution, type ContributionFeature } from '../src/contribution.ts';
import { inferredTensors, measureTensors } from '../src/grad/meta.ts';
import { buildGradientModel } from '../src/grad/vjp.ts';
import { attr, makeGraph, makeModel, node, tensorInfo } from '../src/onnx/graph.ts';
import { DataType, decodeModel, encodeModel, float32Tensor, int64Tensor, type ModelProto } from '../src/onnx/proto.ts';
import { photoFixture } from './photos.ts';
import { torchvisionExport } from './torch-export.ts';
import { readF32, readF64, relL2, torchMissing, zooExport } from './torch-ref.ts';

const SIZE = 64;
const MEAN = [0.485, 0.456, 0.406];
const STD = [0.229, 0.224, 0.225];

/** Real photos (seeded crops of the test photographs), ImageNet-normalised, NCHW. */
async function photoBatch(n: number): Promise<Float32Array> {
  const dir = await photoFixture(24, SIZE);
  const files = readdirSync(dir).filter((f) => f.endsWith('.jpg')).sort().slice(0, n);
  const x = new Float32Array(n * 3 * SIZE * SIZE);
  for (const [i, f] of files.entries()) {
    const px = await sharp(join(dir, f)).removeAlpha().raw().toBuffer();
    for (let c = 0; c < 3; c++) for (let p = 0; p < SIZE * SIZE; p++) x[(i * 3 + c) * SIZE * SIZE + p] = (px[p * 3 + c] / 255 - MEAN[c]) / STD[c];
  }
  return x;
}

/** The model with `layer` replaced by edit(layer) for every consumer (the layer's producer renamed). */
function editLayer(model: ModelProto, layer: string, edit: (raw: string, out: string) => ReturnType<typeof node>[], inits: ReturnType<typeof float32Tensor>[]): ModelProto {
  const g = model.graph!;
  const raw = `${layer}/raw`;
  const nodes = (g.node ?? []).flatMap((n) => {
    if (!(n.output ?? []).includes(layer)) return [n];
    return [{ ...n, output: n.output!.map((o) => (o === layer ? raw : o)) }, ...edit(raw, layer)];
  });
  return { ...model, graph: { ...g, node: nodes, initializer: [...(g.initializer ?? []), ...inits] } };
}

async function logits(model: ModelProto, x: Float32Array, n: number): Promise<Float32Array> {
  const s = await ort.InferenceSession.create(encodeModel(model));
  try {
    const out = await s.run({ input: new ort.Tensor('float32', x, [n, 3, SIZE, SIZE]) });
    return out.logits.data as Float32Array;
  } finally {
    await s.release();
  }
}

const argmax = (v: Float32Array, at: number, k: number) => {
  let b = 0;
  for (let i = 1; i < k; i++) if (v[at + i] > v[at + b]) b = i;
  return b;
};

describe('a standard torch.onnx export (ResNet-18, Identity copies of initializers)', { skip: torchMissing() ?? false }, () => {
  let dir: string;
  let bytes: Uint8Array;
  let model: ModelProto;
  before(() => {
    dir = zooExport('resnet18', SIZE, 2);
    bytes = readFileSync(join(dir, 'model.onnx'));
    model = decodeModel(bytes);
  });

  it('really reads initializers through Identity nodes', () => {
    const inits = new Set((model.graph!.initializer ?? []).map((t) => t.name));
    const copies = (model.graph!.node ?? []).filter((n) => n.op_type === 'Identity' && inits.has(n.input![0]));
    assert.ok(copies.length >= 8, `only ${copies.length} Identity nodes read initializers`);
    // …and the part of the graph after layer3 ("feat") reads some of them.
    const featAt = model.graph!.node!.findIndex((n) => n.output!.includes('feat'));
    const copied = new Set(copies.map((n) => n.output![0]));
    assert.ok(model.graph!.node!.slice(featAt + 1).some((n) => n.input!.some((i) => copied.has(i))), 'no node after "feat" reads an Identity copy');
  });

  it('takes the shapes it needs from shape inference, equal to what onnxruntime measures (ResNet-18, tiny ViT and ConvNeXt)', async () => {
    // Decision contribution used to run the whole model twice with every tensor tapped just to learn
    // shapes (201 s on VGG-16 at 224 px): inference derives them from the graph.
    for (const [name, m] of [
      ['resnet18', model],
      ['tiny_vit', decodeModel(readFileSync(torchvisionExport('tiny_vit').file))],
      ['tiny_convnext', decodeModel(readFileSync(torchvisionExport('tiny_convnext').file))],
    ] as const) {
      const inferred = inferredTensors(m);
      const measured = await measureTensors(m);
      const floats = [...measured].filter(([, v]) => v.type === DataType.FLOAT).map(([k]) => k);
      // Every float tensor is derived, with the measured type, shape (-1 for the batch) and sizes at batch 2 and 3.
      for (const t of floats) {
        assert.ok(inferred.has(t), `${name}: "${t}" not derived`);
        assert.deepEqual(inferred.get(t), measured.get(t), `${name}: "${t}"`);
      }
      assert.ok(floats.length > 30, `${name}: ${floats.length} float tensors`);
    }
  });

  it('measures the decision contribution of channels and directions as the edited model does', async () => {
    const n = 6;
    const x = await photoBatch(n);
    const C = 256; // ResNet-18's layer3
    const r = rng(5);
    const direction = Float32Array.from({ length: C }, () => Math.max(0, r.normal()));
    const features: ContributionFeature[] = [{ channel: 3 }, { channel: 200 }, { direction }];
    const result = await decisionContribution(bytes, 'feat', features, [x], undefined, { featureBatch: 2 });
    assert.equal(result.images, n);
    assert.equal(result.labels, 'predicted');

    const base = await logits(model, x, n);
    const K = base.length / n;
    const expected = async (edited: ModelProto) => {
      const changed = await logits(edited, x, n);
      let drop = 0;
      let moved = 0;
      for (let i = 0; i < n; i++) {
        const y = argmax(base, i * K, K);
        drop += base[i * K + y] - changed[i * K + y];
        if (argmax(changed, i * K, K) !== y) moved++;
      }
      return { logitDrop: drop / n, changed: moved / n };
    };
    const masked = (channel: number) => {
      const keep = new Float32Array(C).fill(1);
      keep[channel] = 0;
      return editLayer(model, 'feat', (raw, out) => [node('Mul', [raw, 'test/keep'], [out])], [float32Tensor('test/keep', [1, C, 1, 1], keep)]);
    };
    // A' = A − max(0, ⟨A, d⟩) / ‖d‖² · d at every position.
    const norm = direction.reduce((s, v) => s + v * v, 0);
    const projected = editLayer(
      model,
      'feat',
      (raw, out) => [
        node('Mul', [raw, 'test/d'], ['test/ad']),
        node('ReduceSum', ['test/ad', 'test/axis1'], ['test/dot'], [attr.int('keepdims', 1)]),
        node('Relu', ['test/dot'], ['test/pos']),
        node('Div', ['test/pos', 'test/norm'], ['test/u']),
        node('Mul', ['test/u', 'test/d'], ['test/component']),
        node('Sub', [raw, 'test/component'], [out]),
      ],
      [float32Tensor('test/d', [1, C, 1, 1], direction), float32Tensor('test/norm', [], [norm]), int64Tensor('test/axis1', [1], [1])],
    );
    const want = [await expected(masked(3)), await expected(masked(200)), await expected(projected)];
    result.features.forEach((f, i) => {
      assert.ok(Math.abs(f.logitDrop - want[i].logitDrop) <= 1e-4 * (1 + Math.abs(want[i].logitDrop)), `feature ${i}: logit drop ${f.logitDrop} vs ${want[i].logitDrop}`);
      assert.equal(f.changed, want[i].changed, `feature ${i}: share of changed predictions`);
    });
    assert.ok(result.features.some((f) => f.logitDrop !== 0), 'every ablation left the logits unchanged');
  });

  it('differentiates it: input gradients agree with float64 autograd', async () => {
    const grad = await buildGradientModel(bytes, { wrt: ['input'], objective: { tensor: 'logits' } });
    const meta = JSON.parse(readFileSync(join(dir, 'meta.json'), 'utf8'));
    const s = await ort.InferenceSession.create(encodeModel(grad.model));
    try {
      const out = await s.run({
        input: new ort.Tensor('float32', readF32(join(dir, 'x.bin')), meta.x),
        [grad.objectiveInputs[0]!]: new ort.Tensor('float32', readF32(join(dir, 'w_logits.bin')), meta.logits),
      });
      const err = relL2(out[grad.grads.input].data as Float32Array, readF64(join(dir, 'g_logits_f64.bin')));
      assert.ok(err <= Math.max(1e-4, 10 * meta.noise_floor), `relative error ${err.toExponential(2)} (noise floor ${meta.noise_floor.toExponential(2)})`);
    } finally {
      await s.release();
    }
  });
});

describe('constant subgraphs in the gradient builder', () => {
  it('reads the value of an Identity copy of an initializer (Pad pads, as torch.onnx stores identical ones)', async () => {
    // y = Pad(Pad(x, pads), Identity(pads)): the second Pad's pads are the exporter's Identity copy.
    const [N, C, H, W] = [2, 3, 4, 5];
    const pads = [0, 0, 1, 2, 0, 0, 2, 1]; // begins (N, C, H, W), then ends
    const model = makeModel({
      graph: makeGraph({
        name: 'pads',
        inputs: [tensorInfo('x', DataType.FLOAT, ['N', C, H, W])],
        outputs: [tensorInfo('y', DataType.FLOAT)],
        initializers: [int64Tensor('pads', [8], pads)],
        nodes: [
          node('Identity', ['pads'], ['pads_copy']),
          node('Pad', ['x', 'pads'], ['p1']),
          node('Pad', ['p1', 'pads_copy'], ['y']),
        ],
      }),
    });
    const grad = await buildGradientModel(model, { wrt: ['x'], objective: { tensor: 'y', kind: 'cotangent' } });
    // Both Pads are undone by cropping (a Slice): no scatter over element indices, which is what a
    // Pad whose pads are unknown needs.
    const ops = (grad.model.graph!.node ?? []).map((n) => n.op_type);
    assert.ok(!ops.includes('ScatterElements'), `the backward scatters: ${ops.join(', ')}`);
    const [Hy, Wy] = [H + 2 * (pads[2] + pads[6]), W + 2 * (pads[3] + pads[7])];
    const r = rng(3);
    const x = Float32Array.from({ length: N * C * H * W }, () => r.normal());
    const cot = Float32Array.from({ length: N * C * Hy * Wy }, () => r.normal());
    const s = await ort.InferenceSession.create(encodeModel(grad.model));
    try {
      const out = await s.run({ x: new ort.Tensor('float32', x, [N, C, H, W]), [grad.objectiveInputs[0]!]: new ort.Tensor('float32', cot, [N, C, Hy, Wy]) });
      const g = out[grad.grads.x].data as Float32Array;
      // d/dx Σ cot ⊙ y: the cotangent where x landed, 2·top rows and 2·left columns in.
      for (let nc = 0; nc < N * C; nc++)
        for (let i = 0; i < H; i++)
          for (let j = 0; j < W; j++) assert.equal(g[(nc * H + i) * W + j], cot[(nc * Hy + i + 2 * pads[2]) * Wy + j + 2 * pads[3]]);
    } finally {
      await s.release();
    }
  });
});
