// Every backward rule against central finite differences on tiny random graphs, and the builder's
// contract: objectives, pruning, shape chains, dynamic batch, intermediate tensors, errors.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as ort from 'onnxruntime-node';
import { Rng } from '@legible/studies/random';
import { attr, makeGraph, makeModel, node, tensorInfo } from '../src/onnx/graph.ts';
import { DataType, encodeModel, float32Tensor, int64Tensor } from '../src/onnx/proto.ts';
import { buildGradientModel, GradientError } from '../src/grad/vjp.ts';
import { awayFromZero, checkCase, distinct, type Case } from './grad-fd.ts';

const F64 = 1e-7; // float64 cases: analytic vs numeric, relative L2
const F32 = 2e-3; // float32 cases (onnxruntime has no double kernel for the op)

const i64 = (name: string, values: number[], dims = [values.length]) => int64Tensor(name, dims, values);
const ints = attr.ints;

interface Named {
  name: string;
  c: Case;
  tol?: number;
}

const x4 = { x: [2, 3, 5, 5] };
const unary = (op: string, opts: Partial<Case> = {}, attrs = [] as ReturnType<typeof attr.int>[]): Case => ({ inputs: x4, nodes: [node(op, ['x'], ['y'], attrs)], objective: 'y', ...opts });

