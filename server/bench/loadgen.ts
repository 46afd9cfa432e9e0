// A load generator: N simulated participants over HTTP (keep-alive, node:http) against a running
// server. Each one creates a session, answers every trial of its task list with think time in
// between, and finishes — retrying like the real client (network errors, 5xx, 429 with backoff
// and Retry-After), so the same code drives the load benchmark and the crash test. Every
// acknowledged answer is recorded with what was sent, for checking against the database.
import { connect, type Socket } from 'node:net';

export interface Reply {
  status: number;
  body: any;
  headers: Record<string, string>;
}

/**
 * One keep-alive HTTP/1.1 connection, written and parsed by hand: a load generator built on
 * node:http spends as much CPU per request as the server it measures, on a 2-core machine that
 * would cap both. Requests on a connection go one at a time (no pipelining), as a browser's do.
 */
class Connection {
  private socket: Socket | undefined;
  private buffer: Buffer = Buffer.alloc(0);
  private waiting: { resolve: (r: Reply) => void; reject: (e: Error) => void; timer: NodeJS.Timeout } | undefined;

  constructor(
    private readonly host: string,
    private readonly port: number,
  ) {}

  private open(): Socket {
    const socket = connect({ host: this.host, port: this.port, noDelay: true });
    socket.on('data', (chunk: Buffer) => {
      this.buffer = this.buffer.length ? Buffer.concat([this.buffer, chunk]) : chunk;
      this.parse();
    });
    const fail = (err: Error) => {
      if (this.socket === socket) this.socket = undefined;
      this.buffer = Buffer.alloc(0);
      const w = this.waiting;
      this.waiting = undefined;
      if (w) {
        clearTimeout(w.timer);
        w.reject(err);
      }
    };
    socket.on('error', fail);
    socket.on('close', () => fail(new Error('connection closed')));
    this.socket = socket;
    return socket;
  }

  private parse(): void {
    const end = this.buffer.indexOf('\r\n\r\n');
    if (end < 0 || !this.waiting) return;
    const head = this.buffer.subarray(0, end).toString('latin1');
    const lines = head.split('\r\n');
    const status = Number(lines[0].split(' ')[1]);
    const headers: Record<string, string> = {};
    for (let i = 1; i < lines.length; i++) {
      const c = lines[i].indexOf(':');
      headers[lines[i].slice(0, c).toLowerCase()] = lines[i].slice(c + 1).trim();
    }
    let body: Buffer;
    let rest: Buffer;
    if (headers['transfer-encoding'] === 'chunked') {
      // Chunked: decode whole chunks until the last (size 0).
      let pos = end + 4;
      const parts: Buffer[] = [];
      for (;;) {
        const lineEnd = this.buffer.indexOf('\r\n', pos);
        if (lineEnd < 0) return;
        const size = parseInt(this.buffer.subarray(pos, lineEnd).toString('latin1'), 16);
        if (this.buffer.length < lineEnd + 2 + size + 2) return;
        if (size === 0) {
          rest = this.buffer.subarray(lineEnd + 4);
          break;
        }
        parts.push(this.buffer.subarray(lineEnd + 2, lineEnd + 2 + size));
        pos = lineEnd + 2 + size + 2;
      }
      body = Buffer.concat(parts);
    } else {
      const length = Number(headers['content-length'] ?? 0);
      if (this.buffer.length < end + 4 + length) return;
      body = this.buffer.subarray(end + 4, end + 4 + length);
      rest = this.buffer.subarray(end + 4 + length);
    }
    this.buffer = rest.length ? Buffer.from(rest) : Buffer.alloc(0);
    const w = this.waiting;
    this.waiting = undefined;
    clearTimeout(w.timer);
    const text = body.toString('utf8');
    let parsed: unknown = text;
    if (text && (headers['content-type'] ?? '').includes('json')) {
      try {
        parsed = JSON.parse(text);
      } catch {
        /* keep the text */
      }
    }
    if (headers.connection === 'close') this.socket?.end();
    w.resolve({ status, body: parsed, headers });
  }

