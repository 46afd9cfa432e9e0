// Benchmark: training the disentangler ladder (feature complexity, issue 15) on the demo model's
// layers, CPU: seconds per epoch of legible's training (onnxruntime gradient graph + Adam in
// TypeScript) against the same disentangler in PyTorch (torch.optim.Adam, same data, shapes, batch
// and thread count, training loop only, starting from legible's initial parameters), in one run; peak memory of both; and what the ladder finds
// (ρ per order, share explained per depth, held-out loss) on each layer.
//
//   node --import tsx stimuli-pipeline/bench/complexity.ts [--model demo|resnet50] [--layers block2,block3]
//        [--images 600] [--epochs 10] [--torch-epochs 3] [--width 16] [--depths 1,2,4,7,13] [--threads 2]
//        [--rounds 1] [--batch 32] [--torch-threads 2,1|none]
//
// --threads: trainLadder's threads (1: one onnxruntime session; T ≥ 2: T data-parallel parts, one
// session with one intra-op thread each, T − 1 of them on worker threads). A list (--threads 1,2)
// trains one ladder per entry in turn, --rounds times over (interleaved: 1, 2, 1, 2, …), all in this
// process, and reports each entry's median epoch per depth over its rounds; the layer maps are
// computed with the list's largest count of intra-op threads. Peak RSS is the process's, over all
// entries: measure memory with a single --threads. --torch-threads none skips PyTorch.
//
// --model resnet50: torchvision's ResNet-50 (weights=None, seeded; the zoo's ONNX export of
// test/torch-export.ts, made once with Debian's torch and cached) at 112 px, its layer3 [1024, 7, 7],
// on --images (default 2,000) seeded crops of the real photographs of test/photos.ts (11 photographs:
// real image statistics, not independent images), ImageNet normalisation.
//
// PyTorch runs with torch.set_num_threads(2) (the same as legible) and, by default, also with 1: on
// a machine whose cores are oversubscribed, OpenMP's two threads wait on each other and PyTorch runs
// 2–4× slower than on one. The fastest PyTorch configuration is the reference of the ratio.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import sharp from 'sharp';
import { ModelInput } from '@legible/studies';
import { normalise } from '../src/preprocess.ts';
import { photoFixture } from '../test/photos.ts';
import { torchvisionExport } from '../test/torch-export.ts';
import { readFashionMnist } from '../demo-model/fashion-mnist.ts';
import { normalisePixel } from '../demo-model/net.ts';
import { measureComplexity } from '../src/complexity.ts';
import { addTaps } from '../src/onnx/taps.ts';
import { disentanglerParams, initDisentangler, trainLadder } from '../src/train/disentangler.ts';
import { ROOT, TORCH_PYTHON, torchMissing } from '../test/torch-ref.ts';
import { machine } from './lib.ts';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: 'demo' },
    layers: { type: 'string' },
    images: { type: 'string' },
    epochs: { type: 'string', default: '10' },
    'torch-epochs': { type: 'string', default: '3' },
    width: { type: 'string', default: '16' },
    depths: { type: 'string', default: '1,2,4,7,13' },
    threads: { type: 'string', default: '2' },
    rounds: { type: 'string', default: '1' },
    batch: { type: 'string', default: '32' },
    'torch-threads': { type: 'string', default: '2,1' },
  },
});
const resnet = values.model === 'resnet50';
if (!resnet && values.model !== 'demo') throw new Error(`--model: demo or resnet50, got ${values.model}`);
const layers = (values.layers ?? (resnet ? 'layer3' : 'block2,block3')).split(',');
const n = Number(values.images ?? (resnet ? 2000 : 600));
const epochs = Number(values.epochs);
const torchEpochs = Number(values['torch-epochs']);
const width = Number(values.width);
const depths = values.depths!.split(',').map(Number);
const threadList = values.threads!.split(',').map(Number);
const threads = Math.max(...threadList);
const rounds = Number(values.rounds);
const batch = Number(values.batch);
const torchThreads = values['torch-threads'] === 'none' ? [] : values['torch-threads']!.split(',').map(Number);
const missing = torchMissing();
if (missing) throw new Error(missing);

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const load = () => loadavg()[0].toFixed(1);
const mib = (kib: number) => kib / 1024;

