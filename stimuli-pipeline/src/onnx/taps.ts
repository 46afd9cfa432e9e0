// Taps: expose intermediate tensors of an ONNX model as extra graph outputs, so that one
// onnxruntime run returns the model's outputs and every tapped layer together.
import { LegibleError, nearestNames } from '@legible/studies';
import { constantTensors } from './constants.ts';
import { attr, describeValue, type Dim } from './graph.ts';
import { dataTypeName, decodeModel, encodeModel, int64Tensor, type GraphProto, type ModelProto, type NodeProto, type ValueInfoProto } from './proto.ts';

export interface TensorEntry {
  name: string;
  /** input: a graph input; node: computed by a node; initializer: a stored constant (weights). */
  kind: 'input' | 'node' | 'initializer';
  /** Op type of the node that produces it ("Conv"), or "input" / "initializer". */
  op: string;
  /** Name of the producing node ('' when the node has no name or there is none). */
  node: string;
  /** Element type name ("float", "int64", …) where known. */
  type?: string;
  /** Shape where the model declares it (graph inputs/outputs, value_info, initializer dims). */
  shape?: Dim[];
  /** Whether addTaps accepts it: graph inputs and node outputs, not initializers. */
  tappable: boolean;
  /** Whether it already is a graph output. */
  output: boolean;
  /** Computed from stored weights alone (folded constants, shapes): the same for every image. */
  constant: boolean;
}

/**
 * Every tensor of the model's main graph, in graph order: inputs, then node outputs in node order,
 * then initializers (not tappable). Tensors inside subgraphs (If/Loop bodies) are not listed.
 */
export function listTensors(model: ModelProto): TensorEntry[] {
  const g = model.graph ?? {};
  const infos = new Map<string, ValueInfoProto>();
  for (const v of [...(g.value_info ?? []), ...(g.input ?? []), ...(g.output ?? [])]) if (v.name) infos.set(v.name, v);
  const outputs = new Set((g.output ?? []).map((o) => o.name));
  const initializers = new Map((g.initializer ?? []).map((t) => [t.name ?? '', t]));
  const seen = new Set<string>();
  const out: TensorEntry[] = [];
  // Constants: initializers, and what nodes compute from them alone (onnx/constants.ts).
  const constants = constantTensors(g).names;
  const add = (name: string, kind: TensorEntry['kind'], op: string, node: string) => {
    if (!name || seen.has(name)) return;
    seen.add(name);
    const e: TensorEntry = { name, kind, op, node, tappable: kind !== 'initializer', output: outputs.has(name), constant: constants.has(name) };
    const init = initializers.get(name);
    if (kind === 'initializer' && init) {
      e.type = dataTypeName(init.data_type);
      e.shape = (init.dims ?? []).map(Number);
    } else {
      const { elemType, shape } = describeValue(infos.get(name));
      if (elemType !== undefined) e.type = dataTypeName(elemType);
      if (shape) e.shape = shape;
    }
    out.push(e);
  };
  for (const v of g.input ?? []) if (!initializers.has(v.name ?? '')) add(v.name ?? '', 'input', 'input', '');
  for (const n of g.node ?? []) for (const o of n.output ?? []) add(o, 'node', n.op_type ?? '?', n.name ?? '');
  for (const name of initializers.keys()) add(name, 'initializer', 'initializer', '');
  return out;
}

/**
 * The model with the named tensors added to its graph outputs (after the original outputs, which are
 * kept; names that already are outputs are not added twice). Throws a LegibleError naming the nearest
 * existing tensors for a name the graph does not have, or one that is an initializer.
 */
