// `legible init <id> --model FILE --images DIR`: a valid study to edit, from a lab's model and image
// folder. Layers are chosen across depth from the graph's shape inference (what `legible layers`
// lists); the three bases (channels, NMF, SAE), and the IMI protocol's design and exclusion rules
// (Zimmermann et al. 2023) as defaults. On a terminal it asks for what the flags leave out.
import { existsSync, mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join, relative, resolve, sep } from 'node:path';
import { defaultStudiesDir, LegibleError, parseCommandArgs, readModelFile, UsageError, type ModelInput } from '@legible/studies';
import { analyzeModel, type ModelTensor } from './layout.ts';
import { initInput, PREPROCESSING_OPTIONS } from './model-setup.ts';

export interface ChosenLayer {
  name: string;
  tensor: string;
  shape: (number | string | null)[];
  layout: 'nchw' | 'tokens';
  /** Produced by an activation that is never negative (ReLU and the like): NMF can read it. */
  nonNegative: boolean;
}

const NON_NEGATIVE_OPS = new Set(['Relu', 'Clip', 'Sigmoid', 'Softplus', 'MaxPool', 'GlobalMaxPool']);
const NAME = /^[A-Za-z][A-Za-z0-9_-]{0,39}$/;

function layerName(t: ModelTensor, taken: Set<string>, index: number): string {
  let name: string;
  if (NAME.test(t.name)) name = t.name;
  else if (t.module) {
    const parts = t.module.split('.');
    // "layer1.2.relu_2" → "layer1_2": the block, not the activation inside it.
    if (parts.length > 1 && parts[parts.length - 1].toLowerCase().startsWith(t.op.toLowerCase())) parts.pop();
    name = parts.join('_').replace(/[^A-Za-z0-9_-]/g, '_');
    if (!/^[A-Za-z]/.test(name)) name = `l${name}`;
    name = name.slice(0, 40);
  } else name = `layer${index + 1}`;
  let unique = name;
  for (let i = 2; taken.has(unique); i++) unique = `${name.slice(0, 36)}_${i}`;
  taken.add(unique);
  return unique;
}

/**
 * `count` layers spread across depth: the graph's feature tensors (not the output), in graph order,
 * grouped in runs of one spatial size (a stage); each stage's representative is its last tensor
 * with the stage's most channels, a ReLU-like output where there is one (NMF needs non-negative
 * values). Stages are taken evenly from the deepest back; a model with fewer stages than `count`
 * (a transformer: one run of tokens) gives evenly spaced tensors of its longest run.
 */
export function chooseLayers(tensors: readonly ModelTensor[], count: number): ChosenLayer[] {
  const candidates = tensors.filter((t) => {
    if (!t.feature || t.output || t.op === 'input' || !t.layout || !t.shape) return false;
    if (t.layout.layout === 'nchw') return t.shape.length === 4 && typeof t.shape[2] === 'number' && typeof t.shape[3] === 'number' && (t.shape[2] as number) * (t.shape[3] as number) > 1;
    return t.layout.layout === 'tokens' && t.shape.length === 3;
  });
  if (!candidates.length) throw new LegibleError('no tensor of the model has a spatial layout legible can tap ([N, C, H, W] or tokens): list them with `legible layers` and write model.layers yourself');
  const key = (t: ModelTensor) => (t.layout!.layout === 'tokens' ? `tokens:${t.shape![1]}` : `${t.shape![2]}x${t.shape![3]}`);
  const runs: ModelTensor[][] = [];
  for (const t of candidates) {
    const last = runs[runs.length - 1];
    if (last && key(last[0]) === key(t)) last.push(t);
    else runs.push([t]);
  }
  const channels = (t: ModelTensor) => Number(t.layout!.layout === 'tokens' ? t.shape![2] : t.shape![1]) || 0;
  const preferred = (run: ModelTensor[]) => {
    const most = Math.max(...run.map(channels));
    const wide = run.filter((t) => channels(t) === most);
    const good = run[0].layout!.layout === 'tokens' ? wide.filter((t) => t.op === 'Add') : wide.filter((t) => NON_NEGATIVE_OPS.has(t.op));
    return good.length ? good : wide;
  };
  let picked: ModelTensor[];
  if (runs.length >= count) {
    const reps = runs.map((r) => preferred(r).at(-1)!);
    picked = Array.from({ length: count }, (_, k) => reps[Math.round(((k + 1) * reps.length) / count) - 1]);
  } else {
    const longest = runs.reduce((a, b) => (preferred(b).length > preferred(a).length ? b : a));
    const pool = preferred(longest);
    const n = Math.min(count, pool.length);
    picked = Array.from({ length: n }, (_, k) => pool[Math.round(((k + 1) * pool.length) / n) - 1]);
  }
  picked = [...new Set(picked)];
  const taken = new Set<string>();
  return picked.map((t, i) => ({
    name: layerName(t, taken, i),
    tensor: t.name,
    shape: t.shape!.map((d) => (d === null ? null : d)),
    layout: t.layout!.layout as 'nchw' | 'tokens',
    nonNegative: NON_NEGATIVE_OPS.has(t.op),
  }));
}

