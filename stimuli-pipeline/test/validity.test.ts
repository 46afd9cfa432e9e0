// Trial validity (issue 10, item 1): a feature is used only where it separates its references and
// its queries by real activation differences; equal activations are ordered by a seeded draw, never
// by file name; a feature that can't make valid trials is rejected with the reason and the numbers.
// Constructed activations whose right answers are known, then a build on a constructed ONNX model
// whose channels are known exactly (uniform-colour images through a 1×1 convolution and a ReLU).
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { loadStudy, Manifest, parseStudy, type Study } from '@legible/studies';
import { Rng } from '@legible/studies/random';
import { buildStimuli } from '../src/build.ts';
import { computeFeatures, SAE_POOR_FIT } from '../src/features.ts';
import { listImages } from '../src/dataset.ts';
import { ActivationStore, type StoreHeader } from '../src/store.ts';
import { imageFolder } from '../bench/lib.ts';
import { cachedRun, torchMissing } from './torch-ref.ts';
import { splitOf } from '../src/dataset.ts';
import { assessFeature, drawOrder, exemplarsOf, pickFeatures, practiceTrialOf, rankContext, trialsOf, type FeatureColumn } from '../src/exemplars.ts';
import { attr, makeGraph, makeModel, node, tensorInfo } from '../src/onnx/graph.ts';
import { DataType, encodeModel, float32Tensor } from '../src/onnx/proto.ts';

const studyOf = (overrides = '', features = '{ select: all }'): Study => {
  const parsed = parseStudy(`
id: t
title: T
seed: 1
model:
  onnx: m.onnx
  input: { size: 8, channels: rgb, mean: [0], std: [1] }
  layers: [{ name: sae1, tensor: x }]
dataset: { images: d }
bases: [{ kind: sae, dictionary: 8, k: 2 }]
features: ${features}
design: { trials_per_participant: 4 }
text: { consent: c, instructions: i }
${overrides}`);
  assert.deepEqual(parsed.problems, []);
  return parsed.study!;
};

// 200 images: 150 reference rows (i % 4 ≠ 0), 50 query rows (i % 4 = 0).
const n = 200;
const ids = Array.from({ length: n }, (_, i) => `photos/${String(i).padStart(5, '0')}.jpg`);
const refRows = ids.map((_, i) => i).filter((i) => i % 4 !== 0);
const queryRows = ids.map((_, i) => i).filter((i) => i % 4 === 0);
const column = (index: number, value: (i: number) => number): FeatureColumn => ({ layer: 'sae1', basis: 'sae', index, values: Float32Array.from(ids, (_, i) => value(i)) });
const valueOf = (f: FeatureColumn) => (id: string) => f.values[ids.indexOf(id)];
/** Sparse: 0 on images 0–149, rising on 150–199. */
const sparse = (i: number) => (i >= 150 ? i - 149 : 0);

