// HALS's sweep over U's rows (hals.ts's halsRows) on two threads. Given the gradient U·WWᵀ − AWᵀ and
// WWᵀ, each row of U is an independent problem, so the rows split into chunks of CHUNK rows that the
// main thread claims from the front and a persistent worker from the back, until all are claimed (a
// thread slowed down by other work on its core sweeps fewer). The worker works over shared memory:
// U, the gradient and WWᵀ are copied into SharedArrayBuffers before each sweep, the worker's rows
// copied back after (3 × 5 MB at most per iteration at 50,000 rows, k = 25: a millisecond or two
// against a 66 ms sweep); Atomics.wait/notify hand over and back. U itself stays an ordinary array:
// onnxruntime-node rejects a tensor over a SharedArrayBuffer ("Invalid argument").
// Each row's arithmetic is exactly the one-thread sweep's, so U comes out bitwise the same whoever
// swept which row — and so the fit does not depend on how the rows were shared, or whether the
// worker helped at all.
//
// The worker runs halsRows itself — the very function the main thread runs, its source (as tsx
// compiled it) evaluated in the worker with hals.ts's EPS — and `serve` below (so neither may use
// other names from their modules: a worker that meets one fails its sweep, and the fit throws
// saying so; test/nmf-sweep.test.ts runs both). Booting it that way
// takes about 30 ms and 35 ms of CPU; a worker that loads tsx's loader and then TypeScript modules
// took 200–450 ms and 0.3–0.7 s of CPU (the latter with @legible/studies), which at 5,000 × 512
// (0.6 s to the reference loss) cost more than the second thread saved. The worker boots while the
// fit gets ready; until it says it is ready, the main thread sweeps every row itself (a worker's
// boot needs the main thread's event loop to turn, so the main thread never blocks waiting for it).
// A failure in the worker (its boot or a sweep) is reported to the main thread and thrown there;
// `close` stops the worker and is safe to call in a `finally` whatever state it is in.
import { MessageChannel, receiveMessageOnPort, Worker, type MessagePort } from 'node:worker_threads';
import { LegibleError } from '@legible/studies';
import { EPS, halsRows } from './hals.ts';

/** Int32 slots of the control array shared with the worker. */
const CONTROL = {
  /** Bumped by the main thread for each command (a sweep, or stop). */
  seq: 0,
  /** The last command the worker finished (its seq). */
  done: 1,
  /** The worker's state: BOOTING, READY, FAILED. */
  state: 2,
  /** The command: SWEEP or STOP. */
  command: 3,
  /** Chunks claimed so far in this sweep (by either thread; claims from CHUNKS on are void). */
  taken: 4,
  /** Chunks the worker swept in this sweep (the last ones: its claims run from the end). */
  workerChunks: 5,
  length: 6,
} as const;
const STATE = { booting: 0, ready: 1, failed: 2 } as const;
const COMMAND = { sweep: 0, stop: 1 } as const;
const CODES = { CONTROL, STATE, COMMAND };

/** What the worker gets (workerData). */
interface SweepShared {
  control: SharedArrayBuffer;
  /** U (n × k, float32), written by the main thread before each sweep: the worker sweeps its chunks in place. */
  U: SharedArrayBuffer;
  /** The gradient (n × k, float32), written by the main thread before each sweep. */
  grad: SharedArrayBuffer;
  /** WWᵀ (k × k, float32), written by the main thread before each sweep. */
  WWt: SharedArrayBuffer;
  /** Rows per chunk. */
  chunk: number;
  n: number;
  k: number;
  sweeps: number;
  stop: number;
  /** Where the worker posts a failure's message (read synchronously with receiveMessageOnPort). */
  port: MessagePort;
}

export class RowSweep {
  /** Workers started and not yet exited, in this process (tests check that none is left behind). */
  static live = 0;
  /** Rows swept by the worker so far (tests check that it helped). */
  workerRows = 0;
  private readonly control: Int32Array;
  private readonly part: Float32Array;
  private readonly grad: Float32Array;
  private readonly WWt: Float32Array;
  private readonly worker: Worker;
  private readonly port: MessagePort;
  private seq = 0;
  private error: string | null = null;
  private closed = false;

  /** Starts the worker (it boots while the caller goes on). */
  constructor(
    readonly n: number,
    readonly k: number,
    readonly sweeps: number,
    readonly stop: number,
  ) {
    this.part = new Float32Array(new SharedArrayBuffer(n * k * 4));
    this.grad = new Float32Array(new SharedArrayBuffer(n * k * 4));
    this.WWt = new Float32Array(new SharedArrayBuffer(k * k * 4));
    this.control = new Int32Array(new SharedArrayBuffer(CONTROL.length * 4));
    const channel = new MessageChannel();
    this.port = channel.port1;
    const shared: SweepShared = {
      control: this.control.buffer as SharedArrayBuffer,
      U: this.part.buffer as SharedArrayBuffer,
      grad: this.grad.buffer as SharedArrayBuffer,
      WWt: this.WWt.buffer as SharedArrayBuffer,
      chunk: CHUNK,
      n,
      k,
      sweeps,
      stop,
      port: channel.port2,
    };
    // The worker's whole program: halsRows (EPS bound) and serve, both from their source here.
    const boot = `const { workerData } = require('node:worker_threads');
const halsRows = new Function('EPS', ${JSON.stringify(`return (${halsRows.toString()});`)})(${EPS});
(${serve.toString()})(workerData, halsRows, ${JSON.stringify(CODES)});`;
    // No inherited Node flags: the program is plain CommonJS, needs no tsx, and a parent's
    // --input-type=module would make it an ES module (where `require` is not defined).
    this.worker = new Worker(boot, { eval: true, execArgv: [], workerData: shared, transferList: [channel.port2] });
    // Never keep the process alive for the worker, and never let its failure be an unhandled event.
    this.worker.unref();
    RowSweep.live++;
    this.worker.once('exit', () => RowSweep.live--);
    this.worker.on('error', (e) => {
      this.error ??= String(e?.stack ?? e);
      Atomics.store(this.control, CONTROL.state, STATE.failed);
    });
  }