export interface ScaffoldOptions {
  id: string;
  model: string;
  images: string;
  /** The study's folder (default: studies/<id> of this repository). */
  dir?: string;
  title?: string;
  layers?: number;
  /** Preprocessing where the model has no model.json (model init's options). */
  preprocessing?: { preset?: string; size?: string; resize?: string; channels?: string; mean?: string; std?: string; range?: string };
}

export interface Scaffolded {
  file: string;
  dir: string;
  layers: ChosenLayer[];
  nmf: boolean;
  /** model.input written into the study (null: it comes from model.json). */
  input: ModelInput | null;
  text: string;
}

const yamlString = (s: string) => (/^[A-Za-z0-9_./-]+$/.test(s) && !/^(true|false|null|yes|no|on|off|~)$/i.test(s) && !/^[\d.]+$/.test(s) ? s : JSON.stringify(s));
const flow = (v: unknown): string => (Array.isArray(v) ? `[${v.map(flow).join(', ')}]` : typeof v === 'string' ? yamlString(v) : String(v));

/** Writes <dir>/study.yaml; returns what it chose. */
export async function scaffoldStudy(opts: ScaffoldOptions): Promise<Scaffolded> {
  if (!/^[a-z0-9][a-z0-9-]{0,62}$/.test(opts.id)) throw new UsageError(`study id "${opts.id}": expected lowercase letters, digits and "-" (e.g. "resnet50-nmf")`);
  const model = resolve(opts.model);
  const images = resolve(opts.images);
  if (!existsSync(model)) throw new LegibleError(`--model ${opts.model}: file not found`);
  if (!existsSync(images) || !statSync(images).isDirectory()) throw new LegibleError(`--images ${opts.images}: not a folder (give a folder of images, flat or one sub-folder per class)`);
  const dir = resolve(opts.dir ?? join(defaultStudiesDir(), opts.id));
  const file = join(dir, 'study.yaml');
  if (existsSync(file)) throw new LegibleError(`${file} exists already: choose another id or --dir, or remove it`);

  const described = readModelFile(model);
  let input: ModelInput | null = null;
  if (!described) {
    const p = opts.preprocessing ?? {};
    if (!p.preset && !(p.mean && p.std)) {
      throw new LegibleError(
        `${opts.model} has no model.json (its preprocessing): run \`legible model init ${opts.model} --preset torchvision\` (or timm, hf-vit; docs/models.md) first, or give --preset here to write model.input into the study`,
      );
    }
    input = initInput(model, p).input;
  }

  const { tensors } = await analyzeModel(model, { measure: true });
  const layers = chooseLayers(tensors, opts.layers ?? 3);
  const nmf = layers.every((l) => l.nonNegative);
  const minChannels = Math.min(...layers.map((l) => Number(l.layout === 'tokens' ? l.shape[2] : l.shape[1]) || 1));
  const components = Math.max(2, Math.min(20, minChannels - 1));
  const dictionary = Math.min(4096, Math.max(8, 4 * minChannels));
  const k = Math.max(1, Math.min(32, Math.round(dictionary / 32)));
  const classFolders = readdirSync(images, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name);

  const rel = (p: string) => relative(dir, p).split(sep).join('/') || '.';
  const schema = relative(dir, join(defaultStudiesDir(), 'study.schema.json')).split(sep).join('/');
  const title = opts.title ?? `Which picture fits the pattern? (${opts.id})`;
  const lines = [
    `# yaml-language-server: $schema=${schema}`,
    `# Written by \`legible init\`. Edit what the comments point to, then: legible validate ${opts.id}`,
    `id: ${opts.id}`,
    `title: ${JSON.stringify(title)}`,
    'mode: pilot # pilot stores flagged data; set live for the real study',
    'seed: 1',
    '',
    'model:',
    `  onnx: ${yamlString(rel(model))}`,
    ...(input
      ? [
          '  # The model\'s preprocessing (no model.json beside the model; `legible model init` would write one).',
          `  input: { size: ${flow(input.size)}${input.resize ? `, resize: ${input.resize}` : ''}, channels: ${input.channels}, range: ${input.range}, mean: ${flow(input.mean)}, std: ${flow(input.std)} }`,
        ]
      : [`  # model.input: from ${rel(described!.path)} (preset ${described!.model.preset ?? 'custom'}); a study that gives it must agree.`]),
    `  # ${layers.length} layers across depth, from \`legible layers ${rel(model)}\` (shape inference):`,
    '  # replace or add any tensor it lists.',
    '  layers:',
    ...layers.flatMap((l) => [`    - name: ${l.name} # ${flow(l.shape.map((d) => d ?? '?'))}${l.layout === 'tokens' ? ' tokens' : ''}`, `      tensor: ${yamlString(l.tensor)}`]),
    '',
    'dataset:',
    `  images: ${yamlString(rel(images))}`,
    ...(classFolders.length
      ? [
          `  # ${classFolders.length} class sub-folders. For the decision contribution, list them in the order of the`,
          "  # model's outputs (default: sorted by name, as torchvision's ImageFolder): classes: [...]",
        ]
      : ['  # A flat folder: decision contribution needs class sub-folders (it is skipped otherwise).']),
    '  split: { seed: 1, reference: 0.8, query: 0.2 }',
    '',
    '# Single channels ("neurons") against two dictionaries over the whole layer.',
    'bases:',
    '  - kind: channels',
    ...(nmf
      ? [`  - kind: nmf # CRAFT-style concepts; add patch: { size: 64, stride: 51 } for CRAFT's patches at 224 px`, `    components: ${components}`]
      : ['  # No nmf: a chosen layer can be negative (not a ReLU output); NMF needs non-negative activations.']),
    '  - kind: sae',
    `    dictionary: ${dictionary}`,
    `    k: ${k}`,
    '',
    '# Features per layer and basis, a seeded sample (IMI: 84 units per model).',
    'features: { select: random, count: 10, seed: 1 }',
    '',
    '# IMI: 9 minimally and 9 maximally activating natural references.',
    'references: { per_side: 9, columns: 3, kinds: [natural] }',
    '# extreme, or p99 / p95 / p85 (IMI\'s harder queries)',
    'queries: { difficulty: extreme }',
    '',
    '# Decision contribution: each feature removed, over this many held-out images.',
    'contribution: { images: 500 }',
    '',
    '# The IMI protocol (Zimmermann et al. 2023): 40 main + 5 catch trials per participant, 30 responses',
    '# per feature, responses allowed after 1.5 s.',
    'design:',
    '  trials_per_participant: 40',
    '  catch_trials: 5',
    '  practice_trials: 3',
    '  practice_criterion: 1 # every practice trial of a round right ...',
    '  practice_rounds: 3 # ... within 3 rounds (IMI: more than 3 demo attempts excluded)',
    '  responses_per_feature: 30',
    '  within: [layer, basis]',
    '  initial_wait_ms: 1500',
    '',
    '# IMI\'s exclusion rules.',
    'exclusions:',
    '  catch_accuracy_min: 0.8',
    '  total_time_s: { min: 135, max: 2500 }',
    '  instruction_time_s_min: 15',
    '  min_distinct_responses: 2 # at least two of the six buttons',
    '  practice_pass_required: true',
    '  repeat_participation: true',
    '',
    '# Prolific: set platform: prolific and the codes from your Prolific study (docs/deploy.md).',
    'recruitment:',
    '  platform: generic',
    '  completed: { code: DONE-CHANGE-ME }',
    '  failed_checks: { code: CHECKS-CHANGE-ME }',
    '  unsynced: { code: UNSYNCED-CHANGE-ME }',
    '',
    'text:',
    '  consent: |',
    '    ## Consent',
    '',
    '    EDIT: who runs this study, what participants do, how long it takes, what is stored,',
    '    that they may stop at any time, and whom to contact.',
    '  instructions: |',
    '    ## How it works',
    '',
    '    On each screen you see two groups of nine pictures. The pictures on the **right** all',
    '    strongly contain some visual pattern; the pictures on the **left** lack it.',
    '',
    '    In the middle are two more pictures. Choose the one that **fits the right-hand group**,',
    '    and say how sure you are: the six buttons go from *sure it is the upper one* to',
    '    *sure it is the lower one*. Keys **1–6** work too.',
    '  debrief: |',
    '    ## Thank you',
    '',
    '    EDIT: what the study was about.',
    '',
  ];
  const text = lines.join('\n');
  mkdirSync(dir, { recursive: true });
  writeFileSync(file, text);
  return { file, dir, layers, nmf, input, text };
}

