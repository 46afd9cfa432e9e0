// Activation extraction, images/s: ResNet-50 at 224 px, batch 16, taps on layer1–4, CPU — legible
// (sharp decode + onnxruntime-node) side by side with PyTorch (PIL + torchvision + torch, Debian's
// python3-torch) on the same weights (one random-weight ResNet-50, exported with torch.onnx), the
// same images and the same number of threads, in one run. PyTorch runs in several configurations, as
// a practitioner would tune it (glibc's allocator thresholds, DataLoader workers, channels_last,
// OpenMP's wait policy; all with torch.inference_mode, `threads` intra-op threads and one inter-op
// thread), each in its own process; the best one is the reference of the ratio.
//
// Each side also reports its CPU time per image (all threads of its process: user + system), which a
// loaded machine disturbs far less than images/s. With rounds > 1 the sides alternate (legible, then
// each PyTorch configuration, again and again), so that the machine's load falls on both alike; the
// table gives each side's median over the rounds.
//
//   node --import tsx stimuli-pipeline/bench/extract.ts [images=320] [threads=2] [configs=all|i,j,…] [rounds=1]
//   (positional; configs are indices into CONFIGS below, e.g. `extract.ts 96 2 4 3`)
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { cpuUsage } from 'node:process';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseStudy, type Study } from '@legible/studies';
import { listImages } from '../src/dataset.ts';
import { extractToStore } from '../src/extract.ts';
import { ActivationStore } from '../src/store.ts';
import { CACHE, imageFolder, machine, reference } from './lib.ts';

const count = Number(process.argv[2] ?? 320);
const threads = Number(process.argv[3] ?? 2);
const batch = 16;
/** glibc: keep freed blocks in the heap instead of unmapping them (no fresh page faults per batch). */
const TUNED_MALLOC = { MALLOC_MMAP_THRESHOLD_: '4294967296', MALLOC_TRIM_THRESHOLD_: '4294967296' };
const CONFIGS: { label: string; workers: number; channelsLast: boolean; malloc: boolean; jit?: boolean; env?: Record<string, string> }[] = [
  { label: "glibc's default allocator, DataLoader workers = 0", workers: 0, channelsLast: false, malloc: false },
  { label: "glibc's default allocator, DataLoader workers = 1", workers: 1, channelsLast: false, malloc: false },
  { label: 'MALLOC_MMAP/TRIM_THRESHOLD_ = 4 GiB, workers = 0', workers: 0, channelsLast: false, malloc: true },
  { label: 'MALLOC_MMAP/TRIM_THRESHOLD_ = 4 GiB, workers = 1', workers: 1, channelsLast: false, malloc: true },
  { label: 'MALLOC_MMAP/TRIM_THRESHOLD_ = 4 GiB, workers = 0, channels_last', workers: 0, channelsLast: true, malloc: true },
  { label: 'MALLOC_MMAP/TRIM_THRESHOLD_ = 4 GiB, workers = 1, channels_last', workers: 1, channelsLast: true, malloc: true },
  // OpenMP threads that sleep instead of spinning between operators: the counterpart of legible's
  // onnxruntime setting (allow_spinning 0), for a machine whose cores other work also needs.
  { label: 'MALLOC_MMAP/TRIM_THRESHOLD_ = 4 GiB, workers = 0, channels_last, OMP_WAIT_POLICY = PASSIVE', workers: 0, channelsLast: true, malloc: true, env: { OMP_WAIT_POLICY: 'PASSIVE' } },
  // TorchScript: traced, frozen, torch.jit.optimize_for_inference (batch norm folded, oneDNN fusions).
  { label: 'MALLOC_MMAP/TRIM_THRESHOLD_ = 4 GiB, workers = 0, TorchScript frozen + optimize_for_inference', workers: 0, channelsLast: false, malloc: true, jit: true },
  { label: 'MALLOC_MMAP/TRIM_THRESHOLD_ = 4 GiB, workers = 0, channels_last, TorchScript frozen + optimize_for_inference', workers: 0, channelsLast: true, malloc: true, jit: true },
];
const chosen = !process.argv[4] || process.argv[4] === 'all' ? CONFIGS.map((_, i) => i) : process.argv[4].split(',').map(Number);
const rounds = Number(process.argv[5] ?? 1);
if (!(rounds >= 1) || chosen.some((i) => !CONFIGS[i])) throw new Error(`usage: extract.ts [images=320] [threads=2] [configs=all|i,j,… of 0–${CONFIGS.length - 1}] [rounds=1]`);

