// The answer outbox (thin version; the IndexedDB outbox of the client issue replaces the storage).
// Every answer is stored (memory + localStorage) before it is sent, then sent with the server's
// idempotent PUT, one at a time in seq order, so the server's answers are always a prefix of the
// task list and a reload can resume right after the last answer. Failed sends are retried with
// backoff and jitter while they are retryable (network, 5xx, 429); 409 means the server already
// holds that seq (settled); 401/403 asks for a fresh token once; other 4xx are final and reported.
import { backoffMs, HttpError, isRetryable, type BackoffOptions, type TrialAck, type TrialAnswer } from './api.ts';

/** The part of the Web Storage API the outbox uses (localStorage, or a stand-in in tests). */
export interface KeyValueStore {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export interface OutboxState {
  pending: number;
  /** The last attempt failed and a retry is scheduled. */
  failing: boolean;
}

export interface OutboxOptions extends BackoffOptions {
  send: (seq: number, answer: TrialAnswer, opts?: { keepalive?: boolean }) => Promise<TrialAck>;
  storage: KeyValueStore;
  /** Storage key, one per session. */
  key: string;
  onState?: (state: OutboxState) => void;
  /** A seq the server refused for good (after logging it): the session cannot be completed as is. */
  onFatal?: (seq: number, err: unknown) => void;
  /** Called on 401/403; resolves when a new token is in place (or rejects). */
  reauthenticate?: () => Promise<void>;
  sleep?: (ms: number, wake: Promise<void>) => Promise<void>;
  /** Where conflicts and refusals are logged (default console). */
  log?: Pick<Console, 'warn' | 'error'>;
}

interface Waiter {
  resolve: (ack: TrialAck) => void;
  reject: (err: unknown) => void;
}

const wakeableSleep = (ms: number, wake: Promise<void>) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    void wake.then(() => {
      clearTimeout(t);
      resolve();
    });
  });

export class Outbox {
  private readonly queue = new Map<number, TrialAnswer>();
  private readonly acks = new Map<number, TrialAck>();
  private readonly failed = new Map<number, unknown>();
  private readonly waiters = new Map<number, Waiter[]>();
  private drainWaiters: (() => void)[] = [];
  private running = false;
  private failing = false;
  private wake: () => void = () => {};

  constructor(private readonly opts: OutboxOptions) {
    for (const [seq, answer] of Object.entries(readJson(opts.storage, opts.key))) {
      if (/^\d+$/.test(seq)) this.queue.set(Number(seq), answer as TrialAnswer);
    }
  }

  /** Seqs stored but not yet acknowledged (from this page or an earlier one), ascending. */
  pendingSeqs(): number[] {
    return [...this.queue.keys()].sort((a, b) => a - b);
  }

  get pending(): number {
    return this.queue.size;
  }

  /** Seqs the server refused for good. */
  failedSeqs(): number[] {
    return [...this.failed.keys()].sort((a, b) => a - b);
  }

  /** Stores the answer and sends it; resolves with the server's acknowledgement. */
  submit(seq: number, answer: TrialAnswer): Promise<TrialAck> {
    const acked = this.acks.get(seq);
    if (acked) return Promise.resolve(acked);
    const promise = this.ack(seq);
    this.queue.set(seq, answer);
    this.persist();
    this.start();
    return promise;
  }

  /** The acknowledgement of `seq`, whenever it comes. */
  ack(seq: number): Promise<TrialAck> {
    const acked = this.acks.get(seq);
    if (acked) return Promise.resolve(acked);
    if (this.failed.has(seq)) return Promise.reject(this.failed.get(seq));
    return new Promise((resolve, reject) => {
      const list = this.waiters.get(seq) ?? [];
      list.push({ resolve, reject });
      this.waiters.set(seq, list);
    });
  }

  /** Sends whatever is stored (e.g. answers left by an earlier page). */
  start(): void {
    if (!this.running && this.queue.size > 0) void this.pump();
  }

  /** Retry now instead of waiting out the backoff (e.g. when the browser comes back online). */
  nudge(): void {
    this.wake();
  }

