// TopK sparse autoencoder (Gao et al. 2024, "Scaling and evaluating sparse autoencoders") over a
// layer's activation matrix: n rows (an image's spatially averaged channel vector, the matrix NMF
// factorises) × c channels. Its decoder directions are the `sae` basis of a study.
//
//   u = (x − μ)/s                                        fixed normalisation (the data's statistics)
//   z = ReLU(TopK_k((u − b_pre) · W_enc + b_enc))        codes: k non-zero of `dictionary`
//   û = z · W_dec + b_pre                                W_dec rows: unit-norm directions
//   x̂ = s · û + μ
//
// μ is the data's mean per channel and s its RMS deviation per value, so u has unit mean square
// whatever the layer's unit: every parameter (b_pre included) and the loss, mean((û − u)²), are in
// normalised units and the fit is the same for activations of 1e-9 and of 1e6. (Before, b_pre and
// the loss were in the data's units: at the zoo's GoogLeNet, activations about 1e-9, b_pre's
// gradients were far below Adam's ε, so Adam took steps of lr·g/ε — plain gradient descent at a
// learning rate of 1e5 — and the fit diverged to a variance explained of −1e10.) Codes are returned
// in the data's units (s·z), so x̂ = b + Σ_j code_j · d_j exactly, with b = μ + s·b_pre.
// Loss: mean squared error. Each step the decoder gradient loses its component along its (unit) row,
// the gradients are clipped to a global norm of 1 (Gao et al.), Adam steps, and the decoder rows are
// renormalised. Dead latents (no row of an epoch fired them) are resampled at the end of
// each epoch but the last (Bricken et al. 2023): the decoder row becomes the direction of the residual
// x − x̂ of one of the worst-reconstructed rows, the encoder column the same direction at the alive
// columns' mean norm, the bias 0, and their Adam moments restart. (Gao et al.'s AuxK loss, tried
// first, left more latents dead than no remedy at these sizes; on the demo model's block3, 128
// latents, k = 4, resampling ends with 2 dead latents instead of 15.)
// Training: the forward graph is built with graph.ts, its gradients by grad/vjp.ts, Adam runs here.
// Deterministic for a seed (initialisation, batch order) at a fixed onnxruntime thread count.
import type { InferenceSession, Tensor } from 'onnxruntime-node';
import { LegibleError, rng } from '@legible/studies';
import { attr, makeGraph, makeModel, node, tensorInfo } from '../onnx/graph.ts';
import { DataType, encodeModel, float32Tensor, int64Tensor } from '../onnx/proto.ts';
import { openSession, type Device } from '../runtime.ts';
import { buildGradientModel } from '../grad/vjp.ts';
import { Adam } from './adam.ts';

export interface SaeOptions {
  /** Number of latents (directions). */
  dictionary: number;
  /** Active latents per row. */
  k: number;
  epochs?: number;
  seed?: number;
  /** Rows per step (default 64, at most n). */
  batchSize?: number;
  /** Adam learning rate (default 1e-3; 4e-3 fits faster but left 5–25 % of latents dead on the demo model's layers). */
  lr?: number;
  /** Resample latents that an epoch left dead (default true). */
  resample?: boolean;
  device?: Device;
  threads?: number;
  log?: (s: string) => void;
}

export interface SaeInfo {
  epochs: number;
  steps: number;
  /** Mean squared error per element over all rows, in the data's units. */
  mse: number;
  /** Fraction of variance unexplained: Σ‖x − x̂‖² / Σ‖x − mean‖². */
  fvu: number;
  /** Latents that fire on no row. */
  dead: number;
  /** Mean training loss (squared error per element) of each epoch. */
  history: number[];
  /** Latents resampled after each epoch. */
  resampled: number[];
  seconds: number;
}

export interface TopKSae {
  dictionary: number;
  k: number;
  channels: number;
  /** dictionary × c, unit-norm rows. */
  decoderDirections: Float32Array;
  /** c: the learned offset b_pre (x̂ = b_pre + Σ code_j d_j). */
  bias: Float32Array;
  /** The encoder's parameters in data units: codes = s · ReLU(TopK_k(((x − b_pre) · inv_scale) · W_enc + b_enc)), inv_scale = float32(1/s); b_pre here is μ + s·b_pre of the normalised fit (= bias). */
  encoder: { W_enc: Float32Array; b_enc: Float32Array; b_pre: Float32Array; scale: number };
  /** Codes of `count` rows of c values: count × dictionary, k non-zero (≥ 0) per row, data units. */
  encode(rows: Float32Array, count?: number): Promise<Float32Array>;
  info: SaeInfo;
  release(): Promise<void>;
}

interface Params {
  W_enc: Float32Array;
  b_enc: Float32Array;
  W_dec: Float32Array;
  b_pre: Float32Array;
}