const modelDir = join(CACHE, 'resnet50');
if (!existsSync(join(modelDir, 'resnet50.onnx'))) {
  console.error('exporting a random-weight ResNet-50 with torch.onnx …');
  reference(['export-resnet50', modelDir]);
}
const images = await imageFolder(count);
console.error(`images: ${images}`);

const study = parseStudy(`
id: bench
title: bench
model:
  onnx: resnet50.onnx
  input: { size: 224, resize: 256, channels: rgb, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] }
  layers:
    - { name: layer1, tensor: layer1 }
    - { name: layer2, tensor: layer2 }
    - { name: layer3, tensor: layer3 }
    - { name: layer4, tensor: layer4 }
dataset: { images: x }
bases: [{ kind: channels }]
features: { select: all }
design: { trials_per_participant: 1 }
text: { consent: c, instructions: i }
`).study as Study;

async function legible(): Promise<{ seconds: number; imagesPerS: number; cpuMsPerImage: number; store: ActivationStore }> {
  const listing = listImages(images).images;
  const dir = mkdtempSync(join(tmpdir(), 'legible-bench-extract-'));
  // One batch per shard: the clock runs from the first shard written (session created, first batch
  // done — as PyTorch's warm-up batch) to the last.
  const store = ActivationStore.open(dir, 'bench', listing.length, batch);
  const times: number[] = [];
  const cpu: number[] = [];
  await extractToStore({
    model: readFileSync(join(modelDir, 'resnet50.onnx')),
    input: study.model.input!,
    layers: study.model.layers,
    images: listing,
    store,
    batchSize: batch,
    device: 'cpu',
    threads,
    quiet: true,
    onShard: () => {
      times.push(performance.now());
      const u = cpuUsage();
      cpu.push((u.user + u.system) / 1000);
    },
  });
  const seconds = (times[times.length - 1] - times[0]) / 1000;
  const timed = listing.length - batch;
  return { seconds, imagesPerS: timed / seconds, cpuMsPerImage: (cpu[cpu.length - 1] - cpu[0]) / timed, store };
}

function readNpy(file: string): { shape: number[]; data: Float32Array } {
  const buf = readFileSync(file);
  const headerLen = buf.readUInt16LE(8);
  const header = buf.subarray(10, 10 + headerLen).toString('latin1');
  const shape = /'shape': \(([^)]*)\)/.exec(header)![1].split(',').filter((s) => s.trim()).map(Number);
  if (!header.includes("'<f4'")) throw new Error(`expected float32 .npy, got ${header}`);
  const bytes = buf.subarray(10 + headerLen);
  return { shape, data: new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)) };
}

