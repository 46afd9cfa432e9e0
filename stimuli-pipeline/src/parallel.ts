// Worker threads that step in lockstep with the main thread (the disentangler ladder's data-parallel
// training; reusable for other solvers). onnxruntime-node's `session.run` computes synchronously on
// the calling JS thread, so sessions on one thread never overlap: parallel work needs workers.
//
// The workers are plain CommonJS (an eval string), not TypeScript: they start without tsx (about 75 ms
// each, onnxruntime-node included, on the 2-core dev machine) and `require` what they need by resolved
// path (pass it in `data`). A worker's source sees `workerData` (its `data`), `require`, and two calls:
//   handle(type, async (message) => reply)   — a request from the main thread (team.request);
//   steps(async () => {})                    — the step function, run once per team.step().
// Steps are signalled through a SharedArrayBuffer with Atomics (the worker blocks in Atomics.wait
// between steps; the main thread awaits Atomics.waitAsync), not postMessage. The data of a step lives
// in SharedArrayBuffers both sides hold. Errors — a step or request that throws, a worker that crashes
// or exits — reject the pending request or wait with the worker's message and stack; close()
// terminates every worker (call it in a finally).
import { Worker } from 'node:worker_threads';
import { LegibleError } from '@legible/studies';

const PRELUDE = `
const { parentPort, workerData: __team } = require('node:worker_threads');
const workerData = __team.data;
const __control = new Int32Array(__team.control);
const __go = 2 * __team.index, __done = __go + 1;
const __handlers = new Map();
let __step = null;
function handle(type, fn) { __handlers.set(type, fn); }
function steps(fn) { __step = fn; }
__handlers.set('__loop', async (from) => {
  if (!__step) throw new Error('this worker defines no steps(fn)');
  let seen = from;
  for (;;) {
    Atomics.wait(__control, __go, seen);
    const gen = Atomics.load(__control, __go);
    if (gen === seen) continue;
    if (gen < 0) return;
    seen = gen;
    try {
      await __step();
    } catch (err) {
      Atomics.store(__control, __done, -gen);
      Atomics.notify(__control, __done);
      throw err;
    }
    Atomics.store(__control, __done, gen);
    Atomics.notify(__control, __done);
  }
});
parentPort.on('message', async (m) => {
  try {
    const fn = __handlers.get(m.type);
    if (!fn) throw new Error('no handler for request "' + m.type + '"');
    parentPort.postMessage({ id: m.id, ok: true, value: await fn(m.body) });
  } catch (err) {
    parentPort.postMessage({ id: m.id, ok: false, error: String((err && err.stack) || err) });
  }
});
`;

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

export class WorkerTeam {
  /** Per worker: [go generation, done generation] (a done of −g: step g threw). */
  private readonly control: Int32Array;
  private readonly workers: Worker[];
  private readonly pending = new Map<number, Pending>();
  private nextId = 0;
  private generation = 0;
  private loops: Promise<unknown>[] | null = null;
  private failure: Error | null = null;
  private failed: Promise<never>;
  private fail!: (e: Error) => void;
  private closed = false;
  private running = 0;

  /**
   * Starts `count` workers running `source` (CommonJS, see the top of this file); `data(i)` is worker
   * i's workerData (structured-cloned; SharedArrayBuffers in it are shared, not copied).
   */
  constructor(
    readonly name: string,
    count: number,
    source: string,
    data: (index: number) => unknown = () => undefined,
  ) {
    if (!(Number.isInteger(count) && count >= 1 && count <= 64)) throw new LegibleError(`${name}: a worker team needs 1–64 workers, got ${count}`);
    this.failed = new Promise<never>((_, reject) => {
      this.fail = reject;
    });
    this.failed.catch(() => {});
    this.control = new Int32Array(new SharedArrayBuffer(8 * count));
    this.workers = Array.from({ length: count }, (_, index) => {
      const w = new Worker(PRELUDE + source, { eval: true, execArgv: [], workerData: { data: data(index), control: this.control.buffer, index } });
      w.on('message', (m: { id: number; ok: boolean; value?: unknown; error?: string }) => {
        const p = this.pending.get(m.id);
        if (!p) return;
        this.pending.delete(m.id);
        if (m.ok) p.resolve(m.value);
        else p.reject(new Error(`${name} worker ${index + 1}: ${m.error}`));
      });
      w.on('error', (err) => this.abort(new Error(`${name} worker ${index + 1} failed: ${err.stack ?? err}`)));
      this.running++;
      w.on('exit', (code) => {
        this.running--;
        if (!this.closed) this.abort(new Error(`${name} worker ${index + 1} exited (code ${code}) while the team was running`));
      });
      return w;
    });
  }

