// Shape inference over an ONNX graph, without running it: each node's output type and shape from
// its inputs' by the operator's definition, with the values of small integer tensors (the shape
// arithmetic exporters emit: Shape → Gather → Concat → Reshape) propagated so Reshape, Expand,
// Slice and friends get their sizes. A dynamic dimension stays symbolic ("N", "2*N"), so the batch
// is told apart from fixed sizes. A tensor whose shape cannot be derived (an op this table lacks, a
// size computed from image values) is left without one; callers measure those with onnxruntime.
import { attributeValue, describeValue, getAttribute } from './graph.ts';
import { DataType, elementCount, type ModelProto, type NodeProto, type TensorProto } from './proto.ts';

/** A dimension or value: a number, a symbolic product ("N", "2*N", "H*W"), or null (unknown). */
export type Dim = number | string | null;

export interface TensorShape {
  /** TensorProto.DataType. */
  type?: number;
  /** Undefined when even the rank is unknown. */
  shape?: Dim[];
  /** Flat values, for small integer tensors (and scalars) whose values are known without the image. */
  value?: Dim[];
}

// ─── Symbolic products ──────────────────────────────────────────────────────────────────────
interface Mono {
  c: number;
  s: string[];
}
const parse = (d: number | string): Mono => {
  if (typeof d === 'number') return { c: d, s: [] };
  let c = 1;
  const s: string[] = [];
  for (const part of d.split('*')) {
    if (/^-?\d+$/.test(part)) c *= Number(part);
    else s.push(part);
  }
  return { c, s: s.sort() };
};
const fmt = (m: Mono): number | string => (m.s.length === 0 || m.c === 0 ? m.c : `${m.c === 1 ? '' : `${m.c}*`}${m.s.join('*')}`);

export function mulDim(a: Dim, b: Dim): Dim {
  if (a === null || b === null) return a === 0 || b === 0 ? 0 : null;
  if (typeof a === 'number' && typeof b === 'number') return a * b;
  const x = parse(a);
  const y = parse(b);
  return fmt({ c: x.c * y.c, s: [...x.s, ...y.s].sort() });
}

export function divDim(a: Dim, b: Dim): Dim {
  if (a === null || b === null) return null;
  if (typeof a === 'number' && typeof b === 'number') return b !== 0 && a % b === 0 ? a / b : b !== 0 ? Math.trunc(a / b) : null;
  const x = parse(a);
  const y = parse(b);
  if (y.c === 0 || x.c % y.c !== 0) return null;
  const s = [...x.s];
  for (const sym of y.s) {
    const i = s.indexOf(sym);
    if (i < 0) return null;
    s.splice(i, 1);
  }
  return fmt({ c: x.c / y.c, s });
}

function addDim(a: Dim, b: Dim): Dim {
  if (typeof a === 'number' && typeof b === 'number') return a + b;
  if (b === 0) return a;
  if (a === 0) return b;
  if (a !== null && b !== null && typeof a === 'string' && typeof b === 'string' && a === b) return mulDim(2, a);
  return null;
}
const negDim = (a: Dim): Dim => mulDim(-1, a);
const eqDim = (a: Dim, b: Dim) => a !== null && b !== null && String(a) === String(b);
const product = (dims: readonly Dim[]): Dim => dims.reduce<Dim>((p, d) => mulDim(p, d), 1);

// ─── Helpers ────────────────────────────────────────────────────────────────────────────────
const INT_TYPES = new Set<number>([DataType.INT64, DataType.INT32, DataType.INT16, DataType.INT8, DataType.UINT8, DataType.UINT16, DataType.UINT32, DataType.UINT64, DataType.BOOL]);

