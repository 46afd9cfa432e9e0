import { visualize } from './grad-commands.ts';
import { readFileSync } from 'node:fs';
import { intOption, LegibleError, parseCommandArgs, UsageError, type Command } from '@legible/studies';
import { describeValue, type Dim } from './onnx/graph.ts';
import { DataType, dataTypeName, decodeModel, encodeModel, type ModelProto } from './onnx/proto.ts';
import { addTapsToModel, listTensors, type TensorEntry } from './onnx/taps.ts';
import type { Device } from './runtime.ts';

const showShape = (s: readonly Dim[] | undefined) => (s ? `[${s.map((d) => (d === null ? '?' : d)).join(', ')}]` : '?');

/** Parses "--input-shape 1,3,224,224" or "--input-shape image=1,3,224,224". */
function parseInputShapes(values: string[] | undefined, inputs: string[]): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const v of values ?? []) {
    const eq = v.lastIndexOf('=');
    const name = eq >= 0 ? v.slice(0, eq) : inputs[0];
    const dims = (eq >= 0 ? v.slice(eq + 1) : v).split(/[,x×]/).map((s) => Number(s.trim()));
    if (!dims.length || dims.some((d) => !Number.isInteger(d) || d < 1)) throw new UsageError(`--input-shape expects whole numbers like 1,3,224,224, got "${v}"`);
    if (!inputs.includes(name)) throw new UsageError(`--input-shape: the model has no input "${name}" (inputs: ${inputs.join(', ')})`);
    out.set(name, dims);
  }
  return out;
}

interface Measured {
  shapes: Map<string, { type: string; shape: number[] }>;
  /** Why shapes could not be measured, if they could not. */
  problem?: string;
  /** What was fed, for the footnote. */
  fed: string[];
}

/** Runs onnxruntime once on zero inputs with every tappable tensor tapped; reports actual shapes. */
async function measureShapes(model: ModelProto, tensors: TensorEntry[], given: Map<string, number[]>): Promise<Measured> {
  const fed: string[] = [];
  const feeds: Record<string, { type: number; dims: number[] }> = {};
  const graphInputs = tensors.filter((t) => t.kind === 'input');
  for (const t of graphInputs) {
    const info = model.graph!.input!.find((i) => i.name === t.name);
    const { elemType, shape } = describeValue(info);
    let dims = given.get(t.name);
    if (!dims) {
      if (!shape) return { shapes: new Map(), fed, problem: `input "${t.name}" has no declared shape; pass --input-shape ${t.name}=…` };
      const dynamic = shape.map((d, i) => ({ d, i })).filter(({ d, i }) => typeof d !== 'number' && i > 0);
      if (dynamic.length) {
        return {
          shapes: new Map(),
          fed,
          problem:
            `input "${t.name}" has shape ${showShape(shape)}: dimension${dynamic.length > 1 ? 's' : ''} ` +
            `${dynamic.map(({ d, i }) => (d === null ? `#${i}` : `"${d}"`)).join(', ')} besides the batch ${dynamic.length > 1 ? 'are' : 'is'} not fixed, ` +
            `so shapes cannot be measured. Pass the size to use, e.g. --input-shape ${t.name}=${shape.map((d, i) => (typeof d === 'number' ? d : i === 0 ? 1 : 224)).join(',')}`,
        };
      }
      dims = shape.map((d) => (typeof d === 'number' ? d : 1));
      const batch = shape[0];
      fed.push(`${t.name} ${showShape(dims)}${typeof batch !== 'number' && shape.length ? ` (batch dim ${batch === null ? '?' : `"${batch}"`} set to 1)` : ''}`);
    } else {
      fed.push(`${t.name} ${showShape(dims)}`);
    }
    feeds[t.name] = { type: elemType ?? DataType.FLOAT, dims };
  }

  const ort = await import('onnxruntime-node');
  const tapped = addTapsToModel(model, tensors.filter((t) => t.kind === 'node').map((t) => t.name));
  let session: Awaited<ReturnType<typeof ort.InferenceSession.create>>;
  try {
    session = await ort.InferenceSession.create(encodeModel(tapped), { graphOptimizationLevel: 'disabled', logSeverityLevel: 3 });
  } catch (e) {
    return { shapes: new Map(), fed, problem: `onnxruntime could not load the model with every tensor tapped (${(e as Error).message.split('\n')[0]})` };
  }
  try {
    const ortFeeds: Record<string, InstanceType<typeof ort.Tensor>> = {};
    for (const [name, { type, dims }] of Object.entries(feeds)) {
      const n = dims.reduce((a, b) => a * b, 1);
      const T = ort.Tensor;
      switch (type) {
        case DataType.FLOAT: ortFeeds[name] = new T('float32', new Float32Array(n), dims); break;
        case DataType.DOUBLE: ortFeeds[name] = new T('float64', new Float64Array(n), dims); break;
        case DataType.FLOAT16: ortFeeds[name] = new T('float16', new Uint16Array(n), dims); break;
        case DataType.UINT8: ortFeeds[name] = new T('uint8', new Uint8Array(n), dims); break;
        case DataType.INT8: ortFeeds[name] = new T('int8', new Int8Array(n), dims); break;
        case DataType.INT32: ortFeeds[name] = new T('int32', new Int32Array(n), dims); break;
        case DataType.INT64: ortFeeds[name] = new T('int64', new BigInt64Array(n), dims); break;
        case DataType.BOOL: ortFeeds[name] = new T('bool', new Uint8Array(n), dims); break;
        default: throw new LegibleError(`input "${name}" is ${dataTypeName(type)}; legible layers can only feed numeric inputs`);
      }
    }
    let results: Awaited<ReturnType<typeof session.run>>;
    try {
      results = await session.run(ortFeeds);
    } catch (e) {
      return { shapes: new Map(), fed, problem: `onnxruntime could not run the model on zeros (${(e as Error).message.split('\n')[0]})` };
    }
    const shapes = new Map<string, { type: string; shape: number[] }>();
    for (const [name, value] of Object.entries(results)) shapes.set(name, { type: value.type, shape: [...value.dims] });
    return { shapes, fed };
  } finally {
    await session.release();
  }
}

