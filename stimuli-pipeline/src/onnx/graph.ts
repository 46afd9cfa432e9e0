// Small builders for ONNX graphs: nodes with typed attributes, value infos, initializers and a whole
// model. They produce the plain message objects of proto.ts, so a built model is encoded with
// encodeModel and a decoded one can be edited with the same helpers.
//
//   const model = makeModel({
//     graph: makeGraph({
//       name: 'tiny',
//       inputs: [tensorInfo('x', DataType.FLOAT, ['N', 1, 28, 28])],
//       outputs: [tensorInfo('y', DataType.FLOAT, ['N', 4, 28, 28])],
//       initializers: [float32Tensor('w', [4, 1, 3, 3], weights)],
//       nodes: [node('Conv', ['x', 'w'], ['y'], [attr.ints('pads', [1, 1, 1, 1])], { name: 'conv' })],
//     }),
//   });
import {
  AttributeType,
  DataType,
  type AttributeProto,
  type GraphProto,
  type Int64,
  type ModelProto,
  type NodeProto,
  type OperatorSetIdProto,
  type SparseTensorProto,
  type TensorProto,
  type TensorShapeDimension,
  type TypeProto,
  type ValueInfoProto,
} from './proto.ts';

export const PRODUCER_NAME = 'legible';
export const PRODUCER_VERSION = '0.1.0';
/** The opset the project targets by default, and the IR version that goes with it. */
export const DEFAULT_OPSET = 17;
const IR_VERSION_FOR_OPSET: [opset: number, ir: number][] = [
  [21, 10],
  [19, 9],
  [15, 8],
  [13, 7],
  [11, 6],
];

/** The IR version that ONNX released together with an opset (the oldest that can hold it). */
export function irVersionFor(opset: number): number {
  for (const [o, ir] of IR_VERSION_FOR_OPSET) if (opset >= o) return ir;
  return 3;
}

// ─── Attributes ─────────────────────────────────────────────────────────────────────────────

const text = new TextEncoder();
const bytesOf = (s: string | Uint8Array) => (typeof s === 'string' ? text.encode(s) : s);

/**
 * Attribute builders, one per AttributeType, so that 1 (INT) and 1.0 (FLOAT) cannot be confused:
 * `attr.ints('pads', [1, 1, 1, 1])`, `attr.float('alpha', 1)`, `attr.string('auto_pad', 'VALID')`.
 */
export const attr = {
  float: (name: string, value: number): AttributeProto => ({ name, f: value, type: AttributeType.FLOAT }),
  int: (name: string, value: Int64): AttributeProto => ({ name, i: value, type: AttributeType.INT }),
  string: (name: string, value: string | Uint8Array): AttributeProto => ({ name, s: bytesOf(value), type: AttributeType.STRING }),
  tensor: (name: string, value: TensorProto): AttributeProto => ({ name, t: value, type: AttributeType.TENSOR }),
  graph: (name: string, value: GraphProto): AttributeProto => ({ name, g: value, type: AttributeType.GRAPH }),
  sparseTensor: (name: string, value: SparseTensorProto): AttributeProto => ({ name, sparse_tensor: value, type: AttributeType.SPARSE_TENSOR }),
  typeProto: (name: string, value: TypeProto): AttributeProto => ({ name, tp: value, type: AttributeType.TYPE_PROTO }),
  floats: (name: string, values: readonly number[]): AttributeProto => ({ name, floats: [...values], type: AttributeType.FLOATS }),
  ints: (name: string, values: readonly Int64[]): AttributeProto => ({ name, ints: [...values], type: AttributeType.INTS }),
  strings: (name: string, values: readonly (string | Uint8Array)[]): AttributeProto => ({ name, strings: values.map(bytesOf), type: AttributeType.STRINGS }),
  tensors: (name: string, values: readonly TensorProto[]): AttributeProto => ({ name, tensors: [...values], type: AttributeType.TENSORS }),
  graphs: (name: string, values: readonly GraphProto[]): AttributeProto => ({ name, graphs: [...values], type: AttributeType.GRAPHS }),
  sparseTensors: (name: string, values: readonly SparseTensorProto[]): AttributeProto => ({ name, sparse_tensors: [...values], type: AttributeType.SPARSE_TENSORS }),
  typeProtos: (name: string, values: readonly TypeProto[]): AttributeProto => ({ name, type_protos: [...values], type: AttributeType.TYPE_PROTOS }),
};

