// Client events (the contract's ClientEvent): what happens outside the answers — leaving and
// re-entering fullscreen, the window losing focus, the connection dropping, images that would not
// load, the browser check, giving up on saving. Events logged before a session exists wait in
// memory; from then on they go through the outbox (stored, then sent in batches).
import type { ClientEvent } from './api.ts';
import type { Outbox } from './outbox.ts';

export type EventType = ClientEvent['type'];
export type EventDetail = NonNullable<ClientEvent['detail']>;

/** Detail values are strings of at most 500 characters, numbers, booleans or null. */
export function cleanDetail(detail: Record<string, unknown>): EventDetail {
  const out: EventDetail = {};
  for (const [k, v] of Object.entries(detail)) {
    if (v === undefined) continue;
    if (v === null || typeof v === 'boolean') out[k] = v;
    else if (typeof v === 'number') out[k] = Number.isFinite(v) ? v : null;
    else out[k] = String(v).slice(0, 500);
  }
  return out;
}

export class EventLog {
  private buffer: ClientEvent[] = [];
  private outbox: Outbox | null = null;
  /** The seq of the trial on screen (or last shown), recorded with each event. */
  seq: number | null = null;
  /** Every event logged on this page, for tests and debugging (window.__legibleEvents). */
  readonly seen: ClientEvent[] = [];

  /** Logs an event at `seq` (default: the trial on screen). */
  log(type: EventType, detail?: Record<string, unknown>, seq: number | null = this.seq): void {
    const event: ClientEvent = { type, at: Date.now() };
    if (seq !== null) event.seq = seq;
    if (detail) event.detail = cleanDetail(detail);
    this.seen.push(event);
    if (this.outbox) this.outbox.event(event);
    else this.buffer.push(event);
  }

  /** From now on events go through `outbox`; what was logged before goes first. */
  attach(outbox: Outbox): void {
    this.outbox = outbox;
    for (const e of this.buffer) outbox.event(e);
    this.buffer = [];
  }
}

/** Logs focus, connection and fullscreen changes. Returns a function that stops it. */
export function watchWindow(log: EventLog, onConnection: (online: boolean) => void): () => void {
  const on = (target: EventTarget, name: string, fn: () => void) => {
    target.addEventListener(name, fn);
    return () => target.removeEventListener(name, fn);
  };
  const stops = [
    on(window, 'blur', () => log.log('blur')),
    on(window, 'focus', () => log.log('focus')),
    on(window, 'offline', () => {
      log.log('offline');
      onConnection(false);
    }),
    on(window, 'online', () => {
      log.log('online');
      onConnection(true);
    }),
    on(document, 'fullscreenchange', () => {
      const inside = document.fullscreenElement !== null;
      log.log(inside ? 'fullscreen_enter' : 'fullscreen_exit', { width: window.innerWidth, height: window.innerHeight });
    }),
  ];
  return () => stops.forEach((s) => s());
}
