// ONNX files, read and written without a protobuf library.
//
// The protobuf wire format is small: every field is a tag (field number << 3 | wire type) and a
// payload (varint, 8 bytes, length-delimited bytes, or 4 bytes). This module describes each
// ONNX message once, as a table of fields (number, name, type, label) taken from onnx.proto, and one
// generic reader and one generic writer walk those tables.
//
// Representation of decoded messages (plain objects, field names as in onnx.proto):
// - A field that is absent on the wire is absent from the object; a field that is present is set,
//   even when it holds its default value (proto2 presence: `domain: ""` is written back).
// - int64 / uint64 values are a `number` when they fit in ±(2^53 − 1) and a `bigint` otherwise
//   (type `Int64`); dims, opset versions and ir_version are therefore plain numbers in practice,
//   while e.g. INT64_MAX in a Slice attribute stays exact. The writer accepts either.
// - `bytes` fields (raw_data, AttributeProto.s, string_data) are Uint8Array *views* into the input:
//   a 100 MB raw_data is not copied. Keep the input bytes alive and unmodified while you use them.
// - Packed float / double / int32 data decode to Float32Array / Float64Array / Int32Array (copies);
//   other repeated scalars decode to arrays.
// - Fields this module does not know (newer ONNX versions, vendor extensions) are kept in
//   `$unknown` as their raw bytes, tag included, and written back unchanged.
//
// Round trips: the writer emits known fields in field-number order, each repeated numeric field
// packed or not as onnx.proto declares it, then the unknown fields in the order they were read.
// That is what the canonical encoders (protobuf C++/Python/Java, which write PyTorch's, onnx's and
// onnxruntime's files) do, so decode → encode of their output is byte-identical. A file whose
// fields were written in another order, or with a singular field repeated, decodes to the same
// values but re-encodes in canonical order.
//
// Field numbers follow onnx/onnx.in.proto (IR version 10+).

export type Int64 = number | bigint;

/** A field this module does not describe, kept verbatim (tag and payload). */
export interface UnknownField {
  no: number;
  wireType: number;
  bytes: Uint8Array;
}

interface Message {
  $unknown?: UnknownField[];
}

// ─── Message interfaces ─────────────────────────────────────────────────────────────────────

export interface ModelProto extends Message {
  ir_version?: Int64;
  opset_import?: OperatorSetIdProto[];
  producer_name?: string;
  producer_version?: string;
  domain?: string;
  model_version?: Int64;
  doc_string?: string;
  graph?: GraphProto;
  metadata_props?: StringStringEntryProto[];
  training_info?: TrainingInfoProto[];
  functions?: FunctionProto[];
  configuration?: DeviceConfigurationProto[];
}

export interface OperatorSetIdProto extends Message {
  domain?: string;
  version?: Int64;
}

export interface StringStringEntryProto extends Message {
  key?: string;
  value?: string;
}

export interface GraphProto extends Message {
  node?: NodeProto[];
  name?: string;
  initializer?: TensorProto[];
  sparse_initializer?: SparseTensorProto[];
  doc_string?: string;
  input?: ValueInfoProto[];
  output?: ValueInfoProto[];
  value_info?: ValueInfoProto[];
  quantization_annotation?: TensorAnnotation[];
  metadata_props?: StringStringEntryProto[];
}

export interface NodeProto extends Message {
  input?: string[];
  output?: string[];
  name?: string;
  op_type?: string;
  domain?: string;
  overload?: string;
  attribute?: AttributeProto[];
  doc_string?: string;
  metadata_props?: StringStringEntryProto[];
  device_configurations?: NodeDeviceConfigurationProto[];
}

export interface AttributeProto extends Message {
  name?: string;
  ref_attr_name?: string;
  doc_string?: string;
  type?: number;
  f?: number;
  i?: Int64;
  s?: Uint8Array;
  t?: TensorProto;
  g?: GraphProto;
  sparse_tensor?: SparseTensorProto;
  tp?: TypeProto;
  floats?: number[];
  ints?: Int64[];
  strings?: Uint8Array[];
  tensors?: TensorProto[];
  graphs?: GraphProto[];
  sparse_tensors?: SparseTensorProto[];
  type_protos?: TypeProto[];
}

export interface TensorProto extends Message {
  dims?: Int64[];
  data_type?: number;
  segment?: TensorSegment;
  float_data?: Float32Array;
  int32_data?: Int32Array;
  string_data?: Uint8Array[];
  int64_data?: Int64[];
  name?: string;
  doc_string?: string;
  raw_data?: Uint8Array;
  external_data?: StringStringEntryProto[];
  data_location?: number;
  double_data?: Float64Array;
  uint64_data?: Int64[];
  metadata_props?: StringStringEntryProto[];
}

export interface TensorSegment extends Message {
  begin?: Int64;
  end?: Int64;
}

export interface SparseTensorProto extends Message {
  values?: TensorProto;
  indices?: TensorProto;
  dims?: Int64[];
}

export interface ValueInfoProto extends Message {
  name?: string;
  type?: TypeProto;
  doc_string?: string;
  metadata_props?: StringStringEntryProto[];
}

export interface TypeProto extends Message {
  tensor_type?: TypeProtoTensor;
  sequence_type?: TypeProtoSequence;
  map_type?: TypeProtoMap;
  denotation?: string;
  opaque_type?: TypeProtoOpaque;
  sparse_tensor_type?: TypeProtoTensor;
  optional_type?: TypeProtoSequence;
}

/** TypeProto.Tensor (also the layout of TypeProto.SparseTensor). */
export interface TypeProtoTensor extends Message {
  elem_type?: number;
  shape?: TensorShapeProto;
}

/** TypeProto.Sequence (also the layout of TypeProto.Optional). */
export interface TypeProtoSequence extends Message {
  elem_type?: TypeProto;
}

export interface TypeProtoMap extends Message {
  key_type?: number;
  value_type?: TypeProto;
}

export interface TypeProtoOpaque extends Message {
  domain?: string;
  name?: string;
}

export interface TensorShapeProto extends Message {
  dim?: TensorShapeDimension[];
}

