// Where the outbox keeps what it has not yet delivered: IndexedDB (one object store, one record
// per answer or event, written with durability "strict" before anything is sent), or — when
// IndexedDB is missing or refuses to open (some private modes) — localStorage, or, when that is
// unusable too, memory (a reload then loses what was not sent; the participant is told nothing
// different, but `kind` says so and goes into the browser_check event).
//
// Free of jsPsych and the DOM, so that node tests can use the memory store and a fake KeyValueStore.
import type { ClientEvent, TrialAnswer } from './api.ts';

/** One undelivered item: an answer (by seq) or a client event (by a random id). */
export type OutboxItem = { kind: 'trial'; seq: number; answer: TrialAnswer } | { kind: 'event'; id: string; event: ClientEvent };

export type StoreKind = 'indexeddb' | 'localstorage' | 'memory';

/** One session's undelivered items. */
export interface OutboxStore {
  readonly kind: StoreKind;
  load(): Promise<OutboxItem[]>;
  /** Resolves once the item is durably stored (rejects if it could not be). */
  put(item: OutboxItem): Promise<void>;
  remove(items: OutboxItem[]): Promise<void>;
}

/** The part of the Web Storage API the stores use (localStorage, or a stand-in in tests). */
export interface KeyValueStore {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

const itemId = (item: OutboxItem) => (item.kind === 'trial' ? `t:${String(item.seq).padStart(6, '0')}` : `e:${item.id}`);

/** localStorage key of a session's items (also read by an IndexedDB store, to pick up what a fallback page left). */
export const localKey = (session: string) => `legible:outbox:${session}`;

function readLocal(storage: KeyValueStore, key: string): Map<string, OutboxItem> {
  const items = new Map<string, OutboxItem>();
  try {
    const raw = storage.getItem(key);
    const parsed: unknown = raw ? JSON.parse(raw) : null;
    if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) return items;
    for (const [k, v] of Object.entries(parsed as Record<string, unknown>)) {
      if (/^\d+$/.test(k)) items.set(itemId({ kind: 'trial', seq: Number(k), answer: v as TrialAnswer }), { kind: 'trial', seq: Number(k), answer: v as TrialAnswer }); // first format: {seq: answer}
      else if (v && typeof v === 'object' && 'kind' in v) items.set(k, v as OutboxItem);
    }
  } catch {
    // Unreadable: nothing to recover.
  }
  return items;
}

/** A session's items as one JSON object in a KeyValueStore (localStorage). */
export class LocalOutboxStore implements OutboxStore {
  readonly kind: StoreKind;
  private readonly key: string;

  constructor(
    private readonly storage: KeyValueStore,
    session: string,
    kind: StoreKind = 'localstorage',
  ) {
    this.key = localKey(session);
    this.kind = kind;
  }

  async load(): Promise<OutboxItem[]> {
    return [...readLocal(this.storage, this.key).values()];
  }

  async put(item: OutboxItem): Promise<void> {
    const items = readLocal(this.storage, this.key);
    items.set(itemId(item), item);
    this.storage.setItem(this.key, JSON.stringify(Object.fromEntries(items)));
  }

  async remove(done: OutboxItem[]): Promise<void> {
    const items = readLocal(this.storage, this.key);
    for (const item of done) items.delete(itemId(item));
    try {
      if (items.size === 0) this.storage.removeItem(this.key);
      else this.storage.setItem(this.key, JSON.stringify(Object.fromEntries(items)));
    } catch {
      // Left behind: resent on a later page and acknowledged again (the PUT is idempotent).
    }
  }
}

export class MemoryOutboxStore extends LocalOutboxStore {
  constructor(session = 'memory') {
    super(memoryKeyValueStore(), session, 'memory');
  }
}

export function memoryKeyValueStore(): KeyValueStore {
  const m = new Map<string, string>();
  return { getItem: (k) => m.get(k) ?? null, setItem: (k, v) => void m.set(k, v), removeItem: (k) => void m.delete(k) };
}

// ─── IndexedDB ─────────────────────────────────────────────────────────────────────────────
const DB_NAME = 'legible';
const STORE = 'outbox';

interface Row {
  /** "<session>|t:000012" or "<session>|e:<id>" */
  key: string;
  item: OutboxItem;
}