function tensorValues(t: TensorProto): number[] | undefined {
  const n = elementCount(t.dims);
  if (n > 64) return undefined;
  const type = t.data_type;
  if (t.raw_data) {
    const raw = t.raw_data;
    const v = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    const read: Partial<Record<number, [number, (i: number) => number]>> = {
      [DataType.INT64]: [8, (i) => Number(v.getBigInt64(8 * i, true))],
      [DataType.INT32]: [4, (i) => v.getInt32(4 * i, true)],
      [DataType.FLOAT]: [4, (i) => v.getFloat32(4 * i, true)],
      [DataType.DOUBLE]: [8, (i) => v.getFloat64(8 * i, true)],
      [DataType.BOOL]: [1, (i) => v.getUint8(i)],
      [DataType.UINT8]: [1, (i) => v.getUint8(i)],
      [DataType.INT8]: [1, (i) => v.getInt8(i)],
    };
    const r = read[type ?? 0];
    if (!r || raw.byteLength !== n * r[0]) return undefined;
    return Array.from({ length: n }, (_, i) => r[1](i));
  }
  const list: ArrayLike<number | bigint> | undefined =
    type === DataType.INT64 ? t.int64_data : type === DataType.FLOAT ? t.float_data : type === DataType.DOUBLE ? t.double_data : t.int32_data;
  if (!list || list.length !== n) return undefined;
  return Array.from(list, Number);
}

function broadcast(shapes: (Dim[] | undefined)[]): Dim[] | undefined {
  if (shapes.some((s) => !s)) return undefined;
  const rank = Math.max(...shapes.map((s) => s!.length));
  const out: Dim[] = [];
  for (let i = 0; i < rank; i++) {
    let d: Dim = 1;
    for (const s of shapes) {
      const x = s![s!.length - rank + i] ?? 1;
      if (x === 1) continue;
      if (d === 1) d = x;
      else if (!eqDim(d, x)) d = d === null ? x : x === null ? d : d; // unequal symbols: keep the first (a model that runs has them equal)
    }
    out.push(d);
  }
  return out;
}

const normAxis = (a: number, rank: number) => (a < 0 ? a + rank : a);

function elementwise(op: string, vals: (Dim[] | undefined)[], shapes: (Dim[] | undefined)[]): Dim[] | undefined {
  if (vals.some((v) => !v)) return undefined;
  const out = broadcast(shapes);
  if (!out) return undefined;
  const n = product(out);
  if (typeof n !== 'number' || n > 64) return undefined;
  const at = (v: Dim[], s: Dim[], flat: number): Dim => {
    if (v.length === 1) return v[0];
    // Broadcast index into s (right-aligned to out).
    let idx = 0;
    let stride = 1;
    let rem = flat;
    const pos: number[] = [];
    for (let i = out.length - 1; i >= 0; i--) {
      const d = out[i] as number;
      pos[i] = rem % d;
      rem = Math.floor(rem / d);
    }
    for (let i = s.length - 1; i >= 0; i--) {
      const d = s[i] as number;
      const p = pos[out.length - s.length + i];
      idx += (d === 1 ? 0 : p) * stride;
      stride *= d;
    }
    return v[idx];
  };
  const res: Dim[] = [];
  for (let i = 0; i < n; i++) {
    const xs = vals.map((v, k) => at(v!, shapes[k]!, i));
    const [a, b, c] = xs;
    let r: Dim;
    switch (op) {
      case 'Add': r = addDim(a, b); break;
      case 'Sub': r = addDim(a, negDim(b)); break;
      case 'Mul': r = mulDim(a, b); break;
      case 'Div': r = divDim(a, b); break;
      case 'Equal':
        // A symbolic dimension is a size: never 0 or negative.
        if (typeof a === 'number' && typeof b === 'number') r = Number(a === b);
        else if (eqDim(a, b)) r = 1;
        else if ((typeof a === 'string' && typeof b === 'number' && b <= 0) || (typeof b === 'string' && typeof a === 'number' && a <= 0)) r = 0;
        else r = null;
        break;
      case 'Where': r = a === null ? (eqDim(b, c) ? b : null) : a ? b : c; break;
      case 'Max': r = typeof a === 'number' && typeof b === 'number' ? Math.max(a, b) : null; break;
      case 'Min': r = typeof a === 'number' && typeof b === 'number' ? Math.min(a, b) : null; break;
      default: r = null;
    }
    res.push(r);
  }
  return res;
}