describe('exemplars on constructed activations', () => {
  const study = studyOf();
  const ctx = rankContext(study, ids, refRows, queryRows);

  it('draws the minimal references of a sparse feature from its block of zeros by seed, not by name', () => {
    const zeroRefs = refRows.filter((r) => sparse(r) === 0).map((r) => ids[r]);
    assert.equal(zeroRefs.length, 112);
    const draws = Array.from({ length: 40 }, (_, j) => exemplarsOf(column(j, sparse), ctx).min);
    for (const min of draws) {
      assert.equal(min.length, 9);
      for (const id of min) assert.ok(zeroRefs.includes(id), `${id} is not one of the zero images`);
      assert.notDeepEqual(min.slice().sort(), zeroRefs.slice(-9), 'the last file names');
      assert.notDeepEqual(min.slice().sort(), zeroRefs.slice(0, 9), 'the first file names');
    }
    // Features with the same values get their own draws; together they cover the block.
    assert.equal(new Set(draws.map((d) => d.join())).size, 40);
    assert.ok(new Set(draws.flat()).size > 0.9 * zeroRefs.length, `draws cover ${new Set(draws.flat()).size} of ${zeroRefs.length}`);
    // Reproducible from the seed; another study seed draws others.
    assert.deepEqual(exemplarsOf(column(3, sparse), ctx).min, draws[3]);
    assert.notDeepEqual(exemplarsOf(column(3, sparse), rankContext(studyOf().seed === 1 ? { ...study, seed: 2 } : study, ids, refRows, queryRows)).min, draws[3]);
    // The maximal side is the top of the ranking, strictly above every minimal reference.
    const ex = exemplarsOf(column(0, sparse), ctx);
    assert.deepEqual(ex.max, refRows.filter((r) => r >= 150).map((r) => ids[r]).reverse().slice(0, 9));
    assert.deepEqual(ex.activations.min, Array(9).fill(0));
    assert.ok(Math.min(...ex.activations.max) > 0);
    assert.equal(ex.stats.zero_fraction, 112 / 150);
  });

  it('counts NMF codes at the solver\'s floor (1e-10) as zero, and draws among them as among zeros', () => {
    const floor = Math.fround(1e-10);
    const nmf: FeatureColumn = { layer: 'sae1', basis: 'nmf', index: 0, values: Float32Array.from(ids, (_, i) => (i >= 150 ? i - 149 : floor)) };
    const ex = exemplarsOf(nmf, ctx);
    assert.equal(ex.stats.zero_fraction, 112 / 150);
    assert.deepEqual(ex.activations.min, Array(9).fill(floor));
    // The same values as a channel: 1e-10 is a (tiny) activation there, not zero.
    assert.equal(exemplarsOf({ ...nmf, basis: 'channels' }, ctx).stats.zero_fraction, 0);
  });

  it('draws among a block of equal values at the boundary of the maximal references', () => {
    // Five distinct top values, then a block of 20 images at 3 straddling the 9th place, then zeros.
    const top = refRows.slice(0, 5);
    const block = refRows.slice(5, 25);
    const values = (i: number) => (i % 4 === 0 ? i / 20 : top.includes(i) ? 10 - top.indexOf(i) : block.includes(i) ? 3 : 0);
    const drawn = new Set<string>();
    for (let j = 0; j < 20; j++) {
      const ex = exemplarsOf(column(j, values), ctx);
      assert.deepEqual(ex.max.slice(0, 5), top.map((r) => ids[r]));
      assert.deepEqual(ex.activations.max, [10, 9, 8, 7, 6, 3, 3, 3, 3]);
      for (const id of ex.max.slice(5)) {
        assert.ok(block.map((r) => ids[r]).includes(id));
        drawn.add(id);
      }
    }
    assert.ok(drawn.size > 12, `only ${drawn.size} of the block's 20 images were ever drawn`);
  });

  it('rejects dead latents and latents with fewer than per_side images above their minimum, saying how many', async () => {
    const columns = [
      column(0, () => 0), // dead
      column(1, (i) => (i === 197 ? 4.2 : 0)), // one truly activating image (a reference row)
      column(2, (i) => ([5, 9, 21, 33].includes(i) ? 1 + i : 0)), // four, all reference rows
      column(3, sparse), // 38 reference images above 0
      column(4, (i) => i), // dense
    ];
    const pick = await pickFeatures({ ctx, layer: 'sae1', basis: 'sae', features: 5, constant: (j) => (j === 0 ? 0 : null), load: (w) => w.map((j) => columns[j]), spareCount: 0 });
    assert.deepEqual(pick.selected.map((p) => p.column.index), [3, 4]);
    assert.deepEqual(pick.rejected.map((r) => [r.index, r.reason]), [
      [0, 'constant'],
      [1, 'references'],
      [2, 'references'],
    ]);
    assert.match(pick.rejected[0].message, /constant over the 150 reference images \(every one at 0\)/);
    assert.equal(pick.rejected[1].message, 'only 1 of 150 reference images above 0 (needs 9 distinct maximal references)');
    assert.equal(pick.rejected[2].message, 'only 4 of 150 reference images above 0 (needs 9 distinct maximal references)');
    assert.deepEqual([pick.rejected[2].numbers.above, pick.rejected[2].numbers.gap, pick.rejected[2].numbers.zero_fraction], [4, 0, Number((146 / 150).toPrecision(6))]);
    // The same verdicts from a constant check on the values themselves.
    const dead = assessFeature(columns[0], ctx);
    assert.ok(!dead.ok && dead.rejection.reason === 'constant');
  });

  it('rejects a feature whose gap is above 0 but below min_separation of its range, and takes it with a smaller setting', () => {
    // References spread over [0.99, 1]; one image at 0 stretches the range to 1.
    const values = (i: number) => (i === 1 ? 0 : 0.99 + (0.01 * i) / n);
    const a = assessFeature(column(0, values), ctx);
    assert.ok(!a.ok);
    assert.equal(a.rejection.reason, 'references');
    assert.equal(
      a.rejection.message,
      'its 9th maximal reference (0.9995) is not clearly above its 9th minimal reference (0.9905): gap 0.0089, needs a gap above 0 and at least 0.05 = features.min_separation 0.05 × its range 0.9999',
    );
    assert.ok(a.rejection.numbers.gap > 0 && a.rejection.numbers.gap < a.rejection.numbers.required);
    const lenient = studyOf('', '{ select: all, min_separation: 0.001 }');
    assert.ok(assessFeature(column(0, values), rankContext(lenient, ids, refRows, queryRows)).ok);
    // Exact ties never pass, even with min_separation 0.
    const none = studyOf('', '{ select: all, min_separation: 0 }');
    const tied = assessFeature(column(1, (i) => (i < 190 ? 1 : 2)), rankContext(none, ids, refRows, queryRows));
    assert.ok(!tied.ok && tied.rejection.reason === 'references');
  });

  it('rejects a feature that varies only by float32 round-off as constant (an SAE latent of EfficientNet-B0 in the zoo: 0.00446556 ± 1e-9)', () => {
    // Its values are distinct, so ranks and gaps exist, and min_separation is relative to its range:
    // without a floor it passed, with nine references that print identically.
    const a = assessFeature(column(0, (i) => 0.00446556 + 1e-9 * ((i * 37) % 11)), ctx);
    assert.ok(!a.ok, 'accepted');
    assert.equal(a.rejection.reason, 'constant');
    assert.match(a.rejection.message, /constant over the 150 reference images up to float32 round-off \(0\.00446556 to 0\.00446557: a range of [0-9.e-]+, below 1e-5 of its magnitude\)/);
    // A small feature is not a constant one: values of 1e-9 scale that vary over their magnitude pass.
    assert.ok(assessFeature(column(1, (i) => 1e-9 * sparse(i)), ctx).ok);
  });

  it('rejects a feature whose two queries tie at the study\'s difficulty, and uses the same rule for practice', async () => {
    // Dense on the references; on the query split 0 except the three highest query rows.
    const topQueries = queryRows.slice(-3);
    const values = (i: number) => (i % 4 !== 0 ? i : topQueries.includes(i) ? i : 0);
    const p85 = studyOf('queries: { difficulty: p85 }');
    const hard = assessFeature(column(0, values), rankContext(p85, ids, refRows, queryRows));
    assert.ok(!hard.ok);
    assert.equal(hard.rejection.reason, 'queries');
    assert.match(hard.rejection.message, /^its queries at difficulty p85 are not separated: the held-out image at the 85th percentile activates it at 0, the one at the 15th at 0 \(gap 0; .*\); 3 of 50 held-out images are above 0$/);
    // The most extreme queries are apart: fine for practice, and for a study at difficulty extreme.
    const easy = assessFeature(column(0, values), rankContext(p85, ids, refRows, queryRows), { difficulty: 'extreme' });
    assert.ok(easy.ok);
    assert.equal(easy.exemplars.queries.max[0], ids[topQueries[2]]);
    assert.ok(easy.exemplars.activations.queries.max[0] > easy.exemplars.activations.queries.min[0]);
    // Query candidates stop before they would tie: only the three non-zero held-out images.
    assert.deepEqual(easy.exemplars.activations.queries.max, topQueries.slice().reverse());
    const practice = practiceTrialOf('sae1/sae/0', easy.exemplars, 1);
    const act = valueOf(column(0, values));
    assert.ok(act(practice.queries[practice.answer]) > act(practice.queries[1 - practice.answer]));
    // A feature whose held-out images are all 0 is not drawn for practice either.
    const flatQueries = column(1, (i) => (i % 4 !== 0 ? i : 0));
    const listed = studyOf('queries: { difficulty: p85 }', '{ select: list, list: [sae1/sae/2] }');
    const pick = await pickFeatures({
      ctx: rankContext(listed, ids, refRows, queryRows),
      layer: 'sae1',
      basis: 'sae',
      features: 3,
      constant: () => null,
      load: (w) => w.map((j) => [column(0, values), flatQueries, column(2, (i) => i)][j]),
      spareCount: 3,
    });
    // Practice features come from the rest of the draw, with extreme queries: 0 is fine, 1 is not.
    assert.deepEqual(pick.selected.map((p) => p.column.index), [2]);
    assert.deepEqual(pick.spare.map((p) => p.column.index), [0]);
    assert.deepEqual(pick.rejected.map((r) => [r.index, r.for, r.reason]), [[1, 'practice', 'queries']]);
  });

  it('gives main and catch trials queries that the feature separates', () => {
    const ex = exemplarsOf(column(0, sparse), ctx);
    const act = valueOf(column(0, sparse));
    for (const t of trialsOf('sae1/sae/0', ex, ['natural'], 1)) {
      assert.ok(act(t.queries[t.answer]) > act(t.queries[1 - t.answer]), `${t.id}: ${act(t.queries[t.answer])} vs ${act(t.queries[1 - t.answer])}`);
    }
  });

  it('draws a seeded random sample of the valid features, rejecting the invalid ones it meets, and says when too few are valid', async () => {
    const columns = Array.from({ length: 12 }, (_, j) => (j % 3 === 0 ? column(j, (i) => (i === 197 ? 1 : 0)) : column(j, (i) => (i * (j + 1)) % 97)));
    const random = studyOf('', '{ select: random, count: 4, seed: 3 }');
    const args = { ctx: rankContext(random, ids, refRows, queryRows), layer: 'sae1', basis: 'sae' as const, features: 12, constant: () => null, load: (w: number[]) => w.map((j) => columns[j]), spareCount: 2 };
    const pick = await pickFeatures(args);
    assert.equal(pick.selected.length, 4);
    assert.ok(pick.selected.every((p) => p.column.index % 3 !== 0));
    assert.ok(pick.rejected.every((r) => r.index % 3 === 0 && r.reason === 'references'));
    assert.equal(pick.spare.length, 2);
    assert.deepEqual((await pickFeatures(args)).selected.map((p) => p.column.index), pick.selected.map((p) => p.column.index));
    await assert.rejects(
      pickFeatures({ ...args, ctx: rankContext(studyOf('', '{ select: random, count: 9 }'), ids, refRows, queryRows) }),
      /features\.count = 9, but only 8 of layer "sae1"'s 12 sae features separate their references and queries \(4 with references not separated\)/,
    );
    const listed = studyOf('', '{ select: list, list: [sae1/sae/1, sae1/sae/3] }');
    await assert.rejects(
      pickFeatures({ ...args, ctx: rankContext(listed, ids, refRows, queryRows) }),
      /features\.list\[1\] "sae1\/sae\/3": only 1 of 150 reference images above 0 \(needs 9 distinct maximal references\)[\s\S]*Remove it from features\.list/,
    );
  });

  it('counts byte-identical files once: no reference twice, no query that is a copy of a reference', () => {
    // Image 198 (a reference) is a copy of 199, the top reference; 196, the top query row, a copy of reference 197.
    const hashes = new Map(ids.map((id, i) => [id, `h${i}`]));
    hashes.set(ids[198], 'h199'); // a copy of the top reference
    hashes.set(ids[196], 'h197'); // the top query row is a copy of a reference
    const withHashes = rankContext(study, ids, refRows, queryRows, hashes);
    const ex = exemplarsOf(column(0, (i) => i), withHashes);
    assert.ok(ex.max.includes(ids[199]) && !ex.max.includes(ids[198]));
    assert.equal(new Set(ex.max).size, 9);
    assert.equal(ex.queries.max[0], ids[192]);
  });
});