// Images and the layers' maps.
let x: Float32Array;
let input: [number, number, number];
let maps: Record<string, { data: Float32Array; dims: number[] }> = {};
const modelStart = performance.now();
if (resnet) {
  if (layers.length !== 1 || layers[0] !== 'layer3') throw new Error('--model resnet50: only --layers layer3 (the zoo export taps it as "feat")');
  const size = 112;
  const exported = torchvisionExport('resnet50', size);
  const dir = await photoFixture(n, size);
  const files = readdirSync(dir).filter((f) => f.endsWith('.jpg')).sort();
  const mi = ModelInput.parse({ size, channels: 'rgb', mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] });
  input = [3, size, size];
  const inSize = 3 * size * size;
  x = new Float32Array(n * inSize);
  for (let i = 0; i < n; i++) {
    const px = await sharp(join(dir, files[i])).removeAlpha().toColourspace('srgb').raw().toBuffer();
    normalise(px, mi, x, i * inSize);
  }
  const session = await ort.InferenceSession.create(exported.file, { intraOpNumThreads: threads });
  const chunk = 50;
  let f: Float32Array | undefined;
  let dims: number[] = [];
  for (let s = 0; s < n; s += chunk) {
    const m = Math.min(chunk, n - s);
    const out = (await session.run({ input: new ort.Tensor('float32', x.subarray(s * inSize, (s + m) * inSize), [m, ...input]) })).feat;
    dims = out.dims.map(Number);
    const per = (out.data as Float32Array).length / m;
    f ??= new Float32Array(n * per);
    f.set(out.data as Float32Array, s * per);
  }
  await session.release();
  maps = { layer3: { data: f!, dims: [n, ...dims.slice(1)] } };
} else {
  // Every 7th Fashion-MNIST training image (the demo's data), the demo model's maps.
  const imgs = readFashionMnist().train.filter((_, i) => i % 7 === 0).slice(0, n);
  x = Float32Array.from(imgs.flatMap((im) => Array.from(im.pixels, normalisePixel)));
  input = [1, 28, 28];
  const session = await ort.InferenceSession.create(addTaps(readFileSync(join(ROOT, 'studies/demo/model.onnx')), layers), { intraOpNumThreads: threads });
  const out = await session.run({ image: new ort.Tensor('float32', x, [n, ...input]) });
  for (const l of layers) maps[l] = { data: out[l].data as Float32Array, dims: out[l].dims.map(Number) };
  await session.release();
}
const modelSeconds = (performance.now() - modelStart) / 1000;

