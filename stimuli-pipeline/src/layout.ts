// Layouts of tapped tensors: which axis holds the channels (features) and which the positions.
//   nchw    [N, C, …positions]   convolutional feature maps (ONNX's own layout); [N, C] vectors
//   nhwc    [N, …positions, C]   channels-last blocks (ConvNeXt's permuted LayerNorm/MLP)
//   tokens  [N, T, D]            transformer tokens; the first `classTokens` tokens (a ViT's class
//                                token) are not positions of the image and are left out of means
// A layout is inferred by following the graph from the image: convolutions and pools give nchw,
// Transpose moves it (nchw →[0,2,3,1]→ nhwc; [N, C, L] →[0,2,1]→ tokens), elementwise ops,
// normalisations and matrix products over the channel axis keep it, a Concat of image-independent
// tokens before the patch tokens counts class tokens. Where the graph does not say, the study
// declares it (model.layers[].layout); a declaration that contradicts the graph is an error.
import { readFileSync } from 'node:fs';
import { LegibleError, nearestNames, type Layer } from '@legible/studies';
import { attributeValue, getAttribute, tensorInfo } from './onnx/graph.ts';
import { dataTypeName, DataType, decodeModel, encodeModel, type ModelProto, type NodeProto } from './onnx/proto.ts';
import { readModelSkeleton } from './onnx/skeleton.ts';
import { addTapsToModel } from './onnx/taps.ts';
import { inferShapes, type Dim, type TensorShape } from './onnx/shapes.ts';

export type Layout = 'nchw' | 'nhwc' | 'tokens';
export const LAYOUTS: readonly Layout[] = ['nchw', 'nhwc', 'tokens'];

export interface TensorLayout {
  layout: Layout;
  /** Leading tokens that are not image positions (tokens layout only; 0 otherwise). */
  classTokens: number;
}

/** A layer's axes, resolved from its layout and shape. */
export interface LayerAxes extends TensorLayout {
  /** Axis of the channels in the batched tensor. */
  channelAxis: number;
  /** Axes of the positions in the batched tensor. */
  spatialAxes: number[];
}

export function axesOf(layout: TensorLayout, rank: number): LayerAxes {
  if (layout.layout === 'nchw') return { ...layout, channelAxis: 1, spatialAxes: range(2, rank) };
  return { ...layout, channelAxis: rank - 1, spatialAxes: range(1, rank - 1) };
}
const range = (a: number, b: number) => Array.from({ length: Math.max(0, b - a) }, (_, i) => a + i);

/** A tensor of the model: what `legible layers` lists and what a study may tap. */
export interface ModelTensor {
  name: string;
  op: string;
  node: string;
  type: string;
  /** Batched shape; "N" marks a dynamic batch; null an unknown size; undefined an unknown rank. */
  shape?: Dim[];
  /** Inferred layout, or null where the graph does not determine it. */
  layout: TensorLayout | null;
  /** The torch module it came from (from the exporter's scoped node names), if any. */
  module: string | null;
  output: boolean;
  /** A float tensor computed from the image, with the batch first: a layer a study can tap. */
  feature: boolean;
  /** Why it is not a feature tensor. */
  why?: string;
}

const DATA_TYPES: Record<string, number> = { float32: DataType.FLOAT, float64: DataType.DOUBLE, float16: DataType.FLOAT16, bfloat16: DataType.BFLOAT16 };
const FLOATS = new Set<number>([DataType.FLOAT, DataType.DOUBLE, DataType.FLOAT16, DataType.BFLOAT16]);

/** The torch module path from an exporter's scoped node name: "/layer1/layer1.0/conv1/Conv" → "layer1.0.conv1". */
export function moduleOf(nodeName: string): string | null {
  if (!nodeName.startsWith('/')) return null;
  const parts = nodeName.split('/').slice(1, -1).filter(Boolean);
  // The exporter scopes a child of a container as "<container>.<child>" (layer1 → layer1.0).
  let path = '';
  let last = '';
  for (const p of parts) {
    path = !path ? p : last && p.startsWith(`${last}.`) ? path + p.slice(last.length) : `${path}.${p}`;
    last = p;
  }
  return path || null;
}

