// CSV (RFC 4180): one cell out, and whole tables in. The writer is in export.ts's streaming loop.

/**
 * Text a spreadsheet could run as a formula: starting with =, +, - or @ (also after leading spaces
 * or line breaks, which spreadsheets skip), or with a tab or line break.
 */
const FORMULA = /^\s*[=+\-@]|^[\t\r\n]/;

/** Spreadsheet formula injection defused: a leading ' before text that could run as a formula. */
export const defuse = (s: string): string => (FORMULA.test(s) ? `'${s}` : s);

/** Undo defuse (the readers of legible's own CSV files). */
export const undefuse = (s: string): string => (s.length > 1 && s[0] === "'" && FORMULA.test(s.slice(1)) ? s.slice(1) : s);

/** One CSV cell, with spreadsheet formula injection defused in text cells. */
export function csvCell(value: unknown, type: 'text' | 'integer' | 'number' | 'boolean' | 'timestamp' = 'text'): string {
  if (value === null || value === undefined) return '';
  if (typeof value === 'boolean') return value ? '1' : '0';
  if (typeof value === 'number' || typeof value === 'bigint') return String(value);
  let s = String(value);
  if (type === 'text') s = defuse(s);
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** Parse CSV text into rows of cells (quoted cells may hold commas, quotes and newlines). */
export function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let cell = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (quoted) {
      if (ch === '"') {
        if (text[i + 1] === '"') {
          cell += '"';
          i++;
        } else quoted = false;
      } else cell += ch;
    } else if (ch === '"' && cell === '') quoted = true;
    else if (ch === ',') {
      row.push(cell);
      cell = '';
    } else if (ch === '\n' || ch === '\r') {
      if (ch === '\r' && text[i + 1] === '\n') i++;
      row.push(cell);
      rows.push(row);
      row = [];
      cell = '';
    } else cell += ch;
  }
  if (cell !== '' || row.length) {
    row.push(cell);
    rows.push(row);
  }
  return rows;
}

/** Rows as objects keyed by the header row. */
export function parseCsvRecords(text: string): Record<string, string>[] {
  const [header, ...rows] = parseCsv(text);
  if (!header) return [];
  return rows.map((r) => Object.fromEntries(header.map((h, i) => [h, r[i] ?? ''])));
}
