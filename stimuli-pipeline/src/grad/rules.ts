// Backward rules, one per ONNX op, in one table. A rule receives the forward node (its inputs x,
// outputs y, attributes a), the gradients of its outputs (gy; null where an output does not reach
// the objective) and which inputs need a gradient (need); it emits ONNX nodes through the emitter e
// and returns one gradient per input (null: none). Rules only read forward tensors, never change
// the forward graph. Shape computations (Shape, Gather on shapes, …) have integer outputs and never
// reach a rule: the builder treats them as constants.
import { LegibleError } from '@legible/studies';
import { attr } from '../onnx/graph.ts';
import type { NodeProto } from '../onnx/proto.ts';
import { Attrs, Emitter, floatTensor } from './emit.ts';

export interface RuleArgs {
  n: NodeProto;
  /** Forward inputs ('' where an optional input is omitted). */
  x: string[];
  /** Forward outputs. */
  y: string[];
  /** Gradient of each output, or null. */
  gy: (string | null)[];
  /** Whether each input needs a gradient. */
  need: boolean[];
  e: Emitter;
  a: Attrs;
}
export type Grads = (string | null | undefined)[];
export type Rule = (r: RuleArgs) => Grads;

// ─── Helpers shared by several rules ──────────────────────────────────────────────────────────

const range = (a: number, b: number) => Array.from({ length: Math.max(0, b - a) }, (_, i) => a + i);
const axisOf = (axis: number, rank: number) => (axis < 0 ? axis + rank : axis);
const INT64_MIN = -(2n ** 63n);

/** g of a single-output node (rules are only called when some output has a gradient). */
const only = (gy: (string | null)[]) => gy[0]!;

/** Strides, dilations and explicit pads [begin…, end…] of a Conv or pool, auto_pad resolved. */
function window(e: Emitter, a: Attrs, x: string, kernel: number[]): { s: number[]; d: number[]; pads: number[] } {
  const k = kernel.length;
  const s = a.ints('strides') ?? Array(k).fill(1);
  const d = a.ints('dilations') ?? Array(k).fill(1);
  const auto = a.string('auto_pad', 'NOTSET');
  let pads = a.ints('pads') ?? Array(2 * k).fill(0);
  if (auto === 'VALID') pads = Array(2 * k).fill(0);
  else if (auto === 'SAME_UPPER' || auto === 'SAME_LOWER') {
    pads = Array(2 * k).fill(0);
    for (let i = 0; i < k; i++) {
      const size = e.fixed(x, 2 + i, `${auto} padding`);
      const out = Math.ceil(size / s[i]);
      const total = Math.max(0, (out - 1) * s[i] + (kernel[i] - 1) * d[i] + 1 - size);
      const begin = auto === 'SAME_UPPER' ? Math.floor(total / 2) : total - Math.floor(total / 2);
      pads[i] = begin;
      pads[k + i] = total - begin;
    }
  }
  return { s, d, pads };
}

/**
 * The adjoint of a strided window op: ConvTranspose of g (spatial size of y) back to the spatial size
 * of x, trimming the padding and adding output_padding for rows the windows never reached.
 */
function windowTranspose(e: Emitter, g: string, w: string, x: string, y: string, kernel: number[], win: { s: number[]; d: number[]; pads: number[] }, group: number): string {
  const k = kernel.length;
  const begin: number[] = [];
  const end: number[] = [];
  const outPad: number[] = [];
  for (let i = 0; i < k; i++) {
    const size = e.fixed(x, 2 + i, 'the backward of a strided window');
    const outSize = e.fixed(y, 2 + i, 'the backward of a strided window');
    const reach = win.s[i] * (outSize - 1) + (kernel[i] - 1) * win.d[i] + 1 - win.pads[i];
    begin.push(win.pads[i]);
    end.push(Math.max(0, reach - size));
    outPad.push(Math.max(0, size - reach));
  }
  return e.op('ConvTranspose', [g, w], [
    attr.ints('strides', win.s),
    attr.ints('dilations', win.d),
    attr.ints('pads', [...begin, ...end]),
    attr.ints('output_padding', outPad),
    attr.int('group', group),
  ]);
}

/** Conv weight [M, C/G, k…] → the weight of the transposed conv as a plain Conv: [C, M/G, k…], flipped. */
function flippedKernel(e: Emitter, w: string, group: number): string {
  const [m, cg, ...kernel] = e.dims(w);
  const k = kernel.length;
  let t = w;
  if (group === 1) t = e.transpose(w, [1, 0, ...range(2, 2 + k)]);
  else if (cg !== 1 || m !== group) {
    t = e.reshape(w, e.ints([group, m / group, cg, ...kernel]));
    t = e.transpose(t, [0, 2, 1, ...range(3, 3 + k)]);
    t = e.reshape(t, e.ints([group * cg, m / group, ...kernel]));
  }
  const axes = range(2, 2 + k);
  return e.op('Slice', [t, e.ints(axes.map(() => -1)), e.ints(axes.map(() => INT64_MIN)), e.ints(axes), e.ints(axes.map(() => -1))], [], 'flip');
}

