// The saving path without a browser: the API client's error mapping and retry policy, the outbox
// (order, persistence, backoff, which failures are retried), and who the participant is.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { TrialAnswer } from '@legible/studies/contracts';
import { Api, backoffMs, HttpError, isRetryable, NetworkError, retrying, type TrialAck } from '../src/api.ts';
import { identify } from '../src/identity.ts';
import { Outbox, type KeyValueStore } from '../src/outbox.ts';

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

describe('outbox', () => {
  test('sends in seq order, resolves each ack, forgets what was acknowledged', async () => {
    const store = new MemoryStore();
    const sent: number[] = [];
    const outbox = new Outbox({ key: 'k', storage: store, sleep: noSleep, send: async (seq) => (sent.push(seq), ack(seq, seq === 0 ? { feedback: { correct: true } } : {})) });
    const acks = await Promise.all([outbox.submit(0, answer()), outbox.submit(1, answer()), outbox.submit(2, answer(1))]);
    assert.deepEqual(sent, [0, 1, 2]);
    assert.deepEqual(acks[0].feedback, { correct: true });
    assert.deepEqual((await outbox.ack(1)).seq, 1);
    await outbox.drain();
    assert.equal(outbox.pending, 0);
    assert.equal(store.getItem('k'), null);
    assert.deepEqual(await outbox.submit(0, answer()), acks[0], 'a second submit of an acknowledged seq is not sent again');
    assert.deepEqual(sent, [0, 1, 2]);
  });

  test('keeps answers in storage while the server is unreachable, with backoff; a new page sends them', async () => {
    const store = new MemoryStore();
    const states: boolean[] = [];
    const delays: number[] = [];
    let up = false;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const first = new Outbox({
      key: 'k',
      storage: store,
      random: () => 0,
      onState: (s) => states.push(s.failing),
      sleep: async (ms) => {
        delays.push(ms);
        if (delays.length >= 3) await gate; // the page "closes" while still offline
      },
      send: async (seq) => {
        if (!up) throw new NetworkError('offline');
        return ack(seq);
      },
    });
    void first.submit(0, answer(0));
    void first.submit(1, answer(1));
    await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(delays, [250, 500, 1000], 'exponential backoff');
    assert.equal(states.at(-1), true, 'reported as failing (banner on)');
    assert.deepEqual(Object.keys(JSON.parse(store.getItem('k')!)), ['0', '1']);

    // A reload: a new outbox over the same storage finds both answers and sends them in order.
    up = true;
    const sent: number[] = [];
    const second = new Outbox({ key: 'k', storage: store, sleep: noSleep, send: async (seq) => (sent.push(seq), ack(seq)) });
    assert.deepEqual(second.pendingSeqs(), [0, 1]);
    await second.drain();
    assert.deepEqual(sent, [0, 1]);
    assert.equal(store.getItem('k'), null);
    release();
  });

  test('retries 5xx and 429, settles 409, re-authenticates once on 401, reports other 4xx', async () => {
    const store = new MemoryStore();
    const script: Record<number, (string | number)[]> = { 0: [503, 429, 'ok'], 1: [409], 2: [401, 'ok'], 3: [400], 4: ['ok'] };
    const sent: string[] = [];
    const fatal: number[] = [];
    let token = 'old';
    const outbox = new Outbox({
      key: 'k',
      storage: store,
      sleep: noSleep,
      onFatal: (seq) => fatal.push(seq),
      log: { warn: () => {}, error: () => {} },
      reauthenticate: async () => void (token = 'new'),
      send: async (seq) => {
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
    const outbox = new Outbox({ key: 'k', storage: new MemoryStore(), baseMs: 60_000, send: async (seq) => (up ? ack(seq) : Promise.reject(new NetworkError('offline'))) });
    const done = outbox.submit(0, answer());
    await new Promise((r) => setTimeout(r, 10));
    up = true;
    outbox.nudge();
    const t = Date.now();
    await done;
    assert.ok(Date.now() - t < 1000);
  });
});

describe('identify', () => {
  test('Prolific ids, a participant id, or a random id kept for reloads', () => {
    const store = new MemoryStore();
    const p = identify('?study=demo&PROLIFIC_PID=abc&STUDY_ID=s1&SESSION_ID=x9', store);
    assert.ok(!('error' in p));
    assert.deepEqual(p.request, { study: 'demo', PROLIFIC_PID: 'abc', STUDY_ID: 's1', SESSION_ID: 'x9' });

    const g = identify('?study=demo&participant=p7', store);
    assert.ok(!('error' in g));
    assert.deepEqual(g.request, { study: 'demo', participant: 'p7' });

    const a = identify('?study=demo', store);
    const b = identify('?study=demo', store);
    assert.ok(!('error' in a) && !('error' in b));
    assert.match((a.request as { participant: string }).participant, /^anon-[0-9a-f]{32}$/);
    assert.deepEqual(a.request, b.request, 'the same browser gets the same id');

    const placeholder = identify('?study=demo&PROLIFIC_PID={{%PROLIFIC_PID%}}', store);
    assert.ok(!('error' in placeholder) && 'participant' in placeholder.request, 'an unfilled placeholder is not an id');
    assert.ok('error' in identify('?participant=p', store));
    assert.ok('error' in identify(`?study=demo&participant=${'x'.repeat(200)}`, store));
  });
});