// ── A build on a model whose channels are known exactly. ──

const SIZE = 8;
/** Per channel, relu(w · rgb + b) on uniform images: channel values in closed form. */
const CHANNELS = [
  { w: [1, 0, 0], b: 0 }, // dense: red
  { w: [1, 0, 0], b: -0.9 }, // > 0 only where red > 229: three images
  { w: [0, -1, 0], b: -1 }, // dead
  { w: [1, 0, 0], b: -0.5 }, // zero on about half the images
  { w: [0, 0, 1], b: 0 }, // dense: blue
];
const colourOf = (i: number) => [i * 3, 128, (i * 37) % 256];
const channelValue = (c: number, i: number, channels = CHANNELS) => {
  const { w, b } = channels[c];
  const rgb = colourOf(i).map((x) => x / 255);
  return Math.max(0, w[0] * rgb[0] + w[1] * rgb[1] + w[2] * rgb[2] + b);
};

/** Conv 1×1 (3 → channels) and a ReLU: output `act`. */
function pointwise(channels: { w: number[]; b: number }[]): Uint8Array {
  const C = channels.length;
  const model = makeModel({
    graph: makeGraph({
      name: 'pointwise',
      inputs: [tensorInfo('input', DataType.FLOAT, ['N', 3, SIZE, SIZE])],
      outputs: [tensorInfo('act', DataType.FLOAT, ['N', C, SIZE, SIZE])],
      initializers: [float32Tensor('w', [C, 3, 1, 1], channels.flatMap((c) => c.w)), float32Tensor('b', [C], channels.map((c) => c.b))],
      nodes: [node('Conv', ['input', 'w', 'b'], ['pre'], [attr.ints('kernel_shape', [1, 1])], { name: 'conv' }), node('Relu', ['pre'], ['act'], [], { name: 'relu' })],
    }),
  });
  return encodeModel(model);
}