/** An attribute's value in JS form (strings decoded as UTF-8), by its declared type. */
export function attributeValue(a: AttributeProto): unknown {
  const dec = new TextDecoder();
  switch (a.type) {
    case AttributeType.FLOAT: return a.f ?? 0;
    case AttributeType.INT: return a.i ?? 0;
    case AttributeType.STRING: return dec.decode(a.s ?? new Uint8Array());
    case AttributeType.TENSOR: return a.t;
    case AttributeType.GRAPH: return a.g;
    case AttributeType.SPARSE_TENSOR: return a.sparse_tensor;
    case AttributeType.TYPE_PROTO: return a.tp;
    case AttributeType.FLOATS: return a.floats ?? [];
    case AttributeType.INTS: return a.ints ?? [];
    case AttributeType.STRINGS: return (a.strings ?? []).map((s) => dec.decode(s));
    case AttributeType.TENSORS: return a.tensors ?? [];
    case AttributeType.GRAPHS: return a.graphs ?? [];
    case AttributeType.SPARSE_TENSORS: return a.sparse_tensors ?? [];
    case AttributeType.TYPE_PROTOS: return a.type_protos ?? [];
    default: throw new Error(`attribute "${a.name}" has no type`);
  }
}

/** The attribute of a node by name, if any. */
export function getAttribute(n: NodeProto, name: string): AttributeProto | undefined {
  return n.attribute?.find((a) => a.name === name);
}

// ─── Nodes ──────────────────────────────────────────────────────────────────────────────────

export interface NodeOptions {
  /** Node name; defaults to the first output's name. */
  name?: string;
  /** Operator set domain; omitted for the default ONNX domain. */
  domain?: string;
  doc?: string;
}

/**
 * A node: `node('Relu', ['x'], ['y'])`. Use '' for an omitted optional input.
 */
export function node(opType: string, inputs: readonly string[], outputs: readonly string[], attributes: readonly AttributeProto[] = [], opts: NodeOptions = {}): NodeProto {
  if (!outputs.length) throw new Error(`${opType} node needs at least one output`);
  const names = new Set<string>();
  for (const a of attributes) {
    if (!a.name) throw new Error(`${opType} node: attribute without a name`);
    if (names.has(a.name)) throw new Error(`${opType} node: attribute "${a.name}" given twice`);
    names.add(a.name);
  }
  const n: NodeProto = { input: [...inputs], output: [...outputs], name: opts.name ?? outputs[0], op_type: opType };
  if (attributes.length) n.attribute = [...attributes];
  if (opts.doc !== undefined) n.doc_string = opts.doc;
  if (opts.domain !== undefined && opts.domain !== '') n.domain = opts.domain;
  return n;
}

// ─── Types and value infos ──────────────────────────────────────────────────────────────────

/** A dimension: a number (fixed), a string (symbolic, e.g. "N"), or null (unknown). */
export type Dim = number | string | null;

export function tensorType(elemType: number, shape?: readonly Dim[]): TypeProto {
  const t: TypeProto = { tensor_type: { elem_type: elemType } };
  if (shape) {
    t.tensor_type!.shape = {
      dim: shape.map((d): TensorShapeDimension => {
        if (d === null) return {};
        if (typeof d === 'string') return { dim_param: d };
        if (!Number.isInteger(d) || d < 0) throw new Error(`dimension ${d} is not a whole number ≥ 0`);
        return { dim_value: d };
      }),
    };
  }
  return t;
}

/** A tensor-typed ValueInfoProto (graph input, output or value_info). Without a shape, rank is unknown. */
export function tensorInfo(name: string, elemType: number = DataType.FLOAT, shape?: readonly Dim[], doc?: string): ValueInfoProto {
  const v: ValueInfoProto = { name, type: tensorType(elemType, shape) };
  if (doc !== undefined) v.doc_string = doc;
  return v;
}