const UNARY = new Set([
  'Relu', 'Sigmoid', 'Tanh', 'Erf', 'Sqrt', 'Exp', 'Log', 'Neg', 'Abs', 'Reciprocal', 'HardSigmoid', 'HardSwish', 'LeakyRelu',
  'Elu', 'Selu', 'Celu', 'Softplus', 'Softsign', 'Clip', 'Dropout', 'Identity', 'Softmax', 'LogSoftmax', 'LRN',
  'BatchNormalization', 'InstanceNormalization', 'LayerNormalization', 'GroupNormalization', 'Gelu', 'Mish', 'Sign',
  'Floor', 'Ceil', 'Round', 'Sin', 'Cos', 'PRelu', 'CumSum', 'ThresholdedRelu', 'Shrink', 'Not', 'IsNaN', 'IsInf', 'Hardmax',
  'MeanVarianceNormalization', 'Trilu',
]);
const BINARY = new Set(['Add', 'Sub', 'Mul', 'Div', 'Pow', 'Max', 'Min', 'Sum', 'Mean', 'Equal', 'Less', 'Greater', 'LessOrEqual', 'GreaterOrEqual', 'And', 'Or', 'Xor', 'Mod', 'Where', 'BitShift']);
const BOOL_OUT = new Set(['Equal', 'Less', 'Greater', 'LessOrEqual', 'GreaterOrEqual', 'And', 'Or', 'Xor', 'Not', 'IsNaN', 'IsInf']);
const POOLS = new Set(['MaxPool', 'AveragePool', 'LpPool', 'Conv', 'ConvInteger', 'QLinearConv']);

function poolShape(n: NodeProto, x: Dim[], w: Dim[] | undefined, op: string): Dim[] | undefined {
  const a = (name: string) => getAttribute(n, name);
  const ints = (name: string) => (a(name) ? (attributeValue(a(name)!) as (number | bigint)[]).map(Number) : undefined);
  const spatial = x.length - 2;
  if (spatial < 1) return undefined;
  const kernel = ints('kernel_shape') ?? (w ? w.slice(2).map((d) => (typeof d === 'number' ? d : NaN)) : undefined);
  if (!kernel || kernel.some((k) => Number.isNaN(k))) return undefined;
  const strides = ints('strides') ?? Array(spatial).fill(1);
  const dil = ints('dilations') ?? Array(spatial).fill(1);
  const pads = ints('pads') ?? Array(2 * spatial).fill(0);
  const autoPad = a('auto_pad') ? String(attributeValue(a('auto_pad')!)) : 'NOTSET';
  const ceil = a('ceil_mode') ? Number(attributeValue(a('ceil_mode')!)) === 1 : false;
  const channels = op === 'Conv' || op === 'ConvInteger' || op === 'QLinearConv' ? (w?.[0] ?? null) : x[1];
  const out: Dim[] = [x[0], channels];
  for (let i = 0; i < spatial; i++) {
    const d = x[2 + i];
    if (typeof d !== 'number') {
      out.push(null);
      continue;
    }
    const k = (kernel[i] - 1) * dil[i] + 1;
    if (autoPad === 'SAME_UPPER' || autoPad === 'SAME_LOWER') out.push(Math.ceil(d / strides[i]));
    else if (autoPad === 'VALID') out.push(Math.floor((d - k) / strides[i]) + 1);
    else {
      const span = d + pads[i] + pads[i + spatial] - k;
      let o = (ceil ? Math.ceil(span / strides[i]) : Math.floor(span / strides[i])) + 1;
      // PyTorch's rule: the last pooling window must start inside the input or the left padding.
      if (ceil && (o - 1) * strides[i] >= d + pads[i]) o--;
      out.push(o);
    }
  }
  return out;
}

/**
 * Type, shape and (for small integer tensors) values of every tensor of the model's main graph that
 * can be derived without running it. Graph inputs with a dynamic first dimension get the symbolic
 * batch "N"; other dynamic input dimensions keep their names (or stay unknown).
 */