const CASES: Named[] = [
  // ── Activations ──
  { name: 'Relu', c: unary('Relu', { values: { x: awayFromZero() } }) },
  { name: 'LeakyRelu', c: unary('LeakyRelu', { values: { x: awayFromZero() } }, [attr.float('alpha', 0.1)]) },
  { name: 'PRelu (input and slope)', c: { inputs: x4, params: { s: [3, 1, 1] }, nodes: [node('PRelu', ['x', 's'], ['y'])], objective: 'y', values: { x: awayFromZero() } } },
  {
    name: 'Clip (min and max inputs, as ReLU6)',
    c: { inputs: x4, consts: [float64('lo', -0.5), float64('hi', 0.7)], nodes: [node('Clip', ['x', 'lo', 'hi'], ['y'])], objective: 'y', values: { x: (n, r) => Array.from({ length: n }, () => r.shuffle([-1.2, -0.3, 0.1, 0.4, 1.5])[0] + 0.01 * r.normal()) } },
  },
  { name: 'Clip (min only)', c: { inputs: x4, consts: [float64('lo', 0)], nodes: [node('Clip', ['x', 'lo'], ['y'])], objective: 'y', values: { x: awayFromZero() } } },
  { name: 'Sigmoid', c: unary('Sigmoid') },
  { name: 'Tanh', c: unary('Tanh') },
  { name: 'Erf', c: unary('Erf', { dtype: 'float32' }), tol: F32 },
  { name: 'Gelu (erf, as exported from PyTorch: x/2 (1 + erf(x/√2)))', c: geluErf(), tol: F32 },
  { name: 'Gelu op (opset 20, tanh approximation)', c: unary('Gelu', { dtype: 'float32', opset: 20 }, [attr.string('approximate', 'tanh')]), tol: F32 },
  { name: 'Gelu op (opset 20, exact)', c: unary('Gelu', { dtype: 'float32', opset: 20 }), tol: F32 },
  { name: 'HardSigmoid', c: unary('HardSigmoid', { dtype: 'float32', values: { x: spread([-4, -1, 0.5, 1.5, 4]) } }, [attr.float('alpha', 0.25)]), tol: F32 },
  { name: 'HardSwish', c: unary('HardSwish', { dtype: 'float32', values: { x: spread([-4, -2, -0.5, 1, 2.5, 4]) } }), tol: F32 },
  { name: 'Softplus', c: unary('Softplus', { dtype: 'float32' }), tol: F32 },
  { name: 'Elu', c: unary('Elu', { dtype: 'float32', values: { x: awayFromZero() } }, [attr.float('alpha', 0.7)]), tol: F32 },
  { name: 'Exp', c: unary('Exp') },
  { name: 'Log', c: unary('Log', { values: { x: positive } }) },
  { name: 'Sqrt', c: unary('Sqrt', { values: { x: positive } }) },
  { name: 'Reciprocal', c: unary('Reciprocal', { values: { x: positive } }) },
  { name: 'Neg', c: unary('Neg') },
  { name: 'Abs', c: unary('Abs', { values: { x: awayFromZero() } }) },
  { name: 'Sin', c: unary('Sin') },
  { name: 'Cos', c: unary('Cos') },
  { name: 'Identity, Dropout (inference), Cast', c: { inputs: x4, nodes: [node('Identity', ['x'], ['a']), node('Dropout', ['a'], ['b']), node('Cast', ['b'], ['y'], [attr.int('to', DataType.DOUBLE)])], objective: 'y' } },

  // ── Broadcasting arithmetic ──
  { name: 'Add with broadcasting ([2,3,5,5] + [3,1,1])', c: { inputs: { ...x4, b: [3, 1, 1] }, nodes: [node('Add', ['x', 'b'], ['y'])], objective: 'y' } },
  { name: 'Sub with broadcasting ([1,5] − [2,3,5,5])', c: { inputs: { a: [1, 5], ...x4 }, nodes: [node('Sub', ['a', 'x'], ['y'])], objective: 'y' } },
  { name: 'Mul with broadcasting ([2,3,5,5] · [2,1,5,1])', c: { inputs: { ...x4, b: [2, 1, 5, 1] }, nodes: [node('Mul', ['x', 'b'], ['y'])], objective: 'y' } },
  { name: 'Div with broadcasting ([2,3,5,5] / [5]) and a scalar', c: { inputs: { ...x4, b: [5], s: [] }, nodes: [node('Div', ['x', 'b'], ['t']), node('Div', ['t', 's'], ['y'])], objective: 'y', values: { b: positive, s: positive } } },
  { name: 'Pow', c: { inputs: { x: [2, 3, 4], p: [4] }, nodes: [node('Pow', ['x', 'p'], ['y'])], objective: 'y', kind: 'sum', values: { x: positive } } },
  { name: 'Where', c: { inputs: { a: [2, 3, 4], b: [3, 1] }, consts: [{ ...i64('c0', [1, 0, 1, 1, 0, 1, 0, 0, 1, 1, 1, 0], [3, 4]), data_type: DataType.INT64 }], nodes: [node('Cast', ['c0'], ['c'], [attr.int('to', DataType.BOOL)]), node('Where', ['c', 'a', 'b'], ['y'])], objective: 'y', kind: 'sum' } },
  { name: 'Max, Min, Sum, Mean (variadic)', tol: F32, c: { dtype: 'float32', inputs: { a: [2, 3, 4], b: [3, 4], d: [4] }, nodes: [node('Max', ['a', 'b'], ['m']), node('Min', ['m', 'd'], ['n']), node('Sum', ['n', 'a', 'd'], ['s']), node('Mean', ['s', 'b'], ['y'])], objective: 'y', kind: 'sum', h: 1e-3 } },

  // ── Products ──
  { name: 'Gemm (transB, alpha, beta, bias broadcast)', c: { inputs: { a: [3, 4] }, params: { w: [5, 4], c: [5] }, nodes: [node('Gemm', ['a', 'w', 'c'], ['y'], [attr.int('transB', 1), attr.float('alpha', 0.7), attr.float('beta', 1.3)])], objective: 'y' } },
  { name: 'Gemm (transA, C [1, N])', c: { inputs: { a: [4, 3] }, params: { w: [4, 5], c: [1, 5] }, nodes: [node('Gemm', ['a', 'w', 'c'], ['y'], [attr.int('transA', 1), attr.float('beta', 0.5)])], objective: 'y' } },
  { name: 'Gemm (transA and transB, no C)', c: { inputs: { a: [4, 3] }, params: { w: [5, 4] }, nodes: [node('Gemm', ['a', 'w'], ['y'], [attr.int('transA', 1), attr.int('transB', 1), attr.float('alpha', 2)])], objective: 'y' } },
  { name: 'MatMul (2-D)', c: { inputs: { a: [3, 4] }, params: { b: [4, 5] }, nodes: [node('MatMul', ['a', 'b'], ['y'])], objective: 'y' } },
  { name: 'MatMul (batched, broadcast)', c: { inputs: { a: [2, 3, 3, 4] }, params: { b: [3, 4, 5] }, nodes: [node('MatMul', ['a', 'b'], ['y'])], objective: 'y' } },
  { name: 'MatMul (matrix · vector)', c: { inputs: { a: [2, 3, 4] }, params: { b: [4] }, nodes: [node('MatMul', ['a', 'b'], ['y'])], objective: 'y' } },
  { name: 'MatMul (vector · matrix)', c: { inputs: { a: [4] }, params: { b: [2, 4, 5] }, nodes: [node('MatMul', ['a', 'b'], ['y'])], objective: 'y', kind: 'sum' } },

  // ── Convolutions (float32: onnxruntime has no double Conv) ──
  ...convCases(),

  // ── Pooling ──
  { name: 'MaxPool 3×3 stride 2 pad 1 (overlapping windows)', c: { inputs: { x: [2, 3, 7, 7] }, nodes: [node('MaxPool', ['x'], ['y'], [ints('kernel_shape', [3, 3]), ints('strides', [2, 2]), ints('pads', [1, 1, 1, 1])])], objective: 'y', values: { x: distinct() } } },
  { name: 'MaxPool ceil_mode, asymmetric pads', c: { inputs: { x: [2, 3, 8, 7] }, nodes: [node('MaxPool', ['x'], ['y'], [ints('kernel_shape', [3, 2]), ints('strides', [2, 3]), ints('pads', [0, 1, 1, 0]), attr.int('ceil_mode', 1)])], objective: 'y', values: { x: distinct() } } },
  { name: 'MaxPool dilated, stride 1 (GoogLeNet-style 3×3/1)', c: { inputs: { x: [1, 2, 7, 7] }, nodes: [node('MaxPool', ['x'], ['y'], [ints('kernel_shape', [3, 3]), ints('dilations', [2, 1]), ints('pads', [1, 1, 1, 1])])], objective: 'y', values: { x: distinct() } } },
  { name: 'MaxPool auto_pad SAME_UPPER', c: { inputs: { x: [1, 2, 6, 5] }, nodes: [node('MaxPool', ['x'], ['y'], [ints('kernel_shape', [2, 3]), ints('strides', [2, 2]), attr.string('auto_pad', 'SAME_UPPER')])], objective: 'y', values: { x: distinct() } } },
  ...avgPoolCases(),
  { name: 'GlobalAveragePool', c: { dtype: 'float32', inputs: x4, nodes: [node('GlobalAveragePool', ['x'], ['y'])], objective: 'y' }, tol: F32 },
  { name: 'GlobalMaxPool', c: { dtype: 'float32', inputs: x4, nodes: [node('GlobalMaxPool', ['x'], ['y'])], objective: 'y', values: { x: distinct() } }, tol: F32 },

  // ── Normalisation ──
  { name: 'BatchNormalization (inference: x, scale, bias, mean, var)', c: { inputs: x4, params: { s: [3], b: [3], m: [3], v: [3] }, nodes: [node('BatchNormalization', ['x', 's', 'b', 'm', 'v'], ['y'], [attr.float('epsilon', 1e-3)])], objective: 'y', values: { v: positive } } },
  { name: 'LRN (size 3, AlexNet constants)', c: { dtype: 'float32', inputs: { x: [2, 6, 3, 3] }, nodes: [node('LRN', ['x'], ['y'], [attr.int('size', 3), attr.float('alpha', 0.5), attr.float('beta', 0.75), attr.float('bias', 2)])], objective: 'y' }, tol: F32 },
  { name: 'LRN (size 5, every channel window clipped at an edge)', c: { dtype: 'float32', inputs: { x: [1, 4, 2, 2] }, nodes: [node('LRN', ['x'], ['y'], [attr.int('size', 5), attr.float('alpha', 0.3), attr.float('beta', 0.6)])], objective: 'y' }, tol: F32 },
  { name: 'LayerNormalization (last axis, scale and bias)', c: { inputs: { x: [2, 3, 6] }, params: { s: [6], b: [6] }, nodes: [node('LayerNormalization', ['x', 's', 'b'], ['y'], [attr.int('axis', -1)])], objective: 'y' } },
  { name: 'LayerNormalization (axis 1: over [C, L])', c: { inputs: { x: [2, 3, 4] }, params: { s: [3, 4] }, nodes: [node('LayerNormalization', ['x', 's'], ['y'], [attr.int('axis', 1), attr.float('epsilon', 1e-3)])], objective: 'y' } },
  { name: 'InstanceNormalization', c: { dtype: 'float32', inputs: { x: [2, 3, 4, 4] }, params: { s: [3], b: [3] }, nodes: [node('InstanceNormalization', ['x', 's', 'b'], ['y'])], objective: 'y', kind: 'cotangent' }, tol: F32 },
  { name: 'Softmax (axis 1)', c: { inputs: { x: [2, 5, 3] }, nodes: [node('Softmax', ['x'], ['y'], [attr.int('axis', 1)])], objective: 'y' } },
  { name: 'LogSoftmax (last axis)', c: { inputs: { x: [3, 6] }, nodes: [node('LogSoftmax', ['x'], ['y'])], objective: 'y' } },

  // ── Reductions ──
  { name: 'ReduceMean (axes attribute, keepdims 0)', c: { inputs: x4, nodes: [node('ReduceMean', ['x'], ['y'], [ints('axes', [2, -1]), attr.int('keepdims', 0)])], objective: 'y' } },
  { name: 'ReduceMean (opset 18: axes input, keepdims 1)', c: { inputs: x4, consts: [i64('axes', [1])], nodes: [node('ReduceMean', ['x', 'axes'], ['y'])], objective: 'y', opset: 18 } },
  { name: 'ReduceSum (axes input) and ReduceMax', c: { inputs: x4, consts: [i64('axes', [3])], nodes: [node('ReduceSum', ['x', 'axes'], ['s'], [attr.int('keepdims', 0)]), node('ReduceMax', ['s'], ['y'], [ints('axes', [1]), attr.int('keepdims', 1)])], objective: 'y' } },

  // ── Moving elements ──
  { name: 'Concat (axis 1) and Split (sizes input)', c: { inputs: { a: [2, 2, 3], b: [2, 3, 3] }, consts: [i64('sizes', [1, 4])], nodes: [node('Concat', ['a', 'b'], ['c'], [attr.int('axis', 1)]), node('Split', ['c', 'sizes'], ['p', 'q'], [attr.int('axis', 1)]), node('Mul', ['q', 'q'], ['y'])], objective: 'y' } },
  { name: 'Split with an unused output', c: { inputs: { x: [2, 6, 2] }, nodes: [node('Split', ['x'], ['p', 'q', 'r'], [attr.int('axis', 1)]), node('Add', ['p', 'r'], ['y'])], objective: 'y' } },
  { name: 'Slice (negative step, axes, clamped ends)', c: { inputs: { x: [2, 5, 6] }, consts: [i64('st', [4, 1]), i64('en', [0, 100]), i64('ax', [1, 2]), i64('sp', [-2, 2])], nodes: [node('Slice', ['x', 'st', 'en', 'ax', 'sp'], ['y'])], objective: 'y' } },
  { name: 'Gather (indices with repeats) and GatherElements', c: { inputs: { x: [3, 4, 2] }, consts: [i64('idx', [2, 0, 2], [3]), i64('eidx', [0, 1, 0, 1, 1, 0], [1, 3, 2])], nodes: [node('Gather', ['x', 'idx'], ['g'], [attr.int('axis', 1)]), node('GatherElements', ['g', 'eidx'], ['y'], [attr.int('axis', 0)])], objective: 'y', kind: 'sum' } },
  { name: 'Pad constant (Slice back), reflect and edge (selection)', c: { inputs: { x: [1, 2, 4, 5] }, consts: [i64('p1', [0, 0, 1, 2, 0, 0, 2, 1]), i64('p2', [0, 0, 2, 1, 0, 0, 1, 2])], nodes: [node('Pad', ['x', 'p1'], ['a']), node('Pad', ['a', 'p2'], ['b'], [attr.string('mode', 'reflect')]), node('Pad', ['b', 'p2'], ['y'], [attr.string('mode', 'edge')])], objective: 'y' } },
  { name: 'Pad with negative pads (crop)', c: { inputs: { x: [1, 2, 5, 5] }, consts: [i64('p', [0, 0, -1, 2, 0, 0, 1, -2])], nodes: [node('Pad', ['x', 'p'], ['y'])], objective: 'y' } },
  { name: 'Reshape, Flatten, Transpose, Squeeze, Unsqueeze', c: { inputs: { x: [2, 3, 4, 1] }, consts: [i64('shape', [0, 4, -1]), i64('ax', [3]), i64('ax0', [1])], nodes: [node('Squeeze', ['x', 'ax'], ['s']), node('Transpose', ['s'], ['t'], [ints('perm', [0, 2, 1])]), node('Reshape', ['t', 'shape'], ['r']), node('Unsqueeze', ['r', 'ax0'], ['u']), node('Flatten', ['u'], ['f'], [attr.int('axis', 2)]), node('Transpose', ['f'], ['y'])], objective: 'y', kind: 'sum', values: { x: (n, r) => Array.from({ length: n }, (_, i) => r.normal() * (1 + i / 10)) } } },
  { name: 'Expand and Tile', c: { inputs: { x: [3, 1] }, consts: [i64('shape', [2, 3, 4]), i64('rep', [1, 2, 1])], nodes: [node('Expand', ['x', 'shape'], ['e']), node('Tile', ['e', 'rep'], ['t']), node('Mul', ['t', 't'], ['y'])], objective: 'y', kind: 'sum' } },
  { name: 'TopK (values) and ScatterElements (reduction none)', c: { inputs: { x: [3, 6], d: [3, 6] }, consts: [i64('k', [2])], nodes: [node('TopK', ['x', 'k'], ['v', 'i'], [attr.int('axis', 1)]), node('Relu', ['v'], ['r']), node('ScatterElements', ['d', 'i', 'r'], ['y'], [attr.int('axis', 1)])], objective: 'y', kind: 'sum', values: { x: distinct(0.1) } } },
];