  /** Whether the worker has booted and waits for sweeps. */
  get ready(): boolean {
    return Atomics.load(this.control, CONTROL.state) === STATE.ready;
  }

  /**
   * One call of halsRows(U, ·, WWt, n, k, sweeps, stop, grad) over all of U (n × k, updated in
   * place), the rows split between the threads (all on this thread while the worker boots). `grad`
   * is the gradient at the current U.
   */
  sweep(U: Float32Array, WWt: Float32Array, grad: Float32Array): void {
    const { n, k } = this;
    if (this.closed) throw new Error('RowSweep.sweep after close');
    this.throwIfFailed();
    if (!this.ready) {
      halsRows(U, EMPTY, WWt, n, k, this.sweeps, this.stop, grad);
      return;
    }
    this.WWt.set(WWt);
    this.grad.set(grad);
    this.part.set(U);
    const chunks = Math.ceil(n / CHUNK);
    Atomics.store(this.control, CONTROL.taken, 0);
    Atomics.store(this.control, CONTROL.workerChunks, 0);
    const seq = ++this.seq;
    Atomics.store(this.control, CONTROL.command, COMMAND.sweep);
    Atomics.store(this.control, CONTROL.seq, seq);
    Atomics.notify(this.control, CONTROL.seq);
    // Chunks from the front here, in U itself, meanwhile (AWᵀ is not read when the gradient is given).
    for (let mine = 0; Atomics.add(this.control, CONTROL.taken, 1) < chunks; mine++) {
      const r0 = mine * CHUNK;
      const r1 = Math.min(n, r0 + CHUNK);
      halsRows(U.subarray(r0 * k, r1 * k), EMPTY, WWt, r1 - r0, k, this.sweeps, this.stop, grad.subarray(r0 * k, r1 * k));
    }
    // The worker reports every outcome through the control array (a failed sweep or boot included),
    // so this wait ends.
    for (let done = Atomics.load(this.control, CONTROL.done); done !== seq; done = Atomics.load(this.control, CONTROL.done)) {
      Atomics.wait(this.control, CONTROL.done, done);
    }
    this.throwIfFailed();
    const from = Math.min(n, (chunks - Atomics.load(this.control, CONTROL.workerChunks)) * CHUNK);
    U.set(this.part.subarray(from * k), from * k);
    this.workerRows += n - from;
  }

  private throwIfFailed(): void {
    if (Atomics.load(this.control, CONTROL.state) !== STATE.failed) return;
    const posted = receiveMessageOnPort(this.port);
    const why = posted ? String(posted.message) : this.error ?? 'no message';
    throw new LegibleError(`NMF: the worker sweeping U's rows failed (src/nmf-sweep.ts): ${why}`);
  }

  /** Stops the worker (idempotent; also while it boots or after it failed). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    Atomics.store(this.control, CONTROL.command, COMMAND.stop);
    Atomics.store(this.control, CONTROL.seq, ++this.seq);
    Atomics.notify(this.control, CONTROL.seq);
    this.port.close();
    await this.worker.terminate();
  }
}

const EMPTY = new Float32Array(0);
/**
 * Rows per chunk: each thread claims chunks (an Atomics.add on one counter; the main thread's from
 * the front, the worker's from the back) until all are claimed, so a thread that runs slower — its
 * core busy with other work — sweeps fewer rows instead of holding the other up.
 */
const CHUNK = 256;

/**
 * The worker's loop (run in the worker from this source, so it may use only its arguments and
 * globals): says it is ready, then sweeps U's rows [from, n) on each command until told to stop,
 * reporting every outcome (done, or failed with a message) through the control array.
 */
function serve(shared: SweepShared, sweepRows: typeof halsRows, codes: typeof CODES): void {
  const { chunk, n, k, sweeps, stop, port } = shared;
  const control = new Int32Array(shared.control);
  const U = new Float32Array(shared.U);
  const grad = new Float32Array(shared.grad);
  const WWt = new Float32Array(shared.WWt);
  const none = new Float32Array(0);
  const { CONTROL: slot, STATE: state, COMMAND: command } = codes;
  Atomics.store(control, slot.state, state.ready);
  Atomics.notify(control, slot.state);
  let seen = Atomics.load(control, slot.seq);
  for (;;) {
    Atomics.wait(control, slot.seq, seen);
    seen = Atomics.load(control, slot.seq);
    if (Atomics.load(control, slot.command) === command.stop) break;
    try {
      // Chunks from the back (AWᵀ is not read when the gradient is given).
      const chunks = Math.ceil(n / chunk);
      for (let mine = 0; Atomics.add(control, slot.taken, 1) < chunks; mine++) {
        const r0 = (chunks - 1 - mine) * chunk;
        const r1 = Math.min(n, r0 + chunk);
        sweepRows(U.subarray(r0 * k, r1 * k), none, WWt, r1 - r0, k, sweeps, stop, grad.subarray(r0 * k, r1 * k));
        Atomics.store(control, slot.workerChunks, mine + 1);
      }
    } catch (e) {
      port.postMessage(String((e as Error)?.stack ?? e));
      Atomics.store(control, slot.state, state.failed);
    }
    Atomics.store(control, slot.done, seen);
    Atomics.notify(control, slot.done);
  }
  port.close();
}
