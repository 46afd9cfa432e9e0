// Model formulas in R's notation and the model matrices they imply, as R's model.matrix builds
// them: `correct ~ basis * layer + x + (1|participant) + (1|feature)`. Fixed part: +, -, *, :,
// ( )^k, 0/1/-1 for the intercept, factor(x); factors get treatment contrasts (first level is the
// reference) by R's rule for margins; numeric columns enter as they are. Random part as lme4
// writes it: (1|g), (1|g:h), (1|g/h), random slopes (1 + x|g), (x * z|g), (0 + x|g), and
// uncorrelated terms (1 + x || g). A term's left-hand side is a model formula of its own: its
// model-matrix columns get a joint (correlated) covariance by grouping level. `||` makes every
// model-matrix column its own uncorrelated term (afex's expand_re: for a factor, one term per
// contrast column, not lme4's literal `(0 + f | g)`, which keeps the factor's columns correlated).
import { LegibleError } from '@legible/studies';

export interface ParsedFormula {
  text: string;
  response: string;
  intercept: boolean;
  /** Variables of the fixed part in order of first appearance; `factor` when written as factor(x). */
  variables: { name: string; forceFactor: boolean }[];
  /** Fixed-effect terms (sets of variable names, in variable order), sorted by order as R does. */
  terms: string[][];
  /** Random terms: each a grouping given by one or more columns (their interaction), with its own left-hand side. */
  random: RandomTerm[];
}

/** A random term `(lhs | group)` or `(lhs || group)`. */
export interface RandomTerm {
  /** Columns whose interaction is the grouping factor. */
  columns: string[];
  /** The grouping factor's label ("participant", "g:h"). */
  label: string;
  /** Left-hand side: its own intercept, variables and terms (a model formula without response). */
  intercept: boolean;
  variables: { name: string; forceFactor: boolean }[];
  terms: string[][];
  /** false for `||`: no correlations between the term's model-matrix columns. */
  correlated: boolean;
  /** The term as written in a formula, e.g. "(1 + basis | participant)". */
  text: string;
}

/** The left-hand side of a random term as text ("1", "1 + basis", "0 + x", "basis * layer" is written out term by term). */
export function randomLhsText(r: Pick<RandomTerm, 'intercept' | 'variables' | 'terms'>): string {
  const label = (name: string) => (r.variables.find((v) => v.name === name)?.forceFactor ? `factor(${name})` : name);
  const parts = r.terms.map((t) => t.map(label).join(':'));
  return [r.intercept ? '1' : '0', ...parts].join(' + ');
}

export function randomTermText(r: Pick<RandomTerm, 'intercept' | 'variables' | 'terms' | 'correlated' | 'label'>): string {
  return `(${randomLhsText(r)} ${r.correlated ? '|' : '||'} ${r.label})`;
}

/** Whether model-matrix column `c` ("(Intercept)", "basisnmf", "basisnmf:layerblock3") comes from random term r. */
export function columnOfTerm(r: Pick<RandomTerm, 'intercept' | 'terms'>, c: string): boolean {
  if (c === '(Intercept)') return r.intercept;
  return termOfColumn(r, c) >= 0;
}

/** Index of the term of r (r.terms) that model-matrix column `c` comes from, or -1. */
export function termOfColumn(r: Pick<RandomTerm, 'terms'>, c: string): number {
  const parts = c.split(':');
  return r.terms.findIndex((t) => t.length === parts.length && t.every((v, i) => parts[i].startsWith(v) || parts[i].startsWith(`factor(${v})`)));
}

/** Terms with their variables in first-appearance order, sorted by order as R does (stable). */
function orderTerms(terms: string[][], variables: { name: string }[]): string[][] {
  const order = new Map(variables.map((v, i) => [v.name, i]));
  return terms
    .filter((t) => t.length > 0)
    .map((t) => [...t].sort((a, b) => order.get(a)! - order.get(b)!))
    .map((t, i) => ({ t, i }))
    .sort((a, b) => a.t.length - b.t.length || a.i - b.i)
    .map((x) => x.t);
}

type Tok = { kind: 'name' | 'num' | 'op'; value: string; pos: number };

