// Feature visualization: images optimised to drive a feature (a channel's spatial mean, or the
// projection of the spatially averaged activation on a dictionary direction), many features per
// batch, seeded.
//
// MACO (Fel et al. 2023): each colour channel is the inverse Fourier transform of a spectrum whose
// magnitude is fixed (natural images' 1/f law by default, or the study images' mean spectrum) and
// whose phase is optimised; colours are decorrelated (Olah et al. 2017); pixel = sigmoid. Every step
// the image is jittered, zoomed and rotated (random, seeded) before the model sees it. The attribution
// map MACO yields is the accumulated magnitude of the objective's gradient with respect to the image
// over all steps. The plain baseline (`method: 'pixel'`) optimises sigmoid-space pixels directly,
// with the same augmentations.
//
// One ONNX graph per run: parameterisation → augmentation (GatherElements with per-step bilinear
// indices) → the study's normalisation → the model; its gradient graph comes from grad/vjp.ts.
import type { Tensor } from 'onnxruntime-node';
import { inputSize, LegibleError, rng, seedFrom, type ModelInput } from '@legible/studies';
import { attr, describeValue, node, tensorInfo } from '../onnx/graph.ts';
import { DataType, decodeModel, encodeModel, float32Tensor, int64Tensor, type ModelProto, type NodeProto, type TensorProto } from '../onnx/proto.ts';
import { openSession, type Device } from '../runtime.ts';
import { buildGradientModel } from '../grad/vjp.ts';
import { Adam } from '../train/adam.ts';
import { DEFAULT_AUGMENTATION, sampleWarp, warpSampling, type Augmentation } from './augment.ts';
import { DEFAULT_COLOUR_MATRIX } from './colour.ts';
import { dftMatrices, normaliseMagnitude, powerLawMagnitude } from './fourier.ts';

/** Where the tensor keeps its channels (default nchw); `skip`: leading tokens (class tokens) left out of the mean. */
export type ObjectiveLayout = { channelsLast: boolean; skip?: number };
export type FeatureObjective = ({ tensor: string; channel: number } | { tensor: string; direction: Float32Array }) & { layout?: ObjectiveLayout };

export interface VisualizeOptions {
  /** Optimisation steps (default 256). */
  steps?: number;
  seed?: number;
  /** Side of the optimised image in pixels, or [height, width] (default: the model's input size). */
  size?: number | [number, number];
  /** Features per batch (default 8). */
  batch?: number;
  device?: Device;
  threads?: number;
  /** 'maco' (default) or 'pixel' (the plain baseline). */
  method?: 'maco' | 'pixel';
  /** Adam learning rate (default 0.1 for MACO's phases, 0.05 for the baseline's pixel logits). */
  lr?: number;
  augmentation?: Partial<Augmentation>;
  /** MACO: spectrum magnitude [channels, H, W/2+1] (see averageMagnitude); default 1/f. */
  magnitude?: Float32Array;
  /** MACO: per-pixel standard deviation of the decorrelated image before the sigmoid (default 2; at 1.2 two of four demo-model channels stayed below natural images). */
  contrast?: number;
  /** RGB: row-major 3×3 decorrelation matrix, rgb = M · x (default DEFAULT_COLOUR_MATRIX). */
  colour?: Float32Array;
  log?: (s: string) => void;
  /** Called after every optimisation step (`step` counts from 0 within the batch starting at objective `start`); benchmarks time steps with it. */
  onStep?: (step: number, start: number) => void;
}

export interface Visualizations {
  /** Per feature: uint8 HWC at the model's input size, RGB (3 channels) or gray (1). */
  images: Uint8Array[];
  /** Per feature: the MACO attribution map, h × w in [0, 1] (accumulated |∂objective/∂image|). */
  attributions: Float32Array[];
  /** Per feature: −objective at each step (on the augmented image). */
  losses: Float32Array[];
  /** Per feature: the objective on the final image without augmentation. */
  objectives: number[];
  width: number;
  height: number;
  channels: number;
  seconds: number;
  device: string;
}

const P = 'fv/';