const done = (req: IDBRequest) =>
  new Promise<void>((resolve, reject) => {
    req.onsuccess = () => resolve();
    req.onerror = () => reject(req.error);
  });

function txDone(tx: IDBTransaction): Promise<void> {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error ?? new Error('IndexedDB transaction aborted'));
  });
}

export class IdbOutboxStore implements OutboxStore {
  readonly kind = 'indexeddb' as const;

  constructor(
    private readonly db: IDBDatabase,
    private readonly session: string,
    /** Items a localStorage page left for this session are picked up once. */
    private readonly legacy: KeyValueStore | null,
  ) {}

  private rowKey(item: OutboxItem) {
    return `${this.session}|${itemId(item)}`;
  }

  async load(): Promise<OutboxItem[]> {
    const tx = this.db.transaction(STORE, 'readonly');
    const req = tx.objectStore(STORE).getAll(IDBKeyRange.bound(`${this.session}|`, `${this.session}|\uffff`));
    await done(req);
    const items = new Map<string, OutboxItem>((req.result as Row[]).map((r) => [r.key, r.item]));
    if (this.legacy) {
      const left = readLocal(this.legacy, localKey(this.session));
      for (const item of left.values()) {
        const key = this.rowKey(item);
        if (!items.has(key)) {
          items.set(key, item);
          await this.put(item);
        }
      }
      if (left.size) this.legacy.removeItem(localKey(this.session));
    }
    return [...items.values()];
  }

  async put(item: OutboxItem): Promise<void> {
    // "strict": complete only once the write is on disk, so an answer survives a crash.
    const tx = this.db.transaction(STORE, 'readwrite', { durability: 'strict' });
    tx.objectStore(STORE).put({ key: this.rowKey(item), item } satisfies Row);
    await txDone(tx);
  }

  async remove(items: OutboxItem[]): Promise<void> {
    if (!items.length) return;
    const tx = this.db.transaction(STORE, 'readwrite');
    const store = tx.objectStore(STORE);
    for (const item of items) store.delete(this.rowKey(item));
    await txDone(tx);
  }
}

/** Opens the shared IndexedDB database, or rejects (missing, refused, blocked, or slower than `timeoutMs`). */
export function openIdb(timeoutMs = 3000, factory: IDBFactory | undefined = globalThis.indexedDB): Promise<IDBDatabase> {
  return new Promise((resolve, reject) => {
    if (!factory) return reject(new Error('no IndexedDB'));
    const timer = setTimeout(() => reject(new Error('IndexedDB did not open in time')), timeoutMs);
    let req: IDBOpenDBRequest;
    try {
      req = factory.open(DB_NAME, 1);
    } catch (err) {
      clearTimeout(timer);
      return reject(err);
    }
    req.onupgradeneeded = () => {
      if (!req.result.objectStoreNames.contains(STORE)) req.result.createObjectStore(STORE, { keyPath: 'key' });
    };
    req.onsuccess = () => {
      clearTimeout(timer);
      const db = req.result;
      // Another tab upgrading the schema: let it, this page falls back to what it has.
      db.onversionchange = () => db.close();
      resolve(db);
    };
    req.onerror = () => {
      clearTimeout(timer);
      reject(req.error ?? new Error('IndexedDB refused to open'));
    };
    req.onblocked = () => {
      clearTimeout(timer);
      reject(new Error('IndexedDB is blocked'));
    };
  });
}

/** localStorage when usable, else an in-memory store. */
export function browserStore(): { storage: KeyValueStore; persistent: boolean } {
  try {
    const s = globalThis.localStorage;
    const probe = '__legible_probe__';
    s.setItem(probe, '1');
    s.removeItem(probe);
    return { storage: s, persistent: true };
  } catch {
    return { storage: memoryKeyValueStore(), persistent: false };
  }
}

let idb: Promise<IDBDatabase | null> | null = null;

/** The best store this browser offers for one session's outbox. */
export async function openOutboxStore(session: string, local = browserStore()): Promise<OutboxStore> {
  idb ??= openIdb().catch((err: unknown) => {
    console.warn('legible: IndexedDB unavailable, keeping answers in localStorage', err);
    return null;
  });
  const db = await idb;
  if (db) return new IdbOutboxStore(db, session, local.persistent ? local.storage : null);
  return new LocalOutboxStore(local.storage, session, local.persistent ? 'localstorage' : 'memory');
}