function tokenize(text: string): Tok[] {
  const toks: Tok[] = [];
  let i = 0;
  while (i < text.length) {
    const ch = text[i];
    if (/\s/.test(ch)) {
      i++;
      continue;
    }
    if (/[A-Za-z._]/.test(ch)) {
      let j = i;
      while (j < text.length && /[A-Za-z0-9._]/.test(text[j])) j++;
      toks.push({ kind: 'name', value: text.slice(i, j), pos: i });
      i = j;
      continue;
    }
    if (ch === '`') {
      const j = text.indexOf('`', i + 1);
      if (j < 0) throw formulaError(text, i, 'unclosed back-quote');
      toks.push({ kind: 'name', value: text.slice(i + 1, j), pos: i });
      i = j + 1;
      continue;
    }
    if (/[0-9]/.test(ch)) {
      let j = i;
      while (j < text.length && /[0-9]/.test(text[j])) j++;
      toks.push({ kind: 'num', value: text.slice(i, j), pos: i });
      i = j;
      continue;
    }
    if ('~+-*:^()|/'.includes(ch)) {
      toks.push({ kind: 'op', value: ch, pos: i });
      i++;
      continue;
    }
    throw formulaError(text, i, `unexpected "${ch}"`);
  }
  return toks;
}

function formulaError(text: string, pos: number, message: string): LegibleError {
  return new LegibleError(`formula "${text}": ${message} at character ${pos + 1}\n  ${text}\n  ${' '.repeat(pos)}^`);
}

// A parsed right-hand side: a set of terms (each a set of variable names), the intercept, and the
// random terms found along the way.
interface Rhs {
  terms: string[][];
  intercept: boolean | null; // null: not said
}