/**
 * The SAE forward graph: x (data units) → z (normalised codes), x̂ (data units), and with `withLoss`
 * the loss in normalised units. Parameters are initializers here; training feeds them.
 */
function saeModel(c: number, d: number, k: number, norm: { mean: Float32Array; scale: number }, p: Params, withLoss: boolean) {
  const f = (name: string, dims: number[], v: ArrayLike<number>) => float32Tensor(name, dims, v);
  const nodes = [
    node('Sub', ['x', 'mu'], ['x_centred']),
    node('Mul', ['x_centred', 'inv_scale'], ['u']),
    node('Sub', ['u', 'b_pre'], ['centred']),
    node('MatMul', ['centred', 'W_enc'], ['enc']),
    node('Add', ['enc', 'b_enc'], ['pre']),
    node('TopK', ['pre', 'k'], ['top', 'top_idx'], [attr.int('axis', 1)]),
    node('Relu', ['top'], ['top_pos']),
    node('Shape', ['pre'], ['pre_shape']),
    node('ConstantOfShape', ['pre_shape'], ['zeros'], [attr.tensor('value', float32Tensor('', [1], [0]))]),
    node('ScatterElements', ['zeros', 'top_idx', 'top_pos'], ['z'], [attr.int('axis', 1)]),
    node('MatMul', ['z', 'W_dec'], ['dec']),
    node('Add', ['dec', 'b_pre'], ['u_hat']),
    node('Mul', ['u_hat', 'scale'], ['u_hat_scaled']),
    node('Add', ['u_hat_scaled', 'mu'], ['x_hat']),
  ];
  const inits = [
    f('W_enc', [c, d], p.W_enc),
    f('b_enc', [d], p.b_enc),
    f('W_dec', [d, c], p.W_dec),
    f('b_pre', [c], p.b_pre),
    f('mu', [c], norm.mean),
    f('scale', [], [norm.scale]),
    f('inv_scale', [], [1 / norm.scale]),
    int64Tensor('k', [1], [k]),
  ];
  const inputs = [tensorInfo('x', DataType.FLOAT, ['N', c])];
  const outputs = [tensorInfo('z', DataType.FLOAT, ['N', d]), tensorInfo('x_hat', DataType.FLOAT, ['N', c])];
  if (withLoss) {
    nodes.push(node('Sub', ['u_hat', 'u'], ['err']), node('Mul', ['err', 'err'], ['sq']), node('ReduceMean', ['sq'], ['mse'], [attr.int('keepdims', 0)]));
    nodes.push(node('Identity', ['mse'], ['loss']));
    outputs.push(tensorInfo('loss', DataType.FLOAT, []), tensorInfo('mse', DataType.FLOAT, []));
  }
  return makeModel({ graph: makeGraph({ name: 'topk_sae', nodes, inputs, outputs, initializers: inits }), opset: 17 });
}

/** Removes from each decoder row's gradient its component along the (unit) row: the step keeps the row's norm to first order. */
function projectDecoderGradient(W: Float32Array, g: Float32Array, rows: number, cols: number): void {
  for (let r = 0; r < rows; r++) {
    let dot = 0;
    for (let j = 0; j < cols; j++) dot += W[r * cols + j] * g[r * cols + j];
    for (let j = 0; j < cols; j++) g[r * cols + j] -= dot * W[r * cols + j];
  }
}

/** Scales every gradient by min(1, max / global L2 norm); returns the norm before clipping. */
function clipGradients(grads: Record<string, Float32Array>, max: number): number {
  let sq = 0;
  for (const g of Object.values(grads)) for (let i = 0; i < g.length; i++) sq += g[i] * g[i];
  const norm = Math.sqrt(sq);
  if (norm > max) for (const g of Object.values(grads)) for (let i = 0; i < g.length; i++) g[i] *= max / norm;
  return norm;
}

function normaliseRows(W: Float32Array, rows: number, cols: number): void {
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let j = 0; j < cols; j++) s += W[r * cols + j] ** 2;
    const inv = s > 0 ? 1 / Math.sqrt(s) : 0;
    for (let j = 0; j < cols; j++) W[r * cols + j] *= inv;
  }
}

