// A training worker: computes one ghost batch's gradient, or a range of logits, over shared memory.
// Started by train.ts (pool.ts); every result goes to a slot chosen by the main thread, so the result
// does not depend on which worker ran which task.
import { parentPort, workerData } from 'node:worker_threads';
import { BN_CHANNELS, INFER_PARAMS, TRAIN_PARAMS, Workspace, inferForward, loadImages, trainStep } from './net.ts';

export interface SharedState {
  /** All images, 784 bytes each (train then test). */
  pixels: SharedArrayBuffer;
  labels: SharedArrayBuffer;
  /** Float32 [TRAIN_PARAMS.total]: the current weights (written by the main thread between steps). */
  params: SharedArrayBuffer;
  /** Float32 [INFER_PARAMS.total]: folded weights for evaluation. */
  folded: SharedArrayBuffer;
  /** Float32 [ghosts × TRAIN_PARAMS.total]: one gradient per ghost batch. */
  grads: SharedArrayBuffer;
  /** Float64 [ghosts × 2 × BN_CHANNELS]: BN batch means and variances per ghost batch. */
  bnStats: SharedArrayBuffer;
  /** Int32 [batch]: image indices of the current step; Uint8 [batch]: mirror flags. */
  batch: SharedArrayBuffer;
  flips: SharedArrayBuffer;
  /** Float32 [images × 10]: logits written by evaluation tasks. */
  logits: SharedArrayBuffer;
  capacity: number;
}

export type Task =
  | { type: 'train'; ghost: number; start: number; count: number; scale: number }
  | { type: 'eval'; start: number; count: number };

export type TaskResult = { loss: number; correct: number } | { done: true };

function serve(shared: SharedState): void {
  const pixels = new Uint8Array(shared.pixels);
  const labels = new Uint8Array(shared.labels);
  const params = new Float32Array(shared.params);
  const folded = new Float32Array(shared.folded);
  const batch = new Int32Array(shared.batch);
  const flips = new Uint8Array(shared.flips);
  const logits = new Float32Array(shared.logits);
  const ws = new Workspace(shared.capacity);
  const P = TRAIN_PARAMS.total;
  const S = 2 * BN_CHANNELS;
  const batchLabels = new Uint8Array(shared.capacity);
  const indices = new Int32Array(shared.capacity);
  if (folded.length !== INFER_PARAMS.total) throw new Error('folded buffer has the wrong size');

  parentPort!.on('message', (task: Task) => {
    if (task.type === 'train') {
      const idx = batch.subarray(task.start, task.start + task.count);
      for (let i = 0; i < task.count; i++) batchLabels[i] = labels[idx[i]];
      loadImages(ws, pixels, idx, flips.subarray(task.start, task.start + task.count), task.count);
      const grad = new Float32Array(shared.grads, task.ghost * P * 4, P);
      const stats = new Float64Array(shared.bnStats, task.ghost * S * 8, S);
      const r = trainStep(ws, params, batchLabels, task.count, task.scale, grad, stats);
      parentPort!.postMessage(r satisfies TaskResult);
    } else {
      for (let s = task.start; s < task.start + task.count; s += shared.capacity) {
        const n = Math.min(shared.capacity, task.start + task.count - s);
        for (let i = 0; i < n; i++) indices[i] = s + i;
        loadImages(ws, pixels, indices, null, n);
        logits.set(inferForward(ws, folded, n).subarray(0, n * 10), s * 10);
      }
      parentPort!.postMessage({ done: true } satisfies TaskResult);
    }
  });
}

if (parentPort && workerData?.capacity) serve(workerData as SharedState);
