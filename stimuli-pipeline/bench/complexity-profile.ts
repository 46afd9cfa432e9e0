// Profile of one disentangler's training step (feature complexity, issue 15): onnxruntime's per-node
// profiler on the gradient graph of train/disentangler.ts, kernel time summed by operator type and by
// the forward/backward node it belongs to, plus the wall time of the whole step (feeds, run, Adam).
//
//   node --import tsx stimuli-pipeline/bench/complexity-profile.ts [--input 1,28,28] [--output 32,14,14]
//        [--width 16] [--depth 7] [--batch 32] [--threads 1] [--steps 20] [--opt all] [--profile]
//
// AB=before=DIR,after: no profiler; the step of the gradient graph built by another checkout's engine
// (DIR: e.g. a git worktree of the parent commit) and by this one, interleaved step by step in one
// process, median ms each, and the forward pass alone.
import { readFileSync, readdirSync, rmSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import { buildGradientModel } from '../src/grad/vjp.ts';
import { encodeModel } from '../src/onnx/proto.ts';
import { Adam } from '../src/train/adam.ts';
import { disentanglerModel, disentanglerParams, initDisentangler, type DisentanglerShape } from '../src/train/disentangler.ts';

const { values } = parseArgs({
  options: {
    input: { type: 'string', default: '1,28,28' },
    output: { type: 'string', default: '32,14,14' },
    width: { type: 'string', default: '16' },
    depth: { type: 'string', default: '7' },
    batch: { type: 'string', default: '32' },
    threads: { type: 'string', default: '1' },
    steps: { type: 'string', default: '20' },
    opt: { type: 'string', default: 'all' },
    profile: { type: 'boolean', default: false },
  },
});
const input = values.input!.split(',').map(Number) as [number, number, number];
const output = values.output!.split(',').map(Number) as [number, number, number];
const shape: DisentanglerShape = { input, output, width: Number(values.width), depth: Number(values.depth) };
const batch = Number(values.batch);
const steps = Number(values.steps);
const params = initDisentangler(shape, 1);
const specs = disentanglerParams(shape);
if (process.env.AB) {
  const variants = process.env.AB.split(',');
  const sessions: { v: string; gm: Awaited<ReturnType<typeof buildGradientModel>>; s: ort.InferenceSession }[] = [];
  for (const v of variants) {
    process.env.LEGIBLE_DW = v;
    const gm = await buildGradientModel(disentanglerModel(shape, params, true), { wrt: specs.map((p) => p.name), objective: { tensor: 'loss', kind: 'sum' }, params: 'inputs', stopGradient: ['t'] });
    sessions.push({ v, gm, s: await ort.InferenceSession.create(encodeModel(gm.model), { graphOptimizationLevel: 'all', intraOpNumThreads: Number(values.threads), interOpNumThreads: 1 }) });
  }
  const fwd = await ort.InferenceSession.create(encodeModel(disentanglerModel(shape, params, false)), { graphOptimizationLevel: 'all', intraOpNumThreads: Number(values.threads), interOpNumThreads: 1 });
  const xa = new Float32Array(batch * input.reduce((a, b) => a * b)).map((_, i) => Math.sin(i * 0.37));
  const ta = new Float32Array(batch * output.reduce((a, b) => a * b)).map((_, i) => Math.cos(i * 0.11));
  // The output convolution starts at 0 (no gradient reaches the rest): give it values for the comparison.
  params['out.weight'] = params['out.weight'].map((_, i) => 0.05 * Math.sin(i * 1.7));
  const times: number[][] = sessions.map(() => []);
  const firstGrads: Record<string, Float32Array>[] = [];
  const fwdTimes: number[] = [];
  for (let st = 0; st < steps; st++) {
    for (let j = 0; j < sessions.length; j++) {
      const feeds: Record<string, ort.Tensor> = { x: new ort.Tensor('float32', xa, [batch, ...input]), t: new ort.Tensor('float32', ta, [batch, ...output]) };
      for (const p of specs) feeds[p.name] = new ort.Tensor('float32', params[p.name], p.dims);
      const t0 = performance.now();
      const out = await sessions[j].s.run(feeds);
      times[j].push(performance.now() - t0);
      if (st === 0) firstGrads.push(Object.fromEntries(specs.map((p) => [p.name, out[sessions[j].gm.grads[p.name]].data as Float32Array])));
    }
    const t0 = performance.now();
    await fwd.run({ x: new ort.Tensor('float32', xa, [batch, ...input]) });
    fwdTimes.push(performance.now() - t0);
  }
  const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  console.log(`depth ${shape.depth} [${input}]→[${output}] width ${shape.width}, ${values.threads} thread(s): ${sessions.map((s, j) => `${s.v.startsWith('before=') ? 'before' : s.v} ${med(times[j]).toFixed(1)} ms`).join(', ')}; forward only ${med(fwdTimes).toFixed(1)} ms; largest |gradient| of block0.conv1 / in.weight ${Math.max(...Array.from(firstGrads[0][specs[2].name], Math.abs)).toExponential(2)} / ${Math.max(...Array.from(firstGrads[0]["in.weight"], Math.abs)).toExponential(2)}; largest difference to the first variant, relative to each parameter's largest gradient: ${firstGrads
      .slice(1)
      .map((gr) => Math.max(...specs.map((p) => { const a = firstGrads[0][p.name]; const b = gr[p.name]; let d = 0; let m = 0; for (let i = 0; i < a.length; i++) { d = Math.max(d, Math.abs(a[i] - b[i])); m = Math.max(m, Math.abs(a[i])); } return m > 0 ? d / m : d; })).toExponential(2))
      .join(', ')}`);
  process.exit(0);
}
const grad = await buildGradientModel(disentanglerModel(shape, params, true), { wrt: specs.map((p) => p.name), objective: { tensor: 'loss', kind: 'sum' }, params: 'inputs', stopGradient: ['t'] });
const dir = mkdtempSync(join(tmpdir(), 'legible-cxprof-'));
const session = await ort.InferenceSession.create(encodeModel(grad.model), {
  graphOptimizationLevel: values.opt as 'all' | 'extended' | 'basic',
  intraOpNumThreads: Number(values.threads),
  interOpNumThreads: 1,
  enableProfiling: values.profile,
  profileFilePrefix: join(dir, 'p'),
});
const x = new Float32Array(batch * input.reduce((a, b) => a * b));
const t = new Float32Array(batch * output.reduce((a, b) => a * b));
for (let i = 0; i < x.length; i++) x[i] = Math.sin(i * 0.37);
for (let i = 0; i < t.length; i++) t[i] = Math.cos(i * 0.11);
const adam = new Adam(params, { lr: 3e-3 });
const wall: number[] = [];
const runMs: number[] = [];
for (let s = 0; s < steps; s++) {
  const t0 = performance.now();
  const feeds: Record<string, ort.Tensor> = { x: new ort.Tensor('float32', x, [batch, ...input]), t: new ort.Tensor('float32', t, [batch, ...output]) };
  for (const p of specs) feeds[p.name] = new ort.Tensor('float32', params[p.name], p.dims);
  const r0 = performance.now();
  const out = await session.run(feeds);
  runMs.push(performance.now() - r0);
  const grads: Record<string, Float32Array> = {};
  for (const p of specs) grads[p.name] = out[grad.grads[p.name]].data as Float32Array;
  adam.step(grads);
  wall.push(performance.now() - t0);
}
if (!values.profile) {
  const med0 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  console.log(`shape ${JSON.stringify(shape)}, batch ${batch}, ${values.threads} thread(s), opt ${values.opt}, ${steps} steps: median step ${med0(wall.slice(2)).toFixed(1)} ms (session.run ${med0(runMs.slice(2)).toFixed(1)} ms)`);
  process.exit(0);
}
session.endProfiling();
await session.release();
const file = readdirSync(dir).find((f) => f.endsWith('.json'))!;
type Ev = { cat: string; name: string; dur: number; args?: { op_name?: string } };
const events = JSON.parse(readFileSync(join(dir, file), 'utf8')) as Ev[];
rmSync(dir, { recursive: true, force: true });
const byOp = new Map<string, number>();
const byNode = new Map<string, number>();
let total = 0;
for (const ev of events) {
  if (ev.cat !== 'Node' || !ev.name.endsWith('_kernel_time')) continue;
  const op = ev.args?.op_name ?? '?';
  byOp.set(op, (byOp.get(op) ?? 0) + ev.dur);
  const nodeName = ev.name.replace(/_kernel_time$/, '');
  byNode.set(`${op} ${nodeName}`, (byNode.get(`${op} ${nodeName}`) ?? 0) + ev.dur);
  total += ev.dur;
}
const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
console.log(`shape ${JSON.stringify(shape)}, batch ${batch}, ${values.threads} thread(s), ${steps} steps: median step ${med(wall).toFixed(1)} ms (session.run ${med(runMs).toFixed(1)} ms); kernel time ${(total / 1000 / steps).toFixed(1)} ms/step`);
for (const [op, us] of [...byOp].sort((a, b) => b[1] - a[1]).slice(0, 12)) console.log(`  ${op.padEnd(22)} ${(us / 1000 / steps).toFixed(2).padStart(8)} ms/step  ${((100 * us) / total).toFixed(1)} %`);
console.log('  top nodes:');
for (const [n, us] of [...byNode].sort((a, b) => b[1] - a[1]).slice(0, 12)) console.log(`  ${n.slice(0, 70).padEnd(72)} ${(us / 1000 / steps).toFixed(2).padStart(8)} ms/step`);