  get size(): number {
    return this.workers.length;
  }

  /** Workers that have not exited yet. */
  get alive(): number {
    return this.running;
  }

  private abort(err: Error): void {
    if (this.failure) return;
    this.failure = err;
    this.fail(err);
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }

  /** Sends worker i a request its handle(type, fn) answers; resolves with fn's value. */
  request<T = unknown>(index: number, type: string, body?: unknown, transfer: Transferable[] = []): Promise<T> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.closed) return Promise.reject(new Error(`${this.name}: the worker team is closed`));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.workers[index].postMessage({ id, type, body }, transfer as never);
    });
  }

  /** Sends every worker the same request. */
  broadcast<T = unknown>(type: string, body?: unknown): Promise<T[]> {
    return Promise.all(this.workers.map((_, i) => this.request<T>(i, type, body)));
  }

  /** Puts the workers into their step loops (between requests and steps: no requests while looping). */
  startSteps(): void {
    if (this.loops) return;
    for (let i = 0; i < this.workers.length; i++) {
      Atomics.store(this.control, 2 * i, this.generation);
      Atomics.store(this.control, 2 * i + 1, this.generation);
    }
    // From this generation on: a step() signalled before a worker reads this request is not missed.
    this.loops = this.workers.map((_, i) => this.request(i, '__loop', this.generation));
    // A step that throws ends its loop with the error: surface it as the team's failure.
    for (const l of this.loops) l.catch((err: Error) => this.abort(err));
  }

  /** Starts one step on every worker (their steps(fn) runs once). */
  step(): void {
    if (!this.loops) throw new Error(`${this.name}: step() before startSteps()`);
    if (this.failure) throw this.failure;
    const g = ++this.generation;
    for (let i = 0; i < this.workers.length; i++) {
      Atomics.store(this.control, 2 * i, g);
      Atomics.notify(this.control, 2 * i);
    }
  }

  /** Resolves when every worker has finished the current step; rejects with the first failure. */
  async stepped(): Promise<void> {
    const g = this.generation;
    for (let i = 0; i < this.workers.length; i++) {
      const at = 2 * i + 1;
      for (;;) {
        if (this.failure) throw this.failure;
        const d = Atomics.load(this.control, at);
        if (d === g) break;
        if (d === -g) {
          await Promise.race([this.failed, this.loops![i]]);
          throw this.failure ?? new Error(`${this.name} worker ${i + 1}: its step failed`);
        }
        const w = (Atomics as unknown as { waitAsync(a: Int32Array, i: number, v: number): { async: boolean; value: Promise<string> | string } }).waitAsync(this.control, at, d);
        if (w.async) await Promise.race([w.value, this.failed]);
      }
    }
  }

  /** Ends the step loops (the workers answer requests again). */
  async stopSteps(): Promise<void> {
    if (!this.loops) return;
    for (let i = 0; i < this.workers.length; i++) {
      Atomics.store(this.control, 2 * i, -1);
      Atomics.notify(this.control, 2 * i);
    }
    const loops = this.loops;
    this.loops = null;
    await Promise.all(loops);
  }

  /** Terminates every worker (also mid-step); safe to call twice and after a failure. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (let i = 0; i < this.workers.length; i++) {
      Atomics.store(this.control, 2 * i, -1);
      Atomics.notify(this.control, 2 * i);
    }
    for (const p of this.pending.values()) p.reject(new Error(`${this.name}: the worker team was closed`));
    this.pending.clear();
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

/** A Float32Array over a new SharedArrayBuffer. (onnxruntime-node refuses shared memory as a tensor's data: copy into a private array before a run.) */
export function sharedFloat32(length: number): Float32Array {
  return new Float32Array(new SharedArrayBuffer(4 * length));
}
