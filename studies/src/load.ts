// Reading study files: YAML → zod, with every problem located (path in the file, line, column)
// and explained (what is allowed). Also resolves the study's files relative to the study file.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { isMap, isPair, isScalar, isSeq, LineCounter, parseDocument, type Document, type Node as YamlNode } from 'yaml';
import type { z } from 'zod';
import { LegibleError } from './errors.ts';
import { didYouMean } from './names.ts';
import { inputConflicts, readModelFile } from './model-file.ts';
import { Study } from './schema.ts';

export interface StudyProblem {
  /** Dotted path in the file, e.g. "design.trials_per_participant" or "model.layers[1].tensor". */
  path: string;
  line: number;
  column: number;
  message: string;
}

export interface LoadedStudy {
  study: Study;
  /** Absolute path of the study file and of its folder. */
  file: string;
  dir: string;
  /** Absolute paths of the files the study refers to. */
  paths: { model: string; images: string; build: string };
}

export class StudyFileError extends LegibleError {
  constructor(
    readonly file: string,
    readonly problems: StudyProblem[],
  ) {
    super(`${file}: ${problems.length} problem${problems.length === 1 ? '' : 's'}\n${formatProblems(file, problems)}`);
  }
}

export function formatProblems(file: string, problems: StudyProblem[]): string {
  return problems.map((p) => `  ${file}:${p.line}:${p.column}  ${p.path || '(top level)'}: ${p.message}`).join('\n');
}

/** Parse and validate study text. Returns the study or every problem found. */
export function parseStudy(text: string): { study: Study; problems: [] } | { study: null; problems: StudyProblem[] } {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  const at = (offset: number) => {
    const pos = lines.linePos(offset);
    return { line: pos.line, column: pos.col };
  };
  if (doc.errors.length > 0) {
    return {
      study: null,
      problems: doc.errors.map((e) => ({ path: '', ...at(e.pos[0]), message: `YAML syntax: ${e.message.split('\n')[0]}` })),
    };
  }
  const data: unknown = doc.toJS();
  if (data === null || typeof data !== 'object' || Array.isArray(data)) {
    return { study: null, problems: [{ path: '', line: 1, column: 1, message: 'expected a YAML mapping with the study\'s fields (id, title, model, …)' }] };
  }
  const parsed = Study.safeParse(data, { reportInput: true });
  if (parsed.success) return { study: parsed.data, problems: [] };
  const problems = parsed.error.issues.flatMap((issue) => describeIssue(issue, doc, at));
  problems.sort((a, b) => a.line - b.line || a.column - b.column);
  return { study: null, problems };
}

/** Load a study by file path, folder, or id (looked up as <studiesDir>/<id>/study.yaml). */
export function loadStudy(ref: string, opts: { studiesDir?: string; checkFiles?: boolean } = {}): LoadedStudy {
  const file = resolveStudyFile(ref, opts.studiesDir);
  const text = readFileSync(file, 'utf8');
  const result = parseStudy(text);
  if (!result.study) throw new StudyFileError(file, result.problems);
  const dir = dirname(file);
  const study = result.study;
  const rel = (p: string) => (isAbsolute(p) ? p : resolve(dir, p));
  const loaded: LoadedStudy = {
    study,
    file,
    dir,
    paths: { model: rel(study.model.onnx), images: rel(study.dataset.images), build: join(dir, 'build') },
  };
  const checkAll = opts.checkFiles ?? true;
  const problems = [...resolveModelInput(loaded, text, checkAll), ...(checkAll ? checkFiles(loaded, text) : [])];
  if (problems.length) throw new StudyFileError(file, problems.sort((a, b) => a.line - b.line || a.column - b.column));
  return loaded;
}

/**
 * model.input from model.json beside the ONNX file (model-file.ts), where the study leaves it out;
 * where both give it, every field must agree. Without either, a problem only when `required`
 * (the server, which never runs the model, loads studies without checking their files).
 */
