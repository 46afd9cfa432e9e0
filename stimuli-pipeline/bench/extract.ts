// Activation extraction, images/s: ResNet-50 at 224 px, batch 16, taps on layer1–4, CPU — legible
// (sharp decode + onnxruntime-node) side by side with PyTorch (PIL + torchvision + torch, Debian's
// python3-torch) on the same weights (one random-weight ResNet-50, exported with torch.onnx), the
// same images and the same number of threads, in one run.
//
//   node --import tsx stimuli-pipeline/bench/extract.ts [images=320] [threads=2]
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseStudy, type Study } from '@legible/studies';
import { listImages } from '../src/dataset.ts';
import { extractToStore } from '../src/extract.ts';
import { ActivationStore } from '../src/store.ts';
import { CACHE, imageFolder, machine, reference } from './lib.ts';

const count = Number(process.argv[2] ?? 320);
const threads = Number(process.argv[3] ?? 2);
const batch = 16;

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

async function legible(): Promise<{ seconds: number; imagesPerS: number; store: ActivationStore }> {
  const listing = listImages(images).images;
  const dir = mkdtempSync(join(tmpdir(), 'legible-bench-extract-'));
  // One batch per shard: the clock runs from the first shard written (session created, first batch
  // done — as PyTorch's warm-up batch) to the last.
  const store = ActivationStore.open(dir, 'bench', listing.length, batch);
  const times: number[] = [];
  await extractToStore({
    model: readFileSync(join(modelDir, 'resnet50.onnx')),
    input: study.model.input,
    layers: study.model.layers,
    images: listing,
    store,
    batchSize: batch,
    device: 'cpu',
    threads,
    quiet: true,
    onShard: () => times.push(performance.now()),
  });
  const seconds = (times[times.length - 1] - times[0]) / 1000;
  return { seconds, imagesPerS: (listing.length - batch) / seconds, store };
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

console.error('legible …');
const ours = await legible();
console.error(`legible: ${ours.imagesPerS.toFixed(2)} images/s`);
const torchRuns = [0, 1].map((workers) => {
  console.error(`PyTorch, ${workers} loader workers …`);
  return reference(['extract', modelDir, images, String(batch), String(threads), String(workers)], { OMP_NUM_THREADS: String(threads) }) as {
    images_per_s: number;
    seconds: number;
    workers: number;
    torch: string;
  };
});
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
console.log(`machine: ${await machine()}; PyTorch ${torch.torch}`);
console.log(`| ResNet-50, 224 px, batch ${batch}, taps layer1–4, ${threads} threads, ${count} JPEGs 500×375 | images/s |`);
console.log('| --- | --- |');
console.log(`| legible (sharp + onnxruntime-node, cpu) | ${ours.imagesPerS.toFixed(2)} |`);
for (const t of torchRuns) console.log(`| PyTorch (PIL + torch, DataLoader workers=${t.workers}) | ${t.images_per_s.toFixed(2)} |`);
console.log(`| **ratio legible / best PyTorch** | **${ratio.toFixed(2)}×** |`);
console.log(`layer4 spatial means, legible vs PyTorch, first ${batch} images × ${c} channels: cosine similarity ${cosine.toFixed(5)}`);
