// `legible stimuli` with a `complexity:` section, on the trained demo model and Fashion-MNIST: the
// manifest gets ρ per order for the section's layers and a complexity order for every study feature
// on them (channels and NMF directions), the report draws the curves, and the build is deterministic.
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { loadStudy, Manifest, parseStudy } from '@legible/studies';
import { buildStimuli, ensureBuilt } from '../src/build.ts';
import { orderOf } from '../src/complexity.ts';

const DEMO = fileURLToPath(new URL('../../studies/demo/model.onnx', import.meta.url));

const yaml = (complexity: string) => `id: demo-complexity
title: Demo complexity
seed: 2
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
    components: 4
features: { select: random, count: 2, seed: 3 }
contribution: { images: 0 }
stimuli: { cell_px: 28, gap_px: 2, resample: nearest }
design: { trials_per_participant: 4, practice_trials: 1 }
${complexity}
text: { consent: c, instructions: i }
`;

describe('complexity in the study file', () => {
  it('is off by default and takes the paper\'s ladder when the section is there', () => {
    const off = parseStudy(yaml(''));
    assert.deepEqual(off.problems, []);
    assert.equal(off.study!.complexity, undefined);
    const on = parseStudy(yaml('complexity: {}'));
    assert.deepEqual(on.study!.complexity, { depths: [1, 2, 4, 7, 13], width: 32, epochs: 20, images: 1000, threshold: 0.9 });
  });
});

describe('legible stimuli with complexity on the demo model', { skip: !existsSync(DEMO) && 'studies/demo/model.onnx is not built' }, () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'legible-complexity-'));
    copyFileSync(DEMO, join(dir, 'model.onnx'));
    writeFileSync(join(dir, 'study.yaml'), yaml('complexity: { layers: [block3], depths: [0, 1, 3], width: 8, epochs: 20, images: 200, threshold: 0.8, reliability: { model: model.onnx, tensor: block2 } }'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('writes ρ per order and every study feature\'s order to the manifest and the report, the same each time', async () => {
    const study = loadStudy(join(dir, 'study.yaml'));
    const manifest = Manifest.parse(await buildStimuli(study, { quiet: true, log: () => {} }));
    const first = readFileSync(join(dir, 'build', 'manifest.json'), 'utf8');
    const c = manifest.complexity!;
    assert.deepEqual([c.depths, c.width, c.epochs, c.threshold], [[0, 1, 3], 8, 20, 0.8]);
    assert.deepEqual(c.layers.map((l) => l.layer), ['block3']);
    const l = c.layers[0];
    assert.deepEqual(l.images, { train: 160, held_out: 40 });
    for (const v of [l.rho, l.explained, l.held_out_loss, l.train_loss]) assert.equal(v.length, 3);
    assert.ok(l.rho[0] > 0 && l.explained[2] > 0 && l.explained[2] <= 1, `ρ ${l.rho}, explained ${l.explained}`);
    // Reliability against the same model's block2 (block3 is computed from it, through a ReLU
    // convolution): each order's component is partly linear in block2, never more than wholly.
    assert.equal(l.reliability!.length, 3);
    for (const v of l.reliability!) assert.ok(Number.isFinite(v) && v <= 1, `reliability ${l.reliability}`);
    assert.ok(Math.max(...l.reliability!) > 0.1, `block2 predicts some of block3's components: ${l.reliability}`);
    // Every study feature of block3 (channels and NMF directions) has its curve and order; block2's have none.
    const practice = new Set(manifest.trials.filter((t) => t.kind !== 'main' && t.kind !== 'catch').map((t) => t.feature));
    const studyFeatures = manifest.features.filter((f) => !practice.has(f.id));
    const block3 = studyFeatures.filter((f) => f.layer === 'block3');
    assert.deepEqual([...new Set(block3.map((f) => f.basis))].sort(), ['channels', 'nmf']);
    for (const f of block3) {
      const fc = f.complexity!;
      assert.ok(fc, `${f.id} has no complexity`);
      assert.equal(fc.explained.length, 3);
      assert.equal(fc.order, orderOf(c.depths, fc.explained, c.threshold).order, `${f.id}: order ${fc.order} from ${fc.explained}`);
      if (fc.order === null) assert.match(fc.reason!, /deepest disentangler/);
    }
    for (const f of studyFeatures.filter((f) => f.layer === 'block2')) assert.equal(f.complexity, undefined);
    // The report: the layer's curves, and each block3 card's order and curve.
    const report = readFileSync(join(dir, 'build', 'report.html'), 'utf8');
    assert.match(report, /<h2>Feature complexity<\/h2>/);
    assert.match(report, /<h3>block3<\/h3><p><svg class="curve"/);
    assert.match(report, /reliability<\/span> \(share of each order's component the second model's layer linearly predicts\): [0-9.]+, [0-9.]+, [0-9.]+/);
    assert.equal((report.match(/complexity order <b>/g) ?? []).length, block3.length);
    // Deterministic: a rebuild writes the same manifest.
    rmSync(join(dir, 'build'), { recursive: true, force: true });
    await buildStimuli(loadStudy(join(dir, 'study.yaml')), { quiet: true, log: () => {} });
    assert.equal(readFileSync(join(dir, 'build', 'manifest.json'), 'utf8'), first);
    // The build is up to date until the reliability model changes.
    const lines: string[] = [];
    await ensureBuilt(loadStudy(join(dir, 'study.yaml')), { quiet: true, log: (s) => lines.push(s) });
    assert.equal(lines.length, 0, `up to date: ${lines}`);
    writeFileSync(join(dir, 'second.onnx'), readFileSync(join(dir, 'model.onnx')));
    writeFileSync(join(dir, 'study.yaml'), readFileSync(join(dir, 'study.yaml'), 'utf8').replace('model: model.onnx, tensor: block2', 'model: second.onnx, tensor: block2'));
    const same = loadStudy(join(dir, 'study.yaml'));
    await ensureBuilt(same, { quiet: true, log: (s) => lines.push(s) });
    assert.match(lines[0], /study changed/, 'another path is another config');
    lines.length = 0;
    const bytes = readFileSync(join(dir, 'second.onnx'));
    writeFileSync(join(dir, 'second.onnx'), Buffer.concat([bytes, Buffer.from([0x32, 0x01, 0x78])])); // doc_string "x" appended: the same network, other bytes
    await ensureBuilt(loadStudy(join(dir, 'study.yaml')), { quiet: true, log: (s) => lines.push(s) });
    assert.match(lines[0] ?? '', /complexity\.reliability\.model changed/);
  });
});