describe('a build keeps only features that separate their references and queries', () => {
  let dir: string;
  const idOf = (i: number) => `img${String(i).padStart(3, '0')}.png`;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'legible-validity-'));
    writeFileSync(join(dir, 'model.onnx'), pointwise(CHANNELS));
    mkdirSync(join(dir, 'images'));
    for (let i = 0; i < 80; i++) {
      const [r, g, b] = colourOf(i);
      await sharp({ create: { width: SIZE, height: SIZE, channels: 3, background: { r, g, b } } }).png().toFile(join(dir, 'images', idOf(i)));
    }
    writeFileSync(
      join(dir, 'study.yaml'),
      `id: valid
title: Valid
seed: 2
model:
  onnx: model.onnx
  input: { size: ${SIZE}, channels: rgb, mean: [0], std: [1] }
  layers: [{ name: pw, tensor: act }]
dataset: { images: images, split: { seed: 1, reference: 0.7, query: 0.3 } }
bases: [{ kind: channels }]
features: { select: all }
references: { per_side: 4, columns: 2 }
contribution: { images: 0 }
stimuli: { cell_px: 16, gap_px: 2 }
design: { trials_per_participant: 2, practice_trials: 0 }
text: { consent: c, instructions: i }
`,
    );
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('rejects the dead and the too-sparse channel with the numbers, and separates every trial of the rest', async () => {
    const loaded = loadStudy(join(dir, 'study.yaml'));
    const manifest = Manifest.parse(await buildStimuli(loaded, { quiet: true, log: () => {} }));
    const split = (i: number) => splitOf(idOf(i), loaded.study.dataset.split);
    const refs = Array.from({ length: 80 }, (_, i) => i).filter((i) => split(i) === 'reference');
    const indexOf = (id: string) => Number(id.slice(3, 6));

    assert.deepEqual(manifest.features.map((f) => f.index), [0, 3, 4]);
    const rejected = manifest.rejected!;
    assert.deepEqual(rejected.map((r) => [r.id, r.reason]), [
      ['pw/channels/1', 'references'],
      ['pw/channels/2', 'constant'],
    ]);
    const above = refs.filter((i) => channelValue(1, i) > 0).length;
    assert.ok(above < 4, `${above} reference images activate channel 1`);
    assert.equal(rejected[0].message, `only ${above} of ${refs.length} reference images above 0 (needs 4 distinct maximal references)`);
    assert.equal(rejected[0].numbers.above, above);
    assert.equal(manifest.bases[0].info.rejected, 2);
    assert.equal(manifest.bases[0].info.zero_everywhere, 1);

    for (const f of manifest.features) {
      const act = (id: string) => channelValue(f.index, indexOf(id));
      // The manifest's activations are the channel's (float32 of the closed form).
      assert.deepEqual(f.activations!.max.map((x) => x.toPrecision(4)), f.references.max.map((id) => act(id).toPrecision(4)));
      assert.deepEqual(f.activations!.min.map((x) => x.toPrecision(4)), f.references.min.map((id) => act(id).toPrecision(4)));
      assert.ok(Math.min(...f.references.max.map(act)) > Math.max(...f.references.min.map(act)), `${f.id}: references overlap`);
      assert.equal(f.stats.zero_fraction, Number((refs.filter((i) => channelValue(f.index, i) === 0).length / refs.length).toPrecision(6)));
      for (const t of manifest.trials.filter((x) => x.feature === f.id)) {
        assert.ok(act(t.query_images[t.answer]) > act(t.query_images[1 - t.answer]), `${t.id}: queries tie or are reversed`);
      }
    }
    // Channel 3 is 0 on many reference images: its minimal references are a draw among them, not the last names.
    const half = manifest.features.find((f) => f.index === 3)!;
    const zeros = refs.filter((i) => channelValue(3, i) === 0).map(idOf);
    assert.ok(zeros.length > 12);
    assert.ok(half.references.min.every((id) => zeros.includes(id)));
    assert.notDeepEqual(half.references.min.slice().sort(), zeros.slice(-4));

    const report = readFileSync(join(loaded.paths.build, 'report.html'), 'utf8');
    assert.match(report, /<td>pw\/channels\/1<\/td><td>study<\/td><td>references<\/td>/);
    assert.match(report, /constant over the reference images: 2/);
    assert.match(report, /exactly 0 on \d+\.\d %/);
  });

  it('draws past the channels it read with the other features, reading the store again for the rest', async () => {
    // 40 channels: every tenth dense, the others active on three images at most (never valid).
    const channels = Array.from({ length: 40 }, (_, c) => (c % 10 === 0 ? { w: [1, 0, c / 400], b: 0 } : { w: [1, 0, 0], b: -0.9 }));
    mkdirSync(join(dir, 'many'), { recursive: true });
    writeFileSync(join(dir, 'many', 'model.onnx'), pointwise(channels));
    const yaml = (seed: number) => readFileSync(join(dir, 'study.yaml'), 'utf8').replace('images: images', 'images: ../images').replace('features: { select: all }', `features: { select: random, count: 3, seed: ${seed} }`);
    writeFileSync(join(dir, 'many', 'study.yaml'), yaml(0));
    const first = loadStudy(join(dir, 'many', 'study.yaml'));
    const refs = Array.from({ length: 80 }, (_, i) => i).filter((i) => splitOf(idOf(i), first.study.dataset.split) === 'reference');
    const live = channels.map((_, c) => c).filter((c) => new Set(refs.map((i) => channelValue(c, i, channels))).size > 1);
    // A seed whose draw meets its third valid channel after the first 24 (what pass 2 reads: max(16, 2 × count) + 8).
    const third = (seed: number) => {
      const order = drawOrder({ ...first.study, features: { ...first.study.features, seed } }, 'pw', 'channels', live);
      const valid = order.map((c, pos) => ({ c, pos })).filter(({ c }) => c % 10 === 0);
      return { pos: valid[2].pos, chosen: valid.slice(0, 3).map(({ c }) => c).sort((a, b) => a - b), before: order.slice(0, valid[2].pos).filter((c) => c % 10 !== 0).sort((a, b) => a - b) };
    };
    const seed = Array.from({ length: 200 }, (_, s) => s).find((s) => third(s).pos >= 24)!;
    assert.ok(seed !== undefined);
    writeFileSync(join(dir, 'many', 'study.yaml'), yaml(seed));
    const loaded = loadStudy(join(dir, 'many', 'study.yaml'));
    const manifest = Manifest.parse(await buildStimuli(loaded, { quiet: true, log: () => {} }));
    const expected = third(seed);
    // The study's features (a spare valid channel, if any, makes the instructions' example).
    const studyFeatures = manifest.features.filter((f) => manifest.trials.some((t) => t.feature === f.id && t.kind === 'main'));
    assert.deepEqual(studyFeatures.map((f) => f.index), expected.chosen);
    assert.deepEqual(manifest.rejected!.filter((r) => r.reason !== 'constant' && r.for === 'study').map((r) => r.index), expected.before);
    for (const f of manifest.features) {
      const act = (id: string) => channelValue(f.index, Number(id.slice(3, 6)), channels);
      assert.deepEqual(f.activations!.max.map((x) => x.toPrecision(4)), f.references.max.map((id) => act(id).toPrecision(4)));
      assert.ok(Math.min(...f.references.max.map(act)) > Math.max(...f.references.min.map(act)));
    }
  });

  // The zoo's GoogLeNet and EfficientNet-B0 (torchvision's random weights) have activations of about
  // 1e-9 at their layers: the SAE diverged there, every latent came out constant and the build failed
  // without saying why. The same channels at a scale of 1e-9 and at 1 give the same latents.
  it('builds SAE latents from activations of 1e-9 as from the same activations at 1', async () => {
    const channels = Array.from({ length: 12 }, (_, c) => ({ w: [Math.cos(c), Math.sin(c), Math.cos(3 * c)], b: -0.2 * (c % 3) }));
    const build = async (name: string, scale: number, sae: string) => {
      mkdirSync(join(dir, name), { recursive: true });
      writeFileSync(join(dir, name, 'model.onnx'), pointwise(channels.map(({ w, b }) => ({ w: w.map((x) => x * scale), b: b * scale }))));
      const yaml = readFileSync(join(dir, 'study.yaml'), 'utf8')
        .replace('images: images', 'images: ../images')
        .replace('bases: [{ kind: channels }]', `bases: [{ kind: channels }, ${sae}]`)
        .replace('features: { select: all }', 'features: { select: random, count: 2, seed: 1 }');
      writeFileSync(join(dir, name, 'study.yaml'), yaml);
      const said: string[] = [];
      const manifest = Manifest.parse(await buildStimuli(loadStudy(join(dir, name, 'study.yaml')), { quiet: true, log: (s) => said.push(s) }));
      const basis = manifest.bases.find((b) => b.basis === 'sae')!;
      return { manifest, ve: basis.info.variance_explained as number, said, sae: manifest.features.filter((f) => f.basis === 'sae') };
    };
    const sae = '{ kind: sae, dictionary: 8, k: 2, epochs: 3 }';
    const unit = await build('unit', 1, sae);
    const tiny = await build('tiny', 1e-9, sae);
    assert.ok(tiny.ve > 0 && Math.abs(tiny.ve - unit.ve) < 1e-3, `variance explained ${tiny.ve} at 1e-9, ${unit.ve} at 1`);
    assert.deepEqual(tiny.sae.map((f) => f.id), unit.sae.map((f) => f.id));
    assert.equal(tiny.sae.length, 2);
    for (const [a, b] of tiny.sae.map((f, i) => [f, unit.sae[i]])) {
      assert.deepEqual(a.references, b.references, `${a.id}: other references at 1e-9`);
      assert.ok(Math.min(...a.activations!.max) > Math.max(...a.activations!.min), `${a.id}: references not separated`);
    }
    // A well-fitted SAE is not warned about (a poorly fitted one: below).
    assert.ok(!unit.said.some((s) => s.startsWith('warning:')), unit.said.join('\n'));
  });
});