/** TensorShapeProto.Dimension: dim_value or dim_param (or neither: unknown). */
export interface TensorShapeDimension extends Message {
  dim_value?: Int64;
  dim_param?: string;
  denotation?: string;
}

export interface TensorAnnotation extends Message {
  tensor_name?: string;
  quant_parameter_tensor_names?: StringStringEntryProto[];
}

export interface TrainingInfoProto extends Message {
  initialization?: GraphProto;
  algorithm?: GraphProto;
  initialization_binding?: StringStringEntryProto[];
  update_binding?: StringStringEntryProto[];
}

export interface FunctionProto extends Message {
  name?: string;
  input?: string[];
  output?: string[];
  attribute?: string[];
  node?: NodeProto[];
  doc_string?: string;
  opset_import?: OperatorSetIdProto[];
  domain?: string;
  attribute_proto?: AttributeProto[];
  value_info?: ValueInfoProto[];
  overload?: string;
  metadata_props?: StringStringEntryProto[];
}

export interface DeviceConfigurationProto extends Message {
  name?: string;
  num_devices?: number;
  device?: string[];
}

export interface NodeDeviceConfigurationProto extends Message {
  configuration_id?: string;
  sharding_spec?: ShardingSpecProto[];
  pipeline_stage?: number;
}

export interface ShardingSpecProto extends Message {
  tensor_name?: string;
  device?: Int64[];
  index_to_device_group_map?: IntIntListEntryProto[];
  sharded_dim?: ShardedDimProto[];
}

export interface IntIntListEntryProto extends Message {
  key?: Int64;
  value?: Int64[];
}

export interface ShardedDimProto extends Message {
  axis?: Int64;
  simple_sharding?: SimpleShardedDimProto[];
}

export interface SimpleShardedDimProto extends Message {
  dim_value?: Int64;
  dim_param?: string;
  num_shards?: Int64;
}

// ─── Enums ──────────────────────────────────────────────────────────────────────────────────

/** TensorProto.DataType */
export const DataType = {
  UNDEFINED: 0,
  FLOAT: 1,
  UINT8: 2,
  INT8: 3,
  UINT16: 4,
  INT16: 5,
  INT32: 6,
  INT64: 7,
  STRING: 8,
  BOOL: 9,
  FLOAT16: 10,
  DOUBLE: 11,
  UINT32: 12,
  UINT64: 13,
  COMPLEX64: 14,
  COMPLEX128: 15,
  BFLOAT16: 16,
  FLOAT8E4M3FN: 17,
  FLOAT8E4M3FNUZ: 18,
  FLOAT8E5M2: 19,
  FLOAT8E5M2FNUZ: 20,
  UINT4: 21,
  INT4: 22,
  FLOAT4E2M1: 23,
  FLOAT8E8M0: 24,
  UINT2: 25,
  INT2: 26,
} as const;
export type DataType = (typeof DataType)[keyof typeof DataType];

/** A DataType's name as onnxruntime spells tensor types: "float32", "float64", "int64", "bool", … */
export function dataTypeName(t: number | undefined): string {
  if (t === DataType.FLOAT) return 'float32';
  if (t === DataType.DOUBLE) return 'float64';
  const entry = Object.entries(DataType).find(([, v]) => v === t);
  return entry ? entry[0].toLowerCase() : `type ${t}`;
}

/** AttributeProto.AttributeType */
export const AttributeType = {
  UNDEFINED: 0,
  FLOAT: 1,
  INT: 2,
  STRING: 3,
  TENSOR: 4,
  GRAPH: 5,
  FLOATS: 6,
  INTS: 7,
  STRINGS: 8,
  TENSORS: 9,
  GRAPHS: 10,
  SPARSE_TENSOR: 11,
  SPARSE_TENSORS: 12,
  TYPE_PROTO: 13,
  TYPE_PROTOS: 14,
} as const;
export type AttributeType = (typeof AttributeType)[keyof typeof AttributeType];

/** TensorProto.DataLocation */
export const DataLocation = { DEFAULT: 0, EXTERNAL: 1 } as const;

// ─── Descriptor tables ──────────────────────────────────────────────────────────────────────

type ScalarType = 'int32' | 'int64' | 'uint64' | 'enum' | 'bool' | 'float' | 'double' | 'string' | 'bytes';
type MessageName =
  | 'ModelProto'
  | 'OperatorSetIdProto'
  | 'StringStringEntryProto'
  | 'GraphProto'
  | 'NodeProto'
  | 'AttributeProto'
  | 'TensorProto'
  | 'TensorSegment'
  | 'SparseTensorProto'
  | 'ValueInfoProto'
  | 'TypeProto'
  | 'TypeProtoTensor'
  | 'TypeProtoSequence'
  | 'TypeProtoMap'
  | 'TypeProtoOpaque'
  | 'TensorShapeProto'
  | 'TensorShapeDimension'
  | 'TensorAnnotation'
  | 'TrainingInfoProto'
  | 'FunctionProto'
  | 'DeviceConfigurationProto'
  | 'NodeDeviceConfigurationProto'
  | 'ShardingSpecProto'
  | 'IntIntListEntryProto'
  | 'ShardedDimProto'
  | 'SimpleShardedDimProto';

/** optional: at most one; repeated: one tag per element; packed: one length-delimited run. */
type Label = 'optional' | 'repeated' | 'packed';
type Row = readonly [no: number, name: string, type: ScalarType | MessageName, label?: Label];