function float64(name: string, v: number) {
  const raw = new Uint8Array(8);
  new DataView(raw.buffer).setFloat64(0, v, true);
  return { dims: [], data_type: DataType.DOUBLE, name, raw_data: raw };
}
function positive(n: number, r: Rng) {
  return Array.from({ length: n }, () => 0.5 + Math.abs(r.normal()));
}
function spread(levels: number[]) {
  return (n: number, r: Rng) => Array.from({ length: n }, () => levels[r.int(levels.length)] + 0.05 * r.normal());
}
function geluErf(): Case {
  const c = (name: string, v: number) => float32Tensor(name, [], [v]);
  return {
    dtype: 'float32',
    inputs: x4,
    consts: [c('sqrt2', Math.SQRT2), c('one', 1), c('half', 0.5)],
    nodes: [node('Div', ['x', 'sqrt2'], ['d']), node('Erf', ['d'], ['e']), node('Add', ['e', 'one'], ['a']), node('Mul', ['x', 'a'], ['m']), node('Mul', ['m', 'half'], ['y'])],
    objective: 'y',
  };
}

function convCases(): Named[] {
  const conv = (name: string, x: number[], w: number[], attrs: ReturnType<typeof attr.int>[], bias = true): Named => ({
    name,
    c: { dtype: 'float32', inputs: { x }, params: bias ? { w, b: [w[0]] } : { w }, nodes: [node('Conv', bias ? ['x', 'w', 'b'] : ['x', 'w'], ['y'], attrs)], objective: 'y' },
    tol: F32,
  });
  return [
    conv('Conv 3×3 pad 1 (stride 1: flipped-kernel Conv)', [2, 3, 6, 6], [4, 3, 3, 3], [ints('pads', [1, 1, 1, 1])]),
    conv('Conv stride 2, asymmetric pads (ConvTranspose)', [2, 3, 7, 6], [4, 3, 3, 3], [ints('pads', [1, 0, 2, 1]), ints('strides', [2, 2])]),
    conv('Conv stride 3 leaves rows unread (output_padding)', [1, 2, 8, 8], [3, 2, 2, 2], [ints('strides', [3, 3])]),
    conv('Conv dilation 2', [1, 2, 8, 7], [3, 2, 3, 2], [ints('dilations', [2, 2]), ints('pads', [2, 1, 2, 1])]),
    conv('Conv dilated and strided', [1, 2, 9, 9], [3, 2, 3, 3], [ints('dilations', [2, 1]), ints('strides', [2, 2]), ints('pads', [1, 1, 1, 1])]),
    conv('Conv groups 2', [2, 4, 5, 5], [6, 2, 3, 3], [attr.int('group', 2), ints('pads', [1, 1, 1, 1])]),
    conv('Conv depthwise (groups = channels), stride 2', [2, 4, 6, 6], [4, 1, 3, 3], [attr.int('group', 4), ints('pads', [1, 1, 1, 1]), ints('strides', [2, 2])]),
    conv('Conv depthwise multiplier 2 (groups 3, 6 outputs)', [1, 3, 5, 5], [6, 1, 3, 3], [attr.int('group', 3), ints('pads', [1, 1, 1, 1])]),
    conv('Conv 1×1 stride 2, no bias (ResNet downsample)', [2, 4, 6, 6], [5, 4, 1, 1], [ints('strides', [2, 2])], false),
    conv('Conv 1×1 strides (2, 3), groups 2, odd sizes (spread onto the stride grid)', [1, 4, 7, 8], [6, 2, 1, 1], [ints('strides', [2, 3]), attr.int('group', 2)]),
    conv('Conv 7×7 stride 2 pad 3 (ResNet stem)', [1, 3, 12, 12], [2, 3, 7, 7], [ints('strides', [2, 2]), ints('pads', [3, 3, 3, 3])]),
    conv('Conv auto_pad SAME_UPPER, stride 2', [1, 2, 7, 6], [3, 2, 3, 4], [attr.string('auto_pad', 'SAME_UPPER'), ints('strides', [2, 2])]),
    conv('Conv auto_pad SAME_LOWER', [1, 2, 5, 6], [3, 2, 2, 3], [attr.string('auto_pad', 'SAME_LOWER')]),
    conv('Conv auto_pad VALID', [1, 2, 6, 6], [3, 2, 3, 3], [attr.string('auto_pad', 'VALID')]),
    conv('Conv 1-D', [2, 3, 9], [4, 3, 3], [ints('pads', [1, 2]), ints('strides', [2])]),
  ];
}

