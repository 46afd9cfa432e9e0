// Column-oriented tables for analysis, read from CSV or JSON Lines in chunks: every kept column is
// dictionary-encoded (a level list and one Int32 code per row), so a million trials of a few
// columns take a few megabytes, and numbers are parsed once per distinct value.
import { closeSync, openSync, readSync } from 'node:fs';
import { LegibleError } from '@legible/studies';
import { undefuse } from './csv.ts';
import type { Frame } from './stats/formula.ts';

export class Table implements Frame {
  n = 0;
  private readonly cols = new Map<string, { codes: number[] | Int32Array; levels: string[]; at: Map<string, number> }>();

  constructor(readonly source: string) {}

  /** A table from row objects (every key of the first row becomes a column). */
  static fromRows(rows: Record<string, string | number>[], source = 'rows'): Table {
    const t = new Table(source);
    if (rows.length === 0) return t;
    for (const k of Object.keys(rows[0])) t.addColumn(k);
    for (const r of rows) t.push(Object.fromEntries(Object.entries(r).map(([k, v]) => [k, String(v)])));
    return t.seal();
  }

  names(): string[] {
    return [...this.cols.keys()];
  }
  has(name: string): boolean {
    return this.cols.has(name);
  }

  /** Append a row (values by column name; absent columns get ""). */
  push(values: Record<string, string>): void {
    for (const [name, col] of this.cols) (col.codes as number[]).push(this.code(col, values[name] ?? ''));
    this.n++;
  }

  addColumn(name: string): void {
    if (this.cols.has(name)) return;
    const col = { codes: new Array<number>(this.n).fill(0), levels: [] as string[], at: new Map<string, number>() };
    if (this.n > 0) this.code(col, '');
    this.cols.set(name, col);
  }

  private code(col: { levels: string[]; at: Map<string, number> }, value: string): number {
    let c = col.at.get(value);
    if (c === undefined) {
      c = col.levels.length;
      col.levels.push(value);
      col.at.set(value, c);
    }
    return c;
  }

  /** Freeze the codes into typed arrays (after reading). */
  seal(): this {
    for (const col of this.cols.values()) if (Array.isArray(col.codes)) col.codes = Int32Array.from(col.codes);
    return this;
  }

  codes(name: string): { codes: Int32Array; levels: string[] } {
    const col = this.cols.get(name);
    if (!col) throw new LegibleError(`${this.source}: no column "${name}" (columns: ${this.names().join(', ')})`);
    return { codes: col.codes as Int32Array, levels: col.levels };
  }

  /** Values as strings. */
  column(name: string): string[] | undefined {
    const col = this.cols.get(name);
    if (!col) return undefined;
    const out = new Array<string>(this.n);
    const codes = col.codes;
    for (let i = 0; i < this.n; i++) out[i] = col.levels[codes[i]];
    return out;
  }

  /** Values as numbers (NaN for empty or non-numeric cells). */
  numbers(name: string): Float64Array {
    const { codes, levels } = this.codes(name);
    const parsed = levels.map((l) => (l.trim() === '' ? NaN : Number(l)));
    const out = new Float64Array(this.n);
    for (let i = 0; i < this.n; i++) out[i] = parsed[codes[i]];
    return out;
  }

  /** A new table with the rows where keep(i) is true. */
  filter(keep: (i: number) => boolean): Table {
    const t = new Table(this.source);
    const rows: number[] = [];
    for (let i = 0; i < this.n; i++) if (keep(i)) rows.push(i);
    t.n = rows.length;
    for (const [name, col] of this.cols) {
      const codes = new Int32Array(rows.length);
      for (let k = 0; k < rows.length; k++) codes[k] = col.codes[rows[k]];
      t.cols.set(name, { codes, levels: col.levels, at: col.at });
    }
    t.orders = new Map(this.orders);
    return t;
  }

  /** Set a column from per-row strings (replacing it). */
  setColumn(name: string, values: ArrayLike<string>): void {
    const col = { codes: new Int32Array(this.n), levels: [] as string[], at: new Map<string, number>() };
    for (let i = 0; i < this.n; i++) col.codes[i] = this.code(col, values[i]);
    this.cols.set(name, col);
  }

  /** Preferred level orders of factors (e.g. the study's layer order), used by the formula code. */
  orders = new Map<string, string[]>();
  levelOrder(name: string): string[] | undefined {
    return this.orders.get(name);
  }
}

/**
 * Read a CSV file in 1 MiB chunks (RFC 4180: quoted cells may hold commas, quotes and newlines),
 * calling onHeader once and onRow for each record.
 */
