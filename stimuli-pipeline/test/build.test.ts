// The pipeline end to end on a tiny random-weight CNN and a folder of real image files:
// taps, ranking (checked against an independent forward pass in plain TypeScript), splits,
// catch trials, skipped files, determinism, and the errors a user can run into.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { loadStudy, Manifest, rng } from '@legible/studies';
import { buildStimuli, ensureBuilt } from '../src/build.ts';
import { splitOf } from '../src/dataset.ts';
import { attr, makeGraph, makeModel, node, tensorInfo } from '../src/onnx/graph.ts';
import { DataType, encodeModel, float32Tensor } from '../src/onnx/proto.ts';

const SIZE = 12;
const C1 = 5;
const MEAN = 0.5;
const STD = 0.25;

/** Conv 3→5 (3×3, pad 1) → Relu = `act1`; Conv 5→4 (3×3, stride 2, pad 1) → Relu = `act2`. */
function tinyCnn(seed: number) {
  const r = rng(seed);
  const w1 = Float32Array.from({ length: C1 * 3 * 9 }, () => r.next() - 0.5);
  const b1 = Float32Array.from({ length: C1 }, () => 0.2 * (r.next() - 0.5));
  const w2 = Float32Array.from({ length: 4 * C1 * 9 }, () => r.next() - 0.5);
  const model = makeModel({
    graph: makeGraph({
      name: 'tiny',
      inputs: [tensorInfo('input', DataType.FLOAT, ['N', 3, SIZE, SIZE])],
      outputs: [tensorInfo('out', DataType.FLOAT, ['N', 4, SIZE / 2, SIZE / 2])],
      initializers: [float32Tensor('w1', [C1, 3, 3, 3], w1), float32Tensor('b1', [C1], b1), float32Tensor('w2', [4, C1, 3, 3], w2)],
      nodes: [
        node('Conv', ['input', 'w1', 'b1'], ['conv1'], [attr.ints('pads', [1, 1, 1, 1])], { name: 'conv1' }),
        node('Relu', ['conv1'], ['act1'], [], { name: 'relu1' }),
        node('Conv', ['act1', 'w2'], ['conv2'], [attr.ints('pads', [1, 1, 1, 1]), attr.ints('strides', [2, 2])], { name: 'conv2' }),
        node('Relu', ['conv2'], ['out'], [], { name: 'relu2' }),
      ],
    }),
  });
  return { bytes: encodeModel(model), w1, b1 };
}

/** Spatial means of act1 for one RGB image (HWC uint8), computed directly. */
function act1Means(pixels: Uint8Array, w1: Float32Array, b1: Float32Array): number[] {
  const x = (c: number, y: number, xx: number) => (y < 0 || xx < 0 || y >= SIZE || xx >= SIZE ? 0 : (pixels[(y * SIZE + xx) * 3 + c] / 255 - MEAN) / STD);
  const means: number[] = [];
  for (let o = 0; o < C1; o++) {
    let sum = 0;
    for (let y = 0; y < SIZE; y++) {
      for (let xx = 0; xx < SIZE; xx++) {
        let v = b1[o];
        for (let c = 0; c < 3; c++) for (let ky = 0; ky < 3; ky++) for (let kx = 0; kx < 3; kx++) v += w1[((o * 3 + c) * 3 + ky) * 3 + kx] * x(c, y + ky - 1, xx + kx - 1);
        sum += Math.max(0, v);
      }
    }
    means.push(sum / (SIZE * SIZE));
  }
  return means;
}

function studyYaml(extra: { layers?: string; images?: number; perSide?: number; difficulty?: string } = {}): string {
  return `id: tiny
title: Tiny
seed: 3
model:
  onnx: model.onnx
  input: { size: ${SIZE}, channels: rgb, mean: [${MEAN}], std: [${STD}] }
  layers:
${extra.layers ?? '    - { name: early, tensor: act1 }\n    - { name: late, tensor: out }'}
dataset:
  images: images
  split: { seed: 4, reference: 0.7, query: 0.3 }
bases:
  - kind: channels
  - kind: nmf
    components: 3
    seed: 2
features: { select: random, count: 2, seed: 7 }
references: { per_side: ${extra.perSide ?? 4}, columns: 2 }
queries: { difficulty: ${extra.difficulty ?? 'extreme'} }
stimuli: { cell_px: 24, gap_px: 2, quality: 80 }
design: { trials_per_participant: 4, practice_trials: 1 }
text: { consent: c, instructions: i }
`;
}