function avgPoolCases(): Named[] {
  const pool = (name: string, x: number[], attrs: ReturnType<typeof attr.int>[]): Named => ({
    name,
    c: { dtype: 'float32', inputs: { x }, nodes: [node('AveragePool', ['x'], ['y'], attrs)], objective: 'y' },
    tol: F32,
  });
  return [
    pool('AveragePool 2×2 stride 2 (DenseNet transition)', [2, 3, 6, 6], [ints('kernel_shape', [2, 2]), ints('strides', [2, 2])]),
    pool('AveragePool 3×3 pad 1, count_include_pad 0', [1, 2, 5, 6], [ints('kernel_shape', [3, 3]), ints('strides', [2, 2]), ints('pads', [1, 1, 1, 1])]),
    pool('AveragePool 3×3 pad 1, count_include_pad 1', [1, 2, 5, 6], [ints('kernel_shape', [3, 3]), ints('strides', [2, 2]), ints('pads', [1, 1, 1, 1]), attr.int('count_include_pad', 1)]),
    pool('AveragePool ceil_mode, count_include_pad 1', [1, 2, 6, 7], [ints('kernel_shape', [3, 3]), ints('strides', [2, 2]), ints('pads', [1, 0, 0, 1]), attr.int('ceil_mode', 1), attr.int('count_include_pad', 1)]),
    pool('AveragePool ceil_mode, count_include_pad 0', [1, 2, 6, 7], [ints('kernel_shape', [2, 3]), ints('strides', [2, 2]), attr.int('ceil_mode', 1)]),
  ];
}

