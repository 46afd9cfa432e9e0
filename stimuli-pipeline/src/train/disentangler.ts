// Disentangler nets (feature complexity, issue 15; the "Disentanglement, Visualization and Analysis of
// Complex Features in DNNs" construction): residual convolutional nets of increasing depth l, each
// trained by distillation (MSE) to reproduce a layer's feature maps f(x) from the image x. Φ(l) holds
// every component of f of order ≤ l; c(l) = Φ(l) − Φ(l−1) is the component of order l.
//
//   x [N, Cin, H, W]
//   conv in   Cin → width, kernel k = H − (h−1)·s, stride s = ⌊H/h⌋ (per axis), no padding:
//             a linear patch embedding that resamples the image to the layer's grid h × w
//   l blocks  z ← z + conv3×3(ReLU(conv3×3(z)))          (one nonlinear layer each; l = 0: none)
//   conv out  1×1, width → C (the layer's channels)
//
// The target is standardised per channel (mean and standard deviation over the training images and
// positions), so every channel counts alike in the loss; predictions come back in the layer's units.
// Training: the forward graph is built with graph.ts, its parameter gradients by grad/vjp.ts, Adam
// (train/adam.ts) updates them between onnxruntime runs. Deterministic for a seed (initialisation,
// held-out split, batch order) at a fixed thread count.
//
// Threads: onnxruntime's intra-op threads gain little on these small convolutions (ResNet-50 layer3
// ladder, [32, 32, 7, 7] maps: 1.04× from a second thread, quiet machine), and onnxruntime-node's
// session.run computes on the calling JS thread, so two sessions on one thread never overlap. With
// `threads: T ≥ 2` (by default T = 2, on every machine) each step is data-parallel instead: the batch
// is split into T fixed contiguous parts, each part's gradient graph runs on its own session — part 0 on the
// main thread, the others on plain-JS worker threads (parallel.ts's WorkerTeam) — and the batch's loss
// and gradient are the parts' size-weighted means (the loss is a ReduceMean over the batch). The
// workers get their image slices gathered by the main thread into shared memory (the images are the
// caller's, never copied whole), gather their targets from the standardised maps (made in shared
// memory), read the parameters from a shared copy and write their gradients to shared memory; steps
// are signalled with Atomics. The parts' sum differs from one session's in float32 round-off only.
import type { InferenceSession, Tensor } from 'onnxruntime-node';
import { LegibleError, Rng } from '@legible/studies';
import { attr, makeGraph, makeModel, node, tensorInfo } from '../onnx/graph.ts';
import { DataType, encodeModel, float32Tensor } from '../onnx/proto.ts';
import { buildGradientModel } from '../grad/vjp.ts';
import { createRequire } from 'node:module';
import { openSession, type Device } from '../runtime.ts';
import { sharedFloat32, WorkerTeam } from '../parallel.ts';
import { Adam } from './adam.ts';

/** Shapes of one disentangler: image [Cin, H, W] → feature maps [C, h, w]. */
export interface DisentanglerShape {
  input: readonly [number, number, number];
  output: readonly [number, number, number];
  width: number;
  depth: number;
}

/** Parameter names and shapes, in a fixed order (PyTorch's reference reads them in this order). */
export function disentanglerParams(s: DisentanglerShape): { name: string; dims: number[] }[] {
  const [cin] = s.input;
  const [c] = s.output;
  const { kernel } = inputConv(s);
  const out = [
    { name: 'in.weight', dims: [s.width, cin, kernel[0], kernel[1]] },
    { name: 'in.bias', dims: [s.width] },
  ];
  for (let b = 0; b < s.depth; b++) {
    out.push({ name: `block${b}.conv1.weight`, dims: [s.width, s.width, 3, 3] }, { name: `block${b}.conv1.bias`, dims: [s.width] });
    out.push({ name: `block${b}.conv2.weight`, dims: [s.width, s.width, 3, 3] }, { name: `block${b}.conv2.bias`, dims: [s.width] });
  }
  out.push({ name: 'out.weight', dims: [c, s.width, 1, 1] }, { name: 'out.bias', dims: [c] });
  return out;
}

