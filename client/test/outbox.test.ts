// The saving path without a browser: the API client's error mapping and retry policy, the outbox
// (stored before sent, order, persistence, backoff, which failures are retried, events), device
// detection, and who the participant is. (The IndexedDB store is tested in Chromium.)
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ClientEvent, TrialAnswer } from '@legible/studies/contracts';
import { Api, backoffMs, HttpError, isRetryable, NetworkError, retrying, type TrialAck } from '../src/api.ts';
import { detectDevice, type DeviceInput } from '../src/device.ts';
import { cleanDetail, EventLog } from '../src/events.ts';
import { identify } from '../src/identity.ts';
import { Outbox } from '../src/outbox.ts';
import { LocalOutboxStore, localKey, MemoryOutboxStore, type KeyValueStore, type OutboxItem } from '../src/store.ts';

class MemoryStore implements KeyValueStore {
  readonly map = new Map<string, string>();
  getItem(k: string) {
    return this.map.get(k) ?? null;
  }
  setItem(k: string, v: string) {
    this.map.set(k, v);
  }
  removeItem(k: string) {
    this.map.delete(k);
  }
}

const answer = (query: 0 | 1 = 0): TrialAnswer => ({ query, confidence: 2, rt_ms: 812.5, query_order: [1, 0], input: 'key' });
const ack = (seq: number, extra: Partial<TrialAck> = {}): TrialAck => ({ seq, recorded_at: '2026-01-01T00:00:00.000Z', ...extra });
const noSleep = async () => {};