/** Questions on a terminal, through one readline interface (answers typed ahead are kept). */
async function questioner(): Promise<{ ask(question: string, fallback?: string): Promise<string>; close(): void }> {
  const { createInterface } = await import('node:readline');
  const rl = createInterface({ input: process.stdin, output: process.stdout });
  const lines: string[] = [];
  const waiting: ((line: string) => void)[] = [];
  rl.on('line', (line) => (waiting.length ? waiting.shift()!(line) : lines.push(line)));
  rl.on('close', () => waiting.splice(0).forEach((w) => w('')));
  return {
    async ask(question, fallback) {
      process.stdout.write(`${question}${fallback ? ` [${fallback}]` : ''}: `);
      const answer = (lines.length ? lines.shift()! : await new Promise<string>((r) => waiting.push(r))).trim();
      return answer || fallback || '';
    },
    close: () => rl.close(),
  };
}

/** `legible init` (the command's definition: setup-commands.ts). */
export async function runInit(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs(
    argv,
    {
      model: { type: 'string' },
      images: { type: 'string' },
      dir: { type: 'string' },
      layers: { type: 'string' },
      title: { type: 'string' },
      ...PREPROCESSING_OPTIONS,
      yes: { type: 'boolean', short: 'y' },
    },
    { min: 1, max: 1 },
  );
  const interactive = !values.yes && process.stdin.isTTY && process.stdout.isTTY;
  const id = positionals[0];
  let model = values.model;
  let images = values.images;
  let layers = values.layers;
  let title = values.title;
  let preset = values.preset;
  if (interactive) {
    const q = await questioner();
    try {
      model ??= await q.ask('ONNX model file');
      images ??= await q.ask('Image folder (flat, or one sub-folder per class)');
      if (model && existsSync(model) && !readModelFile(resolve(model)) && !preset && !(values.mean && values.std)) {
        preset = await q.ask('No preprocessing in a model.json beside the model. Preset (torchvision, timm, hf-vit)', 'torchvision');
      }
      layers ??= await q.ask('How many layers across depth', '3');
      title ??= await q.ask('Title participants see', `Which picture fits the pattern? (${id})`);
    } finally {
      q.close();
    }
  }
  if (!model) throw new UsageError('give --model FILE (the ONNX model)');
  if (!images) throw new UsageError('give --images DIR (the image folder)');
  const count = layers === undefined ? 3 : Number(layers);
  if (!Number.isInteger(count) || count < 1 || count > 12) throw new UsageError(`--layers expects a whole number from 1 to 12, got "${layers}"`);
  const made = await scaffoldStudy({
    id,
    model,
    images,
    dir: values.dir,
    title,
    layers: count,
    preprocessing: { preset, size: values.size, resize: values.resize, channels: values.channels, range: values.range, mean: values.mean, std: values.std },
  });
  const shown = relative(process.cwd(), made.file) || made.file;
  const ref = values.dir ? relative(process.cwd(), made.dir) || '.' : id;
  console.log(`wrote ${shown}: ${made.layers.length} layers (${made.layers.map((l) => l.name).join(', ')}), bases channels${made.nmf ? ', nmf' : ''}, sae; IMI design and exclusions.`);
  console.log(
    [
      '',
      'Edit before running it:',
      '  text.consent, text.debrief         your institution\'s wording (EDIT marks them)',
      '  recruitment                        your Prolific codes (the CHANGE-ME codes), reward',
      '  model.layers                       the layers you mean to study (`legible layers` lists all)',
      '  dataset.classes                    the class folders in the model\'s output order (decision contribution)',
      '  features.count, bases              how many features, NMF components, SAE dictionary size',
      '',
      'Then:',
      `  npx legible validate ${ref}`,
      `  npx legible stimuli ${ref}        # builds the trial images (report: ${join(relative(process.cwd(), made.dir) || '.', 'build', 'report.html')})`,
      values.dir ? `  npx legible serve --studies ${relative(process.cwd(), resolve(made.dir, '..')) || '.'} --study ${id}` : `  npx legible serve --study ${id}`,
    ].join('\n'),
  );
  return 0;
}
