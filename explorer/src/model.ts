// The model the explorer's "try an image" panel runs in the browser: the study's model truncated
// at its tapped tensors, with the pipeline's in-graph reductions (onnx/taps.ts: addReducedTaps, the
// spatial mean and max per channel that `legible stimuli` stores), the raw tapped tensors for the
// heat maps, and per SAE layer the encoder's pre-activations. (NMF codes are solved from the spatial
// mean in JavaScript, in float64, as the pipeline solves them: stimuli-pipeline/src/hals.ts.) Everything the outputs do not need — the layers after the deepest tap, the classifier —
// is pruned away, weights included.
import {
  addReducedTaps,
  addTapsToModel,
  decodeModel,
  encodeModel,
  float32Tensor,
  modelLayers,
  reducedName,
  type GraphProto,
  type ModelProto,
  type NodeProto,
  type ResolvedLayer,
} from '@legible/stimuli-pipeline';
import type { Study } from '@legible/studies';

export const saePreName = (tensor: string) => `legible.sae_pre(${tensor})`;

/** A layer's SAE encoder, as the pipeline trained it (train/sae.ts). */
export interface SaeEncoder {
  W_enc: Float32Array;
  b_enc: Float32Array;
  b_pre: Float32Array;
  scale: number;
}

export interface ProbeLayer {
  name: string;
  tensor: string;
  layout: ResolvedLayer['layout'];
  classTokens: number;
  /** One image's tapped tensor (batch removed). */
  shape: number[];
  channels: number;
  channelAxis: number;
  spatialAxes: number[];
  outputs: { raw: string; mean: string; max: string; sae?: string };
}

/** The probe model's bytes and, per layer, the names of its outputs. `sae`: each SAE layer's encoder. */
export async function probeModel(
  modelBytes: Uint8Array,
  study: Study,
  sae: Map<string, SaeEncoder> = new Map(),
): Promise<{ bytes: Uint8Array; layers: ProbeLayer[] }> {
  const resolved = await modelLayers(modelBytes, study.model.layers);
  const reduced = addReducedTaps(
    modelBytes,
    resolved.map((l) => ({ tensor: l.tensor, rank: l.shape.length + 1, layout: { channelsLast: l.layout !== 'nchw', skip: l.classTokens } })),
  );
  let model = addTapsToModel(decodeModel(reduced), resolved.map((l) => l.tensor));
  const graph = model.graph!;
  const nodes = [...(graph.node ?? [])];
  const initializers = [...(graph.initializer ?? [])];
  const outputs = [...(graph.output ?? [])];
  const layers: ProbeLayer[] = resolved.map((l, i) => {
    const out: ProbeLayer['outputs'] = { raw: l.tensor, mean: reducedName(l.tensor, 'mean'), max: reducedName(l.tensor, 'max') };
    const enc = sae.get(l.name);
    if (enc) {
      // The SAE encoder's graph up to its pre-activations, op for op as train/sae.ts builds it
      // (Sub, Mul by float32 1/s, MatMul, Add); TopK, ReLU and the scale s follow in JavaScript.
      const d = enc.b_enc.length;
      const name = (what: string) => `legible_probe${i}_sae_${what}`;
      out.sae = saePreName(l.tensor);
      initializers.push(float32Tensor(name('b_pre'), [l.channels], enc.b_pre), float32Tensor(name('inv_scale'), [], [1 / enc.scale]), float32Tensor(name('W_enc'), [l.channels, d], enc.W_enc), float32Tensor(name('b_enc'), [d], enc.b_enc));
      nodes.push(
        { op_type: 'Sub', input: [out.mean, name('b_pre')], output: [name('centred')], name: name('sub') },
        { op_type: 'Mul', input: [name('centred'), name('inv_scale')], output: [name('xn')], name: name('mul') },
        { op_type: 'MatMul', input: [name('xn'), name('W_enc')], output: [name('enc')], name: name('matmul') },
        { op_type: 'Add', input: [name('enc'), name('b_enc')], output: [out.sae], name: name('add') },
      );
      outputs.push({ name: out.sae });
    }
    return { name: l.name, tensor: l.tensor, layout: l.layout, classTokens: l.classTokens, shape: l.shape, channels: l.channels, channelAxis: l.channelAxis, spatialAxes: l.spatialAxes, outputs: out };
  });
  model = pruneToOutputs({ ...model, graph: { ...graph, node: nodes, initializer: initializers, output: outputs } });
  return { bytes: encodeModel(model), layers };
}

/** Names a node reads, its subgraphs' (If/Loop bodies) outer-scope reads included. */
function reads(n: NodeProto, out: Set<string>): void {
  for (const x of n.input ?? []) if (x) out.add(x);
  for (const a of n.attribute ?? []) for (const g of [a.g, ...(a.graphs ?? [])]) if (g) for (const m of (g as GraphProto).node ?? []) reads(m, out);
}

/** The model with only the nodes, initializers and value infos its graph outputs depend on. */
export function pruneToOutputs(model: ModelProto): ModelProto {
  const g = model.graph!;
  const need = new Set((g.output ?? []).map((o) => o.name!));
  const kept: NodeProto[] = [];
  const nodes = g.node ?? [];
  for (let i = nodes.length - 1; i >= 0; i--) {
    const n = nodes[i];
    if (!(n.output ?? []).some((o) => need.has(o))) continue;
    kept.push(n);
    reads(n, need);
  }
  kept.reverse();
  const initializers = (g.initializer ?? []).filter((t) => need.has(t.name!));
  return {
    ...model,
    graph: {
      ...g,
      node: kept,
      initializer: initializers,
      // The image input stays; inputs that only fed pruned nodes go (initializer-backed ones with them).
      input: (g.input ?? []).filter((v) => need.has(v.name!)),
      value_info: (g.value_info ?? []).filter((v) => need.has(v.name!)),
    },
  };
}
