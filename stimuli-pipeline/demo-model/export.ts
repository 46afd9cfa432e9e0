// The demo CNN as an ONNX graph (opset 17), built with the project's own codec, and back.
import { attr, makeGraph, makeModel, node, tensorInfo } from '../src/onnx/graph.ts';
import { DataType, float32Tensor, tensorToFloat32, type ModelProto } from '../src/onnx/proto.ts';
import { INFER_PARAMS, paramView } from './net.ts';

export const INPUT_NAME = 'image';
export const OUTPUT_NAME = 'logits';
/** Tensors a study can tap, with their shapes. */
export const BLOCKS = { block1: [16, 28, 28], block2: [32, 14, 14], block3: [64, 7, 7] } as const;

/** The ONNX model computing the folded network `params` (layout INFER_PARAMS). */
export function buildDemoModel(params: Float32Array, opts: { doc?: string; metadata?: Record<string, string> } = {}): ModelProto {
  const init = INFER_PARAMS.params.map((p) => float32Tensor(p.name, p.shape, paramView(params, INFER_PARAMS, p.name)));
  const conv = (l: number, input: string) =>
    node('Conv', [input, `conv${l}.weight`, `conv${l}.bias`], [`conv${l}`], [
      attr.ints('dilations', [1, 1]),
      attr.int('group', 1),
      attr.ints('kernel_shape', [3, 3]),
      attr.ints('pads', [1, 1, 1, 1]),
      attr.ints('strides', [1, 1]),
    ], { name: `conv${l}` });
  const relu = (l: number) => node('Relu', [`conv${l}`], [`block${l}`], [], { name: `relu${l}` });
  const pool = (l: number) => node('MaxPool', [`block${l}`], [`pool${l}`], [attr.ints('kernel_shape', [2, 2]), attr.ints('strides', [2, 2])], { name: `pool${l}` });
  const nodes = [
    conv(1, INPUT_NAME), relu(1), pool(1),
    conv(2, 'pool1'), relu(2), pool(2),
    conv(3, 'pool2'), relu(3),
    node('GlobalAveragePool', ['block3'], ['gap'], [], { name: 'gap' }),
    node('Flatten', ['gap'], ['features'], [attr.int('axis', 1)], { name: 'flatten' }),
    node('Gemm', ['features', 'fc.weight', 'fc.bias'], [OUTPUT_NAME], [attr.float('alpha', 1), attr.float('beta', 1), attr.int('transB', 1)], { name: 'fc' }),
  ];
  const f = DataType.FLOAT;
  const graph = makeGraph({
    name: 'legible-demo-fashion-mnist',
    nodes,
    inputs: [tensorInfo(INPUT_NAME, f, ['N', 1, 28, 28], 'Fashion-MNIST images, (pixel/255 − 0.2860)/0.3530')],
    outputs: [tensorInfo(OUTPUT_NAME, f, ['N', 10], 'class scores (softmax not applied)')],
    initializers: init,
    valueInfo: [
      tensorInfo('conv1', f, ['N', 16, 28, 28]),
      tensorInfo('block1', f, ['N', 16, 28, 28]),
      tensorInfo('pool1', f, ['N', 16, 14, 14]),
      tensorInfo('conv2', f, ['N', 32, 14, 14]),
      tensorInfo('block2', f, ['N', 32, 14, 14]),
      tensorInfo('pool2', f, ['N', 32, 7, 7]),
      tensorInfo('conv3', f, ['N', 64, 7, 7]),
      tensorInfo('block3', f, ['N', 64, 7, 7]),
      tensorInfo('gap', f, ['N', 64, 1, 1]),
      tensorInfo('features', f, ['N', 64]),
    ],
  });
  return makeModel({ graph, opset: 17, doc: opts.doc, metadata: opts.metadata });
}

/** The folded parameters (layout INFER_PARAMS) read back from a model's initializers. */
export function paramsFromModel(model: ModelProto): Float32Array {
  const out = new Float32Array(INFER_PARAMS.total);
  const inits = new Map((model.graph?.initializer ?? []).map((t) => [t.name, t]));
  for (const p of INFER_PARAMS.params) {
    const t = inits.get(p.name);
    if (!t) throw new Error(`model has no initializer "${p.name}"`);
    const v = tensorToFloat32(t);
    if (v.length !== p.size) throw new Error(`initializer "${p.name}" has ${v.length} values, expected ${p.size}`);
    out.set(v, p.offset);
  }
  return out;
}
