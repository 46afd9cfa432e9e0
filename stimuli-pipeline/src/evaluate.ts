// Decision contribution of a study's features (contribution.ts does the measuring): each feature is
// removed from its layer — a channel zeroed, an NMF concept or SAE latent's dictionary component
// subtracted at every position — and the drop of the correct class's logit and of accuracy is
// measured over a seeded sample of held-out images (the query split; `contribution.images` of them).
// Labels come from the class sub-folders (in the order of dataset.classes, or sorted as torchvision's
// ImageFolder does) when their number matches the model's outputs; otherwise, and for a flat
// folder, the unmodified model's own prediction is the label, and the manifest says so.
import { readFile } from 'node:fs/promises';
import { inputSize, LegibleError, modelInput, rng, seedFrom, type Study } from '@legible/studies';
import { decisionContribution, dictionaryCodes, type ContributionFeature, type FeatureContribution } from './contribution.ts';
import type { ImageEntry } from './dataset.ts';
import { featureId, type FeatureColumn } from './exemplars.ts';
import type { FeatureSet } from './features.ts';
import { modelLayers } from './layout.ts';
import { describeValue } from './onnx/graph.ts';
import { decodeModel } from './onnx/proto.ts';
import { channelCount, decodeForModel, normalise } from './preprocess.ts';
import type { Device } from './runtime.ts';

/** Evaluation images when the study file does not say (contribution.images). */
export const DEFAULT_CONTRIBUTION_IMAGES = 500;
const BATCH = 64;

export interface StudyContribution {
  /** By feature id. */
  features: Map<string, FeatureContribution>;
  images: number;
  labels: 'given' | 'predicted';
  baselineAccuracy: number;
  note?: string;
  seconds: number;
}

/** Why contribution is not measured for this study, or null when it is. */
export function contributionSkipReason(study: Study, model: Uint8Array): string | null {
  if ((study.contribution?.images ?? DEFAULT_CONTRIBUTION_IMAGES) === 0) return 'contribution.images is 0';
  const g = decodeModel(model).graph!;
  const out = g.output?.[0];
  const shape = out ? describeValue(out).shape : undefined;
  if (!out || !shape || shape.length !== 2 || typeof shape[1] !== 'number') {
    return `the model's output${out ? ` "${out.name}"` : ''} has shape [${shape?.join(', ') ?? '?'}], not [images, classes] logits`;
  }
  return null;
}