export async function trainTopKSae(acts: Float32Array, n: number, c: number, opts: SaeOptions): Promise<TopKSae> {
  const started = performance.now();
  const d = opts.dictionary;
  const k = opts.k;
  if (acts.length !== n * c) throw new LegibleError(`trainTopKSae: ${acts.length} values is not ${n} rows × ${c} channels`);
  if (!(k >= 1 && k <= d)) throw new LegibleError(`sae: k = ${k} must be between 1 and the dictionary size (${d})`);
  if (n < 2) throw new LegibleError(`sae: needs at least 2 rows of activations, got ${n}`);
  for (let i = 0; i < acts.length; i++) if (!Number.isFinite(acts[i])) throw new LegibleError(`sae: activation row ${Math.floor(i / c)} holds ${acts[i]}`);
  const epochs = opts.epochs ?? 10;
  const batch = Math.min(opts.batchSize ?? 64, n);
  const resample = opts.resample ?? true;
  const log = opts.log ?? (() => {});
  const r = rng(opts.seed ?? 0);

  // The fixed normalisation: the mean per channel, and the RMS deviation from it per value (1 where
  // every row is the same).
  const mean = new Float64Array(c);
  for (let i = 0; i < n; i++) for (let j = 0; j < c; j++) mean[j] += acts[i * c + j];
  for (let j = 0; j < c; j++) mean[j] /= n;
  let total = 0;
  for (let i = 0; i < n; i++) for (let j = 0; j < c; j++) total += (acts[i * c + j] - mean[j]) ** 2;
  const scale = Math.sqrt(total / (n * c)) || 1;

  // Initialisation (Gao et al.): random unit decoder rows, encoder = decoderᵀ, zero encoder bias.
  const W_dec = Float32Array.from({ length: d * c }, () => r.normal());
  normaliseRows(W_dec, d, c);
  const W_enc = new Float32Array(c * d);
  for (let i = 0; i < d; i++) for (let j = 0; j < c; j++) W_enc[j * d + i] = W_dec[i * c + j];
  const params: Params = { W_enc, b_enc: new Float32Array(d), W_dec, b_pre: new Float32Array(c) };
  const norm = { mean: Float32Array.from(mean), scale };

  const ort = await import('onnxruntime-node');
  const forTraining = saeModel(c, d, k, norm, params, true);
  const grad = await buildGradientModel(forTraining, {
    wrt: ['W_enc', 'b_enc', 'W_dec', 'b_pre'],
    objective: { tensor: 'loss', kind: 'sum' },
    params: 'inputs',
    outputs: ['mse', 'top_idx', 'x_hat'],
  });
  const { session } = await openSession(encodeModel(grad.model), { device: opts.device, threads: opts.threads, log });
  const adam = new Adam(params as unknown as Record<string, Float32Array>, { lr: opts.lr ?? 1e-3 });
  const history: number[] = [];
  const resampled: number[] = [];
  const order = Array.from({ length: n }, (_, i) => i);
  const xb = new Float32Array(batch * c);
  const rowError = new Float64Array(n); // squared error of each row when last seen
  const residuals = new Float32Array(n * c);
  const fired = new Uint8Array(d);
  let steps = 0;
  try {
    for (let epoch = 0; epoch < epochs; epoch++) {
      r.shuffle(order);
      fired.fill(0);
      let sum = 0;
      for (let start = 0; start < n; start += batch) {
        const m = Math.min(batch, n - start);
        for (let i = 0; i < m; i++) xb.set(acts.subarray(order[start + i] * c, (order[start + i] + 1) * c), i * c);
        const feeds: Record<string, Tensor> = {
          x: new ort.Tensor('float32', xb.subarray(0, m * c), [m, c]),
          W_enc: new ort.Tensor('float32', params.W_enc, [c, d]),
          b_enc: new ort.Tensor('float32', params.b_enc, [d]),
          W_dec: new ort.Tensor('float32', params.W_dec, [d, c]),
          b_pre: new ort.Tensor('float32', params.b_pre, [c]),
        };
        const out = await session.run(feeds);
        const grads: Record<string, Float32Array> = {};
        for (const [name, output] of Object.entries(grad.grads)) grads[name] = (out[output] as Tensor).data as Float32Array;
        projectDecoderGradient(params.W_dec, grads.W_dec, d, c);
        clipGradients(grads, 1);
        adam.step(grads);
        normaliseRows(params.W_dec, d, c);
        for (const j of (out.top_idx as Tensor).data as BigInt64Array) fired[Number(j)] = 1;
        const xh = (out.x_hat as Tensor).data as Float32Array;
        for (let i = 0; i < m; i++) {
          const row = order[start + i];
          let e = 0;
          for (let q = 0; q < c; q++) {
            const res = xb[i * c + q] - xh[i * c + q];
            residuals[row * c + q] = res;
            e += res * res;
          }
          rowError[row] = e;
        }
        sum += ((out.mse as Tensor).data as Float32Array)[0] * m * scale * scale;
        steps++;
      }
      history.push(sum / n);
      const dead = [...fired.keys()].filter((j) => !fired[j]);
      if (resample && dead.length && epoch < epochs - 1) {
        resampleLatents(dead, params, adam, rowError, residuals, n, c, d);
        resampled.push(dead.length);
      } else resampled.push(0);
      log(`sae epoch ${epoch + 1}/${epochs}: mse ${(sum / n).toExponential(3)}, ${dead.length} latents not fired${resampled.at(-1) ? ' (resampled)' : ''}`);
    }
  } finally {
    await session.release();
  }

  // The trained encoder, and the final reconstruction statistics over every row.
  const final = saeModel(c, d, k, norm, params, false);
  const enc = await openSession(encodeModel(final), { device: opts.device, threads: opts.threads });
  const encode = makeEncoder(enc.session, ort, c, d, scale);
  let sq = 0;
  const fires = new Uint8Array(d);
  for (let start = 0; start < n; start += 1024) {
    const m = Math.min(1024, n - start);
    const out = await enc.session.run({ x: new ort.Tensor('float32', acts.subarray(start * c, (start + m) * c), [m, c]) });
    const xh = (out.x_hat as Tensor).data as Float32Array;
    const z = (out.z as Tensor).data as Float32Array;
    for (let i = 0; i < m * c; i++) sq += (xh[i] - acts[start * c + i]) ** 2;
    for (let i = 0; i < m * d; i++) if (z[i] > 0) fires[i % d] = 1;
  }
  const info: SaeInfo = {
    epochs,
    steps,
    mse: sq / (n * c),
    fvu: sq / total,
    dead: d - fires.reduce((a, b) => a + b, 0),
    history,
    resampled,
    seconds: (performance.now() - started) / 1000,
  };
  log(`sae: ${d} latents, k = ${k}, ${epochs} epochs (${steps} steps): mse ${info.mse.toExponential(3)}, fvu ${info.fvu.toFixed(4)}, ${info.dead} dead`);
  return {
    dictionary: d,
    k,
    channels: c,
    decoderDirections: Float32Array.from(params.W_dec),
    bias: Float32Array.from(mean, (mu, q) => mu + scale * params.b_pre[q]),
    // For tools that run the encoder elsewhere (the explorer's browser panel): in data units,
    // (x − bias)·(1/s) = (x − μ)·(1/s) − b_pre, so b_pre there is the bias.
    encoder: { W_enc: Float32Array.from(params.W_enc), b_enc: Float32Array.from(params.b_enc), b_pre: Float32Array.from(mean, (mu, q) => mu + scale * params.b_pre[q]), scale },
    encode,
    info,
    release: () => enc.session.release(),
  };
}

