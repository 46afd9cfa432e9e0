// HALS's sweep over U's rows (hals.ts's halsRows) on two threads. Given the gradient U·WWᵀ − AWᵀ and
// WWᵀ, each row of U is an independent problem, so the rows split into chunks of CHUNK rows that the
// main thread claims from the front and a persistent worker from the back, until all are claimed (a
// thread slowed down by other work on its core sweeps fewer). The worker works over shared memory:
// U, the gradient and WWᵀ are copied into SharedArrayBuffers before each sweep, the worker's rows
// copied back after (3 × 5 MB at most per iteration at 50,000 rows, k = 25: a millisecond or two
// against a 66 ms sweep). The worker is a one-member WorkerTeam (parallel.ts, the disentangler's
// data-parallel steps use it too): a sweep is one of its lockstep steps. U itself stays an ordinary
// array: onnxruntime-node rejects a tensor over a SharedArrayBuffer ("Invalid argument").
// Each row's arithmetic is exactly the one-thread sweep's, so U comes out bitwise the same whoever
// swept which row — and so the fit does not depend on how the rows were shared, or whether the
// worker helped at all.
//
// The worker runs halsRows itself — the very function the main thread runs, its source (as tsx
// compiled it) evaluated in the worker with hals.ts's EPS (so it may use no other names from its
// module: a worker that meets one fails its sweep, and the fit throws saying so;
// test/nmf-sweep.test.ts runs it). Booting it that way
// takes about 30 ms and 35 ms of CPU; a worker that loads tsx's loader and then TypeScript modules
// took 200–450 ms and 0.3–0.7 s of CPU (the latter with @legible/studies), which at 5,000 × 512
// (0.6 s to the reference loss) cost more than the second thread saved. The worker boots while the
// fit gets ready; until it has answered, the main thread sweeps every row itself (a worker's boot
// needs the main thread's event loop to turn, so the main thread never waits for it). A failure in
// the worker (its boot or a sweep) is thrown from the next sweep; `close` stops the worker and is
// safe to call in a `finally` whatever state it is in.
import { LegibleError } from '@legible/studies';
import { EPS, halsRows } from './hals.ts';
import { sharedFloat32, WorkerTeam } from './parallel.ts';

/**
 * Rows per chunk: each thread claims chunks (an Atomics.add on one counter; the main thread's from
 * the front, the worker's from the back) until all are claimed, so a thread that runs slower — its
 * core busy with other work — sweeps fewer rows instead of holding the other up.
 */
const CHUNK = 256;
/** Int32 slots shared with the worker: chunks claimed so far in this sweep (claims from the count on are void), and the chunks the worker swept (the last ones). */
const TAKEN = 0;
const WORKER_CHUNKS = 1;

/**
 * The worker (WorkerTeam source: plain CommonJS): halsRows from its source, EPS bound; each step
 * sweeps chunks from the back until all are claimed (AWᵀ is not read when the gradient is given).
 */
const SWEEP_WORKER = `
const { chunk, n, k, sweeps, stop } = workerData;
const halsRows = new Function('EPS', 'return (' + workerData.halsRows + ');')(workerData.EPS);
const counters = new Int32Array(workerData.counters);
const U = new Float32Array(workerData.U), grad = new Float32Array(workerData.grad), WWt = new Float32Array(workerData.WWt);
const none = new Float32Array(0);
handle('ready', async () => true);
steps(async () => {
  const chunks = Math.ceil(n / chunk);
  for (let mine = 0; Atomics.add(counters, ${TAKEN}, 1) < chunks; mine++) {
    const r0 = (chunks - 1 - mine) * chunk;
    const r1 = Math.min(n, r0 + chunk);
    halsRows(U.subarray(r0 * k, r1 * k), none, WWt, r1 - r0, k, sweeps, stop, grad.subarray(r0 * k, r1 * k));
    Atomics.store(counters, ${WORKER_CHUNKS}, mine + 1);
  }
});
`;

export class RowSweep {
  /** Workers started and not yet closed, in this process (tests check that none is left behind). */
  static live = 0;
  /** Rows swept by the worker so far (tests check that it helped). */
  workerRows = 0;
  private readonly part: Float32Array;
  private readonly grad: Float32Array;
  private readonly WWt: Float32Array;
  private readonly counters: Int32Array;
  private readonly team: WorkerTeam;
  private booted = false;
  private bootError: Error | null = null;
  private stepping = false;
  private closed = false;

  /** Starts the worker (it boots while the caller goes on). */
  constructor(
    readonly n: number,
    readonly k: number,
    readonly sweeps: number,
    readonly stop: number,
  ) {
    this.part = sharedFloat32(n * k);
    this.grad = sharedFloat32(n * k);
    this.WWt = sharedFloat32(k * k);
    this.counters = new Int32Array(new SharedArrayBuffer(8));
    const data = { EPS, halsRows: halsRows.toString(), chunk: CHUNK, n, k, sweeps, stop, counters: this.counters.buffer, U: this.part.buffer, grad: this.grad.buffer, WWt: this.WWt.buffer };
    this.team = new WorkerTeam('NMF row sweep', 1, SWEEP_WORKER, () => data);
    RowSweep.live++;
    this.team.request(0, 'ready').then(
      () => (this.booted = true),
      (e: Error) => (this.bootError = e),
    );
  }

  /** Whether the worker has booted and waits for sweeps. */
  get ready(): boolean {
    return this.booted;
  }

  /**
   * One call of halsRows(U, ·, WWt, n, k, sweeps, stop, grad) over all of U (n × k, updated in
   * place), the rows split between the threads (all on this thread while the worker boots). `grad`
   * is the gradient at the current U.
   */
  async sweep(U: Float32Array, WWt: Float32Array, grad: Float32Array): Promise<void> {
    const { n, k } = this;
    if (this.closed) throw new Error('RowSweep.sweep after close');
    if (this.bootError) throw this.failed(this.bootError);
    if (!this.booted) {
      halsRows(U, EMPTY, WWt, n, k, this.sweeps, this.stop, grad);
      return;
    }
    if (!this.stepping) {
      this.team.startSteps();
      this.stepping = true;
    }
    this.WWt.set(WWt);
    this.grad.set(grad);
    this.part.set(U);
    const chunks = Math.ceil(n / CHUNK);
    Atomics.store(this.counters, TAKEN, 0);
    Atomics.store(this.counters, WORKER_CHUNKS, 0);
    this.team.step();
    // Chunks from the front here, in U itself, meanwhile (AWᵀ is not read when the gradient is given).
    for (let mine = 0; Atomics.add(this.counters, TAKEN, 1) < chunks; mine++) {
      const r0 = mine * CHUNK;
      const r1 = Math.min(n, r0 + CHUNK);
      halsRows(U.subarray(r0 * k, r1 * k), EMPTY, WWt, r1 - r0, k, this.sweeps, this.stop, grad.subarray(r0 * k, r1 * k));
    }
    try {
      await this.team.stepped();
    } catch (e) {
      throw this.failed(e as Error);
    }
    const from = Math.min(n, (chunks - Atomics.load(this.counters, WORKER_CHUNKS)) * CHUNK);
    U.set(this.part.subarray(from * k), from * k);
    this.workerRows += n - from;
  }

  private failed(e: Error): LegibleError {
    return new LegibleError(`NMF: the worker sweeping U's rows failed (src/nmf-sweep.ts): ${e.message}`);
  }

  /** Stops the worker (idempotent; also while it boots or after it failed). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.team.close();
    RowSweep.live--;
  }
}

const EMPTY = new Float32Array(0);