export interface Composed {
  /** Inputs: `param`, fv/warp_index [B, C, 4hw] (int64), fv/warp_weight [B, 1, 4, hw]; the model's input is computed. */
  model: ModelProto;
  /** fv/phase [B, C, H, W/2+1] (MACO) or fv/pixels [B, C, H, W] (pixel baseline). */
  param: string;
  paramDims: (b: number) => number[];
  /** fv/image [B, C, H, W] in [0, 1], in the model's channel order, before augmentation. */
  image: string;
}

/**
 * The model with the parameterisation, augmentation and normalisation in front of its input
 * (H × W: the optimised image; h × w: the model's input).
 */
export function compose(model: ModelProto, input: ModelInput, method: 'maco' | 'pixel', H: number, W: number, h: number, w: number, C: number, opts: VisualizeOptions): Composed {
  const g = model.graph!;
  const inits = new Set((g.initializer ?? []).map((t) => t.name));
  const inputs = (g.input ?? []).filter((v) => !inits.has(v.name));
  if (inputs.length !== 1) throw new LegibleError(`feature visualization needs a model with one image input; this one has ${inputs.length} (${inputs.map((v) => v.name).join(', ')})`);
  const X = inputs[0].name!;
  const shape = describeValue(inputs[0]).shape;
  if (shape && (shape.length !== 4 || (typeof shape[1] === 'number' && shape[1] !== C) || (typeof shape[2] === 'number' && shape[2] !== h) || (typeof shape[3] === 'number' && shape[3] !== w))) {
    throw new LegibleError(`the model's input "${X}" has shape [${shape.join(', ')}], but the input spec says ${C} channels of ${h} × ${w}`);
  }
  const nodes: NodeProto[] = [];
  const initializers: TensorProto[] = [];
  const f32 = (name: string, dims: number[], v: ArrayLike<number>) => initializers.push(float32Tensor(P + name, dims, v));
  const i64 = (name: string, v: number[]) => initializers.push(int64Tensor(P + name, [v.length], v));
  const op = (type: string, ins: string[], out: string, attrs: ReturnType<typeof attr.int>[] = []) => nodes.push(node(type, ins, [out], attrs, { name: out }));
  let param: string;
  let paramDims: (b: number) => number[];
  let decorrelated: string;
  if (method === 'maco') {
    const { Wh, CH, SH, P: Pm, Q } = dftMatrices(H, W);
    const mag = normaliseMagnitude(opts.magnitude ?? powerLawMagnitude(H, W, C), H, W, C, opts.contrast ?? 2);
    if (mag.length !== C * H * Wh) throw new LegibleError(`magnitude: expected ${C} × ${H} × ${Wh} values, got ${mag.length}`);
    f32('magnitude', [C, H, Wh], mag);
    f32('CH', [H, H], CH);
    f32('SH', [H, H], SH);
    f32('P', [Wh, W], Pm);
    f32('Q', [Wh, W], Q);
    param = P + 'phase';
    paramDims = (b) => [b, C, H, Wh];
    op('Cos', [param], P + 'cos');
    op('Sin', [param], P + 'sin');
    op('Mul', [P + 'cos', P + 'magnitude'], P + 're');
    op('Mul', [P + 'sin', P + 'magnitude'], P + 'im');
    op('MatMul', [P + 'CH', P + 're'], P + 'ch_re');
    op('MatMul', [P + 'SH', P + 'im'], P + 'sh_im');
    op('MatMul', [P + 'SH', P + 're'], P + 'sh_re');
    op('MatMul', [P + 'CH', P + 'im'], P + 'ch_im');
    op('Sub', [P + 'ch_re', P + 'sh_im'], P + 'yr');
    op('Add', [P + 'sh_re', P + 'ch_im'], P + 'yi');
    op('MatMul', [P + 'yr', P + 'P'], P + 'yr_p');
    op('MatMul', [P + 'yi', P + 'Q'], P + 'yi_q');
    op('Sub', [P + 'yr_p', P + 'yi_q'], P + 'spatial');
    decorrelated = P + 'spatial';
    if (C === 3) {
      const M = opts.colour ?? DEFAULT_COLOUR_MATRIX;
      // Rows in the model's channel order (BGR models read channel 0 as blue).
      const rows = input.channels === 'bgr' ? [2, 1, 0] : [0, 1, 2];
      f32('colour', [3, 3, 1, 1], rows.flatMap((r) => [M[r * 3], M[r * 3 + 1], M[r * 3 + 2]]));
      op('Conv', [P + 'spatial', P + 'colour'], P + 'coloured');
      decorrelated = P + 'coloured';
    }
  } else {
    param = P + 'pixels';
    paramDims = (b) => [b, C, H, W];
    decorrelated = param;
  }
  const image = P + 'image';
  op('Sigmoid', [decorrelated], image);
  // Augmentation: 4 bilinear taps per output pixel.
  const hw = h * w;
  i64('flat', [0, C, H * W]);
  i64('taps', [0, C, 4, hw]);
  i64('out', [0, C, h, w]);
  op('Reshape', [image, P + 'flat'], P + 'image_flat');
  op('GatherElements', [P + 'image_flat', P + 'warp_index'], P + 'taps_flat', [attr.int('axis', 2)]);
  op('Reshape', [P + 'taps_flat', P + 'taps'], P + 'taps_4');
  op('Mul', [P + 'taps_4', P + 'warp_weight'], P + 'taps_weighted');
  i64('tap_axis', [2]);
  op('ReduceSum', [P + 'taps_weighted', P + 'tap_axis'], P + 'warped_flat', [attr.int('keepdims', 0)]);
  op('Reshape', [P + 'warped_flat', P + 'out'], P + 'warped');
  // The study's normalisation: (pixel · range − mean) / std, per channel.
  const per = (v: number[], c: number) => v[v.length === 1 ? 0 : c];
  f32('norm_scale', [1, C, 1, 1], Array.from({ length: C }, (_, c) => input.range / per(input.std, c)));
  f32('norm_shift', [1, C, 1, 1], Array.from({ length: C }, (_, c) => -per(input.mean, c) / per(input.std, c)));
  op('Mul', [P + 'warped', P + 'norm_scale'], P + 'scaled');
  op('Add', [P + 'scaled', P + 'norm_shift'], X);

  const composed: ModelProto = {
    ...model,
    graph: {
      ...g,
      node: [...nodes, ...(g.node ?? [])],
      initializer: [...(g.initializer ?? []), ...initializers],
      input: [
        ...(g.input ?? []).filter((v) => v.name !== X),
        tensorInfo(param, DataType.FLOAT, ['B', ...paramDims(1).slice(1)]),
        tensorInfo(P + 'warp_index', DataType.INT64, ['B', C, 4 * hw]),
        tensorInfo(P + 'warp_weight', DataType.FLOAT, ['B', 1, 4, hw]),
      ],
    },
  };
  return { model: composed, param, paramDims, image };
}

