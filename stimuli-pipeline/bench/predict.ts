// `legible predict`: time per feature on the demo study (15 features; 100 query pairs each, drawn
// from the activation store's held-out split; about 600 images to embed), with the study's
// own model as the observer (weak proxy, 28 px) and with a ResNet-50-sized observer at 224 px (one
// random-weight torchvision ResNet-50 exported with torch.onnx, its 1000-d output as the embedding:
// the cost of a CLIP/DINO-sized embedding model). Runs on a copy of the demo's build (its activation
// store included), so the demo's own manifest is left as it is. Also times the query draw alone
// (reading every held-out image's values: the store, the NMF refit) — the part that does not depend
// on the observer.
//
//   node --import tsx stimuli-pipeline/bench/predict.ts [repeats=3]
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadStudy } from '@legible/studies';
import { ensureBuilt } from '../src/build.ts';
import { DEFAULT_PAIRS, drawQueries, predictStudy } from '../src/predict.ts';
import { CACHE, machine, reference } from './lib.ts';

const repeats = Number(process.argv[2] ?? 3);
const demo = loadStudy('demo');
await ensureBuilt(demo, { quiet: true });
const dir = mkdtempSync(join(tmpdir(), 'legible-bench-predict-'));
const yaml = readFileSync(demo.file, 'utf8').replace('onnx: model.onnx', `onnx: ${demo.paths.model}`).replace('images: data/fashion-mnist', `images: ${demo.paths.images}`);
writeFileSync(join(dir, 'study.yaml'), yaml);
for (const f of ['manifest.json', 'report.html', 'stamp.json', 'img', 'cache']) cpSync(join(demo.paths.build, f), join(dir, 'build', f), { recursive: true });
const study = loadStudy(join(dir, 'study.yaml'));

const modelDir = join(CACHE, 'resnet50');
if (!existsSync(join(modelDir, 'resnet50.onnx'))) {
  console.error('exporting a random-weight ResNet-50 with torch.onnx …');
  reference(['export-resnet50', modelDir]);
}

const configs = [
  { label: 'demo model at block3 (weak proxy), 28 px', opts: {} },
  { label: 'ResNet-50 (random weights) logits, 224 px', opts: { observer: join(modelDir, 'resnet50.onnx'), observerLayer: 'logits' } },
];
console.log(`machine: ${await machine()}; load average at start ${loadavg()[0].toFixed(2)}`);
console.log('| observer | features | images | seconds (median of ' + repeats + ') | ms per feature |');
console.log('|---|---|---|---|---|');
for (const c of configs) {
  const times: number[] = [];
  let features = 0;
  let images = 0;
  for (let i = 0; i < repeats; i++) {
    const t0 = performance.now();
    const p = await predictStudy(study, { ...c.opts, log: () => {} });
    times.push((performance.now() - t0) / 1000);
    features = Object.keys(p.features).length;
    images = p.images;
  }
  times.sort((a, b) => a - b);
  const median = times[Math.floor(times.length / 2)];
  console.log(`| ${c.label} | ${features} | ${images} | ${median.toFixed(2)} | ${((median / features) * 1000).toFixed(0)} |`);
}
{
  const { Manifest } = await import('@legible/studies');
  const manifest = Manifest.parse(JSON.parse(readFileSync(join(dir, 'build/manifest.json'), 'utf8')));
  const times: number[] = [];
  for (let i = 0; i < repeats; i++) {
    const t0 = performance.now();
    await drawQueries(study, manifest, DEFAULT_PAIRS);
    times.push((performance.now() - t0) / 1000);
  }
  times.sort((a, b) => a - b);
  console.log(`query draw alone (${DEFAULT_PAIRS} pairs per feature): ${times[Math.floor(times.length / 2)].toFixed(2)} s for ${manifest.features.length} features`);
}
console.log(`load average at end ${loadavg()[0].toFixed(2)}`);
rmSync(dir, { recursive: true, force: true });