/** The input convolution's kernel and stride that map H × W onto h × w exactly. */
export function inputConv(s: Pick<DisentanglerShape, 'input' | 'output'>): { kernel: [number, number]; stride: [number, number] } {
  const [, H, W] = s.input;
  const [, h, w] = s.output;
  if (h > H || w > W || h < 1 || w < 1) throw new LegibleError(`complexity: the layer's grid ${h}×${w} is larger than the image (${H}×${W}); disentanglers only resample down`);
  const sh = Math.floor(H / h);
  const sw = Math.floor(W / w);
  return { kernel: [H - (h - 1) * sh, W - (w - 1) * sw], stride: [sh, sw] };
}

/** Seeded initialisation: He normal before a ReLU, residual branches' second convolution scaled by 1/√depth, a zero output convolution, zero biases. */
export function initDisentangler(s: DisentanglerShape, seed: number): Record<string, Float32Array> {
  const r = new Rng(seed);
  const params: Record<string, Float32Array> = {};
  for (const p of disentanglerParams(s)) {
    const size = p.dims.reduce((a, b) => a * b, 1);
    const v = new Float32Array(size);
    if (p.dims.length === 4) {
      const fanIn = p.dims[1] * p.dims[2] * p.dims[3];
      // The output convolution starts at 0: Φ starts at each channel's mean (loss 1), not at a random map.
      const gain = p.name.endsWith('conv2.weight') ? Math.sqrt(1 / fanIn / Math.max(1, s.depth)) : p.name === 'out.weight' ? 0 : Math.sqrt(2 / fanIn);
      for (let i = 0; i < size; i++) v[i] = r.normal() * gain;
    }
    params[p.name] = v;
  }
  return params;
}

/** The forward graph x → y (and, with a target input t, the scalar MSE "loss"). Parameters are initializers. */
export function disentanglerModel(s: DisentanglerShape, params: Record<string, Float32Array>, withLoss: boolean) {
  const [cin, H, W] = s.input;
  const [c, h, w] = s.output;
  const { kernel, stride } = inputConv(s);
  const nodes = [node('Conv', ['x', 'in.weight', 'in.bias'], ['z0'], [attr.ints('kernel_shape', kernel), attr.ints('strides', stride)])];
  const pad = [attr.ints('kernel_shape', [3, 3]), attr.ints('pads', [1, 1, 1, 1])];
  for (let b = 0; b < s.depth; b++) {
    const p = `block${b}`;
    nodes.push(
      node('Conv', [`z${b}`, `${p}.conv1.weight`, `${p}.conv1.bias`], [`${p}.a`], pad),
      node('Relu', [`${p}.a`], [`${p}.r`]),
      node('Conv', [`${p}.r`, `${p}.conv2.weight`, `${p}.conv2.bias`], [`${p}.d`], pad),
      node('Add', [`z${b}`, `${p}.d`], [`z${b + 1}`]),
    );
  }
  nodes.push(node('Conv', [`z${s.depth}`, 'out.weight', 'out.bias'], ['y']));
  const inputs = [tensorInfo('x', DataType.FLOAT, ['N', cin, H, W])];
  const outputs = [tensorInfo('y', DataType.FLOAT, ['N', c, h, w])];
  if (withLoss) {
    inputs.push(tensorInfo('t', DataType.FLOAT, ['N', c, h, w]));
    nodes.push(node('Sub', ['y', 't'], ['err']), node('Mul', ['err', 'err'], ['sq']), node('ReduceMean', ['sq'], ['loss'], [attr.int('keepdims', 0)]));
    outputs.push(tensorInfo('loss', DataType.FLOAT, []));
  }
  const initializers = disentanglerParams(s).map((p) => float32Tensor(p.name, p.dims, params[p.name]));
  return makeModel({ graph: makeGraph({ name: `disentangler_d${s.depth}`, nodes, inputs, outputs, initializers }), opset: 17 });
}

export interface LadderOptions {
  /** Depths (nonlinear layers) of the ladder, ascending; default [1, 2, 4, 7, 13]. */
  depths?: readonly number[];
  /** Channels of every hidden convolution (default 32). */
  width?: number;
  epochs?: number;
  /** Images per Adam step (default 32). */
  batchSize?: number;
  /** Adam learning rate (default 3e-3). */
  lr?: number;
  seed?: number;
  /** Share of the images held out to measure the fit (default 0.2). */
  heldOut?: number;
  /** Initial parameters per depth (default initDisentangler(shape, seed + depth)): the PyTorch parity test passes its own. */
  init?: (shape: DisentanglerShape) => Record<string, Float32Array>;
  device?: Device;
  /**
   * CPU threads. 1: one onnxruntime session with one intra-op thread. T ≥ 2: data-parallel steps —
   * every batch split into T fixed contiguous parts, each part's gradient run on its own session with
   * one intra-op thread (the main thread runs the first part, T − 1 worker threads the others), the
   * gradients and loss combined weighted by part size. Default (absent or 0): two parts from batches
   * of 16 up (one below), every session on one intra-op thread, whatever the machine — so the
   * results are the same on every machine. (Evaluation runs on one session with `threads` intra-op
   * threads, one by default.) On a GPU device the training runs on one session.
   */
  threads?: number;
  log?: (s: string) => void;
  /** Called with each epoch's order of the training images (the PyTorch parity test replays it). */
  onEpoch?: (depth: number, epoch: number, order: readonly number[]) => void;
}

