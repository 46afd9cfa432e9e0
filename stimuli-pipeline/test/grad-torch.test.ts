// Input gradients of torchvision architectures (random weights, exported with torch.onnx) against
// PyTorch autograd in float64 on the same float32 weights: relative L2 error ≤ 1e-4 in float32.
// References are computed by grad_reference.py with Debian's python3-torch and cached in .cache/.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import * as ort from 'onnxruntime-node';
import { encodeModel } from '../src/onnx/proto.ts';
import { buildGradientModel } from '../src/grad/vjp.ts';
import { cachedRun, readF32, readF64, relL2, torchMissing } from './torch-ref.ts';

const ARCHS: [arch: string, size: number, batch: number, opset: number][] = [
  ['resnet18', 64, 2, 17],
  ['resnet50', 64, 1, 13],
  ['vgg11', 64, 2, 17],
  ['vgg16', 64, 1, 17],
  ['googlenet', 64, 1, 15],
  ['densenet121', 64, 1, 17],
  ['mobilenet_v2', 64, 2, 17],
  ['mobilenet_v3_small', 64, 2, 17],
  ['mobilenet_v3_large', 64, 1, 16],
  ['vit_tiny', 32, 2, 17],
  ['convnext_tiny_s', 64, 2, 17],
];

const TOL = 1e-4;

describe('input gradients of torchvision architectures vs PyTorch autograd', { skip: torchMissing() ?? false }, () => {
  for (const [arch, size, batch, opset] of ARCHS) {
    it(`${arch} (${size} px, batch ${batch}, opset ${opset})`, async (t) => {
      const dir = cachedRun('grad_reference.py', [arch, size, batch, opset]);
      const meta = JSON.parse(readFileSync(join(dir, 'meta.json'), 'utf8'));
      // One gradient model (batch dynamic) for both objectives: the run picks one by zeroing the other's weights.
      const grad = await buildGradientModel(readFileSync(join(dir, 'model.onnx')), { wrt: ['input'], objective: [{ tensor: 'logits' }, { tensor: 'feat' }] });
      const session = await ort.InferenceSession.create(encodeModel(grad.model));
      try {
        const x = readF32(join(dir, 'x.bin'));
        const weights = { logits: readF32(join(dir, 'w_logits.bin')), feat: readF32(join(dir, 'w_feat.bin')) };
        const dims = { logits: meta.logits as number[], feat: (meta.feat as number[]).slice(0, 2) };
        const errors: Record<string, number> = {};
        for (const which of ['logits', 'feat'] as const) {
          const feeds: Record<string, ort.Tensor> = { input: new ort.Tensor('float32', x, meta.x) };
          (['logits', 'feat'] as const).forEach((o, i) => {
            feeds[grad.objectiveInputs[i]!] = new ort.Tensor('float32', o === which ? weights[o] : new Float32Array(weights[o].length), dims[o]);
          });
          const out = await session.run(feeds);
          const g = out[grad.grads.input].data as Float32Array;
          errors[which] = relL2(g, readF64(join(dir, `g_${which}_f64.bin`)));
        }
        t.diagnostic(
          `${arch}: relative L2 error vs float64 autograd: logits ${errors.logits.toExponential(2)}, ${meta.feat_module} ${errors.feat.toExponential(2)}` +
            ` (PyTorch float32: ${meta.torch_f32_rel_err.logits.toExponential(2)}, ${meta.torch_f32_rel_err.feat.toExponential(2)}; seed ${meta.seed})`,
        );
        for (const [which, err] of Object.entries(errors)) assert.ok(err <= TOL, `${arch} ${which}: relative error ${err.toExponential(2)} > ${TOL}`);
      } finally {
        await session.release();
      }
    });
  }
});
