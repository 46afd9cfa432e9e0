// The study pipeline with the gradient engine, on a tiny random-weight ResNet with a classifier head
// and a folder of real image files in class sub-folders: the sae basis (ranking checked against
// codes computed outside the pipeline), decision contribution in the manifest (checked against
// ablations computed here: weights edited, or the head recomputed), feature-visualization
// references, and the errors a user can run into.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as ort from 'onnxruntime-node';
import sharp from 'sharp';
import { loadStudy, Manifest, rng, seedFrom } from '@legible/studies';
import { buildStimuli } from '../src/build.ts';
import { splitOf } from '../src/dataset.ts';
import { decodeModel, tensorToFloat32 } from '../src/onnx/proto.ts';
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
  classes?: string;
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
${o.classes ? `  classes: ${o.classes}\n` : ''}bases:
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
        const ranked = refIds.slice().sort((a, b) => code(b) - code(a));
        // The codes of the top and bottom three (most latents are 0 on many images: those are a
        // seeded draw among the zeros, never the last file names; test/validity.test.ts).
        const close = (got: string[], want: string[], what: string) =>
          got.forEach((id, i) => assert.ok(Math.abs(code(id) - code(want[i])) < 1e-4 * Math.max(1, Math.abs(code(id))), `${what} of ${f.id}: ${id} at ${code(id)}, not ${code(want[i])}`));
        close(f.references.max, ranked.slice(0, 3), 'max references');
        close(f.references.min, ranked.slice(-3).reverse(), 'min references');
        assert.ok(Math.min(...f.references.max.map(code)) > Math.max(...f.references.min.map(code)), `${f.id}: references not separated`);
        assert.ok(Math.abs(f.stats.max - code(ranked[0])) < 1e-4 * Math.max(1, Math.abs(f.stats.max)));
      }
    }
  });

  it('is deterministic with the sae basis', async () => {
    const first = readFileSync(join(dir, 'build', 'manifest.json'));
    await build('sae.yaml', studyYaml());
    assert.ok(readFileSync(join(dir, 'build', 'manifest.json')).equals(first), 'manifest changed on rebuild');
  });

  it('writes each feature\'s decision contribution, as removing it from block2 and recomputing the linear head does', async () => {
    const { study, manifest } = await build('sae.yaml', studyYaml());
    const split = study.study.dataset.split;
    const ids = [...pixels.keys()].sort();
    const held = ids.filter((id) => splitOf(id, split) === 'query');
    assert.deepEqual(manifest.contribution, { images: held.length, labels: 'given', baseline_accuracy: manifest.contribution!.baseline_accuracy });
    const labels = held.map((id) => CLASSES.indexOf(id.split('/')[0]));
    // block2 → GlobalAveragePool → Flatten → Gemm: logits = W · mean(block2) + b, linear in block2.
    const s = await ort.InferenceSession.create(addTaps(model, ['block2']));
    const out = await s.run({ input: new ort.Tensor('float32', toInput(held.map((id) => pixels.get(id)!)), [held.length, 3, SIZE, SIZE]) });
    await s.release();
    const logits = out.logits.data as Float32Array;
    const act = out.block2.data as Float32Array;
    const [n, C, H, Wd] = out.block2.dims.map(Number);
    const P = H * Wd;
    const K = CLASSES.length;
    const gemm = decodeModel(model).graph!.node!.find((x) => x.op_type === 'Gemm')!;
    const W = tensorToFloat32(decodeModel(model).graph!.initializer!.find((t) => t.name === gemm.input![1])!); // K × C
    const argmax = (v: ArrayLike<number>, at: number) => {
      let b = 0;
      for (let k = 1; k < K; k++) if (v[at + k] > v[at + b]) b = k;
      return b;
    };
    /** Scores when image i's pooled block2 loses u[i] · d. */
    const score = (u: Float64Array, d: Float32Array) => {
      let drop = 0;
      let correct = 0;
      let base = 0;
      let changed = 0;
      for (let i = 0; i < n; i++) {
        const edited = Array.from({ length: K }, (_, k) => {
          let wd = 0;
          for (let c = 0; c < C; c++) wd += W[k * C + c] * d[c];
          return logits[i * K + k] - u[i] * wd;
        });
        drop += logits[i * K + labels[i]] - edited[labels[i]];
        if (argmax(edited, 0) === labels[i]) correct++;
        if (argmax(logits, i * K) === labels[i]) base++;
        if (argmax(edited, 0) !== argmax(logits, i * K)) changed++;
      }
      return { logit_drop: drop / n, accuracy_drop: (base - correct) / n, changed: changed / n, baseline: base / n };
    };
    const near = (a: number, b: number, what: string) => assert.ok(Math.abs(a - b) <= 1e-4 * Math.max(1, Math.abs(b)), `${what}: manifest ${a}, here ${b}`);
    const check = (id: string, want: ReturnType<typeof score>) => {
      const f = manifest.features.find((x) => x.id === id)!;
      assert.ok(f.contribution, `${id} has no contribution`);
      near(f.contribution.logit_drop, want.logit_drop, `${id} logit drop`);
      near(f.contribution.accuracy_drop, want.accuracy_drop, `${id} accuracy drop`);
      near(f.contribution.changed, want.changed, `${id} changed`);
      assert.equal(f.importance, f.contribution.logit_drop);
      near(manifest.contribution!.baseline_accuracy, want.baseline, 'baseline accuracy');
    };
    // A channel: zeroing it removes its spatial mean times the one-hot direction.
    const channel = manifest.features.find((f) => f.layer === 'late' && f.basis === 'channels' && f.contribution)!;
    const means = Float64Array.from({ length: n }, (_, i) => {
      let sum = 0;
      for (let p = 0; p < P; p++) sum += act[(i * C + channel.index) * P + p];
      return sum / P;
    });
    check(channel.id, score(means, Float32Array.from({ length: C }, (_, c) => (c === channel.index ? 1 : 0))));
    // An SAE latent: its code at each position (the same SAE, trained here), times its decoder direction.
    const refIds = ids.filter((id) => splitOf(id, split) === 'reference');
    const ref = await layerMeans(model, 'block2', refIds.map((id) => pixels.get(id)!));
    const sae = await trainTopKSae(ref.means, refIds.length, C, { dictionary: 12, k: 3, epochs: 40, seed: seedFrom('sae', 1, 'late') });
    const rows = new Float32Array(n * P * C);
    for (let i = 0; i < n; i++) for (let c = 0; c < C; c++) for (let p = 0; p < P; p++) rows[(i * P + p) * C + c] = act[(i * C + c) * P + p];
    const codes = await sae.encode(rows, n * P);
    const latents = manifest.features.filter((f) => f.layer === 'late' && f.basis === 'sae' && f.contribution);
    assert.equal(latents.length, 2);
    for (const f of latents) {
      const u = Float64Array.from({ length: n }, (_, i) => {
        let sum = 0;
        for (let p = 0; p < P; p++) sum += codes[(i * P + p) * 12 + f.index];
        return sum / P;
      });
      check(f.id, score(u, sae.decoderDirections.subarray(f.index * C, (f.index + 1) * C)));
    }
    await sae.release();
    // The report compares bases per layer.
    const report = readFileSync(join(dir, 'build', 'report.html'), 'utf8');
    assert.match(report, /Decision contribution[\s\S]*<td>late<\/td><td>sae<\/td><td>2<\/td><td>-?\d+\.\d{3} ± \d+\.\d{3}<\/td>/);
  });

  it('uses the model\'s own predictions as labels for a flat folder, and says so', async () => {
    mkdirSync(join(dir, 'flat'), { recursive: true });
    for (const [id, px] of pixels) await sharp(Buffer.from(px), { raw: { width: SIZE, height: SIZE, channels: 3 } }).png().toFile(join(dir, 'flat', id.replace('/', '-')));
    const { manifest } = await build('flat.yaml', studyYaml({ images: 'flat', bases: '  - kind: channels', contribution: '{ images: 10 }' }));
    assert.equal(manifest.contribution!.images, 10);
    assert.equal(manifest.contribution!.labels, 'predicted');
    assert.equal(manifest.contribution!.baseline_accuracy, 1);
    assert.match(manifest.contribution!.note!, /flat/);
    assert.ok(manifest.features.filter((f) => f.contribution).every((f) => f.contribution!.accuracy_drop >= 0));
    const { manifest: off } = await build('off.yaml', studyYaml({ images: 'flat', bases: '  - kind: channels', contribution: '{ images: 0 }' }));
    assert.equal(off.contribution, undefined);
    assert.ok(off.features.every((f) => f.importance === null && f.contribution === undefined));
  });

  it('reads labels in the order of dataset.classes, and says what is wrong with a bad list', async () => {
    const reversed = CLASSES.slice().reverse();
    const { study, manifest } = await build('classes.yaml', studyYaml({ bases: '  - kind: channels', classes: `[${reversed.join(', ')}]` }));
    const held = [...pixels.keys()].sort().filter((id) => splitOf(id, study.study.dataset.split) === 'query');
    const s = await ort.InferenceSession.create(model);
    const out = await s.run({ input: new ort.Tensor('float32', toInput(held.map((id) => pixels.get(id)!)), [held.length, 3, SIZE, SIZE]) });
    await s.release();
    const logits = out.logits.data as Float32Array;
    let correct = 0;
    held.forEach((id, i) => {
      const row = Array.from(logits.subarray(i * 5, i * 5 + 5));
      if (row.indexOf(Math.max(...row)) === reversed.indexOf(id.split('/')[0])) correct++;
    });
    assert.equal(manifest.contribution!.labels, 'given');
    assert.ok(Math.abs(manifest.contribution!.baseline_accuracy - correct / held.length) < 1e-6);
    await assert.rejects(build('classes3.yaml', studyYaml({ bases: '  - kind: channels', classes: '[a-class, b-class, c-class]' })), /dataset.classes lists 3 classes, but the model has 5 outputs/);
    await assert.rejects(
      build('classes-x.yaml', studyYaml({ bases: '  - kind: channels', classes: '[a-class, b-class, c-class, d-class, x-class]' })),
      /dataset.classes: the sub-folder "e-class" is not listed/,
    );
  });

  it('makes visualization references: per_side images a side, the max side driving the feature above the min side', async () => {
    const { study, manifest } = await build(
      'vis.yaml',
      studyYaml({
        references: '{ per_side: 2, columns: 2, kinds: [natural, visualization], visualization: { steps: 48, batch: 16 } }',
        contribution: '{ images: 0 }',
      }),
    );
    const studyFeatures = manifest.features.filter((f) => !manifest.trials.some((t) => t.feature === f.id && (t.kind === 'practice' || t.kind === 'example')));
    assert.equal(studyFeatures.length, 8);
    // One SAE per layer, as the pipeline trained it, for the directions.
    const split = study.study.dataset.split;
    const refIds = [...pixels.keys()].sort().filter((id) => splitOf(id, split) === 'reference');
    const report = readFileSync(join(study.paths.build, 'report.html'), 'utf8');
    for (const f of studyFeatures) {
      const vis = f.visualizations!;
      assert.ok(vis, `${f.id} has no visualizations`);
      assert.equal(vis.max.length, 2);
      assert.equal(vis.min.length, 2);
      assert.equal(new Set([...vis.max, ...vis.min]).size, 4, 'each visualization is its own image');
      // Each max-side visualization's MACO attribution map, for the explorer, in the build folder.
      assert.equal(vis.attributions?.length, vis.max.length);
      for (const a of vis.attributions!) assert.ok(existsSync(join(study.paths.build, a)), `${f.id}: attribution map ${a} missing`);
      // The natural queries stay; the references are the visualizations.
      const main = manifest.trials.find((t) => t.feature === f.id && t.kind === 'main' && t.reference_kind === 'visualization')!;
      const natural = manifest.trials.find((t) => t.feature === f.id && t.kind === 'main' && t.reference_kind === 'natural')!;
      assert.deepEqual([...main.query_images].sort(), [...natural.query_images].sort());
      assert.equal(main.query_images[main.answer], natural.query_images[natural.answer]);
      const katch = manifest.trials.find((t) => t.feature === f.id && t.kind === 'catch' && t.reference_kind === 'visualization')!;
      assert.ok(vis.max.includes(katch.query_images[katch.answer]));
      const grid = await sharp(join(study.paths.build, main.assets.max)).metadata();
      assert.deepEqual([grid.width, grid.height], [2 * 24 + 2, 24]);
      // Each image, run through the model here: the feature's activation (channel mean, or projection on the direction).
      const tensor = f.layer === 'early' ? 'block1' : 'block2';
      const read = async (p: string) => new Uint8Array(await sharp(join(study.paths.build, p)).raw().toBuffer());
      // The pixel-space baseline's image for this feature, as its card in the report shows it.
      const card = report.split('<div class="card">').find((c) => c.startsWith(`<h3>${f.id} `))!;
      const baseline = /<img src="(fv\/[0-9a-f]{20}\.png)" alt="pixel visualization">/.exec(card)?.[1];
      assert.ok(baseline, `${f.id}: a pixel baseline on its card`);
      const imgs = await Promise.all([...vis.max, ...vis.min, baseline].map(read));
      const { means, channels } = await layerMeans(model, tensor, imgs);
      let direction: Float32Array;
      if (f.basis === 'channels') direction = Float32Array.from({ length: channels }, (_, c) => (c === f.index ? 1 : 0));
      else {
        const ref = await layerMeans(model, tensor, refIds.map((id) => pixels.get(id)!));
        const sae = await trainTopKSae(ref.means, refIds.length, channels, { dictionary: 12, k: 3, epochs: 40, seed: seedFrom('sae', 1, f.layer) });
        direction = sae.decoderDirections.slice(f.index * channels, (f.index + 1) * channels);
        await sae.release();
      }
      const drive = imgs.map((_, i) => direction.reduce((s, d, c) => s + d * means[i * channels + c], 0));
      assert.ok(Math.min(drive[0], drive[1]) > Math.max(drive[2], drive[3]), `${f.id}: max side ${drive.slice(0, 2)}, min side ${drive.slice(2, 4)}`);
      assert.ok(drive[4] > Math.max(drive[2], drive[3]), `${f.id}: pixel baseline ${drive[4]}, min side ${drive.slice(2, 4)}`);
    }
    assert.match(report, /maximally activating visualizations/);
    // MACO against the pixel baseline, per layer × basis.
    assert.match(report, /Feature visualizations: maco against the pixel baseline[\s\S]*<td>early<\/td><td>channels<\/td><td>2<\/td><td>-?[\d.e+-]+<\/td><td>-?[\d.e+-]+<\/td><td>\d of 2<\/td>/);
    // Deterministic: the same study gives the same visualizations, so a byte-identical manifest.
    const first = readFileSync(join(study.paths.build, 'manifest.json'));
    await build('vis.yaml', readFileSync(join(dir, 'vis.yaml'), 'utf8'));
    assert.ok(readFileSync(join(study.paths.build, 'manifest.json')).equals(first), 'manifest changed on rebuild');
    assert.match(report, /attribution map/);
  });

  it('says which field to change for visualization settings without the visualization kind', () => {
    writeFileSync(join(dir, 'bad-vis.yaml'), studyYaml({ references: '{ per_side: 2, visualization: { steps: 10 } }' }));
    assert.throws(() => loadStudy(join(dir, 'bad-vis.yaml')), /references\.visualization[\s\S]*Add it to kinds, or remove these settings/);
  });

  it('says which field to change for bad sae settings', async () => {
    writeFileSync(join(dir, 'bad-k.yaml'), studyYaml({ bases: '  - { kind: sae, dictionary: 4, k: 6 }' }));
    assert.throws(() => loadStudy(join(dir, 'bad-k.yaml')), /bases\[0\]\.k[\s\S]*k = 6 is more than dictionary = 4: lower k or raise dictionary/);
  });
});
