// Benchmark: seconds per feature visualization (MACO, 256 steps) at 224 px, CPU, for ResNet-18 and
// ResNet-50 with random weights (torchvision, exported by grad_bench.py). Features are batched; the
// figure per feature is the batch's time divided by its size. --steps below 256 measures that many
// steps and scales to 256 (said so in the output).
//
//   node --import tsx stimuli-pipeline/bench/grad-fv.ts [--archs resnet18,resnet50] [--batch 8]
//        [--steps 256] [--threads N] [--device cpu]
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import type { Device } from '../src/runtime.ts';
import { visualizeFeatures } from '../src/fv/visualize.ts';
import { cachedRun, torchMissing } from '../test/torch-ref.ts';

const { values } = parseArgs({
  options: {
    archs: { type: 'string', default: 'resnet18,resnet50' },
    batch: { type: 'string', default: '8' },
    steps: { type: 'string', default: '256' },
    threads: { type: 'string', default: String(availableParallelism()) },
    device: { type: 'string', default: 'cpu' },
    tensor: { type: 'string', default: 'logits' },
  },
});
const missing = torchMissing();
if (missing) throw new Error(missing);
const batch = Number(values.batch);
const steps = Number(values.steps);
const threads = Number(values.threads);
const input = { size: 224, channels: 'rgb' as const, range: 1 as const, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };

console.log(`feature visualization (MACO), 224 px, batch ${batch}, ${steps} steps measured, ${threads} threads, ${values.device}, onnxruntime ${ort.env.versions.common}`);
const rows: string[] = [];
for (const arch of values.archs!.split(',')) {
  const dir = cachedRun('bench/grad_bench.py', [arch, 224], ['export']);
  const bytes = readFileSync(join(dir, 'model.onnx'));
  const objectives = Array.from({ length: batch }, (_, i) => ({ tensor: values.tensor!, channel: i }));
  // A short run first: graph building and session creation, which the per-step figure leaves out.
  const setup = await visualizeFeatures(bytes, input, objectives, { steps: 1, batch, threads, device: values.device as Device });
  const r = await visualizeFeatures(bytes, input, objectives, { steps, batch, threads, device: values.device as Device, seed: 1 });
  const perStep = (r.seconds - setup.seconds) / (steps - 1);
  const perFeature = (perStep * 256) / batch;
  rows.push(`| ${arch} | 224 | ${batch} | ${threads} | ${r.device} | ${perStep.toFixed(2)} | ${((batch / perStep)).toFixed(1)} | ${perFeature.toFixed(0)} | ${setup.seconds.toFixed(1)} |`);
  console.log(`${arch}: ${perStep.toFixed(3)} s per step of ${batch} features (${(batch / perStep).toFixed(1)} images/s); ${perFeature.toFixed(1)} s per feature for 256 steps${steps < 256 ? ' (scaled from ' + steps + ' steps)' : ''}; set-up ${setup.seconds.toFixed(1)} s`);
}
console.log('\n| model | px | batch | threads | device | s/step (batch) | images/s | s per feature (256 steps) | set-up s |\n|---|---|---|---|---|---|---|---|---|');
for (const r of rows) console.log(r);