/** Element type and shape of a ValueInfoProto, where known. */
export function describeValue(v: ValueInfoProto | undefined): { elemType?: number; shape?: Dim[] } {
  const t = v?.type?.tensor_type;
  if (!t) return {};
  const shape = t.shape?.dim?.map((d): Dim => (d.dim_value !== undefined ? Number(d.dim_value) : d.dim_param !== undefined ? d.dim_param : null));
  return { elemType: t.elem_type, shape };
}

// ─── Graph and model ────────────────────────────────────────────────────────────────────────

export interface GraphSpec {
  name: string;
  nodes: readonly NodeProto[];
  inputs: readonly ValueInfoProto[];
  outputs: readonly ValueInfoProto[];
  initializers?: readonly TensorProto[];
  /** Types and shapes of intermediate tensors (optional; lets tools show shapes without running). */
  valueInfo?: readonly ValueInfoProto[];
  doc?: string;
}

/**
 * A graph. Checks what onnxruntime would otherwise report less clearly: every node input is a graph
 * input, an initializer or an earlier node's output (nodes must be in topological order), no tensor
 * is produced twice, and every graph output is produced.
 */
export function makeGraph(spec: GraphSpec): GraphProto {
  const known = new Set<string>(['']);
  for (const v of spec.inputs) known.add(v.name!);
  for (const t of spec.initializers ?? []) known.add(t.name!);
  for (const n of spec.nodes) {
    for (const i of n.input ?? []) {
      if (!known.has(i)) throw new Error(`graph "${spec.name}": node "${n.name}" (${n.op_type}) reads "${i}", which no earlier node, input or initializer provides`);
    }
    for (const o of n.output ?? []) {
      if (o !== '' && known.has(o)) throw new Error(`graph "${spec.name}": tensor "${o}" is produced twice`);
      known.add(o);
    }
  }
  for (const o of spec.outputs) {
    if (!known.has(o.name!)) throw new Error(`graph "${spec.name}": output "${o.name}" is not produced by any node`);
  }
  const g: GraphProto = { node: [...spec.nodes], name: spec.name };
  if (spec.initializers?.length) g.initializer = [...spec.initializers];
  if (spec.doc !== undefined) g.doc_string = spec.doc;
  g.input = [...spec.inputs];
  g.output = [...spec.outputs];
  if (spec.valueInfo?.length) g.value_info = [...spec.valueInfo];
  return g;
}

export interface ModelSpec {
  graph: GraphProto;
  /** Default-domain opset version (default 17), or the full list of opset imports. */
  opset?: number | readonly OperatorSetIdProto[];
  /** Defaults to the IR version released with the default-domain opset. */
  irVersion?: number;
  producerVersion?: string;
  doc?: string;
  modelVersion?: number;
  /** Free-form key/value metadata (kept in ModelProto.metadata_props, in the given order). */
  metadata?: Record<string, string>;
}

/** A model with producer "legible". */
export function makeModel(spec: ModelSpec): ModelProto {
  const opsets: OperatorSetIdProto[] =
    typeof spec.opset === 'object' ? spec.opset.map((o) => ({ ...o })) : [{ domain: '', version: spec.opset ?? DEFAULT_OPSET }];
  const main = opsets.find((o) => !o.domain);
  const m: ModelProto = {
    ir_version: spec.irVersion ?? irVersionFor(Number(main?.version ?? DEFAULT_OPSET)),
    producer_name: PRODUCER_NAME,
    producer_version: spec.producerVersion ?? PRODUCER_VERSION,
    graph: spec.graph,
    opset_import: opsets,
  };
  if (spec.modelVersion !== undefined) m.model_version = spec.modelVersion;
  if (spec.doc !== undefined) m.doc_string = spec.doc;
  if (spec.metadata) m.metadata_props = Object.entries(spec.metadata).map(([key, value]) => ({ key, value }));
  return m;
}