/**
 * Every tensor of the model's main graph computed by a node or fed as an input (initializers are
 * left out), with shape, layout and module. Reads nothing but the graph: pass a skeleton
 * (readModelSkeleton) for large models.
 */
export function describeTensors(model: ModelProto, shapes: Map<string, TensorShape> = inferShapes(model)): ModelTensor[] {
  const g = model.graph ?? {};
  const inits = new Set((g.initializer ?? []).map((t) => t.name ?? ''));
  const outputs = new Set((g.output ?? []).map((o) => o.name));
  // Tensors whose values do not depend on the image's values (weights, shapes, class tokens).
  const fixed = new Set<string>(inits);
  const layouts = new Map<string, TensorLayout | null>();
  const list: ModelTensor[] = [];
  const featureLike = (name: string): { ok: boolean; why?: string } => {
    const s = shapes.get(name);
    if (fixed.has(name)) return { ok: false, why: 'the same for every image (computed from weights or shapes)' };
    if (s?.type === undefined) return { ok: false, why: 'element type unknown' };
    if (!FLOATS.has(s.type)) return { ok: false, why: `${dataTypeName(s.type)}, not a float tensor` };
    if (!s.shape) return { ok: true };
    if (s.shape.length < 2) return { ok: false, why: `rank ${s.shape.length}: not [batch, …]` };
    const batchSymbolic = s.shape.some((d) => typeof d === 'string' && /(^|\*)N($|\*)/.test(d));
    if (batchSymbolic && s.shape[0] !== 'N') return { ok: false, why: 'the batch is not its first axis' };
    return { ok: true };
  };
  const add = (name: string, op: string, nodeName: string) => {
    const s = shapes.get(name);
    const f = featureLike(name);
    list.push({
      name,
      op,
      node: nodeName,
      type: s?.type !== undefined ? dataTypeName(s.type) : '?',
      shape: s?.shape,
      layout: f.ok ? (layouts.get(name) ?? null) : null,
      module: moduleOf(nodeName),
      output: outputs.has(name),
      feature: f.ok,
      why: f.why,
    });
  };
  for (const v of g.input ?? []) {
    if (inits.has(v.name ?? '')) continue;
    const s = shapes.get(v.name ?? '')?.shape;
    if (s?.length === 4) {
      const [, c, , w] = s;
      const small = (d: Dim) => typeof d === 'number' && d <= 4;
      if (small(c) && !small(w)) layouts.set(v.name!, { layout: 'nchw', classTokens: 0 });
      else if (small(w) && !small(c)) layouts.set(v.name!, { layout: 'nhwc', classTokens: 0 });
    }
    add(v.name ?? '', 'input', '');
  }
  for (const n of g.node ?? []) {
    const ins = (n.input ?? []).filter(Boolean);
    const op = n.op_type ?? '?';
    if (op === 'Constant' || op === 'Shape' || op === 'Size' || (ins.length > 0 && ins.every((i) => fixed.has(i)))) for (const o of n.output ?? []) if (o) fixed.add(o);
    (n.output ?? []).forEach((o, k) => {
      if (!o) return;
      if (!fixed.has(o)) layouts.set(o, k === 0 ? propagate(n, shapes, layouts, fixed) : null);
      add(o, op, n.name ?? '');
    });
  }
  return list;
}