export interface RungResult {
  depth: number;
  /** Mean training loss (standardised units: a channel's fraction of variance) of each epoch. */
  history: number[];
  /** Loss on the held-out images after training (standardised units; 1 ≈ predicting each channel's mean). */
  heldOutLoss: number;
  /** Loss on the training images after training (same units): a gap to heldOutLoss is overfitting. */
  trainLoss: number;
  steps: number;
  seconds: number;
  /** Wall-clock seconds of each training epoch (steps only: no graph building, no evaluation). */
  epochSeconds: number[];
  params: Record<string, Float32Array>;
}

export interface Ladder {
  shape: Omit<DisentanglerShape, 'depth'>;
  rungs: RungResult[];
  /** Indices of the training and held-out images. */
  train: number[];
  heldOut: number[];
  /** Per channel: the mean and standard deviation the target was standardised with (training images). */
  mean: Float64Array;
  std: Float64Array;
  /** Layer maps Φ(l) of `count` images (x: [count, Cin, H, W]) for each rung, in the layer's units. */
  predict(x: Float32Array, count: number): Promise<Float32Array[]>;
  release(): Promise<void>;
}

export const DEFAULT_DEPTHS = [1, 2, 4, 7, 13] as const;

/**
 * Trains one disentangler per depth on images x [n, Cin, H, W] (the model's normalised input) to
 * reproduce the layer's maps f [n, C, h, w].
 */
