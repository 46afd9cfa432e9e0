// `legible layers` and layout inference on real torchvision exports (random weights, dynamic batch):
// VGG-16, ViT-B/16 (224 px) and ConvNeXt-Tiny (64 px), as a lab exports them with torch.onnx.export
// (test/torch-export.ts: the zoo's exports, one cache).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { layers } from '../src/commands.ts';
import { torchvisionExport, torchvisionMissing } from './torch-export.ts';

interface Row {
  name: string;
  op: string;
  type: string;
  shape: (number | string | null)[] | null;
  layout: string | null;
  class_tokens?: number;
  module: string | null;
  measured: boolean;
}

async function listing(file: string): Promise<Row[]> {
  const lines: string[] = [];
  const original = console.log;
  console.log = (...args: unknown[]) => void lines.push(args.join(' '));
  try {
    assert.equal(await layers.run([file, '--json']), 0);
  } finally {
    console.log = original;
  }
  return JSON.parse(lines.join('\n')).tensors;
}

const skip = torchvisionMissing() ?? false;

describe('legible layers on torchvision exports', { skip }, () => {
  it('VGG-16: float feature tensors only, the batch dynamic, nchw, torch module names, nothing measured', async () => {
    const vgg = torchvisionExport('vgg16');
    const rows = await listing(vgg.file);
    assert.ok(rows.length >= 38, `${rows.length} rows`);
    for (const r of rows) {
      assert.equal(r.type, 'float32', `${r.name} is ${r.type}`);
      assert.equal(r.shape?.[0], 'N', `${r.name}: batch shown as ${r.shape?.[0]}`);
      assert.ok(r.shape!.slice(1).every((d) => typeof d === 'number'), `${r.name}: ${JSON.stringify(r.shape)}`);
      assert.equal(r.layout, 'nchw', r.name);
      assert.equal(r.measured, false, `${r.name} needed onnxruntime`);
      if (r.module !== null) assert.ok(vgg.modules.includes(r.module), `${r.name}: "${r.module}" is not a module of the torch model`);
    }
    const by = new Map(rows.map((r) => [r.name, r]));
    assert.deepEqual(by.get('/features/features.28/Conv_output_0')?.shape, ['N', 512, 14, 14]);
    assert.equal(by.get('/features/features.28/Conv_output_0')?.module, 'features.28');
    assert.deepEqual(by.get('/features/features.30/MaxPool_output_0')?.shape, ['N', 512, 7, 7]);
    assert.deepEqual(by.get('/classifier/classifier.3/Gemm_output_0')?.shape, ['N', 4096]);
    assert.deepEqual(by.get('logits')?.shape, ['N', 1000]);
    // Convolutions, ReLUs and pools of the 13 conv layers, the pool, flatten, and the classifier.
    assert.equal(rows.filter((r) => r.op === 'Conv').length, 13);
  });

  it('ViT-B/16: [N, 197, 768] are tokens with one class token; [N, 768] after it is taken is a vector', async () => {
    const vit = torchvisionExport('vit_b_16');
    const rows = await listing(vit.file);
    const by = new Map(rows.map((r) => [r.name, r]));
    const block = by.get('/encoder/layers/encoder_layer_11/Add_1_output_0')!;
    assert.deepEqual(block.shape, ['N', 197, 768]);
    assert.equal(block.layout, 'tokens');
    assert.equal(block.class_tokens, 1);
    assert.equal(block.module, 'encoder.layers.encoder_layer_11');
    assert.equal(by.get('/encoder/layers/encoder_layer_3/mlp/mlp.0/Add_output_0')?.module, 'encoder.layers.encoder_layer_3.mlp.0');
    assert.equal(by.get('/conv_proj/Conv_output_0')?.layout, 'nchw');
    assert.equal(by.get('/Transpose_output_0')?.class_tokens, 0); // patch tokens before the class token is added
    // Attention internals are [tokens, batch, …] or batch × heads: not listed as per-image features.
    assert.ok(rows.every((r) => r.shape?.[0] === 'N'));
    assert.ok(!rows.some((r) => r.type !== 'float32'));
    for (const r of rows) if (r.module !== null) assert.ok(vit.modules.includes(r.module), `${r.name}: "${r.module}"`);
  });

  it('ConvNeXt-Tiny (64 px, as the zoo exports it): the permuted blocks are nhwc, the convolutions nchw', async () => {
    const cnx = torchvisionExport('convnext_tiny');
    const rows = await listing(cnx.file);
    const by = new Map(rows.map((r) => [r.name, r]));
    const mlp = by.get('/features/features.1/features.1.0/block/block.3/MatMul_output_0')!;
    assert.deepEqual(mlp.shape, ['N', 16, 16, 384]);
    assert.equal(mlp.layout, 'nhwc');
    assert.equal(mlp.module, 'features.1.0.block.3');
    assert.equal(by.get('/features/features.1/features.1.0/block/block.1/Transpose_output_0')?.layout, 'nhwc');
    assert.equal(by.get('/features/features.1/features.1.0/Add_output_0')?.layout, 'nchw');
    assert.deepEqual(by.get('/features/features.1/features.1.0/Add_output_0')?.shape, ['N', 96, 16, 16]);
    assert.ok(rows.every((r) => r.layout !== null), `unknown layouts: ${rows.filter((r) => !r.layout).map((r) => r.name).slice(0, 5)}`);
  });
});
