// "Try an image" with SAE features: the pipeline's TopK SAE encoder, in the probe model up to its
// pre-activations and in JavaScript for TopK, ReLU and the scale, gives the pipeline's codes in
// Chromium (onnxruntime-web, wasm). A small study on the demo model with channels and an SAE basis.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { RunningServer } from '@legible/server';
import { launchChromium } from '../../client/test/helpers.ts';
import { relToFeature, servedExplorer } from './site.ts';

let tmp: string;
let srv: RunningServer | undefined;
after(async () => {
  await srv?.close();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

test('SAE codes in Chromium equal the pipeline\'s', async () => {
  tmp = mkdtempSync(join(tmpdir(), 'legible-explorer-sae-'));
  const file = join(tmp, 'study.yaml');
  const model = fileURLToPath(new URL('../../studies/demo/model.onnx', import.meta.url));
  writeFileSync(
    file,
    `id: saetry
title: SAE
seed: 1
model:
  onnx: ${model}
  input: { size: 28, channels: gray, mean: [0.2860], std: [0.3530] }
  layers:
    - { name: block3, tensor: block3 }
dataset:
  images: data
  generate: { from: fashion-mnist, per_class: 60 }
  split: { seed: 1, reference: 0.8, query: 0.2 }
bases:
  - kind: channels
  - { kind: sae, dictionary: 32, k: 4, epochs: 3 }
features: { select: random, count: 2, seed: 1 }
references: { per_side: 4 }
stimuli: { cell_px: 28, gap_px: 2, quality: 70 }
design: { trials_per_participant: 4, practice_trials: 1 }
text: { consent: c, instructions: i }
`,
  );
  const site = await servedExplorer(file, tmp, 'sae');
  srv = site.srv;
  const { manifest, spec, token } = site;
  assert.ok(spec.features.some((f) => f.basis === 'sae'), 'SAE features in the study');
  assert.equal(spec.sae.block3.active, 4);
  const browser = await launchChromium();
  try {
    const page = await (await browser.newContext({ extraHTTPHeaders: { authorization: `Bearer ${token}` } })).newPage();
    await page.goto(`${srv.url}/admin/explorer/saetry/explorer/`);
    await page.waitForSelector('body[data-ready="#"]');
    await page.click('#try-open');
    await page.waitForSelector('#try[data-backend]', { timeout: 60_000 });
    let sae = 0;
    for (const im of spec.images) {
      await page.selectOption('#try-pick', im.id);
      await page.waitForSelector(`#try[data-ran="${im.id}"]`, { timeout: 30_000 });
      const rows = await page.locator('#try-table tr[data-feature]').evaluateAll((trs) => trs.map((tr) => ({ id: tr.getAttribute('data-feature')!, value: Number(tr.getAttribute('data-value')) })));
      assert.equal(rows.length, spec.features.length);
      for (const r of rows) {
        const m = manifest.features.find((x) => x.id === r.id)!;
        const at = m.references.max.indexOf(im.id);
        const expected = at >= 0 ? m.activations!.max[at] : im.values[r.id];
        assert.ok(relToFeature(r.value, expected, m.stats.std) < 1e-4, `${r.id} on ${im.id}: browser ${r.value}, pipeline ${expected}`);
        if (m.basis === 'sae') sae++;
      }
    }
    assert.ok(sae >= spec.images.length, `${sae} SAE values compared`);
  } finally {
    await browser.close();
  }
});
