// CSV cells: formula injection defused in one place (csv.ts) for every file legible writes, and
// undone by the reader of legible's own files, so values survive the round trip.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { csvCell, parseCsv } from '../src/csv.ts';
import { readTable } from '../src/table.ts';

const risky = [' =1+1', '\n=1+1', '\r\n+SUM(A1)', '  @cmd', '\t-2+3', '=HYPERLINK("x")', '+1', '-', '@a', '\tplain'];
const harmless = ['plain', ' plain', 'a=1', "'quoted", '1.0.0', ''];

test('text cells that a spreadsheet could run as a formula get a leading quote, also after spaces and line breaks', () => {
  for (const v of risky) {
    const [[cell]] = parseCsv(`${csvCell(v)}\n`);
    assert.equal(cell, `'${v}`, JSON.stringify(v));
  }
  for (const v of harmless) assert.equal(parseCsv(`x,${csvCell(v)}\n`)[0][1], v, JSON.stringify(v));
  assert.equal(csvCell(-3, 'number'), '-3', 'numbers are not text');
});

test("the reader of legible's CSV files gets the original values back", () => {
  const dir = mkdtempSync(join(tmpdir(), 'legible-csv-'));
  try {
    const file = join(dir, 't.csv');
    const values = [...risky, ...harmless.filter((v) => v !== '')];
    writeFileSync(file, `id,value\n${values.map((v, i) => `${i},${csvCell(v)}`).join('\n')}\n`);
    assert.deepEqual(readTable(file).column('value'), values);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