  send(method: string, path: string, body: Buffer | undefined, headers: Record<string, string>, timeoutMs: number): Promise<Reply> {
    if (this.waiting) return Promise.reject(new Error('one request at a time per connection'));
    const socket = this.socket ?? this.open();
    let head = `${method} ${path} HTTP/1.1\r\nhost: ${this.host}:${this.port}\r\n`;
    if (body) head += `content-type: application/json\r\ncontent-length: ${body.length}\r\n`;
    else if (method !== 'GET' && method !== 'HEAD') head += 'content-length: 0\r\n';
    for (const [k, v] of Object.entries(headers)) head += `${k}: ${v}\r\n`;
    head += '\r\n';
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        socket.destroy(new Error('timeout'));
      }, timeoutMs);
      this.waiting = { resolve, reject, timer };
      socket.write(body ? Buffer.concat([Buffer.from(head, 'latin1'), body]) : head);
    });
  }

  close(): void {
    this.socket?.destroy();
    this.socket = undefined;
  }
}

/** A client for one simulated participant (one connection, like one browser tab). */
export class HttpClient {
  private readonly conn: Connection;
  constructor(public readonly base: string) {
    const url = new URL(base);
    this.conn = new Connection(url.hostname, Number(url.port));
  }

  /** One request; rejects on network errors (connection refused or reset, timeout). */
  send(method: string, path: string, body?: unknown, headers: Record<string, string> = {}, timeoutMs = 10_000): Promise<Reply> {
    const data = body === undefined ? undefined : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
    return this.conn.send(method, path, data, headers, timeoutMs);
  }

