// The gradient builder: an ONNX model + what to differentiate → ONE ONNX model that computes the
// objective, its gradients and any requested forward tensors, built from standard ONNX ops so the
// same onnxruntime providers run it (DESIGN.md, "What real means").
//
// How: measure every tensor's type and shape (meta.ts); mark the tensors that depend on the `wrt`
// tensors and lead to the objective; walk those nodes in reverse topological order, each through its
// rule in rules.ts, summing the contributions to a tensor from all its consumers; prune the forward
// nodes the outputs don't need.
//
// Objectives (all linear in the tensor, so the seed gradient is known in closed form):
//   mean-projection — per batch item n: Σ_c w[n, c] · mean over positions of T[n, c, …]. The weights
//                     w [N, C] are a graph input: a one-hot row is a channel's spatial mean, a
//                     direction is the projection of the spatially averaged activation on it. Output
//                     "objective" is per item, [N]: batch items are independent, so one run yields
//                     each item's own gradient (many features in one batch).
//   sum             — Σ of every element of T (a loss that is already a scalar).
//   cotangent       — Σ c ⊙ T with c a graph input of T's shape: the plain vector-Jacobian product.
import { LegibleError } from '@legible/studies';
import { irVersionFor, node, tensorInfo } from '../onnx/graph.ts';
import { decodeModel, type ModelProto, type NodeProto, type TensorProto, type ValueInfoProto } from '../onnx/proto.ts';
import { constantTensors } from '../onnx/constants.ts';
import { Attrs, Emitter } from './emit.ts';
import { inferredTensors, isFloat, measureTensors, type MetaMap } from './meta.ts';
import { RULES, SUPPORTED_OPS } from './rules.ts';

export type ObjectiveKind = 'mean-projection' | 'sum' | 'cotangent';

export interface Objective {
  /** The tensor the objective reads (any node output or graph input). */
  tensor: string;
  /** Default mean-projection. */
  kind?: ObjectiveKind;
  /** Mean-projection: channels on the last axis ([N, …positions, C]: nhwc, tokens) instead of axis 1, with `skip` leading positions on axis 1 (class tokens) left out of the mean. */
  layout?: { channelsLast: boolean; skip?: number };
}

export interface GradientSpec {
  /** Tensors to differentiate with respect to: graph inputs, initializers (parameters) or intermediate tensors. */
  wrt: readonly string[];
  /** One objective, or several whose values add up. */
  objective: Objective | readonly Objective[];
  /** Forward tensors to return as well. */
  outputs?: readonly string[];
  /** `inputs`: initializers in `wrt` become graph inputs, fed at each run (training). Default: they stay initializers. */
  params?: 'initializers' | 'inputs';
  /** Tensors treated as constants: no gradient flows through them (e.g. a regression target). */
  stopGradient?: readonly string[];
  /** Shapes of graph inputs (all of them), making the model static; default: as declared, batch dynamic. */
  inputShapes?: Record<string, readonly number[]>;
  /** Metadata measured before (measureTensors) for the same inputShapes. */
  meta?: MetaMap;
}

export interface GradientModel {
  model: ModelProto;
  /** Output with the objective: [N] when every objective is a mean-projection, else a scalar. */
  objective: string;
  /** Per objective, the name of its graph input (weights [N, C] or cotangent), if it has one. */
  objectiveInputs: (string | null)[];
  /** wrt tensor → output name of its gradient. */
  grads: Record<string, string>;
  /** Requested forward tensor → output name (the same name). */
  outputs: Record<string, string>;
  /** Initializers moved to graph inputs (params: 'inputs'), with their values. */
  params: TensorProto[];
  meta: MetaMap;
}

/** The lowest opset whose semantics this builder emits; older models are refused, newer kept. */
const MIN_OPSET = 13;
const EMIT_OPSET = 17;

/** A LegibleError (the command line prints its message) raised by the gradient builder. */
export class GradientError extends LegibleError {}

/**
 * Every tensor's type and shape from shape inference, where it derives all of them (graph inputs,
 * node outputs, initializers) and no input shape is given: no run of the model with every tensor
 * tapped (minutes on VGG-16 at 224 px). Null otherwise: measured then.
 */
