// `legible init <id> --model FILE --images DIR`: the study it writes validates (`legible validate`)
// and builds at reduced size, on the demo model (Fashion-MNIST class folders) and on a torchvision
// ResNet-50 export (random weights, the zoo's cached export; skipped without PyTorch), both on Fashion-MNIST images. Its layer
// choice spreads across depth, one per stage.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { parseDocument } from 'yaml';
import { Manifest, parseStudy } from '@legible/studies';
import { writeFashionMnist } from '../src/dataset.ts';
import { ROOT, torchMissing, zooExport } from './torch-ref.ts';

const scratch = mkdtempSync(join(tmpdir(), 'legible-init-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

const cli = (args: string[], timeout = 600_000) =>
  spawnSync(process.execPath, [join(ROOT, 'bin/legible.mjs'), ...args], { cwd: ROOT, encoding: 'utf8', timeout, maxBuffer: 1 << 26, env: { ...process.env, LEGIBLE_TEST: '1' } });

/** The written study at reduced size: fewer features, iterations and trials; everything else as written. */
function reduce(file: string, layers: number): void {
  const doc = parseDocument(readFileSync(file, 'utf8'));
  doc.setIn(['features', 'count'], 1);
  const bases = doc.getIn(['bases']) as { items: { get(k: string): unknown; set(k: string, v: unknown): void }[] };
  for (const b of bases.items) {
    if (b.get('kind') === 'nmf') {
      b.set('components', 4);
      b.set('max_iter', 30);
    }
    if (b.get('kind') === 'sae') {
      b.set('dictionary', 16);
      b.set('k', 4);
      b.set('epochs', 3);
    }
  }
  doc.setIn(['references', 'per_side'], 3);
  doc.setIn(['contribution', 'images'], 16);
  doc.setIn(['stimuli'], doc.createNode({ cell_px: 32, gap_px: 2, quality: 70 }));
  doc.setIn(['design', 'trials_per_participant'], 2 * layers);
  doc.setIn(['design', 'catch_trials'], 1);
  doc.setIn(['design', 'practice_trials'], 1);
  writeFileSync(file, doc.toString());
}

function checkBuilt(dir: string, layers: string[], bases: string[]): Manifest {
  const manifest = Manifest.parse(JSON.parse(readFileSync(join(dir, 'build', 'manifest.json'), 'utf8')));
  for (const layer of layers) {
    for (const basis of bases) {
      assert.ok(
        manifest.features.some((f) => f.layer === layer && f.basis === basis),
        `no ${layer}/${basis} feature built (${manifest.features.map((f) => f.id).join(', ')}; rejected ${(manifest.rejected ?? []).length})`,
      );
    }
  }
  assert.ok(manifest.trials.some((t) => t.kind === 'main'), 'no main trials');
  return manifest;
}

describe('legible init', () => {
  it('on the demo model: layers across depth, the IMI defaults; validates and builds at reduced size', async (t) => {
    const images = join(scratch, 'fashion');
    await writeFashionMnist(images, 12);
    const dir = join(scratch, 'demo-init');
    let r = cli(['init', 'demo-init', '--model', 'studies/demo/model.onnx', '--images', images, '--dir', dir, '--channels', 'gray', '--mean', '0.2860', '--std', '0.3530', '--yes']);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /3 layers \(block1, block2, block3\), bases channels, nmf, sae/);
    assert.match(r.stdout, /Edit before running it:[\s\S]*text\.consent[\s\S]*Then:\n {2}npx legible validate [\s\S]*npx legible stimuli/);
    const file = join(dir, 'study.yaml');
    const parsed = parseStudy(readFileSync(file, 'utf8'));
    assert.deepEqual(parsed.problems, []);
    const study = parsed.study!;
    assert.deepEqual(study.model.input, { size: 28, channels: 'gray', range: 1, mean: [0.286], std: [0.353] });
    assert.deepEqual(study.bases.map((b) => b.kind), ['channels', 'nmf', 'sae']);
    assert.deepEqual(
      [study.design.trials_per_participant, study.design.catch_trials, study.design.responses_per_feature, study.design.initial_wait_ms],
      [40, 5, 30, 1500],
    );
    assert.deepEqual(
      [study.exclusions.catch_accuracy_min, study.exclusions.total_time_s, study.exclusions.instruction_time_s_min, study.exclusions.repeat_participation],
      [0.8, { min: 135, max: 2500 }, 15, true],
    );
    r = cli(['validate', dir]);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /valid study "demo-init"/);

    // A second init into the same folder does not overwrite the study.
    r = cli(['init', 'demo-init', '--model', 'studies/demo/model.onnx', '--images', images, '--dir', dir, '--channels', 'gray', '--mean', '0.5', '--std', '0.5', '--yes']);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /study\.yaml exists already/);

    reduce(file, 3);
    const t0 = performance.now();
    r = cli(['stimuli', dir, '--batch', '16']);
    assert.equal(r.status, 0, r.stderr.split('\n').slice(-20).join('\n'));
    const manifest = checkBuilt(dir, ['block1', 'block2', 'block3'], ['channels', 'nmf', 'sae']);
    t.diagnostic(`demo: built in ${((performance.now() - t0) / 1000).toFixed(1)} s, ${manifest.features.length} features, ${manifest.trials.length} trials`);
  });

  it('on a terminal, asks for what the flags leave out (answers typed ahead are kept)', { skip: existsSync('/usr/bin/script') ? false : 'needs util-linux script(1) for a pseudo-terminal' }, () => {
    const images = mkdtempSync(join(scratch, 'tty-images-'));
    const dir = join(scratch, 'tty-init');
    const command = `${process.execPath} ${join(ROOT, 'bin/legible.mjs')} init tty-init --dir ${dir} --channels gray --mean 0.5 --std 0.5`;
    const r = spawnSync('/usr/bin/script', ['-qec', command, '/dev/null'], {
      cwd: ROOT,
      encoding: 'utf8',
      timeout: 120_000,
      input: `studies/demo/model.onnx\n${images}\n2\nMy title\n`,
    });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /ONNX model file: [\s\S]*Image folder[\s\S]*How many layers across depth \[3\]: [\s\S]*Title participants see/);
    const study = parseStudy(readFileSync(join(dir, 'study.yaml'), 'utf8')).study!;
    assert.equal(study.title, 'My title');
    assert.deepEqual(study.model.layers.map((l) => l.name), ['block2', 'block3']);
  });

  it('a model without preprocessing and no --preset: an error that says to run model init', () => {
    const r = cli(['init', 'x', '--model', 'studies/demo/model.onnx', '--images', scratch, '--dir', join(scratch, 'x'), '--yes']);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /has no model\.json \(its preprocessing\): run `legible model init studies\/demo\/model\.onnx --preset torchvision`/);
  });

  it('on a torchvision ResNet-50 export: model init, then init; one layer per stage; validates and builds at reduced size', { skip: torchMissing() ?? false }, async (t) => {
    const cached = join(zooExport('resnet50', 64, 1), 'model.onnx');
    const modelDir = mkdtempSync(join(scratch, 'resnet50-'));
    const onnx = join(modelDir, 'model.onnx');
    symlinkSync(cached, onnx); // model.json goes beside the link, never into the shared cache
    let r = cli(['model', 'init', onnx, '--preset', 'torchvision']);
    assert.equal(r.status, 0, r.stderr);
    // Fashion-MNIST's class folders (installed with legible; grey, read as RGB and upscaled by the preset).
    const images = join(scratch, 'fashion-rgb');
    await writeFashionMnist(images, 8);
    const dir = join(scratch, 'resnet50-init');
    r = cli(['init', 'resnet50-init', '--model', onnx, '--images', images, '--dir', dir, '--yes']);
    assert.equal(r.status, 0, r.stderr);
    const file = join(dir, 'study.yaml');
    const study = parseStudy(readFileSync(file, 'utf8')).study!;
    assert.equal(study.model.input, undefined, 'model.input is taken from model.json');
    // Stages of ResNet-50 at 64 px: 32², 16² (layer1), 8² (layer2), 4² (layer3, exported as "feat"), 2² (layer4).
    assert.deepEqual(
      study.model.layers.map((l) => l.tensor),
      ['/layer1/layer1.2/relu_2/Relu_output_0', '/layer2/layer2.3/relu_2/Relu_output_0', '/layer4/layer4.2/relu_2/Relu_output_0'],
    );
    assert.deepEqual(study.bases.map((b) => b.kind), ['channels', 'nmf', 'sae']);
    r = cli(['validate', dir]);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    reduce(file, 3);
    const t0 = performance.now();
    r = cli(['stimuli', dir, '--batch', '8']);
    assert.equal(r.status, 0, r.stderr.split('\n').slice(-20).join('\n'));
    const manifest = checkBuilt(dir, study.model.layers.map((l) => l.name), ['channels', 'nmf', 'sae']);
    assert.equal(manifest.model.input.resize, 73, 'the build used model.json\'s preprocessing');
    t.diagnostic(`resnet50: layers ${study.model.layers.map((l) => l.name).join(', ')}; built in ${((performance.now() - t0) / 1000).toFixed(1)} s, ${manifest.features.length} features`);
  });
});
