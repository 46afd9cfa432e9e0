// Command-line entry points of the gradient engine: `legible visualize`.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { intOption, LegibleError, parseCommandArgs, UsageError, type Command, type ModelInput } from '@legible/studies';
import type { Device } from './runtime.ts';
import type { FeatureObjective } from './fv/visualize.ts';
import type { Layout } from './layout.ts';

const numbers = (v: string, name: string) => {
  const xs = v.split(',').map((s) => Number(s.trim()));
  if (!xs.length || xs.some((x) => !Number.isFinite(x))) throw new UsageError(`--${name} expects numbers separated by commas, got "${v}"`);
  return xs;
};

/** A file-name-safe form of a tensor name ("/layer3/Relu_output_0" → "layer3_Relu_output_0"). */
const safe = (s: string) => s.replace(/[^A-Za-z0-9._-]+/g, '_').replace(/^_+|_+$/g, '') || 'tensor';

export const visualize: Command = {
  name: 'visualize',
  summary: 'Feature visualizations (MACO, or a pixel-space baseline) of channels or directions of a layer',
  usage: '<model.onnx> --tensor T (--channel N ... | --directions FILE) --out DIR [options]',
  help: [
    'Optimises one image per feature to maximise its activation: a channel\'s spatial mean (--channel,',
    'repeatable) or the projection of the spatially averaged activation on a direction (--directions: a',
    'JSON file with one array of C numbers, or an array of such arrays). Writes DIR/<tensor>-<feature>.png,',
    'its MACO attribution map DIR/<tensor>-<feature>-attribution.png, and DIR/visualize.json (objectives,',
    'loss curves, settings).',
    '',
    'Input (as a study\'s model.input; default torchvision: 224 px RGB, ImageNet mean/std):',
    '  --study S           take model.input (and the model, if none is given) from a study',
    '  --size N            input side in pixels        --channels rgb|bgr|gray',
    '  --mean a,b,c        --std a,b,c                 --range 1|255',
    'Optimisation:',
    '  --steps N           default 256                 --seed N       default 0',
    '  --batch N           features per batch (default 8)',
    '  --method maco|pixel MACO (Fourier phase, magnitude fixed) or the plain pixel baseline',
    '  --image-size N      side of the optimised image (default: the input size)',
    '  --device D          auto (default), cpu, webgpu or cuda',
    '  --layout L          nchw, nhwc or tokens, where `legible layers` shows the tensor\'s layout as ?',
    '  --class-token yes|no  with --layout tokens: whether the first token is a class token (left out of the mean)',
  ].join('\n'),
  async run(argv) {
    const { values, positionals } = parseCommandArgs(
      argv,
      {
        tensor: { type: 'string' },
        channel: { type: 'string', multiple: true },
        directions: { type: 'string' },
        out: { type: 'string' },
        study: { type: 'string' },
        size: { type: 'string' },
        channels: { type: 'string' },
        mean: { type: 'string' },
        std: { type: 'string' },
        range: { type: 'string' },
        steps: { type: 'string' },
        seed: { type: 'string' },
        batch: { type: 'string' },
        method: { type: 'string' },
        'image-size': { type: 'string' },
        device: { type: 'string' },
        layout: { type: 'string' },
        'class-token': { type: 'string' },
      },
      { min: 0, max: 1 },
    );
    if (!values.tensor) throw new UsageError('--tensor is required (a layer tensor; `legible layers model.onnx` lists them)');
    if (!values.out) throw new UsageError('--out DIR is required');
    if (!values.channel?.length && !values.directions) throw new UsageError('give --channel N (repeatable) or --directions FILE');
    let input: ModelInput = { size: 224, channels: 'rgb', range: 1, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };
    let modelPath = positionals[0];
    let declared: { layout?: Layout; class_token?: boolean } = {};
    if (values.study) {
      const { loadStudy, modelInput } = await import('@legible/studies');
      const loaded = loadStudy(values.study);
      input = modelInput(loaded.study);
      modelPath ??= loaded.paths.model;
      const layer = loaded.study.model.layers.find((l) => l.tensor === values.tensor);
      if (layer) declared = { layout: layer.layout, class_token: layer.class_token };
    }
    const { checkModelLayers, LAYOUTS } = await import('./layout.ts');
    if (values.layout !== undefined) {
      if (!LAYOUTS.includes(values.layout as Layout)) throw new UsageError(`--layout expects ${LAYOUTS.join(', ')}, got "${values.layout}"`);
      declared = { ...declared, layout: values.layout as Layout };
    }
    if (values['class-token'] !== undefined) {
      if (values['class-token'] !== 'yes' && values['class-token'] !== 'no') throw new UsageError(`--class-token expects yes or no, got "${values['class-token']}"`);
      declared = { ...declared, class_token: values['class-token'] === 'yes' };
    }
    if (!modelPath) throw new UsageError('give the model file, or --study');
    if (values.size) input = { ...input, size: intOption(values.size, 'size', 224) };
    if (values.channels) {
      if (!['rgb', 'bgr', 'gray'].includes(values.channels)) throw new UsageError(`--channels expects rgb, bgr or gray, got "${values.channels}"`);
      input = { ...input, channels: values.channels as ModelInput['channels'] };
    }
    if (values.mean) input = { ...input, mean: numbers(values.mean, 'mean') };
    if (values.std) input = { ...input, std: numbers(values.std, 'std') };
    if (values.range) {
      if (values.range !== '1' && values.range !== '255') throw new UsageError('--range expects 1 or 255');
      input = { ...input, range: Number(values.range) as 1 | 255 };
    }
    const method = (values.method ?? 'maco') as 'maco' | 'pixel';
    if (method !== 'maco' && method !== 'pixel') throw new UsageError(`--method expects maco or pixel, got "${values.method}"`);
    const { DEVICES } = await import('./runtime.ts');
    const device = (values.device ?? 'auto') as Device;
    if (!DEVICES.includes(device)) throw new UsageError(`--device expects one of ${DEVICES.join(', ')}, got "${values.device}"`);

    const tensor = values.tensor;
    let bytes: Uint8Array;
    try {
      bytes = readFileSync(modelPath);
    } catch (e) {
      throw new LegibleError(`cannot read ${modelPath}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'file not found' : (e as Error).message}`);
    }
    // The tensor's layout: which axis holds the channels, which tokens are class tokens.
    const checked = await checkModelLayers(bytes, [{ name: 'layer', tensor, ...declared }]);
    if (checked.problems.length) {
      throw new LegibleError(`--tensor ${tensor}: ${checked.problems.map((p) => p.message).join('; ')}${checked.problems.some((p) => p.field !== 'tensor') ? ' (--layout nchw|nhwc|tokens, --class-token yes|no)' : ''}`);
    }
    const resolved = checked.layers[0];
    const layout = { channelsLast: resolved.layout !== 'nchw', skip: resolved.classTokens };
    const objectives: { name: string; objective: FeatureObjective }[] = [];
    for (const c of values.channel ?? []) objectives.push({ name: `channel${intOption(c, 'channel', 0)}`, objective: { tensor, channel: intOption(c, 'channel', 0), layout } });
    if (values.directions) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(readFileSync(values.directions, 'utf8'));
      } catch (e) {
        throw new LegibleError(`cannot read --directions ${values.directions}: ${(e as Error).message}`);
      }
      const list = Array.isArray(parsed) && Array.isArray(parsed[0]) ? parsed : [parsed];
      list.forEach((d, i) => {
        if (!Array.isArray(d) || d.some((v) => typeof v !== 'number')) throw new LegibleError(`--directions: entry ${i} is not an array of numbers`);
        objectives.push({ name: `direction${i}`, objective: { tensor, direction: Float32Array.from(d as number[]), layout } });
      });
    }
    const { visualizeFeatures } = await import('./fv/visualize.ts');
    const imageSize = values['image-size'] ? intOption(values['image-size'], 'image-size', 0) : undefined;
    const result = await visualizeFeatures(bytes, input, objectives.map((o) => o.objective), {
      steps: intOption(values.steps, 'steps', 256),
      seed: intOption(values.seed, 'seed', 0),
      batch: intOption(values.batch, 'batch', 8),
      method,
      device,
      size: imageSize,
      log: (s) => console.error(s),
    });
    const sharp = (await import('sharp')).default;
    mkdirSync(values.out, { recursive: true });
    const files: Record<string, unknown>[] = [];
    for (const [i, o] of objectives.entries()) {
      const base = `${safe(tensor)}-${o.name}`;
      const raw = { width: result.width, height: result.height, channels: result.channels as 1 | 3 };
      const image = sharp(Buffer.from(result.images[i]), { raw });
      await (result.channels === 1 ? image.toColourspace('b-w') : image).png().toFile(join(values.out, `${base}.png`));
      const heat = Buffer.from(Uint8Array.from(result.attributions[i], (v) => Math.round(255 * v)));
      await sharp(heat, { raw: { width: result.width, height: result.height, channels: 1 } }).toColourspace('b-w').png().toFile(join(values.out, `${base}-attribution.png`));
      const losses = result.losses[i];
      files.push({ feature: o.name, image: `${base}.png`, attribution: `${base}-attribution.png`, objective: result.objectives[i], loss: { first: losses[0], last: losses[losses.length - 1] } });
      console.log(`${base}.png  objective ${result.objectives[i].toFixed(4)}`);
    }
    const record = { model: modelPath, tensor, method, input, steps: intOption(values.steps, 'steps', 256), seed: intOption(values.seed, 'seed', 0), device: result.device, seconds: result.seconds, features: files };
    writeFileSync(join(values.out, 'visualize.json'), JSON.stringify(record, null, 2) + '\n');
    console.log(`${objectives.length} visualization${objectives.length === 1 ? '' : 's'} in ${values.out} (${result.seconds.toFixed(1)} s, ${result.device})`);
    return 0;
  },
};

export const commands: Command[] = [visualize];
