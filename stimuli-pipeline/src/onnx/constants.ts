// Constant subgraphs: tensors a graph computes from its initializers and Constant nodes alone, the
// same for every input. Exporters leave such nodes behind: torch.onnx, for one, stores identical
// initializers once and reads the copies through Identity nodes (16 in a ResNet-18 with
// torchvision's initialisation, 47 in a ResNet-50), and leaves shape arithmetic on constants.
// Whoever cuts a graph or differentiates it must treat them as constants, not as per-image values.
import type { GraphProto, NodeProto, TensorProto } from './proto.ts';

/** Ops whose output is not a function of their inputs: never constant. */
const RANDOM = new Set(['RandomNormal', 'RandomUniform', 'RandomNormalLike', 'RandomUniformLike', 'Multinomial', 'Bernoulli']);

export interface ConstantTensors {
  /** Every constant tensor: initializers, Constant outputs, outputs of nodes whose inputs are all constant. */
  names: Set<string>;
  /** The nodes that compute constant tensors (Constant nodes included), in graph order. */
  nodes: NodeProto[];
  /** Values known without running anything: initializers, Constant `value`s, and Identity copies of them. */
  values: Map<string, TensorProto>;
}

/**
 * The constant tensors of a graph (its main graph only: subgraphs of If/Loop are not searched, and a
 * node with a subgraph attribute is never constant, since its body may read outer tensors).
 */
export function constantTensors(graph: GraphProto): ConstantTensors {
  const values = new Map<string, TensorProto>((graph.initializer ?? []).map((t) => [t.name!, t]));
  const names = new Set(values.keys());
  // (An initializer also listed as a graph input, as IR 3 files do, counts as constant too: nobody
  // feeds it, so its stored value is what every run uses.)
  const nodes: NodeProto[] = [];
  for (const n of graph.node ?? []) {
    const op = n.op_type ?? '';
    if (n.domain && n.domain !== 'ai.onnx') continue;
    if (RANDOM.has(op) || n.attribute?.some((a) => a.g || a.graphs?.length)) continue;
    const inputs = (n.input ?? []).filter((i) => i !== '');
    const constant = op === 'Constant' || (inputs.length > 0 && inputs.every((i) => names.has(i)));
    if (!constant) continue;
    nodes.push(n);
    for (const o of n.output ?? []) if (o) names.add(o);
    const out = n.output?.[0];
    if (!out) continue;
    if (op === 'Constant') {
      const t = n.attribute?.find((a) => a.name === 'value')?.t;
      if (t) values.set(out, t);
    } else if (op === 'Identity') {
      const t = values.get(inputs[0]);
      if (t) values.set(out, t);
    }
  }
  return { names, nodes, values };
}