describe('stimuli pipeline on a tiny CNN', () => {
  let dir: string;
  const pixels = new Map<string, Uint8Array>();
  let net: ReturnType<typeof tinyCnn>;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'legible-pipeline-'));
    net = tinyCnn(11);
    writeFileSync(join(dir, 'model.onnx'), net.bytes);
    const r = rng(5);
    for (let i = 0; i < 90; i++) {
      const cls = `class${i % 3}`;
      mkdirSync(join(dir, 'images', cls), { recursive: true });
      // Smooth random images: a colour gradient plus noise, so channels differ across images.
      const px = new Uint8Array(SIZE * SIZE * 3);
      const [a, b, c] = [r.next(), r.next(), r.next()];
      for (let p = 0; p < SIZE * SIZE; p++) {
        const y = Math.floor(p / SIZE) / SIZE;
        px[p * 3] = Math.round(255 * Math.min(1, a * y + 0.3 * r.next()));
        px[p * 3 + 1] = Math.round(255 * Math.min(1, b * (1 - y) + 0.3 * r.next()));
        px[p * 3 + 2] = Math.round(255 * Math.min(1, c + 0.1 * r.next()) * 0.9);
      }
      const id = `${cls}/img${String(i).padStart(3, '0')}.png`;
      pixels.set(id, px);
      await sharp(Buffer.from(px), { raw: { width: SIZE, height: SIZE, channels: 3 } }).png().toFile(join(dir, 'images', id));
    }
    writeFileSync(join(dir, 'images', 'class0', 'broken.png'), 'this is not a png');
    writeFileSync(join(dir, 'images', 'notes.txt'), 'not an image');
    writeFileSync(join(dir, 'study.yaml'), studyYaml());
  });

  after(() => rmSync(dir, { recursive: true, force: true }));

  it('builds a manifest with the study\'s features, trials and images', async () => {
    const study = loadStudy(join(dir, 'study.yaml'));
    const manifest = Manifest.parse(await buildStimuli(study, { quiet: true, log: () => {} }));
    // 2 layers × 2 bases × 2 features, plus 1 practice feature and 1 for the annotated example.
    assert.equal(manifest.features.length, 10);
    assert.equal(manifest.trials.filter((t) => t.kind === 'main').length, 8);
    assert.equal(manifest.trials.filter((t) => t.kind === 'catch').length, 8);
    assert.equal(manifest.trials.filter((t) => t.kind === 'practice').length, 1);
    const example = manifest.trials.filter((t) => t.kind === 'example');
    assert.equal(example.length, 1);
    const elsewhere = new Set(manifest.trials.filter((t) => t.kind !== 'example').flatMap((t) => [t.feature, t.assets.min, t.assets.max, ...t.assets.queries]));
    for (const x of [example[0].feature, example[0].assets.min, example[0].assets.max, ...example[0].assets.queries]) assert.ok(!elsewhere.has(x), `the example's ${x} is in no other trial`);
    assert.deepEqual(
      manifest.layers.map((l) => [l.name, l.shape]),
      [
        ['early', [C1, SIZE, SIZE]],
        ['late', [4, SIZE / 2, SIZE / 2]],
      ],
    );
    assert.deepEqual(
      manifest.dataset.skipped.map((s) => s.path),
      ['class0/broken.png', 'notes.txt'],
    );
    assert.equal(manifest.dataset.count, 90);
    const nmf = manifest.bases.find((b) => b.layer === 'early' && b.basis === 'nmf')!;
    assert.equal(nmf.features, 3);
    assert.ok(Number(nmf.info.relative_error) < 1);
    // Every asset exists and is a real image of the right size.
    for (const t of manifest.trials) {
      for (const asset of [t.assets.min, t.assets.max, ...t.assets.queries]) {
        assert.match(asset, /^img\/[0-9a-f]{20}\.webp$/);
      }
      const grid = await sharp(join(study.paths.build, t.assets.max)).metadata();
      assert.deepEqual([grid.width, grid.height], [2 * 24 + 2, 2 * 24 + 2]);
      const q = await sharp(join(study.paths.build, t.assets.queries[0])).metadata();
      assert.deepEqual([q.width, q.height], [24, 24]);
    }
    // No file in img/ that the manifest does not use.
    const used = new Set(manifest.trials.flatMap((t) => [t.assets.min, t.assets.max, ...t.assets.queries]));
    assert.deepEqual(new Set(readdirSync(join(study.paths.build, 'img')).map((f) => `img/${f}`)), used);
    // The report draws grids as participants first see them: 2 cells of 24 px and a 2 px gap.
    assert.match(readFileSync(join(study.paths.build, 'report.html'), 'utf8'), /\.grid img\{display:block;width:50px;/);
  });

  it('ranks images by the channel\'s spatial mean, as an independent forward pass does', async () => {
    const study = loadStudy(join(dir, 'study.yaml'));
    const manifest = Manifest.parse(JSON.parse(readFileSync(join(study.paths.build, 'manifest.json'), 'utf8')));
    const features = manifest.features.filter((f) => f.layer === 'early' && f.basis === 'channels');
    assert.ok(features.length >= 2);
    for (const f of features) {
      const act = (id: string) => act1Means(pixels.get(id)!, net.w1, net.b1)[f.index];
      const refIds = [...pixels.keys()].filter((id) => splitOf(id, study.study.dataset.split) === 'reference');
      const ranked = refIds.sort((a, b) => act(b) - act(a));
      // Activations equal to those of the top and bottom four (images with equal activations are a
      // seeded draw, not the first or last names: test/validity.test.ts).
      const close = (got: string[], want: string[], what: string) =>
        got.forEach((id, i) => assert.ok(Math.abs(act(id) - act(want[i])) < 1e-4 * Math.max(1, Math.abs(act(id))), `${what} of ${f.id}: ${id} at ${act(id)}, not ${act(want[i])}`));
      close(f.references.max, ranked.slice(0, 4), 'max references');
      close(f.references.min, ranked.slice(-4).reverse(), 'min references');
      assert.equal(new Set([...f.references.max, ...f.references.min]).size, 8);
      const queryIds = [...pixels.keys()].filter((id) => splitOf(id, study.study.dataset.split) === 'query');
      const best = queryIds.reduce((a, b) => (act(b) > act(a) ? b : a));
      assert.ok(Math.abs(act(f.queries.max[0]) - act(best)) < 1e-4 * Math.max(1, act(best)));
      assert.ok(Math.abs(f.stats.max - act(ranked[0])) < 1e-4 * Math.max(1, Math.abs(f.stats.max)));
    }
  });

  it('keeps references and queries in their splits, and catch queries among the references', () => {
    const study = loadStudy(join(dir, 'study.yaml'));
    const manifest = Manifest.parse(JSON.parse(readFileSync(join(study.paths.build, 'manifest.json'), 'utf8')));
    const features = new Map(manifest.features.map((f) => [f.id, f]));
    for (const t of manifest.trials) {
      const f = features.get(t.feature)!;
      const [q0, q1] = t.query_images;
      assert.notEqual(q0, q1, 'the two queries are the same image');
      for (const id of [...f.references.min, ...f.references.max]) assert.equal(splitOf(id, study.study.dataset.split), 'reference');
      if (t.kind === 'catch') {
        assert.ok(f.references.max.includes(t.query_images[t.answer]));
        assert.ok(f.references.min.includes(t.query_images[1 - t.answer]));
      } else if (t.kind === 'example') {
        // The most extreme held-out queries that no other trial shows.
        assert.ok(f.queries.max.includes(t.query_images[t.answer]));
        assert.ok(f.queries.min.includes(t.query_images[1 - t.answer]));
        for (const id of t.query_images) assert.equal(splitOf(id, study.study.dataset.split), 'query');
      } else {
        assert.equal(t.query_images[t.answer], f.queries.max[0]);
        assert.equal(t.query_images[1 - t.answer], f.queries.min[0]);
        for (const id of t.query_images) assert.equal(splitOf(id, study.study.dataset.split), 'query');
      }
    }
  });

  it('is deterministic: a rebuild writes a byte-identical manifest and the same images', async () => {
    const study = loadStudy(join(dir, 'study.yaml'));
    const first = readFileSync(join(study.paths.build, 'manifest.json'));
    const images = readdirSync(join(study.paths.build, 'img')).sort();
    await buildStimuli(study, { quiet: true, log: () => {} });
    assert.ok(readFileSync(join(study.paths.build, 'manifest.json')).equals(first), 'manifest changed on rebuild');
    assert.deepEqual(readdirSync(join(study.paths.build, 'img')).sort(), images);
  });

  it('reuses an up-to-date build and rebuilds when the study changes', async () => {
    const study = loadStudy(join(dir, 'study.yaml'));
    const logs: string[] = [];
    await ensureBuilt(study, { quiet: true, log: (l) => logs.push(l) });
    assert.equal(logs.length, 0, `an up-to-date build was redone: ${logs.join('; ')}`);
    writeFileSync(join(dir, 'study.yaml'), studyYaml({ perSide: 2 }));
    const changed = loadStudy(join(dir, 'study.yaml'));
    const manifest = await ensureBuilt(changed, { quiet: true, log: (l) => logs.push(l) });
    assert.match(logs[0], /study changed/);
    assert.equal(manifest.features[0].references.max.length, 2);
    writeFileSync(join(dir, 'study.yaml'), studyYaml());
  });

  it('names the nearest tensors when a layer does not exist', async () => {
    writeFileSync(join(dir, 'bad-layer.yaml'), studyYaml({ layers: '    - { name: early, tensor: act_1 }' }));
    await assert.rejects(buildStimuli(loadStudy(join(dir, 'bad-layer.yaml')), { quiet: true, log: () => {} }), /act_1[\s\S]*act1/);
  });

  it('says how many images are needed when the data set is too small', async () => {
    writeFileSync(join(dir, 'big-grid.yaml'), studyYaml({ perSide: 40 }));
    await assert.rejects(
      buildStimuli(loadStudy(join(dir, 'big-grid.yaml')), { quiet: true, log: () => {} }),
      /Needs 80 reference images \(2 × references.per_side\), but the reference split has \d+/,
    );
  });

  it('stops on NaN activations and names the layer', async () => {
    // Log of a normalised image (negative values) gives NaN.
    const model = makeModel({
      graph: makeGraph({
        name: 'nan',
        inputs: [tensorInfo('input', DataType.FLOAT, ['N', 3, SIZE, SIZE])],
        outputs: [tensorInfo('logged', DataType.FLOAT, ['N', 3, SIZE, SIZE])],
        nodes: [node('Log', ['input'], ['logged'], [], { name: 'log' })],
      }),
    });
    const nanDir = join(dir, 'nan');
    mkdirSync(nanDir, { recursive: true });
    writeFileSync(join(nanDir, 'model.onnx'), encodeModel(model));
    writeFileSync(
      join(nanDir, 'study.yaml'),
      studyYaml({ layers: '    - { name: broken, tensor: logged }' }).replace('images: images', 'images: ../images').replace('  - kind: nmf\n    components: 3\n    seed: 2\n', ''),
    );
    await assert.rejects(buildStimuli(loadStudy(join(nanDir, 'study.yaml')), { quiet: true, log: () => {} }), /layer "broken" \(tensor logged\) produced NaN or Inf/);
  });
});