/**
 * Dead latent j takes the residual direction of the j-th worst-reconstructed row: decoder row = that
 * unit direction, encoder column = the same at the mean norm of the alive encoder columns, bias 0;
 * its Adam moments restart.
 */
function resampleLatents(dead: number[], p: Params, adam: Adam, rowError: Float64Array, residuals: Float32Array, n: number, c: number, d: number): void {
  const worst = Array.from({ length: n }, (_, i) => i).sort((a, b) => rowError[b] - rowError[a] || a - b);
  const deadSet = new Set(dead);
  let norm = 0;
  let alive = 0;
  for (let j = 0; j < d; j++) {
    if (deadSet.has(j)) continue;
    let s = 0;
    for (let q = 0; q < c; q++) s += p.W_enc[q * d + j] ** 2;
    norm += Math.sqrt(s);
    alive++;
  }
  norm = alive ? norm / alive : 1;
  dead.forEach((j, t) => {
    const row = worst[t % n];
    let s = 0;
    for (let q = 0; q < c; q++) s += residuals[row * c + q] ** 2;
    const inv = s > 0 ? 1 / Math.sqrt(s) : 0;
    for (let q = 0; q < c; q++) {
      const u = residuals[row * c + q] * inv;
      p.W_dec[j * c + q] = u;
      p.W_enc[q * d + j] = u * norm;
    }
    p.b_enc[j] = 0;
    adam.reset('W_dec', j * c, (j + 1) * c);
    adam.reset('b_enc', j, j + 1);
    for (let q = 0; q < c; q++) adam.reset('W_enc', q * d + j, q * d + j + 1);
  });
}

function makeEncoder(session: InferenceSession, ort: typeof import('onnxruntime-node'), c: number, d: number, scale: number) {
  return async (rows: Float32Array, count = rows.length / c): Promise<Float32Array> => {
    if (!Number.isInteger(count) || rows.length < count * c) throw new LegibleError(`encode: ${rows.length} values do not hold ${count} rows of ${c}`);
    const codes = new Float32Array(count * d);
    for (let start = 0; start < count; start += 1024) {
      const m = Math.min(1024, count - start);
      const out = await session.run({ x: new ort.Tensor('float32', rows.subarray(start * c, (start + m) * c), [m, c]) }, ['z']);
      const z = (out.z as Tensor).data as Float32Array;
      for (let i = 0; i < m * d; i++) codes[start * d + i] = z[i] * scale;
    }
    return codes;
  };
}