export async function trainLadder(
  x: Float32Array,
  f: Float32Array,
  n: number,
  input: readonly [number, number, number],
  output: readonly [number, number, number],
  opts: LadderOptions = {},
): Promise<Ladder> {
  const depths = [...(opts.depths ?? DEFAULT_DEPTHS)];
  const width = opts.width ?? 32;
  const epochs = opts.epochs ?? 20;
  const seed = opts.seed ?? 0;
  const log = opts.log ?? (() => {});
  const inSize = input[0] * input[1] * input[2];
  const [c, h, w] = output;
  const plane = h * w;
  const outSize = c * plane;
  inputConv({ input, output });
  if (x.length !== n * inSize) throw new LegibleError(`complexity: ${x.length} input values are not ${n} images of [${input}]`);
  if (f.length !== n * outSize) throw new LegibleError(`complexity: ${f.length} target values are not ${n} maps of [${output}]`);
  if (!depths.length || depths.some((d, i) => !Number.isInteger(d) || d < 0 || (i > 0 && d <= depths[i - 1]))) {
    throw new LegibleError(`complexity.depths must be distinct whole numbers ≥ 0 in ascending order, got [${depths.join(', ')}]`);
  }
  if (!(Number.isInteger(width) && width >= 1)) throw new LegibleError(`complexity.width must be a whole number ≥ 1, got ${width}`);
  const heldOutShare = opts.heldOut ?? 0.2;
  const nHeld = Math.round(n * heldOutShare);
  if (nHeld < 1 || n - nHeld < 2) throw new LegibleError(`complexity: ${n} images are too few to train on some and hold out ${Math.round(100 * heldOutShare)} %; give complexity.images ≥ 10`);
  for (let i = 0; i < f.length; i++) if (!Number.isFinite(f[i])) throw new LegibleError(`complexity: the layer's activation ${i} is ${f[i]}`);

  // Held-out split and per-channel standardisation (training images only).
  const r = new Rng(seed);
  const perm = r.shuffle(Array.from({ length: n }, (_, i) => i));
  const heldOut = perm.slice(0, nHeld).sort((a, b) => a - b);
  const train = perm.slice(nHeld).sort((a, b) => a - b);
  const mean = new Float64Array(c);
  const std = new Float64Array(c);
  for (const i of train) for (let ch = 0; ch < c; ch++) for (let p = 0; p < plane; p++) mean[ch] += f[i * outSize + ch * plane + p];
  for (let ch = 0; ch < c; ch++) mean[ch] /= train.length * plane;
  for (const i of train) for (let ch = 0; ch < c; ch++) for (let p = 0; p < plane; p++) std[ch] += (f[i * outSize + ch * plane + p] - mean[ch]) ** 2;
  for (let ch = 0; ch < c; ch++) std[ch] = Math.sqrt(std[ch] / (train.length * plane)) || 1;
  const batch = Math.min(opts.batchSize ?? 32, train.length);
  const threads = opts.threads ?? 0;
  if (!(Number.isInteger(threads) && threads >= 0)) throw new LegibleError(`complexity: threads must be a whole number ≥ 0 (0: one per core), got ${threads}`);
  // Data-parallel parts: fixed, contiguous, as equal as can be (the first batch % T one image larger).
  // The default does not depend on the machine: the parts' round-off shapes the training (and
  // onnxruntime's intra-op thread count changes some kernels' round-off), so a study's complexity
  // results must not change with the core count. Two parts from batches of 16 images up, one below,
  // every session on one intra-op thread: reproducible everywhere, at the price of using two cores.
  const T = Math.min(batch, threads || (batch >= 16 ? 2 : 1));
  const sessionThreads = threads || 1;
  const partSize = Array.from({ length: T }, (_, k) => Math.floor(batch / T) + (k < batch % T ? 1 : 0));
  const partStart = partSize.map((_, k) => partSize.slice(0, k).reduce((a, b) => a + b, 0));
  // The standardised targets: in shared memory when workers train parts (they gather their own slices).
  const z = T > 1 ? sharedFloat32(f.length) : new Float32Array(f.length);
  for (let i = 0; i < n; i++) for (let ch = 0; ch < c; ch++) for (let p = 0; p < plane; p++) {
    const k = i * outSize + ch * plane + p;
    z[k] = (f[k] - mean[ch]) / std[ch];
  }

  const ort = await import('onnxruntime-node');
  let team: WorkerTeam | null = null;
  const rungs: RungResult[] = [];
  const evalSessions: InferenceSession[] = [];
  const gather = (src: Float32Array, size: number, idx: readonly number[], start: number, m: number, out: Float32Array) => {
    for (let i = 0; i < m; i++) out.set(src.subarray(idx[start + i] * size, (idx[start + i] + 1) * size), i * size);
  };
  try {
    for (const depth of depths) {
      const started = performance.now();
      const shape: DisentanglerShape = { input, output, width, depth };
      const params = opts.init ? cloneParams(opts.init(shape)) : initDisentangler(shape, seed + 1000 * (depth + 1));
      const specs = disentanglerParams(shape);
      const grad = await buildGradientModel(disentanglerModel(shape, params, true), {
        wrt: specs.map((p) => p.name),
        objective: { tensor: 'loss', kind: 'sum' },
        params: 'inputs',
        stopGradient: ['t'],
      });
      const gradModel = encodeModel(grad.model);
      const opened = await openSession(gradModel, { device: opts.device, threads: T > 1 ? 1 : sessionThreads });
      const session = opened.session;
      // Several parts only on the CPU (a GPU session trains the whole batch).
      const parts = opened.device === 'cpu' ? T : 1;
      const m0 = parts > 1 ? partSize[0] : batch;
      const adam = new Adam(params, { lr: opts.lr ?? 3e-3 });
      const order = train.slice();
      const xb = new Float32Array(m0 * inSize);
      const tb = new Float32Array(m0 * outSize);
      const feeds: Record<string, Tensor> = {
        x: new ort.Tensor('float32', xb, [m0, ...input]),
        t: new ort.Tensor('float32', tb, [m0, ...output]),
      };
      // Parts 1… on the workers: their batch slices, the parameters (one copy, read by all) and
      // their gradients and loss in shared memory; the main thread gathers the slices.
      let shared: { params: Float32Array; offset: number[]; order: Int32Array; cursor: Int32Array; x: Float32Array[]; grads: Float32Array[]; loss: Float32Array[] } | null = null;
      const combined: Record<string, Float32Array> = {};
      if (parts > 1) {
        team ??= new WorkerTeam('complexity', T - 1, LADDER_WORKER, () => ({ ort: createRequire(import.meta.url).resolve('onnxruntime-node') }));
        const offset = specs.map((_, k) => specs.slice(0, k).reduce((a, p) => a + p.dims.reduce((u, v) => u * v, 1), 0));
        const total = offset.at(-1)! + specs.at(-1)!.dims.reduce((u, v) => u * v, 1);
        shared = {
          params: sharedFloat32(total),
          offset,
          order: new Int32Array(new SharedArrayBuffer(4 * train.length)),
          cursor: new Int32Array(new SharedArrayBuffer(4)),
          x: partSize.slice(1).map((m) => sharedFloat32(m * inSize)),
          grads: partSize.slice(1).map(() => sharedFloat32(total)),
          loss: partSize.slice(1).map(() => sharedFloat32(1)),
        };
        for (const p of specs) combined[p.name] = new Float32Array(params[p.name].length);
        const sh = shared;
        await Promise.all(
          partSize.slice(1).map((m, j) =>
            team!.request(j, 'rung', {
              model: gradModel,
              m,
              first: partStart[j + 1],
              input,
              output,
              outSize,
              specs: specs.map((p, k) => ({ name: p.name, dims: p.dims, offset: offset[k], grad: grad.grads[p.name] })),
              objective: grad.objective,
              x: sh.x[j].buffer,
              z: z.buffer,
              order: sh.order.buffer,
              cursor: sh.cursor.buffer,
              params: sh.params.buffer,
              grads: sh.grads[j].buffer,
              loss: sh.loss[j].buffer,
            }),
          ),
        );
        team.startSteps();
      }
      const history: number[] = [];
      const epochSeconds: number[] = [];
      let steps = 0;
      try {
        for (let epoch = 0; epoch < epochs; epoch++) {
          r.shuffle(order);
          opts.onEpoch?.(depth, epoch, order);
          shared?.order.set(order);
          const epochStart = performance.now();
          let sum = 0;
          for (let start = 0; start + batch <= order.length; start += batch) {
            if (shared) {
              for (const [k, p] of specs.entries()) shared.params.set(params[p.name], shared.offset[k]);
              // The images are the caller's (not shared): the main thread gathers the workers' slices;
              // the workers gather their targets from the shared z themselves.
              for (let j = 0; j < T - 1; j++) gather(x, inSize, order, start + partStart[j + 1], partSize[j + 1], shared.x[j]);
              shared.cursor[0] = start;
              team!.step();
            }
            gather(x, inSize, order, start, m0, xb);
            gather(z, outSize, order, start, m0, tb);
            for (const p of specs) feeds[p.name] = new ort.Tensor('float32', params[p.name], p.dims);
            const out = await session.run(feeds);
            let loss = ((out[grad.objective] as Tensor).data as Float32Array)[0];
            let grads: Record<string, Float32Array> = {};
            if (shared) {
              await team!.stepped();
              // The loss is a mean over the part: the batch's is the parts' size-weighted mean, and so is its gradient.
              const w = partSize.map((m) => m / batch);
              loss *= w[0];
              for (let j = 0; j < T - 1; j++) loss += w[j + 1] * shared.loss[j][0];
              for (const [k, p] of specs.entries()) {
                const g = combined[p.name];
                const g0 = (out[grad.grads[p.name]] as Tensor).data as Float32Array;
                const o = shared.offset[k];
                const w0 = w[0];
                for (let i = 0; i < g.length; i++) g[i] = w0 * g0[i];
                for (let j = 0; j < T - 1; j++) {
                  const gj = shared.grads[j];
                  const wj = w[j + 1];
                  for (let i = 0; i < g.length; i++) g[i] += wj * gj[o + i];
                }
              }
              grads = combined;
            } else {
              for (const p of specs) grads[p.name] = (out[grad.grads[p.name]] as Tensor).data as Float32Array;
            }
            adam.step(grads);
            sum += loss;
            steps++;
          }
          history.push(sum / Math.floor(order.length / batch));
          epochSeconds.push((performance.now() - epochStart) / 1000);
        }
        if (shared) {
          await team!.stopSteps();
          await team!.broadcast('release');
        }
      } finally {
        await session.release();
      }
      const evalSession = (await openSession(encodeModel(disentanglerModel(shape, params, false)), { device: opts.device, threads: sessionThreads })).session;
      evalSessions.push(evalSession);
      const lossOn = async (idx: number[]) => {
        let sq = 0;
        const chunk = 64;
        const xs = new Float32Array(chunk * inSize);
        for (let s = 0; s < idx.length; s += chunk) {
          const m = Math.min(chunk, idx.length - s);
          gather(x, inSize, idx, s, m, xs);
          const y = ((await evalSession.run({ x: new ort.Tensor('float32', xs.subarray(0, m * inSize), [m, ...input]) })).y as Tensor).data as Float32Array;
          for (let i = 0; i < m; i++) {
            const o = idx[s + i] * outSize;
            for (let k = 0; k < outSize; k++) sq += (y[i * outSize + k] - z[o + k]) ** 2;
          }
        }
        return sq / (idx.length * outSize);
      };
      const rung: RungResult = { depth, history, heldOutLoss: await lossOn(heldOut), trainLoss: await lossOn(train), steps, epochSeconds, seconds: (performance.now() - started) / 1000, params };
      rungs.push(rung);
      log(`disentangler depth ${depth} (width ${width}, ${epochs} epochs, ${steps} steps): train loss ${rung.trainLoss.toFixed(4)}, held-out ${rung.heldOutLoss.toFixed(4)} (${rung.seconds.toFixed(1)} s)`);
    }
  } catch (err) {
    await Promise.all(evalSessions.map((s) => s.release()));
    throw err;
  } finally {
    await (team as WorkerTeam | null)?.close();
  }

  const predict = async (xs: Float32Array, count: number): Promise<Float32Array[]> => {
    if (xs.length < count * inSize) throw new LegibleError(`predict: ${xs.length} values do not hold ${count} images of [${input}]`);
    const out: Float32Array[] = [];
    for (const s of evalSessions) {
      const y = ((await s.run({ x: new ort.Tensor('float32', xs.subarray(0, count * inSize), [count, ...input]) })).y as Tensor).data as Float32Array;
      const v = new Float32Array(count * outSize);
      for (let i = 0; i < count; i++) for (let ch = 0; ch < c; ch++) for (let p = 0; p < plane; p++) {
        const k = i * outSize + ch * plane + p;
        v[k] = y[k] * std[ch] + mean[ch];
      }
      out.push(v);
    }
    return out;
  };
  return {
    shape: { input, output, width },
    rungs,
    train,
    heldOut,
    mean,
    std,
    predict,
    release: async () => {
      await Promise.all(evalSessions.map((s) => s.release()));
    },
  };
}

