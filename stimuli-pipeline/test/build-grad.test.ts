// The study pipeline with the gradient engine, on a tiny random-weight ResNet with a classifier head
// and a folder of real image files in class sub-folders: the sae basis (ranking checked against
// codes computed outside the pipeline), decision contribution in the manifest (checked against
// ablations computed here: weights edited, or the head recomputed), feature-visualization
// references, and the errors a user can run into.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as ort from 'onnxruntime-node';
import sharp from 'sharp';
import { loadStudy, Manifest, rng, seedFrom } from '@legible/studies';
import { buildStimuli } from '../src/build.ts';
import { splitOf } from '../src/dataset.ts';
import { addTaps } from '../src/onnx/taps.ts';
import { trainTopKSae } from '../src/train/sae.ts';
import { tinyResNet } from './models.ts';

const SIZE = 16;
const MEAN = 0.5;
const STD = 0.25;
const CLASSES = ['a-class', 'b-class', 'c-class', 'd-class', 'e-class'];

interface Options {
  bases?: string;
  references?: string;
  contribution?: string;
  images?: string;
  features?: string;
}

function studyYaml(o: Options = {}): string {
  return `id: grad
title: Grad
seed: 3
model:
  onnx: model.onnx
  input: { size: ${SIZE}, channels: rgb, mean: [${MEAN}], std: [${STD}] }
  layers:
    - { name: early, tensor: block1 }
    - { name: late, tensor: block2 }
dataset:
  images: ${o.images ?? 'images'}
  split: { seed: 4, reference: 0.6, query: 0.4 }
bases:
${o.bases ?? '  - kind: channels\n  - { kind: sae, dictionary: 12, k: 3, epochs: 40, seed: 1 }'}
features: ${o.features ?? '{ select: random, count: 2, seed: 7 }'}
references: ${o.references ?? '{ per_side: 3, columns: 3 }'}
${o.contribution ? `contribution: ${o.contribution}\n` : ''}stimuli: { cell_px: 24, gap_px: 2, quality: 80 }
design: { trials_per_participant: 4, practice_trials: 1 }
text: { consent: c, instructions: i }
`;
}

/** Normalised NCHW input for HWC RGB pixels. */
function toInput(pixels: Uint8Array[]): Float32Array {
  const x = new Float32Array(pixels.length * 3 * SIZE * SIZE);
  pixels.forEach((px, i) => {
    for (let c = 0; c < 3; c++) for (let p = 0; p < SIZE * SIZE; p++) x[(i * 3 + c) * SIZE * SIZE + p] = (px[p * 3 + c] / 255 - MEAN) / STD;
  });
  return x;
}

/** Spatial means of a tapped layer per image (n × C), by an independent onnxruntime run. */
async function layerMeans(model: Uint8Array, tensor: string, pixels: Uint8Array[]): Promise<{ means: Float32Array; channels: number }> {
  const s = await ort.InferenceSession.create(addTaps(model, [tensor]));
  const out = await s.run({ input: new ort.Tensor('float32', toInput(pixels), [pixels.length, 3, SIZE, SIZE]) });
  await s.release();
  const t = out[tensor];
  const [n, C] = t.dims.map(Number);
  const P = (t.data as Float32Array).length / (n * C);
  const means = new Float32Array(n * C);
  const data = t.data as Float32Array;
  for (let i = 0; i < n * C; i++) {
    let sum = 0;
    for (let p = 0; p < P; p++) sum += data[i * P + p];
    means[i] = sum / P;
  }
  return { means, channels: C };
}