export function inferShapes(model: ModelProto): Map<string, TensorShape> {
  const g = model.graph ?? {};
  const info = new Map<string, TensorShape>();
  for (const t of g.initializer ?? []) {
    info.set(t.name ?? '', { type: t.data_type, shape: (t.dims ?? []).map(Number), value: tensorValues(t) });
  }
  const inits = new Set((g.initializer ?? []).map((t) => t.name));
  for (const v of g.input ?? []) {
    if (inits.has(v.name)) continue;
    const { elemType, shape } = describeValue(v);
    info.set(v.name ?? '', { type: elemType, shape: shape?.map((d, i) => (typeof d === 'number' ? d : i === 0 ? 'N' : (d ?? null))) });
  }
  const declared = new Map<string, TensorShape>();
  for (const v of [...(g.value_info ?? []), ...(g.output ?? [])]) {
    const { elemType, shape } = describeValue(v);
    declared.set(v.name ?? '', { type: elemType, shape: shape?.map((d, i) => (typeof d === 'number' ? d : i === 0 ? 'N' : (d ?? null))) });
  }
  for (const n of g.node ?? []) {
    let outs: TensorShape[] = [];
    try {
      outs = inferNode(n, (name) => (name ? info.get(name) : undefined) ?? {});
    } catch {
      outs = [];
    }
    (n.output ?? []).forEach((o, i) => {
      if (!o) return;
      const r: TensorShape = { ...(outs[i] ?? {}) };
      const d = declared.get(o);
      if (d) {
        if (r.type === undefined) r.type = d.type;
        // A declared shape fills what inference left open (and never replaces a derived batch symbol).
        if (!r.shape || r.shape.some((x) => x === null)) r.shape = r.shape && d.shape && r.shape.length === d.shape.length ? r.shape.map((x, k) => x ?? d.shape![k]) : (d.shape ?? r.shape);
      }
      info.set(o, r);
    });
  }
  return info;
}