/** Gradient of a Conv with respect to its weight: ungrouped, an im2col Gather and a GEMM; grouped (or huge), a Conv that treats the batch as channels. */
function convWeightGrad(e: Emitter, x: string, y: string, g: string, w: string, win: { s: number[]; d: number[]; pads: number[] }, group: number): string {
  const [m, cg, ...kernel] = e.dims(w);
  const k = kernel.length;
  if (group === 1) {
    const gathered = convWeightGradGather(e, x, y, g, m, cg, kernel, win);
    if (gathered) return gathered;
  }
  const xs = range(2, 2 + k).map((i) => e.fixed(x, i, 'a Conv weight gradient'));
  const sp = (n: number) => range(n, n + k);
  // x [N, C, S…] → [C/G, G·N, S…]
  let xr = e.reshape(x, e.ints([-1, group, cg, ...xs]));
  xr = e.transpose(xr, [2, 1, 0, ...sp(3)]);
  xr = e.reshape(xr, e.ints([cg, -1, ...xs]));
  // g [N, M, So…] → [M, N, So…] (output channels grouped G-major, as Conv groups expect)
  const gs = range(2, 2 + k).map((i) => e.fixed(y, i, 'a Conv weight gradient'));
  let gr = e.reshape(g, e.ints([-1, group, m / group, ...gs]));
  gr = e.transpose(gr, [1, 2, 0, ...sp(3)]);
  gr = e.reshape(gr, e.ints([m, -1, ...gs]));
  const full = e.op('Conv', [xr, gr], [attr.ints('strides', win.d), attr.ints('dilations', win.s), attr.ints('pads', win.pads), attr.int('group', group)]);
  const cut = e.op('Slice', [full, e.ints(kernel.map(() => 0)), e.ints(kernel), e.ints(sp(2))]);
  return e.transpose(cut, [1, 0, ...sp(2)]);
}

/**
 * im2col as one Gather: t [N, C, S…] (spatial sizes `ins`) → its patches [N·So, K·C] for a window
 * of `kernel` with strides, dilations and pads `win` producing `outs` (columns ordered kernel offset
 * major, channel minor). t is brought to [N, S, C] with a zero row appended (position S, where
 * padding reads); a constant index table [So, K] says, for each output position and kernel offset,
 * the input position it reads, or S. Null when the table would exceed GATHER_INDICES_MAX.
 */
function im2col(e: Emitter, t: string, c: number, ins: number[], outs: number[], kernel: number[], win: { s: number[]; d: number[]; pads: number[] }): string | null {
  const k = kernel.length;
  const S = ins.reduce((a, b) => a * b, 1);
  const So = outs.reduce((a, b) => a * b, 1);
  const K = kernel.reduce((a, b) => a * b, 1);
  if (So * K > GATHER_INDICES_MAX) return null;
  const index: number[] = new Array(So * K);
  let padded = false;
  const p = Array(k).fill(0);
  const coord = Array(k).fill(0);
  for (let po = 0; po < So; po++) {
    let rest = po;
    for (let i = k - 1; i >= 0; i--) {
      p[i] = rest % outs[i];
      rest = Math.floor(rest / outs[i]);
    }
    for (let ko = 0; ko < K; ko++) {
      let r = ko;
      let inside = true;
      for (let i = k - 1; i >= 0; i--) {
        const off = r % kernel[i];
        r = Math.floor(r / kernel[i]);
        coord[i] = p[i] * win.s[i] + off * win.d[i] - win.pads[i];
        if (coord[i] < 0 || coord[i] >= ins[i]) inside = false;
      }
      let flat = 0;
      for (let i = 0; i < k; i++) flat = flat * ins[i] + coord[i];
      if (!inside) padded = true;
      index[po * K + ko] = inside ? flat : S;
    }
  }
  let tt = e.transpose(e.reshape(t, e.ints([0, c, S])), [0, 2, 1]);
  if (padded) tt = e.op('Pad', [tt, e.ints([0, 0, 0, 0, 1, 0])]);
  // A window that reads every position once, in order (1 × 1, stride 1): the patches are t itself.
  const identity = K === 1 && So === S && index.every((v, i) => v === i);
  return e.reshape(identity ? tt : e.op('Gather', [tt, e.ints(index, [So, K])], [attr.int('axis', 1)]), e.ints([-1, K * c]));
}

/** Most kernel-offset × output-position indices an im2col Gather builds (int64 constant: 32 MB). */
const GATHER_INDICES_MAX = 1 << 22;

/**
 * dW of an ungrouped Conv as one im2col Gather and one GEMM: dW [M, K·C] = g [M, N·So] · patches of
 * x [N·So, K·C], brought to [M, C, k…]. Three data-moving ops instead of a strided Slice, Reshape
 * and GEMM per kernel offset (the 3 × 3 convolutions of the disentanglers spent most of their weight
 * gradient in the Slices' overhead). Null when the index table would be too large: the caller then
 * uses the grouped path's one Conv (the batch as channels, the output gradient as the kernel).
 */