/** A ladder worker (plain CommonJS for parallel.ts's WorkerTeam): one session per rung, one part per step. */
const LADDER_WORKER = `
const ort = require(workerData.ort);
let session = null;
let run = null;
handle('rung', async (b) => {
  if (session) await session.release();
  session = null;
  session = await ort.InferenceSession.create(b.model, { executionProviders: ['cpu'], graphOptimizationLevel: 'all', intraOpNumThreads: 1, interOpNumThreads: 1 });
  const xs = new Float32Array(b.x), zs = new Float32Array(b.z), ps = new Float32Array(b.params), gs = new Float32Array(b.grads), loss = new Float32Array(b.loss);
  const order = new Int32Array(b.order), cursor = new Int32Array(b.cursor);
  // onnxruntime-node refuses shared memory as tensor data: private copies, refreshed every step.
  const x = new Float32Array(xs.length), t = new Float32Array(b.m * b.outSize), p = new Float32Array(ps.length);
  const feeds = { x: new ort.Tensor('float32', x, [b.m, ...b.input]), t: new ort.Tensor('float32', t, [b.m, ...b.output]) };
  for (const s of b.specs) feeds[s.name] = new ort.Tensor('float32', p.subarray(s.offset, s.offset + s.dims.reduce((u, v) => u * v, 1)), s.dims);
  const s = session;
  run = async () => {
    x.set(xs);
    const from = cursor[0] + b.first;
    for (let i = 0; i < b.m; i++) t.set(zs.subarray(order[from + i] * b.outSize, (order[from + i] + 1) * b.outSize), i * b.outSize);
    p.set(ps);
    const out = await s.run(feeds);
    for (const sp of b.specs) gs.set(out[sp.grad].data, sp.offset);
    loss[0] = out[b.objective].data[0];
  };
});
handle('release', async () => {
  if (session) await session.release();
  session = null;
  run = null;
});
steps(() => run());
`;

function cloneParams(p: Record<string, Float32Array>): Record<string, Float32Array> {
  return Object.fromEntries(Object.entries(p).map(([k, v]) => [k, Float32Array.from(v)]));
}