describe('an SAE that fits poorly', () => {
  // 120 images of 256 channels of isotropic noise: nothing for 64 latents with k = 1 to compress, and
  // one epoch is one Adam step. The build says so, with the layer, the numbers and what to change.
  const c = 256;
  let dir: string;
  let store: ActivationStore;
  const ids = Array.from({ length: 120 }, (_, i) => `noise/${String(i).padStart(3, '0')}.png`);
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'legible-sae-poor-'));
    store = ActivationStore.open(dir, 'noise', ids.length, ids.length);
    store.setLayers([{ name: 'noise', tensor: 'x', channels: c, shape: [c] }]);
    const r = new Rng(11);
    const mean = Float32Array.from({ length: ids.length * c }, () => 1e-3 * r.normal());
    store.write({ index: 0, ids, skipped: [], hashes: {}, mean: [mean], max: [mean] });
  });
  after(() => rmSync(dir, { recursive: true, force: true }));
  const studyWith = (count?: number) => studyOf('references: { per_side: 2 }', count ? `{ select: random, count: ${count}, seed: 1 }` : '{ select: all }');
  const run = async (study: Study, said: string[]) =>
    computeFeatures({ ...study, bases: [{ kind: 'channels', aggregate: 'mean' }, { kind: 'sae', dictionary: 64, k: 4, epochs: 1, seed: 0, fit_rows: 50_000 }] }, store, {
      model: new Uint8Array(),
      images: ids.map((id) => ({ id, path: id, bytes: 0 })),
      log: (s) => said.push(s),
      quiet: true,
    });

  it('warns with the layer, the variance explained and what to change in the study file', async () => {
    const said: string[] = [];
    const features = await run(studyWith(), said);
    try {
      const ve = features.bases.find((b) => b.basis === 'sae')!.info.variance_explained as number;
      assert.ok(ve < SAE_POOR_FIT, `variance explained ${ve}`);
      const warning = said.find((s) => s.startsWith('warning:'));
      assert.ok(warning, said.join('\n'));
      assert.match(warning, new RegExp(`^warning: sae on layer "noise" explains little of the layer \\(below ${SAE_POOR_FIT}\\): variance explained ${ve.toFixed(4)} after 1 epoch \\(2 Adam steps\\) on 92 images`));
      assert.match(warning, /raise bases\[1\]\.epochs \(now 1; .*add images \(dataset\.images.*lower bases\[1\]\.dictionary \(now 64\)/);
    } finally {
      await features.release();
    }
  });

  it('repeats the warning as the likely cause when its latents cannot make the study', async () => {
    const said: string[] = [];
    await assert.rejects(run(studyWith(64), said), (err: Error) => {
      assert.match(err.message, /features\.count = 64, but [^]*"noise"[^]*\nThe likely cause: sae on layer "noise" explains little/);
      return true;
    });
  });
});

