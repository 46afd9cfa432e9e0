// Benchmark: one forward + input-gradient step of ResNet-50 at 224 px (objective Σ w·logits), batch 1
// and 8, CPU: the gradient graph on onnxruntime vs PyTorch autograd on the same weights, same thread
// count, in one run (alternating, so both see the same machine load).
//
//   node --import tsx stimuli-pipeline/bench/grad-step.ts [--arch resnet50] [--size 224] [--batches 1,8]
//        [--threads 2] [--reps 5] [--rounds 2]
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import { Rng } from '@legible/studies/random';
import { buildGradientModel } from '../src/grad/vjp.ts';
import { encodeModel } from '../src/onnx/proto.ts';
import { cachedRun, ROOT, TORCH_PYTHON, torchMissing } from '../test/torch-ref.ts';

const { values } = parseArgs({
  options: {
    arch: { type: 'string', default: 'resnet50' },
    size: { type: 'string', default: '224' },
    batches: { type: 'string', default: '1,8' },
    threads: { type: 'string', default: String(availableParallelism()) },
    reps: { type: 'string', default: '5' },
    rounds: { type: 'string', default: '2' },
  },
});
const arch = values.arch!;
const size = Number(values.size);
const threads = Number(values.threads);
const reps = Number(values.reps);
const rounds = Number(values.rounds);
const missing = torchMissing();
if (missing) throw new Error(missing);

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const min = (xs: number[]) => Math.min(...xs);
const dir = cachedRun('bench/grad_bench.py', [arch, size], ['export']);
const bytes = readFileSync(join(dir, 'model.onnx'));
const t0 = performance.now();
const grad = await buildGradientModel(bytes, { wrt: ['input'], objective: { tensor: 'logits' } });
const buildSeconds = (performance.now() - t0) / 1000;
const session = await ort.InferenceSession.create(encodeModel(grad.model), { intraOpNumThreads: threads, interOpNumThreads: 1, graphOptimizationLevel: 'all' });

function torchTimes(batch: number): number[] {
  const r = spawnSync(TORCH_PYTHON, [join(ROOT, 'stimuli-pipeline/bench/grad_bench.py'), 'time', arch, String(size), String(batch), String(threads), String(reps)], {
    encoding: 'utf8',
    env: { ...process.env, PYTHONWARNINGS: 'ignore', OMP_NUM_THREADS: String(threads) },
  });
  if (r.status !== 0) throw new Error(r.stderr);
  return JSON.parse(r.stdout.trim().split('\n').at(-1)!).times;
}

async function ortTimes(batch: number): Promise<number[]> {
  const rng = new Rng(1);
  const x = Float32Array.from({ length: batch * 3 * size * size }, () => rng.normal());
  const w = Float32Array.from({ length: batch * 1000 }, () => rng.normal());
  const feeds = { input: new ort.Tensor('float32', x, [batch, 3, size, size]), [grad.objectiveInputs[0]!]: new ort.Tensor('float32', w, [batch, 1000]) };
  await session.run(feeds); // warm-up
  const times: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t = performance.now();
    await session.run(feeds);
    times.push((performance.now() - t) / 1000);
  }
  return times;
}

console.log(`${arch} ${size} px, forward + input gradient, ${threads} threads, onnxruntime ${ort.env.versions.common}; gradient graph built in ${buildSeconds.toFixed(1)} s (${grad.model.graph!.node!.length} nodes)`);
const rows: string[] = [];
for (const batch of values.batches!.split(',').map(Number)) {
  const ortAll: number[] = [];
  const torchAll: number[] = [];
  for (let r = 0; r < rounds; r++) {
    ortAll.push(...(await ortTimes(batch)));
    torchAll.push(...torchTimes(batch));
  }
  // The fastest step of each: on a shared machine, the one least disturbed by other work.
  const o = min(ortAll);
  const p = min(torchAll);
  const row = `| ${arch} | ${size} | ${batch} | ${threads} | ${o.toFixed(3)} | ${p.toFixed(3)} | ${(o / p).toFixed(2)} | ${median(ortAll).toFixed(3)} / ${median(torchAll).toFixed(3)} |`;
  rows.push(row);
  console.log(`batch ${batch}: onnxruntime ${o.toFixed(3)} s (${(batch / o).toFixed(1)} img/s), PyTorch ${p.toFixed(3)} s (${(batch / p).toFixed(1)} img/s), ratio ${(o / p).toFixed(2)} (medians ${median(ortAll).toFixed(3)} / ${median(torchAll).toFixed(3)})`);
}
console.log('\n| model | px | batch | threads | onnxruntime s/step (min) | PyTorch s/step (min) | ratio | medians |\n|---|---|---|---|---|---|---|---|');
for (const r of rows) console.log(r);
await session.release();