  /** Resolves once nothing is pending (answers refused for good are dropped, see failedSeqs). */
  drain(): Promise<void> {
    if (this.queue.size === 0) return Promise.resolve();
    this.start();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  /** Best effort while the page goes away: fire every pending answer with keepalive. */
  flushKeepalive(): void {
    for (const seq of this.pendingSeqs()) {
      this.opts.send(seq, this.queue.get(seq)!, { keepalive: true }).catch(() => {});
    }
  }

  private persist(): void {
    const obj: Record<string, TrialAnswer> = {};
    for (const [seq, answer] of this.queue) obj[seq] = answer;
    try {
      if (this.queue.size === 0) this.opts.storage.removeItem(this.opts.key);
      else this.opts.storage.setItem(this.opts.key, JSON.stringify(obj));
    } catch {
      // Storage full or disabled: the answers stay in memory.
    }
  }

  private notify(): void {
    this.opts.onState?.({ pending: this.queue.size, failing: this.failing });
  }

  private settle(seq: number, ack: TrialAck | null, err?: unknown): void {
    this.queue.delete(seq);
    this.persist();
    const list = this.waiters.get(seq) ?? [];
    this.waiters.delete(seq);
    if (ack) {
      this.acks.set(seq, ack);
      for (const w of list) w.resolve(ack);
    } else {
      this.failed.set(seq, err);
      for (const w of list) w.reject(err);
    }
  }

  private async pump(): Promise<void> {
    this.running = true;
    const sleep = this.opts.sleep ?? wakeableSleep;
    let attempt = 0;
    let reauthed = false;
    while (this.queue.size > 0) {
      const seq = this.pendingSeqs()[0];
      const answer = this.queue.get(seq)!;
      try {
        const ack = await this.opts.send(seq, answer);
        this.settle(seq, ack ?? { seq, recorded_at: '' });
        attempt = 0;
        reauthed = false;
        this.failing = false;
      } catch (err) {
        const status = err instanceof HttpError ? err.status : 0;
        if (isRetryable(err)) {
          this.failing = true;
          this.notify();
          const wake = new Promise<void>((r) => (this.wake = r));
          const delay = Math.max(backoffMs(attempt++, this.opts), err instanceof HttpError ? (err.retryAfterMs ?? 0) : 0);
          await sleep(delay, wake);
          continue;
        }
        if ((status === 401 || status === 403) && this.opts.reauthenticate && !reauthed) {
          reauthed = true;
          try {
            await this.opts.reauthenticate();
            continue;
          } catch (reauthErr) {
            if (isRetryable(reauthErr)) {
              reauthed = false;
              this.failing = true;
              this.notify();
              await sleep(backoffMs(attempt++, this.opts), new Promise<void>((r) => (this.wake = r)));
              continue;
            }
          }
        }
        if (status === 409) {
          // The server already holds an answer for this seq (or the session is closed).
          (this.opts.log ?? console).warn(`outbox: seq ${seq} conflicts with what the server holds; keeping the server's`, err);
          this.settle(seq, { seq, recorded_at: '' });
        } else {
          (this.opts.log ?? console).error(`outbox: seq ${seq} refused`, err);
          this.settle(seq, null, err);
          this.opts.onFatal?.(seq, err);
        }
        this.failing = false;
      }
      this.notify();
    }
    this.running = false;
    this.failing = false;
    this.notify();
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const w of waiters) w();
  }
}

function readJson(storage: KeyValueStore, key: string): Record<string, unknown> {
  try {
    const raw = storage.getItem(key);
    const parsed = raw ? JSON.parse(raw) : {};
    return parsed && typeof parsed === 'object' && !Array.isArray(parsed) ? parsed : {};
  } catch {
    return {};
  }
}

/** localStorage when usable, else an in-memory store (private modes, disabled storage). */
export function browserStore(): KeyValueStore {
  try {
    const s = globalThis.localStorage;
    const probe = '__legible_probe__';
    s.setItem(probe, '1');
    s.removeItem(probe);
    return s;
  } catch {
    const m = new Map<string, string>();
    return { getItem: (k) => m.get(k) ?? null, setItem: (k, v) => void m.set(k, v), removeItem: (k) => void m.delete(k) };
  }
}
