// The client's side of the HTTP contract (studies/src/contracts.ts, server/API.md), and the retry
// policy: network failures, 5xx and 429 are retried with exponential backoff and jitter; any
// other 4xx is final. Types only from the contracts module, so zod stays out of the bundle.
import type {
  ClientEvent,
  CreateSessionRequest,
  CreateSessionResponse,
  FinishResponse,
  StudyInfo,
  TaskTrial,
  TrialAck,
  TrialAnswer,
} from '@legible/studies/contracts';

export type { ClientEvent, CreateSessionRequest, CreateSessionResponse, FinishResponse, StudyInfo, TaskTrial, TrialAck, TrialAnswer };

/** The server answered with a status outside 2xx. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly body: any,
    readonly retryAfterMs: number | null = null,
  ) {
    super(`HTTP ${status}${body && typeof body.error === 'string' ? `: ${body.error}` : ''}`);
    this.name = 'HttpError';
  }
}

/** No answer from the server (offline, DNS, reset connection, timeout). */
export class NetworkError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NetworkError';
  }
}

export function isRetryable(err: unknown): boolean {
  if (err instanceof NetworkError) return true;
  if (err instanceof HttpError) return err.status >= 500 || err.status === 429;
  return false;
}

export interface BackoffOptions {
  baseMs?: number;
  capMs?: number;
  random?: () => number;
}

/** Delay before retry number `attempt` (0-based): half the exponential step plus up to another half at random. */
export function backoffMs(attempt: number, { baseMs = 500, capMs = 20_000, random = Math.random }: BackoffOptions = {}): number {
  const step = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 20));
  return step / 2 + random() * (step / 2);
}

export interface RetryOptions extends BackoffOptions {
  /** Called before each wait; `attempt` counts failures so far. */
  onRetry?: (err: unknown, attempt: number, delayMs: number) => void;
  maxAttempts?: number;
  sleep?: (ms: number) => Promise<void>;
}

const defaultSleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Runs `fn` until it succeeds or fails with a non-retryable error. */
export async function retrying<T>(fn: () => Promise<T>, opts: RetryOptions = {}): Promise<T> {
  const sleep = opts.sleep ?? defaultSleep;
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (!isRetryable(err) || attempt + 1 >= (opts.maxAttempts ?? Infinity)) throw err;
      const delay = Math.max(backoffMs(attempt, opts), err instanceof HttpError ? (err.retryAfterMs ?? 0) : 0);
      opts.onRetry?.(err, attempt + 1, delay);
      await sleep(delay);
    }
  }
}

export interface ApiOptions {
  /** Prefix for every path ('' = same origin). */
  base?: string;
  fetch?: typeof fetch;
  timeoutMs?: number;
}

export class Api {
  private readonly base: string;
  private readonly fetchImpl: typeof fetch;
  private readonly timeoutMs: number;

  constructor({ base = '', fetch: fetchImpl, timeoutMs = 15_000 }: ApiOptions = {}) {
    this.base = base;
    this.fetchImpl = fetchImpl ?? ((input, init) => globalThis.fetch(input, init));
    this.timeoutMs = timeoutMs;
  }

  private async request<T>(method: string, path: string, { body, token, keepalive }: { body?: unknown; token?: string; keepalive?: boolean } = {}): Promise<T> {
    const headers: Record<string, string> = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (token) headers.Authorization = `Bearer ${token}`;
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), this.timeoutMs);
    let res: Response;
    try {
      res = await this.fetchImpl(this.base + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: 'same-origin',
        cache: 'no-store',
        keepalive,
        signal: controller.signal,
      });
    } catch (err) {
      throw new NetworkError(`${method} ${path}: ${controller.signal.aborted ? 'timed out' : String(err)}`);
    } finally {
      clearTimeout(timer);
    }
    let parsed: any = null;
    const text = await res.text().catch(() => '');
    if (text) {
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = { error: text.slice(0, 200) };
      }
    }
    if (!res.ok) {
      const retryAfter = Number(res.headers.get('Retry-After'));
      throw new HttpError(res.status, parsed, Number.isFinite(retryAfter) && retryAfter > 0 ? Math.min(retryAfter, 120) * 1000 : null);
    }
    return parsed as T;
  }

  study(id: string): Promise<StudyInfo> {
    return this.request('GET', `/api/studies/${encodeURIComponent(id)}`);
  }

  createSession(req: CreateSessionRequest): Promise<CreateSessionResponse> {
    return this.request('POST', '/api/sessions', { body: req });
  }

  putTrial(session: string, token: string, seq: number, answer: TrialAnswer, keepalive = false): Promise<TrialAck> {
    return this.request('PUT', `/api/sessions/${encodeURIComponent(session)}/trials/${seq}`, { body: answer, token, keepalive });
  }

  /** POST /api/sessions/:id/events (204). */
  events(session: string, token: string, events: ClientEvent[], keepalive = false): Promise<void> {
    return this.request('POST', `/api/sessions/${encodeURIComponent(session)}/events`, { body: { events }, token, keepalive });
  }

  finish(session: string, token: string): Promise<FinishResponse> {
    return this.request('POST', `/api/sessions/${encodeURIComponent(session)}/finish`, { token });
  }
}
