import { visualize } from './grad-commands.ts';
import { existsSync } from 'node:fs';
import { intOption, LegibleError, parseCommandArgs, UsageError, type Command } from '@legible/studies';
import type { TensorLayout } from './layout.ts';
import type { ModelProto } from './onnx/proto.ts';
import type { Dim } from './onnx/shapes.ts';
import { validate } from './study-check.ts';
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

const showLayout = (l: TensorLayout | null) => (!l ? '?' : l.layout === 'tokens' && l.classTokens ? `tokens+${l.classTokens}cls` : l.layout);

export const layers: Command = {
  name: 'layers',
  summary: 'List the feature tensors of an ONNX model that a study can tap, with shape, layout and module',
  usage: '<model.onnx> [--input-shape [NAME=]1,3,224,224] [--all] [--json]',
  help:
    'Each row is a tensor a study can name in `model.layers[].tensor`: a float tensor computed from the\n' +
    'image with the batch first. Shapes come from shape inference over the graph (N: the dynamic batch);\n' +
    'where inference cannot derive one, onnxruntime measures it on zeros (marked *). Layout: nchw\n' +
    '[N, C, H, W] (and [N, C] vectors), nhwc [N, H, W, C], tokens [N, T, D] (tokens+1cls: the first token\n' +
    'is a class token, left out of spatial means), ? where the graph does not tell (declare it in the\n' +
    'study: model.layers[].layout). Module: the torch module the tensor came from, where the names say.\n\n' +
    '  --input-shape  size to use where an input has dynamic dimensions besides the batch (repeatable: NAME=dims)\n' +
    '  --all          also list shape arithmetic, constants and other tensors that are not features\n' +
    '  --json         print the list as JSON',
  async run(argv) {
    const { values, positionals } = parseCommandArgs(
      argv,
      { 'input-shape': { type: 'string', multiple: true }, all: { type: 'boolean' }, json: { type: 'boolean' } },
      { min: 1, max: 1 },
    );
    const file = positionals[0];
    if (!existsSync(file)) throw new LegibleError(`cannot read ${file}: file not found`);
    const { analyzeModel } = await import('./layout.ts');
    const { readModelSkeleton } = await import('./onnx/skeleton.ts');
    let skeleton: ModelProto;
    try {
      skeleton = readModelSkeleton(file);
    } catch (e) {
      throw new LegibleError(`${file} is not an ONNX model: ${(e as Error).message}`);
    }
    const inputs = (skeleton.graph?.input ?? []).filter((v) => !(skeleton.graph?.initializer ?? []).some((t) => t.name === v.name)).map((v) => v.name!);
    const given = parseInputShapes(values['input-shape'], inputs);
    let analysis: Awaited<ReturnType<typeof import('./layout.ts').analyzeModel>>;
    let problem: string | null = null;
    try {
      analysis = await analyzeModel(file, { measure: true, inputShapes: given });
    } catch (e) {
      if (!(e instanceof LegibleError)) throw e;
      problem = e.message;
      analysis = await analyzeModel(file, { measure: false, inputShapes: given });
    }
    const shown = analysis.tensors.filter((t) => values.all || t.feature);
    const rows = shown.map((t) => ({
      name: t.name,
      op: t.op,
      node: t.node,
      type: t.type,
      shape: t.shape ?? null,
      layout: t.layout?.layout ?? null,
      class_tokens: t.layout?.layout === 'tokens' ? t.layout.classTokens : undefined,
      module: t.module,
      measured: analysis.measured.has(t.name),
      output: t.output,
      feature: t.feature,
      ...(t.feature ? {} : { why: t.why }),
    }));
    if (values.json) {
      console.log(JSON.stringify({ model: file, tensors: rows, problem }, null, 2));
      return 0;
    }
    const table = shown.map((t) => [
      t.name + (t.output ? ' (output)' : ''),
      t.op,
      t.type,
      showShape(t.shape) + (analysis.measured.has(t.name) ? '*' : ''),
      t.feature ? showLayout(t.layout) : '-',
      t.module ?? '-',
    ]);
    const header = ['tensor', 'op', 'type', 'shape', 'layout', 'module'];
    const widths = header.map((h, i) => Math.max(h.length, ...table.map((r) => r[i].length)));
    const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]))).join('  ');
    console.log(line(header));
    console.log(line(widths.map((w) => '─'.repeat(w))));
    for (const r of table) console.log(line(r));
    const features = analysis.tensors.filter((t) => t.feature).length;
    const hidden = analysis.tensors.length - features;
    console.log(`\n${features} feature tensors${values.all ? '' : ` (${hidden} shape, constant and other tensors not shown; --all lists them)`}. N: the batch.`);
    if (analysis.measured.size) console.log('* measured by onnxruntime on zeros (shape inference could not derive it).');
    const unknown = analysis.tensors.filter((t) => t.feature && !t.layout).length;
    if (unknown) console.log(`${unknown} tensor${unknown > 1 ? 's have' : ' has'} layout ?: a study that taps one declares model.layers[].layout (nchw, nhwc or tokens).`);
    if (problem) console.log(`Shapes marked ? are unknown: ${problem}`);
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