export function addTapsToModel(model: ModelProto, tensorNames: readonly string[]): ModelProto {
  const graph = model.graph;
  if (!graph) throw new LegibleError('the model has no graph');
  const entries = listTensors(model);
  const byName = new Map(entries.map((e) => [e.name, e]));
  const tappable = entries.filter((e) => e.tappable).map((e) => e.name);
  const infos = new Map<string, ValueInfoProto>();
  for (const v of graph.value_info ?? []) if (v.name) infos.set(v.name, v);

  const outputs = [...(graph.output ?? [])];
  const present = new Set(outputs.map((o) => o.name));
  for (const name of tensorNames) {
    const e = byName.get(name);
    if (!e) {
      const near = nearestNames(name, tappable);
      throw new LegibleError(
        `the model has no tensor "${name}". Nearest names: ${near.map((n) => `"${n}"`).join(', ')}.\n` +
          '  Run `legible layers model.onnx` to list every tensor that can be tapped.',
      );
    }
    if (!e.tappable) {
      throw new LegibleError(
        `"${name}" is an initializer (stored weights), not a tensor the model computes; tap the output of a node instead.\n` +
          '  Run `legible layers model.onnx` to list every tensor that can be tapped.',
      );
    }
    if (present.has(name)) continue;
    present.add(name);
    // onnxruntime infers the type of an output that carries only its name.
    const info = infos.get(name);
    outputs.push(info ? { ...info } : { name });
  }
  return { ...model, graph: { ...graph, output: outputs } };
}

/**
 * Model bytes → model bytes whose graph outputs also include `tensorNames`, so one onnxruntime run
 * yields them all. The original outputs stay first and unchanged.
 */
export function addTaps(modelBytes: Uint8Array, tensorNames: readonly string[]): Uint8Array {
  return encodeModel(addTapsToModel(decodeModel(modelBytes), tensorNames));
}

/**
 * Model bytes → model bytes whose only outputs are the named tensors, without the nodes they do not
 * need (the layers after the deepest one, the classifier): for a run that reads the taps alone.
 */
export function tapsOnly(modelBytes: Uint8Array, tensorNames: readonly string[]): Uint8Array {
  const tapped = addTapsToModel(decodeModel(modelBytes), tensorNames);
  const graph = tapped.graph!;
  const wanted = new Set(tensorNames);
  const outputs = (graph.output ?? []).filter((o) => wanted.has(o.name ?? ''));
  return encodeModel({ ...tapped, graph: pruneGraph({ ...graph, output: outputs }) });
}

/** Names of the reduced outputs that addReducedTaps adds for a tapped tensor. */
export const reducedName = (tensor: string, how: 'mean' | 'max') => `legible.${how}(${tensor})`;

/** Where a tapped tensor keeps its channels: nchw [N, C, …]; channels last [N, …, C] (nhwc, tokens), with `skip` leading positions (class tokens) left out. */
export interface TapLayout {
  channelsLast: boolean;
  skip?: number;
}

/**
 * Model bytes → model bytes whose only outputs are, for each tapped tensor, its spatial mean and its
 * spatial max per channel ([N, C]), computed in the graph (GlobalAveragePool / GlobalMaxPool, then
 * Flatten, for nchw; ReduceMean / ReduceMax over the position axes, after slicing off class tokens,
 * for channels-last layouts). Much less data leaves onnxruntime than with the raw feature maps.
 * `rank` is each tensor's rank; a rank-2 tensor ([N, C]) is its own mean and max. Nodes that no
 * reduced output needs (the layers after the deepest tap, the classifier) are left out.
 */
