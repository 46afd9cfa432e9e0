// The pipeline as a lab runs it on real models and big folders: ResNet- and VGG-shaped models,
// CRAFT patches for NMF, the on-disk activation store (resume after an interruption; parts
// extracted by separate processes, then merged), input checks, execution providers, the report.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { loadStudy, Manifest, rng } from '@legible/studies';
import { buildStimuli } from '../src/build.ts';
import { patchGrid } from '../src/patches.ts';
import { openSession, unavailable } from '../src/runtime.ts';
import { tinyResNet, tinyVgg } from './models.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const quiet = { quiet: true, log: () => {} };

async function writeImages(dir: string, n: number, size: number, seed: number): Promise<void> {
  const r = rng(seed);
  for (let i = 0; i < n; i++) {
    const cls = `c${i % 4}`;
    mkdirSync(join(dir, cls), { recursive: true });
    const px = Buffer.alloc(size * size * 3);
    const [a, b, c, f] = [r.next(), r.next(), r.next(), 1 + 3 * r.next()];
    for (let p = 0; p < size * size; p++) {
      const y = Math.floor(p / size) / size;
      const x = (p % size) / size;
      px[p * 3] = Math.round(255 * Math.min(1, a * (0.5 + 0.5 * Math.sin(f * 6 * x)) + 0.2 * r.next()));
      px[p * 3 + 1] = Math.round(255 * Math.min(1, b * y + 0.2 * r.next()));
      px[p * 3 + 2] = Math.round(255 * Math.min(1, c * (1 - x) + 0.2 * r.next()));
    }
    await sharp(px, { raw: { width: size, height: size, channels: 3 } }).png().toFile(join(dir, cls, `im${String(i).padStart(3, '0')}.png`));
  }
}

function study(opts: { id?: string; layers: string; bases?: string; size?: number; channels?: string; features?: string }): string {
  return `id: ${opts.id ?? 'scale'}
title: Scale
seed: 2
model:
  onnx: model.onnx
  input: { size: ${opts.size ?? 16}, channels: ${opts.channels ?? 'rgb'}, mean: [0.5], std: [0.25] }
  layers:
${opts.layers}
dataset:
  images: ../images
  split: { seed: 3, reference: 0.75, query: 0.25 }
bases:
${opts.bases ?? '  - kind: channels'}
features: ${opts.features ?? '{ select: random, count: 2, seed: 1 }'}
references: { per_side: 4, columns: 2 }
stimuli: { cell_px: 24, gap_px: 2 }
design: { trials_per_participant: 4, practice_trials: 1 }
text: { consent: c, instructions: i }
`;
}

function makeStudy(dir: string, name: string, model: Uint8Array, yaml: string): string {
  const folder = join(dir, name);
  mkdirSync(folder, { recursive: true });
  writeFileSync(join(folder, 'model.onnx'), model);
  writeFileSync(join(folder, 'study.yaml'), yaml);
  return join(folder, 'study.yaml');
}

const RESNET_LAYERS = '    - { name: block1, tensor: block1 }\n    - { name: block2, tensor: block2 }';
const NMF_PATCHES = '  - kind: channels\n  - kind: nmf\n    components: 3\n    patch: { size: 8, stride: 4 }\n    fit_images: 20';

function run(args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [join(root, 'bin/legible.mjs'), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('close', (code) => resolve({ code: code ?? 1, out }));
  });
}

