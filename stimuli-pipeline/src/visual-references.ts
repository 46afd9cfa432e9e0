// Feature-visualization references (references.kinds: [visualization]): for each study feature,
// per_side images optimised to drive it (the max side) and per_side optimised to drive it down (the
// min side: the negated objective), each from its own seed, all features in batched runs of
// fv/visualize.ts (MACO by default). The objective is the feature's spatially averaged activation: a
// channel's mean, or the mean activation's projection on the dictionary direction (NMF's W row, the
// SAE's decoder row). Images are written as PNG files under build/fv/ (content-hashed names), with
// each max-side image's MACO attribution map beside it for the report. For the report's comparison,
// one image per feature is also optimised with the other method (the plain pixel-space baseline
// when the study uses MACO), and the objective each method reached is kept.
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { modelInput, seedFrom, type Study } from '@legible/studies';
import { featureId, type FeatureColumn } from './exemplars.ts';
import type { FeatureSet } from './features.ts';
import { visualizeFeatures, type FeatureObjective, type ObjectiveLayout } from './fv/visualize.ts';
import { modelLayers } from './layout.ts';
import type { Device } from './runtime.ts';

export const VISUALIZATION_FOLDER = 'fv';

export interface VisualReferences {
  /** By feature id: image paths relative to the build folder. */
  features: Map<string, { min: string[]; max: string[]; attributions: string[] }>;
  /** Build-relative path → absolute file, for the composer. */
  files: Map<string, string>;
  seconds: number;
  /** Per feature id: the objective reached by each max- and min-side image (without augmentation). */
  objectives: Map<string, { max: number[]; min: number[] }>;
  /** The other method's max-side image per feature, for the report: MACO against the pixel baseline. */
  baseline: { method: 'maco' | 'pixel'; features: Map<string, { image: string; objective: number }>; seconds: number };
}

export async function visualReferences(
  study: Study,
  model: Uint8Array,
  fs: FeatureSet,
  features: FeatureColumn[],
  buildDir: string,
  opts: { device?: Device; log: (s: string) => void },
): Promise<VisualReferences> {
  const settings = { steps: 256, method: 'maco' as const, batch: 8, ...study.references.visualization };
  const perSide = study.references.per_side;
  const tensorOf = new Map(study.model.layers.map((l) => [l.name, l.tensor]));
  // The objective averages over the layer's own position axes (class tokens left out).
  const layoutOf = new Map((await modelLayers(model, study.model.layers)).map((l): [string, ObjectiveLayout] => [l.name, { channelsLast: l.layout !== 'nchw', skip: l.classTokens }]));
  const objectives: FeatureObjective[] = [];
  for (const col of features) {
    const tensor = tensorOf.get(col.layer)!;
    const layout = layoutOf.get(col.layer);
    let w: Float32Array;
    if (col.basis === 'channels') {
      const channels = fs.layers.find((l) => l.name === col.layer)!.channels;
      w = new Float32Array(channels);
      w[col.index] = 1;
    } else {
      const dict = fs.dictionaries.get(`${col.layer}/${col.basis}`)!;
      w = dict.directions.slice(col.index * dict.channels, (col.index + 1) * dict.channels);
    }
    const negated = w.map((v) => -v);
    for (let i = 0; i < perSide; i++) objectives.push({ tensor, direction: w, layout });
    for (let i = 0; i < perSide; i++) objectives.push({ tensor, direction: negated, layout });
  }
  const run = (method: 'maco' | 'pixel', objs: FeatureObjective[], seed: number) =>
    visualizeFeatures(model, modelInput(study), objs, { steps: settings.steps, method, batch: settings.batch, seed, device: opts.device, log: opts.log });
  const v = await run(settings.method, objectives, seedFrom('visualization', study.seed));
  // The first max-side objective of each feature, optimised by the other method.
  const otherMethod = settings.method === 'maco' ? 'pixel' : 'maco';
  const b = await run(
    otherMethod,
    features.map((_, f) => objectives[f * 2 * perSide]),
    seedFrom('visualization-baseline', study.seed),
  );
  const dir = join(buildDir, VISUALIZATION_FOLDER);
  mkdirSync(dir, { recursive: true });
  const files = new Map<string, string>();
  const write = async (pixels: Uint8Array, channels: number): Promise<string> => {
    const png = await sharp(Buffer.from(pixels), { raw: { width: v.width, height: v.height, channels: channels as 1 | 3 } })
      .png({ compressionLevel: 9 })
      .toBuffer();
    const name = `${VISUALIZATION_FOLDER}/${createHash('sha256').update(png).digest('hex').slice(0, 20)}.png`;
    if (!files.has(name)) {
      writeFileSync(join(buildDir, name), png);
      files.set(name, join(buildDir, name));
    }
    return name;
  };
  const result = new Map<string, { min: string[]; max: string[]; attributions: string[] }>();
  const reached = new Map<string, { max: number[]; min: number[] }>();
  for (const [f, col] of features.entries()) {
    const at = f * 2 * perSide;
    const max: string[] = [];
    const min: string[] = [];
    const attributions: string[] = [];
    for (let i = 0; i < perSide; i++) {
      max.push(await write(v.images[at + i], v.channels));
      min.push(await write(v.images[at + perSide + i], v.channels));
      attributions.push(await write(Uint8Array.from(v.attributions[at + i], (a) => Math.round(255 * a)), 1));
    }
    result.set(featureId(col), { min, max, attributions });
    reached.set(featureId(col), { max: v.objectives.slice(at, at + perSide), min: v.objectives.slice(at + perSide, at + 2 * perSide).map((o) => -o) });
  }
  const baseline = new Map<string, { image: string; objective: number }>();
  for (const [f, col] of features.entries()) baseline.set(featureId(col), { image: await write(b.images[f], b.channels), objective: b.objectives[f] });
  opts.log(`visualization references: ${objectives.length} images for ${features.length} features (${settings.method}, ${settings.steps} steps) in ${v.seconds.toFixed(1)}s on ${v.device}; ${otherMethod} baseline ${b.seconds.toFixed(1)}s`);
  return { features: result, files, seconds: v.seconds, objectives: reached, baseline: { method: otherMethod, features: baseline, seconds: b.seconds } };
}