// One table per message: [field number, name, type, label]. Types starting with a capital letter
// are messages. Comments give the proto declaration where it is not obvious.
const TABLES: Record<MessageName, readonly Row[]> = {
  ModelProto: [
    [1, 'ir_version', 'int64'],
    [2, 'producer_name', 'string'],
    [3, 'producer_version', 'string'],
    [4, 'domain', 'string'],
    [5, 'model_version', 'int64'],
    [6, 'doc_string', 'string'],
    [7, 'graph', 'GraphProto'],
    [8, 'opset_import', 'OperatorSetIdProto', 'repeated'],
    [14, 'metadata_props', 'StringStringEntryProto', 'repeated'],
    [20, 'training_info', 'TrainingInfoProto', 'repeated'],
    [25, 'functions', 'FunctionProto', 'repeated'],
    [26, 'configuration', 'DeviceConfigurationProto', 'repeated'],
  ],
  OperatorSetIdProto: [
    [1, 'domain', 'string'],
    [2, 'version', 'int64'],
  ],
  StringStringEntryProto: [
    [1, 'key', 'string'],
    [2, 'value', 'string'],
  ],
  GraphProto: [
    [1, 'node', 'NodeProto', 'repeated'],
    [2, 'name', 'string'],
    [5, 'initializer', 'TensorProto', 'repeated'],
    [10, 'doc_string', 'string'],
    [11, 'input', 'ValueInfoProto', 'repeated'],
    [12, 'output', 'ValueInfoProto', 'repeated'],
    [13, 'value_info', 'ValueInfoProto', 'repeated'],
    [14, 'quantization_annotation', 'TensorAnnotation', 'repeated'],
    [15, 'sparse_initializer', 'SparseTensorProto', 'repeated'],
    [16, 'metadata_props', 'StringStringEntryProto', 'repeated'],
  ],
  NodeProto: [
    [1, 'input', 'string', 'repeated'],
    [2, 'output', 'string', 'repeated'],
    [3, 'name', 'string'],
    [4, 'op_type', 'string'],
    [5, 'attribute', 'AttributeProto', 'repeated'],
    [6, 'doc_string', 'string'],
    [7, 'domain', 'string'],
    [8, 'overload', 'string'],
    [9, 'metadata_props', 'StringStringEntryProto', 'repeated'],
    [10, 'device_configurations', 'NodeDeviceConfigurationProto', 'repeated'],
  ],
  AttributeProto: [
    [1, 'name', 'string'],
    [2, 'f', 'float'],
    [3, 'i', 'int64'],
    [4, 's', 'bytes'],
    [5, 't', 'TensorProto'],
    [6, 'g', 'GraphProto'],
    [7, 'floats', 'float', 'repeated'], // repeated float floats = 7 (proto2: not packed)
    [8, 'ints', 'int64', 'repeated'], // repeated int64 ints = 8 (not packed)
    [9, 'strings', 'bytes', 'repeated'],
    [10, 'tensors', 'TensorProto', 'repeated'],
    [11, 'graphs', 'GraphProto', 'repeated'],
    [13, 'doc_string', 'string'],
    [14, 'tp', 'TypeProto'],
    [15, 'type_protos', 'TypeProto', 'repeated'],
    [20, 'type', 'enum'], // AttributeType
    [21, 'ref_attr_name', 'string'],
    [22, 'sparse_tensor', 'SparseTensorProto'],
    [23, 'sparse_tensors', 'SparseTensorProto', 'repeated'],
  ],
  TensorProto: [
    [1, 'dims', 'int64', 'repeated'], // repeated int64 dims = 1 (not packed)
    [2, 'data_type', 'int32'],
    [3, 'segment', 'TensorSegment'],
    [4, 'float_data', 'float', 'packed'],
    [5, 'int32_data', 'int32', 'packed'],
    [6, 'string_data', 'bytes', 'repeated'],
    [7, 'int64_data', 'int64', 'packed'],
    [8, 'name', 'string'],
    [9, 'raw_data', 'bytes'],
    [10, 'double_data', 'double', 'packed'],
    [11, 'uint64_data', 'uint64', 'packed'],
    [12, 'doc_string', 'string'],
    [13, 'external_data', 'StringStringEntryProto', 'repeated'],
    [14, 'data_location', 'enum'], // DataLocation
    [16, 'metadata_props', 'StringStringEntryProto', 'repeated'],
  ],
  TensorSegment: [
    [1, 'begin', 'int64'],
    [2, 'end', 'int64'],
  ],
  SparseTensorProto: [
    [1, 'values', 'TensorProto'],
    [2, 'indices', 'TensorProto'],
    [3, 'dims', 'int64', 'repeated'],
  ],
  ValueInfoProto: [
    [1, 'name', 'string'],
    [2, 'type', 'TypeProto'],
    [3, 'doc_string', 'string'],
    [4, 'metadata_props', 'StringStringEntryProto', 'repeated'],
  ],
  TypeProto: [
    [1, 'tensor_type', 'TypeProtoTensor'],
    [4, 'sequence_type', 'TypeProtoSequence'],
    [5, 'map_type', 'TypeProtoMap'],
    [6, 'denotation', 'string'],
    [7, 'opaque_type', 'TypeProtoOpaque'],
    [8, 'sparse_tensor_type', 'TypeProtoTensor'], // TypeProto.SparseTensor has Tensor's layout
    [9, 'optional_type', 'TypeProtoSequence'], // TypeProto.Optional has Sequence's layout
  ],
  TypeProtoTensor: [
    [1, 'elem_type', 'int32'],
    [2, 'shape', 'TensorShapeProto'],
  ],
  TypeProtoSequence: [[1, 'elem_type', 'TypeProto']],
  TypeProtoMap: [
    [1, 'key_type', 'int32'],
    [2, 'value_type', 'TypeProto'],
  ],
  TypeProtoOpaque: [
    [1, 'domain', 'string'],
    [2, 'name', 'string'],
  ],
  TensorShapeProto: [[1, 'dim', 'TensorShapeDimension', 'repeated']],
  TensorShapeDimension: [
    [1, 'dim_value', 'int64'],
    [2, 'dim_param', 'string'],
    [3, 'denotation', 'string'],
  ],
  TensorAnnotation: [
    [1, 'tensor_name', 'string'],
    [2, 'quant_parameter_tensor_names', 'StringStringEntryProto', 'repeated'],
  ],
  TrainingInfoProto: [
    [1, 'initialization', 'GraphProto'],
    [2, 'algorithm', 'GraphProto'],
    [3, 'initialization_binding', 'StringStringEntryProto', 'repeated'],
    [4, 'update_binding', 'StringStringEntryProto', 'repeated'],
  ],
  FunctionProto: [
    [1, 'name', 'string'],
    [4, 'input', 'string', 'repeated'],
    [5, 'output', 'string', 'repeated'],
    [6, 'attribute', 'string', 'repeated'],
    [7, 'node', 'NodeProto', 'repeated'],
    [8, 'doc_string', 'string'],
    [9, 'opset_import', 'OperatorSetIdProto', 'repeated'],
    [10, 'domain', 'string'],
    [11, 'attribute_proto', 'AttributeProto', 'repeated'],
    [12, 'value_info', 'ValueInfoProto', 'repeated'],
    [13, 'overload', 'string'],
    [14, 'metadata_props', 'StringStringEntryProto', 'repeated'],
  ],
  DeviceConfigurationProto: [
    [1, 'name', 'string'],
    [2, 'num_devices', 'int32'],
    [3, 'device', 'string', 'repeated'],
  ],
  NodeDeviceConfigurationProto: [
    [1, 'configuration_id', 'string'],
    [2, 'sharding_spec', 'ShardingSpecProto', 'repeated'],
    [3, 'pipeline_stage', 'int32'],
  ],
  ShardingSpecProto: [
    [1, 'tensor_name', 'string'],
    [2, 'device', 'int64', 'repeated'],
    [3, 'index_to_device_group_map', 'IntIntListEntryProto', 'repeated'],
    [4, 'sharded_dim', 'ShardedDimProto', 'repeated'],
  ],
  IntIntListEntryProto: [
    [1, 'key', 'int64'],
    [2, 'value', 'int64', 'repeated'],
  ],
  ShardedDimProto: [
    [1, 'axis', 'int64'],
    [2, 'simple_sharding', 'SimpleShardedDimProto', 'repeated'],
  ],
  SimpleShardedDimProto: [
    [1, 'dim_value', 'int64'],
    [2, 'dim_param', 'string'],
    [3, 'num_shards', 'int64'],
  ],
};