/**
 * Builds the study and checks every feature of its manifest against the activation store: channels
 * straight from the store, NMF codes and SAE latents computed again from it. Each feature's
 * references and queries must be strictly separated, with the activations the manifest records;
 * every feature of a layer and basis is either in the study or rejected with its numbers.
 */
async function buildAndCheck(studyFile: string, modelFile: string): Promise<{ manifest: Manifest }> {
  const loaded = loadStudy(studyFile);
  const manifest = Manifest.parse(await buildStimuli(loaded, { quiet: true, log: () => {} }));
  const storeDir = join(loaded.paths.build, 'cache', 'activations');
  const header = JSON.parse(readFileSync(join(storeDir, 'store.json'), 'utf8')) as StoreHeader;
  const store = ActivationStore.open(storeDir, header.key, header.images, header.shardSize);
  // Channels: straight from the store (spatial means per image).
  const channel = new Map<string, Float32Array[]>();
  for (let s = 0; s < store.shardCount; s++) {
    const shard = store.read(s);
    shard.ids.forEach((id, r) => channel.set(id, header.layers!.map((l, li) => shard.mean[li].subarray(r * l.channels, (r + 1) * l.channels))));
  }
  // NMF codes and SAE latents: the features of the same store computed again.
  const again = await computeFeatures(loaded.study, store, { model: readFileSync(modelFile), images: listImages(loaded.paths.images).images, log: () => {}, quiet: true });
  try {
    const columns = new Map([...again.selected, ...again.spare].map((c) => [`${c.layer}/${c.basis}/${c.index}`, c]));
    const row = new Map(again.ids.map((id, r) => [id, r]));
    const practice = new Set(manifest.trials.filter((t) => t.kind === 'practice').map((t) => t.feature));
    const perSide = loaded.study.references.per_side;
    for (const f of manifest.features) {
      const li = header.layers!.findIndex((l) => l.name === f.layer);
      const act = (id: string) => (f.basis === 'channels' ? channel.get(id)![li][f.index] : columns.get(f.id)!.values[row.get(id)!]);
      const close = (ids: string[], recorded: number[], what: string) =>
        ids.forEach((id, i) => assert.ok(Math.abs(act(id) - recorded[i]) <= 1e-5 * Math.max(1, Math.abs(act(id))), `${f.id} ${what} ${id}: store ${act(id)}, manifest ${recorded[i]}`));
      close(f.references.max, f.activations!.max, 'max reference');
      close(f.references.min, f.activations!.min, 'min reference');
      close(f.queries.max, f.activations!.queries.max, 'max query');
      close(f.queries.min, f.activations!.queries.min, 'min query');
      assert.equal(f.references.max.length, perSide);
      assert.equal(new Set([...f.references.max, ...f.references.min]).size, 2 * perSide, `${f.id}: a reference twice`);
      assert.ok(Math.min(...f.references.max.map(act)) > Math.max(...f.references.min.map(act)), `${f.id}: references not separated`);
      assert.ok(Math.min(...f.queries.max.map(act)) > Math.max(...f.queries.min.map(act)), `${f.id}: queries not separated`);
      for (const t of manifest.trials.filter((x) => x.feature === f.id)) {
        assert.ok(act(t.query_images[t.answer]) > act(t.query_images[1 - t.answer]), `${t.id}: its answer is not the higher query`);
      }
    }
    // With select: all, every feature of every layer and basis is either in the study or rejected with its numbers.
    const study = manifest.features.filter((f) => !practice.has(f.id));
    for (const b of manifest.bases) {
      const used = study.filter((f) => f.layer === b.layer && f.basis === b.basis).length;
      const rejected = manifest.rejected!.filter((r) => r.layer === b.layer && r.basis === b.basis && r.for === 'study');
      assert.equal(used + rejected.length, b.features, `${b.layer}/${b.basis}`);
      assert.equal(b.info.rejected, rejected.length);
      assert.equal(typeof b.info.zero_fraction_mean, 'number');
    }
    for (const r of manifest.rejected!) assert.ok(r.reason === 'constant' || (r.numbers.gap !== undefined && r.numbers.required !== undefined), `${r.id}: ${r.message}`);
  } finally {
    await again.release();
  }
  return { manifest };
}

