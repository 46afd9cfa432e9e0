// "Try an image" on a torchvision model: ResNet-50 (weights=None, exported by PyTorch through the
// zoo's exporter, stimuli-pipeline/test/grad_reference.py --zoo, cached outside the repository) at
// 64 px on real photos, tapped at layer3, channels and NMF. onnxruntime-web in Chromium must give
// the values `legible stimuli` gives (the manifest's): channels and NMF codes within 1e-4 of the value
// (or of the feature's spread over the references, for values near 0). Skips without PyTorch.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import type { RunningServer } from '@legible/server';
import { launchChromium } from '../../client/test/helpers.ts';
import { photoFixture } from '../../stimuli-pipeline/test/photos.ts';
import { torchMissing, zooExport } from '../../stimuli-pipeline/test/torch-ref.ts';
import { relToFeature, servedExplorer } from './site.ts';

const rel = (a: number, b: number) => Math.abs(a - b) / Math.max(Math.abs(b), 1e-6);

describe('try an image on a torchvision ResNet-50', { skip: torchMissing() ?? false }, () => {
  let tmp: string;
  let srv: RunningServer | undefined;
  after(async () => {
    await srv?.close();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  test('onnxruntime-web in Chromium equals the pipeline on every offered photo', async () => {
    tmp = mkdtempSync(join(tmpdir(), 'legible-explorer-tv-'));
    const model = join(zooExport('resnet50', 64, 1), 'model.onnx');
    const images = await photoFixture(72, 64);
    const file = join(tmp, 'study.yaml');
    writeFileSync(
      file,
      `id: tv
title: ResNet-50
seed: 1
model:
  onnx: ${model}
  input: { size: 64, channels: rgb, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] }
  layers:
    - { name: layer3, tensor: feat }
dataset:
  images: ${images}
  split: { seed: 1, reference: 0.6, query: 0.4 }
bases:
  - kind: channels
  - { kind: nmf, components: 4, max_iter: 30 }
features: { select: random, count: 2, seed: 1 }
references: { per_side: 3 }
stimuli: { cell_px: 32, gap_px: 2, quality: 70 }
design: { trials_per_participant: 4, practice_trials: 1 }
text: { consent: c, instructions: i }
`,
    );
    const site = await servedExplorer(file, tmp, 'tv');
    srv = site.srv;
    const { manifest, dir, spec, token } = site;
    assert.ok(readFileSync(join(dir, spec.model)).length < readFileSync(model).length / 2, 'the probe stops at layer3: layer4 and the classifier are pruned');
    const browser = await launchChromium();
    try {
      const context = await browser.newContext({ extraHTTPHeaders: { authorization: `Bearer ${token}` } });
      const page = await context.newPage();
      await page.goto(`${srv.url}/admin/explorer/tv/explorer/`);
      await page.waitForSelector('body[data-ready="#"]');
      await page.click('#try-open');
      await page.waitForSelector('#try[data-backend]', { timeout: 120_000 });
      let worst = 0;
      /** Per basis: the largest difference relative to the value, and relative to the value or the feature's spread. */
      const worstBy: Record<string, [number, number]> = {};
      const bad: string[] = [];
      for (const im of spec.images) {
        await page.selectOption('#try-pick', im.id);
        await page.waitForSelector(`#try[data-ran="${im.id}"]`, { timeout: 60_000 });
        const rows = await page.locator('#try-table tr[data-feature]').evaluateAll((trs) => trs.map((tr) => ({ id: tr.getAttribute('data-feature')!, value: Number(tr.getAttribute('data-value')) })));
        assert.equal(rows.length, spec.features.length);
        for (const r of rows) {
          const m = manifest.features.find((x) => x.id === r.id)!;
          const at = m.references.max.indexOf(im.id);
          const expected = at >= 0 ? m.activations!.max[at] : im.values[r.id];
          // Both within 1e-4. This layer's four NMF concepts are nearly parallel (cosines up to 0.999,
          // WWᵀ's condition number about 5,000): the exact float64 solve both sides run
          // (stimuli-pipeline/src/hals.ts) keeps the runtimes' float32 differences in the layer's
          // mean (3e-7 median, wasm's and MLAS's convolutions sum in different orders) to ~2e-5.
          if (!(relToFeature(r.value, expected, m.stats.std) < 1e-4)) bad.push(`${r.id} on ${im.id}: browser ${r.value}, pipeline ${expected}`);
          worst = Math.max(worst, rel(r.value, expected));
          const w = (worstBy[m.basis] ??= [0, 0]);
          w[0] = Math.max(w[0], rel(r.value, expected));
          w[1] = Math.max(w[1], relToFeature(r.value, expected, m.stats.std));
        }
      }
      console.log(`resnet50: ${spec.images.length} photos × ${spec.features.length} features; largest difference relative to the value ${worst.toExponential(2)}; per basis, relative to the value / to the value or the feature's spread: ${Object.entries(worstBy).map(([b, [a, f]]) => `${b} ${a.toExponential(2)} / ${f.toExponential(2)}`).join(', ')}`);
      assert.deepEqual(bad, []);
    } finally {
      await browser.close();
    }
  });
});