const SAME = new Set([
  'Relu', 'Sigmoid', 'Tanh', 'Erf', 'Sqrt', 'Exp', 'Log', 'Neg', 'Abs', 'Reciprocal', 'HardSigmoid', 'HardSwish', 'LeakyRelu', 'Elu',
  'Selu', 'Celu', 'Softplus', 'Softsign', 'Clip', 'Dropout', 'Identity', 'Cast', 'Gelu', 'Mish', 'PRelu', 'ThresholdedRelu', 'Shrink',
  'Floor', 'Ceil', 'Round', 'Sign', 'Sin', 'Cos',
]);
const ELEMENTWISE = new Set(['Add', 'Sub', 'Mul', 'Div', 'Pow', 'Max', 'Min', 'Sum', 'Mean', 'Where']);
const SPATIAL_NCHW = new Set(['Conv', 'ConvTranspose', 'MaxPool', 'AveragePool', 'LpPool', 'GlobalAveragePool', 'GlobalMaxPool', 'GlobalLpPool', 'BatchNormalization', 'InstanceNormalization', 'LRN', 'Resize', 'Upsample', 'DepthToSpace', 'SpaceToDepth', 'GroupNormalization']);

function propagate(n: NodeProto, shapes: Map<string, TensorShape>, layouts: Map<string, TensorLayout | null>, fixed: Set<string>): TensorLayout | null {
  const op = n.op_type ?? '';
  const out = shapes.get(n.output?.[0] ?? '')?.shape;
  const ins = (n.input ?? []).filter(Boolean);
  const x = ins[0];
  const lx = x ? (layouts.get(x) ?? null) : null;
  const sx = x ? shapes.get(x)?.shape : undefined;
  const ints = (name: string) => {
    const a = getAttribute(n, name);
    return a ? (attributeValue(a) as (number | bigint)[]).map(Number) : undefined;
  };
  const int = (name: string, d: number) => {
    const a = getAttribute(n, name);
    return a ? Number(attributeValue(a)) : d;
  };
  // [N, K]: a vector per image; nothing else it could be.
  if (out?.length === 2) return { layout: 'nchw', classTokens: 0 };
  if (SPATIAL_NCHW.has(op)) return lx?.layout === 'nchw' ? { layout: 'nchw', classTokens: 0 } : null;
  if (SAME.has(op) || op === 'Softmax' || op === 'LogSoftmax' || op === 'LayerNormalization') return lx;
  if (op.startsWith('Reduce')) return int('keepdims', 1) === 1 ? lx : null;
  if (ELEMENTWISE.has(op)) {
    const full = ins.filter((i) => !fixed.has(i) && shapes.get(i)?.shape?.length === out?.length);
    const known = full.map((i) => layouts.get(i) ?? null).filter((l): l is TensorLayout => l !== null);
    if (!known.length) return null;
    return known.every((l) => l.layout === known[0].layout && l.classTokens === known[0].classTokens) ? known[0] : null;
  }
  if (op === 'MatMul') {
    // Features × a weight matrix over the channel axis keeps a channels-last layout.
    const w = shapes.get(ins[1] ?? '')?.shape;
    if (lx && lx.layout !== 'nchw' && fixed.has(ins[1] ?? '') && w?.length === 2) return lx;
    return null;
  }
  if (op === 'Transpose' && sx && lx) {
    const perm = ints('perm') ?? sx.map((_, i) => sx.length - 1 - i);
    const key = perm.join(',');
    if (perm.every((p, i) => p === i)) return lx;
    if (lx.layout === 'nchw' && key === '0,2,3,1') return { layout: 'nhwc', classTokens: 0 };
    if (lx.layout === 'nhwc' && key === '0,3,1,2') return { layout: 'nchw', classTokens: 0 };
    if (lx.layout === 'nchw' && key === '0,2,1') return { layout: 'tokens', classTokens: 0 };
    if (lx.layout === 'tokens' && key === '0,2,1' && lx.classTokens === 0) return { layout: 'nchw', classTokens: 0 };
    return null;
  }
  if (op === 'Reshape' && sx && out && lx?.layout === 'nchw' && out.length === 3 && sx.length === 4 && String(out[1]) === String(sx[1])) {
    return { layout: 'nchw', classTokens: 0 };
  }
  if (op === 'Concat' && out) {
    const axis = normAxis(int('axis', 0), out.length);
    const feats = ins.filter((i) => !fixed.has(i));
    const ls = feats.map((i) => layouts.get(i) ?? null);
    if (!ls.length || ls.some((l) => l === null || l.layout !== ls[0]!.layout)) return null;
    const l = ls[0]!;
    const channelAxis = l.layout === 'nchw' ? 1 : out.length - 1;
    if (axis === channelAxis) return ins.some((i) => fixed.has(i)) ? null : { layout: l.layout, classTokens: l.classTokens };
    if (l.layout === 'tokens' && axis === 1) {
      // Image-independent tokens placed before the first image token are class (or register) tokens.
      let lead = 0;
      for (const i of ins) {
        if (!fixed.has(i)) break;
        const t = shapes.get(i)?.shape?.[1];
        if (typeof t !== 'number') return null;
        lead += t;
      }
      return { layout: 'tokens', classTokens: lead + l.classTokens };
    }
    return feats.length === ins.length ? l : null;
  }
  if (op === 'Pad' && lx && sx && out && out.length === sx.length) {
    // Padding of positions (torch's AvgPool2d with padding exports Pad + AveragePool) keeps the
    // layout; padding the channel axis, or tokens before a class token, would not.
    const c = lx.layout === 'nchw' ? 1 : sx.length - 1;
    if (String(out[c]) !== String(sx[c])) return null;
    if (lx.layout === 'tokens' && String(out[1]) !== String(sx[1])) return null;
    return lx;
  }
  if (op === 'Slice' && lx && sx) {
    if (lx.layout !== 'tokens' || lx.classTokens === 0) return lx;
    return null;
  }
  return null;
}

