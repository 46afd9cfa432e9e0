// Decision contribution of features (the study's third finding): remove a feature from a layer's
// activations and measure, over an evaluation set, how much the logit of the correct class (or,
// without labels, of the originally predicted class) drops and how much accuracy drops.
//
// Removing a feature from the activation A[n, :, p] (n image, p position, C channels):
//   channel j           A'[n, j, p] = 0                        at every position
//   direction d (NMF/SAE concept j)
//                       A'[n, :, p] = A[n, :, p] − u(n, p) · d at every position
// where u(n, p) is the feature's code at that position, computed from the activation vector there by
// the caller's `codes` function: for NMF the non-negative least-squares code of A[n, :, p] on the
// fitted dictionary W (the NMF encoder, W fixed) and d = W_j; for the SAE the encoder's output
// (TopKSae.encode, in data units) and d = its decoder direction. Without `codes`, u is the projection
// max(0, ⟨A[n, :, p], d⟩) / ‖d‖², which removes the component along d. Nothing is clipped afterwards.
//
// Graph surgery: pass 1 runs the model once per batch of images with the layer (and any tensor
// computed before it that later nodes read, e.g. a skip connection) tapped, giving the baseline
// logits, the activations and the codes. Pass 2 runs only the part of the graph after the layer, its
// consumers rewired through ablation nodes: the layer enters as an input, is repeated once per
// feature of a chunk ([F, N, C, …] → [F·N, C, …]) and ablated per copy, so one run scores F features.
import type { InferenceSession, Tensor } from 'onnxruntime-node';
import { LegibleError } from '@legible/studies';
import { attr, describeValue, node, tensorInfo } from './onnx/graph.ts';
import { DataType, decodeModel, encodeModel, int64Tensor, type ModelProto, type NodeProto, type ValueInfoProto } from './onnx/proto.ts';
import { addTapsToModel, neededNodes } from './onnx/taps.ts';
import { constantTensors } from './onnx/constants.ts';
import { openSession, type Device } from './runtime.ts';
import { inferredTensors, measureTensors, type MetaMap } from './grad/meta.ts';

/** A feature's code at each of `count` positions, from the activation vectors there (count × C). */
export type PositionCodes = (rows: Float32Array, count: number) => Promise<Float32Array> | Float32Array;

export type ContributionFeature = { channel: number } | { direction: Float32Array; codes?: PositionCodes };

export interface ContributionOptions {
  /** The model output holding the logits (default: its first output). */
  output?: string;
  /** Features per pass-2 run (default 16). */
  featureBatch?: number;
  device?: Device;
  threads?: number;
  log?: (s: string) => void;
  /** The layer keeps its channels on the last axis ([N, …positions, C]: nhwc, tokens) rather than axis 1 (nchw, the default). */
  channelsLast?: boolean;
}

export interface FeatureContribution {
  /** Mean over images of logit(y) − logit(y) with the feature removed; y = label, or the original prediction. */
  logitDrop: number;
  /** Accuracy with the feature removed (without labels: agreement with the original predictions). */
  accuracy: number;
  /** Baseline accuracy − `accuracy`. */
  accuracyDrop: number;
  /** Fraction of images whose predicted class changed. */
  changed: number;
}

export interface ContributionResult {
  images: number;
  /** Accuracy of the unchanged model (1 without labels: agreement with itself). */
  baselineAccuracy: number;
  features: FeatureContribution[];
  labels: 'given' | 'predicted';
}

const S = 'ablate/';

