// The outbox: every answer and every client event is written to the store (IndexedDB, see
// store.ts) before it is sent, then sent — answers one at a time in seq order with the server's
// idempotent PUT, so the server's answers are always a prefix of the task list and a reload can
// resume right after the last answer; events in batches once no answer is waiting. Failed sends
// are retried with backoff and jitter while they are retryable (network, 5xx, 429); 409 means the
// server already holds that seq (settled); 401/403 asks for a fresh token once; other 4xx are
// final and reported. What was acknowledged is removed from the store.
import { backoffMs, HttpError, isRetryable, type BackoffOptions, type ClientEvent, type TrialAck, type TrialAnswer } from './api.ts';
import type { OutboxItem, OutboxStore } from './store.ts';

export type { KeyValueStore } from './store.ts';

export interface OutboxState {
  /** Answers and events not yet acknowledged. */
  pending: number;
  /** The last attempt failed and a retry is scheduled. */
  failing: boolean;
}

export interface SendOptions {
  keepalive?: boolean;
}

export interface OutboxOptions extends BackoffOptions {
  store: OutboxStore;
  sendTrial: (seq: number, answer: TrialAnswer, opts?: SendOptions) => Promise<TrialAck>;
  sendEvents: (events: ClientEvent[], opts?: SendOptions) => Promise<unknown>;
  onState?: (state: OutboxState) => void;
  /** A seq the server refused for good (after logging it): the session cannot be completed as is. */
  onFatal?: (seq: number, err: unknown) => void;
  /**
   * A seq the server already holds with a different answer (409 that is not "practice over"):
   * something else — another tab, window or device — answered it first. The server's answer stays.
   */
  onConflict?: (seq: number, err: HttpError) => void;
  /** Called on 401/403; resolves when a new token is in place (or rejects). */
  reauthenticate?: () => Promise<void>;
  sleep?: (ms: number, wake: Promise<void>) => Promise<void>;
  /** Where conflicts and refusals are logged (default console). */
  log?: Pick<Console, 'warn' | 'error'>;
}

/** Most events in one request (the contract's limit). */
export const EVENT_BATCH = 100;
/** Most answers fired with keepalive when the page goes away (keepalive bodies share 64 kB). */
const KEEPALIVE_TRIALS = 20;

interface Waiter {
  resolve: (ack: TrialAck) => void;
  reject: (err: unknown) => void;
}

interface Pending<T> {
  value: T;
  /** Settles once the store has it (or could not take it: then it is sent from memory). */
  stored: Promise<void>;
}

const wakeableSleep = (ms: number, wake: Promise<void>) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    void wake.then(() => {
      clearTimeout(t);
      resolve();
    });
  });