const normAxis = (a: number, rank: number) => (a < 0 ? a + rank : a);

// ─── A study's layers against the model ─────────────────────────────────────────────────────

export interface ResolvedLayer {
  name: string;
  tensor: string;
  layout: Layout;
  classTokens: number;
  /** Shape of one image's activation (batch removed). */
  shape: number[];
  channels: number;
  /** Positions averaged over (class tokens excluded). */
  positions: number;
  channelAxis: number;
  spatialAxes: number[];
}

export interface LayerProblem {
  /** Index in model.layers. */
  index: number;
  field: 'tensor' | 'layout' | 'class_token';
  message: string;
}

/** Study layer as the schema gives it (layout and class_token optional). */
export type StudyLayer = Layer & { layout?: Layout; class_token?: boolean };

const showShape = (s: readonly Dim[] | undefined) => (s ? `[${s.map((d) => (d === null ? '?' : d)).join(', ')}]` : '[?]');

/**
 * Each study layer's tensor, layout and axes, checked against the model: a tensor the model lacks
 * (with the nearest names), one that is not a per-image float tensor, a layout that cannot be inferred
 * and is not declared, or a declaration that contradicts the graph or the shape, is a problem.
 * `measured` gives shapes that inference left open (from onnxruntime), by tensor name.
 */