export async function studyContribution(
  study: Study,
  model: Uint8Array,
  fs: FeatureSet,
  images: ImageEntry[],
  opts: { device?: Device; log: (s: string) => void },
): Promise<StudyContribution> {
  const started = performance.now();
  const g = decodeModel(model).graph!;
  const classes = Number(describeValue(g.output![0]).shape![1]);
  const cap = study.contribution?.images ?? DEFAULT_CONTRIBUTION_IMAGES;
  const held = fs.queryRows.map((r) => fs.ids[r]);
  if (held.length === 0) throw new LegibleError('contribution: the query split holds no images to evaluate on. Raise dataset.split.query, or set contribution.images: 0.');
  const chosen = rng(seedFrom('contribution', study.seed)).sample(held, Math.min(cap, held.length)).sort();

  // A model exported with a fixed batch size gets batches of exactly that size.
  const inits = new Set((g.initializer ?? []).map((t) => t.name));
  const fixed = describeValue((g.input ?? []).find((v) => !inits.has(v.name))!).shape?.[0];
  const isFixed = typeof fixed === 'number' && fixed > 0;
  const batch = isFixed ? fixed : BATCH;
  if (isFixed) chosen.length -= chosen.length % batch;
  if (!chosen.length) throw new LegibleError(`contribution: the model takes batches of ${batch} images, but only ${held.length} held-out images are there. Raise dataset.split.query, or set contribution.images: 0.`);

  // Labels from the class sub-folders, when they match the model's outputs.
  const folderOf = (id: string) => (id.includes('/') ? id.slice(0, id.indexOf('/')) : null);
  const folders = [...new Set(fs.ids.map(folderOf))];
  let labels: Int32Array | undefined;
  let note: string | undefined;
  const named = study.dataset.classes;
  if (named) {
    if (named.length !== classes) throw new LegibleError(`dataset.classes lists ${named.length} classes, but the model has ${classes} outputs: list one folder name per output, in the model's order.`);
    const unknown = folders.filter((f) => f === null || !named.includes(f));
    if (unknown.length) {
      throw new LegibleError(
        `dataset.classes: ${unknown[0] === null ? 'images lie outside class sub-folders' : `the sub-folder "${unknown[0]}" is not listed`} (classes: ${named.join(', ')}). Put every image in a sub-folder named after its class, or remove dataset.classes.`,
      );
    }
    const index = new Map(named.map((f, i) => [f, i]));
    labels = Int32Array.from(chosen, (id) => index.get(folderOf(id)!)!);
  } else if (folders.includes(null)) {
    note = 'the image folder is flat (no class sub-folders): labels are the unmodified model\'s predictions';
  } else if (folders.length !== classes) {
    note = `${folders.length} class sub-folders but the model has ${classes} outputs: labels are the unmodified model's predictions (list the classes in dataset.classes)`;
  } else {
    const index = new Map((folders as string[]).sort().map((f, i) => [f, i]));
    labels = Int32Array.from(chosen, (id) => index.get(folderOf(id)!)!);
  }
  if (note) opts.log(`contribution: ${note}`);

  const byId = new Map(images.map((img) => [img.id, img]));
  const input = modelInput(study);
  const [h, w] = inputSize(input);
  const plane = channelCount(input) * h * w;
  async function* batches(): AsyncGenerator<Float32Array> {
    for (let start = 0; start < chosen.length; start += batch) {
      const ids = chosen.slice(start, start + batch);
      const x = new Float32Array(ids.length * plane);
      const decoded = await Promise.all(ids.map(async (id) => decodeForModel(await readFile(byId.get(id)!.path), input)));
      decoded.forEach((px, i) => normalise(px, input, x, i * plane));
      yield x;
    }
  }

  const result = new Map<string, FeatureContribution>();
  let baselineAccuracy = 1;
  const layouts = new Map((await modelLayers(model, study.model.layers)).map((l) => [l.name, l.layout]));
  for (const layer of study.model.layers) {
    const cols = fs.selected.filter((c) => c.layer === layer.name);
    if (!cols.length) continue;
    const codes = new Map<string, ReturnType<typeof dictionaryCodes>>();
    const features = cols.map((c: FeatureColumn): ContributionFeature => {
      if (c.basis === 'channels') return { channel: c.index };
      const key = `${c.layer}/${c.basis}`;
      const dict = fs.dictionaries.get(key)!;
      if (!codes.has(key)) codes.set(key, dictionaryCodes((rows, n) => dict.encode(rows, n), dict.k));
      return { direction: dict.directions.subarray(c.index * dict.channels, (c.index + 1) * dict.channels), codes: codes.get(key)![c.index] };
    });
    let r: Awaited<ReturnType<typeof decisionContribution>>;
    try {
      r = await decisionContribution(model, layer.tensor, features, batches(), labels, { device: opts.device, channelsLast: layouts.get(layer.name) !== 'nchw' });
    } catch (err) {
      if (err instanceof LegibleError) throw err;
      throw new LegibleError(`decision contribution on layer "${layer.name}" (tensor ${layer.tensor}) failed: ${(err as Error).message.split('\n')[0]}\n  Set contribution.images: 0 in the study file to build the stimuli without it.`);
    }
    baselineAccuracy = r.baselineAccuracy;
    cols.forEach((c, i) => result.set(featureId(c), r.features[i]));
  }
  const seconds = (performance.now() - started) / 1000;
  opts.log(`contribution: ${result.size} features over ${chosen.length} held-out images in ${seconds.toFixed(1)}s (baseline accuracy ${baselineAccuracy.toFixed(3)}${labels ? '' : ', labels = predictions'})`);
  return { features: result, images: chosen.length, labels: labels ? 'given' : 'predicted', baselineAccuracy, note, seconds };
}