function randomId(): string {
  const bytes = new Uint8Array(8);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

export class Outbox {
  private readonly trials = new Map<number, Pending<TrialAnswer>>();
  private readonly events = new Map<string, Pending<ClientEvent>>();
  private readonly acks = new Map<number, TrialAck>();
  private readonly failed = new Map<number, unknown>();
  private readonly waiters = new Map<number, Waiter[]>();
  private drainWaiters: (() => void)[] = [];
  private running = false;
  private failing = false;
  private wake: () => void = () => {};
  private readonly log: Pick<Console, 'warn' | 'error'>;

  private constructor(private readonly opts: OutboxOptions) {
    this.log = opts.log ?? console;
  }

  /** An outbox over `store`, holding whatever an earlier page left there. Call start() to send it. */
  static async open(opts: OutboxOptions): Promise<Outbox> {
    const outbox = new Outbox(opts);
    let items: OutboxItem[] = [];
    try {
      items = await opts.store.load();
    } catch (err) {
      outbox.log.error('outbox: could not read what earlier pages left', err);
    }
    for (const item of items) {
      if (item.kind === 'trial') outbox.trials.set(item.seq, { value: item.answer, stored: Promise.resolve() });
      else outbox.events.set(item.id, { value: item.event, stored: Promise.resolve() });
    }
    return outbox;
  }

  get storeKind(): OutboxStore['kind'] {
    return this.opts.store.kind;
  }

  /** Seqs stored but not yet acknowledged (from this page or an earlier one), ascending. */
  pendingSeqs(): number[] {
    return [...this.trials.keys()].sort((a, b) => a - b);
  }

  /** Whether this outbox holds, has sent or was refused an answer for `seq` (so ack(seq) settles). */
  has(seq: number): boolean {
    return this.trials.has(seq) || this.acks.has(seq) || this.failed.has(seq);
  }

  /** Answers and events not yet acknowledged. */
  get pending(): number {
    return this.trials.size + this.events.size;
  }

  /** Seqs the server refused for good. */
  failedSeqs(): number[] {
    return [...this.failed.keys()].sort((a, b) => a - b);
  }

  /** Stores the answer, then sends it; resolves with the server's acknowledgement. */
  submit(seq: number, answer: TrialAnswer): Promise<TrialAck> {
    const acked = this.acks.get(seq);
    if (acked) return Promise.resolve(acked);
    const promise = this.ack(seq);
    if (!this.trials.has(seq)) {
      // Answers are never changed: a second submit of a pending seq keeps the first.
      this.trials.set(seq, { value: answer, stored: this.persist({ kind: 'trial', seq, answer }) });
      this.notify();
    }
    this.start();
    return promise;
  }

  /** Stores a client event, then sends it with the next batch. */
  event(event: ClientEvent): void {
    const id = randomId();
    this.events.set(id, { value: event, stored: this.persist({ kind: 'event', id, event }) });
    this.start();
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
    if (!this.running && this.pending > 0) void this.pump();
  }

  /** Retry now instead of waiting out the backoff (e.g. when the browser comes back online). */
  nudge(): void {
    this.wake();
  }

  /** Resolves once nothing is pending (answers refused for good are dropped, see failedSeqs). */
  drain(): Promise<void> {
    if (this.pending === 0) return Promise.resolve();
    this.start();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  /** Best effort while the page goes away: fire pending answers (in seq order) and events with keepalive. */
  flushKeepalive(): void {
    for (const seq of this.pendingSeqs().slice(0, KEEPALIVE_TRIALS)) {
      this.opts.sendTrial(seq, this.trials.get(seq)!.value, { keepalive: true }).catch(() => {});
    }
    const events = [...this.events.values()].slice(0, EVENT_BATCH).map((p) => p.value);
    if (events.length) this.opts.sendEvents(events, { keepalive: true }).catch(() => {});
  }

  private persist(item: OutboxItem): Promise<void> {
    return this.opts.store.put(item).catch((err: unknown) => {
      // Storage full or gone: the item stays in memory and is sent from there.
      this.log.warn('outbox: could not store', item.kind === 'trial' ? `answer ${item.seq}` : 'an event', err);
    });
  }

  private forget(items: OutboxItem[]): void {
    this.opts.store.remove(items).catch((err: unknown) => this.log.warn('outbox: could not remove delivered items', err));
  }

  private notify(): void {
    this.opts.onState?.({ pending: this.pending, failing: this.failing });
  }

  private settle(seq: number, ack: TrialAck | null, err?: unknown): void {
    const answer = this.trials.get(seq)?.value;
    this.trials.delete(seq);
    if (answer) this.forget([{ kind: 'trial', seq, answer }]);
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

  private settleEvents(ids: string[]): void {
    const items: OutboxItem[] = [];
    for (const id of ids) {
      const p = this.events.get(id);
      if (p) items.push({ kind: 'event', id, event: p.value });
      this.events.delete(id);
    }
    this.forget(items);
  }

  /** Sends one answer or one batch of events; returns the error of a failed attempt. */
  private async sendNext(): Promise<{ err: unknown; settle: () => void } | null> {
    const seq = this.pendingSeqs()[0];
    if (seq !== undefined) {
      const pending = this.trials.get(seq)!;
      await pending.stored;
      try {
        const ack = await this.opts.sendTrial(seq, pending.value);
        this.settle(seq, ack ?? { seq, recorded_at: '' });
        return null;
      } catch (err) {
        return {
          err,
          settle: () => {
            const status = err instanceof HttpError ? err.status : 0;
            if (status === 409) {
              // The server already holds an answer for this seq, or no longer needs it (practice over).
              this.log.warn(`outbox: seq ${seq} conflicts with what the server holds; keeping the server's`, err);
              this.settle(seq, { seq, recorded_at: '' });
              if ((err as HttpError).body?.detail?.practice_over !== true) this.opts.onConflict?.(seq, err as HttpError);
            } else {
              this.log.error(`outbox: seq ${seq} refused`, err);
              this.settle(seq, null, err);
              this.opts.onFatal?.(seq, err);
            }
          },
        };
      }
    }
    // Wait for the first event to be stored; events logged meanwhile go in the same batch.
    await this.events.values().next().value?.stored;
    const batch = [...this.events.entries()].slice(0, EVENT_BATCH);
    await Promise.all(batch.map(([, p]) => p.stored));
    try {
      await this.opts.sendEvents(batch.map(([, p]) => p.value));
      this.settleEvents(batch.map(([id]) => id));
      return null;
    } catch (err) {
      return {
        err,
        settle: () => {
          // 409: the session has stored the most events allowed; 4xx: malformed. Either way, drop.
          this.log.warn('outbox: events refused', err);
          this.settleEvents(batch.map(([id]) => id));
        },
      };
    }
  }

  private async pump(): Promise<void> {
    this.running = true;
    const sleep = this.opts.sleep ?? wakeableSleep;
    let attempt = 0;
    let reauthed = false;
    while (this.pending > 0) {
      const failure = await this.sendNext();
      if (!failure) {
        attempt = 0;
        reauthed = false;
        this.failing = false;
        this.notify();
        continue;
      }
      const { err } = failure;
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
      failure.settle();
      this.failing = false;
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