// ── The trained demo model on Fashion-MNIST: channels, NMF and SAE, every study feature checked. ──

const DEMO = fileURLToPath(new URL('../../studies/demo/model.onnx', import.meta.url));

describe('on the demo model, every feature separates its references and queries', { skip: !existsSync(DEMO) && 'studies/demo/model.onnx is not built' }, () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'legible-validity-demo-'));
    copyFileSync(DEMO, join(dir, 'model.onnx'));
    writeFileSync(
      join(dir, 'study.yaml'),
      `id: demo-validity
title: Demo validity
seed: 5
model:
  onnx: model.onnx
  input: { size: 28, channels: gray, mean: [0.2860], std: [0.3530] }
  layers: [{ name: block2, tensor: block2 }, { name: block3, tensor: block3 }]
dataset:
  images: images
  generate: { from: fashion-mnist, per_class: 30 }
  split: { seed: 1, reference: 0.75, query: 0.25 }
bases:
  - kind: channels
  - kind: nmf
    components: 6
  - kind: sae
    dictionary: 48
    k: 4
    epochs: 4
features: { select: all }
queries: { difficulty: p85 }
contribution: { images: 0 }
stimuli: { cell_px: 28, gap_px: 2, resample: nearest }
design: { trials_per_participant: 4, practice_trials: 2 }
text: { consent: c, instructions: i }
`,
    );
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('checks references and queries against the activation store, and lists what it rejected', async () => {
    const { manifest } = await buildAndCheck(join(dir, 'study.yaml'), join(dir, 'model.onnx'));
    const bases = new Set(manifest.features.filter((f) => !manifest.trials.some((t) => t.feature === f.id && t.kind === 'practice')).map((f) => f.basis));
    assert.deepEqual([...bases].sort(), ['channels', 'nmf', 'sae']);
  });
});