export function readCsvFile(file: string, onHeader: (header: string[]) => void, onRow: (cells: string[], line: number) => void): void {
  const fd = openSync(file, 'r');
  const buf = Buffer.alloc(1 << 20);
  const decoder = new TextDecoder('utf-8');
  let header: string[] | null = null;
  let row: string[] = [];
  let cell = '';
  let quoted = false;
  let afterQuote = false;
  let line = 1;
  let pendingCr = false;
  let first = true;
  const endRow = () => {
    row.push(cell);
    cell = '';
    if (!header) {
      header = row;
      onHeader(header);
    } else if (!(row.length === 1 && row[0] === '')) onRow(row, line);
    row = [];
  };
  try {
    for (;;) {
      const got = readSync(fd, buf, 0, buf.length, null);
      let text = decoder.decode(buf.subarray(0, got), { stream: got > 0 });
      if (first) {
        if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
        first = false;
      }
      for (let i = 0; i < text.length; i++) {
        const ch = text[i];
        if (pendingCr) {
          pendingCr = false;
          if (ch === '\n') continue;
        }
        if (quoted) {
          if (ch === '"') {
            if (text[i + 1] === '"') {
              cell += '"';
              i++;
            } else if (i + 1 === text.length) {
              // A quote at the end of a chunk: decide on the next chunk's first character.
              quoted = false;
              afterQuote = true;
            } else quoted = false;
          } else {
            if (ch === '\n') line++;
            cell += ch;
          }
          continue;
        }
        if (afterQuote) {
          afterQuote = false;
          if (ch === '"') {
            cell += '"';
            quoted = true;
            continue;
          }
        }
        if (ch === '"' && cell === '') quoted = true;
        else if (ch === ',') {
          row.push(cell);
          cell = '';
        } else if (ch === '\n' || ch === '\r') {
          endRow();
          line++;
          if (ch === '\r') pendingCr = true;
        } else cell += ch;
      }
      if (got === 0) break;
    }
    if (quoted) throw new LegibleError(`${file}: a quoted cell that starts on line ${line} is never closed`);
    if (cell !== '' || row.length) endRow();
    if (!header) throw new LegibleError(`${file}: the file is empty (expected a header row)`);
  } finally {
    closeSync(fd);
  }
}

/** Read a JSON Lines file record by record (1 MiB chunks). */
export function readJsonlFile(file: string, onRecord: (record: Record<string, unknown>, line: number) => void): void {
  const fd = openSync(file, 'r');
  const buf = Buffer.alloc(1 << 20);
  const decoder = new TextDecoder('utf-8');
  let rest = '';
  let line = 0;
  try {
    for (;;) {
      const got = readSync(fd, buf, 0, buf.length, null);
      rest += decoder.decode(buf.subarray(0, got), { stream: got > 0 });
      let nl: number;
      while ((nl = rest.indexOf('\n')) >= 0) {
        const text = rest.slice(0, nl).trim();
        rest = rest.slice(nl + 1);
        line++;
        if (!text) continue;
        try {
          onRecord(JSON.parse(text) as Record<string, unknown>, line);
        } catch (e) {
          throw new LegibleError(`${file}:${line}: not a JSON object (${(e as Error).message})`);
        }
      }
      if (got === 0) break;
    }
    if (rest.trim()) onRecord(JSON.parse(rest) as Record<string, unknown>, line + 1);
  } finally {
    closeSync(fd);
  }
}

/** A CSV or JSON Lines file as a table of the columns `keep` accepts (all when omitted). */
export function readTable(file: string, keep: (name: string) => boolean = () => true): Table {
  const table = new Table(file);
  if (file.toLowerCase().endsWith('.jsonl')) {
    readJsonlFile(file, (rec) => {
      const values: Record<string, string> = {};
      for (const [k, v] of Object.entries(rec)) {
        if (!keep(k)) continue;
        if (!table.has(k)) table.addColumn(k);
        values[k] = v === null || v === undefined ? '' : typeof v === 'boolean' ? (v ? '1' : '0') : typeof v === 'object' ? JSON.stringify(v) : String(v);
      }
      table.push(values);
    });
    return table.seal();
  }
  let names: string[] = [];
  let kept: number[] = [];
  readCsvFile(
    file,
    (header) => {
      names = header.map((h) => h.trim());
      kept = names.map((_, i) => i).filter((i) => keep(names[i]));
      for (const i of kept) table.addColumn(names[i]);
    },
    (cells) => {
      const values: Record<string, string> = {};
      for (const i of kept) values[names[i]] = unprefix(cells[i] ?? '');
      table.push(values);
    },
  );
  return table.seal();
}

/** Undo the export's formula-injection guard (csv.ts, defuse). */
const unprefix = undefuse;
