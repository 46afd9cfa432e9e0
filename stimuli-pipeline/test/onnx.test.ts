import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import { layers } from '../src/commands.ts';
import { attr, attributeValue, makeGraph, makeModel, node, tensorInfo, tensorType } from '../src/onnx/graph.ts';
import {
  AttributeType,
  DataType,
  decodeMessage,
  decodeModel,
  encodeMessage,
  encodeModel,
  float32Tensor,
  int64Tensor,
  ProtoError,
  tensorToFloat32,
  type ModelProto,
  type TensorProto,
} from '../src/onnx/proto.ts';
import { editDistance } from '@legible/studies';
import { addReducedTaps, addTaps, listTensors, pruneGraph, reducedName, tapsOnly } from '../src/onnx/taps.ts';
import { Rng } from '@legible/studies/random';

const root = fileURLToPath(new URL('../..', import.meta.url));
const DEMO = join(root, 'studies/demo/model.onnx');

// ─── An independent reference: plain nested loops over NCHW arrays ─────────────────────────

function conv2d(x: Float32Array, [n, c, h, w]: number[], weight: Float32Array, bias: Float32Array, cout: number, k: number, pad: number): Float32Array {
  const out = new Float32Array(n * cout * h * w);
  for (let b = 0; b < n; b++)
    for (let o = 0; o < cout; o++)
      for (let y = 0; y < h; y++)
        for (let xx = 0; xx < w; xx++) {
          let s = bias[o];
          for (let i = 0; i < c; i++)
            for (let ky = 0; ky < k; ky++)
              for (let kx = 0; kx < k; kx++) {
                const yy = y + ky - pad;
                const xi = xx + kx - pad;
                if (yy < 0 || yy >= h || xi < 0 || xi >= w) continue;
                s += weight[((o * c + i) * k + ky) * k + kx] * x[((b * c + i) * h + yy) * w + xi];
              }
          out[((b * cout + o) * h + y) * w + xx] = s;
        }
  return out;
}
const relu = (x: Float32Array) => x.map((v) => Math.max(0, v));
function maxPool2(x: Float32Array, [n, c, h, w]: number[]): Float32Array {
  const out = new Float32Array(n * c * (h / 2) * (w / 2));
  for (let p = 0; p < n * c; p++)
    for (let y = 0; y < h / 2; y++)
      for (let xx = 0; xx < w / 2; xx++) {
        const at = (dy: number, dx: number) => x[(p * h + 2 * y + dy) * w + 2 * xx + dx];
        out[(p * (h / 2) + y) * (w / 2) + xx] = Math.max(at(0, 0), at(0, 1), at(1, 0), at(1, 1));
      }
  return out;
}
function gemmT(x: Float32Array, n: number, k: number, weight: Float32Array, bias: Float32Array, m: number): Float32Array {
  const out = new Float32Array(n * m);
  for (let b = 0; b < n; b++)
    for (let j = 0; j < m; j++) {
      let s = bias[j];
      for (let i = 0; i < k; i++) s += x[b * k + i] * weight[j * k + i];
      out[b * m + j] = s;
    }
  return out;
}
function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length, 'lengths differ');
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}

/** A tiny random CNN: Conv(3→4, 3×3, pad 1) → Relu → MaxPool 2×2 → Flatten → Gemm → 5 outputs. */
function tinyNet(seed: number, { valueInfo = false } = {}) {
  const rng = new Rng(seed);
  const rand = (n: number, s: number) => Float32Array.from({ length: n }, () => rng.normal() * s);
  const w = rand(4 * 3 * 3 * 3, 0.3);
  const b = rand(4, 0.1);
  const fw = rand(5 * 4 * 4 * 4, 0.2);
  const fb = rand(5, 0.1);
  const graph = makeGraph({
    name: 'tiny',
    inputs: [tensorInfo('x', DataType.FLOAT, ['N', 3, 8, 8])],
    outputs: [tensorInfo('y', DataType.FLOAT, ['N', 5])],
    initializers: [float32Tensor('w', [4, 3, 3, 3], w), float32Tensor('b', [4], b), float32Tensor('fw', [5, 64], fw), float32Tensor('fb', [5], fb), int64Tensor('flat_shape', [2], [0, -1])],
    nodes: [
      node('Conv', ['x', 'w', 'b'], ['conv'], [attr.ints('kernel_shape', [3, 3]), attr.ints('pads', [1, 1, 1, 1])], { name: 'conv_node' }),
      node('Relu', ['conv'], ['act']),
      node('MaxPool', ['act'], ['pooled'], [attr.ints('kernel_shape', [2, 2]), attr.ints('strides', [2, 2])]),
      node('Reshape', ['pooled', 'flat_shape'], ['flat']),
      node('Gemm', ['flat', 'fw', 'fb'], ['y'], [attr.float('alpha', 1), attr.float('beta', 1), attr.int('transB', 1)], { name: 'fc' }),
    ],
    valueInfo: valueInfo ? [tensorInfo('act', DataType.FLOAT, ['N', 4, 8, 8])] : [],
  });
  const model = makeModel({ graph, opset: 17 });
  const reference = (x: Float32Array, n: number) => {
    const conv = conv2d(x, [n, 3, 8, 8], w, b, 4, 3, 1);
    const act = relu(conv);
    const pooled = maxPool2(act, [n, 4, 8, 8]);
    return { conv, act, pooled, y: gemmT(pooled, n, 64, fw, fb, 5) };
  };
  const input = (n: number) => rand(n * 3 * 8 * 8, 1);
  return { model, reference, input };
}