// ── A torchvision ResNet-18 (random weights, exported by PyTorch) on crops of real photographs. ──

describe('on a torchvision ResNet-18 over real photographs, every feature separates its references and queries', { skip: torchMissing() ?? false }, () => {
  let dir: string;
  after(() => dir && rmSync(dir, { recursive: true, force: true }));

  it('keeps layer3\'s sparse ReLU channels, NMF concepts and SAE latents only where they separate, with the store\'s activations', async () => {
    const exported = cachedRun('grad_reference.py', ['resnet18', 64, 2, 17]); // outputs logits and feat (layer3)
    const photos = await imageFolder(240, { width: 80, height: 64 });
    dir = mkdtempSync(join(tmpdir(), 'legible-validity-resnet-'));
    copyFileSync(join(exported, 'model.onnx'), join(dir, 'model.onnx'));
    writeFileSync(
      join(dir, 'study.yaml'),
      `id: resnet-validity
title: ResNet validity
seed: 9
model:
  onnx: model.onnx
  input: { size: 64, channels: rgb, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] }
  layers: [{ name: layer3, tensor: feat }]
dataset: { images: ${JSON.stringify(photos)}, split: { seed: 3, reference: 0.75, query: 0.25 } }
bases:
  - kind: channels
  - kind: nmf
    components: 8
  - kind: sae
    dictionary: 64
    k: 4
    epochs: 4
features: { select: all }
queries: { difficulty: p85 }
contribution: { images: 0 }
stimuli: { cell_px: 32, gap_px: 2 }
design: { trials_per_participant: 4, practice_trials: 0 }
text: { consent: c, instructions: i }
`,
    );
    const { manifest } = await buildAndCheck(join(dir, 'study.yaml'), join(dir, 'model.onnx'));
    const of = (basis: string) => manifest.features.filter((f) => f.basis === basis).length;
    assert.ok(of('channels') > 0 && of('nmf') > 0 && of('sae') > 0, `features per basis: ${['channels', 'nmf', 'sae'].map(of)}`);
    const channels = manifest.bases.find((b) => b.basis === 'channels')!;
    assert.equal(channels.features, 256);
    // The report names every rejected feature.
    const report = readFileSync(join(dir, 'build', 'report.html'), 'utf8');
    for (const r of manifest.rejected!.filter((x) => x.reason !== 'constant')) assert.ok(report.includes(`<td>${r.id}</td>`), `report lacks ${r.id}`);
    console.log(
      `resnet18 layer3 on ${manifest.dataset.count} photo crops: ` +
        manifest.bases.map((b) => `${b.basis}: ${manifest.features.filter((f) => f.basis === b.basis).length} kept, ${b.info.rejected} rejected, zero fraction mean ${b.info.zero_fraction_mean}`).join('; '),
    );
  });
});