export const layers: Command = {
  name: 'layers',
  summary: 'List the tensors of an ONNX model that can be tapped as layers, with op and shape',
  usage: '<model.onnx> [--input-shape [NAME=]1,3,224,224] [--all] [--json]',
  help:
    'Each row is a tensor a study can name in `model.layers[].tensor`: the graph inputs and every node output.\n' +
    'Shapes come from the model where it declares them (value_info); otherwise onnxruntime runs once on\n' +
    'zeros with every tensor tapped and the actual shapes are shown (a dynamic batch dimension set to 1).\n\n' +
    '  --input-shape  size to feed where an input has other dynamic dimensions (repeatable: NAME=dims)\n' +
    '  --all          also list initializers (stored weights; they cannot be tapped)\n' +
    '  --json         print the list as JSON',
  async run(argv) {
    const { values, positionals } = parseCommandArgs(
      argv,
      { 'input-shape': { type: 'string', multiple: true }, all: { type: 'boolean' }, json: { type: 'boolean' } },
      { min: 1, max: 1 },
    );
    const file = positionals[0];
    let bytes: Uint8Array;
    try {
      bytes = readFileSync(file);
    } catch (e) {
      throw new LegibleError(`cannot read ${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'file not found' : (e as Error).message}`);
    }
    let model: ModelProto;
    try {
      model = decodeModel(bytes);
    } catch (e) {
      throw new LegibleError(`${file} is not an ONNX model: ${(e as Error).message}`);
    }
    const tensors = listTensors(model);
    const tappable = tensors.filter((t) => t.tappable);
    const given = parseInputShapes(values['input-shape'], tensors.filter((t) => t.kind === 'input').map((t) => t.name));

    const missing = tappable.some((t) => !t.shape || t.shape.some((d) => d === null));
    let measured: Measured | undefined;
    if (missing || given.size) measured = await measureShapes(model, tensors, given);

    // Constants (weights folded by the exporter, shape arithmetic) are the same for every image.
    const shown = values.all ? tensors : tappable.filter((t) => !t.constant);
    const rows = shown.map((t) => {
      const m = measured?.shapes.get(t.name);
      const useMeasured = m && (given.size > 0 || !t.shape || t.shape.some((d) => d === null));
      return {
        name: t.name,
        op: t.op,
        node: t.node,
        type: useMeasured ? m.type : (t.type ?? '?'),
        shape: useMeasured ? m.shape : (t.shape ?? null),
        measured: Boolean(useMeasured),
        output: t.output,
        tappable: t.tappable,
      };
    });

    if (values.json) {
      console.log(JSON.stringify({ model: file, tensors: rows, fed: measured?.fed ?? [], problem: measured?.problem ?? null }, null, 2));
      return 0;
    }
    const table = rows.map((r) => [r.name + (r.output ? ' (output)' : ''), r.op, r.type, showShape(r.shape ?? undefined) + (r.measured ? '*' : '')]);
    const header = ['tensor', 'op', 'type', 'shape'];
    const widths = header.map((h, i) => Math.max(h.length, ...table.map((r) => r[i].length)));
    const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]))).join('  ');
    console.log(line(header));
    console.log(line(widths.map((w) => '─'.repeat(w))));
    for (const r of table) console.log(line(r));
    const hidden = tensors.length - shown.length;
    console.log(`\n${shown.length} tensors${values.all ? '' : ` that vary with the image (${hidden} initializers and constants not shown; --all lists them)`}.`);
    if (measured?.fed.length && !measured.problem) console.log(`* measured by onnxruntime on zeros: ${measured.fed.join('; ')}.`);
    if (measured?.problem) console.log(`Shapes marked ? are unknown: ${measured.problem}.`);
    return 0;
  },
};

