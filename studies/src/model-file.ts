// model.json: a model's preprocessing, kept beside its ONNX file so that every study of the model
// reads the same numbers (`legible model init` writes it). A study's own model.input, where given,
// must agree with it field by field: a conflict is an error that names both files, never a silent
// override, since a wrong mean or crop changes every activation without any other sign.
import { existsSync, readFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { z } from 'zod';
import { LegibleError } from './errors.ts';
import { ModelInput, type Study } from './schema.ts';

export const MODEL_FILE_FORMAT = 'legible-model/1';

export const PRESETS = ['torchvision', 'timm', 'hf-vit'] as const;
export type Preset = (typeof PRESETS)[number];

/** The preprocessing section of model.json: a study's model.input, plus the input tensor's layout and name. */
export const ModelFileInput = z
  .looseObject({
    layout: z
      .literal('nchw', { error: 'legible feeds images as [batch, channels, height, width] ("nchw"): export the model with a channels-first input (PyTorch\'s default)' })
      .default('nchw'),
    name: z.string().optional(),
  })
  .transform((v, ctx) => {
    const { layout, name, ...rest } = v;
    const parsed = ModelInput.safeParse(rest);
    if (!parsed.success) {
      for (const issue of parsed.error.issues) ctx.addIssue({ code: 'custom', message: issue.message, path: issue.path.filter((p) => typeof p !== 'symbol') as (string | number)[] });
      return z.NEVER;
    }
    return { ...(name === undefined ? {} : { name }), ...parsed.data, layout };
  });

export const ModelFile = z.object({
  format: z.literal(MODEL_FILE_FORMAT, { error: `expected format "${MODEL_FILE_FORMAT}"` }),
  file: z.string().min(1).optional().describe('The ONNX file this describes (its base name).'),
  preset: z.string().optional().describe('Where the numbers came from (torchvision, timm, hf-vit, or custom).'),
  input: ModelFileInput,
  source: z.string().optional().describe('Free text: the weights and how the model was exported.'),
});
export type ModelFile = z.output<typeof ModelFile>;

/** The ImageNet statistics torchvision and timm normalise with. */
export const IMAGENET_MEAN = [0.485, 0.456, 0.406];
export const IMAGENET_STD = [0.229, 0.224, 0.225];

/**
 * A preset's preprocessing for a square input of `size` pixels:
 * - torchvision: Resize(256) + CenterCrop(224) (the ImageNet-1k V1 weights' transforms: shorter
 *   side to size·256/224), ImageNet mean/std;
 * - timm: its default eval transform (crop_pct 0.875: shorter side to ⌊size/0.875⌋, centre crop),
 *   ImageNet mean/std (models with other statistics: --mean/--std from the model's pretrained_cfg);
 * - hf-vit: Hugging Face's ViTImageProcessor (google/vit-base-patch16-224): straight resize to
 *   size × size, mean 0.5, std 0.5.
 */
export function presetInput(preset: Preset, size: number): z.input<typeof ModelInput> {
  switch (preset) {
    case 'torchvision':
      return { size, resize: Math.round((size * 256) / 224), channels: 'rgb', range: 1, mean: IMAGENET_MEAN, std: IMAGENET_STD };
    case 'timm':
      return { size, resize: Math.floor(size / 0.875), channels: 'rgb', range: 1, mean: IMAGENET_MEAN, std: IMAGENET_STD };
    case 'hf-vit':
      return { size, channels: 'rgb', range: 1, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5] };
  }
}

/** Where a model's model.json lives: beside the ONNX file. */
export function modelFilePath(onnx: string): string {
  return join(dirname(onnx), 'model.json');
}

/**
 * The preprocessing in model.json beside `onnx`, or null when there is none (no file, or a model.json
 * without an `input` section, like the demo model's training record, or one that describes another
 * ONNX file). A model.json with an `input` section that is wrong is an error naming the field.
 */
export function readModelFile(onnx: string): { path: string; model: ModelFile } | null {
  const path = modelFilePath(onnx);
  if (!existsSync(path)) return null;
  let data: unknown;
  try {
    data = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new LegibleError(`${path}: not valid JSON (${(e as Error).message}). Fix it, or write it again with \`legible model init ${basename(onnx)} --preset torchvision --force\`.`);
  }
  if (!data || typeof data !== 'object' || !('input' in data)) return null;
  const described = (data as { file?: unknown }).file;
  if (typeof described === 'string' && described !== basename(onnx)) return null;
  const parsed = ModelFile.safeParse(data);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${path}: ${i.path.join('.') || '(top level)'}: ${i.message}`);
    throw new LegibleError(`${path}: ${lines.length} problem${lines.length === 1 ? '' : 's'}\n${lines.join('\n')}\nFix the file, or write it again with \`legible model init ${basename(onnx)} --preset … --force\`.`);
  }
  return { path, model: parsed.data };
}

/** The fields of model.input that differ between a study and model.json, each as "field: study … model.json …". */
export function inputConflicts(study: ModelInput, file: ModelInput): { field: keyof ModelInput; study: unknown; file: unknown }[] {
  const norm = (input: ModelInput, key: keyof ModelInput): unknown => {
    const channels = input.channels === 'gray' ? 1 : 3;
    if (key === 'size') return typeof input.size === 'number' ? [input.size, input.size] : input.size;
    if (key === 'mean' || key === 'std') return input[key].length === 1 ? Array.from({ length: channels }, () => input[key][0]) : input[key];
    return input[key];
  };
  const keys: (keyof ModelInput)[] = ['size', 'resize', 'channels', 'range', 'mean', 'std'];
  return keys
    .filter((k) => JSON.stringify(norm(study, k)) !== JSON.stringify(norm(file, k)))
    .map((field) => ({ field, study: study[field], file: file[field] }));
}

/** The study's preprocessing: model.input as loadStudy resolved it (from the study or model.json). */
export function modelInput(study: Study): ModelInput {
  if (!study.model.input) {
    throw new LegibleError(
      `study "${study.id}" has no model.input and no model.json beside ${study.model.onnx}: write one with \`legible model init ${study.model.onnx} --preset torchvision\` (or timm, hf-vit), or add model.input to the study file`,
    );
  }
  return study.model.input;
}

/** model.json for `onnx` from a preset or explicit input. */
export function modelFileFor(onnx: string, input: z.input<typeof ModelInput>, preset: string, inputName?: string): ModelFile {
  const parsedInput = ModelInput.parse(input);
  return ModelFile.parse({ format: MODEL_FILE_FORMAT, file: basename(onnx), preset, input: { ...(inputName ? { name: inputName } : {}), ...parsedInput, layout: 'nchw' } });
}