async function run(bytes: Uint8Array, feeds: Record<string, ort.Tensor>) {
  const session = await ort.InferenceSession.create(bytes);
  try {
    return { outputs: await session.run(feeds), names: [...session.outputNames] };
  } finally {
    await session.release();
  }
}

// ─── Codec ──────────────────────────────────────────────────────────────────────────────────

describe('ONNX codec (proto.ts)', () => {
  it('round-trips the committed demo model byte for byte, with raw_data as views', { skip: !existsSync(DEMO) && 'studies/demo/model.onnx not built' }, () => {
    const bytes = readFileSync(DEMO);
    const model = decodeModel(bytes);
    assert.equal(model.producer_name, 'legible');
    assert.deepEqual(model.opset_import, [{ domain: '', version: 17 }]);
    const conv1 = model.graph!.initializer!.find((t) => t.name === 'conv1.weight')!;
    assert.equal(conv1.raw_data!.buffer, bytes.buffer, 'raw_data should be a view into the file bytes, not a copy');
    assert.deepEqual(conv1.dims, [16, 1, 3, 3]);
    assert.equal(tensorToFloat32(conv1).length, 144);
    assert.ok(Buffer.from(encodeModel(model)).equals(bytes), 'decode → encode changed the bytes');
  });

  it('round-trips byte for byte a model serialised by onnxruntime (C++ protobuf, a canonical encoder)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'legible-onnx-'));
    try {
      for (const level of ['basic', 'all'] as const) {
        const path = join(dir, `${level}.onnx`);
        const session = await ort.InferenceSession.create(encodeModel(tinyNet(1).model), { graphOptimizationLevel: level, optimizedModelFilePath: path, logSeverityLevel: 3 });
        await session.release();
        const saved = readFileSync(path);
        const model = decodeModel(saved);
        assert.ok(model.graph?.node?.length, 'decoded graph has nodes');
        assert.ok(Buffer.from(encodeModel(model)).equals(saved), `onnxruntime's ${level}-optimised file changed in the round trip`);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('keeps unknown fields, at any depth, and writes them back', () => {
    const str = (s: string) => [s.length, ...Buffer.from(s)];
    // A hand-written ModelProto: fields in canonical order, unknown fields last in their message.
    const node = [
      0x0a, ...str('x'), // input "x"
      0x12, ...str('y'), // output "y"
      0x22, ...str('Relu'), // op_type
      0x98, 0x06, 0x05, // field 99, varint 5 (unknown)
      0xa5, 0x06, 0x01, 0x02, 0x03, 0x04, // field 100, fixed32 (unknown)
    ];
    const graph = [0x0a, node.length, ...node, 0x12, ...str('g')];
    const bytes = Uint8Array.from([
      0x08, 0x08, // ir_version 8
      0x12, ...str('hand'), // producer_name
      0x3a, graph.length, ...graph, // graph
      0x42, 0x04, 0x0a, 0x00, 0x10, 0x11, // opset_import { domain "" version 17 }
      0xc2, 0x3e, ...str('hello'), // field 1000, length-delimited (unknown)
      0xcb, 0x3e, 0x08, 0x01, 0xcc, 0x3e, // field 1001, a group holding field 1 = 1 (unknown)
    ]);
    const model = decodeModel(bytes);
    assert.equal(model.ir_version, 8);
    assert.equal(model.producer_name, 'hand');
    assert.deepEqual(model.opset_import, [{ domain: '', version: 17 }]);
    assert.deepEqual(model.$unknown!.map((u) => [u.no, u.wireType, u.bytes.length]), [[1000, 2, 8], [1001, 3, 6]]);
    const n = model.graph!.node![0];
    assert.equal(n.op_type, 'Relu');
    assert.deepEqual(n.$unknown!.map((u) => [u.no, u.wireType]), [[99, 0], [100, 5]]);
    assert.deepEqual([...encodeModel(model)], [...bytes]);

    // Edit a known field: the unknown ones survive.
    model.producer_name = 'edited';
    const again = decodeModel(encodeModel(model));
    assert.equal(again.producer_name, 'edited');
    assert.deepEqual(Buffer.from(again.$unknown![0].bytes).subarray(3).toString(), 'hello');
    assert.deepEqual(again.graph!.node![0].$unknown!.map((u) => u.no), [99, 100]);
  });

  it('keeps int64 values exact: numbers where safe, bigint beyond', () => {
    const big = [0, 1, -1, 2 ** 31, -(2 ** 31), 2 ** 53 - 1, -(2 ** 53 - 1), 2n ** 53n, 2n ** 63n - 1n, -(2n ** 63n)];
    const t: TensorProto = { dims: [2, 5], data_type: DataType.INT64, int64_data: big };
    const back = decodeMessage('TensorProto', encodeMessage('TensorProto', t));
    assert.deepEqual(back.int64_data, big);
    assert.equal(typeof back.int64_data![5], 'number');
    assert.equal(typeof back.int64_data![7], 'bigint');
    // A negative int32 takes 10 bytes on the wire (sign-extended), like protobuf's encoders.
    const neg = encodeMessage('TypeProto', { tensor_type: { elem_type: -1 } });
    assert.equal(neg.length, 1 + 1 + 1 + 10); // tag, length, tag, 10-byte varint
    assert.equal(decodeMessage('TypeProto', neg).tensor_type!.elem_type, -1);
  });

  it('reads repeated numeric fields packed or not, and writes them as onnx.proto declares', () => {
    // dims (field 1) unpacked ×2, then dims packed; float_data (field 4) packed.
    const bytes = Uint8Array.from([0x08, 0x02, 0x08, 0x03, 0x0a, 0x01, 0x01, 0x22, 0x08, 0, 0, 0x80, 0x3f, 0, 0, 0, 0x40]);
    const t = decodeMessage('TensorProto', bytes);
    assert.deepEqual(t.dims, [2, 3, 1]);
    assert.ok(t.float_data instanceof Float32Array);
    assert.deepEqual([...t.float_data], [1, 2]);
    assert.deepEqual([...encodeMessage('TensorProto', t)], [0x08, 0x02, 0x08, 0x03, 0x08, 0x01, 0x22, 0x08, 0, 0, 0x80, 0x3f, 0, 0, 0, 0x40]);
  });

  it('builds attributes of every type and reads them back', () => {
    const t = float32Tensor('t', [2], [1.5, -2]);
    const g = makeGraph({ name: 'sub', inputs: [tensorInfo('a')], outputs: [tensorInfo('b')], nodes: [node('Identity', ['a'], ['b'])] });
    const sparse = { values: float32Tensor('v', [1], [3]), indices: int64Tensor('i', [1], [4]), dims: [10] };
    const tp = tensorType(DataType.INT64, ['N', 3, null]);
    const attrs = [
      attr.float('f', 0.25), attr.int('i', -7), attr.string('s', 'héllo'), attr.tensor('t', t), attr.graph('g', g),
      attr.sparseTensor('st', sparse), attr.typeProto('tp', tp), attr.floats('fs', [1, 2.5]), attr.ints('is', [1, -2, 2n ** 62n]),
      attr.strings('ss', ['a', 'bc']), attr.tensors('ts', [t, t]), attr.graphs('gs', [g]), attr.sparseTensors('sts', [sparse]), attr.typeProtos('tps', [tp]),
    ];
    const n = node('Custom', ['x'], ['y'], attrs, { domain: 'legible.test' });
    const back = decodeMessage('NodeProto', encodeMessage('NodeProto', n));
    assert.equal(back.domain, 'legible.test');
    assert.deepEqual(back.attribute!.map((a) => a.type), [1, 2, 3, 4, 5, 11, 13, 6, 7, 8, 9, 10, 12, 14]);
    const value = (name: string) => attributeValue(back.attribute!.find((a) => a.name === name)!);
    assert.equal(value('f'), 0.25);
    assert.equal(value('i'), -7);
    assert.equal(value('s'), 'héllo');
    assert.deepEqual([...tensorToFloat32(value('t') as TensorProto)], [1.5, -2]);
    assert.equal((value('g') as { node: { op_type: string }[] }).node[0].op_type, 'Identity');
    assert.deepEqual(value('fs'), [1, 2.5]);
    assert.deepEqual(value('is'), [1, -2, 2n ** 62n]);
    assert.deepEqual(value('ss'), ['a', 'bc']);
    assert.equal((value('ts') as TensorProto[]).length, 2);
    assert.deepEqual((value('tp') as { tensor_type: { shape: unknown } }).tensor_type.shape, { dim: [{ dim_param: 'N' }, { dim_value: 3 }, {}] });
    assert.equal(AttributeType.SPARSE_TENSORS, 12);
  });

  it('reads tensors from raw_data or typed fields; rejects what it cannot read', () => {
    assert.deepEqual([...tensorToFloat32({ dims: [3], data_type: DataType.FLOAT, float_data: Float32Array.of(1, 2, 3) })], [1, 2, 3]);
    assert.deepEqual([...tensorToFloat32(float32Tensor('a', [1, 2], [0.5, 8]))], [0.5, 8]);
    assert.deepEqual([...tensorToFloat32(int64Tensor('b', [2], [-3, 5]))], [-3, 5]);
    assert.deepEqual([...tensorToFloat32({ dims: [2], data_type: DataType.FLOAT16, raw_data: Uint8Array.of(0x00, 0x3c, 0x00, 0xc0) })], [1, -2]);
    assert.throws(() => tensorToFloat32({ dims: [4], data_type: DataType.FLOAT, float_data: Float32Array.of(1) }), /dims say 4 values, data holds 1/);
    assert.throws(() => tensorToFloat32({ name: 'w', dims: [1], data_type: 1, data_location: 1, external_data: [{ key: 'location', value: 'w.bin' }] }), /external file \(w\.bin\)/);
    assert.throws(() => float32Tensor('c', [2, 2], [1, 2, 3]), /hold 4 values, got 3/);
    assert.throws(() => decodeModel(Uint8Array.of(0x0a, 0x05, 0x01)), ProtoError);
    assert.throws(() => encodeModel({ graph: { nodes: [] } } as unknown as ModelProto), /GraphProto has no field "nodes"/);
  });

  it('builds a model that onnxruntime runs, matching an independent computation to 1e-5', async () => {
    const { model, reference, input } = tinyNet(7);
    const x = input(3);
    const { outputs } = await run(encodeModel(model), { x: new ort.Tensor('float32', x, [3, 3, 8, 8]) });
    assert.deepEqual(outputs.y.dims, [3, 5]);
    const d = maxAbsDiff(outputs.y.data as Float32Array, reference(x, 3).y);
    assert.ok(d < 1e-5, `max |difference| ${d}`);
    assert.throws(() => makeGraph({ name: 'bad', inputs: [], outputs: [tensorInfo('y')], nodes: [node('Relu', ['nope'], ['y'])] }), /reads "nope"/);
  });
});

// ─── Taps ───────────────────────────────────────────────────────────────────────────────────

describe('taps (taps.ts)', () => {
  it('lists every tensor with its producer, shape where declared, and whether it can be tapped', () => {
    const { model } = tinyNet(1, { valueInfo: true });
    const list = listTensors(model);
    const by = new Map(list.map((t) => [t.name, t]));
    assert.deepEqual(list.filter((t) => t.tappable).map((t) => t.name), ['x', 'conv', 'act', 'pooled', 'flat', 'y']);
    assert.deepEqual(by.get('conv'), { name: 'conv', kind: 'node', op: 'Conv', node: 'conv_node', tappable: true, output: false, constant: false });
    assert.deepEqual(by.get('act')!.shape, ['N', 4, 8, 8]);
    assert.equal(by.get('y')!.output, true);
    assert.deepEqual(by.get('w'), { name: 'w', kind: 'initializer', op: 'initializer', node: '', type: 'float32', shape: [4, 3, 3, 3], tappable: false, output: false, constant: true });
  });

  it('marks tensors computed from weights alone as constants (as exporters leave them)', () => {
    const model = makeModel({
      graph: makeGraph({
        name: 'folded',
        inputs: [tensorInfo('x', DataType.FLOAT, ['N', 2])],
        outputs: [tensorInfo('y', DataType.FLOAT, ['N', 2])],
        initializers: [float32Tensor('w', [2], [1, 2])],
        nodes: [
          node('Identity', ['w'], ['w_folded'], [], { name: 'fold' }),
          node('Constant', [], ['one'], [attr.tensor('value', float32Tensor('', [1], [1]))], { name: 'one' }),
          node('Add', ['w_folded', 'one'], ['w_plus'], [], { name: 'shift' }),
          node('Mul', ['x', 'w_plus'], ['y'], [], { name: 'scale' }),
        ],
      }),
    });
    const by = new Map(listTensors(model).map((t) => [t.name, t]));
    assert.deepEqual(['w_folded', 'one', 'w_plus', 'y'].map((n) => by.get(n)!.constant), [true, true, true, false]);
  });

  it('exposes intermediate tensors whose values equal a direct computation, keeping the outputs', async () => {
    const { model, reference, input } = tinyNet(3);
    const x = input(2);
    const tapped = addTaps(encodeModel(model), ['conv', 'pooled', 'act', 'conv']);
    const { outputs, names } = await run(tapped, { x: new ort.Tensor('float32', x, [2, 3, 8, 8]) });
    assert.deepEqual(names, ['y', 'conv', 'pooled', 'act']);
    const ref = reference(x, 2);
    assert.deepEqual(outputs.pooled.dims, [2, 4, 4, 4]);
    for (const name of ['y', 'conv', 'act', 'pooled'] as const) {
      const d = maxAbsDiff(outputs[name].data as Float32Array, ref[name]);
      assert.ok(d < 1e-5, `${name}: max |difference| ${d}`);
    }
  });

  it('reduces a tap to its spatial mean and max in the graph and runs nothing after it', async () => {
    const { model, reference, input } = tinyNet(4);
    const x = input(3);
    const reduced = addReducedTaps(encodeModel(model), [{ tensor: 'act', rank: 4 }]);
    const graph = decodeModel(reduced).graph!;
    // The pooling, reshape and classifier after the tap are gone, and their weights with them.
    assert.deepEqual(graph.node!.map((n) => n.op_type), ['Conv', 'Relu', 'GlobalAveragePool', 'Flatten', 'GlobalMaxPool', 'Flatten']);
    assert.deepEqual(graph.initializer!.map((t) => t.name).sort(), ['b', 'w']);
    const { outputs, names } = await run(reduced, { x: new ort.Tensor('float32', x, [3, 3, 8, 8]) });
    assert.deepEqual(names, [reducedName('act', 'mean'), reducedName('act', 'max')]);
    const act = reference(x, 3).act;
    const mean = new Float32Array(3 * 4);
    const max = new Float32Array(3 * 4).fill(-Infinity);
    for (let i = 0; i < 3 * 4; i++) {
      for (let p = 0; p < 64; p++) {
        mean[i] += act[i * 64 + p] / 64;
        max[i] = Math.max(max[i], act[i * 64 + p]);
      }
    }
    assert.deepEqual(outputs[names[0]].dims, [3, 4]);
    assert.ok(maxAbsDiff(outputs[names[0]].data as Float32Array, mean) < 1e-5);
    assert.ok(maxAbsDiff(outputs[names[1]].data as Float32Array, max) < 1e-5);
  });

  it('outputs the taps alone, without the layers after them, with the values of the whole model', async () => {
    const { model, reference, input } = tinyNet(5);
    const x = input(2);
    const bytes = tapsOnly(encodeModel(model), ['act', 'conv']);
    assert.deepEqual(decodeModel(bytes).graph!.node!.map((n) => n.op_type), ['Conv', 'Relu']);
    const { outputs, names } = await run(bytes, { x: new ort.Tensor('float32', x, [2, 3, 8, 8]) });
    assert.deepEqual(names, ['act', 'conv']);
    const ref = reference(x, 2);
    for (const name of ['conv', 'act'] as const) assert.ok(maxAbsDiff(outputs[name].data as Float32Array, ref[name]) < 1e-5, name);
  });

  it('prunes a graph to what its outputs need, counting what an If branch reads from the outer graph', () => {
    // A branch reads an outer tensor by name (makeGraph would refuse it as unprovided).
    const branch = (name: string, read: string) => ({ name, node: [node('Identity', [read], [`${name}_out`])], output: [tensorInfo(`${name}_out`, DataType.FLOAT, [2])] });
    const graph = makeGraph({
      name: 'if',
      inputs: [tensorInfo('x', DataType.FLOAT, [2]), tensorInfo('cond', DataType.BOOL, [])],
      outputs: [tensorInfo('y', DataType.FLOAT, [2])],
      initializers: [float32Tensor('k', [2], [1, 2]), float32Tensor('unused', [2], [3, 4])],
      nodes: [
        node('Relu', ['x'], ['read_by_then']),
        node('Mul', ['x', 'k'], ['read_by_else']),
        node('Add', ['x', 'unused'], ['dead']),
        node('If', ['cond'], ['y'], [attr.graph('then_branch', branch('then', 'read_by_then')), attr.graph('else_branch', branch('else', 'read_by_else'))]),
      ],
    });
    const pruned = pruneGraph(graph);
    assert.deepEqual(pruned.node!.map((n) => n.op_type), ['Relu', 'Mul', 'If']);
    assert.deepEqual(pruned.initializer!.map((t) => t.name), ['k']);
    assert.deepEqual(pruned.input, graph.input);
  });

  it('names the nearest tensors when a name is wrong, and refuses initializers', () => {
    const bytes = encodeModel(tinyNet(1).model);
    assert.throws(
      () => addTaps(bytes, ['act', 'pooledd']),
      (e: Error) => {
        assert.match(e.message, /no tensor "pooledd"/);
        assert.match(e.message, /Nearest names: "pooled", /);
        assert.equal(e.message.split('Nearest names: ')[1].split('\n')[0].split(', ').length, 5);
        assert.match(e.message, /legible layers model\.onnx/);
        return true;
      },
    );
    assert.throws(() => addTaps(bytes, ['fw']), /"fw" is an initializer/);
    assert.equal(editDistance('block2', 'blokc2'), 2);
    assert.equal(editDistance('', 'abc'), 3);
  });
});

// ─── legible layers ─────────────────────────────────────────────────────────────────────────

async function capture(fn: () => Promise<number>): Promise<{ code: number; out: string }> {
  const lines: string[] = [];
  const original = console.log;
  console.log = (...args: unknown[]) => void lines.push(args.join(' '));
  try {
    return { code: await fn(), out: lines.join('\n') };
  } finally {
    console.log = original;
  }
}

describe('legible layers', () => {
  it('infers shapes from the graph, the batch dynamic, and asks for sizes it cannot infer', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'legible-layers-'));
    try {
      const file = join(dir, 'tiny.onnx');
      (await import('node:fs')).writeFileSync(file, encodeModel(tinyNet(1).model));
      const { code, out } = await capture(() => layers.run([file]));
      assert.equal(code, 0);
      assert.match(out, /^pooled\s+MaxPool\s+float32\s+\[N, 4, 4, 4\]\s+nchw\s+-$/m);
      assert.match(out, /^y \(output\)\s+Gemm\s+float32\s+\[N, 5\]\s+nchw/m);
      assert.doesNotMatch(out, /measured by onnxruntime/);
      assert.doesNotMatch(out, /^w\s/m);

      // A second dynamic dimension: say so, and accept --input-shape.
      const dyn = tinyNet(1).model;
      dyn.graph!.input = [tensorInfo('x', DataType.FLOAT, ['N', 3, 'H', 'W'])];
      (await import('node:fs')).writeFileSync(file, encodeModel(dyn));
      const unknown = await capture(() => layers.run([file]));
      assert.match(unknown.out, /dimension #2 besides the batch is not fixed/);
      assert.match(unknown.out, /--input-shape x=1,3,224,224/);
      const given = await capture(() => layers.run([file, '--input-shape', '2,3,8,8', '--json']));
      const json = JSON.parse(given.out);
      assert.deepEqual(json.tensors.find((t: { name: string }) => t.name === 'act').shape, [2, 4, 8, 8]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('lists the demo model from its declared shapes', { skip: !existsSync(DEMO) && 'studies/demo/model.onnx not built' }, async () => {
    const { code, out } = await capture(() => layers.run([DEMO]));
    assert.equal(code, 0);
    assert.match(out, /^block2\s+Relu\s+float32\s+\[N, 32, 14, 14\]\s+nchw/m);
    assert.match(out, /^logits \(output\)\s+Gemm\s+float32\s+\[N, 10\]\s+nchw/m);
  });
});