export function parseFormula(text: string): ParsedFormula {
  const toks = tokenize(text);
  let k = 0;
  const peek = () => toks[k];
  const expect = (v: string) => {
    const t = toks[k];
    if (!t || t.value !== v) throw formulaError(text, t ? t.pos : text.length, `expected "${v}"`);
    k++;
  };
  const variables: { name: string; forceFactor: boolean }[] = [];
  // Variables go to the fixed part's list, or to a random term's while its left-hand side is parsed.
  let target = variables;
  const addVar = (name: string, forceFactor: boolean) => {
    const v = target.find((x) => x.name === name);
    if (!v) target.push({ name, forceFactor });
    else if (forceFactor) v.forceFactor = true;
  };
  const random: RandomTerm[] = [];

  if (!peek() || peek().kind !== 'name') throw formulaError(text, 0, 'expected the response column (e.g. "correct ~ …")');
  const response = toks[k++].value;
  expect('~');

  const key = (t: string[]) => [...t].sort().join(':');
  const union = (a: string[][], b: string[][]) => {
    const out = a.slice();
    for (const t of b) if (!out.some((u) => key(u) === key(t))) out.push(t);
    return out;
  };
  const cross = (a: string[][], b: string[][]) => {
    const out: string[][] = [];
    for (const x of a) for (const y of b) out.push([...new Set([...x, ...y])]);
    return out;
  };

  // sum := prod (('+' | '-') prod)*
  const parseSum = (): Rhs => {
    let acc: Rhs = { terms: [], intercept: null };
    let sign = 1;
    if (peek()?.value === '-') {
      sign = -1;
      k++;
    }
    for (;;) {
      const r = parseProd();
      if (sign > 0) {
        acc.terms = union(acc.terms, r.terms);
        if (r.intercept !== null) acc.intercept = r.intercept;
      } else {
        acc.terms = acc.terms.filter((t) => !r.terms.some((u) => key(u) === key(t)));
        if (r.intercept === true) acc.intercept = false;
        if (r.intercept === false) acc.intercept = true; // - 0
      }
      const t = peek();
      if (t && (t.value === '+' || t.value === '-')) {
        sign = t.value === '+' ? 1 : -1;
        k++;
        continue;
      }
      return acc;
    }
  };
  // prod := power (('*' | ':' | '/') power)*
  const parseProd = (): Rhs => {
    let acc = parsePower();
    for (;;) {
      const t = peek();
      if (!t || !['*', ':', '/'].includes(t.value)) return acc;
      k++;
      const r = parsePower();
      if (t.value === ':') acc = { terms: cross(acc.terms, r.terms), intercept: null };
      else if (t.value === '*') acc = { terms: union(union(acc.terms, r.terms), cross(acc.terms, r.terms)), intercept: null };
      else {
        // a / b = a + a:b (b nested in a)
        const all = [[...new Set(acc.terms.flat())]];
        acc = { terms: union(acc.terms, cross(all, r.terms)), intercept: null };
      }
    }
  };
  const parsePower = (): Rhs => {
    const base = parseAtom();
    if (peek()?.value !== '^') return base;
    k++;
    const t = peek();
    if (!t || t.kind !== 'num') throw formulaError(text, t ? t.pos : text.length, 'expected a whole number after "^"');
    k++;
    let acc = base;
    for (let i = 1; i < Number(t.value); i++) acc = { terms: union(acc.terms, cross(acc.terms, base.terms)), intercept: null };
    return acc;
  };
  const parseAtom = (): Rhs => {
    const t = peek();
    if (!t) throw formulaError(text, text.length, 'formula ends too early');
    if (t.kind === 'num') {
      k++;
      if (t.value === '1') return { terms: [], intercept: true };
      if (t.value === '0') return { terms: [], intercept: false };
      throw formulaError(text, t.pos, `only 0 and 1 may stand alone (the intercept), got ${t.value}`);
    }
    if (t.kind === 'name') {
      k++;
      if (peek()?.value === '(') {
        const fn = t.value;
        if (fn !== 'factor' && fn !== 'as.factor') throw formulaError(text, t.pos, `function ${fn}() is not supported: compute the column first, or use factor(column)`);
        k++;
        const inner = peek();
        if (!inner || inner.kind !== 'name') throw formulaError(text, inner ? inner.pos : text.length, 'expected a column name inside factor()');
        k++;
        expect(')');
        addVar(inner.value, true);
        return { terms: [[inner.value]], intercept: null };
      }
      addVar(t.value, false);
      return { terms: [[t.value]], intercept: null };
    }
    if (t.value === '(') {
      k++;
      // Random term "(1 | g)"? Look for a "|" before the matching ")".
      let depth = 0;
      let bar = -1;
      for (let j = k; j < toks.length; j++) {
        if (toks[j].value === '(') depth++;
        else if (toks[j].value === ')') {
          if (depth === 0) break;
          depth--;
        } else if (toks[j].value === '|' && depth === 0) {
          bar = j;
          break;
        }
      }
      if (bar >= 0) {
        // "||" is two "|" tokens in a row.
        const double = toks[bar + 1]?.value === '|' && toks[bar + 1].pos === toks[bar].pos + 1;
        if (bar === k) throw formulaError(text, toks[bar].pos, 'expected the random term\'s left-hand side before "|", e.g. "(1 | participant)" or "(1 + basis | participant)"');
        const saved = target;
        const lhsVars: { name: string; forceFactor: boolean }[] = [];
        target = lhsVars;
        const lhsEnd = bar;
        // Parse the left-hand side as a sum, on a token list that ends at the bar.
        const rest = toks.splice(lhsEnd);
        let lhs: Rhs;
        try {
          lhs = parseSum();
          if (k < toks.length) throw formulaError(text, toks[k].pos, `unexpected "${toks[k].value}" in a random term`);
        } finally {
          toks.push(...rest);
          target = saved;
        }
        const lhsIntercept = lhs.intercept ?? true;
        const lhsTerms = orderTerms(lhs.terms, lhsVars);
        if (!lhsIntercept && lhsTerms.length === 0) throw formulaError(text, t.pos, 'the random term has nothing to vary: write "(1 | group)" for a random intercept');
        k = bar + (double ? 2 : 1);
        const groups: string[][] = [[]];
        for (;;) {
          const g = peek();
          if (!g || g.kind !== 'name') throw formulaError(text, g ? g.pos : text.length, 'expected a grouping column after "|"');
          k++;
          groups[groups.length - 1].push(g.value);
          const op = peek();
          if (op?.value === ':') {
            k++;
            continue;
          }
          if (op?.value === '/') {
            k++;
            groups.push([...groups[groups.length - 1]]);
            continue;
          }
          break;
        }
        expect(')');
        for (const cols of groups) {
          const label = cols.join(':');
          const term = { columns: cols, label, intercept: lhsIntercept, variables: lhsVars, terms: lhsTerms, correlated: !double };
          const written = randomTermText(term);
          if (!random.some((r) => r.text === written)) random.push({ ...term, text: written });
        }
        return { terms: [], intercept: null };
      }
      const inner = parseSum();
      expect(')');
      return inner;
    }
    throw formulaError(text, t.pos, `unexpected "${t.value}"`);
  };

  const rhs = parseSum();
  if (k < toks.length) throw formulaError(text, toks[k].pos, `unexpected "${toks[k].value}"`);
  if (variables.some((v) => v.name === response)) throw formulaError(text, 0, `the response "${response}" also appears on the right-hand side`);
  // Order the variables of each term by first appearance, and the terms by order (stable).
  const terms = orderTerms(rhs.terms, variables);
  return { text, response, intercept: rhs.intercept ?? true, variables, terms, random };
}