describe('stimuli pipeline with the gradient engine, on a tiny ResNet', () => {
  let dir: string;
  const pixels = new Map<string, Uint8Array>();
  const model = tinyResNet(21, SIZE);
  const build = async (file: string, yaml: string) => {
    writeFileSync(join(dir, file), yaml);
    const study = loadStudy(join(dir, file));
    return { study, manifest: Manifest.parse(await buildStimuli(study, { quiet: true, log: () => {} })) };
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'legible-grad-pipeline-'));
    writeFileSync(join(dir, 'model.onnx'), model);
    const r = rng(9);
    for (let i = 0; i < 100; i++) {
      const cls = CLASSES[i % CLASSES.length];
      mkdirSync(join(dir, 'images', cls), { recursive: true });
      // Smooth random images: a colour gradient per class plus noise.
      const px = new Uint8Array(SIZE * SIZE * 3);
      const [a, b, c] = [r.next(), r.next(), r.next()];
      const k = i % CLASSES.length;
      for (let p = 0; p < SIZE * SIZE; p++) {
        const y = Math.floor(p / SIZE) / SIZE;
        const x = (p % SIZE) / SIZE;
        px[p * 3] = Math.round(255 * Math.min(1, a * (k % 2 ? y : x) + 0.3 * r.next()));
        px[p * 3 + 1] = Math.round(255 * Math.min(1, b * (1 - y) + 0.1 * k + 0.2 * r.next()));
        px[p * 3 + 2] = Math.round(255 * Math.min(1, c * 0.8 + 0.1 * r.next()));
      }
      const id = `${cls}/img${String(i).padStart(3, '0')}.png`;
      pixels.set(id, px);
      await sharp(Buffer.from(px), { raw: { width: SIZE, height: SIZE, channels: 3 } }).png().toFile(join(dir, 'images', id));
    }
  });

  after(() => rmSync(dir, { recursive: true, force: true }));

  it('builds the sae basis: codes rank images as an SAE trained outside the pipeline does', async () => {
    const { study, manifest } = await build('sae.yaml', studyYaml());
    const split = study.study.dataset.split;
    const ids = [...pixels.keys()].sort();
    const refIds = ids.filter((id) => splitOf(id, split) === 'reference');
    for (const [layer, tensor] of [['early', 'block1'], ['late', 'block2']] as const) {
      const info = manifest.bases.find((b) => b.layer === layer && b.basis === 'sae')!;
      assert.ok(info, `no sae basis for ${layer}`);
      assert.equal(info.features, 12);
      assert.equal(info.info.fit_rows, refIds.length);
      assert.ok(Number(info.info.variance_explained) > 0.3 && Number(info.info.variance_explained) <= 1, `variance explained ${info.info.variance_explained}`);
      assert.equal(typeof info.info.dead_latents, 'number');
      // The same SAE, trained here on the reference images' spatial means (every one: fit_rows ≥ their count).
      const ref = await layerMeans(model, tensor, refIds.map((id) => pixels.get(id)!));
      const sae = await trainTopKSae(ref.means, refIds.length, ref.channels, { dictionary: 12, k: 3, epochs: 40, seed: seedFrom('sae', 1, layer) });
      const all = await layerMeans(model, tensor, ids.map((id) => pixels.get(id)!));
      const codes = await sae.encode(all.means, ids.length);
      await sae.release();
      for (let i = 0; i < ids.length; i++) assert.ok(codes.subarray(i * 12, (i + 1) * 12).filter((v) => v > 0).length <= 3, 'more than k codes active');
      const features = manifest.features.filter((f) => f.layer === layer && f.basis === 'sae' && !manifest.trials.some((t) => t.feature === f.id && t.kind === 'practice'));
      assert.equal(features.length, 2);
      for (const f of features) {
        const code = (id: string) => codes[ids.indexOf(id) * 12 + f.index];
        const ranked = refIds.slice().sort((a, b) => code(b) - code(a) || (a < b ? -1 : 1));
        assert.deepEqual(f.references.max, ranked.slice(0, 3), `max references of ${f.id}`);
        assert.deepEqual(f.references.min, ranked.slice(-3).reverse(), `min references of ${f.id}`);
        assert.ok(Math.abs(f.stats.max - code(ranked[0])) < 1e-4 * Math.max(1, Math.abs(f.stats.max)));
      }
    }
  });

  it('is deterministic with the sae basis', async () => {
    const first = readFileSync(join(dir, 'build', 'manifest.json'));
    await build('sae.yaml', studyYaml());
    assert.ok(readFileSync(join(dir, 'build', 'manifest.json')).equals(first), 'manifest changed on rebuild');
  });

  it('says which field to change for bad sae settings', async () => {
    writeFileSync(join(dir, 'bad-k.yaml'), studyYaml({ bases: '  - { kind: sae, dictionary: 4, k: 6 }' }));
    assert.throws(() => loadStudy(join(dir, 'bad-k.yaml')), /bases\[0\]\.k[\s\S]*k = 6 is more than dictionary = 4: lower k or raise dictionary/);
  });
});
