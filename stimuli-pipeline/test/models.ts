// Tiny random-weight models shaped like the architectures this field studies, built with our graph
// builders: a ResNet (BatchNorm, residual additions, a strided projection) and a VGG (conv stacks,
// max pooling, a fully connected head). Real ONNX files, run by onnxruntime.
import { rng } from '@legible/studies';
import { attr, makeGraph, makeModel, node, tensorInfo } from '../src/onnx/graph.ts';
import { DataType, encodeModel, float32Tensor, type NodeProto, type TensorProto } from '../src/onnx/proto.ts';

class Builder {
  nodes: NodeProto[] = [];
  inits: TensorProto[] = [];
  private r;
  private n = 0;
  constructor(seed: number) {
    this.r = rng(seed);
  }
  private weights(name: string, dims: number[], scale: number): string {
    const size = dims.reduce((a, b) => a * b, 1);
    this.inits.push(float32Tensor(name, dims, Float32Array.from({ length: size }, () => scale * this.r.normal())));
    return name;
  }
  conv(x: string, cin: number, cout: number, opts: { k?: number; stride?: number; out?: string } = {}): string {
    const k = opts.k ?? 3;
    const id = ++this.n;
    const w = this.weights(`conv${id}.w`, [cout, cin, k, k], Math.sqrt(2 / (cin * k * k)));
    const b = this.weights(`conv${id}.b`, [cout], 0.05);
    const out = opts.out ?? `conv${id}`;
    const pad = Math.floor(k / 2);
    this.nodes.push(node('Conv', [x, w, b], [out], [attr.ints('pads', [pad, pad, pad, pad]), attr.ints('strides', [opts.stride ?? 1, opts.stride ?? 1])], { name: `conv${id}` }));
    return out;
  }
  bn(x: string, c: number): string {
    const id = ++this.n;
    const param = (what: string, value: () => number) => {
      const name = `bn${id}.${what}`;
      this.inits.push(float32Tensor(name, [c], Float32Array.from({ length: c }, value)));
      return name;
    };
    const inputs = [
      x,
      param('scale', () => 1 + 0.1 * this.r.normal()),
      param('bias', () => 0.1 * this.r.normal()),
      param('mean', () => 0.1 * this.r.normal()),
      param('var', () => 1 + 0.2 * this.r.next()),
    ];
    this.nodes.push(node('BatchNormalization', inputs, [`bn${id}`], [attr.float('epsilon', 1e-5)], { name: `bn${id}` }));
    return `bn${id}`;
  }
  op(type: string, inputs: string[], out?: string, attrs = [] as ReturnType<typeof attr.int>[]): string {
    const id = ++this.n;
    const name = out ?? `${type.toLowerCase()}${id}`;
    this.nodes.push(node(type, inputs, [name], attrs, { name: `${type.toLowerCase()}${id}` }));
    return name;
  }
  gemm(x: string, cin: number, cout: number, out?: string): string {
    const id = ++this.n;
    const w = this.weights(`fc${id}.w`, [cout, cin], Math.sqrt(2 / cin));
    const b = this.weights(`fc${id}.b`, [cout], 0.05);
    return this.op('Gemm', [x, w, b], out, [attr.int('transB', 1)]);
  }
}

/** ResNet-shaped: stem → block1 (residual, 8 ch) → block2 (residual with stride-2 projection, 16 ch) → GAP → fc. Taps: block1, block2. */
export function tinyResNet(seed: number, size = 16): Uint8Array {
  const b = new Builder(seed);
  const stem = b.op('Relu', [b.bn(b.conv('input', 3, 8), 8)]);
  // Block 1: two convs and an identity skip.
  const r1 = b.op('Relu', [b.bn(b.conv(stem, 8, 8), 8)]);
  const y1 = b.bn(b.conv(r1, 8, 8), 8);
  const block1 = b.op('Relu', [b.op('Add', [y1, stem])], 'block1');
  // Block 2: stride 2, with a 1×1 projection on the skip.
  const r2 = b.op('Relu', [b.bn(b.conv(block1, 8, 16, { stride: 2 }), 16)]);
  const y2 = b.bn(b.conv(r2, 16, 16), 16);
  const skip = b.bn(b.conv(block1, 8, 16, { k: 1, stride: 2 }), 16);
  const block2 = b.op('Relu', [b.op('Add', [y2, skip])], 'block2');
  const pooled = b.op('Flatten', [b.op('GlobalAveragePool', [block2])]);
  b.gemm(pooled, 16, 5, 'logits');
  return encodeModel(
    makeModel({
      graph: makeGraph({
        name: 'tiny_resnet',
        inputs: [tensorInfo('input', DataType.FLOAT, ['N', 3, size, size])],
        outputs: [tensorInfo('logits', DataType.FLOAT, ['N', 5])],
        initializers: b.inits,
        nodes: b.nodes,
      }),
    }),
  );
}

/** VGG-shaped: (conv-relu ×2, maxpool) ×2 → flatten → fc-relu → fc. Taps: pool1, pool2, fc1. Fixed batch 1. */
export function tinyVgg(seed: number, size = 16, batch: number | 'N' = 'N'): Uint8Array {
  const b = new Builder(seed);
  const c1 = b.op('Relu', [b.conv(b.op('Relu', [b.conv('input', 3, 6)]), 6, 6)]);
  const pool1 = b.op('MaxPool', [c1], 'pool1', [attr.ints('kernel_shape', [2, 2]), attr.ints('strides', [2, 2])]);
  const c2 = b.op('Relu', [b.conv(b.op('Relu', [b.conv(pool1, 6, 12)]), 12, 12)]);
  const pool2 = b.op('MaxPool', [c2], 'pool2', [attr.ints('kernel_shape', [2, 2]), attr.ints('strides', [2, 2])]);
  const flat = b.op('Flatten', [pool2]);
  const fc1 = b.op('Relu', [b.gemm(flat, 12 * (size / 4) * (size / 4), 10)], 'fc1');
  b.gemm(fc1, 10, 4, 'logits');
  return encodeModel(
    makeModel({
      graph: makeGraph({
        name: 'tiny_vgg',
        inputs: [tensorInfo('input', DataType.FLOAT, [batch, 3, size, size])],
        outputs: [tensorInfo('logits', DataType.FLOAT, [batch, 4])],
        initializers: b.inits,
        nodes: b.nodes,
      }),
    }),
  );
}