function convWeightGradGather(e: Emitter, x: string, y: string, g: string, m: number, c: number, kernel: number[], win: { s: number[]; d: number[]; pads: number[] }): string | null {
  const k = kernel.length;
  const sp = range(2, 2 + k);
  const ins = sp.map((i) => e.fixed(x, i, 'a Conv weight gradient'));
  const outs = sp.map((i) => e.fixed(y, i, 'a Conv weight gradient'));
  const K = kernel.reduce((a, b) => a * b, 1);
  const patches = im2col(e, x, c, ins, outs, kernel, win);
  if (!patches) return null;
  const gm = e.reshape(e.transpose(g, [1, 0, ...sp]), e.ints([m, -1]));
  const dw = e.op('Gemm', [gm, patches]);
  return e.reshape(e.transpose(e.reshape(dw, e.ints([m, K, c])), [0, 2, 1]), e.ints([m, c, ...kernel]));
}

/** Per-channel parameter [C] → [C, 1, …] to broadcast against x [N, C, S…]. */
const perChannel = (e: Emitter, p: string, x: string) => e.unsqueeze(p, range(1, e.rank(x) - 1));
/** Axes of x [N, C, S…] other than the channel axis. */
const notChannel = (e: Emitter, x: string) => [0, ...range(2, e.rank(x))];

/** Sum of t over a window of channels [c − lo, c + hi] (zero outside), for LRN. */
function channelWindow(e: Emitter, t: string, x: string, lo: number, hi: number): string {
  const r = e.rank(x);
  const c = e.fixed(x, 1, 'LRN');
  const pads = Array(2 * r).fill(0);
  pads[1] = lo;
  pads[r + 1] = hi;
  const padded = e.op('Pad', [t, e.ints(pads)]);
  let sum: string | null = null;
  for (let j = 0; j <= lo + hi; j++) {
    const part = e.op('Slice', [padded, e.ints([j]), e.ints([j + c]), e.ints([1])]);
    sum = sum ? e.add(sum, part) : part;
  }
  return sum!;
}

/** Axes of a Reduce* node (attribute before opset 18, input from 18; ReduceSum from 13). */
function reduceAxes(e: Emitter, r: RuleArgs): number[] | null {
  const rank = e.rank(r.x[0]);
  const fromInput = r.x[1] ? e.need(r.x[1], `${r.n.op_type} axes`) : undefined;
  const axes = fromInput ?? r.a.ints('axes');
  if (!axes || !axes.length) return r.a.int('noop_with_empty_axes', 0) ? null : range(0, rank);
  return axes.map((ax) => axisOf(ax, rank)).sort((p, q) => p - q);
}

/** g of a reduction, brought back to x's shape (unsqueezed if keepdims=0, then expanded). */
function spread(e: Emitter, r: RuleArgs, axes: number[]): string {
  const g = only(r.gy);
  const kept = r.a.int('keepdims', 1) ? g : e.unsqueeze(g, axes);
  return e.expand(kept, e.shape(r.x[0]));
}

/** Number of elements reduced over, as a constant, or computed when a dimension follows the batch. */
function count(e: Emitter, x: string, axes: number[]): string {
  const dims = e.dims(x);
  if (axes.every((ax) => dims[ax] >= 0)) return e.scalar(axes.reduce((p, ax) => p * dims[ax], 1), x);
  const picked = e.op('Gather', [e.shape(x), e.ints(axes)]);
  return e.op('Cast', [e.op('ReduceProd', [picked], [attr.int('keepdims', 0)])], [attr.int('to', e.type(x))]);
}

/** Σ and mean over the normalised axes, keeping them, for LayerNormalization. */
const meanOver = (e: Emitter, t: string, axes: number[], n: string) => e.div(e.reduceSum(t, axes, true), n);

/** Backward of binary elementwise ops: each side summed back over its broadcast axes. */
const binary = (e: Emitter, r: RuleArgs, ga: () => string, gb: () => string): Grads => {
  const runs = e.info(r.y[0]).runs;
  return [r.need[0] ? e.sumTo(ga(), runs, r.x[0]) : null, r.need[1] ? e.sumTo(gb(), runs, r.x[1]) : null];
};

/** ∂/∂x of a Gemm-style product, by transposes folded into Gemm attributes. */
const gemm = (e: Emitter, a: string, b: string, transA: number, transB: number, alpha: number) =>
  e.op('Gemm', [a, b], [attr.int('transA', transA), attr.int('transB', transB), attr.float('alpha', alpha)]);

/** Swap the last two axes. */
const swapLast = (e: Emitter, t: string, rank: number) => e.transpose(t, [...range(0, rank - 2), rank - 1, rank - 2]);

// ─── The table ────────────────────────────────────────────────────────────────────────────────