function inferredMeta(model: ModelProto, inputShapes?: Record<string, readonly number[]>): MetaMap | null {
  if (inputShapes && Object.keys(inputShapes).length) return null;
  const meta = inferredTensors(model);
  const g = model.graph!;
  for (const v of g.input ?? []) if (v.name && !meta.has(v.name)) return null;
  for (const n of g.node ?? []) for (const o of n.output ?? []) if (o && !meta.has(o)) return null;
  return meta;
}

export async function buildGradientModel(input: ModelProto | Uint8Array, spec: GradientSpec): Promise<GradientModel> {
  const model = input instanceof Uint8Array ? decodeModel(input) : input;
  const g = model.graph;
  if (!g) throw new GradientError('the model has no graph');
  const opset = Number(model.opset_import?.find((o) => !o.domain)?.version ?? 1);
  if (opset < MIN_OPSET) throw new GradientError(`the model uses ONNX opset ${opset}; gradients need opset ${MIN_OPSET} or newer (re-export it, e.g. torch.onnx.export(..., opset_version=17))`);
  const meta = spec.meta ?? inferredMeta(model, spec.inputShapes) ?? (await measureTensors(model, spec.inputShapes));
  const objectives = Array.isArray(spec.objective) ? (spec.objective as Objective[]) : [spec.objective as Objective];
  const nodes = g.node ?? [];
  const initializers = new Map((g.initializer ?? []).map((t) => [t.name!, t]));
  // Values of initializers, Constant nodes and Identity copies of them (torch.onnx reads identical
  // initializers through Identity nodes), for rules that need a constant (Pad's pads, …).
  const constants = constantTensors(g).values;
  const known = (t: string) => meta.has(t);
  for (const t of [...spec.wrt, ...objectives.map((o) => o.tensor), ...(spec.outputs ?? [])]) {
    if (!known(t)) throw new GradientError(`the model has no tensor "${t}"`);
  }
  for (const t of spec.wrt) if (!isFloat(meta.get(t)!.type)) throw new GradientError(`cannot differentiate with respect to "${t}": it is not a float tensor`);

  // ── Which tensors depend on wrt (forward), which lead to the objectives (backward). ──
  const stop = new Set(spec.stopGradient ?? []);
  const depends = new Set(spec.wrt.filter((t) => !stop.has(t)));
  for (const n of nodes) {
    if ((n.input ?? []).some((i) => depends.has(i))) {
      for (const o of n.output ?? []) if (o && !stop.has(o) && isFloat(meta.get(o)?.type)) depends.add(o);
    }
  }
  const reaches = new Set(objectives.map((o) => o.tensor));
  const needed = new Set<string>([...reaches, ...(spec.outputs ?? [])]);
  for (let i = nodes.length - 1; i >= 0; i--) {
    const n = nodes[i];
    const outs = n.output ?? [];
    if (outs.some((o) => reaches.has(o))) for (const x of n.input ?? []) if (x && depends.has(x)) reaches.add(x);
    if (outs.some((o) => needed.has(o))) for (const x of n.input ?? []) if (x) needed.add(x);
  }
  for (const t of spec.wrt) {
    if (!reaches.has(t)) throw new GradientError(`the objective does not depend on "${t}" (no differentiable path from it to ${objectives.map((o) => `"${o.tensor}"`).join(', ')})`);
  }

  // ── The emitter, and the objective nodes with their seed gradients. ──
  const taken = new Set<string>([...meta.keys(), ...initializers.keys(), ...(g.input ?? []).map((v) => v.name!)]);
  for (const n of nodes) for (const o of n.output ?? []) taken.add(o);
  const e = new Emitter(meta, taken, constants);
  const contributions = new Map<string, string[]>();
  const contribute = (t: string, grad: string) => {
    const list = contributions.get(t);
    if (list) list.push(grad);
    else contributions.set(t, [grad]);
  };
  const extraInputs: ValueInfoProto[] = [];
  const objectiveInputs: (string | null)[] = [];
  const values: string[] = [];
  const perItem = objectives.every((o) => (o.kind ?? 'mean-projection') === 'mean-projection');
  objectives.forEach((o, i) => {
    const t = o.tensor;
    const type = meta.get(t)!.type;
    if (!isFloat(type)) throw new GradientError(`objective tensor "${t}" is not a float tensor`);
    const kind = o.kind ?? 'mean-projection';
    const suffix = objectives.length > 1 ? `:${i}` : '';
    if (kind === 'mean-projection') {
      const rank = e.rank(t);
      if (rank < 2) throw new GradientError(`objective tensor "${t}" has rank ${rank}; a mean-projection needs [N, C, …]`);
      const last = (o.layout?.channelsLast ?? false) && rank > 2;
      const channels = e.fixed(t, last ? rank - 1 : 1, 'a mean-projection objective');
      const w = `objective_weights${suffix}`;
      const batch = meta.get(t)!.dims[0];
      extraInputs.push(tensorInfo(w, type, [batch >= 0 ? batch : 'N', channels]));
      objectiveInputs.push(w);
      if (last) {
        // Σ_p,c x[n, p, c] · w[n, c] · m[p], m = 1/positions, 0 on the skipped (class) tokens.
        const axes = Array.from({ length: rank - 2 }, (_, k) => k + 1);
        const grid = axes.map((ax) => e.fixed(t, ax, 'a mean-projection objective'));
        const skip = o.layout?.skip ?? 0;
        const per = grid.slice(1).reduce((p, d) => p * d, 1);
        const positions = grid.reduce((p, d) => p * d, 1) - skip * per;
        const mask = Float32Array.from({ length: grid[0] * per }, (_, i) => (Math.floor(i / per) < skip ? 0 : 1 / positions));
        const weights = e.mul(e.unsqueeze(w, axes), e.floats(mask, [1, ...grid, 1], type, 'objective_mask'));
        const projected = e.reduceSum(e.mul(t, weights), [...axes, rank - 1], false);
        values.push(perItem ? projected : e.sumAll(projected));
        if (depends.has(t)) contribute(t, e.expand(weights, e.shape(t)));
        return;
      }
      const spatial = Array.from({ length: rank - 2 }, (_, k) => k + 2);
      const positions = spatial.reduce((p, ax) => p * e.fixed(t, ax, 'a mean-projection objective'), 1);
      const mean = spatial.length ? e.scale(e.reduceSum(t, spatial, false), 1 / positions, t) : t;
      const projected = e.reduceSum(e.mul(mean, w), [1], false);
      values.push(perItem ? projected : e.sumAll(projected));
      if (depends.has(t)) contribute(t, e.expand(e.unsqueeze(e.scale(w, 1 / positions, t), spatial), e.shape(t)));
    } else if (kind === 'sum') {
      objectiveInputs.push(null);
      values.push(e.sumAll(t));
      if (depends.has(t)) contribute(t, e.expand(e.scalar(1, t), e.shape(t)));
    } else {
      const c = `cotangent${suffix}`;
      extraInputs.push(tensorInfo(c, type, meta.get(t)!.dims.map((d, k) => (d >= 0 ? d : k === 0 ? 'N' : null))));
      objectiveInputs.push(c);
      values.push(e.sumAll(e.mul(t, c)));
      if (depends.has(t)) contribute(t, c);
    }
  });
  const objectiveName = 'objective';
  e.nodes.push(node(values.length === 1 ? 'Identity' : 'Sum', values, [objectiveName], [], { name: 'vjp/objective' }));
  taken.add(objectiveName);

  // ── Backward pass. ──
  const gradOf = (t: string): string | null => {
    const list = contributions.get(t);
    if (!list?.length) return null;
    if (list.length === 1) return list[0];
    const total = e.op('Sum', list, [], 'accumulate');
    contributions.set(t, [total]);
    return total;
  };
  const wrtSet = new Set(spec.wrt);
  for (let i = nodes.length - 1; i >= 0; i--) {
    const n = nodes[i];
    const outs = n.output ?? [];
    const ins = n.input ?? [];
    if (!outs.some((o) => depends.has(o) && reaches.has(o))) continue;
    if (!ins.some((x) => x && depends.has(x))) continue;
    const gy = outs.map((o) => (depends.has(o) && reaches.has(o) ? gradOf(o) : null));
    if (gy.every((x) => x === null)) continue;
    const op = n.op_type ?? '?';
    if (n.domain && n.domain !== 'ai.onnx') throw unsupported(n);
    const rule = RULES[op];
    if (!rule) throw unsupported(n);
    const need = ins.map((x) => Boolean(x) && depends.has(x) && reaches.has(x));
    let grads;
    try {
      grads = rule({ n, x: ins, y: outs, gy, need, e, a: new Attrs(n) });
    } catch (err) {
      if (err instanceof LegibleError) throw new GradientError(`${op} node "${n.name ?? outs[0]}": ${err.message}`);
      throw err;
    }
    ins.forEach((x, k) => {
      const gx = grads[k];
      if (need[k] && gx) contribute(x, gx);
    });
    // Free the summed list of tensors no longer needed (wrt tensors keep theirs for the outputs).
    for (const o of outs) if (!wrtSet.has(o)) contributions.delete(o);
  }

  // ── Assemble: pruned forward nodes, objective and backward nodes, outputs. ──
  const grads: Record<string, string> = {};
  const outputs: ValueInfoProto[] = [tensorInfo(objectiveName, meta.get(objectives[0].tensor)!.type)];
  for (const t of spec.wrt) {
    const gradient = gradOf(t);
    if (!gradient) throw new GradientError(`no gradient reached "${t}"`);
    const name = `grad:${t}`;
    e.nodes.push(node('Identity', [gradient], [name], [], { name }));
    grads[t] = name;
    outputs.push(tensorInfo(name, meta.get(t)!.type));
  }
  const forwardOutputs: Record<string, string> = {};
  for (const t of spec.outputs ?? []) {
    forwardOutputs[t] = t;
    outputs.push(tensorInfo(t, meta.get(t)!.type));
  }
  const backwardInputs = new Set(e.nodes.flatMap((n) => n.input ?? []));
  const keep = nodes.filter((n) => (n.output ?? []).some((o) => needed.has(o) || backwardInputs.has(o)));
  // Forward tensors read by backward nodes are ancestors of the objective; make sure their producers are kept.
  const used = new Set<string>([...keep.flatMap((n) => n.input ?? []), ...backwardInputs]);
  const paramNames = spec.params === 'inputs' ? new Set(spec.wrt.filter((t) => initializers.has(t))) : new Set<string>();
  const params = [...paramNames].map((t) => initializers.get(t)!);
  const inits = [...initializers.values()].filter((t) => used.has(t.name!) && !paramNames.has(t.name!));
  const graphInputs = [
    ...(g.input ?? []).filter((v) => used.has(v.name!) && !initializers.has(v.name!)),
    ...params.map((t) => tensorInfo(t.name!, t.data_type!, (t.dims ?? []).map(Number))),
    ...extraInputs,
  ];
  const opsets = (model.opset_import ?? []).map((o) => (o.domain ? { ...o } : { ...o, version: Math.max(opset, EMIT_OPSET) }));
  const out: ModelProto = {
    ...model,
    ir_version: Math.max(Number(model.ir_version ?? 0), irVersionFor(Math.max(opset, EMIT_OPSET))),
    opset_import: opsets,
    graph: {
      name: `${g.name ?? 'model'}_grad`,
      node: [...keep, ...e.nodes],
      initializer: [...inits, ...e.initializers],
      input: graphInputs,
      output: outputs,
    },
  };
  delete out.training_info;
  return { model: out, objective: objectiveName, objectiveInputs, grads, outputs: forwardOutputs, params, meta };
}

function unsupported(n: NodeProto): GradientError {
  const where = `node "${n.name || n.output?.[0]}"`;
  const domain = n.domain && n.domain !== 'ai.onnx' ? ` (domain ${n.domain})` : '';
  return new GradientError(`no gradient rule for op ${n.op_type}${domain}, ${where}. Ops with rules: ${SUPPORTED_OPS.join(', ')}`);
}