/** The graph after `layer`, with the layer and the tensors it still needs from before as inputs, ablated per feature. */
function downstream(model: ModelProto, layer: string, output: string, meta: MetaMap, channelsLast = false) {
  const g = model.graph!;
  const nodes = g.node ?? [];
  // Nodes that depend on the layer.
  const after = new Set<string>([layer]);
  const down: NodeProto[] = [];
  for (const n of nodes) {
    if ((n.input ?? []).some((i) => after.has(i))) {
      down.push(n);
      for (const o of n.output ?? []) after.add(o);
    }
  }
  if (!after.has(output)) throw new LegibleError(`the output "${output}" does not depend on layer "${layer}": removing features there cannot change it`);
  // Keep only what the output needs.
  const needed = new Set([output]);
  const kept = neededNodes(down, needed);
  // Tensors computed from initializers and constants alone (e.g. torch.onnx's Identity copies of
  // identical initializers) are the same for every image: the cut graph computes them itself, they
  // are never fed per image (nor repeated per feature).
  const constant = constantTensors(g);
  const constants = constant.names;
  for (const n of [...constant.nodes].reverse()) if ((n.output ?? []).some((o) => needed.has(o))) for (const x of n.input ?? []) if (x) needed.add(x);
  const boundary = [...new Set(kept.flatMap((n) => n.input ?? []))].filter((t) => t && !after.has(t) && !constants.has(t));
  if (!meta.has(layer) || !meta.has(output) || boundary.some((t) => !meta.has(t))) return { unknown: true as const };
  for (const t of boundary) {
    const m = meta.get(t);
    if (!m || (m.type !== DataType.FLOAT && m.type !== DataType.DOUBLE)) {
      throw new LegibleError(`the graph after "${layer}" reads "${t}", a ${m ? 'non-float' : 'computed'} tensor from before the layer (e.g. a shape); contribution needs float tensors only there`);
    }
  }
  const layerMeta = meta.get(layer)!;
  const rank = layerMeta.dims.length;
  // Channels on axis 1 (nchw) or last (nhwc, tokens); `grid` is the positions' shape.
  const channels = channelsLast ? layerMeta.dims[rank - 1] : layerMeta.dims[1];
  const grid = channelsLast ? layerMeta.dims.slice(1, -1) : layerMeta.dims.slice(2);
  const spatial = rank - 2;
  const extra: NodeProto[] = [];
  const initializers = [...(g.initializer ?? [])].filter((t) => needed.has(t.name!));
  const constNodes = constant.nodes.filter((n) => (n.output ?? []).some((o) => needed.has(o)));
  const i64 = (name: string, v: number[]) => initializers.push(int64Tensor(S + name, [v.length], v));
  const op = (type: string, ins: string[], out: string, attrs: ReturnType<typeof attr.int>[] = []) => extra.push(node(type, ins, [out], attrs, { name: out }));
  // F, the number of features in this run, from the mask's first dimension.
  op('Shape', [S + 'keep'], S + 'keep_shape');
  i64('zero', [0]);
  i64('one', [1]);
  op('Slice', [S + 'keep_shape', S + 'zero', S + 'one'], S + 'F');
  // A' = A · keep[f, c] − codes[f, n, p] · dir[f, c], as [F, N, C, …] → [F·N, C, …].
  i64('feature_shape', channelsLast ? [0, 1, ...Array(spatial).fill(1), channels] : [0, 1, channels, ...Array(spatial).fill(1)]);
  i64('code_shape', channelsLast ? [0, 0, ...grid, 1] : [0, 0, 1, ...grid]);
  op('Reshape', [S + 'keep', S + 'feature_shape'], S + 'keep_b');
  op('Reshape', [S + 'dir', S + 'feature_shape'], S + 'dir_b');
  op('Reshape', [S + 'codes', S + 'code_shape'], S + 'codes_b');
  i64('axis0', [0]);
  op('Unsqueeze', [S + 'layer_in', S + 'axis0'], S + 'layer_1');
  op('Mul', [S + 'layer_1', S + 'keep_b'], S + 'kept');
  op('Mul', [S + 'codes_b', S + 'dir_b'], S + 'component');
  op('Sub', [S + 'kept', S + 'component'], S + 'ablated_f');
  i64('flat_shape', [-1, ...layerMeta.dims.slice(1)]);
  op('Reshape', [S + 'ablated_f', S + 'flat_shape'], layer);
  // Tensors from before the layer, repeated once per feature.
  const inputs: ValueInfoProto[] = [
    tensorInfo(S + 'layer_in', layerMeta.type, ['N', ...layerMeta.dims.slice(1)]),
    tensorInfo(S + 'keep', layerMeta.type, ['F', channels]),
    tensorInfo(S + 'dir', layerMeta.type, ['F', channels]),
    tensorInfo(S + 'codes', layerMeta.type, ['F', 'N', ...grid]),
  ];
  boundary.forEach((t, i) => {
    const m = meta.get(t)!;
    const fed = `${S}boundary/${i}`;
    inputs.push(tensorInfo(fed, m.type, m.dims.map((d, k) => (d >= 0 ? d : k === 0 ? 'N' : null))));
    const r = m.dims.length;
    op('Unsqueeze', [fed, S + 'axis0'], `${fed}/u`);
    i64(`ones/${i}`, Array(r).fill(1));
    op('Concat', [S + 'F', S + `ones/${i}`], `${fed}/reps`, [attr.int('axis', 0)]);
    op('Tile', [`${fed}/u`, `${fed}/reps`], `${fed}/t`);
    op('Shape', [fed], `${fed}/shape`);
    op('Slice', [`${fed}/shape`, S + 'one', int64Name(initializers, `${S}big`, [r])], `${fed}/rest`);
    op('Concat', [int64Name(initializers, `${S}minus_one`, [-1]), `${fed}/rest`], `${fed}/flat`, [attr.int('axis', 0)]);
    op('Reshape', [`${fed}/t`, `${fed}/flat`], t);
  });
  const out: ModelProto = {
    ...model,
    graph: {
      name: `${g.name ?? 'model'}_ablation`,
      node: [...constNodes, ...extra, ...kept],
      initializer: initializers,
      input: inputs,
      output: [tensorInfo(output, meta.get(output)!.type)],
    },
  };
  return { model: out, boundary, channels, grid, positions: grid.reduce((a, b) => a * b, 1) };
}