console.log(`${await machine()}; ${values.model} model, ${n} images (maps in ${modelSeconds.toFixed(1)} s), epochs ${epochs} (PyTorch ${torchEpochs}), width ${width}, depths ${depths.join(', ')}, batch ${batch}, legible threads ${threadList.join(' / ')} × ${rounds} round(s)`);
const results: Record<string, unknown>[] = [];
for (const layer of layers) {
  const f = maps[layer].data as Float32Array;
  const shape = maps[layer].dims.slice(1).map(Number) as [number, number, number];
  // legible: one ladder per thread count, the list repeated `rounds` times (interleaved).
  const loadBefore = load();
  const rssBefore = process.resourceUsage().maxRSS;
  const epochTimes = new Map<number, number[][]>(threadList.map((t) => [t, depths.map(() => [])]));
  const heldOutBy = new Map<number, number[]>();
  const wallBy = new Map<number, number[]>();
  let ladder: Awaited<ReturnType<typeof trainLadder>> | null = null;
  for (let round = 0; round < rounds; round++) {
    for (const t of threadList) {
      const t0 = performance.now();
      const l = await trainLadder(x, f, n, input, shape, { depths, width, epochs, batchSize: batch, seed: 1, threads: t, device: 'cpu' });
      (wallBy.get(t) ?? wallBy.set(t, []).get(t)!).push((performance.now() - t0) / 1000);
      l.rungs.forEach((rung, k) => epochTimes.get(t)![k].push(...rung.epochSeconds));
      heldOutBy.set(t, l.rungs.map((rung) => rung.heldOutLoss));
      if (ladder) await l.release();
      else ladder = l;
    }
  }
  if (!ladder) throw new Error('--threads: no thread count given');
  const legibleSeconds = median(wallBy.get(threadList[0])!);
  const rssAfter = process.resourceUsage().maxRSS;
  const measured = await measureComplexity(ladder, x, f, Array.from({ length: shape[0] }, (_, c) => ({ id: String(c), channel: c })));
  await ladder.release();
  const loadMiddle = load();
  // PyTorch, same shapes, standardised targets, training images and batch size.
  const dir = mkdtempSync(join(tmpdir(), 'legible-bench-complexity-'));
  const plane = shape[1] * shape[2];
  const z = new Float32Array(f.length);
  for (let i = 0; i < n; i++) for (let c = 0; c < shape[0]; c++) for (let p = 0; p < plane; p++) z[(i * shape[0] + c) * plane + p] = (f[(i * shape[0] + c) * plane + p] - ladder.mean[c]) / ladder.std[c];
  // PyTorch starts from legible's initial parameters (trainLadder's draw: initDisentangler(shape, seed + 1000 · (depth + 1))).
  for (const depth of depths) {
    const s = { input, output: shape, width, depth };
    const init = initDisentangler(s, 1 + 1000 * (depth + 1));
    const flat = disentanglerParams(s).flatMap((p) => Array.from(init[p.name]));
    writeFileSync(join(dir, `init${depth}.bin`), Float32Array.from(flat));
  }
  writeFileSync(join(dir, 'x.bin'), x);
  writeFileSync(join(dir, 'z.bin'), z);
  type TorchRun = { depths: Record<string, { epoch_seconds: number[]; history: number[] }>; peak_rss_mib: number; threads: number; torch: string };
  const torchRuns: TorchRun[] = [];
  for (const t of torchThreads) {
    writeFileSync(join(dir, 'job.json'), JSON.stringify({ n, input, output: shape, width, depths, lr: 3e-3, batch, epochs: torchEpochs, threads: t, train: ladder.train, seed: 1 }));
    const r = spawnSync(TORCH_PYTHON, [join(ROOT, 'stimuli-pipeline/test/disentangler_reference.py'), '--bench', dir], {
      encoding: 'utf8',
      env: { ...process.env, PYTHONWARNINGS: 'ignore', OMP_NUM_THREADS: String(t), MALLOC_MMAP_THRESHOLD_: '4294967296', MALLOC_TRIM_THRESHOLD_: '4294967296' },
    });
    if (r.status !== 0) throw new Error(r.stderr);
    torchRuns.push(JSON.parse(r.stdout.trim().split('\n').at(-1)!) as TorchRun);
  }
  rmSync(dir, { recursive: true, force: true });
  const ladderTime = (run: TorchRun) => depths.reduce((s, d) => s + median(run.depths[String(d)].epoch_seconds), 0);
  const torch = torchRuns.length ? torchRuns.reduce((a, b) => (ladderTime(b) < ladderTime(a) ? b : a)) : null;
  const loadAfter = load();
  // legible's columns: the median epoch per depth of each thread count; the ratio is the fastest count's.
  const ours = (t: number, k: number) => median(epochTimes.get(t)![k]);
  const ladderOurs = (t: number) => depths.reduce((s, _, k) => s + ours(t, k), 0);
  const best = threadList.reduce((a, b) => (ladderOurs(b) < ladderOurs(a) ? b : a));
  const rows = ladder.rungs.map((rung, k) => {
    const theirs = torch ? median(torch.depths[String(rung.depth)].epoch_seconds) : NaN;
    const legible = Object.fromEntries(threadList.map((t) => [t, ours(t, k)]));
    return { depth: rung.depth, legible_s: legible, pytorch_s: theirs, ratio: ours(best, k) / theirs, held_out: rung.heldOutLoss, train: rung.trainLoss, rho: measured.layer.rho[k], explained: measured.layer.explained[k] };
  });
  const uniq = [...new Set(threadList)];
  console.log(
    `\n${layer} [${shape}]: load average ${loadBefore} → ${loadMiddle} (legible) → ${loadAfter} (PyTorch ${torch?.torch ?? 'not run'}); PyTorch ladder s/epoch by threads: ${torchRuns.map((t) => `${t.threads}: ${ladderTime(t).toFixed(3)}`).join(', ') || '-'}; reference below: ${torch?.threads ?? '-'} thread(s); legible ratio column: ${best} thread(s)`,
  );
  console.log(`| depth | ${uniq.map((t) => `legible s/epoch, ${t} thr`).join(' | ')} | PyTorch s/epoch | ratio | held-out loss | train loss | ρ(order) | explained |`);
  console.log(`| ---: | ${uniq.map(() => '---:').join(' | ')} | ---: | ---: | ---: | ---: | ---: | ---: |`);
  for (const x of rows) console.log(`| ${x.depth} | ${uniq.map((t) => x.legible_s[t].toFixed(3)).join(' | ')} | ${x.pytorch_s.toFixed(3)} | ${x.ratio.toFixed(2)} | ${x.held_out.toFixed(3)} | ${x.train.toFixed(3)} | ${x.rho.toFixed(3)} | ${x.explained.toFixed(3)} |`);
  const theirsLadder = rows.reduce((s, x) => s + x.pytorch_s, 0);
  console.log(`| ladder | ${uniq.map((t) => ladderOurs(t).toFixed(3)).join(' | ')} | ${theirsLadder.toFixed(3)} | ${(ladderOurs(best) / theirsLadder).toFixed(2)} | | | | |`);
  console.log(`held-out losses by thread count: ${uniq.map((t) => `${t}: ${heldOutBy.get(t)!.map((v) => v.toFixed(6)).join(' / ')}`).join('; ')}`);
  console.log(
    `peak RSS: legible process ${mib(rssAfter).toFixed(0)} MiB (${mib(rssBefore).toFixed(0)} before the ladder: data, demo model, onnxruntime); PyTorch process ${Math.max(0, ...torchRuns.map((t) => t.peak_rss_mib)).toFixed(0)} MiB; legible ladder wall time ${legibleSeconds.toFixed(1)} s at ${threadList[0]} thread(s) (${epochs} epochs per depth, with graph building and evaluation)`,
  );
  results.push({ layer, shape, rows, loads: [loadBefore, loadMiddle, loadAfter], rss_mib: { legible: mib(rssAfter), legible_before: mib(rssBefore), pytorch: Math.max(0, ...torchRuns.map((t) => t.peak_rss_mib)) }, legible_ladder_s: Object.fromEntries(uniq.map((t) => [t, ladderOurs(t)])), pytorch_ladder_s: Object.fromEntries(torchRuns.map((t) => [t.threads, ladderTime(t)])) });
}
console.log(JSON.stringify(results));