// Wire types.
const VARINT = 0;
const I64 = 1;
const LEN = 2;
const SGROUP = 3;
const EGROUP = 4;
const I32 = 5;

interface Field {
  no: number;
  name: string;
  /** Scalar type, or undefined for a message field. */
  scalar?: ScalarType;
  message?: Descriptor;
  repeated: boolean;
  packed: boolean;
  /** Wire type of one element. */
  wireType: number;
  /** Precomputed tag bytes for the writer (with wire type LEN for packed fields). */
  tag: Uint8Array;
}

interface Descriptor {
  name: MessageName;
  /** Sorted by field number: the order the writer emits. */
  fields: Field[];
  byNo: Map<number, Field>;
  names: Set<string>;
}

const SCALAR_WIRE: Record<ScalarType, number> = {
  int32: VARINT,
  int64: VARINT,
  uint64: VARINT,
  enum: VARINT,
  bool: VARINT,
  float: I32,
  double: I64,
  string: LEN,
  bytes: LEN,
};

const DESCRIPTORS = new Map<MessageName, Descriptor>();
for (const name of Object.keys(TABLES) as MessageName[]) DESCRIPTORS.set(name, { name, fields: [], byNo: new Map(), names: new Set(['$unknown']) });
for (const [name, rows] of Object.entries(TABLES) as [MessageName, readonly Row[]][]) {
  const d = DESCRIPTORS.get(name)!;
  for (const [no, fieldName, type, label = 'optional'] of rows) {
    const message = DESCRIPTORS.get(type as MessageName);
    const scalar = message ? undefined : (type as ScalarType);
    const wireType = message ? LEN : SCALAR_WIRE[scalar!];
    const field: Field = {
      no,
      name: fieldName,
      scalar,
      message,
      repeated: label !== 'optional',
      packed: label === 'packed',
      wireType,
      tag: varintBytes(no * 8 + (label === 'packed' ? LEN : wireType)),
    };
    if (d.byNo.has(no)) throw new Error(`proto table ${name}: field ${no} twice`);
    d.fields.push(field);
    d.byNo.set(no, field);
    d.names.add(fieldName);
  }
  d.fields.sort((a, b) => a.no - b.no);
}