/** A data frame as the model matrix needs it: columns by name. */
export interface Frame {
  n: number;
  column(name: string): ArrayLike<string | number> | undefined;
  /** Preferred order of a factor's levels (its first is the reference); default: natural sort. */
  levelOrder?(name: string): string[] | undefined;
  /** Column names, for messages. */
  names(): string[];
}

export interface ModelMatrix {
  /** Columns of X, each of length n. */
  columns: Float64Array[];
  names: string[];
  /** For each column, the index of the term it belongs to (-1 for the intercept). */
  termOf: number[];
  termLabels: string[];
  /** Factor variables and their levels (reference first); numeric variables are absent. */
  factors: Map<string, string[]>;
  /** Columns dropped because they were linearly dependent on earlier ones. */
  dropped: string[];
}

/** Natural order: numbers by value, text with embedded numbers by those numbers ("block2" < "block10"). */
export function naturalCompare(a: string, b: string): number {
  return a.localeCompare(b, 'en', { numeric: true, sensitivity: 'variant' });
}

function isNumericColumn(values: ArrayLike<string | number>): boolean {
  if (values.length === 0) return false;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (typeof v === 'number') {
      if (!Number.isFinite(v)) return false;
      continue;
    }
    if (v.trim() === '' || !Number.isFinite(Number(v))) return false;
  }
  return true;
}

/** Levels of a column as a factor, and each row's level index. */
export function factorOf(frame: Frame, name: string): { levels: string[]; index: Int32Array } {
  const values = requireColumn(frame, name);
  const seen = new Set<string>();
  for (let i = 0; i < values.length; i++) seen.add(String(values[i]));
  const preferred = frame.levelOrder?.(name);
  let levels: string[];
  if (preferred) {
    const extra = [...seen].filter((l) => !preferred.includes(l)).sort(naturalCompare);
    levels = [...preferred.filter((l) => seen.has(l)), ...extra];
  } else levels = [...seen].sort(naturalCompare);
  const at = new Map(levels.map((l, i) => [l, i]));
  const index = new Int32Array(values.length);
  for (let i = 0; i < values.length; i++) index[i] = at.get(String(values[i]))!;
  return { levels, index };
}

function requireColumn(frame: Frame, name: string): ArrayLike<string | number> {
  const col = frame.column(name);
  if (!col) throw new LegibleError(`no column "${name}" in the data (columns: ${frame.names().join(', ')})`);
  return col;
}