type TorchRun = { images: number; images_per_s: number; seconds: number; cpu_seconds: number; torch: string };
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];
const oursRuns: Awaited<ReturnType<typeof legible>>[] = [];
const torchRounds: TorchRun[][] = chosen.map(() => []);
for (let r = 0; r < rounds; r++) {
  console.error(`round ${r + 1}/${rounds}, load average ${loadavg()[0].toFixed(1)}: legible …`);
  const run = await legible();
  console.error(`  legible: ${run.imagesPerS.toFixed(2)} images/s, ${run.cpuMsPerImage.toFixed(1)} CPU ms/image`);
  if (oursRuns.length) rmSync(run.store.dir, { recursive: true, force: true });
  oursRuns.push(run);
  chosen.forEach((i, j) => {
    const cfg = CONFIGS[i];
    console.error(`  PyTorch: ${cfg.label} …`);
    const env: Record<string, string> = { OMP_NUM_THREADS: String(threads), ...(cfg.malloc ? TUNED_MALLOC : {}), ...cfg.env };
    const t = reference(['extract', modelDir, images, String(batch), String(threads), String(cfg.workers), cfg.channelsLast ? '1' : '0', '1', cfg.jit ? '1' : '0'], env) as TorchRun;
    console.error(`    ${t.images_per_s.toFixed(2)} images/s, ${((1000 * t.cpu_seconds) / t.images).toFixed(1)} CPU ms/image`);
    torchRounds[j].push(t);
  });
}
const ours = { ...oursRuns[0], imagesPerS: median(oursRuns.map((o) => o.imagesPerS)), cpuMsPerImage: median(oursRuns.map((o) => o.cpuMsPerImage)) };
const torchRuns = chosen.map((i, j) => ({
  label: CONFIGS[i].label,
  torch: torchRounds[j][0].torch,
  images_per_s: median(torchRounds[j].map((t) => t.images_per_s)),
  cpuMsPerImage: median(torchRounds[j].map((t) => (1000 * t.cpu_seconds) / t.images)),
}));
const torch = torchRuns.reduce((a, b) => (b.images_per_s > a.images_per_s ? b : a));

// Same computation? Compare layer4's spatial means image by image (preprocessing differs slightly:
// sharp's Lanczos resize against PIL's bilinear, so expect close, not equal).
const theirs = readNpy(join(modelDir, 'torch_layer4_mean.npy'));
const c = theirs.shape[1];
const shard0 = ours.store.read(0);
const mine = shard0.mean[3];
let dot = 0;
let na = 0;
let nb = 0;
for (let i = 0; i < mine.length; i++) {
  dot += mine[i] * theirs.data[i];
  na += mine[i] ** 2;
  nb += theirs.data[i] ** 2;
}
const cosine = dot / Math.sqrt(na * nb);
rmSync(ours.store.dir, { recursive: true, force: true });

const ratio = ours.imagesPerS / torch.images_per_s;
const best = chosen[torchRuns.indexOf(torch)];
console.log(`machine: ${await machine()}; PyTorch ${torch.torch}; load average ${loadavg().map((l) => l.toFixed(1)).join(' ')}`);
const of = rounds > 1 ? `, median of ${rounds} alternating rounds` : '';
console.log(`| ResNet-50, 224 px, batch ${batch}, taps layer1–4, ${threads} threads, ${count} JPEGs 500×375${of} | images/s | CPU ms/image |`);
console.log('| --- | ---: | ---: |');
console.log(`| legible (sharp + onnxruntime-node, cpu) | ${ours.imagesPerS.toFixed(2)} | ${ours.cpuMsPerImage.toFixed(1)} |`);
for (const t of torchRuns) console.log(`| PyTorch (PIL + torch, inference_mode, ${threads} threads): ${t.label}${t === torch ? ' — **best**' : ''} | ${t.images_per_s.toFixed(2)} | ${t.cpuMsPerImage.toFixed(1)} |`);
console.log(`| **ratio legible / best PyTorch** | **${ratio.toFixed(2)}×** | ${(torch.cpuMsPerImage / ours.cpuMsPerImage).toFixed(2)}× less CPU |`);
if (rounds > 1) {
  const j = torchRuns.indexOf(torch);
  console.log(`per round, legible / PyTorch config ${best}: ${oursRuns.map((o, r) => (o.imagesPerS / torchRounds[j][r].images_per_s).toFixed(2)).join(', ')}`);
}
console.log(`layer4 spatial means, legible vs PyTorch, first ${batch} images × ${c} channels: cosine similarity ${cosine.toFixed(5)}`);
