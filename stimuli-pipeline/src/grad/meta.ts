// What the gradient builder knows about each tensor of a forward graph before it emits a backward
// node: element type and shape. ONNX files rarely declare intermediate shapes, so they are measured:
// onnxruntime runs the forward graph once on zeros with every tensor tapped. Where the batch
// dimension is dynamic it runs twice (batch 2 and 3), so a dimension that follows the batch is told
// apart from a fixed one: it is recorded as -1 and backward rules read it at run time (Shape) instead
// of baking in a number.
import { LegibleError } from '@legible/studies';
import { describeValue } from '../onnx/graph.ts';
import { inferShapes, type TensorShape } from '../onnx/shapes.ts';
import { DataType, encodeModel, tensorToFloat32, type ModelProto, type TensorProto } from '../onnx/proto.ts';

export interface TensorMeta {
  /** TensorProto.DataType of the elements. */
  type: number;
  /** Shape, with -1 for a dimension that depends on the batch size. */
  dims: number[];
  /** The shape seen at each measured batch size (one entry when the batch is fixed). */
  runs: number[][];
}

export type MetaMap = Map<string, TensorMeta>;

const ORT_TYPES: Record<string, number> = {
  float32: DataType.FLOAT,
  float64: DataType.DOUBLE,
  float16: DataType.FLOAT16,
  int64: DataType.INT64,
  int32: DataType.INT32,
  int8: DataType.INT8,
  uint8: DataType.UINT8,
  bool: DataType.BOOL,
  string: DataType.STRING,
};

export const isFloat = (type: number | undefined) => type === DataType.FLOAT || type === DataType.DOUBLE || type === DataType.FLOAT16;

/**
 * Shapes and element types of every tensor of the model's main graph (inputs, node outputs,
 * initializers), measured by onnxruntime. `inputShapes` fixes the shape of graph inputs; without it a
 * dynamic batch dimension is measured at 2 and 3 and other dynamic dimensions are an error.
 */
export async function measureTensors(model: ModelProto, inputShapes: Record<string, readonly number[]> = {}): Promise<MetaMap> {
  const g = model.graph;
  if (!g) throw new LegibleError('the model has no graph');
  const inits = new Set((g.initializer ?? []).map((t) => t.name));
  const inputs = (g.input ?? []).filter((v) => !inits.has(v.name));
  // One or two sets of feed shapes.
  const plans: Record<string, number[]>[] = [{}, {}];
  let dynamicBatch = false;
  for (const v of inputs) {
    const name = v.name!;
    const { elemType, shape } = describeValue(v);
    const given = inputShapes[name];
    if (given) {
      plans[0][name] = [...given];
      plans[1][name] = [...given];
      continue;
    }
    if (!shape) throw new LegibleError(`input "${name}" declares no shape; give its shape (inputShapes)`);
    const bad = shape.findIndex((d, i) => typeof d !== 'number' && i > 0);
    if (bad >= 0) throw new LegibleError(`input "${name}" has a dynamic dimension #${bad} besides the batch; give its shape (inputShapes), e.g. ${name}=[1, 3, 224, 224]`);
    if (typeof shape[0] !== 'number' && shape.length) dynamicBatch = true;
    plans[0][name] = shape.map((d, i) => (typeof d === 'number' ? d : i === 0 ? 2 : 1));
    plans[1][name] = shape.map((d, i) => (typeof d === 'number' ? d : i === 0 ? 3 : 1));
    if (elemType === undefined) throw new LegibleError(`input "${name}" declares no element type`);
  }
  const runs = dynamicBatch ? plans : [plans[0]];
  const measured: Map<string, { type: number; dims: number[] }>[] = [];
  for (const feedShapes of runs) measured.push(await runTapped(model, feedShapes));

  const meta: MetaMap = new Map();
  for (const [name, first] of measured[0]) {
    const all = measured.map((m) => m.get(name)!.dims);
    const dims = first.dims.map((d, i) => (all.every((r) => r.length === first.dims.length && r[i] === d) ? d : -1));
    meta.set(name, { type: first.type, dims, runs: all });
  }
  for (const t of g.initializer ?? []) {
    const dims = (t.dims ?? []).map(Number);
    meta.set(t.name!, { type: t.data_type ?? DataType.FLOAT, dims, runs: [dims] });
  }
  return meta;
}