function featureWeights(f: FeatureObjective, channels: number): Float32Array {
  const w = new Float32Array(channels);
  if ('channel' in f) {
    if (!Number.isInteger(f.channel) || f.channel < 0 || f.channel >= channels) throw new LegibleError(`"${f.tensor}" has ${channels} channels; channel ${f.channel} does not exist`);
    w[f.channel] = 1;
  } else {
    if (f.direction.length !== channels) throw new LegibleError(`a direction on "${f.tensor}" needs ${channels} values, got ${f.direction.length}`);
    w.set(f.direction);
  }
  return w;
}

export async function visualizeFeatures(modelBytes: Uint8Array, input: ModelInput, objectives: readonly FeatureObjective[], opts: VisualizeOptions = {}): Promise<Visualizations> {
  const started = performance.now();
  const log = opts.log ?? (() => {});
  const [h, w] = inputSize(input);
  const C = input.channels === 'gray' ? 1 : 3;
  const [H, W] = opts.size === undefined ? [h, w] : typeof opts.size === 'number' ? [opts.size, opts.size] : opts.size;
  const method = opts.method ?? 'maco';
  const steps = opts.steps ?? 256;
  const batch = Math.max(1, Math.min(opts.batch ?? 8, objectives.length));
  const seed = opts.seed ?? 0;
  const aug: Augmentation = { ...DEFAULT_AUGMENTATION, ...opts.augmentation };
  if (!objectives.length) throw new LegibleError('visualizeFeatures: no objectives');

  const model = decodeModel(modelBytes);
  const composed = compose(model, input, method, H, W, h, w, C, opts);
  const tensors = [...new Set(objectives.map((o) => o.tensor))];
  const layoutOf = new Map(tensors.map((t) => [t, objectives.find((o) => o.tensor === t)!.layout]));
  for (const o of objectives) {
    if (JSON.stringify(o.layout ?? null) !== JSON.stringify(layoutOf.get(o.tensor) ?? null)) throw new LegibleError(`objectives on "${o.tensor}" give different layouts`);
  }
  const grad = await buildGradientModel(composed.model, {
    wrt: [composed.param, composed.image],
    objective: tensors.map((tensor) => ({ tensor, layout: layoutOf.get(tensor) })),
    outputs: [composed.image],
  });
  const channelsOf = new Map(tensors.map((t) => {
    const dims = grad.meta.get(t)!.dims;
    return [t, layoutOf.get(t)?.channelsLast && dims.length > 2 ? dims[dims.length - 1] : dims[1]];
  }));
  const { session, device } = await openSession(encodeModel(grad.model), { device: opts.device, threads: opts.threads, log });
  const ort = await import('onnxruntime-node');

  const images: Uint8Array[] = [];
  const attributions: Float32Array[] = [];
  const losses: Float32Array[] = [];
  const finals: number[] = [];
  const paramSize = composed.paramDims(1).reduce((a, b) => a * b, 1);
  const hw = h * w;
  try {
    for (let start = 0; start < objectives.length; start += batch) {
      const chunk = objectives.slice(start, start + batch);
      const n = chunk.length;
      // Objective weights per tensor (the graph's batch is dynamic: a short last chunk runs short).
      const weights = tensors.map((t) => new Float32Array(n * channelsOf.get(t)!));
      chunk.forEach((f, b) => weights[tensors.indexOf(f.tensor)].set(featureWeights(f, channelsOf.get(f.tensor)!), b * channelsOf.get(f.tensor)!));
      // Seeded per feature (its index in `objectives`), so a feature's image does not depend on its batch.
      const rngs = chunk.map((_, b) => rng(seedFrom('fv', seed, start + b)));
      const param = new Float32Array(n * paramSize);
      chunk.forEach((_, b) => {
        const r = rngs[b];
        for (let i = 0; i < paramSize; i++) param[b * paramSize + i] = method === 'maco' ? Math.PI * (2 * r.float() - 1) : r.normal();
      });
      const adam = new Adam({ p: param }, { lr: opts.lr ?? (method === 'maco' ? 0.1 : 0.05), maximize: true });
      const index = new BigInt64Array(n * C * 4 * hw);
      const weight = new Float32Array(n * 4 * hw);
      const attribution = new Float64Array(n * H * W);
      const history = chunk.map(() => new Float32Array(steps));
      const feedsFor = () => {
        const feeds: Record<string, Tensor> = {
          [composed.param]: new ort.Tensor('float32', param, composed.paramDims(n)),
          [P + 'warp_index']: new ort.Tensor('int64', index, [n, C, 4 * hw]),
          [P + 'warp_weight']: new ort.Tensor('float32', weight, [n, 1, 4, hw]),
        };
        tensors.forEach((t, i) => (feeds[grad.objectiveInputs[i]!] = new ort.Tensor('float32', weights[i], [n, channelsOf.get(t)!])));
        return feeds;
      };
      const taps = new BigInt64Array(4 * hw);
      const tapWeights = new Float32Array(4 * hw);
      const setWarps = (identity: boolean) => {
        for (let b = 0; b < n; b++) {
          const warp = identity ? { dy: 0, dx: 0, scale: 1, angle: 0 } : sampleWarp(rngs[b], aug);
          warpSampling(warp, H, W, h, w, taps, tapWeights);
          // The same taps for every channel of the image; one set of weights, broadcast over channels.
          for (let c = 0; c < C; c++) index.set(taps, (b * C + c) * 4 * hw);
          weight.set(tapWeights, b * 4 * hw);
        }
      };
      for (let step = 0; step < steps; step++) {
        setWarps(false);
        const out = await session.run(feedsFor());
        const objective = (out[grad.objective] as Tensor).data as Float32Array;
        for (let b = 0; b < n; b++) history[b][step] = -objective[b];
        const gImage = (out[grad.grads[composed.image]] as Tensor).data as Float32Array;
        for (let b = 0; b < n; b++)
          for (let c = 0; c < C; c++)
            for (let p = 0; p < H * W; p++) attribution[b * H * W + p] += Math.abs(gImage[(b * C + c) * H * W + p]);
        adam.step({ p: (out[grad.grads[composed.param]] as Tensor).data as Float32Array });
        opts.onStep?.(step, start);
      }
      // The final image, seen without augmentation.
      setWarps(true);
      const out = await session.run(feedsFor());
      const objective = (out[grad.objective] as Tensor).data as Float32Array;
      const rendered = (out[composed.image] as Tensor).data as Float32Array;
      for (let b = 0; b < n; b++) {
        finals.push(objective[b]);
        losses.push(history[b]);
        images.push(toPixels(rendered.subarray(b * C * H * W, (b + 1) * C * H * W), C, H, W, h, w, input.channels === 'bgr'));
        attributions.push(normalisedMap(attribution.subarray(b * H * W, (b + 1) * H * W), H, W, h, w));
      }
      log(`visualized ${Math.min(start + batch, objectives.length)}/${objectives.length} features (${method}, ${steps} steps)`);
    }
  } finally {
    await session.release();
  }
  return { images, attributions, losses, objectives: finals, width: w, height: h, channels: C, seconds: (performance.now() - started) / 1000, device };
}

