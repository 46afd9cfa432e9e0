// Losses appended to a model graph, so the gradient engine can train its parameters (e.g. fine-tune
// the demo model): buildGradientModel(withCrossEntropy(model), { wrt: parameterNames(model),
// objective: { tensor: 'loss', kind: 'sum' }, params: 'inputs' }) and Adam from adam.ts.
import { LegibleError } from '@legible/studies';
import { attr, node, tensorInfo } from '../onnx/graph.ts';
import { DataType, int64Tensor, type ModelProto } from '../onnx/proto.ts';

/**
 * The model with an int64 input `labels` [N] and a scalar output `loss`: the mean cross-entropy of
 * softmax(logits) against the labels. `logits`: the [N, K] tensor (default: the first output).
 */
export function withCrossEntropy(model: ModelProto, logits = model.graph?.output?.[0]?.name): ModelProto {
  const g = model.graph;
  if (!g || !logits) throw new LegibleError('the model has no output to put a loss on');
  const names = new Set([...(g.node ?? []).flatMap((n) => n.output ?? []), ...(g.input ?? []).map((v) => v.name)]);
  for (const t of ['labels', 'loss']) if (names.has(t)) throw new LegibleError(`the model already has a tensor "${t}"`);
  return {
    ...model,
    graph: {
      ...g,
      node: [
        ...(g.node ?? []),
        node('LogSoftmax', [logits], ['loss/logp'], [attr.int('axis', 1)]),
        node('Unsqueeze', ['labels', 'loss/axis1'], ['loss/labels']),
        node('GatherElements', ['loss/logp', 'loss/labels'], ['loss/picked'], [attr.int('axis', 1)]),
        node('ReduceMean', ['loss/picked'], ['loss/mean'], [attr.int('keepdims', 0)]),
        node('Neg', ['loss/mean'], ['loss']),
      ],
      initializer: [...(g.initializer ?? []), int64Tensor('loss/axis1', [1], [1])],
      input: [...(g.input ?? []), tensorInfo('labels', DataType.INT64, ['N'])],
      output: [...(g.output ?? []), tensorInfo('loss', DataType.FLOAT, [])],
    },
  };
}

/** Names of the float initializers of a model: its trainable parameters. */
export function parameterNames(model: ModelProto): string[] {
  return (model.graph?.initializer ?? []).filter((t) => t.data_type === DataType.FLOAT && (t.dims ?? []).length > 0).map((t) => t.name!);
}
