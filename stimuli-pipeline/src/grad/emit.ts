// The emitter: what backward rules write with. It appends ONNX nodes and constant initializers to
// the gradient graph under fresh names, and answers questions about forward tensors (element type,
// shape, constant value) from the measured metadata. Small verbs (add, mul, where, sumTo, …) keep
// each rule a few lines.
import { LegibleError } from '@legible/studies';
import { attr, attributeValue, getAttribute, node } from '../onnx/graph.ts';
import { DataType, float32Tensor, int64Tensor, type AttributeProto, type NodeProto, type TensorProto } from '../onnx/proto.ts';
import { tensorNumbers, type MetaMap, type TensorMeta } from './meta.ts';

/** A float tensor of the given element type (float32 or float64), stored in raw_data. */
export function floatTensor(name: string, dims: readonly number[], data: ArrayLike<number>, type: number): TensorProto {
  if (type === DataType.FLOAT) return float32Tensor(name, dims, data);
  if (type === DataType.DOUBLE) {
    const values = Float64Array.from(data);
    const raw = new Uint8Array(values.length * 8);
    const view = new DataView(raw.buffer);
    values.forEach((v, i) => view.setFloat64(8 * i, v, true));
    return { dims: [...dims], data_type: DataType.DOUBLE, name, raw_data: raw };
  }
  throw new LegibleError(`gradients support float32 and float64 tensors, not element type ${type}`);
}

/** Reads a node's attributes with the ONNX defaults given at each call. */
export class Attrs {
  constructor(private readonly n: NodeProto) {}
  has(name: string): boolean {
    return getAttribute(this.n, name) !== undefined;
  }
  int(name: string, dflt: number): number {
    const a = getAttribute(this.n, name);
    return a ? Number(attributeValue(a)) : dflt;
  }
  float(name: string, dflt: number): number {
    const a = getAttribute(this.n, name);
    return a ? Number(attributeValue(a)) : dflt;
  }
  ints(name: string, dflt: number[] | undefined = undefined): number[] | undefined {
    const a = getAttribute(this.n, name);
    return a ? (attributeValue(a) as (number | bigint)[]).map(Number) : dflt;
  }
  string(name: string, dflt: string): string {
    const a = getAttribute(this.n, name);
    return a ? String(attributeValue(a)) : dflt;
  }
}

export class Emitter {
  readonly nodes: NodeProto[] = [];
  readonly initializers: TensorProto[] = [];
  private count = 0;
  private readonly memo = new Map<string, string>();

  constructor(
    readonly meta: MetaMap,
    /** Every name already used in the graph; fresh names avoid them. */
    private readonly taken: Set<string>,
    /** Values of initializers and Constant-node outputs, by tensor name. */
    readonly constants: Map<string, TensorProto>,
    private readonly prefix = 'vjp',
  ) {}

  fresh(hint: string): string {
    let name: string;
    do name = `${this.prefix}/${++this.count}/${hint}`;
    while (this.taken.has(name));
    this.taken.add(name);
    return name;
  }

  /** Appends a node with one output; returns the output's name. */
  op(type: string, inputs: readonly string[], attrs: AttributeProto[] = [], hint = type): string {
    const out = this.fresh(hint);
    this.nodes.push(node(type, inputs, [out], attrs, { name: out }));
    return out;
  }

  /** Appends a node with several outputs. */
  ops(type: string, inputs: readonly string[], n: number, attrs: AttributeProto[] = []): string[] {
    const outs = Array.from({ length: n }, (_, i) => this.fresh(`${type}_${i}`));
    this.nodes.push(node(type, inputs, outs, attrs, { name: outs[0] }));
    return outs;
  }

  // ─── What is known about forward tensors ────────────────────────────────────────────────