/** A plane resampled to h × w: supersampled bilinear (averages the footprint when shrinking). */
export function resizePlane(src: ArrayLike<number>, H: number, W: number, h: number, w: number): Float32Array {
  const out = new Float32Array(h * w);
  if (H === h && W === w) {
    for (let i = 0; i < out.length; i++) out[i] = src[i];
    return out;
  }
  const sy = Math.max(1, Math.ceil(H / h));
  const sx = Math.max(1, Math.ceil(W / w));
  const at = (y: number, x: number) => src[Math.min(H - 1, Math.max(0, y)) * W + Math.min(W - 1, Math.max(0, x))];
  for (let i = 0; i < h; i++)
    for (let j = 0; j < w; j++) {
      let sum = 0;
      for (let a = 0; a < sy; a++)
        for (let b = 0; b < sx; b++) {
          const y = ((i + (a + 0.5) / sy) * H) / h - 0.5;
          const x = ((j + (b + 0.5) / sx) * W) / w - 0.5;
          const y0 = Math.floor(y);
          const x0 = Math.floor(x);
          const fy = y - y0;
          const fx = x - x0;
          sum += (1 - fy) * ((1 - fx) * at(y0, x0) + fx * at(y0, x0 + 1)) + fy * ((1 - fx) * at(y0 + 1, x0) + fx * at(y0 + 1, x0 + 1));
        }
      out[i * w + j] = sum / (sy * sx);
    }
  return out;
}

/** CHW floats in [0, 1] (model channel order) → uint8 HWC at h × w, RGB order. */
function toPixels(chw: Float32Array, C: number, H: number, W: number, h: number, w: number, bgr: boolean): Uint8Array {
  const out = new Uint8Array(h * w * C);
  for (let c = 0; c < C; c++) {
    const plane = resizePlane(chw.subarray(c * H * W, (c + 1) * H * W), H, W, h, w);
    const dst = bgr ? C - 1 - c : c;
    for (let p = 0; p < h * w; p++) out[p * C + dst] = Math.max(0, Math.min(255, Math.round(plane[p] * 255)));
  }
  return out;
}

/** An accumulated attribution at H × W → h × w, scaled to [0, 1] by its maximum. */
function normalisedMap(acc: Float64Array, H: number, W: number, h: number, w: number): Float32Array {
  const map = resizePlane(acc, H, W, h, w);
  let max = 0;
  for (const v of map) max = Math.max(max, v);
  if (max > 0) for (let i = 0; i < map.length; i++) map[i] /= max;
  return map;
}