export function addReducedTaps(modelBytes: Uint8Array, taps: readonly { tensor: string; rank: number; layout?: TapLayout }[]): Uint8Array {
  const tapped = addTapsToModel(decodeModel(modelBytes), taps.map((t) => t.tensor));
  const graph = tapped.graph!;
  const nodes = [...(graph.node ?? [])];
  const initializers = [...(graph.initializer ?? [])];
  const opset = Number((tapped.opset_import ?? []).find((o) => !o.domain)?.version ?? 13);
  const outputs: ValueInfoProto[] = [];
  for (const [i, { tensor, rank, layout }] of taps.entries()) {
    for (const how of ['mean', 'max'] as const) {
      const out = reducedName(tensor, how);
      if (rank === 2) {
        nodes.push({ op_type: 'Identity', input: [tensor], output: [out], name: `legible_tap${i}_${how}` });
      } else if (layout?.channelsLast) {
        let x = tensor;
        if (layout.skip) {
          // Drop the class tokens: x[:, skip:].
          const name = (what: string) => `legible_tap${i}_${how}_${what}`;
          initializers.push(int64Tensor(name('starts'), [1], [layout.skip]), int64Tensor(name('ends'), [1], [2 ** 53 - 1]), int64Tensor(name('axes'), [1], [1]));
          nodes.push({ op_type: 'Slice', input: [tensor, name('starts'), name('ends'), name('axes')], output: [name('sliced')], name: name('slice') });
          x = name('sliced');
        }
        const axes = Array.from({ length: rank - 2 }, (_, k) => k + 1);
        const op = how === 'mean' ? 'ReduceMean' : 'ReduceMax';
        const reduce: NodeProto = { op_type: op, input: [x], output: [out], name: `legible_tap${i}_${how}_reduce`, attribute: [attr.int('keepdims', 0)] };
        // Opset 18 moved the axes of ReduceMean/ReduceMax from an attribute to an input.
        if (opset >= 18) {
          initializers.push(int64Tensor(`legible_tap${i}_${how}_axes`, [axes.length], axes));
          reduce.input!.push(`legible_tap${i}_${how}_axes`);
        } else reduce.attribute!.push(attr.ints('axes', axes));
        nodes.push(reduce);
      } else {
        const pooled = `${out}.pooled`;
        nodes.push({ op_type: how === 'mean' ? 'GlobalAveragePool' : 'GlobalMaxPool', input: [tensor], output: [pooled], name: `legible_tap${i}_${how}_pool` });
        nodes.push({ op_type: 'Flatten', input: [pooled], output: [out], name: `legible_tap${i}_${how}_flatten` });
      }
      outputs.push({ name: out });
    }
  }
  return encodeModel({ ...tapped, graph: pruneGraph({ ...graph, node: nodes, initializer: initializers, output: outputs }) });
}

/** Names a node reads, including the outer tensors that its subgraphs (If/Loop/Scan bodies) read. */
function reads(n: NodeProto): string[] {
  const names = [...(n.input ?? [])];
  const visit = (g: GraphProto) => {
    for (const m of g.node ?? []) names.push(...reads(m));
  };
  for (const a of n.attribute ?? []) {
    if (a.g) visit(a.g);
    for (const g of a.graphs ?? []) visit(g);
  }
  return names;
}

/**
 * The nodes (in topological order) that compute the tensors in `needed`, kept in their order;
 * `needed` grows by every name they read (their subgraphs' outer reads included).
 */
export function neededNodes(nodes: readonly NodeProto[], needed: Set<string>): NodeProto[] {
  const keep = new Array<boolean>(nodes.length).fill(false);
  for (let i = nodes.length - 1; i >= 0; i--) {
    if (!(nodes[i].output ?? []).some((o) => needed.has(o))) continue;
    keep[i] = true;
    for (const x of reads(nodes[i])) if (x) needed.add(x);
  }
  return nodes.filter((_, i) => keep[i]);
}

/**
 * The graph without the nodes its outputs do not need, and without the initializers no kept node
 * reads. onnxruntime runs every node of a graph, needed or not (ResNet-50 reduced to layer1 still
 * ran all 53 convolutions and the classifier), so a model cut to its taps runs only up to the
 * deepest one. Graph inputs are kept as they are; nodes stay in their (topological) order.
 */
export function pruneGraph(graph: GraphProto): GraphProto {
  const needed = new Set((graph.output ?? []).map((o) => o.name ?? ''));
  const node = neededNodes(graph.node ?? [], needed);
  const inputs = new Set((graph.input ?? []).map((v) => v.name));
  return {
    ...graph,
    node,
    // An initializer that is also listed as a graph input (older exporters) stays: it can be fed.
    initializer: (graph.initializer ?? []).filter((t) => needed.has(t.name ?? '') || inputs.has(t.name)),
  };
}