/** The fixed-effects model matrix of a formula, with R's treatment contrasts and column names. */
export function modelMatrix(formula: Pick<ParsedFormula, 'intercept' | 'variables' | 'terms'>, frame: Frame): ModelMatrix {
  const n = frame.n;
  const vars = new Map<string, { factor: { levels: string[]; index: Int32Array } | null; numeric: Float64Array | null; label: string }>();
  for (const v of formula.variables) {
    const col = requireColumn(frame, v.name);
    const label = v.forceFactor ? `factor(${v.name})` : v.name;
    if (!v.forceFactor && isNumericColumn(col)) {
      const x = new Float64Array(n);
      for (let i = 0; i < n; i++) x[i] = Number(col[i]);
      vars.set(v.name, { factor: null, numeric: x, label });
    } else {
      const f = factorOf(frame, v.name);
      if (f.levels.length < 2) {
        throw new LegibleError(`"${v.name}" has only one level (${f.levels[0] ?? 'none'}) in the data: a factor needs two or more; drop it from the formula`);
      }
      vars.set(v.name, { factor: f, numeric: null, label });
    }
  }
  // R's rule: a factor in a term is coded by contrasts when the term without it is contained in
  // an earlier term (or is empty), else by indicators for every level.
  const coding: ('contrast' | 'dummy' | 'numeric')[][] = formula.terms.map((term, ti) =>
    term.map((name) => {
      if (!vars.get(name)!.factor) return 'numeric';
      const margin = term.filter((x) => x !== name);
      if (margin.length === 0) return 'contrast';
      const earlier = formula.terms.slice(0, ti);
      return earlier.some((e) => margin.every((m) => e.includes(m))) ? 'contrast' : 'dummy';
    }),
  );
  if (!formula.intercept) {
    // Without an intercept, the first factor coded by contrasts gets every level instead.
    outer: for (let ti = 0; ti < formula.terms.length; ti++) {
      for (let vi = 0; vi < formula.terms[ti].length; vi++) {
        if (coding[ti][vi] === 'contrast') {
          coding[ti][vi] = 'dummy';
          break outer;
        }
      }
    }
  }
  const columns: Float64Array[] = [];
  const names: string[] = [];
  const termOf: number[] = [];
  if (formula.intercept) {
    columns.push(new Float64Array(n).fill(1));
    names.push('(Intercept)');
    termOf.push(-1);
  }
  formula.terms.forEach((term, ti) => {
    // Each variable contributes a list of (name suffix, value function) pieces; the term's columns
    // are their product, the first variable varying fastest.
    const pieces = term.map((name, vi) => {
      const v = vars.get(name)!;
      if (v.numeric) return [{ label: v.label, value: (i: number) => v.numeric![i] }];
      const f = v.factor!;
      const from = coding[ti][vi] === 'contrast' ? 1 : 0;
      return f.levels.slice(from).map((level, j) => {
        const li = j + from;
        return { label: `${v.label}${level}`, value: (i: number) => (f.index[i] === li ? 1 : 0) };
      });
    });
    let combos: { label: string; value: (i: number) => number }[][] = [[]];
    for (const p of pieces) {
      const next: typeof combos = [];
      for (const piece of p) for (const c of combos) next.push([...c, piece]);
      combos = next;
    }
    for (const combo of combos) {
      const x = new Float64Array(n);
      for (let i = 0; i < n; i++) {
        let v = 1;
        for (const piece of combo) v *= piece.value(i);
        x[i] = v;
      }
      columns.push(x);
      names.push(combo.map((c) => c.label).join(':'));
      termOf.push(ti);
    }
  });
  const factors = new Map<string, string[]>();
  for (const [name, v] of vars) if (v.factor) factors.set(name, v.factor.levels);
  return { columns, names, termOf, termLabels: formula.terms.map((t) => t.map((x) => vars.get(x)!.label).join(':')), factors, dropped: [] };
}

/** The response as 0/1 numbers; accepts 0/1, true/false (any case). */
export function binaryResponse(frame: Frame, name: string): Float64Array {
  const col = requireColumn(frame, name);
  const y = new Float64Array(frame.n);
  for (let i = 0; i < frame.n; i++) {
    const v = col[i];
    const s = typeof v === 'number' ? v : v.trim().toLowerCase();
    if (s === 1 || s === '1' || s === 'true') y[i] = 1;
    else if (s === 0 || s === '0' || s === 'false') y[i] = 0;
    else throw new LegibleError(`response "${name}" must be 0/1 (or true/false); row ${i + 1} has "${String(v)}"`);
  }
  return y;
}

/** Grouping factor of a random term (the interaction of its columns). */
export function groupingOf(frame: Frame, columns: string[]): { levels: string[]; index: Int32Array } {
  if (columns.length === 1) return factorOf(frame, columns[0]);
  const cols = columns.map((c) => requireColumn(frame, c));
  const keys: string[] = new Array(frame.n);
  for (let i = 0; i < frame.n; i++) keys[i] = cols.map((c) => String(c[i])).join(':');
  const levels = [...new Set(keys)].sort(naturalCompare);
  const at = new Map(levels.map((l, i) => [l, i]));
  const index = new Int32Array(frame.n);
  for (let i = 0; i < frame.n; i++) index[i] = at.get(keys[i])!;
  return { levels, index };
}
