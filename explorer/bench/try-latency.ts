// Try-an-image latency: one photo through the probe model and the features' projections, in
// Chromium on onnxruntime-web's wasm backend (the explorer's own panel, cross-origin isolated, from
// `legible serve`'s admin route), next to onnxruntime-node on the same machine (the same probe model
// and the same NMF solve). Median of N runs after 3 warm-up runs.
//   node --import tsx explorer/bench/try-latency.ts [demo | resnet50] [N]
// resnet50: torchvision's ResNet-50 (weights=None, the zoo's export at 64 px, tapped at layer3);
// needs PyTorch for the export unless ~/.cache/legible-zoo has it.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { build } from 'vite';
import { loadStudy } from '@legible/studies';
import { ensureBuilt, nmfCodes, nmfGram, normalise } from '@legible/stimuli-pipeline';
import { startServer } from '@legible/server';
import { launchChromium } from '../../client/test/helpers.ts';
import { photoFixture } from '../../stimuli-pipeline/test/photos.ts';
import { zooExport } from '../../stimuli-pipeline/test/torch-ref.ts';
import { buildExplorer, type TryData } from '../src/index.ts';

const which = process.argv[2] ?? 'demo';
const N = Number(process.argv[3] ?? 30);
const root = fileURLToPath(new URL('../..', import.meta.url));
const median = (xs: number[]) => xs.slice().sort((a, b) => a - b)[xs.length >> 1];

let file = 'demo';
if (which === 'resnet50') {
  const dir = join(root, '.tmp', 'bench-resnet50');
  mkdirSync(dir, { recursive: true });
  file = join(dir, 'study.yaml');
  writeFileSync(
    file,
    `id: benchrn50\ntitle: ResNet-50\nseed: 1\nmodel:\n  onnx: ${join(zooExport('resnet50', 64, 1), 'model.onnx')}\n  input: { size: 64, channels: rgb, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] }\n  layers:\n    - { name: layer3, tensor: feat }\n` +
      `dataset:\n  images: ${await photoFixture(72, 64)}\n  split: { seed: 1, reference: 0.6, query: 0.4 }\nbases:\n  - kind: channels\n  - { kind: nmf, components: 4, max_iter: 30 }\nfeatures: { select: random, count: 2, seed: 1 }\nreferences: { per_side: 3 }\nstimuli: { cell_px: 32, gap_px: 2, quality: 70 }\ndesign: { trials_per_participant: 4, practice_trials: 1 }\ntext: { consent: c, instructions: i }\n`,
  );
}
const loaded = loadStudy(file);
await ensureBuilt(loaded, { quiet: true, log: () => {} });
await build({ configFile: join(root, 'explorer/vite.config.ts'), logLevel: 'warn' });
const { dir } = await buildExplorer(loaded, { quiet: true, log: () => {} });
const spec = JSON.parse(readFileSync(join(dir, 'data/try.json'), 'utf8')) as TryData;
const probeBytes = readFileSync(join(dir, spec.model));

// Browser.
const srv = await startServer({ port: 0, host: '127.0.0.1', db: join(root, '.tmp', `bench-${which}.db`), studies: [file], clientDir: join(root, '.tmp', 'no-client'), signals: false });
const token = srv.db.createAdminToken('bench').token;
const browser = await launchChromium();
const context = await browser.newContext({ extraHTTPHeaders: { authorization: `Bearer ${token}` } });
const page = await context.newPage();
await page.goto(`${srv.url}/admin/explorer/${loaded.study.id}/explorer/`);
await page.waitForSelector('body[data-ready="#"]');
await page.click('#try-open');
await page.waitForSelector('#try[data-backend]', { timeout: 300_000 });
const backend = await page.locator('#try').getAttribute('data-backend');
const id = spec.images[0].id;
await page.evaluate(([i]) => (window as any).legibleTry.time(i, 3), [id] as const);
const web = (await page.evaluate(([i, n]) => (window as any).legibleTry.time(i, n), [id, N] as const)) as { ms: number; modelMs: number }[];
await browser.close();
await srv.close();

// onnxruntime-node: the same model, input and projections.
const ort = await import('onnxruntime-node');
const session = await ort.InferenceSession.create(probeBytes);
const [h, w] = spec.size;
const channels = spec.input.channels === 'gray' ? 1 : 3;
const img = sharp(join(dir, spec.images[0].input));
const pixels = await (channels === 1 ? img.extractChannel(0) : img.removeAlpha()).raw().toBuffer();
const x = new Float32Array(channels * h * w);
normalise(pixels, spec.input, x);
const once = async () => {
  const t0 = performance.now();
  const out = await session.run({ [session.inputNames[0]]: new ort.Tensor('float32', x, [1, channels, h, w]) });
  const t1 = performance.now();
  for (const l of spec.layers) {
    const d = spec.nmf[l.name];
    if (d) nmfCodes(out[l.outputs.mean].data as Float32Array, 1, d.W, nmfGram(d.W, d.k, l.channels), d.k, l.channels);
  }
  return { model: t1 - t0, values: performance.now() - t0 };
};
for (let i = 0; i < 3; i++) await once();
const node: { model: number; values: number }[] = [];
for (let i = 0; i < N; i++) node.push(await once());

const webModel = median(web.map((t) => t.modelMs));
const webAll = median(web.map((t) => t.ms));
const nodeModel = median(node.map((t) => t.model));
const nodeValues = median(node.map((t) => t.values));
console.log(
  JSON.stringify({
    model: which,
    probe_bytes: probeBytes.length,
    runs: N,
    browser: backend,
    browser_model_ms: +webModel.toFixed(2),
    browser_all_ms: +webAll.toFixed(2),
    node_model_ms: +nodeModel.toFixed(2),
    node_values_ms: +nodeValues.toFixed(2),
    ratio_model: +(webModel / nodeModel).toFixed(1),
  }),
);