function int64Name(list: ReturnType<typeof int64Tensor>[], name: string, v: number[]): string {
  if (!list.some((t) => t.name === name)) list.push(int64Tensor(name, [v.length], v));
  return name;
}

/**
 * Drop of the class logit and of accuracy when each feature is removed from `layer`, over images
 * given as preprocessed batches (NCHW float32, the model's input layout).
 */
export async function decisionContribution(
  modelBytes: Uint8Array,
  layer: string,
  features: readonly ContributionFeature[],
  images: Iterable<Float32Array> | AsyncIterable<Float32Array>,
  labels?: Int32Array,
  opts: ContributionOptions = {},
): Promise<ContributionResult> {
  const ort = await import('onnxruntime-node');
  const log = opts.log ?? (() => {});
  const model = decodeModel(modelBytes);
  const g = model.graph!;
  const inits = new Set((g.initializer ?? []).map((t) => t.name));
  const input = (g.input ?? []).find((v) => !inits.has(v.name))!;
  const output = opts.output ?? g.output?.[0]?.name;
  if (!output) throw new LegibleError('the model has no output');
  // Shapes of the layer, the output and the tensors the cut graph reads from before the layer: from
  // shape inference where it derives them all (no run of the model), else measured by onnxruntime.
  const tensors = new Set([...(g.input ?? []).map((v) => v.name), ...(g.node ?? []).flatMap((n) => n.output ?? [])]);
  if (!tensors.has(layer)) throw new LegibleError(`the model has no tensor "${layer}"`);
  let meta: MetaMap = inferredTensors(model);
  let cut = downstream(model, layer, output, meta, opts.channelsLast);
  if ('unknown' in cut) {
    meta = await measureTensors(model);
    if (!meta.has(layer)) throw new LegibleError(`the model has no tensor "${layer}"`);
  }
  const lm = meta.get(layer)!;
  if (lm.dims.length < 2 || lm.dims.slice(1).some((d) => d < 0)) throw new LegibleError(`layer "${layer}" has shape [${lm.dims.join(', ')}]; expected [N, C, …] with fixed C and positions`);
  if ('unknown' in cut) cut = downstream(model, layer, output, meta, opts.channelsLast);
  if ('unknown' in cut) throw new LegibleError(`the shapes after layer "${layer}" could not be measured`);
  const C = cut.channels;
  const Pn = cut.positions;
  for (const [i, f] of features.entries()) {
    if ('channel' in f) {
      if (!Number.isInteger(f.channel) || f.channel < 0 || f.channel >= C) throw new LegibleError(`feature ${i}: "${layer}" has ${C} channels, no channel ${f.channel}`);
    } else if (f.direction.length !== C) throw new LegibleError(`feature ${i}: a direction on "${layer}" needs ${C} values, got ${f.direction.length}`);
  }
  const tapped = encodeModel(addTapsToModel(model, [layer, ...cut.boundary]));
  const first = await openSession(tapped, { device: opts.device, threads: opts.threads, log });
  const second: InferenceSession = (await openSession(encodeModel(cut.model), { device: first.device, threads: opts.threads })).session;
  const perImage = describeValue(input).shape!.slice(1).reduce<number>((a, d) => a * (typeof d === 'number' ? d : 1), 1);
  const chunk = Math.max(1, opts.featureBatch ?? 16);
  const drop = new Float64Array(features.length);
  const correct = new Float64Array(features.length);
  const changed = new Float64Array(features.length);
  let baselineCorrect = 0;
  let seen = 0;
  try {
    for await (const batch of images as AsyncIterable<Float32Array>) {
      const n = batch.length / perImage;
      if (!Number.isInteger(n)) throw new LegibleError(`an image batch holds ${batch.length} values, not a whole number of ${perImage}-value images`);
      const dims = [n, ...describeValue(input).shape!.slice(1).map((d) => Number(d))];
      const out = await first.session.run({ [input.name!]: new ort.Tensor('float32', batch, dims) });
      const A = (out[layer] as Tensor).data as Float32Array;
      const base = (out[output] as Tensor).data as Float32Array;
      const K = base.length / n;
      const target = Int32Array.from({ length: n }, (_, i) => (labels ? labels[seen + i] : argmax(base, i * K, K)));
      if (labels && labels.length < seen + n) throw new LegibleError(`${labels.length} labels for at least ${seen + n} images`);
      for (let i = 0; i < n; i++) if (argmax(base, i * K, K) === target[i]) baselineCorrect++;
      // Position rows (n·P × C) for the codes of direction features.
      let rows: Float32Array | null = null;
      const positionRows = () => {
        if (rows) return rows;
        // Channels-last activations already are position rows.
        if (opts.channelsLast) return (rows = A.slice(0, n * Pn * C));
        rows = new Float32Array(n * Pn * C);
        for (let b = 0; b < n; b++) for (let c = 0; c < C; c++) for (let p = 0; p < Pn; p++) rows[(b * Pn + p) * C + c] = A[(b * C + c) * Pn + p];
        return rows;
      };
      const boundaryFeeds: Record<string, Tensor> = {};
      cut.boundary.forEach((t, i) => (boundaryFeeds[`${S}boundary/${i}`] = out[t] as Tensor));
      for (let f0 = 0; f0 < features.length; f0 += chunk) {
        const fs = features.slice(f0, f0 + chunk);
        const F = fs.length;
        const keep = new Float32Array(F * C).fill(1);
        const dir = new Float32Array(F * C);
        const codes = new Float32Array(F * n * Pn);
        for (const [k, f] of fs.entries()) {
          if ('channel' in f) {
            keep[k * C + f.channel] = 0;
            continue;
          }
          dir.set(f.direction, k * C);
          const r = positionRows();
          let u: Float32Array;
          if (f.codes) {
            u = Float32Array.from(await f.codes(r, n * Pn));
            if (u.length !== n * Pn) throw new LegibleError(`feature ${f0 + k}: codes returned ${u.length} values for ${n * Pn} positions`);
          } else {
            let norm = 0;
            for (const v of f.direction) norm += v * v;
            u = new Float32Array(n * Pn);
            for (let q = 0; q < n * Pn; q++) {
              let s = 0;
              for (let c = 0; c < C; c++) s += r[q * C + c] * f.direction[c];
              u[q] = norm > 0 ? Math.max(0, s) / norm : 0;
            }
          }
          codes.set(u, k * n * Pn);
        }
        const res = await second.run({
          [`${S}layer_in`]: new ort.Tensor('float32', A, [n, ...lm.dims.slice(1)]),
          [`${S}keep`]: new ort.Tensor('float32', keep, [F, C]),
          [`${S}dir`]: new ort.Tensor('float32', dir, [F, C]),
          [`${S}codes`]: new ort.Tensor('float32', codes, [F, n, ...cut.grid]),
          ...boundaryFeeds,
        });
        const ablated = (res[output] as Tensor).data as Float32Array;
        for (let k = 0; k < F; k++)
          for (let i = 0; i < n; i++) {
            const at = (k * n + i) * K;
            drop[f0 + k] += base[i * K + target[i]] - ablated[at + target[i]];
            const pred = argmax(ablated, at, K);
            if (pred === target[i]) correct[f0 + k]++;
            if (pred !== argmax(base, i * K, K)) changed[f0 + k]++;
          }
      }
      seen += n;
      log(`contribution: ${seen} images, ${features.length} features of ${layer}`);
    }
  } finally {
    await first.session.release();
    await second.release();
  }
  if (!seen) throw new LegibleError('decisionContribution: no images');
  const baselineAccuracy = baselineCorrect / seen;
  return {
    images: seen,
    baselineAccuracy,
    labels: labels ? 'given' : 'predicted',
    features: features.map((_, f) => ({
      logitDrop: drop[f] / seen,
      accuracy: correct[f] / seen,
      accuracyDrop: baselineAccuracy - correct[f] / seen,
      changed: changed[f] / seen,
    })),
  };
}