export const stimuli: Command = {
  name: 'stimuli',
  summary: 'Build a study\'s stimuli: activations, bases, exemplars, trial images, manifest, report',
  usage: '<study-id | study.yaml> [--device D] [--batch N] [--shard k/n | --merge] [--if-stale]',
  help: [
    'Writes studies/<id>/build/: img/ (content-hashed trial images), manifest.json (deterministic: the',
    'same study, model, images and seeds give the same bytes) and report.html (every feature\'s',
    'references and queries, to look at before running the study). Activations are kept in',
    'build/cache/activations/ in shards: an interrupted build resumes where it stopped.',
    '',
    'Options:',
    '  --device D     auto (default), cpu, webgpu or cuda; auto tries the GPU providers this machine',
    '                 can run, falls back to cpu, and says which it used',
    '  --batch N      images per inference batch (default 32; a model with a fixed batch size uses it)',
    '  --shard k/n    extract only part k of n of the activations (0 ≤ k < n), then stop: one job of a',
    '                 Slurm array or Kubernetes Indexed Job; all jobs share the build folder',
    '  --merge        after all parts: build from the extracted activations, extracting nothing',
    '  --shard-size N images per activation shard (default 1024)',
    '  --if-stale     do nothing when the build is up to date with the study, model and images',
  ].join('\n'),
  async run(argv) {
    const { values, positionals } = parseCommandArgs(
      argv,
      {
        device: { type: 'string' },
        batch: { type: 'string' },
        shard: { type: 'string' },
        merge: { type: 'boolean' },
        'shard-size': { type: 'string' },
        'if-stale': { type: 'boolean' },
      },
      { min: 1, max: 1 },
    );
    const { DEVICES } = await import('./runtime.ts');
    const device = (values.device ?? 'auto') as Device;
    if (!DEVICES.includes(device)) throw new UsageError(`--device expects one of ${DEVICES.join(', ')}, got "${values.device}"`);
    const batchSize = intOption(values.batch, 'batch', 32);
    if (batchSize < 1) throw new UsageError(`--batch expects a whole number ≥ 1, got ${batchSize}`);
    const shardSize = intOption(values['shard-size'], 'shard-size', 1024);
    if (shardSize < 1) throw new UsageError(`--shard-size expects a whole number ≥ 1, got ${shardSize}`);
    if (values.shard && values.merge) throw new UsageError('--shard and --merge go in separate runs: the parts first, then one --merge');
    const { parseShardSlice } = await import('./store.ts');
    const slice = values.shard ? parseShardSlice(values.shard) : undefined;
    const { loadStudy } = await import('@legible/studies');
    const { buildStimuli, ensureBuilt } = await import('./build.ts');
    const loaded = loadStudy(positionals[0]);
    const opts = { device, batchSize, shardSize, slice, merge: values.merge };
    await (values['if-stale'] && !slice ? ensureBuilt : buildStimuli)(loaded, opts);
    return 0;
  },
};

export const commands: Command[] = [layers, stimuli, visualize];