export function resolveLayers(
  tensors: readonly ModelTensor[],
  layers: readonly StudyLayer[],
  measured: Map<string, number[]> = new Map(),
): { layers: ResolvedLayer[]; problems: LayerProblem[] } {
  const byName = new Map(tensors.map((t) => [t.name, t]));
  const features = tensors.filter((t) => t.feature).map((t) => t.name);
  const problems: LayerProblem[] = [];
  const resolved: ResolvedLayer[] = [];
  layers.forEach((l, index) => {
    const t = byName.get(l.tensor);
    if (!t) {
      const near = nearestNames(l.tensor, features, 3);
      problems.push({ index, field: 'tensor', message: `the model has no tensor "${l.tensor}"${near.length ? `; nearest: ${near.map((n) => `"${n}"`).join(', ')}` : ''}. \`legible layers ${'<model.onnx>'}\` lists them.` });
      return;
    }
    if (!t.feature) {
      problems.push({ index, field: 'tensor', message: `"${l.tensor}" (${t.op}, ${t.type} ${showShape(t.shape)}) is not a feature tensor: ${t.why}` });
      return;
    }
    const m = measured.get(l.tensor);
    const shape: Dim[] | undefined = t.shape && t.shape.every((d, i) => i === 0 || typeof d === 'number') ? t.shape : m ? ['N', ...m.slice(1)] : t.shape;
    const declared = l.layout;
    const inferred = t.layout;
    const where = `"${l.tensor}" ${showShape(shape)}`;
    if (l.class_token !== undefined && (declared ?? inferred?.layout) !== 'tokens') {
      problems.push({ index, field: 'class_token', message: `class_token applies to layout tokens; ${where} is ${declared ?? inferred?.layout ?? 'of unknown layout'}` });
      return;
    }
    if (declared && inferred && declared !== inferred.layout) {
      problems.push({ index, field: 'layout', message: `${where} is ${inferred.layout} (${describe(inferred.layout)}), as the graph shows; layout: ${declared} would read it wrongly. Remove layout or set it to ${inferred.layout}.` });
      return;
    }
    const layout = declared ?? inferred?.layout;
    if (!layout) {
      problems.push({
        index,
        field: 'layout',
        message: `the layout of ${where} cannot be inferred from the graph: declare it, layout: nchw ([N, C, H, W]), nhwc ([N, H, W, C]) or tokens ([N, T, D], with class_token: true if its first token is a class token)`,
      });
      return;
    }
    let classTokens = inferred?.layout === 'tokens' ? inferred.classTokens : 0;
    if (layout === 'tokens' && l.class_token !== undefined) {
      const want = l.class_token ? 1 : 0;
      if (inferred?.layout === 'tokens' && (inferred.classTokens > 0) !== l.class_token) {
        problems.push({ index, field: 'class_token', message: `${where} ${inferred.classTokens ? `begins with ${inferred.classTokens} class token${inferred.classTokens > 1 ? 's' : ''}` : 'has no class token'} in the graph; class_token: ${l.class_token} contradicts it` });
        return;
      }
      classTokens = inferred?.layout === 'tokens' ? inferred.classTokens : want;
    } else if (layout === 'tokens' && !inferred) {
      problems.push({ index, field: 'layout', message: `${where} is declared tokens but the graph does not show whether its first token is a class token: add class_token: true or false` });
      return;
    }
    if (!shape || shape.slice(1).some((d) => typeof d !== 'number')) {
      problems.push({ index, field: 'tensor', message: `the shape of ${where} per image is not fixed; legible needs fixed channels and positions` });
      return;
    }
    const dims = shape.slice(1) as number[];
    const rank = shape.length;
    const rankOk = layout === 'nchw' ? rank >= 2 : layout === 'nhwc' ? rank >= 3 : rank === 3;
    if (!rankOk) {
      problems.push({ index, field: 'layout', message: `${where} has rank ${rank}; layout ${layout} needs ${describe(layout)}` });
      return;
    }
    const axes = axesOf({ layout, classTokens }, rank);
    const positions = axes.spatialAxes.reduce((p, a) => p * (shape[a] as number), 1) - classTokens;
    if (positions < 1) {
      problems.push({ index, field: 'class_token', message: `${where} has no tokens left besides its class token` });
      return;
    }
    resolved.push({ name: l.name, tensor: l.tensor, layout, classTokens, shape: dims, channels: shape[axes.channelAxis] as number, positions, channelAxis: axes.channelAxis, spatialAxes: axes.spatialAxes });
  });
  return { layers: resolved, problems };
}

function describe(layout: Layout): string {
  return layout === 'nchw' ? '[N, C, …positions]' : layout === 'nhwc' ? '[N, …positions, C]' : '[N, T, D], tokens × hidden size';
}

/** The problems as one error (for callers without a study file to point into). */
export function layerError(layers: readonly StudyLayer[], problems: readonly LayerProblem[]): LegibleError {
  return new LegibleError(problems.map((p) => `model.layers[${p.index}].${p.field} (layer "${layers[p.index].name}"): ${p.message}`).join('\n'));
}