export const RULES: Record<string, Rule> = {
  // Identity-like: the gradient passes through (Dropout runs in inference: its output is its input).
  Identity: ({ gy }) => [only(gy)],
  Dropout: ({ gy }) => [only(gy)],
  Cast: ({ e, x, gy }) => [e.op('Cast', [only(gy)], [attr.int('to', e.type(x[0]))])],

  // Elementwise activations.
  Relu: ({ e, x: [x], gy }) => [e.mask(e.cmp('Greater', x, e.scalar(0, x)), only(gy), x)],
  LeakyRelu: ({ e, a, x: [x], gy }) => [e.where(e.cmp('Greater', x, e.scalar(0, x)), only(gy), e.scale(only(gy), a.float('alpha', 0.01), x))],
  PRelu: (r) => {
    const { e, x: [x, slope] } = r;
    const pos = e.cmp('Greater', x, e.scalar(0, x));
    const g = only(r.gy);
    return binary(e, r, () => e.where(pos, g, e.mul(g, slope)), () => e.where(pos, e.scalar(0, x), e.mul(g, x)));
  },
  Clip: ({ e, x: [x, lo, hi], gy }) => {
    // Strict inequalities, as PyTorch's hardtanh (ReLU6): no gradient at the bounds.
    let inside: string | null = null;
    if (lo) inside = e.cmp('Greater', x, lo);
    if (hi) inside = inside ? e.and(inside, e.cmp('Less', x, hi)) : e.cmp('Less', x, hi);
    return [inside ? e.mask(inside, only(gy), x) : only(gy)];
  },
  Sigmoid: ({ e, y: [y], gy }) => [e.mul(only(gy), e.mul(y, e.sub(e.scalar(1, y), y)))],
  Tanh: ({ e, y: [y], gy }) => [e.mul(only(gy), e.sub(e.scalar(1, y), e.mul(y, y)))],
  Erf: ({ e, x: [x], gy }) => [e.mul(only(gy), e.scale(e.op('Exp', [e.neg(e.mul(x, x))]), 2 / Math.sqrt(Math.PI), x))],
  Gelu: ({ e, a, x: [x], gy }) => {
    if (a.string('approximate', 'none') === 'tanh') {
      // y = x/2 (1 + tanh u), u = √(2/π)(x + 0.044715 x³): y' = (1 + t)/2 + x/2 (1 − t²) u'.
      const c = Math.sqrt(2 / Math.PI);
      const x2 = e.mul(x, x);
      const t = e.op('Tanh', [e.scale(e.mul(x, e.add(e.scalar(1, x), e.scale(x2, 0.044715, x))), c, x)]);
      const du = e.scale(e.add(e.scalar(1, x), e.scale(x2, 3 * 0.044715, x)), c, x);
      const one = e.scalar(1, x);
      const d = e.scale(e.add(e.add(one, t), e.mul(e.mul(x, e.sub(one, e.mul(t, t))), du)), 0.5, x);
      return [e.mul(only(gy), d)];
    }
    // y = x Φ(x): y' = Φ(x) + x φ(x).
    const cdf = e.scale(e.add(e.scalar(1, x), e.op('Erf', [e.scale(x, Math.SQRT1_2, x)])), 0.5, x);
    const pdf = e.scale(e.op('Exp', [e.scale(e.mul(x, x), -0.5, x)]), 1 / Math.sqrt(2 * Math.PI), x);
    return [e.mul(only(gy), e.add(cdf, e.mul(x, pdf)))];
  },
  HardSigmoid: ({ e, a, x: [x], gy }) => {
    const alpha = a.float('alpha', 0.2);
    const v = e.add(e.scale(x, alpha, x), e.scalar(a.float('beta', 0.5), x));
    const inside = e.and(e.cmp('Greater', v, e.scalar(0, x)), e.cmp('Less', v, e.scalar(1, x)));
    return [e.mask(inside, e.scale(only(gy), alpha, x), x)];
  },
  HardSwish: ({ e, x: [x], gy }) => {
    // y = x · clip(x/6 + 1/2, 0, 1): 0 below −3, x/3 + 1/2 on [−3, 3], 1 above (as PyTorch).
    const g = only(gy);
    const mid = e.mul(g, e.add(e.scale(x, 1 / 3, x), e.scalar(0.5, x)));
    const upper = e.where(e.cmp('LessOrEqual', x, e.scalar(3, x)), mid, g);
    return [e.mask(e.cmp('GreaterOrEqual', x, e.scalar(-3, x)), upper, x)];
  },
  Softplus: ({ e, x: [x], gy }) => [e.mul(only(gy), e.op('Sigmoid', [x]))],
  Elu: ({ e, a, x: [x], y: [y], gy }) => [e.where(e.cmp('Greater', x, e.scalar(0, x)), only(gy), e.mul(only(gy), e.add(y, e.scalar(a.float('alpha', 1), x))))],
  Exp: ({ e, y: [y], gy }) => [e.mul(only(gy), y)],
  Log: ({ e, x: [x], gy }) => [e.div(only(gy), x)],
  Sqrt: ({ e, y: [y], gy }) => [e.div(e.scale(only(gy), 0.5, y), y)],
  Reciprocal: ({ e, y: [y], gy }) => [e.neg(e.mul(only(gy), e.mul(y, y)))],
  Neg: ({ e, gy }) => [e.neg(only(gy))],
  Abs: ({ e, x: [x], gy }) => [e.mul(only(gy), e.op('Sign', [x]))],
  Sin: ({ e, x: [x], gy }) => [e.mul(only(gy), e.op('Cos', [x]))],
  Cos: ({ e, x: [x], gy }) => [e.neg(e.mul(only(gy), e.op('Sin', [x])))],

  // Elementwise binary ops, with NumPy broadcasting.
  Add: (r) => binary(r.e, r, () => only(r.gy), () => only(r.gy)),
  Sub: (r) => binary(r.e, r, () => only(r.gy), () => r.e.neg(only(r.gy))),
  // x · x (a square, as in an MSE): one gradient g · (x + x), not g · x twice and their sum.
  Mul: (r) => (r.x[0] === r.x[1] ? [r.e.mul(only(r.gy), r.e.add(r.x[0], r.x[0])), null] : binary(r.e, r, () => r.e.mul(only(r.gy), r.x[1]), () => r.e.mul(only(r.gy), r.x[0]))),
  Div: (r) => binary(r.e, r, () => r.e.div(only(r.gy), r.x[1]), () => r.e.neg(r.e.div(r.e.mul(only(r.gy), r.y[0]), r.x[1]))),
  Pow: (r) => {
    const { e, x: [x, p], y: [y] } = r;
    const g = only(r.gy);
    return binary(e, r, () => e.mul(g, e.mul(p, e.op('Pow', [x, e.sub(p, e.scalar(1, p))]))), () => e.mul(g, e.mul(y, e.op('Log', [x]))));
  },
  Where: ({ e, x: [cond, a, b], y: [y], gy, need }) => {
    const g = only(gy);
    const runs = e.info(y).runs;
    const zero = e.scalar(0, y);
    return [null, need[1] ? e.sumTo(e.where(cond, g, zero), runs, a) : null, need[2] ? e.sumTo(e.where(cond, zero, g), runs, b) : null];
  },
  Max: ({ e, x, y: [y], gy, need }) => x.map((xi, i) => (need[i] ? e.sumTo(e.mask(e.cmp('Equal', xi, y), only(gy), y), e.info(y).runs, xi) : null)),
  Min: ({ e, x, y: [y], gy, need }) => x.map((xi, i) => (need[i] ? e.sumTo(e.mask(e.cmp('Equal', xi, y), only(gy), y), e.info(y).runs, xi) : null)),
  Sum: ({ e, x, y: [y], gy, need }) => x.map((xi, i) => (need[i] ? e.sumTo(only(gy), e.info(y).runs, xi) : null)),
  Mean: ({ e, x, y: [y], gy, need }) => x.map((xi, i) => (need[i] ? e.sumTo(e.scale(only(gy), 1 / x.length, y), e.info(y).runs, xi) : null)),

  // Products.
  MatMul: ({ e, x: [a, b], y: [y], gy, need }) => {
    const g = only(gy);
    const ra = e.rank(a);
    const rb = e.rank(b);
    if (ra === 1 || rb === 1) {
      // A vector operand is a matrix with an axis that the product drops: put it back, then sum the
      // broadcast batch axes of the vector's gradient away.
      const am = ra === 1 ? e.unsqueeze(a, [0]) : a;
      const bm = rb === 1 ? e.unsqueeze(b, [1]) : b;
      const ry = e.rank(y);
      const gm = e.unsqueeze(g, ra === 1 && rb === 1 ? [0, 1] : ra === 1 ? [ry - 1] : [ry]);
      const R = Math.max(ra, rb, 2);
      const ga = () => {
        const full = e.op('MatMul', [gm, swapLast(e, bm, Math.max(rb, 2))]);
        return ra === 1 ? e.reshapeLike(e.reduceSum(full, range(0, R - 1), false), a) : full;
      };
      const gb = () => {
        const full = e.op('MatMul', [swapLast(e, am, Math.max(ra, 2)), gm]);
        return rb === 1 ? e.reshapeLike(e.reduceSum(full, [...range(0, R - 2), R - 1], false), b) : full;
      };
      return [need[0] ? ga() : null, need[1] ? gb() : null];
    }
    const k = e.dims(a).at(-1)!;
    const yRuns = e.info(y).runs;
    return [
      need[0] ? e.sumTo(e.op('MatMul', [g, swapLast(e, b, rb)]), yRuns.map((d) => [...d.slice(0, -1), k]), a) : null,
      need[1] ? e.sumTo(e.op('MatMul', [swapLast(e, a, ra), g]), yRuns.map((d) => [...d.slice(0, -2), k, d.at(-1)!]), b) : null,
    ];
  },
  Gemm: ({ e, a, x: [A, B, C], y: [y], gy, need }) => {
    const g = only(gy);
    const alpha = a.float('alpha', 1);
    const tA = a.int('transA', 0);
    const tB = a.int('transB', 0);
    return [
      need[0] ? (tA ? gemm(e, B, g, tB, 1, alpha) : gemm(e, g, B, 0, tB ? 0 : 1, alpha)) : null,
      need[1] ? (tB ? gemm(e, g, A, 1, tA, alpha) : gemm(e, A, g, tA ? 0 : 1, 0, alpha)) : null,
      C && need[2] ? e.sumTo(e.scale(g, a.float('beta', 1), y), e.info(y).runs, C) : null,
    ];
  },
  Conv: ({ e, a, x: [x, w, b], y: [y], gy, need }) => {
    const g = only(gy);
    const kernel = e.dims(w).slice(2);
    const group = a.int('group', 1);
    const win = window(e, a, x, kernel);
    const k = kernel.length;
    let gx: string | null = null;
    if (need[0]) {
      const reach = kernel.map((kk, i) => (kk - 1) * win.d[i]);
      const unitStride = win.s.every((s) => s === 1) && win.pads.every((p, i) => p <= reach[i % k]);
      const flippedPads = win.pads.map((p, i) => reach[i % k] - p);
      gx = unitStride
        ? // Stride 1: a plain Conv with the flipped kernel (onnxruntime's fastest path).
          e.op('Conv', [g, flippedKernel(e, w, group)], [
            attr.ints('dilations', win.d),
            attr.ints('pads', flippedPads),
            attr.int('group', group),
          ])
        : // Strided: ConvTranspose. (A 1×1 Conv spread onto the stride grid by Pad was tried for
          // ResNet's downsample convolutions: onnxruntime's 6-D Pad made it 1.4–2× slower.)
          windowTranspose(e, g, w, x, y, kernel, win, group);
    }
    return [gx, need[1] ? convWeightGrad(e, x, y, g, w, win, group) : null, b && need[2] ? e.reduceSum(g, notChannel(e, y), false) : null];
  },
  BatchNormalization: ({ e, a, x: [x, scale, bias, mean, variance], gy, need }) => {
    if (a.int('training_mode', 0)) throw new LegibleError('BatchNormalization in training mode: export the model in eval mode for gradients');
    const g = only(gy);
    const inv = e.op('Reciprocal', [e.op('Sqrt', [e.add(variance, e.scalar(a.float('epsilon', 1e-5), variance))])]);
    const axes = notChannel(e, x);
    const centred = () => e.sub(x, perChannel(e, mean, x));
    return [
      need[0] ? e.mul(g, perChannel(e, e.mul(scale, inv), x)) : null,
      need[1] ? e.mul(e.reduceSum(e.mul(g, centred()), axes, false), inv) : null,
      need[2] ? e.reduceSum(g, axes, false) : null,
      need[3] ? e.neg(e.mul(e.reduceSum(g, axes, false), e.mul(scale, inv))) : null,
      need[4] ? e.mul(e.reduceSum(e.mul(g, centred()), axes, false), e.scale(e.mul(scale, e.mul(inv, e.mul(inv, inv))), -0.5, x)) : null,
    ];
  },
  InstanceNormalization: ({ e, a, x: [x, scale, bias], gy, need }) => {
    const g = only(gy);
    const axes = range(2, e.rank(x));
    const n = count(e, x, axes);
    const mu = meanOver(e, x, axes, n);
    const xc = e.sub(x, mu);
    const inv = e.op('Reciprocal', [e.op('Sqrt', [e.add(meanOver(e, e.mul(xc, xc), axes, n), e.scalar(a.float('epsilon', 1e-5), x))])]);
    const xh = e.mul(xc, inv);
    const gh = e.mul(g, perChannel(e, scale, x));
    const gx = e.mul(inv, e.sub(e.sub(gh, meanOver(e, gh, axes, n)), e.mul(xh, meanOver(e, e.mul(gh, xh), axes, n))));
    return [need[0] ? gx : null, need[1] ? e.reduceSum(e.mul(g, xh), notChannel(e, x), false) : null, bias && need[2] ? e.reduceSum(g, notChannel(e, x), false) : null];
  },
  LayerNormalization: ({ e, a, x: [x, scale, bias], gy, need }) => {
    const g = gy[0];
    if (!g) throw new LegibleError('LayerNormalization: gradients through its Mean / InvStdDev outputs are not supported');
    const rank = e.rank(x);
    const axes = range(axisOf(a.int('axis', -1), rank), rank);
    const n = count(e, x, axes);
    const mu = meanOver(e, x, axes, n);
    const xc = e.sub(x, mu);
    const inv = e.op('Reciprocal', [e.op('Sqrt', [e.add(meanOver(e, e.mul(xc, xc), axes, n), e.scalar(a.float('epsilon', 1e-5), x))])]);
    const xh = e.mul(xc, inv);
    const gh = e.mul(g, scale);
    const runs = e.info(x).runs;
    return [
      need[0] ? e.mul(inv, e.sub(e.sub(gh, meanOver(e, gh, axes, n)), e.mul(xh, meanOver(e, e.mul(gh, xh), axes, n)))) : null,
      need[1] ? e.sumTo(e.mul(g, xh), runs, scale) : null,
      bias && need[2] ? e.sumTo(g, runs, bias) : null,
    ];
  },
  LRN: ({ e, a, x: [x], gy }) => {
    // y = x d^−β, d = bias + α/size · Σ_window x²; window [c − lo, c + hi].
    const size = a.int('size', 0);
    const alpha = a.float('alpha', 1e-4);
    const beta = a.float('beta', 0.75);
    const lo = Math.floor((size - 1) / 2);
    const hi = Math.ceil((size - 1) / 2);
    const g = only(gy);
    const d = e.add(e.scalar(a.float('bias', 1), x), e.scale(channelWindow(e, e.mul(x, x), x, lo, hi), alpha / size, x));
    const dPow = e.op('Pow', [d, e.scalar(-beta, x)]);
    const inner = e.div(e.mul(e.mul(g, x), dPow), d);
    // The adjoint window sums over the channels whose window holds c: [c − hi, c + lo].
    return [e.sub(e.mul(g, dPow), e.mul(x, e.scale(channelWindow(e, inner, x, hi, lo), (2 * alpha * beta) / size, x)))];
  },

  // Pooling.
  MaxPool: ({ n, e, x: [x], gy }) => {
    // Recompute the pooling with its Indices output (flat positions in x), then scatter-add g there.
    if (e.rank(x) < 3) throw new LegibleError(`MaxPool "${n.name}": expected a batched image tensor`);
    const [, indices] = e.ops('MaxPool', [x], 2, n.attribute ?? []);
    const flat = e.ints([-1]);
    const zeros = e.op('ConstantOfShape', [e.size1(x)], [attr.tensor('value', floatTensor('', [1], [0], e.type(x)))]);
    const scattered = e.op('ScatterElements', [zeros, e.reshape(indices, flat), e.reshape(only(gy), flat)], [attr.string('reduction', 'add')]);
    return [e.reshapeLike(scattered, x)];
  },
  AveragePool: ({ e, a, x: [x], y: [y], gy }) => {
    const kernel = a.ints('kernel_shape')!;
    const win = window(e, a, x, kernel);
    const k = kernel.length;
    const includePad = a.int('count_include_pad', 0) === 1;
    // The divisor of each window (the per-axis element counts multiply), as onnxruntime computes it.
    const perAxis = kernel.map((kk, i) => {
      const size = e.fixed(x, 2 + i, 'AveragePool');
      return Array.from({ length: e.fixed(y, 2 + i, 'AveragePool') }, (_, o) => {
        let c = 0;
        for (let j = 0; j < kk; j++) {
          const p = o * win.s[i] - win.pads[i] + j * win.d[i];
          if (includePad ? p < size + win.pads[k + i] : p >= 0 && p < size) c++;
        }
        return c;
      });
    });
    const outDims = perAxis.map((c) => c.length);
    const inv = new Float64Array(outDims.reduce((p, q) => p * q, 1));
    inv.forEach((_, flatIdx) => {
      let rest = flatIdx;
      let div = 1;
      for (let i = k - 1; i >= 0; i--) {
        div *= perAxis[i][rest % outDims[i]];
        rest = Math.floor(rest / outDims[i]);
      }
      inv[flatIdx] = 1 / div;
    });
    const c = e.fixed(x, 1, 'AveragePool');
    const scaled = e.mul(only(gy), e.floats(inv, [1, 1, ...outDims], e.type(x), 'inv_count'));
    const ones = e.floats(new Float64Array(c * kernel.reduce((p, q) => p * q, 1)).fill(1), [c, 1, ...kernel], e.type(x), 'ones');
    return [windowTranspose(e, scaled, ones, x, y, kernel, win, c)];
  },
  GlobalAveragePool: ({ e, x: [x], gy }) => [e.expand(e.div(only(gy), count(e, x, range(2, e.rank(x)))), e.shape(x))],
  GlobalMaxPool: ({ e, x: [x], y: [y], gy }) => [e.mask(e.cmp('Equal', x, y), e.expand(only(gy), e.shape(x)), x)],

  // Reductions.
  ReduceSum: (r) => {
    const axes = reduceAxes(r.e, r);
    return [axes ? spread(r.e, r, axes) : only(r.gy)];
  },
  ReduceMean: (r) => {
    const axes = reduceAxes(r.e, r);
    // g / count before it is spread over x's shape: one division of the reduced tensor, not of x's every element.
    if (!axes) return [only(r.gy)];
    const g = r.e.div(only(r.gy), count(r.e, r.x[0], axes));
    return [r.e.expand(r.a.int('keepdims', 1) ? g : r.e.unsqueeze(g, axes), r.e.shape(r.x[0]))];
  },
  ReduceMax: (r) => extremum(r),
  ReduceMin: (r) => extremum(r),
  Softmax: ({ e, a, y: [y], gy }) => {
    const g = only(gy);
    const axis = axisOf(a.int('axis', -1), e.rank(y));
    return [e.mul(y, e.sub(g, e.reduceSum(e.mul(g, y), [axis], true)))];
  },
  LogSoftmax: ({ e, a, y: [y], gy }) => {
    const g = only(gy);
    const axis = axisOf(a.int('axis', -1), e.rank(y));
    return [e.sub(g, e.mul(e.op('Exp', [y]), e.reduceSum(g, [axis], true)))];
  },

  // Moving elements around.
  Reshape: ({ e, x: [x], gy }) => [e.reshapeLike(only(gy), x)],
  Flatten: ({ e, x: [x], gy }) => [e.reshapeLike(only(gy), x)],
  Squeeze: ({ e, x: [x], gy }) => [e.reshapeLike(only(gy), x)],
  Unsqueeze: ({ e, x: [x], gy }) => [e.reshapeLike(only(gy), x)],
  Transpose: ({ e, a, x: [x], gy }) => {
    const perm = a.ints('perm') ?? range(0, e.rank(x)).reverse();
    const inverse = perm.map((_, i) => perm.indexOf(i));
    return [e.transpose(only(gy), inverse)];
  },
  Expand: ({ e, x: [x], y: [y], gy }) => [e.sumTo(only(gy), e.info(y).runs, x)],
  Concat: ({ e, a, x, gy, need }) => {
    const axis = axisOf(a.int('axis', 0), e.rank(x[0]));
    const sizes = x.map((xi) => e.dims(xi)[axis]);
    const split = sizes.every((s) => s >= 0) ? e.ints(sizes) : e.op('Concat', x.map((xi) => e.op('Gather', [e.shape(xi), e.ints([axis])])), [attr.int('axis', 0)]);
    const parts = e.ops('Split', [only(gy), split], x.length, [attr.int('axis', axis)]);
    return parts.map((p, i) => (need[i] ? p : null));
  },
  Split: ({ e, a, x: [x], y, gy }) => {
    const axis = axisOf(a.int('axis', 0), e.rank(x));
    const parts = y.map((yi, i) => gy[i] ?? e.zerosLike(yi));
    return [e.op('Concat', parts, [attr.int('axis', axis)])];
  },
  Slice: ({ e, x: [x, ...rest], gy }) => [e.selection(x, only(gy), (idx) => e.op('Slice', [idx, ...rest]))],
  Gather: ({ e, a, x: [x, indices], gy }) => [e.selection(x, only(gy), (idx) => e.op('Gather', [idx, indices], [attr.int('axis', a.int('axis', 0))])), null],
  Tile: ({ e, x: [x, repeats], gy }) => [e.selection(x, only(gy), (idx) => e.op('Tile', [idx, repeats]))],
  Pad: ({ e, a, x: [x, pads, , axes], gy }) => {
    const mode = a.string('mode', 'constant');
    const p = e.constant(pads);
    if (mode === 'constant' && p && p.every((v) => v >= 0) && !axes) {
      // Crop the padding off again.
      const r = e.rank(x);
      return [e.op('Slice', [only(gy), e.ints(p.slice(0, r)), e.add(e.ints(p.slice(0, r)), e.shape(x))]), null, null, null];
    }
    // Elements padded in from nowhere point at the extra slot numel(x) (constant mode).
    return [e.selection(x, only(gy), (idx, fill) => e.op('Pad', [idx, pads, mode === 'constant' ? fill : '', ...(axes ? [axes] : [])], [attr.string('mode', mode)]))];
  },
  GatherElements: ({ e, a, x: [x, indices], gy }) => [
    e.op('ScatterElements', [e.zerosLike(x), indices, only(gy)], [attr.int('axis', a.int('axis', 0)), attr.string('reduction', 'add')]),
    null,
  ],
  ScatterElements: ({ e, a, x: [data, indices, updates], gy, need }) => {
    const g = only(gy);
    const axis = a.int('axis', 0);
    const reduction = a.string('reduction', 'none');
    if (reduction !== 'none' && reduction !== 'add') throw new LegibleError(`ScatterElements with reduction "${reduction}" has no gradient rule`);
    // With reduction none, the overwritten positions of data get no gradient.
    const gData = reduction === 'add' ? g : e.op('ScatterElements', [g, indices, e.zerosLike(updates)], [attr.int('axis', axis)]);
    return [need[0] ? gData : null, null, need[2] ? e.op('GatherElements', [g, indices], [attr.int('axis', axis)]) : null];
  },
  TopK: ({ e, a, x: [x], y: [, indices], gy }) => {
    if (!gy[0]) return [null];
    return [e.op('ScatterElements', [e.zerosLike(x), indices, gy[0]], [attr.int('axis', a.int('axis', -1)), attr.string('reduction', 'add')]), null];
  },
};

/** ReduceMax / ReduceMin: the gradient goes to the elements equal to the extremum, shared among ties. */
function extremum(r: RuleArgs): Grads {
  const { e } = r;
  const x = r.x[0];
  const axes = reduceAxes(e, r);
  if (!axes) return [only(r.gy)];
  const yKept = r.a.int('keepdims', 1) ? r.y[0] : e.unsqueeze(r.y[0], axes);
  const hit = e.op('Cast', [e.cmp('Equal', x, yKept)], [attr.int('to', e.type(x))]);
  const ties = e.reduceSum(hit, axes, true);
  return [e.div(e.mul(spread(e, r, axes), hit), ties)];
}

/** Op types with a backward rule. */
export const SUPPORTED_OPS = Object.keys(RULES).sort();