function argmax(v: Float32Array, start: number, n: number): number {
  let best = 0;
  for (let i = 1; i < n; i++) if (v[start + i] > v[start + best]) best = i;
  return best;
}

/**
 * `codes` functions for the k features of one dictionary (NMF or SAE) that share one call of its
 * encoder per batch of positions: encode(rows, count) → count × k codes; feature j reads column j.
 *   const codes = dictionaryCodes((rows, n) => sae.encode(rows, n), sae.dictionary);
 *   features = js.map((j) => ({ direction: sae.decoderDirections.subarray(j * c, (j + 1) * c), codes: codes[j] }));
 */
export function dictionaryCodes(encode: (rows: Float32Array, count: number) => Promise<Float32Array> | Float32Array, k: number): PositionCodes[] {
  let lastRows: Float32Array | null = null;
  let last: Promise<Float32Array> | null = null;
  const all = (rows: Float32Array, count: number) => {
    if (rows !== lastRows || !last) {
      lastRows = rows;
      last = Promise.resolve(encode(rows, count));
    }
    return last;
  };
  return Array.from({ length: k }, (_, j) => async (rows: Float32Array, count: number) => {
    const codes = await all(rows, count);
    if (codes.length !== count * k) throw new LegibleError(`the dictionary encoder returned ${codes.length} codes for ${count} positions × ${k} features`);
    return Float32Array.from({ length: count }, (_, q) => codes[q * k + j]);
  });
}