  info(t: string): TensorMeta {
    const m = this.meta.get(t);
    if (!m) throw new LegibleError(`internal: no shape measured for tensor "${t}"`);
    return m;
  }
  type(t: string): number {
    return this.info(t).type;
  }
  /** Dimensions, -1 where they follow the batch size. */
  dims(t: string): number[] {
    return this.info(t).dims;
  }
  rank(t: string): number {
    return this.info(t).dims.length;
  }
  /** A dimension that must be fixed (spatial sizes, channels); throws if it follows the batch. */
  fixed(t: string, axis: number, why: string): number {
    const d = this.dims(t)[axis < 0 ? axis + this.rank(t) : axis];
    if (d < 0) throw new LegibleError(`tensor "${t}": dimension ${axis} changes with the batch size, but ${why} needs it fixed`);
    return d;
  }
  /** The value of an initializer or Constant output, or undefined when it is computed. */
  constant(t: string): number[] | undefined {
    const c = this.constants.get(t);
    return c ? tensorNumbers(c) : undefined;
  }
  /** The value of an input that must be constant (axes, pads, …). */
  need(t: string, what: string): number[] {
    const v = this.constant(t);
    if (!v) throw new LegibleError(`${what} ("${t}") must be a constant for gradients, but the graph computes it`);
    return v;
  }

  // ─── Constants ──────────────────────────────────────────────────────────────────────────

  /** A scalar of the element type of `like` (a tensor name) or of the given DataType. */
  scalar(value: number, like: string | number): string {
    const type = typeof like === 'number' ? like : this.type(like);
    const key = `s:${type}:${value}`;
    let name = this.memo.get(key);
    if (!name) {
      name = this.fresh('const');
      this.initializers.push(floatTensor(name, [], [value], type));
      this.memo.set(key, name);
    }
    return name;
  }

  /** A float constant of the given type and shape. */
  floats(values: ArrayLike<number>, dims: readonly number[], type: number, hint = 'const'): string {
    const name = this.fresh(hint);
    this.initializers.push(floatTensor(name, dims, values, type));
    return name;
  }

  /** An int64 constant (1-D unless dims say otherwise); memoised by value. */
  ints(values: readonly (number | bigint)[], dims: readonly number[] = [values.length]): string {
    const key = `i:${dims.join(',')}:${values.join(',')}`;
    let name = this.memo.get(key);
    if (!name) {
      name = this.fresh('ints');
      this.initializers.push(int64Tensor(name, dims, values));
      this.memo.set(key, name);
    }
    return name;
  }

  // ─── Shapes ─────────────────────────────────────────────────────────────────────────────

  /** The shape of forward tensor `t` as an int64 tensor: a constant when fixed, else Shape(t). */
  shape(t: string): string {
    const d = this.meta.get(t)?.dims;
    if (d && d.every((x) => x >= 0)) return this.ints(d);
    const key = `shape:${t}`;
    let name = this.memo.get(key);
    if (!name) this.memo.set(key, (name = this.op('Shape', [t])));
    return name;
  }

  /** Number of elements of `t` as a 1-element int64 tensor. */
  size1(t: string): string {
    const d = this.meta.get(t)?.dims;
    if (d && d.every((x) => x >= 0)) return this.ints([d.reduce((a, b) => a * b, 1)]);
    return this.reshape(this.op('Size', [t]), this.ints([1]));
  }

  /** Zeros with the shape and type of forward tensor `t`. */
  zerosLike(t: string): string {
    return this.op('ConstantOfShape', [this.shape(t)], [attr.tensor('value', floatTensor('', [1], [0], this.type(t)))], 'zeros');
  }

  // ─── Arithmetic ─────────────────────────────────────────────────────────────────────────