function resolveModelInput(loaded: LoadedStudy, text: string, required: boolean): StudyProblem[] {
  const { study, paths } = loaded;
  let described: ReturnType<typeof readModelFile>;
  try {
    described = readModelFile(paths.model);
  } catch (e) {
    if (!(e instanceof LegibleError)) throw e;
    return [{ path: 'model.onnx', ...locate(text, ['model', 'onnx']), message: e.message }];
  }
  if (!described) {
    if (study.model.input || !required) return [];
    return [
      {
        path: 'model.input',
        ...locate(text, ['model', 'input']),
        message: `missing: the study has no model.input and there is no model.json beside ${paths.model}. Write one with \`legible model init ${relative(process.cwd(), paths.model) || paths.model} --preset torchvision\` (or timm, hf-vit; docs/models.md), or add model.input (size, mean, std, …) here.`,
      },
    ];
  }
  const { layout: _layout, name: _name, ...fromFile } = described.model.input;
  if (!study.model.input) {
    study.model.input = fromFile;
    return [];
  }
  const show = (v: unknown) => (v === undefined ? '(not set)' : JSON.stringify(v));
  return inputConflicts(study.model.input, fromFile).map((c) => ({
    path: `model.input.${c.field}`,
    ...locate(text, ['model', 'input', c.field]),
    message: `${show(c.study)} here but ${show(c.file)} in ${described.path}: the two must agree. Remove model.input from the study to use model.json, or correct the one that is wrong.`,
  }));
}

export function resolveStudyFile(ref: string, studiesDir = defaultStudiesDir()): string {
  const candidates = [ref, join(ref, 'study.yaml'), join(studiesDir, ref, 'study.yaml')];
  for (const c of candidates) {
    if (existsSync(c) && statSync(c).isFile()) return resolve(c);
  }
  throw new LegibleError(`no study "${ref}": give a study file, its folder, or an id with a folder ${join(studiesDir, ref)}/study.yaml`);
}

/** The repository's studies/ folder (this package's folder). */
export function defaultStudiesDir(): string {
  return resolve(dirname(new URL(import.meta.url).pathname), '..');
}

/**
 * A problem at `path` in study text (e.g. ['model', 'layers', 1, 'tensor']), with its line and column:
 * of the value there, or of the nearest parent present when the field is absent. For checks outside
 * this package (the model's tensors) that report into the study file.
 */
export function problemAt(text: string, path: (string | number)[], message: string): StudyProblem {
  return { path: formatPath(path), ...locate(text, path), message };
}

function locate(text: string, path: (string | number)[]): { line: number; column: number } {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines });
  const node = nodeAt(doc, path).node;
  const pos = lines.linePos(node?.range?.[0] ?? 0);
  return { line: pos.line, column: pos.col };
}

function checkFiles(loaded: LoadedStudy, text: string): StudyProblem[] {
  const problems: StudyProblem[] = [];
  if (!existsSync(loaded.paths.model)) {
    problems.push({ path: 'model.onnx', ...locate(text, ['model', 'onnx']), message: `file not found: ${loaded.paths.model} (paths are relative to the study file)` });
  }
  if (!existsSync(loaded.paths.images) && !loaded.study.dataset.generate) {
    problems.push({
      path: 'dataset.images',
      ...locate(text, ['dataset', 'images']),
      message: `folder not found: ${loaded.paths.images} (paths are relative to the study file)`,
    });
  }
  return problems;
}

// ─── From zod issues to located, readable problems ────────────────────────────────────────
type Issue = z.core.$ZodIssue & { input?: unknown };

function describeIssue(issue: Issue, doc: Document, at: (offset: number) => { line: number; column: number }): StudyProblem[] {
  const path = issue.path.filter((p): p is string | number => typeof p !== 'symbol');
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((key) => {
      const { node } = nodeAt(doc, [...path, key], true);
      const known = knownKeys(doc, path, key);
      const hint = didYouMean(key, known);
      return {
        path: formatPath([...path, key]),
        ...at(node?.range?.[0] ?? 0),
        message: `unknown field "${key}"${hint ? ` — did you mean "${hint}"?` : ''}${known.length ? ` Allowed here: ${known.join(', ')}.` : ''}`,
      };
    });
  }
  const { node, depth } = nodeAt(doc, path);
  const missing = depth < path.length;
  // A field that is absent is reported at the key of its nearest present parent (`model:`).
  const anchor = missing && depth > 0 ? nodeAt(doc, path.slice(0, depth), true).node : node;
  const where = at(anchor?.range?.[0] ?? 0);
  if (missing && issue.code === 'invalid_type' && issue.input === undefined) {
    return [{ path: formatPath(path), ...where, message: `missing required field "${String(path[path.length - 1])}" (${expectation(issue)})` }];
  }
  let message = explain(issue);
  // Say what was written, when the message doesn't already: the scalar from the file itself.
  if (!missing && !/\bgot\b/.test(message)) {
    if (isScalar(node)) message += `, got ${show(node.value)}`;
    else if (issue.code === 'invalid_type') message += `, got ${show(issue.input)}`;
  }
  return [{ path: formatPath(path), ...where, message }];
}