function inferNode(n: NodeProto, get: (name: string | undefined) => TensorShape): TensorShape[] {
  const op = n.op_type ?? '';
  const ins = (n.input ?? []).map((i) => get(i));
  const x = ins[0] ?? {};
  const a = (name: string) => {
    const at = getAttribute(n, name);
    return at ? attributeValue(at) : undefined;
  };
  const int = (name: string, d: number) => (a(name) === undefined ? d : Number(a(name)));
  const ints = (name: string) => (a(name) === undefined ? undefined : (a(name) as (number | bigint)[]).map(Number));
  const numbers = (t: TensorShape | undefined): number[] | undefined => (t?.value && t.value.every((v) => typeof v === 'number') ? (t.value as number[]) : undefined);

  if (op === 'Constant') {
    const t = a('value') as TensorProto | undefined;
    if (t) return [{ type: t.data_type, shape: (t.dims ?? []).map(Number), value: tensorValues(t) }];
    if (a('value_int') !== undefined) return [{ type: DataType.INT64, shape: [], value: [Number(a('value_int'))] }];
    if (a('value_ints') !== undefined) return [{ type: DataType.INT64, shape: [ints('value_ints')!.length], value: ints('value_ints') }];
    if (a('value_float') !== undefined) return [{ type: DataType.FLOAT, shape: [], value: [Number(a('value_float'))] }];
    if (a('value_floats') !== undefined) return [{ type: DataType.FLOAT, shape: [(a('value_floats') as number[]).length], value: [...(a('value_floats') as number[])] }];
    return [];
  }
  if (UNARY.has(op)) {
    const type = BOOL_OUT.has(op) ? DataType.BOOL : x.type;
    const keepValue = op === 'Identity' || op === 'Neg' || op === 'Abs' || op === 'Floor' || op === 'Ceil' || op === 'Round';
    const value = keepValue && x.value ? (op === 'Identity' ? x.value : op === 'Neg' ? x.value.map(negDim) : x.value.map((v) => (typeof v === 'number' ? (op === 'Abs' ? Math.abs(v) : op === 'Floor' ? Math.floor(v) : op === 'Ceil' ? Math.ceil(v) : Math.round(v)) : op === 'Abs' ? null : v))) : undefined;
    const outs: TensorShape[] = [{ type, shape: x.shape, value }];
    if (op === 'Dropout') outs.push({ type: DataType.BOOL, shape: x.shape });
    if (op === 'LayerNormalization' && x.shape) {
      const axis = normAxis(int('axis', -1), x.shape.length);
      const stat = x.shape.map((d, i) => (i < axis ? d : 1));
      outs.push({ type: DataType.FLOAT, shape: stat }, { type: DataType.FLOAT, shape: stat });
    }
    return outs;
  }
  if (op === 'Cast') {
    const to = int('to', DataType.FLOAT);
    return [{ type: to, shape: x.shape, value: x.value && INT_TYPES.has(to) ? x.value.map((v) => (typeof v === 'number' ? Math.trunc(v) : v)) : x.value }];
  }
  if (op === 'CastLike') return [{ type: ins[1]?.type, shape: x.shape, value: x.value }];
  if (BINARY.has(op)) {
    const shapes = ins.map((i) => i.shape);
    const shape = broadcast(shapes);
    const type = BOOL_OUT.has(op) ? DataType.BOOL : op === 'Where' ? ins[1]?.type : x.type;
    const value = ['Add', 'Sub', 'Mul', 'Div', 'Equal', 'Where', 'Max', 'Min'].includes(op) && shape ? elementwise(op, ins.map((i) => i.value), shapes) : undefined;
    return [{ type, shape, value }];
  }
  if (op === 'Shape') {
    if (!x.shape) return [{ type: DataType.INT64 }];
    const r = x.shape.length;
    const start = normAxis(Math.max(-r, Math.min(r, int('start', 0))), r);
    const endAttr = a('end') === undefined ? r : Number(a('end'));
    const end = normAxis(Math.max(-r, Math.min(r, endAttr)), r);
    const value = x.shape.slice(start, end);
    return [{ type: DataType.INT64, shape: [value.length], value }];
  }
  if (op === 'Size') return [{ type: DataType.INT64, shape: [], value: x.shape ? [product(x.shape)] : undefined }];
  if (POOLS.has(op)) {
    if (!x.shape) return [{ type: x.type }];
    return [{ type: op === 'ConvInteger' ? DataType.INT32 : x.type, shape: poolShape(n, x.shape, ins[op === 'QLinearConv' ? 3 : 1]?.shape, op) }, { type: DataType.INT64, shape: undefined }];
  }
  if (op === 'ConvTranspose') {
    if (!x.shape || !ins[1]?.shape) return [{ type: x.type }];
    const w = ins[1].shape;
    const spatial = x.shape.length - 2;
    const group = int('group', 1);
    const kernel = ints('kernel_shape') ?? w.slice(2).map(Number);
    const strides = ints('strides') ?? Array(spatial).fill(1);
    const dil = ints('dilations') ?? Array(spatial).fill(1);
    const pads = ints('pads') ?? Array(2 * spatial).fill(0);
    const outPad = ints('output_padding') ?? Array(spatial).fill(0);
    const given = ints('output_shape');
    const shape: Dim[] = [x.shape[0], mulDim(w[1], group)];
    for (let i = 0; i < spatial; i++) {
      const d = x.shape[2 + i];
      if (given) shape.push(given[i]);
      else shape.push(typeof d === 'number' ? strides[i] * (d - 1) + outPad[i] + (kernel[i] - 1) * dil[i] + 1 - pads[i] - pads[i + spatial] : null);
    }
    return [{ type: x.type, shape }];
  }
  if (op === 'GlobalAveragePool' || op === 'GlobalMaxPool' || op === 'GlobalLpPool') return [{ type: x.type, shape: x.shape?.map((d, i) => (i < 2 ? d : 1)) }];
  if (op === 'Flatten') {
    if (!x.shape) return [{ type: x.type }];
    const axis = normAxis(int('axis', 1), x.shape.length);
    return [{ type: x.type, shape: [product(x.shape.slice(0, axis)), product(x.shape.slice(axis))], value: x.value }];
  }
  if (op === 'Gemm') {
    const A = x.shape;
    const B = ins[1]?.shape;
    if (!A || !B) return [{ type: x.type }];
    return [{ type: x.type, shape: [int('transA', 0) ? A[1] : A[0], int('transB', 0) ? B[0] : B[1]] }];
  }
  if (op === 'MatMul' || op === 'MatMulInteger' || op === 'FusedMatMul') {
    const A = x.shape;
    const B = ins[1]?.shape;
    if (!A || !B) return [{ type: op === 'MatMulInteger' ? DataType.INT32 : x.type }];
    const a2 = A.length === 1 ? [1, A[0]] : A;
    const b2 = B.length === 1 ? [B[0], 1] : B;
    const batch = broadcast([a2.slice(0, -2), b2.slice(0, -2)]) ?? [];
    const shape = [...batch, ...(A.length === 1 ? [] : [a2[a2.length - 2]]), ...(B.length === 1 ? [] : [b2[b2.length - 1]])];
    return [{ type: op === 'MatMulInteger' ? DataType.INT32 : x.type, shape }];
  }
  if (op === 'Transpose') {
    if (!x.shape) return [{ type: x.type }];
    const perm = ints('perm') ?? x.shape.map((_, i) => x.shape!.length - 1 - i);
    return [{ type: x.type, shape: perm.map((p) => x.shape![p]) }];
  }
  if (op === 'Reshape') {
    const target = ins[1]?.value ?? (ints('shape') as Dim[] | undefined);
    if (!target) return [{ type: x.type, shape: ins[1]?.shape && typeof ins[1].shape[0] === 'number' ? Array(ins[1].shape[0]).fill(null) : undefined }];
    const allowZero = int('allowzero', 0) === 1;
    const shape: Dim[] = target.map((d, i) => (d === 0 && !allowZero ? (x.shape?.[i] ?? null) : d));
    const minus = shape.findIndex((d) => d === -1);
    if (minus >= 0) {
      const rest = product(shape.filter((_, i) => i !== minus));
      shape[minus] = x.shape ? divDim(product(x.shape), rest) : null;
    }
    return [{ type: x.type, shape, value: x.value }];
  }
  if (op === 'Squeeze' || op === 'Unsqueeze') {
    const axes = ints('axes') ?? numbers(ins[1]);
    if (!x.shape) return [{ type: x.type }];
    if (op === 'Squeeze') {
      const r = x.shape.length;
      const drop = axes ? axes.map((ax) => normAxis(ax, r)) : x.shape.map((d, i) => (d === 1 ? i : -1)).filter((i) => i >= 0);
      return [{ type: x.type, shape: x.shape.filter((_, i) => !drop.includes(i)), value: x.value }];
    }
    if (!axes) return [{ type: x.type }];
    const r = x.shape.length + axes.length;
    const at = axes.map((ax) => normAxis(ax, r));
    const shape: Dim[] = [];
    let k = 0;
    for (let i = 0; i < r; i++) shape.push(at.includes(i) ? 1 : x.shape[k++]);
    return [{ type: x.type, shape, value: x.value }];
  }
  if (op === 'Concat') {
    const shapes = ins.map((i) => i.shape);
    if (shapes.some((s) => !s)) return [{ type: x.type }];
    const r = shapes[0]!.length;
    const axis = normAxis(int('axis', 0), r);
    const shape = shapes[0]!.map((d, i) => (i === axis ? shapes.reduce<Dim>((s, sh) => addDim(s, sh![i]), 0) : (shapes.map((s) => s![i]).find((v) => v !== null && v !== 1) ?? (shapes.some((s) => s![i] === 1) ? 1 : null))));
    const value = r === 1 && ins.every((i) => i.value) ? ins.flatMap((i) => i.value!) : undefined;
    return [{ type: x.type, shape, value }];
  }
  if (op === 'Split') {
    if (!x.shape) return (n.output ?? []).map(() => ({ type: x.type }));
    const axis = normAxis(int('axis', 0), x.shape.length);
    const count = (n.output ?? []).length;
    const sizes = ints('split') ?? numbers(ins[1]);
    return (n.output ?? []).map((_, i) => {
      const shape = [...x.shape!];
      shape[axis] = sizes ? sizes[i] : divDim(x.shape![axis], count);
      return { type: x.type, shape };
    });
  }
  if (op === 'Slice') {
    if (!x.shape) return [{ type: x.type }];
    const starts = ints('starts') ?? numbers(ins[1]);
    const ends = ints('ends') ?? numbers(ins[2]);
    const axesIn = ints('axes') ?? (ins[3] ? numbers(ins[3]) : undefined);
    const steps = ins[4] ? numbers(ins[4]) : undefined;
    if (!starts || !ends || (ins[3]?.shape && !axesIn) || (ins[4]?.shape && !steps)) return [{ type: x.type, shape: x.shape.map(() => null) }];
    const r = x.shape.length;
    const axes = (axesIn ?? starts.map((_, i) => i)).map((ax) => normAxis(ax, r));
    const shape = [...x.shape];
    let value = x.value;
    axes.forEach((ax, i) => {
      const d = x.shape![ax];
      const step = steps?.[i] ?? 1;
      if (typeof d !== 'number') {
        // x[:, k:] of a symbolic dimension is unknown, but a whole-range slice keeps it.
        shape[ax] = starts[i] === 0 && ends[i] >= 2 ** 31 - 1 && step === 1 ? d : null;
        value = undefined;
        return;
      }
      const clamp = (v: number, lo: number, hi: number) => Math.max(lo, Math.min(hi, v));
      let s = starts[i] < 0 ? starts[i] + d : starts[i];
      let e = ends[i] < 0 ? ends[i] + d : ends[i];
      if (step > 0) {
        s = clamp(s, 0, d);
        e = clamp(e, 0, d);
        shape[ax] = Math.max(0, Math.ceil((e - s) / step));
      } else {
        s = clamp(s, -1, d - 1);
        e = clamp(e, -1, d - 1);
        shape[ax] = Math.max(0, Math.ceil((s - e) / -step));
      }
      if (value && r === 1) {
        const out: Dim[] = [];
        for (let k = s; step > 0 ? k < e : k > e; k += step) out.push(value[k]);
        value = out;
      } else value = undefined;
    });
    return [{ type: x.type, shape, value }];
  }
  if (op === 'Gather') {
    const idx = ins[1];
    if (!x.shape || !idx?.shape) return [{ type: x.type }];
    const axis = normAxis(int('axis', 0), x.shape.length);
    const shape = [...x.shape.slice(0, axis), ...idx.shape, ...x.shape.slice(axis + 1)];
    let value: Dim[] | undefined;
    const iv = numbers(idx);
    if (x.value && iv && x.shape.length === 1) value = iv.map((i) => x.value![i < 0 ? i + x.value!.length : i] ?? null);
    return [{ type: x.type, shape, value }];
  }
  if (op === 'GatherElements') return [{ type: x.type, shape: ins[1]?.shape }];
  if (op === 'ConstantOfShape') {
    const shape = ins[0]?.value;
    const t = a('value') as TensorProto | undefined;
    const fill = t ? (tensorValues(t)?.[0] ?? 0) : 0;
    const type = t?.data_type ?? DataType.FLOAT;
    const count = shape ? product(shape) : null;
    return [{ type, shape, value: typeof count === 'number' && count <= 64 ? Array(count).fill(fill) : undefined }];
  }
  if (op === 'Expand') {
    const target = ins[1]?.value;
    if (!x.shape || !target) return [{ type: x.type }];
    const shape = broadcast([x.shape, target.map((d) => (d === 1 ? 1 : d))]);
    // Expand(x, s): dimension 1 in s keeps x's size.
    return [{ type: x.type, shape }];
  }
  if (op === 'Tile') {
    const reps = ins[1]?.value;
    if (!x.shape || !reps) return [{ type: x.type }];
    return [{ type: x.type, shape: x.shape.map((d, i) => mulDim(d, reps[i])) }];
  }
  if (op === 'Pad') {
    const pads = ints('pads') ?? numbers(ins[1]);
    if (!x.shape || !pads) return [{ type: x.type, shape: x.shape?.map(() => null) }];
    const r = x.shape.length;
    const axes = ins[3] ? numbers(ins[3])?.map((ax) => normAxis(ax, r)) : x.shape.map((_, i) => i);
    if (!axes) return [{ type: x.type, shape: x.shape.map(() => null) }];
    const shape = [...x.shape];
    axes.forEach((ax, i) => (shape[ax] = addDim(shape[ax], pads[i] + pads[i + axes.length])));
    return [{ type: x.type, shape }];
  }
  if (op.startsWith('Reduce') || op === 'ArgMax' || op === 'ArgMin') {
    if (!x.shape) return [{ type: op.startsWith('Arg') ? DataType.INT64 : x.type }];
    const r = x.shape.length;
    const keep = int('keepdims', 1) === 1;
    let axes: number[] | undefined;
    if (op.startsWith('Arg')) axes = [int('axis', 0)];
    else axes = ints('axes') ?? (ins[1]?.shape ? numbers(ins[1]) : undefined);
    if (ins[1]?.shape && !axes) return [{ type: x.type, shape: keep ? x.shape.map(() => null) : undefined }];
    if (!axes || axes.length === 0) axes = int('noop_with_empty_axes', 0) ? [] : x.shape.map((_, i) => i);
    const at = axes.map((ax) => normAxis(ax, r));
    const shape = keep ? x.shape.map((d, i) => (at.includes(i) ? 1 : d)) : x.shape.filter((_, i) => !at.includes(i));
    return [{ type: op.startsWith('Arg') ? DataType.INT64 : x.type, shape }];
  }
  if (op === 'Resize' || op === 'Upsample') {
    if (!x.shape) return [{ type: x.type }];
    const sizes = op === 'Resize' ? ins[3]?.value : undefined;
    if (sizes) return [{ type: x.type, shape: sizes }];
    const scales = numbers(op === 'Resize' ? ins[2] : ins[1]) ?? (a('scales') as number[] | undefined);
    if (!scales || scales.length !== x.shape.length) return [{ type: x.type, shape: x.shape.map(() => null) }];
    return [{ type: x.type, shape: x.shape.map((d, i) => (scales[i] === 1 ? d : typeof d === 'number' ? Math.floor(d * scales[i]) : null)) }];
  }
  if (op === 'Range') {
    const [s, l, d] = [numbers(ins[0]), numbers(ins[1]), numbers(ins[2])];
    if (!s || !l || !d) return [{ type: x.type, shape: [null] }];
    const count = Math.max(Math.ceil((l[0] - s[0]) / d[0]), 0);
    return [{ type: x.type, shape: [count], value: count <= 64 ? Array.from({ length: count }, (_, i) => s[0] + i * d[0]) : undefined }];
  }
  if (op === 'TopK') {
    const k = numbers(ins[1])?.[0] ?? null;
    if (!x.shape) return [{ type: x.type }, { type: DataType.INT64 }];
    const axis = normAxis(int('axis', -1), x.shape.length);
    const shape = x.shape.map((d, i) => (i === axis ? k : d));
    return [{ type: x.type, shape }, { type: DataType.INT64, shape }];
  }
  if (op === 'DepthToSpace' || op === 'SpaceToDepth') {
    if (!x.shape || x.shape.length !== 4) return [{ type: x.type }];
    const b = int('blocksize', 1);
    const [N, C, H, W] = x.shape;
    return op === 'DepthToSpace'
      ? [{ type: x.type, shape: [N, divDim(C, b * b), mulDim(H, b), mulDim(W, b)] }]
      : [{ type: x.type, shape: [N, mulDim(C, b * b), divDim(H, b), divDim(W, b)] }];
  }
  if (op === 'NonZero') return [{ type: DataType.INT64, shape: x.shape ? [x.shape.length, null] : undefined }];
  return [];
}