  add(a: string, b: string): string {
    return this.op('Add', [a, b]);
  }
  sub(a: string, b: string): string {
    return this.op('Sub', [a, b]);
  }
  mul(a: string, b: string): string {
    return this.op('Mul', [a, b]);
  }
  div(a: string, b: string): string {
    return this.op('Div', [a, b]);
  }
  neg(a: string): string {
    return this.op('Neg', [a]);
  }
  /** a · c for a number c, in a's element type (like: a forward tensor of that type). */
  scale(a: string, c: number, like: string): string {
    return c === 1 ? a : this.mul(a, this.scalar(c, like));
  }
  where(cond: string, a: string, b: string): string {
    return this.op('Where', [cond, a, b]);
  }
  /** Where(cond, g, 0): g where cond holds, zero elsewhere. */
  mask(cond: string, g: string, like: string): string {
    return this.where(cond, g, this.scalar(0, like));
  }
  cmp(op: 'Greater' | 'Less' | 'Equal' | 'GreaterOrEqual' | 'LessOrEqual', a: string, b: string): string {
    return this.op(op, [a, b]);
  }
  and(a: string, b: string): string {
    return this.op('And', [a, b]);
  }
  reshape(t: string, shape: string): string {
    return this.op('Reshape', [t, shape]);
  }
  /** Reshape g to the shape of forward tensor x. */
  reshapeLike(g: string, x: string): string {
    return this.reshape(g, this.shape(x));
  }
  transpose(t: string, perm: readonly number[]): string {
    return this.op('Transpose', [t], [attr.ints('perm', perm)]);
  }
  unsqueeze(t: string, axes: readonly number[]): string {
    return axes.length ? this.op('Unsqueeze', [t, this.ints(axes)]) : t;
  }
  reduceSum(t: string, axes: readonly number[], keepdims: boolean): string {
    if (!axes.length) return t;
    return this.op('ReduceSum', [t, this.ints(axes)], [attr.int('keepdims', keepdims ? 1 : 0)]);
  }
  /** Sum of every element, as a scalar. */
  sumAll(t: string): string {
    return this.op('ReduceSum', [t], [attr.int('keepdims', 0)]);
  }
  expand(t: string, shape: string): string {
    return this.op('Expand', [t, shape]);
  }

  /**
   * Sum a gradient over the axes along which `x` was broadcast to g's shape, and give it x's shape.
   * `gRuns`: g's shape at each measured batch size (normally the node output's `runs`).
   */
  sumTo(g: string, gRuns: number[][], x: string): string {
    const xRuns = this.info(x).runs;
    const rg = gRuns[0].length;
    const rx = xRuns[0].length;
    const lead = rg - rx;
    const axes: number[] = [];
    for (let i = 0; i < rg; i++) {
      if (i < lead) axes.push(i);
      else if (gRuns.some((gd, r) => (xRuns[r] ?? xRuns[0])[i - lead] === 1 && gd[i] !== 1)) axes.push(i);
    }
    if (!axes.length && lead === 0) return g;
    const summed = this.reduceSum(g, axes, true);
    return this.reshapeLike(summed, x);
  }

  /**
   * Backward of an op that only moves elements (Slice, Gather, Tile, Pad with edge/reflect, …):
   * apply the same op to a tensor of element indices of x, then scatter-add g to those indices.
   * `sentinel`: the op may insert elements that come from nowhere (constant padding); they are given
   * the index numel(x), scattered into an extra slot, and dropped.
   */
  selection(x: string, g: string, apply: (indices: string, fill: string) => string): string {
    const n = this.size1(x);
    const nScalar = this.reshape(n, this.ints([]));
    const range = this.op('Range', [this.ints([0], []), nScalar, this.ints([1], [])]);
    const indices = this.reshapeLike(range, x);
    const picked = apply(indices, nScalar);
    const slots = this.add(n, this.ints([1]));
    const zeros = this.op('ConstantOfShape', [slots], [attr.tensor('value', floatTensor('', [1], [0], this.type(x)))]);
    const flat = this.ints([-1]);
    const scattered = this.op('ScatterElements', [zeros, this.reshape(picked, flat), this.reshape(g, flat)], [attr.string('reduction', 'add')]);
    const kept = this.op('Slice', [scattered, this.ints([0]), n]);
    return this.reshapeLike(kept, x);
  }
}