function explain(issue: Issue): string {
  switch (issue.code) {
    case 'invalid_type':
      return expectation(issue);
    case 'invalid_value':
      return `expected one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}`;
    case 'invalid_union': {
      if ((issue as { note?: string }).note === 'No matching discriminator' || (issue as { discriminator?: string }).discriminator) return issue.message;
      const inner = issue.errors.flat().map((e) => e.message);
      return [...new Set(inner)].join('; or ');
    }
    default:
      return issue.message;
  }
}

function expectation(issue: Issue): string {
  if (issue.code === 'invalid_type') {
    if (issue.message && !issue.message.startsWith('Invalid input')) return issue.message;
    const kinds: Record<string, string> = { object: 'a mapping', array: 'a list', string: 'text', number: 'a number', boolean: 'true or false' };
    return `expected ${kinds[issue.expected] ?? issue.expected}`;
  }
  return issue.message;
}

function show(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  const s = JSON.stringify(v);
  return s.length > 40 ? `${s.slice(0, 37)}…` : s;
}

export function formatPath(path: (string | number)[]): string {
  return path.reduce<string>((acc, p) => (typeof p === 'number' ? `${acc}[${p}]` : acc ? `${acc}.${p}` : p), '');
}

/** The deepest YAML node along `path`; with `key`, the key node of the last step. */
function nodeAt(doc: Document, path: (string | number)[], key = false): { node: YamlNode | null; depth: number } {
  let node: unknown = doc.contents;
  let depth = 0;
  for (const [i, step] of path.entries()) {
    const last = i === path.length - 1;
    if (isMap(node)) {
      const pair = node.items.find((p) => isPair(p) && isScalar(p.key) && p.key.value === step);
      if (!pair) break;
      node = key && last ? pair.key : pair.value;
    } else if (isSeq(node) && typeof step === 'number' && step < node.items.length) {
      node = node.items[step];
    } else break;
    depth++;
  }
  return { node: (node as YamlNode | null) ?? null, depth };
}

function knownKeys(doc: Document, parentPath: (string | number)[], _unknown: string): string[] {
  // The allowed keys come from the schema, walked along the path.
  let schema: z.core.$ZodType | undefined = Study as unknown as z.core.$ZodType;
  let data: unknown = doc.toJS();
  for (const step of parentPath) {
    schema = schema && childSchema(schema, step, data);
    data = data && typeof data === 'object' ? (data as Record<string | number, unknown>)[step] : undefined;
  }
  const shape = schema && objectShape(schema, data);
  return shape ? Object.keys(shape) : [];
}

function unwrap(schema: z.core.$ZodType): z.core.$ZodType {
  let s = schema;
  for (let i = 0; i < 10; i++) {
    const def = s._zod.def as { type: string; innerType?: z.core.$ZodType; in?: z.core.$ZodType };
    if (def.innerType) s = def.innerType;
    else if (def.type === 'pipe' && def.in) s = def.in;
    else break;
  }
  return s;
}

function objectShape(schema: z.core.$ZodType, data: unknown): Record<string, z.core.$ZodType> | undefined {
  const s = unwrap(schema);
  const def = s._zod.def as { type: string; shape?: Record<string, z.core.$ZodType>; options?: z.core.$ZodType[] };
  if (def.type === 'object') return def.shape;
  if (def.type === 'union' && def.options) {
    // Discriminated unions: pick the option whose literal `kind` matches the data.
    const kind = data && typeof data === 'object' ? (data as Record<string, unknown>).kind : undefined;
    for (const opt of def.options) {
      const shape = objectShape(opt, data);
      const lit = shape?.kind && (unwrap(shape.kind)._zod.def as { values?: unknown[] }).values;
      if (shape && (!lit || lit.includes(kind))) return shape;
    }
  }
  return undefined;
}

function childSchema(schema: z.core.$ZodType, step: string | number, data: unknown): z.core.$ZodType | undefined {
  const s = unwrap(schema);
  const def = s._zod.def as { type: string; element?: z.core.$ZodType };
  if (def.type === 'array' && typeof step === 'number') return def.element;
  const shape = objectShape(s, data);
  return shape?.[step as string];
}