/**
 * Per image, the mean over positions of each channel (class tokens left out): activations of `n`
 * images in the layer's layout → n × C rows.
 */
export function spatialMeans(values: Float32Array, n: number, layer: Pick<ResolvedLayer, 'layout' | 'classTokens' | 'shape' | 'channels'>): Float32Array {
  const C = layer.channels;
  const per = layer.shape.reduce((a, b) => a * b, 1);
  const P = per / C;
  const skip = layer.classTokens;
  const out = new Float32Array(n * C);
  for (let b = 0; b < n; b++) {
    const base = b * per;
    if (layer.layout === 'nchw') {
      for (let c = 0; c < C; c++) {
        let s = 0;
        for (let p = 0; p < P; p++) s += values[base + c * P + p];
        out[b * C + c] = s / P;
      }
    } else {
      for (let p = skip; p < P; p++) for (let c = 0; c < C; c++) out[b * C + c] += values[base + p * C + c];
      for (let c = 0; c < C; c++) out[b * C + c] /= P - skip;
    }
  }
  return out;
}

// ─── Where inference leaves a shape open: measure it ────────────────────────────────────────

/**
 * Shapes of `names` measured by onnxruntime on zeros (only those tensors tapped), with a dynamic batch
 * fed as 1 and 2 so that the batch axis shows as "N". `inputShapes` fixes inputs with other dynamic
 * dimensions. Reads the whole model: call it only for what inference could not derive.
 */
export async function measureShapes(model: ModelProto, names: readonly string[], inputShapes: Map<string, number[]> = new Map()): Promise<Map<string, Dim[]>> {
  const ort = await import('onnxruntime-node');
  const g = model.graph!;
  const inits = new Set((g.initializer ?? []).map((t) => t.name));
  const inputs = (g.input ?? []).filter((v) => !inits.has(v.name));
  const shapes = inferShapes({ ...model, graph: { ...g, node: [] } });
  let dynamic = false;
  const plan = inputs.map((v) => {
    const given = inputShapes.get(v.name!);
    if (given) return { v, dims: given, batched: false };
    const s = shapes.get(v.name!)?.shape;
    if (!s) throw new LegibleError(`input "${v.name}" declares no shape; pass --input-shape ${v.name}=…`);
    const bad = s.findIndex((d, i) => i > 0 && typeof d !== 'number');
    if (bad >= 0) throw new LegibleError(`input "${v.name}" has shape ${showShape(s)}: dimension #${bad} besides the batch is not fixed. Pass the size to use, e.g. --input-shape ${v.name}=${s.map((d, i) => (typeof d === 'number' ? d : i === 0 ? 1 : 224)).join(',')}`);
    if (typeof s[0] !== 'number') dynamic = true;
    return { v, dims: s.map((d) => (typeof d === 'number' ? d : 1)), batched: typeof s[0] !== 'number' };
  });
  const session = await ort.InferenceSession.create(encodeModel(addTapsToModel(model, names)), { logSeverityLevel: 3 });
  try {
    const run = async (batch: number) => {
      const feeds: Record<string, InstanceType<typeof ort.Tensor>> = {};
      for (const { v, dims, batched } of plan) {
        const d = batched ? [batch, ...dims.slice(1)] : dims;
        const count = d.reduce((a, b) => a * b, 1);
        const type = shapes.get(v.name!)?.type;
        feeds[v.name!] =
          type === DataType.INT64 ? new ort.Tensor('int64', new BigInt64Array(count), d) : type === DataType.DOUBLE ? new ort.Tensor('float64', new Float64Array(count), d) : new ort.Tensor('float32', new Float32Array(count), d);
      }
      const out = await session.run(feeds, [...names]);
      return new Map(names.map((n) => [n, out[n].dims.map(Number)]));
    };
    const one = await run(1);
    const two = dynamic ? await run(2) : one;
    return new Map(names.map((n) => [n, one.get(n)!.map((d, i): Dim => (two.get(n)![i] === d ? d : d === 1 && two.get(n)![i] === 2 ? 'N' : null))]));
  } finally {
    await session.release();
  }
}