  close(): void {
    this.conn.close();
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export interface Acked {
  participant: string;
  session: string;
  seq: number;
  choice: 0 | 1;
  confidence: number;
  recorded_at: string;
  /** Acknowledged after retries (the first attempts failed on the network). */
  retried: boolean;
  /** The acknowledgement's recorded_at is older than the attempt that got it: an earlier attempt was recorded but never acknowledged. */
  recordedBefore: boolean;
}

export interface LoadOptions {
  base: string;
  study: string;
  participants: number;
  /** Mean think time between answers, ms (each draw uniform in [0.5, 1.5] × mean). */
  thinkMs: number;
  /** Participant id prefix (unique per run). */
  prefix?: string;
  /** Keep retrying until this time (ms since epoch) — the crash test lets clients ride out restarts. */
  retryUntil?: number;
  /** Request path for answers: the bare-Express baseline answers the same route shape. */
  bare?: boolean;
  /** Trials per participant for the bare baseline (the real server's task list decides otherwise). */
  bareTrials?: number;
  /** Called with every acknowledged answer. */
  onAck?: (a: Acked) => void;
  /** Randomness for think times and answers (default Math.random). */
  random?: () => number;
  /** Participants start spread evenly over this many ms (default 0: all at once). */
  rampMs?: number;
}

export interface LoadResult {
  participants: number;
  finished: number;
  writes: number;
  /** First PUT sent → last PUT acknowledged, seconds. */
  seconds: number;
  writesPerSecond: number;
  latency: { p50: number; p90: number; p99: number; max: number; mean: number };
  createLatency: { p50: number; p99: number };
  retries: number;
  statuses: Record<string, number>;
  acked: Acked[];
  errors: string[];
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

export async function runLoad(opts: LoadOptions): Promise<LoadResult> {
  const random = opts.random ?? Math.random;
  const latencies: number[] = [];
  const createLatencies: number[] = [];
  const statuses: Record<string, number> = {};
  const acked: Acked[] = [];
  const errors: string[] = [];
  let retries = 0;
  let finished = 0;
  let firstPut = Infinity;
  let lastAck = 0;
  const prefix = opts.prefix ?? `p${Date.now().toString(36)}`;

  /** Send until a final answer: retry network errors, 5xx and 429 (as the client's outbox does). */
  const until = async (client: HttpClient, method: string, path: string, body: unknown, headers: Record<string, string>, latency?: number[]): Promise<Reply & { attempts: number; sentAt: number }> => {
    // Latency runs from the first attempt: a retried request is as slow as all its attempts.
    const t0 = performance.now();
    for (let attempt = 0; ; attempt++) {
      const sentAt = Date.now();
      try {
        const r = await client.send(method, path, body, headers);
        statuses[r.status] = (statuses[r.status] ?? 0) + 1;
        if (r.status < 500 && r.status !== 429) {
          latency?.push(performance.now() - t0);
          return { ...r, attempts: attempt + 1, sentAt };
        }
        if (r.status === 429) {
          retries++;
          await sleep(Math.max(100, Number(r.headers['retry-after'] ?? 1) * 1000));
          continue;
        }
      } catch (e) {
        statuses.network = (statuses.network ?? 0) + 1;
        if (opts.retryUntil === undefined || Date.now() > opts.retryUntil) throw e;
      }
      if (opts.retryUntil !== undefined && Date.now() > opts.retryUntil) throw new Error(`gave up on ${method} ${path}`);
      retries++;
      const step = Math.min(2000, 50 * 2 ** Math.min(attempt, 6));
      await sleep(step / 2 + random() * (step / 2));
    }
  };

  const participant = async (i: number) => {
    if (opts.rampMs) await sleep((i * opts.rampMs) / opts.participants);
    const client = new HttpClient(opts.base);
    try {
      await simulate(client, i);
    } finally {
      client.close();
    }
  };
  const simulate = async (client: HttpClient, i: number) => {
    const id = `${prefix}-${i}`;
    let session: string;
    let token: string;
    let trials: { seq: number }[];
    let resumeAt = 0;
    if (opts.bare) {
      session = `bare-${i}`;
      token = 'x';
      trials = Array.from({ length: opts.bareTrials ?? 40 }, (_, seq) => ({ seq }));
      const t0 = performance.now();
      await until(client, 'POST', '/api/sessions', { study: opts.study, participant: id }, {});
      createLatencies.push(performance.now() - t0);
    } else {
      const t0 = performance.now();
      // Like legible's client: a resume secret chosen before the first request, sent with every
      // retry (a creation whose response was lost to a crash is then resumed, not refused).
      const resume = `${id}-resume-${Math.floor(random() * 2 ** 48).toString(36)}`;
      const r = await until(client, 'POST', '/api/sessions', { study: opts.study, participant: id, resume }, {});
      createLatencies.push(performance.now() - t0);
      if (r.status !== 201 && r.status !== 200) throw new Error(`create ${id}: ${r.status} ${JSON.stringify(r.body)}`);
      ({ session, token, trials } = r.body);
      resumeAt = r.body.resume_at;
    }
    const auth = { authorization: `Bearer ${token}` };
    for (const t of trials) {
      if (t.seq < resumeAt) continue;
      if (opts.thinkMs > 0) await sleep(opts.thinkMs * (0.5 + random()));
      const choice = (random() < 0.5 ? 0 : 1) as 0 | 1;
      const confidence = 1 + Math.floor(random() * 3);
      const body = { query: choice, confidence, rt_ms: Math.round(400 + random() * 1500), input: 'key', window: [1280, 800], dpr: 2, client_time: Date.now() };
      const sent = performance.now();
      firstPut = Math.min(firstPut, sent);
      // The body is fixed per answer, so a retry after a crash is the same payload: 200 with the
      // original acknowledgement if the first attempt was recorded.
      const r = await until(client, 'PUT', `/api/sessions/${session}/trials/${t.seq}`, body, auth, latencies);
      if (r.status === 409 && r.body?.detail?.practice_over) continue;
      if (r.status !== 200) {
        errors.push(`PUT ${t.seq}: ${r.status} ${JSON.stringify(r.body).slice(0, 200)}`);
        return;
      }
      lastAck = Math.max(lastAck, performance.now());
      const recordedAt: string = r.body?.recorded_at ?? '';
      const a: Acked = { participant: id, session, seq: t.seq, choice, confidence, recorded_at: recordedAt, retried: r.attempts > 1, recordedBefore: r.attempts > 1 && Date.parse(recordedAt) < r.sentAt };
      acked.push(a);
      opts.onAck?.(a);
    }
    if (!opts.bare) {
      const f = await until(client, 'POST', `/api/sessions/${session}/finish`, undefined, auth);
      if (f.status !== 200) {
        errors.push(`finish ${id}: ${f.status} ${JSON.stringify(f.body).slice(0, 300)}`);
        return;
      }
    }
    finished++;
  };

  const settled = await Promise.allSettled(Array.from({ length: opts.participants }, (_, i) => participant(i)));
  for (const s of settled) if (s.status === 'rejected') errors.push(String((s.reason as Error)?.message ?? s.reason));
  const sorted = [...latencies].sort((a, b) => a - b);
  const created = [...createLatencies].sort((a, b) => a - b);
  const seconds = (lastAck - firstPut) / 1000;
  return {
    participants: opts.participants,
    finished,
    writes: acked.length,
    seconds,
    writesPerSecond: acked.length / Math.max(seconds, 1e-9),
    latency: {
      p50: percentile(sorted, 50),
      p90: percentile(sorted, 90),
      p99: percentile(sorted, 99),
      max: sorted.at(-1) ?? NaN,
      mean: sorted.reduce((a, b) => a + b, 0) / Math.max(1, sorted.length),
    },
    createLatency: { p50: percentile(created, 50), p99: percentile(created, 99) },
    retries,
    statuses,
    acked,
    errors,
  };
}