async function runTapped(model: ModelProto, feedShapes: Record<string, number[]>): Promise<Map<string, { type: number; dims: number[] }>> {
  const ort = await import('onnxruntime-node');
  const g = model.graph!;
  const inits = new Set((g.initializer ?? []).map((t) => t.name));
  const seen = new Set<string>();
  const outputs: { name: string }[] = [];
  for (const n of g.node ?? []) {
    for (const o of n.output ?? []) {
      if (o && !seen.has(o)) {
        seen.add(o);
        outputs.push({ name: o });
      }
    }
  }
  const tapped: ModelProto = { ...model, graph: { ...g, output: outputs } };
  const session = await ort.InferenceSession.create(encodeModel(tapped), { graphOptimizationLevel: 'disabled', logSeverityLevel: 3 });
  try {
    const feeds: Record<string, InstanceType<typeof ort.Tensor>> = {};
    for (const v of g.input ?? []) {
      if (inits.has(v.name)) continue;
      const dims = feedShapes[v.name!];
      const n = dims.reduce((a, b) => a * b, 1);
      const type = describeValue(v).elemType;
      if (type === DataType.FLOAT) feeds[v.name!] = new ort.Tensor('float32', new Float32Array(n), dims);
      else if (type === DataType.DOUBLE) feeds[v.name!] = new ort.Tensor('float64', new Float64Array(n), dims);
      else if (type === DataType.INT64) feeds[v.name!] = new ort.Tensor('int64', new BigInt64Array(n), dims);
      else if (type === DataType.INT32) feeds[v.name!] = new ort.Tensor('int32', new Int32Array(n), dims);
      else throw new LegibleError(`input "${v.name}": cannot feed element type ${type} to measure shapes`);
    }
    const out = await session.run(feeds);
    const result = new Map<string, { type: number; dims: number[] }>();
    for (const v of g.input ?? []) {
      if (inits.has(v.name)) continue;
      result.set(v.name!, { type: describeValue(v).elemType!, dims: feedShapes[v.name!] });
    }
    for (const [name, t] of Object.entries(out)) result.set(name, { type: ORT_TYPES[t.type] ?? DataType.UNDEFINED, dims: [...t.dims] });
    return result;
  } finally {
    await session.release();
  }
}

/** The values of a constant tensor as numbers (int64 beyond 2^53 rounded: fine for Slice bounds). */
export function tensorNumbers(t: TensorProto): number[] {
  if (t.data_type === DataType.INT64) {
    if (t.raw_data) {
      const v = new DataView(t.raw_data.buffer, t.raw_data.byteOffset, t.raw_data.byteLength);
      return Array.from({ length: t.raw_data.byteLength / 8 }, (_, i) => Number(v.getBigInt64(8 * i, true)));
    }
    return (t.int64_data ?? []).map(Number);
  }
  if (t.data_type === DataType.DOUBLE) {
    if (t.raw_data) {
      const v = new DataView(t.raw_data.buffer, t.raw_data.byteOffset, t.raw_data.byteLength);
      return Array.from({ length: t.raw_data.byteLength / 8 }, (_, i) => v.getFloat64(8 * i, true));
    }
    return Array.from(t.double_data ?? []);
  }
  return Array.from(tensorToFloat32(t));
}

/**
 * Shapes and element types of `names` from shape inference (onnx/shapes.ts), without running the
 * model: a dimension that is a product of the batch symbol "N" and numbers is recorded as -1, with
 * the sizes it takes at batch 2 and 3 in `runs`, as measureTensors would measure them. Null when any
 * of `names` is not fully derived (an op the inference lacks, a size that depends on image values,
 * another dynamic input dimension): the caller measures then.
 */
export function inferTensors(model: ModelProto, names: Iterable<string>, shapes: Map<string, TensorShape> = inferShapes(model)): MetaMap | null {
  const meta = inferredTensors(model, shapes);
  for (const name of names) if (!meta.has(name)) return null;
  return meta;
}

/** Every tensor of the main graph whose type and shape inference derives fully (see inferTensors). */
export function inferredTensors(model: ModelProto, shapes: Map<string, TensorShape> = inferShapes(model)): MetaMap {
  const meta: MetaMap = new Map();
  // As measured: two runs (batch 2 and 3) for every tensor where an input's batch is dynamic.
  const inits = new Set((model.graph?.initializer ?? []).map((t) => t.name));
  const dynamicBatch = (model.graph?.input ?? []).some((v) => !inits.has(v.name) && typeof shapes.get(v.name ?? '')?.shape?.[0] === 'string');
  for (const [name, s] of shapes) {
    if (!name || s.type === undefined || !s.shape) continue;
    const at = (batch: number) => s.shape!.map((d) => (typeof d === 'number' ? d : batchProduct(d, batch)));
    const runs = [at(2), at(3)];
    if (runs.some((r) => r.some((d) => d === null))) continue;
    const [two, three] = runs as number[][];
    meta.set(name, { type: s.type, dims: two.map((d, i) => (d === three[i] ? d : -1)), runs: dynamicBatch && !inits.has(name) ? [two, three] : [two] });
  }
  return meta;
}

/** The value of a symbolic product of numbers and the batch "N" at batch `batch`; null for any other symbol. */
function batchProduct(d: string | null, batch: number): number | null {
  if (d === null) return null;
  let v = 1;
  for (const part of d.split('*')) {
    if (part === 'N') v *= batch;
    else if (/^-?\d+$/.test(part)) v *= Number(part);
    else return null;
  }
  return v;
}