describe('pipeline at scale', () => {
  let dir: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'legible-scale-'));
    await writeImages(join(dir, 'images'), 96, 16, 9);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('builds a ResNet-shaped model with channels and CRAFT-style NMF on patches, and a report', async () => {
    const file = makeStudy(dir, 'resnet', tinyResNet(1), study({ layers: RESNET_LAYERS, bases: NMF_PATCHES }));
    const loaded = loadStudy(file);
    const manifest = Manifest.parse(await buildStimuli(loaded, quiet));
    assert.deepEqual(
      manifest.layers.map((l) => [l.name, l.shape]),
      [
        ['block1', [8, 16, 16]],
        ['block2', [16, 8, 8]],
      ],
    );
    const nmf = manifest.bases.filter((b) => b.basis === 'nmf');
    assert.equal(nmf.length, 2);
    // 20 images × a 3 × 3 grid of 8-px patches at stride 4.
    assert.equal(patchGrid(16, 16, { size: 8, stride: 4 }).length, 9);
    for (const b of nmf) {
      assert.equal(b.info.fit_rows, 180);
      assert.match(String(b.info.fitted_on), /patches 8px stride 4px/);
      assert.ok(Number(b.info.relative_error) > 0 && Number(b.info.relative_error) < 1);
    }
    // 2 layers × 2 bases × 2 features, plus practice.
    assert.equal(manifest.trials.filter((t) => t.kind === 'main').length, 8);
    const report = readFileSync(join(loaded.paths.build, 'report.html'), 'utf8');
    for (const f of manifest.features) assert.ok(report.includes(f.id), `report lacks ${f.id}`);
    for (const src of report.matchAll(/src="([^"]+)"/g)) assert.ok(existsSync(join(loaded.paths.build, src[1])), `report shows a missing image ${src[1]}`);
    assert.match(report, /block1 · nmf/);
  });

  it('handles a VGG-shaped model with a fixed batch of 1 and a fully connected layer', async () => {
    const file = makeStudy(dir, 'vgg', tinyVgg(2, 16, 1), study({ id: 'vgg', layers: '    - { name: pool1, tensor: pool1 }\n    - { name: pool2, tensor: pool2 }\n    - { name: fc1, tensor: fc1 }' }));
    const manifest = Manifest.parse(await buildStimuli(loadStudy(file), quiet));
    assert.deepEqual(
      manifest.layers.map((l) => l.shape),
      [[6, 8, 8], [12, 4, 4], [10]],
    );
    assert.equal(manifest.dataset.count, 96 - manifest.dataset.skipped.length);
    assert.equal(manifest.features.filter((f) => f.layer === 'fc1').length >= 2, true);
  });

  it('resumes an interrupted extraction where it stopped, with the same result', async () => {
    const yaml = study({ id: 'resume', layers: RESNET_LAYERS, bases: '  - kind: channels\n  - kind: nmf\n    components: 3' });
    const clean = makeStudy(dir, 'resume-clean', tinyResNet(3), yaml);
    const reference = await buildStimuli(loadStudy(clean), { ...quiet, shardSize: 16 });
    const file = makeStudy(dir, 'resume', tinyResNet(3), yaml);
    let written = 0;
    await assert.rejects(
      buildStimuli(loadStudy(file), {
        ...quiet,
        shardSize: 16,
        onShard: () => {
          if (++written === 2) throw new Error('power cut');
        },
      }),
      /power cut/,
    );
    const logs: string[] = [];
    const shards: number[] = [];
    const manifest = await buildStimuli(loadStudy(file), { quiet: true, log: (l) => logs.push(l), shardSize: 16, onShard: (i) => shards.push(i) });
    assert.ok(logs.some((l) => /resuming: 2 of 6 activation shards already extracted/.test(l)), logs.join('\n'));
    assert.deepEqual(shards, [2, 3, 4, 5], 'only the missing shards are extracted');
    assert.deepEqual(manifest, reference);
  });

  it('extracts parts in separate processes (--shard k/n), then merges them into the same manifest', async () => {
    const yaml = study({ id: 'parts', layers: RESNET_LAYERS, bases: '  - kind: channels\n  - kind: nmf\n    components: 3' });
    const single = makeStudy(dir, 'parts-single', tinyResNet(4), yaml);
    await buildStimuli(loadStudy(single), { ...quiet, shardSize: 16 });
    const file = makeStudy(dir, 'parts', tinyResNet(4), yaml);
    // Two jobs of an array, at the same time, sharing the build folder.
    const [a, b] = await Promise.all([run(['stimuli', file, '--shard', '0/2', '--shard-size', '16']), run(['stimuli', file, '--shard', '1/2', '--shard-size', '16'])]);
    assert.equal(a.code, 0, a.out);
    assert.equal(b.code, 0, b.out);
    assert.match(a.out + b.out, /every part is done/);
    assert.ok(!existsSync(join(dir, 'parts', 'build', 'manifest.json')), 'a part must not write the manifest');
    const merged = await run(['stimuli', file, '--merge', '--shard-size', '16']);
    assert.equal(merged.code, 0, merged.out);
    assert.equal(readFileSync(join(dir, 'parts', 'build', 'manifest.json'), 'utf8'), readFileSync(join(dir, 'parts-single', 'build', 'manifest.json'), 'utf8'));
  });

  it('refuses to merge while parts are missing, saying what to run', async () => {
    const file = makeStudy(dir, 'early-merge', tinyResNet(5), study({ id: 'early', layers: RESNET_LAYERS }));
    const part = await run(['stimuli', file, '--shard', '0/3', '--shard-size', '16']);
    assert.equal(part.code, 0, part.out);
    assert.match(part.out, /part 0\/3 done; 4 shards of other parts still missing/);
    const merged = await run(['stimuli', file, '--merge', '--shard-size', '16']);
    assert.equal(merged.code, 1);
    assert.match(merged.out, /4 of 6 activation shards are missing.*--shard k\/n/s);
    assert.match((await run(['stimuli', file, '--shard', '3/3'])).out, /--shard expects k\/n with 0 ≤ k < n/);
  });

  it('says clearly when the study\'s input does not fit the model', async () => {
    const gray = makeStudy(dir, 'gray', tinyResNet(6), study({ id: 'gray', layers: RESNET_LAYERS, channels: 'gray' }));
    await assert.rejects(buildStimuli(loadStudy(gray), quiet), /the model's input has 3 channels but model.input.channels is "gray" \(1\): set channels to rgb/);
    const sized = makeStudy(dir, 'sized', tinyVgg(7, 16), study({ id: 'sized', layers: '    - { name: pool1, tensor: pool1 }', size: 20 }));
    await assert.rejects(buildStimuli(loadStudy(sized), quiet), /fixed at 16×16 pixels but model.input.size is 20×20: set size to \[16, 16\]/);
  });

  it('picks the execution provider: auto falls back to cpu and says why; a missing GPU is a clear error', async () => {
    const model = readFileSync(join(root, 'studies/demo/model.onnx'));
    const logs: string[] = [];
    const opened = await openSession(model, { device: 'auto', log: (l) => logs.push(l) });
    await opened.session.release();
    if (unavailable('webgpu') && unavailable('cuda')) {
      assert.equal(opened.device, 'cpu');
      assert.match(logs.join('\n'), /cpu execution provider \(auto; cuda: .*; webgpu: .*\)/);
      await assert.rejects(openSession(model, { device: 'webgpu' }), /--device webgpu is not available here: .*Use --device auto or cpu/);
    } else {
      assert.notEqual(opened.device, 'cpu', `a GPU provider is available but auto chose cpu: ${logs.join('; ')}`);
    }
  });

  it('gives the same activations on every available execution provider (within 1e-3)', async (t) => {
    const gpus = (['webgpu', 'cuda'] as const).filter((d) => !unavailable(d));
    if (gpus.length === 0) {
      t.skip(`no GPU provider on this machine (webgpu: ${unavailable('webgpu')}; cuda: ${unavailable('cuda')})`);
      return;
    }
    const ort = await import('onnxruntime-node');
    const model = readFileSync(join(root, 'studies/demo/model.onnx'));
    const r = rng(1);
    const input = new ort.Tensor('float32', Float32Array.from({ length: 8 * 784 }, () => r.normal()), [8, 1, 28, 28]);
    const cpu = await openSession(model, { device: 'cpu' });
    const expected = (await cpu.session.run({ image: input })).logits.data as Float32Array;
    for (const device of gpus) {
      const gpu = await openSession(model, { device });
      const got = (await gpu.session.run({ image: input })).logits.data as Float32Array;
      const scale = Math.max(...expected.map(Math.abs));
      const worst = Math.max(...got.map((v, i) => Math.abs(v - expected[i])));
      assert.ok(worst <= 1e-3 * scale, `${device}: max |Δ| ${worst} vs scale ${scale}`);
    }
  });

});