/**
 * The model's tensors with shapes and layouts (inferred; measured by onnxruntime where inference
 * left a feature tensor's shape open and `measure` is set). Reads a file as a skeleton first and the
 * whole model only when something must be measured.
 */
export async function analyzeModel(source: string | Uint8Array, opts: { measure?: boolean; inputShapes?: Map<string, number[]> } = {}): Promise<{ tensors: ModelTensor[]; measured: Set<string> }> {
  let model = typeof source === 'string' ? readModelSkeleton(source) : decodeModel(source);
  if (opts.inputShapes?.size) model = withInputShapes(model, opts.inputShapes);
  const tensors = describeTensors(model);
  const measured = new Set<string>();
  const open = tensors.filter((t) => t.feature && (!t.shape || t.shape.some((d, i) => i > 0 && typeof d !== 'number')));
  if (opts.measure && open.length) {
    const full = typeof source === 'string' ? decodeModel(readFileSync(source)) : decodeModel(source);
    const shapes = await measureShapes(opts.inputShapes?.size ? withInputShapes(full, opts.inputShapes) : full, open.map((t) => t.name), opts.inputShapes);
    const g = model.graph!;
    const types = new Map(tensors.map((t) => [t.name, shapes.has(t.name) ? (DATA_TYPES[t.type] ?? DataType.FLOAT) : DataType.FLOAT]));
    const valueInfo = [...shapes].map(([name, s]) => tensorInfo(name, types.get(name)!, s));
    for (const name of shapes.keys()) measured.add(name);
    model = { ...model, graph: { ...g, value_info: [...(g.value_info ?? []).filter((v) => !shapes.has(v.name!)), ...valueInfo] } };
    return { tensors: describeTensors(model), measured };
  }
  return { tensors, measured };
}

function withInputShapes(model: ModelProto, given: Map<string, number[]>): ModelProto {
  const g = model.graph!;
  const input = (g.input ?? []).map((v) => {
    const dims = given.get(v.name!);
    if (!dims) return v;
    return { ...v, type: { tensor_type: { elem_type: v.type?.tensor_type?.elem_type ?? DataType.FLOAT, shape: { dim: dims.map((d) => ({ dim_value: d })) } } } };
  });
  return { ...model, graph: { ...g, input } };
}

/**
 * The study's layers resolved against the model (layout, channels, positions), or the problems.
 * Shapes that inference leaves open are measured by onnxruntime for the tapped tensors only.
 */
export async function checkModelLayers(source: string | Uint8Array, layers: readonly StudyLayer[]): Promise<{ layers: ResolvedLayer[]; problems: LayerProblem[]; tensors: ModelTensor[] }> {
  const { tensors } = await analyzeModel(source, { measure: false });
  const byName = new Map(tensors.map((t) => [t.name, t]));
  const open = [...new Set(layers.map((l) => l.tensor))].filter((name) => {
    const t = byName.get(name);
    return t?.feature && (!t.shape || t.shape.some((d, i) => i > 0 && typeof d !== 'number'));
  });
  const measured = new Map<string, number[]>();
  if (open.length) {
      const full = decodeModel(typeof source === 'string' ? readFileSync(source) : source);
    for (const [name, dims] of await measureShapes(full, open)) if (dims.slice(1).every((d) => typeof d === 'number')) measured.set(name, dims.map((d) => (typeof d === 'number' ? d : 1)));
  }
  return { ...resolveLayers(tensors, layers, measured), tensors };
}

/** The study's layers resolved against the model; a LegibleError naming each problem otherwise. */
export async function modelLayers(source: string | Uint8Array, layers: readonly StudyLayer[]): Promise<ResolvedLayer[]> {
  const r = await checkModelLayers(source, layers);
  if (r.problems.length) throw layerError(layers, r.problems);
  return r.layers;
}