function varintBytes(v: number): Uint8Array {
  const out: number[] = [];
  while (v >= 0x80) {
    out.push((v & 0x7f) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return Uint8Array.from(out);
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const utf8 = new TextDecoder('utf-8', { fatal: true });
const utf8Encoder = new TextEncoder();
const TWO32 = 4294967296;

export class ProtoError extends Error {
  override name = 'ProtoError';
}

// ─── Reader ─────────────────────────────────────────────────────────────────────────────────

class Reader {
  pos = 0;
  /** The last varint read, as two 32-bit halves. */
  lo = 0;
  hi = 0;
  readonly view: DataView;

  constructor(readonly buf: Uint8Array) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  fail(what: string): never {
    throw new ProtoError(`malformed protobuf at byte ${this.pos}: ${what}`);
  }

  /** Reads a varint of up to 64 bits into lo/hi. */
  varint(end: number): void {
    const buf = this.buf;
    let pos = this.pos;
    let lo = 0;
    let hi = 0;
    let b = 0;
    for (let shift = 0; shift < 28; shift += 7) {
      if (pos >= end) this.fail('truncated varint');
      b = buf[pos++];
      lo |= (b & 0x7f) << shift;
      if (b < 0x80) {
        this.pos = pos;
        this.lo = lo >>> 0;
        this.hi = 0;
        return;
      }
    }
    if (pos >= end) this.fail('truncated varint');
    b = buf[pos++];
    lo |= (b & 0x0f) << 28;
    hi = (b & 0x7f) >> 4;
    if (b >= 0x80) {
      for (let shift = 3; ; shift += 7) {
        if (shift > 31) this.fail('varint longer than 10 bytes');
        if (pos >= end) this.fail('truncated varint');
        b = buf[pos++];
        hi |= (b & 0x7f) << shift;
        if (b < 0x80) break;
      }
    }
    this.pos = pos;
    this.lo = lo >>> 0;
    this.hi = hi >>> 0;
  }

  /** A varint that must fit in 32 bits unsigned (tags, lengths). */
  uint32(end: number): number {
    this.varint(end);
    if (this.hi !== 0) this.fail('length or tag out of range');
    return this.lo;
  }

  int64(): Int64 {
    const { lo, hi } = this;
    if (hi < 0x200000) return hi * TWO32 + lo; // 0 … 2^53 − 1
    if (hi >= 0xffe00000 && (hi !== 0xffe00000 || lo !== 0)) return (hi - TWO32) * TWO32 + lo; // −(2^53 − 1) … −1
    return BigInt.asIntN(64, (BigInt(hi) << 32n) | BigInt(lo));
  }

  uint64(): Int64 {
    const { lo, hi } = this;
    if (hi < 0x200000) return hi * TWO32 + lo;
    return (BigInt(hi) << 32n) | BigInt(lo);
  }

  /** Skips one field's payload of the given wire type (a group up to its end marker). */
  skip(wireType: number, no: number, end: number): void {
    switch (wireType) {
      case VARINT:
        this.varint(end);
        return;
      case I64:
        this.pos += 8;
        break;
      case I32:
        this.pos += 4;
        break;
      case LEN: {
        const n = this.uint32(end); // read first: `this.pos += this.uint32()` would add to the old position
        this.pos += n;
        break;
      }
      case SGROUP:
        for (;;) {
          if (this.pos >= end) this.fail(`unterminated group ${no}`);
          const tag = this.uint32(end);
          const wt = tag & 7;
          if (wt === EGROUP) {
            if (tag >>> 3 !== no) this.fail(`group ${no} closed by ${tag >>> 3}`);
            return;
          }
          this.skip(wt, tag >>> 3, end);
        }
      default:
        this.fail(`wire type ${wireType}`);
    }
    if (this.pos > end) this.fail('field runs past the end of its message');
  }
}

function readScalar(r: Reader, type: ScalarType, end: number): unknown {
  switch (type) {
    case 'int32':
    case 'enum':
      r.varint(end);
      return r.lo | 0;
    case 'int64':
      r.varint(end);
      return r.int64();
    case 'uint64':
      r.varint(end);
      return r.uint64();
    case 'bool':
      r.varint(end);
      return r.lo !== 0 || r.hi !== 0;
    case 'float': {
      if (r.pos + 4 > end) r.fail('truncated float');
      const v = r.view.getFloat32(r.pos, true);
      r.pos += 4;
      return v;
    }
    case 'double': {
      if (r.pos + 8 > end) r.fail('truncated double');
      const v = r.view.getFloat64(r.pos, true);
      r.pos += 8;
      return v;
    }
    case 'string':
    case 'bytes': {
      const n = r.uint32(end);
      const start = r.pos;
      if (start + n > end) r.fail('length runs past the end of its message');
      r.pos = start + n;
      const bytes = r.buf.subarray(start, start + n);
      if (type === 'bytes') return bytes;
      try {
        return utf8.decode(bytes);
      } catch {
        r.pos = start;
        return r.fail('string field is not valid UTF-8');
      }
    }
  }
}

/** Packed run of fixed-width values → a typed array (copied, so it is aligned). */
function readPackedFixed(r: Reader, type: 'float' | 'double', n: number): Float32Array | Float64Array {
  const width = type === 'float' ? 4 : 8;
  if (n % width) r.fail(`packed ${type} run of ${n} bytes`);
  const count = n / width;
  const out = type === 'float' ? new Float32Array(count) : new Float64Array(count);
  if (LITTLE_ENDIAN) {
    new Uint8Array(out.buffer).set(r.buf.subarray(r.pos, r.pos + n));
  } else {
    for (let i = 0; i < count; i++) out[i] = type === 'float' ? r.view.getFloat32(r.pos + 4 * i, true) : r.view.getFloat64(r.pos + 8 * i, true);
  }
  r.pos += n;
  return out;
}

function readMessage(r: Reader, d: Descriptor, end: number): Record<string, unknown> {
  const msg: Record<string, unknown> = {};
  // Packed numeric runs may come in several chunks (and unpacked elements may be mixed in);
  // they are gathered here and turned into their final form at the end.
  let gathered: Map<Field, unknown[]> | undefined;
  while (r.pos < end) {
    const fieldStart = r.pos;
    const tag = r.uint32(end);
    const no = tag >>> 3;
    const wt = tag & 7;
    if (no === 0) r.fail('field number 0');
    const f = d.byNo.get(no);
    if (f && wt === f.wireType && !f.packed) {
      if (f.message) {
        const n = r.uint32(end);
        const stop = r.pos + n;
        if (stop > end) r.fail(`${d.name}.${f.name} runs past the end of its message`);
        const sub = readMessage(r, f.message, stop);
        if (f.repeated) ((msg[f.name] ??= []) as unknown[]).push(sub);
        else msg[f.name] = sub; // a repeated singular message would be merged by protobuf; last one wins here
      } else if (f.repeated) {
        if (f.scalar === 'float' || f.scalar === 'double' || wt === VARINT) {
          ((gathered ??= new Map()).get(f) ?? gathered.set(f, []).get(f)!).push(readScalar(r, f.scalar!, end));
        } else {
          ((msg[f.name] ??= []) as unknown[]).push(readScalar(r, f.scalar!, end));
        }
      } else {
        msg[f.name] = readScalar(r, f.scalar!, end);
      }
    } else if (f && f.repeated && f.scalar && wt === LEN && f.wireType !== LEN) {
      // A packed run (the canonical form for [packed = true] fields; also accepted for the others).
      const n = r.uint32(end);
      const stop = r.pos + n;
      if (stop > end) r.fail(`${d.name}.${f.name} runs past the end of its message`);
      const list = (gathered ??= new Map()).get(f) ?? gathered.set(f, []).get(f)!;
      if (f.scalar === 'float' || f.scalar === 'double') {
        list.push(readPackedFixed(r, f.scalar, n));
      } else {
        while (r.pos < stop) list.push(readScalar(r, f.scalar, stop));
      }
    } else if (f && f.packed && wt === f.wireType) {
      // An unpacked element of a field declared packed.
      ((gathered ??= new Map()).get(f) ?? gathered.set(f, []).get(f)!).push(readScalar(r, f.scalar!, end));
    } else {
      r.skip(wt, no, end);
      if (wt === EGROUP) r.fail(`unexpected end of group ${no}`);
      ((msg.$unknown ??= []) as UnknownField[]).push({ no, wireType: wt, bytes: r.buf.subarray(fieldStart, r.pos) });
    }
  }
  if (r.pos !== end) r.fail(`${d.name} overruns its length`);
  if (gathered) {
    for (const [f, parts] of gathered) {
      if (f.scalar === 'float' || f.scalar === 'double') {
        const values: number[] = [];
        let typed: Float32Array | Float64Array | undefined;
        if (parts.length === 1 && typeof parts[0] !== 'number') typed = parts[0] as Float32Array | Float64Array;
        else {
          for (const p of parts) {
            if (typeof p === 'number') values.push(p);
            else for (const x of p as Float32Array) values.push(x);
          }
        }
        if (f.packed) msg[f.name] = typed ?? (f.scalar === 'float' ? Float32Array.from(values) : Float64Array.from(values));
        else msg[f.name] = typed ? Array.from(typed) : values;
      } else if (f.packed && f.scalar === 'int32') {
        msg[f.name] = Int32Array.from(parts as number[]);
      } else {
        msg[f.name] = parts;
      }
    }
  }
  return msg;
}

// ─── Writer ─────────────────────────────────────────────────────────────────────────────────

function varint32Size(v: number): number {
  return v < 0x80 ? 1 : v < 0x4000 ? 2 : v < 0x200000 ? 3 : v < 0x10000000 ? 4 : 5;
}

/** Size of an int64/uint64/int32/enum varint (negative values take 10 bytes). */
function varintSize(v: Int64): number {
  if (typeof v === 'number') {
    if (v >= 0 && v < TWO32) return varint32Size(v);
    if (v < 0) return 10;
    let n = 1;
    while (v >= 128) {
      v = Math.floor(v / 128);
      n++;
    }
    return n;
  }
  let u = BigInt.asUintN(64, v);
  let n = 1;
  while (u >= 128n) {
    u >>= 7n;
    n++;
  }
  return n;
}

function checkInt(v: unknown, where: string): Int64 {
  if (typeof v === 'bigint') return v;
  if (typeof v === 'number' && Number.isInteger(v)) return v;
  throw new ProtoError(`${where}: expected an integer, got ${typeof v === 'number' ? v : typeof v}`);
}

class Writer {
  pos = 0;
  readonly buf: Uint8Array;
  readonly view: DataView;
  constructor(size: number) {
    this.buf = new Uint8Array(size);
    this.view = new DataView(this.buf.buffer);
  }

  uint32(v: number): void {
    const buf = this.buf;
    while (v >= 0x80) {
      buf[this.pos++] = (v & 0x7f) | 0x80;
      v >>>= 7;
    }
    buf[this.pos++] = v;
  }

  varint(v: Int64): void {
    if (typeof v === 'number' && v >= 0 && v < TWO32) return this.uint32(v);
    if (typeof v === 'number' && v > 0) {
      while (v >= 128) {
        this.buf[this.pos++] = (v % 128) | 0x80;
        v = Math.floor(v / 128);
      }
      this.buf[this.pos++] = v;
      return;
    }
    let u = BigInt.asUintN(64, BigInt(v));
    while (u >= 128n) {
      this.buf[this.pos++] = Number(u & 0x7fn) | 0x80;
      u >>= 7n;
    }
    this.buf[this.pos++] = Number(u);
  }

  bytes(b: Uint8Array): void {
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }
}

/** Encoded strings and message sizes, computed in the sizing pass and reused when writing. */
interface Plan {
  sizes: Map<object, number>;
  strings: Map<string, Uint8Array>;
}

function encodedString(p: Plan, s: unknown, where: string): Uint8Array {
  if (typeof s !== 'string') throw new ProtoError(`${where}: expected a string, got ${typeof s}`);
  let b = p.strings.get(s);
  if (!b) p.strings.set(s, (b = utf8Encoder.encode(s)));
  return b;
}

function scalarSize(p: Plan, type: ScalarType, v: unknown, where: string): number {
  switch (type) {
    case 'int32':
    case 'enum':
    case 'int64':
    case 'uint64':
      return varintSize(checkInt(v, where));
    case 'bool':
      return 1;
    case 'float':
      return 4;
    case 'double':
      return 8;
    case 'string': {
      const n = encodedString(p, v, where).length;
      return varint32Size(n) + n;
    }
    case 'bytes': {
      if (!(v instanceof Uint8Array)) throw new ProtoError(`${where}: expected a Uint8Array`);
      return varint32Size(v.length) + v.length;
    }
  }
}

function writeScalar(w: Writer, p: Plan, type: ScalarType, v: unknown): void {
  switch (type) {
    case 'int32':
    case 'enum':
    case 'int64':
    case 'uint64':
      w.varint(v as Int64);
      return;
    case 'bool':
      w.buf[w.pos++] = v ? 1 : 0;
      return;
    case 'float':
      w.view.setFloat32(w.pos, v as number, true);
      w.pos += 4;
      return;
    case 'double':
      w.view.setFloat64(w.pos, v as number, true);
      w.pos += 8;
      return;
    case 'string': {
      const b = p.strings.get(v as string)!;
      w.uint32(b.length);
      w.bytes(b);
      return;
    }
    case 'bytes':
      w.uint32((v as Uint8Array).length);
      w.bytes(v as Uint8Array);
  }
}

function asList(v: unknown, where: string): ArrayLike<unknown> {
  if (Array.isArray(v) || ArrayBuffer.isView(v)) return v as unknown as ArrayLike<unknown>;
  throw new ProtoError(`${where}: expected a list`);
}

function packedPayloadSize(p: Plan, f: Field, list: ArrayLike<unknown>, where: string): number {
  if (f.scalar === 'float') return 4 * list.length;
  if (f.scalar === 'double') return 8 * list.length;
  let n = 0;
  for (let i = 0; i < list.length; i++) n += scalarSize(p, f.scalar!, list[i], where);
  return n;
}

function messageSize(p: Plan, d: Descriptor, msg: Record<string, unknown>, where: string): number {
  for (const key in msg) {
    if (!d.names.has(key) && msg[key] !== undefined) throw new ProtoError(`${where}: ${d.name} has no field "${key}"`);
  }
  let size = 0;
  for (const f of d.fields) {
    const v = msg[f.name];
    if (v === undefined) continue;
    const at = `${where}.${f.name}`;
    if (f.repeated) {
      const list = asList(v, at);
      if (list.length === 0) continue;
      if (f.packed) {
        const n = packedPayloadSize(p, f, list, at);
        size += f.tag.length + varint32Size(n) + n;
      } else if (f.message) {
        for (let i = 0; i < list.length; i++) {
          const n = messageSize(p, f.message, list[i] as Record<string, unknown>, `${at}[${i}]`);
          size += f.tag.length + varint32Size(n) + n;
        }
      } else {
        for (let i = 0; i < list.length; i++) size += f.tag.length + scalarSize(p, f.scalar!, list[i], `${at}[${i}]`);
      }
    } else if (f.message) {
      if (typeof v !== 'object' || v === null) throw new ProtoError(`${at}: expected a ${f.message.name} object`);
      const n = messageSize(p, f.message, v as Record<string, unknown>, at);
      size += f.tag.length + varint32Size(n) + n;
    } else {
      size += f.tag.length + scalarSize(p, f.scalar!, v, at);
    }
  }
  const unknown = msg.$unknown as UnknownField[] | undefined;
  if (unknown) for (const u of unknown) size += u.bytes.length;
  p.sizes.set(msg, size);
  return size;
}

function writeMessage(w: Writer, p: Plan, d: Descriptor, msg: Record<string, unknown>): void {
  for (const f of d.fields) {
    const v = msg[f.name];
    if (v === undefined) continue;
    if (f.repeated) {
      const list = v as ArrayLike<unknown>;
      if (list.length === 0) continue;
      if (f.packed) {
        w.bytes(f.tag);
        w.uint32(packedPayloadSize(p, f, list, ''));
        if (f.scalar === 'float' || f.scalar === 'double') {
          const typed = f.scalar === 'float' ? (list instanceof Float32Array ? list : Float32Array.from(list as ArrayLike<number>)) : list instanceof Float64Array ? list : Float64Array.from(list as ArrayLike<number>);
          if (LITTLE_ENDIAN) w.bytes(new Uint8Array(typed.buffer, typed.byteOffset, typed.byteLength));
          else for (let i = 0; i < typed.length; i++) writeScalar(w, p, f.scalar, typed[i]);
        } else {
          for (let i = 0; i < list.length; i++) writeScalar(w, p, f.scalar!, list[i]);
        }
      } else if (f.message) {
        for (let i = 0; i < list.length; i++) {
          const sub = list[i] as Record<string, unknown>;
          w.bytes(f.tag);
          w.uint32(p.sizes.get(sub)!);
          writeMessage(w, p, f.message, sub);
        }
      } else {
        for (let i = 0; i < list.length; i++) {
          w.bytes(f.tag);
          writeScalar(w, p, f.scalar!, list[i]);
        }
      }
    } else if (f.message) {
      w.bytes(f.tag);
      w.uint32(p.sizes.get(v as object)!);
      writeMessage(w, p, f.message, v as Record<string, unknown>);
    } else {
      w.bytes(f.tag);
      writeScalar(w, p, f.scalar!, v);
    }
  }
  const unknown = msg.$unknown as UnknownField[] | undefined;
  if (unknown) for (const u of unknown) w.bytes(u.bytes);
}

// ─── Public entry points ────────────────────────────────────────────────────────────────────

export interface MessageTypes {
  ModelProto: ModelProto;
  GraphProto: GraphProto;
  NodeProto: NodeProto;
  AttributeProto: AttributeProto;
  TensorProto: TensorProto;
  SparseTensorProto: SparseTensorProto;
  ValueInfoProto: ValueInfoProto;
  TypeProto: TypeProto;
  TensorShapeProto: TensorShapeProto;
  OperatorSetIdProto: OperatorSetIdProto;
  StringStringEntryProto: StringStringEntryProto;
  FunctionProto: FunctionProto;
  TrainingInfoProto: TrainingInfoProto;
}

/** Decodes one message of the given type. Byte fields are views into `bytes`. */
export function decodeMessage<K extends keyof MessageTypes>(type: K, bytes: Uint8Array): MessageTypes[K] {
  const r = new Reader(bytes);
  return readMessage(r, DESCRIPTORS.get(type)!, bytes.length) as MessageTypes[K];
}

/** Encodes one message of the given type in canonical field order. */
export function encodeMessage<K extends keyof MessageTypes>(type: K, message: MessageTypes[K]): Uint8Array {
  const d = DESCRIPTORS.get(type)!;
  const plan: Plan = { sizes: new Map(), strings: new Map() };
  const size = messageSize(plan, d, message as Record<string, unknown>, type);
  const w = new Writer(size);
  writeMessage(w, plan, d, message as Record<string, unknown>);
  if (w.pos !== size) throw new Error(`internal: wrote ${w.pos} bytes of ${size}`);
  return w.buf;
}

/** Decodes an .onnx file. Tensor raw_data stays a view into `bytes` (no copy). */
export function decodeModel(bytes: Uint8Array): ModelProto {
  return decodeMessage('ModelProto', bytes);
}

/** Encodes a model; decode → encode of a canonically written file gives the same bytes. */
export function encodeModel(model: ModelProto): Uint8Array {
  return encodeMessage('ModelProto', model);
}

// ─── Tensor helpers ─────────────────────────────────────────────────────────────────────────

/** Number of elements of a tensor with these dims (1 for a scalar). */
export function elementCount(dims: readonly Int64[] | undefined): number {
  let n = 1;
  for (const d of dims ?? []) n *= Number(d);
  return n;
}

function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

const bf16Scratch = new DataView(new ArrayBuffer(4));
function bfloat16ToFloat(b: number): number {
  bf16Scratch.setUint32(0, b << 16);
  return bf16Scratch.getFloat32(0);
}

/**
 * The values of a numeric tensor as a new Float32Array (row-major), whatever its storage:
 * raw_data (little-endian) or the typed *_data field. Accepts float, double, float16, bfloat16 and
 * the integer and bool types (converted). External data must be loaded by the caller first.
 */
export function tensorToFloat32(t: TensorProto): Float32Array {
  const name = t.name ? `tensor "${t.name}"` : 'tensor';
  if (t.data_location === DataLocation.EXTERNAL || t.external_data?.length) {
    throw new ProtoError(`${name} keeps its data in an external file (${t.external_data?.find((e) => e.key === 'location')?.value ?? '?'}); load it first`);
  }
  const n = elementCount(t.dims);
  const type = t.data_type ?? DataType.UNDEFINED;
  const out = new Float32Array(n);
  const raw = t.raw_data;
  const check = (len: number) => {
    if (len !== n) throw new ProtoError(`${name}: dims say ${n} values, data holds ${len}`);
  };
  if (raw) {
    const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    const width: Partial<Record<number, number>> = {
      [DataType.FLOAT]: 4, [DataType.DOUBLE]: 8, [DataType.FLOAT16]: 2, [DataType.BFLOAT16]: 2,
      [DataType.INT8]: 1, [DataType.UINT8]: 1, [DataType.BOOL]: 1, [DataType.INT16]: 2, [DataType.UINT16]: 2,
      [DataType.INT32]: 4, [DataType.UINT32]: 4, [DataType.INT64]: 8, [DataType.UINT64]: 8,
    };
    const w = width[type];
    if (!w) throw new ProtoError(`${name}: cannot read ${dataTypeName(type)} values as float32`);
    check(raw.byteLength / w);
    if (type === DataType.FLOAT && LITTLE_ENDIAN) {
      new Uint8Array(out.buffer).set(raw);
      return out;
    }
    for (let i = 0; i < n; i++) {
      switch (type) {
        case DataType.FLOAT: out[i] = view.getFloat32(4 * i, true); break;
        case DataType.DOUBLE: out[i] = view.getFloat64(8 * i, true); break;
        case DataType.FLOAT16: out[i] = halfToFloat(view.getUint16(2 * i, true)); break;
        case DataType.BFLOAT16: out[i] = bfloat16ToFloat(view.getUint16(2 * i, true)); break;
        case DataType.INT8: out[i] = view.getInt8(i); break;
        case DataType.UINT8: case DataType.BOOL: out[i] = view.getUint8(i); break;
        case DataType.INT16: out[i] = view.getInt16(2 * i, true); break;
        case DataType.UINT16: out[i] = view.getUint16(2 * i, true); break;
        case DataType.INT32: out[i] = view.getInt32(4 * i, true); break;
        case DataType.UINT32: out[i] = view.getUint32(4 * i, true); break;
        case DataType.INT64: out[i] = Number(view.getBigInt64(8 * i, true)); break;
        case DataType.UINT64: out[i] = Number(view.getBigUint64(8 * i, true)); break;
      }
    }
    return out;
  }
  if (type === DataType.FLOAT) {
    const d = t.float_data ?? new Float32Array(0);
    check(d.length);
    out.set(d);
  } else if (type === DataType.DOUBLE) {
    const d = t.double_data ?? new Float64Array(0);
    check(d.length);
    out.set(d);
  } else if (type === DataType.INT64) {
    const d = t.int64_data ?? [];
    check(d.length);
    for (let i = 0; i < n; i++) out[i] = Number(d[i]);
  } else if (type === DataType.UINT32 || type === DataType.UINT64) {
    const d = t.uint64_data ?? [];
    check(d.length);
    for (let i = 0; i < n; i++) out[i] = Number(d[i]);
  } else if (type === DataType.FLOAT16 || type === DataType.BFLOAT16) {
    const d = t.int32_data ?? new Int32Array(0);
    check(d.length);
    for (let i = 0; i < n; i++) out[i] = type === DataType.FLOAT16 ? halfToFloat(d[i] & 0xffff) : bfloat16ToFloat(d[i] & 0xffff);
  } else if ([DataType.INT32, DataType.INT16, DataType.INT8, DataType.UINT16, DataType.UINT8, DataType.BOOL].includes(type as 6)) {
    const d = t.int32_data ?? new Int32Array(0);
    check(d.length);
    out.set(d);
  } else {
    throw new ProtoError(`${name}: cannot read ${dataTypeName(type)} values as float32`);
  }
  return out;
}

function rawBytesOf(view: ArrayBufferView): Uint8Array {
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength).slice();
}

function checkDims(name: string, dims: readonly number[], length: number): Int64[] {
  const n = elementCount(dims);
  if (n !== length) throw new ProtoError(`tensor "${name}": dims [${dims.join(', ')}] hold ${n} values, got ${length}`);
  return [...dims];
}

/** A float32 tensor stored in raw_data (little-endian), as exporters write initializers. */
export function float32Tensor(name: string, dims: readonly number[], data: ArrayLike<number>): TensorProto {
  const values = data instanceof Float32Array ? data : Float32Array.from(data);
  const checked = checkDims(name, dims, values.length);
  let raw = rawBytesOf(values);
  if (!LITTLE_ENDIAN) {
    raw = new Uint8Array(values.length * 4);
    const v = new DataView(raw.buffer);
    values.forEach((x, i) => v.setFloat32(4 * i, x, true));
  }
  return { dims: checked, data_type: DataType.FLOAT, name, raw_data: raw };
}

/** An int64 tensor stored in raw_data (little-endian). */
export function int64Tensor(name: string, dims: readonly number[], data: ArrayLike<number | bigint>): TensorProto {
  const checked = checkDims(name, dims, data.length);
  const raw = new Uint8Array(data.length * 8);
  const v = new DataView(raw.buffer);
  for (let i = 0; i < data.length; i++) {
    const x = data[i];
    if (typeof x === 'number' && !Number.isSafeInteger(x)) throw new ProtoError(`tensor "${name}": ${x} is not an exact integer`);
    v.setBigInt64(8 * i, BigInt(x), true);
  }
  return { dims: checked, data_type: DataType.INT64, name, raw_data: raw };
}