describe('backward rules against central finite differences', () => {
  for (const { name, c, tol } of CASES) {
    it(name, async () => {
      const result = await checkCase(c);
      for (const [t, err] of Object.entries(result.errors)) {
        assert.ok(result.norms[t] > 1e-6, `${t}: the numeric gradient is zero, the case tests nothing`);
        assert.ok(err <= (tol ?? F64), `${t}: relative L2 error ${err.toExponential(2)} > ${(tol ?? F64).toExponential(0)}`);
      }
    });
  }
});

// ─── The builder's contract ─────────────────────────────────────────────────────────────────

/** x [N, 3, 6, 6] → conv → relu (h) → conv (y) → relu → global pool → flatten → reshape via a shape chain → gemm (logits); a side branch. */
function chainModel(opset = 17) {
  const rng = new Rng(21);
  const rand = (n: number, s: number) => Float32Array.from({ length: n }, () => s * rng.normal());
  return makeModel({
    opset,
    graph: makeGraph({
      name: 'chain',
      inputs: [tensorInfo('x', DataType.FLOAT, ['N', 3, 6, 6])],
      outputs: [tensorInfo('logits', DataType.FLOAT, ['N', 5]), tensorInfo('side', DataType.FLOAT)],
      initializers: [
        float32Tensor('w1', [4, 3, 3, 3], rand(108, 0.4)),
        float32Tensor('w2', [6, 4, 3, 3], rand(216, 0.3)),
        float32Tensor('fc', [5, 6], rand(30, 0.5)),
        int64Tensor('zero', [1], [0]),
        int64Tensor('minus1', [1], [-1]),
      ],
      nodes: [
        node('Conv', ['x', 'w1'], ['c1'], [ints('pads', [1, 1, 1, 1])]),
        node('Relu', ['c1'], ['h']),
        node('Conv', ['h', 'w2'], ['y'], [ints('pads', [1, 1, 1, 1]), ints('strides', [2, 2])]),
        node('Relu', ['y'], ['yr']),
        node('GlobalAveragePool', ['yr'], ['pool']),
        // torch's x.view(x.size(0), -1): a shape computed at run time, not differentiable.
        node('Shape', ['pool'], ['shape']),
        node('Gather', ['shape', 'zero'], ['batch']),
        node('Concat', ['batch', 'minus1'], ['target'], [attr.int('axis', 0)]),
        node('Reshape', ['pool', 'target'], ['flat']),
        node('Gemm', ['flat', 'fc'], ['logits'], [attr.int('transB', 1)]),
        node('Sigmoid', ['h'], ['side']),
      ],
    }),
  });
}

