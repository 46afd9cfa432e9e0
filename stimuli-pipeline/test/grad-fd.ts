// Finite-difference checks for gradient models: build a tiny graph, differentiate it with the
// builder, and compare every gradient element with central differences of the objective that the
// same onnxruntime graph computes. float64 where onnxruntime has double kernels for the op (tight
// tolerance); float32 otherwise, with Richardson extrapolation of two step sizes.
import * as ort from 'onnxruntime-node';
import { Rng } from '@legible/studies/random';
import { makeGraph, makeModel, tensorInfo } from '../src/onnx/graph.ts';
import { DataType, encodeModel, type ModelProto, type NodeProto, type TensorProto } from '../src/onnx/proto.ts';
import { floatTensor } from '../src/grad/emit.ts';
import { buildGradientModel, type ObjectiveKind } from '../src/grad/vjp.ts';

export type Dtype = 'float32' | 'float64';

export interface Case {
  /** Graph inputs: name → dims. */
  inputs: Record<string, number[]>;
  /** Initializers with random values (differentiated too unless listed in `fixed`). */
  params?: Record<string, number[]>;
  /** Other initializers (int64 shapes, axes, …), used as given. */
  consts?: TensorProto[];
  nodes: NodeProto[];
  objective: string;
  kind?: ObjectiveKind;
  dtype?: Dtype;
  /** Tensors to differentiate; default every input and param. */
  wrt?: string[];
  /** Values for a tensor (default standard normal); `rng` is seeded per case. */
  values?: Record<string, (n: number, rng: Rng) => number[]>;
  /** Step of the central differences (default 1e-4 in float64, 1e-2 in float32). */
  h?: number;
  opset?: number;
  seed?: number;
}

export interface CaseResult {
  /** Relative L2 error ‖analytic − numeric‖ / ‖numeric‖, per wrt tensor. */
  errors: Record<string, number>;
  /** ‖numeric‖ per tensor (a zero gradient would make a test vacuous). */
  norms: Record<string, number>;
  objective: number;
}

export function buildCaseModel(c: Case): ModelProto {
  const type = c.dtype === 'float32' ? DataType.FLOAT : DataType.DOUBLE;
  const produced = new Set(c.nodes.flatMap((n) => n.output ?? []));
  const paramInits = Object.entries(c.params ?? {}).map(([name, dims]) => floatTensor(name, dims, new Float64Array(dims.reduce((a, b) => a * b, 1)), type));
  return makeModel({
    graph: makeGraph({
      name: 'case',
      inputs: Object.entries(c.inputs).map(([name, dims]) => tensorInfo(name, type, dims)),
      outputs: [{ name: c.objective }].filter((o) => produced.has(o.name) || o.name in c.inputs),
      initializers: [...paramInits, ...(c.consts ?? [])],
      nodes: c.nodes,
    }),
    opset: c.opset ?? 17,
  });
}

export async function checkCase(c: Case): Promise<CaseResult> {
  const dtype: Dtype = c.dtype ?? 'float64';
  const rng = new Rng(c.seed ?? 7);
  const Arr = dtype === 'float32' ? Float32Array : Float64Array;
  const model = buildCaseModel({ ...c, dtype });
  const all = { ...c.inputs, ...(c.params ?? {}) };
  const wrt = c.wrt ?? Object.keys(all);
  const grad = await buildGradientModel(model, { wrt, objective: { tensor: c.objective, kind: c.kind }, params: 'inputs' });
  const session = await ort.InferenceSession.create(encodeModel(grad.model), { logSeverityLevel: 3 });
  try {
    const feeds: Record<string, ort.Tensor> = {};
    for (const [name, dims] of Object.entries(all)) {
      const n = dims.reduce((a, b) => a * b, 1);
      const make = c.values?.[name] ?? ((k: number, r: Rng) => Array.from({ length: k }, () => r.normal()));
      feeds[name] = new ort.Tensor(dtype, Arr.from(make(n, rng)), dims);
    }
    const wName = grad.objectiveInputs[0];
    if (wName) {
      const info = grad.model.graph!.input!.find((v) => v.name === wName)!;
      const dims = info.type!.tensor_type!.shape!.dim!.map((d, i) => (d.dim_value !== undefined ? Number(d.dim_value) : i === 0 ? all[Object.keys(c.inputs)[0]][0] : 1));
      if ((c.kind ?? 'mean-projection') === 'cotangent') {
        const objDims = grad.meta.get(c.objective)!.runs[0];
        dims.splice(0, dims.length, ...objDims);
      }
      const n = dims.reduce((a, b) => a * b, 1);
      feeds[wName] = new ort.Tensor(dtype, Arr.from(Array.from({ length: n }, () => rng.normal())), dims);
    }
    const f = async (fd: Record<string, ort.Tensor>) => {
      const out = await session.run(fd, [grad.objective]);
      let s = 0;
      for (const v of out[grad.objective].data as Float32Array) s += v;
      return s;
    };
    const base = await session.run(feeds);
    const objective = await f(feeds);
    const h = c.h ?? (dtype === 'float64' ? 1e-4 : 1e-2);
    const errors: Record<string, number> = {};
    const norms: Record<string, number> = {};
    for (const t of wrt) {
      const analytic = base[grad.grads[t]].data as Float32Array;
      const x = feeds[t].data as Float32Array;
      const numeric = new Float64Array(x.length);
      const at = async (i: number, step: number) => {
        const copy = Arr.from(x);
        copy[i] = x[i] + step;
        const plus = await f({ ...feeds, [t]: new ort.Tensor(dtype, copy, feeds[t].dims) });
        copy[i] = x[i] - step;
        const minus = await f({ ...feeds, [t]: new ort.Tensor(dtype, copy, feeds[t].dims) });
        // The step actually taken, after rounding to the tensor's precision.
        const taken = (Arr.of(x[i] + step)[0] - Arr.of(x[i] - step)[0]) / 2;
        return (plus - minus) / (2 * taken);
      };
      for (let i = 0; i < x.length; i++) {
        const d1 = await at(i, h);
        const d2 = await at(i, h / 2);
        numeric[i] = (4 * d2 - d1) / 3;
      }
      let diff = 0;
      let norm = 0;
      for (let i = 0; i < x.length; i++) {
        diff += (analytic[i] - numeric[i]) ** 2;
        norm += numeric[i] ** 2;
      }
      errors[t] = Math.sqrt(diff / Math.max(norm, 1e-300));
      norms[t] = Math.sqrt(norm);
    }
    return { errors, norms, objective };
  } finally {
    await session.release();
  }
}

/** Values at least `margin` away from zero (for kinks at 0). */
export const awayFromZero = (margin = 0.1) => (n: number, r: Rng) =>
  Array.from({ length: n }, () => {
    const v = r.normal();
    return Math.sign(v || 1) * (margin + Math.abs(v));
  });

/** Distinct values spaced `gap` apart in random order (no ties within a pooling window). */
export const distinct = (gap = 0.05) => (n: number, r: Rng) => r.shuffle(Array.from({ length: n }, (_, i) => (i - n / 2) * gap));
