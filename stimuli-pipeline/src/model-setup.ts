// `legible model init` and `legible model check`: a lab's ONNX export gets its preprocessing written
// beside it (model.json, read by every study of the model), and the export plus that preprocessing
// are checked against numbers the export recipe printed in PyTorch for a reference image
// (docs/models.md).
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import {
  LegibleError,
  modelFileFor,
  modelFilePath,
  parseCommandArgs,
  PRESETS,
  presetInput,
  readModelFile,
  UsageError,
  type ModelInput,
  type Preset,
} from '@legible/studies';
import { describeValue } from './onnx/graph.ts';
import type { ModelProto } from './onnx/proto.ts';
import { readModelSkeleton } from './onnx/skeleton.ts';

export interface GraphInput {
  name: string;
  /** [N, C, H, W]; null where the graph leaves a dimension open. */
  channels: number | null;
  height: number | null;
  width: number | null;
}

/** The model's one image input, as the graph declares it; an error that says what to do otherwise. */
export function graphInput(file: string): GraphInput {
  if (!existsSync(file)) throw new LegibleError(`cannot read ${file}: file not found`);
  let model: ModelProto;
  try {
    model = readModelSkeleton(file);
  } catch (e) {
    throw new LegibleError(`${file} is not an ONNX model: ${(e as Error).message}`);
  }
  const inits = new Set((model.graph?.initializer ?? []).map((t) => t.name));
  const inputs = (model.graph?.input ?? []).filter((v) => !inits.has(v.name));
  if (inputs.length !== 1) {
    throw new LegibleError(`${file} has ${inputs.length} inputs (${inputs.map((v) => v.name).join(', ')}): legible taps image models with one input [batch, channels, height, width]`);
  }
  const shape = describeValue(inputs[0]).shape;
  if (!shape || shape.length !== 4) {
    throw new LegibleError(`${file}: its input "${inputs[0].name}" has shape ${shape ? `[${shape.join(', ')}]` : 'unknown'}: legible needs an image input [batch, channels, height, width]`);
  }
  const num = (d: unknown) => (typeof d === 'number' && d > 0 ? d : null);
  const [, c, h, w] = shape.map(num);
  if (c !== 1 && c !== 3 && (num(shape[3]) === 3 || num(shape[3]) === 1)) {
    throw new LegibleError(
      `${file}: its input "${inputs[0].name}" is [${shape.join(', ')}], channels last (NHWC): legible feeds [batch, channels, height, width]. Export with a channels-first input (PyTorch's default), or put a Transpose at the graph's start.`,
    );
  }
  return { name: inputs[0].name!, channels: c, height: h, width: w };
}

function numbers(value: string, option: string): number[] {
  const out = value.split(',').map((s) => Number(s.trim()));
  if (!out.length || out.some((n) => !Number.isFinite(n))) throw new UsageError(`--${option} expects numbers separated by commas, e.g. 0.485,0.456,0.406; got "${value}"`);
  return out;
}

function positive(value: string, option: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`--${option} expects a whole number ≥ 1, got "${value}"`);
  return n;
}