const T = (d: Float32Array, dims: number[]) => new ort.Tensor('float32', d, dims);

describe('gradient builder', () => {
  it('computes the mean-projection objective per item, as a tapped forward pass and plain loops do', async () => {
    const model = chainModel();
    const grad = await buildGradientModel(model, { wrt: ['x'], objective: { tensor: 'y' } });
    const rng = new Rng(1);
    const x = Float32Array.from({ length: 3 * 108 }, () => rng.normal());
    const w = Float32Array.from({ length: 3 * 6 }, () => rng.normal());
    const s = await ort.InferenceSession.create(encodeModel(grad.model));
    const out = await s.run({ x: T(x, [3, 3, 6, 6]), [grad.objectiveInputs[0]!]: T(w, [3, 6]) });
    const tapped = await ort.InferenceSession.create(encodeModel({ ...model, graph: { ...model.graph!, output: [{ name: 'y' }] } }));
    const y = (await tapped.run({ x: T(x, [3, 3, 6, 6]) })).y.data as Float32Array;
    const objective = out[grad.objective].data as Float32Array;
    assert.deepEqual(out[grad.objective].dims, [3]);
    for (let n = 0; n < 3; n++) {
      let want = 0;
      for (let c = 0; c < 6; c++) for (let p = 0; p < 9; p++) want += (w[n * 6 + c] * y[(n * 6 + c) * 9 + p]) / 9;
      assert.ok(Math.abs(objective[n] - want) < 1e-5, `item ${n}: ${objective[n]} vs ${want}`);
    }
  });

  it('keeps the batch dynamic: each item\'s gradient is the same alone or in a batch of 5 (shape chains included)', async () => {
    const grad = await buildGradientModel(chainModel(), { wrt: ['x'], objective: { tensor: 'logits' } });
    const s = await ort.InferenceSession.create(encodeModel(grad.model));
    const rng = new Rng(2);
    const x = Float32Array.from({ length: 5 * 108 }, () => rng.normal());
    const w = Float32Array.from({ length: 5 * 5 }, () => rng.normal());
    const all = (await s.run({ x: T(x, [5, 3, 6, 6]), [grad.objectiveInputs[0]!]: T(w, [5, 5]) }))[grad.grads.x].data as Float32Array;
    for (const n of [0, 3]) {
      const one = (await s.run({ x: T(x.slice(n * 108, (n + 1) * 108), [1, 3, 6, 6]), [grad.objectiveInputs[0]!]: T(w.slice(n * 5, (n + 1) * 5), [1, 5]) }))[grad.grads.x].data as Float32Array;
      one.forEach((v, i) => assert.ok(Math.abs(v - all[n * 108 + i]) < 1e-6, `item ${n}, element ${i}`));
    }
  });

  it('prunes what the objective does not need, and returns requested forward tensors', async () => {
    const grad = await buildGradientModel(chainModel(), { wrt: ['x'], objective: { tensor: 'y' }, outputs: ['h'] });
    const ops = grad.model.graph!.node!.map((n) => n.output![0]);
    for (const gone of ['side', 'pool', 'logits', 'yr']) assert.ok(!ops.includes(gone), `${gone} should be pruned`);
    assert.deepEqual(grad.model.graph!.output!.map((o) => o.name), ['objective', 'grad:x', 'h']);
    assert.deepEqual(grad.model.graph!.input!.map((i) => i.name), ['x', 'objective_weights']);
  });

  it('differentiates with respect to an intermediate tensor; the chain rule through a cotangent objective agrees', async () => {
    const model = chainModel();
    const grad = await buildGradientModel(model, { wrt: ['x', 'h'], objective: { tensor: 'logits' } });
    const s = await ort.InferenceSession.create(encodeModel(grad.model));
    const rng = new Rng(3);
    const x = Float32Array.from({ length: 2 * 108 }, () => rng.normal());
    const w = Float32Array.from({ length: 10 }, () => rng.normal());
    const out = await s.run({ x: T(x, [2, 3, 6, 6]), [grad.objectiveInputs[0]!]: T(w, [2, 5]) });
    const gh = out[grad.grads.h].data as Float32Array;
    // x → h alone, with ∂objective/∂h as the cotangent: its gradient is ∂objective/∂x.
    const vjp = await buildGradientModel(model, { wrt: ['x'], objective: { tensor: 'h', kind: 'cotangent' } });
    const s2 = await ort.InferenceSession.create(encodeModel(vjp.model));
    const gx = (await s2.run({ x: T(x, [2, 3, 6, 6]), [vjp.objectiveInputs[0]!]: T(gh, [2, 4, 6, 6]) }))[vjp.grads.x].data as Float32Array;
    const direct = out[grad.grads.x].data as Float32Array;
    direct.forEach((v, i) => assert.ok(Math.abs(v - gx[i]) < 1e-5 * (1 + Math.abs(v)), `element ${i}: ${v} vs ${gx[i]}`));
  });

  it('stops gradients where told', async () => {
    const model = makeModel({
      graph: makeGraph({
        name: 'stop',
        inputs: [tensorInfo('x', DataType.FLOAT, [4])],
        outputs: [tensorInfo('y', DataType.FLOAT, [4])],
        nodes: [node('Identity', ['x'], ['held']), node('Mul', ['x', 'held'], ['y'])],
      }),
    });
    const free = await buildGradientModel(model, { wrt: ['x'], objective: { tensor: 'y', kind: 'sum' } });
    const held = await buildGradientModel(model, { wrt: ['x'], objective: { tensor: 'y', kind: 'sum' }, stopGradient: ['held'] });
    const x = Float32Array.from([1, -2, 3, 0.5]);
    const run = async (m: typeof free) => (await (await ort.InferenceSession.create(encodeModel(m.model))).run({ x: T(x, [4]) }))[m.grads.x].data as Float32Array;
    assert.deepEqual([...(await run(free))], [...x].map((v) => 2 * v));
    assert.deepEqual([...(await run(held))], [...x]);
  });

  it('upgrades an opset-13 model to 17 and refuses older ones', async () => {
    const grad = await buildGradientModel(chainModel(13), { wrt: ['x'], objective: { tensor: 'logits' } });
    assert.equal(grad.model.opset_import!.find((o) => !o.domain)!.version, 17);
    await assert.rejects(buildGradientModel(chainModel(11), { wrt: ['x'], objective: { tensor: 'logits' } }), /opset 11; gradients need opset 13 or newer/);
  });

  it('names the op and the node it has no rule for, and explains a missing path', async () => {
    const model = makeModel({
      graph: makeGraph({
        name: 'unsupported',
        inputs: [tensorInfo('x', DataType.FLOAT, [1, 2, 4, 4])],
        outputs: [tensorInfo('y', DataType.FLOAT)],
        initializers: [float32Tensor('scales', [4], [1, 1, 2, 2])],
        nodes: [node('Relu', ['x'], ['r']), node('Resize', ['r', '', 'scales'], ['up'], [], { name: 'upsample_2x' }), node('Relu', ['up'], ['y'])],
      }),
    });
    await assert.rejects(buildGradientModel(model, { wrt: ['x'], objective: { tensor: 'y' } }), (err: Error) => {
      assert.ok(err instanceof GradientError);
      assert.match(err.message, /no gradient rule for op Resize, node "upsample_2x"/);
      assert.match(err.message, /Ops with rules: .*Conv.*MaxPool/);
      return true;
    });
    await assert.rejects(buildGradientModel(chainModel(), { wrt: ['x'], objective: { tensor: 'shape' } }), /objective tensor "shape" is not a float tensor/);
    await assert.rejects(buildGradientModel(chainModel(), { wrt: ['h'], objective: { tensor: 'c1' } }), /the objective does not depend on "h"/);
    await assert.rejects(buildGradientModel(chainModel(), { wrt: ['x'], objective: { tensor: 'nope' } }), /the model has no tensor "nope"/);
  });
});