describe('api client', () => {
  const reply = (status: number, body: unknown, headers: Record<string, string> = {}) =>
    Promise.resolve(new Response(body === undefined ? null : JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json', ...headers } }));

  test('sends JSON with the bearer token and parses the reply', async () => {
    const calls: { url: string; init: RequestInit }[] = [];
    const api = new Api({ base: 'http://x', fetch: (url, init) => (calls.push({ url: String(url), init: init! }), reply(200, ack(3))) });
    assert.deepEqual(await api.putTrial('s/1', 'tok', 3, answer()), ack(3));
    assert.equal(calls[0].url, 'http://x/api/sessions/s%2F1/trials/3');
    assert.equal(calls[0].init.method, 'PUT');
    assert.equal((calls[0].init.headers as Record<string, string>).Authorization, 'Bearer tok');
    assert.deepEqual(JSON.parse(String(calls[0].init.body)), answer());
  });

  test('maps statuses and failures onto HttpError / NetworkError', async () => {
    let api = new Api({ fetch: () => reply(409, { error: 'already completed', code: 'C1', redirect: null }) });
    const err = await api.createSession({ study: 'demo', participant: 'p' }).catch((e) => e);
    assert.ok(err instanceof HttpError);
    assert.equal(err.status, 409);
    assert.equal(err.body.code, 'C1');
    assert.equal(isRetryable(err), false);

    api = new Api({ fetch: () => reply(429, { error: 'slow down' }, { 'Retry-After': '3' }) });
    const limited = await api.study('demo').catch((e) => e);
    assert.equal(limited.retryAfterMs, 3000);
    assert.equal(isRetryable(limited), true);

    api = new Api({ fetch: () => Promise.reject(new TypeError('Failed to fetch')) });
    assert.ok((await api.study('demo').catch((e) => e)) instanceof NetworkError);

    api = new Api({ timeoutMs: 30, fetch: (_u, init) => new Promise((_r, reject) => init!.signal!.addEventListener('abort', () => reject(new Error('aborted')))) });
    const timedOut = await api.study('demo').catch((e) => e);
    assert.ok(timedOut instanceof NetworkError && /timed out/.test(timedOut.message));
  });

  test('retry policy: network, 5xx and 429 again; other 4xx never', async () => {
    assert.equal(isRetryable(new NetworkError('x')), true);
    assert.equal(isRetryable(new HttpError(500, null)), true);
    assert.equal(isRetryable(new HttpError(503, null)), true);
    assert.equal(isRetryable(new HttpError(429, null)), true);
    for (const s of [400, 401, 403, 404, 409, 413, 422]) assert.equal(isRetryable(new HttpError(s, null)), false, String(s));

    let n = 0;
    const delays: number[] = [];
    const value = await retrying(
      async () => {
        if (++n < 4) throw n === 2 ? new HttpError(429, null, 2500) : new NetworkError('down');
        return 'ok';
      },
      { sleep: async (ms) => void delays.push(ms), random: () => 0.5 },
    );
    assert.equal(value, 'ok');
    assert.equal(n, 4);
    assert.deepEqual(delays, [375, 2500, 1500], 'backoff with jitter, at least Retry-After');

    n = 0;
    await assert.rejects(
      retrying(async () => {
        n++;
        throw new HttpError(400, { error: 'bad' });
      }),
      HttpError,
    );
    assert.equal(n, 1, '4xx is not retried');
  });

  test('backoff grows, is capped and jittered within [step/2, step]', () => {
    for (let attempt = 0; attempt < 12; attempt++) {
      const step = Math.min(20_000, 500 * 2 ** attempt);
      assert.equal(backoffMs(attempt, { random: () => 0 }), step / 2);
      assert.equal(backoffMs(attempt, { random: () => 0.999999 }) <= step, true);
    }
    assert.equal(backoffMs(50, { random: () => 1 }), 20_000);
  });
});

/** A store that records the order of writes, so tests can check "stored before sent". */
class RecordingStore extends LocalOutboxStore {
  constructor(
    readonly kv: MemoryStore,
    readonly log: string[] = [],
    private readonly delayMs = 0,
  ) {
    super(kv, 's1');
  }
  override async put(item: OutboxItem) {
    if (this.delayMs) await new Promise((r) => setTimeout(r, this.delayMs));
    await super.put(item);
    this.log.push(`stored ${item.kind === 'trial' ? item.seq : item.event.type}`);
  }
}

const trialSender = (sent: number[], extra: (seq: number) => Partial<TrialAck> = () => ({})) => async (seq: number) => (sent.push(seq), ack(seq, extra(seq)));
const noEvents = async () => {};

describe('outbox', () => {
  test('stores each answer before sending it; sends in seq order, resolves each ack, forgets what was acknowledged', async () => {
    const kv = new MemoryStore();
    const log: string[] = [];
    const store = new RecordingStore(kv, log, 5);
    const outbox = await Outbox.open({
      store,
      sleep: noSleep,
      sendEvents: noEvents,
      sendTrial: async (seq) => (log.push(`sent ${seq}`), ack(seq, seq === 0 ? { feedback: { correct: true } } : {})),
    });
    const acks = await Promise.all([outbox.submit(0, answer()), outbox.submit(1, answer()), outbox.submit(2, answer(1))]);
    for (const seq of [0, 1, 2]) assert.ok(log.indexOf(`stored ${seq}`) < log.indexOf(`sent ${seq}`), `answer ${seq} stored before it was sent: ${log}`);
    assert.deepEqual(acks[0].feedback, { correct: true });
    assert.deepEqual((await outbox.ack(1)).seq, 1);
    await outbox.drain();
    assert.equal(outbox.pending, 0);
    await new Promise((r) => setTimeout(r, 10));
    assert.equal(kv.getItem(localKey('s1')), null, 'delivered items leave the store');
    const sentBefore = log.filter((l) => l.startsWith('sent')).length;
    assert.deepEqual(await outbox.submit(0, answer()), acks[0], 'a second submit of an acknowledged seq is not sent again');
    assert.equal(log.filter((l) => l.startsWith('sent')).length, sentBefore);
  });

  test('keeps answers and events in the store while the server is unreachable, with backoff; a new page sends them', async () => {
    const kv = new MemoryStore();
    const states: boolean[] = [];
    const delays: number[] = [];
    let up = false;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const first = await Outbox.open({
      store: new LocalOutboxStore(kv, 's1'),
      random: () => 0,
      onState: (s) => states.push(s.failing),
      sleep: async (ms) => {
        delays.push(ms);
        if (delays.length >= 3) await gate; // the page "closes" while still offline
      },
      sendEvents: async () => {
        if (!up) throw new NetworkError('offline');
      },
      sendTrial: async (seq) => {
        if (!up) throw new NetworkError('offline');
        return ack(seq);
      },
    });
    void first.submit(0, answer(0));
    void first.submit(1, answer(1));
    first.event({ type: 'offline', at: 1, seq: 1 });
    await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(delays, [250, 500, 1000], 'exponential backoff');
    assert.equal(states.at(-1), true, 'reported as failing (banner on)');
    const stored = JSON.parse(kv.getItem(localKey('s1'))!);
    assert.deepEqual(Object.keys(stored).sort().slice(-2), ['t:000000', 't:000001']);
    assert.equal(Object.keys(stored).length, 3, 'two answers and one event');

    // A reload: a new outbox over the same storage finds both answers and the event and sends them, answers first.
    up = true;
    const sent: string[] = [];
    const second = await Outbox.open({
      store: new LocalOutboxStore(kv, 's1'),
      sleep: noSleep,
      sendTrial: async (seq) => (sent.push(`trial ${seq}`), ack(seq)),
      sendEvents: async (events) => void sent.push(`events ${events.map((e) => e.type).join(',')}`),
    });
    assert.deepEqual(second.pendingSeqs(), [0, 1]);
    assert.equal(second.pending, 3);
    await second.drain();
    assert.deepEqual(sent, ['trial 0', 'trial 1', 'events offline']);
    await new Promise((r) => setTimeout(r, 10));
    assert.equal(kv.getItem(localKey('s1')), null);
    release();
  });

  test('reads the first localStorage format ({seq: answer}) left by an older page', async () => {
    const kv = new MemoryStore();
    kv.setItem(localKey('s1'), JSON.stringify({ 4: answer(1), 3: answer(0) }));
    const sent: number[] = [];
    const outbox = await Outbox.open({ store: new LocalOutboxStore(kv, 's1'), sleep: noSleep, sendEvents: noEvents, sendTrial: trialSender(sent) });
    assert.deepEqual(outbox.pendingSeqs(), [3, 4]);
    await outbox.drain();
    assert.deepEqual(sent, [3, 4]);
  });

  test('events go in batches of at most 100, after the answers; a refused batch is dropped, not retried forever', async () => {
    const batches: number[] = [];
    let refuse = true;
    const outbox = await Outbox.open({
      store: new MemoryOutboxStore(),
      sleep: noSleep,
      log: { warn: () => {}, error: () => {} },
      sendTrial: async (seq) => ack(seq),
      sendEvents: async (events) => {
        batches.push(events.length);
        if (refuse) {
          refuse = false;
          throw new HttpError(409, { error: 'too many events' });
        }
      },
    });
    for (let i = 0; i < 250; i++) outbox.event({ type: 'blur', at: i });
    await outbox.drain();
    assert.deepEqual(batches, [100, 100, 50], 'the refused first batch is dropped');
    assert.equal(outbox.pending, 0);
  });

  test('an answer that could not be stored is still sent (from memory)', async () => {
    const store = new MemoryOutboxStore();
    store.put = async () => {
      throw new Error('QuotaExceededError');
    };
    const sent: number[] = [];
    const outbox = await Outbox.open({ store, sleep: noSleep, sendEvents: noEvents, sendTrial: trialSender(sent), log: { warn: () => {}, error: () => {} } });
    await outbox.submit(0, answer());
    assert.deepEqual(sent, [0]);
  });

  test('retries 5xx and 429, settles 409, re-authenticates once on 401, reports other 4xx', async () => {
    const script: Record<number, (string | number)[]> = { 0: [503, 429, 'ok'], 1: [409], 2: [401, 'ok'], 3: [400], 4: ['ok'] };
    const sent: string[] = [];
    const fatal: number[] = [];
    let token = 'old';
    const outbox = await Outbox.open({
      store: new MemoryOutboxStore(),
      sleep: noSleep,
      onFatal: (seq) => fatal.push(seq),
      log: { warn: () => {}, error: () => {} },
      reauthenticate: async () => void (token = 'new'),
      sendEvents: noEvents,
      sendTrial: async (seq) => {
        const next = script[seq].shift()!;
        sent.push(`${seq}:${next}:${token}`);
        if (next === 'ok') return ack(seq);
        throw new HttpError(next as number, { error: 'x' });
      },
    });
    const results = await Promise.allSettled([0, 1, 2, 3, 4].map((seq) => outbox.submit(seq, answer())));
    assert.deepEqual(sent, ['0:503:old', '0:429:old', '0:ok:old', '1:409:old', '2:401:old', '2:ok:new', '3:400:new', '4:ok:new']);
    assert.deepEqual(
      results.map((r) => r.status),
      ['fulfilled', 'fulfilled', 'fulfilled', 'rejected', 'fulfilled'],
    );
    assert.deepEqual(fatal, [3]);
    assert.deepEqual(outbox.failedSeqs(), [3]);
    assert.equal(outbox.pending, 0);
  });

  test('nudge() cuts a backoff short (the browser came back online)', async () => {
    let up = false;
    const outbox = await Outbox.open({
      store: new MemoryOutboxStore(),
      baseMs: 60_000,
      sendEvents: noEvents,
      sendTrial: async (seq) => (up ? ack(seq) : Promise.reject(new NetworkError('offline'))),
    });
    const done = outbox.submit(0, answer());
    await new Promise((r) => setTimeout(r, 10));
    up = true;
    outbox.nudge();
    const t = Date.now();
    await done;
    assert.ok(Date.now() - t < 1000);
  });

  test('flushKeepalive fires pending answers in seq order and the events, with keepalive', async () => {
    const fired: string[] = [];
    const outbox = await Outbox.open({
      store: new MemoryOutboxStore(),
      sleep: () => new Promise(() => {}), // offline for good
      sendTrial: async (seq, _a, o) => {
        fired.push(`${seq}${o?.keepalive ? ' keepalive' : ''}`);
        throw new NetworkError('offline');
      },
      sendEvents: async (events, o) => void fired.push(`events ${events.length}${o?.keepalive ? ' keepalive' : ''}`),
    });
    void outbox.submit(5, answer()).catch(() => {});
    void outbox.submit(6, answer()).catch(() => {});
    outbox.event({ type: 'blur', at: 1 });
    await new Promise((r) => setTimeout(r, 10));
    fired.length = 0;
    outbox.flushKeepalive();
    assert.deepEqual(fired, ['5 keepalive', '6 keepalive', 'events 1 keepalive']);
  });
});

describe('device', () => {
  const desktop = { maxTouchPoints: 0, anyFinePointer: true, platform: 'Win32' };
  test('phones and tablets are mobile, desktops and touch laptops are not', () => {
    const cases: [string, Partial<DeviceInput>, boolean][] = [
      ['Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36', {}, false],
      ['Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15', { platform: 'MacIntel' }, false],
      ['Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36', {}, false],
      ['Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/126.0', { maxTouchPoints: 10, anyFinePointer: true }, false],
      ['Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Version/17.5 Mobile/15E148 Safari/604.1', { maxTouchPoints: 5, anyFinePointer: false }, true],
      ['Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/126.0 Mobile Safari/537.36', { maxTouchPoints: 5, anyFinePointer: false }, true],
      ['Mozilla/5.0 (Linux; Android 8.1.0; SM-T837A) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36', { maxTouchPoints: 5, anyFinePointer: false }, true],
      // iPadOS asks for desktop sites with a Mac user agent.
      ['Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15', { platform: 'MacIntel', maxTouchPoints: 5, anyFinePointer: false }, true],
      ['Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0', { maxTouchPoints: 2, anyFinePointer: false }, true],
      ['Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/126.0', { uaMobile: true }, true],
    ];
    for (const [userAgent, extra, mobile] of cases) {
      const d = detectDevice({ ...desktop, userAgent, ...extra });
      assert.equal(d.mobile, mobile, `${userAgent} ${JSON.stringify(extra)}: ${d.reason}`);
      assert.equal(d.reason === '', !mobile);
    }
    assert.equal(detectDevice({ ...desktop, userAgent: cases[1][0] }).browser, 'safari 17');
    assert.equal(detectDevice({ ...desktop, userAgent: cases[0][0] }).os, 'windows');
  });
});

describe('events', () => {
  test('detail values are cut to what the contract takes', () => {
    assert.deepEqual(cleanDetail({ a: 'x'.repeat(600), b: 3, c: Infinity, d: true, e: null, f: undefined, g: [1, 2] }), {
      a: 'x'.repeat(500),
      b: 3,
      c: null,
      d: true,
      e: null,
      g: '1,2',
    });
  });

  test('events logged before the session exists wait, then go through the outbox', async () => {
    const sent: string[] = [];
    const log = new EventLog();
    log.log('browser_check', { width: 1280 });
    log.seq = 4;
    log.log('blur');
    const outbox = await Outbox.open({ store: new MemoryOutboxStore(), sleep: noSleep, sendTrial: async (seq) => ack(seq), sendEvents: async (events) => void sent.push(...events.map((e) => `${e.type}@${e.seq ?? '-'}`)) });
    log.attach(outbox);
    log.log('focus');
    await outbox.drain();
    assert.deepEqual(sent.sort(), ['blur@4', 'browser_check@-', 'focus@4']);
    assert.ok(ClientEvent.array().parse(log.seen));
  });
});

describe('identify', () => {
  test('Prolific ids, a participant id, or a random id kept for reloads', () => {
    const store = new MemoryStore();
    const p = identify('?study=demo&PROLIFIC_PID=abc&STUDY_ID=s1&SESSION_ID=x9', store);
    assert.ok(!('error' in p));
    const { resume: pSecret, ...pRequest } = p.request;
    assert.deepEqual(pRequest, { study: 'demo', PROLIFIC_PID: 'abc', STUDY_ID: 's1', SESSION_ID: 'x9' });
    // A resume secret chosen before the first request and kept: a retry whose response was lost proves the same browser.
    assert.match(pSecret ?? '', /^[0-9a-f]{32}$/);
    const again = identify('?study=demo&PROLIFIC_PID=abc&STUDY_ID=s1&SESSION_ID=x9', store);
    assert.ok(!('error' in again));
    assert.equal(again.request.resume, pSecret, 'the same secret after a reload');

    const g = identify('?study=demo&participant=p7', store);
    assert.ok(!('error' in g));
    const { resume: gSecret, ...gRequest } = g.request;
    assert.deepEqual(gRequest, { study: 'demo', participant: 'p7' });
    assert.ok(gSecret && gSecret !== pSecret, 'one secret per participant');

    const a = identify('?study=demo', store);
    const b = identify('?study=demo', store);
    assert.ok(!('error' in a) && !('error' in b));
    assert.match((a.request as { participant: string }).participant, /^anon-[0-9a-f]{32}$/);
    assert.deepEqual(a.request, b.request, 'the same browser gets the same id (and secret)');

    const placeholder = identify('?study=demo&PROLIFIC_PID={{%PROLIFIC_PID%}}', store);
    assert.ok(!('error' in placeholder) && 'participant' in placeholder.request, 'an unfilled placeholder is not an id');
    assert.ok('error' in identify('?participant=p', store));
    assert.ok('error' in identify(`?study=demo&participant=${'x'.repeat(200)}`, store));
  });
});