/** model.json's input for `file` from a preset, the graph's input size and the options given. */
export function initInput(
  file: string,
  opts: { preset?: string; size?: string; resize?: string; channels?: string; mean?: string; std?: string; range?: string },
): { input: ModelInput; graph: GraphInput; preset: string } {
  const graph = graphInput(file);
  const preset = opts.preset;
  if (preset !== undefined && !(PRESETS as readonly string[]).includes(preset)) throw new UsageError(`--preset expects one of ${PRESETS.join(', ')}, got "${preset}"`);
  if (!preset && !(opts.mean && opts.std)) throw new UsageError(`give --preset ${PRESETS.join('|')}, or --mean and --std (and --resize, --channels, --range as the model was trained)`);
  let size: number | [number, number];
  if (opts.size) {
    const parts = opts.size.split(/[,x×]/).map((s) => positive(s.trim(), 'size'));
    size = parts.length === 1 ? parts[0] : [parts[0], parts[1]];
    const [h, w] = typeof size === 'number' ? [size, size] : size;
    if ((graph.height && graph.height !== h) || (graph.width && graph.width !== w)) {
      throw new LegibleError(`--size ${opts.size} disagrees with the graph: its input "${graph.name}" is fixed at ${graph.height}×${graph.width} pixels. Leave --size out, or export the model at the size you want.`);
    }
  } else {
    if (!graph.height || !graph.width) {
      throw new LegibleError(`${file}: the height and width of input "${graph.name}" are not fixed in the graph: give the size the model was trained at, e.g. --size 224`);
    }
    size = graph.height === graph.width ? graph.height : [graph.height, graph.width];
  }
  const side = typeof size === 'number' ? size : Math.min(...size);
  const base: Record<string, unknown> = preset ? { ...presetInput(preset as Preset, side), size } : { size, channels: 'rgb', range: 1 };
  if (opts.resize !== undefined) {
    if (opts.resize === 'none') delete base.resize;
    else base.resize = positive(opts.resize, 'resize');
  }
  if (opts.channels !== undefined) {
    if (!['rgb', 'bgr', 'gray'].includes(opts.channels)) throw new UsageError(`--channels expects rgb, bgr or gray, got "${opts.channels}"`);
    base.channels = opts.channels;
  }
  if (opts.range !== undefined) {
    if (opts.range !== '1' && opts.range !== '255') throw new UsageError(`--range expects 1 or 255, got "${opts.range}"`);
    base.range = Number(opts.range);
  }
  if (opts.mean) base.mean = numbers(opts.mean, 'mean');
  if (opts.std) base.std = numbers(opts.std, 'std');
  const wanted = base.channels === 'gray' ? 1 : 3;
  if (graph.channels !== null && graph.channels !== wanted) {
    throw new LegibleError(
      `${file}: its input "${graph.name}" has ${graph.channels} channel${graph.channels === 1 ? '' : 's'} but ${preset ? `preset ${preset} is` : 'the options say'} ${base.channels} (${wanted}). ` +
        (graph.channels === 1 ? 'Give --channels gray with one --mean and --std value.' : 'Give --channels rgb (or bgr).'),
    );
  }
  const written = modelFileFor(file, base as never, preset ?? 'custom', graph.name);
  const { layout: _l, name: _n, ...input } = written.input;
  return { input, graph, preset: preset ?? 'custom' };
}

/** What `legible model check` compares: the recipe's numbers for its reference image. */
export interface CheckFile {
  image: string;
  output: string;
  values: number[];
}

export interface CheckResult {
  maxAbsDiff: number;
  /** maxAbsDiff over the largest |expected value|. */
  relative: number;
  topExpected: number;
  topGot: number;
  count: number;
}

/** Runs the reference image through model.json's preprocessing and the ONNX model; compares with the recipe's numbers. */
export async function checkModel(file: string, opts: { image?: string; expect?: string; device?: 'cpu' } = {}): Promise<{ result: CheckResult; check: CheckFile; input: ModelInput }> {
  const described = readModelFile(file);
  if (!described) throw new LegibleError(`no model.json beside ${file}: write it first with \`legible model init ${file} --preset torchvision\` (or timm, hf-vit)`);
  const { layout: _l, name: _n, ...input } = described.model.input;
  const expectPath = opts.expect ?? join(dirname(file), 'check.json');
  if (!existsSync(expectPath)) throw new LegibleError(`cannot read ${expectPath}: the export recipe writes check.json (and check.png) beside model.onnx (docs/models.md); give another with --expect`);
  let check: CheckFile;
  try {
    check = JSON.parse(readFileSync(expectPath, 'utf8')) as CheckFile;
  } catch (e) {
    throw new LegibleError(`${expectPath}: not valid JSON (${(e as Error).message})`);
  }
  if (!check || typeof check.output !== 'string' || !Array.isArray(check.values) || !check.values.length) {
    throw new LegibleError(`${expectPath}: expected { "image": "check.png", "output": "logits", "values": [numbers] } as the export recipe writes it`);
  }
  const imagePath = opts.image ?? join(dirname(expectPath), check.image ?? 'check.png');
  if (!existsSync(imagePath)) throw new LegibleError(`cannot read ${imagePath}: the reference image the recipe wrote beside check.json`);
  const { decodeForModel, normalise, channelCount } = await import('./preprocess.ts');
  const { inputSize } = await import('@legible/studies');
  const ort = await import('onnxruntime-node');
  const [h, w] = inputSize(input);
  const x = new Float32Array(channelCount(input) * h * w);
  normalise(await decodeForModel(readFileSync(imagePath), input), input, x);
  const session = await ort.InferenceSession.create(file);
  try {
    if (!session.outputNames.includes(check.output)) throw new LegibleError(`${file} has no output "${check.output}" (outputs: ${session.outputNames.join(', ')}), which ${expectPath} names`);
    const out = await session.run({ [session.inputNames[0]]: new ort.Tensor('float32', x, [1, channelCount(input), h, w]) }, [check.output]);
    const got = out[check.output].data as Float32Array;
    if (got.length !== check.values.length) throw new LegibleError(`${file}: output "${check.output}" has ${got.length} values for one image; ${expectPath} has ${check.values.length}`);
    let maxAbsDiff = 0;
    let scale = 0;
    for (let i = 0; i < got.length; i++) {
      maxAbsDiff = Math.max(maxAbsDiff, Math.abs(got[i] - check.values[i]));
      scale = Math.max(scale, Math.abs(check.values[i]));
    }
    const argmax = (v: ArrayLike<number>) => {
      let best = 0;
      for (let i = 1; i < v.length; i++) if (v[i] > v[best]) best = i;
      return best;
    };
    return { result: { maxAbsDiff, relative: maxAbsDiff / (scale || 1), topExpected: argmax(check.values), topGot: argmax(got), count: got.length }, check, input };
  } finally {
    await session.release();
  }
}