export const predict: Command = {
  name: 'predict',
  summary: 'Predict each feature\'s accuracy with a machine observer (MIS-style) before anyone is paid',
  usage: '<study-id | study.yaml> [--observer model.onnx --observer-layer TENSOR [--observer-input SPEC]] [--pairs N] [--alpha A] [--device D] [--json]',
  help: [
    'Answers every feature\'s trials, and many more query pairs drawn the way the study draws its',
    'queries, with a similarity observer in the manner of the Machine Interpretability Score',
    '(Zimmermann, Klindt & Brendel 2024): each image is embedded by an ONNX image model; the observer',
    'prefers the query whose mean cosine similarity to the maximal references minus the minimal ones is',
    'larger, and P(correct) = σ(α · (Δ(q+) − Δ(q−))). Query pairs: the held-out images within 2.5% of',
    'the split (at least ⌈√N⌉ ranks) around the ranks of the study\'s own max and min queries (its',
    'difficulty), still clearly apart, ⌈√N⌉ per side drawn (seeded; the study\'s own included) and',
    'crossed. A feature\'s score is the mean P, with a 95% bootstrap CI over the query images. Writes',
    'machine_score into each feature of build/manifest.json, build/predict.json (P per trial, which',
    '`legible pilot` answers with) and a section of build/report.html. Needs built stimuli (and reads',
    'their activation store, refitting the NMF/SAE dictionaries as the build did).',
    '',
    'Options:',
    '  --observer FILE        an ONNX image model to embed with (DreamSim, CLIP, DINO: the README shows',
    '                         how to export them). Without it: the study\'s own model, a weak proxy',
    '  --observer-layer NAME  the observer\'s tensor whose values are the embedding (with --observer);',
    '                         without --observer, a study layer (default: the last one listed)',
    '  --observer-input SPEC  the observer\'s preprocessing, e.g. size=224,resize=256,mean=0.485/0.456/0.406,',
    '                         std=0.229/0.224/0.225,channels=rgb,range=1 (these are the defaults)',
    '  --pairs N              query pairs per feature and reference kind (default 100: 10 × 10);',
    '                         fewer where a feature\'s band holds fewer images. 1: the study\'s own pair',
    '  --alpha A              slope of the logistic rule (default 4, NOT calibrated to human data: it',
    '                         sets how far scores spread from 0.5, not their order; fit it to a pilot)',
    '  --device D             auto, cpu (default), webgpu or cuda',
    '  --json                 print the prediction as JSON',
  ].join('\n'),
  async run(argv) {
    const { values, positionals } = parseCommandArgs(
      argv,
      {
        observer: { type: 'string' },
        'observer-layer': { type: 'string' },
        'observer-input': { type: 'string' },
        alpha: { type: 'string' },
        pairs: { type: 'string' },
        device: { type: 'string' },
        json: { type: 'boolean' },
      },
      { min: 1, max: 1 },
    );
    const { DEVICES } = await import('./runtime.ts');
    const device = (values.device ?? 'cpu') as Device;
    if (!DEVICES.includes(device)) throw new UsageError(`--device expects one of ${DEVICES.join(', ')}, got "${values.device}"`);
    const alpha = values.alpha === undefined ? undefined : Number(values.alpha);
    if (alpha !== undefined && !(alpha > 0 && Number.isFinite(alpha))) throw new UsageError(`--alpha expects a number > 0, got "${values.alpha}"`);
    const pairs = values.pairs === undefined ? undefined : Number(values.pairs);
    if (pairs !== undefined && !(Number.isInteger(pairs) && pairs >= 1)) throw new UsageError(`--pairs expects a whole number ≥ 1, got "${values.pairs}"`);
    const { loadStudy } = await import('@legible/studies');
    const { predictStudy } = await import('./predict.ts');
    const p = await predictStudy(loadStudy(positionals[0]), { observer: values.observer, observerLayer: values['observer-layer'], observerInput: values['observer-input'], alpha, pairs, device });
    if (values.json) {
      console.log(JSON.stringify(p, null, 2));
      return 0;
    }
    const ids = Object.keys(p.features);
    const width = Math.max(7, ...ids.map((id) => id.length));
    console.log(`${'feature'.padEnd(width)}  score  95% CI          pairs`);
    for (const id of ids) {
      const s = p.features[id];
      console.log(`${id.padEnd(width)}  ${s.p.toFixed(3)}  ${s.lo.toFixed(3)} – ${s.hi.toFixed(3)}  ${String(s.n_pairs).padStart(5)}`);
    }
    console.log(`\nobserver: ${p.observer}; α = ${p.alpha}${values.alpha === undefined ? ' (the default, uncalibrated: scores rank features; fit α to a pilot)' : ''}; up to ${p.pairs} query pairs per feature and reference kind. Written to build/manifest.json (machine_score), build/predict.json and build/report.html.`);
    return 0;
  },
};

export const commands: Command[] = [validate, layers, stimuli, visualize, predict];