/** The options that give a model's preprocessing (`legible model init`, `legible init`). */
export const PREPROCESSING_OPTIONS = {
  preset: { type: 'string' },
  size: { type: 'string' },
  resize: { type: 'string' },
  channels: { type: 'string' },
  range: { type: 'string' },
  mean: { type: 'string' },
  std: { type: 'string' },
} as const;

/** `legible model init|check` (the command's definition: setup-commands.ts). */
export async function runModel(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === 'init') {
    const { values, positionals } = parseCommandArgs(
      rest,
      { ...PREPROCESSING_OPTIONS, force: { type: 'boolean' } },
      { min: 1, max: 1 },
    );
    const file = positionals[0];
    const target = modelFilePath(file);
    if (existsSync(target) && !values.force) {
      throw new LegibleError(`${target} exists already: give --force to replace it (a model.json of another kind, like the demo model's training record, would be lost)`);
    }
    const { input, graph, preset } = initInput(file, values);
    const written = modelFileFor(file, input, preset, graph.name);
    writeFileSync(target, `${JSON.stringify(written, null, 2)}\n`);
    console.log(`wrote ${target} (preset ${preset}; input "${graph.name}" ${JSON.stringify(input.size)} px from the graph):`);
    console.log(JSON.stringify(written.input, null, 2));
    console.log(`\nNext: check the export against the recipe's numbers: legible model check ${file}`);
    console.log(`Then: legible init <study-id> --model ${file} --images <image folder>`);
    return 0;
  }
  if (sub === 'check') {
    const { values, positionals } = parseCommandArgs(rest, { expect: { type: 'string' }, image: { type: 'string' }, tolerance: { type: 'string' } }, { min: 1, max: 1 });
    const tolerance = values.tolerance === undefined ? 1e-3 : Number(values.tolerance);
    if (!(tolerance > 0)) throw new UsageError(`--tolerance expects a positive number, got "${values.tolerance}"`);
    const file = positionals[0];
    const { result, check, input } = await checkModel(file, { image: values.image, expect: values.expect });
    const line = `output "${check.output}" (${result.count} values): largest difference ${result.maxAbsDiff.toExponential(2)} (${result.relative.toExponential(2)} of the largest value); top class ${result.topGot}, recipe ${result.topExpected}`;
    if (result.relative <= tolerance) {
      console.log(`✓ ${basename(file)} with model.json's preprocessing matches the recipe's numbers: ${line}`);
      return 0;
    }
    console.error(
      `✗ ${basename(file)} does not match the recipe's numbers: ${line}; tolerance ${tolerance}.\n` +
        `  model.json says ${JSON.stringify(input)}.\n` +
        '  Check size, resize, mean, std and channel order against the recipe\'s transforms, that the recipe exported this file, and that check.json came from the same run.',
    );
    return 1;
  }
  throw new UsageError(sub ? `unknown subcommand "${sub}": expected init or check` : 'expected a subcommand: init or check');
}
