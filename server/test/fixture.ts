// A small, real study for the server's tests: a study.yaml in a temporary folder (the demo's
// shape), a manifest.json that validates against the Manifest contract, and tiny PNG stimuli
// under build/img with content-hashed names, as the pipeline writes them.
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { deflateSync } from 'node:zlib';
import { loadStudy, Manifest, MANIFEST_FORMAT, type LoadedStudy, type ManifestFeature, type ManifestTrial } from '@legible/studies';

export const LAYERS = ['block1', 'block2'] as const;
export const BASES = ['channels', 'nmf'] as const;
export const FEATURES_PER_CELL = 2;

export interface FixtureOptions {
  id?: string;
  mode?: 'preview' | 'pilot' | 'live';
  platform?: 'prolific' | 'generic';
  /** Extra YAML lines under `design:`. */
  design?: string[];
  /** Replaces the recruitment section (YAML lines, indented by two). */
  recruitment?: string[];
  trialsPerParticipant?: number;
  catchTrials?: number;
  practiceTrials?: number;
  timeLimitMinutes?: number;
  /** Extra Markdown appended to the consent text. */
  consentExtra?: string;
  /** Main trials per feature (different query pairs). */
  mainPerFeature?: number;
  referenceKinds?: ('natural' | 'visualization')[];
  within?: string[];
  layers?: string[];
  /** Replaces the exclusions section (YAML lines, indented by two). */
  exclusions?: string[];
  /** Leave out model.onnx, so that `legible serve` serves the build as it is (no pipeline run). */
  noModel?: boolean;
  /** The study's title (default "Server test study"). */
  title?: string;
  /** Features per layer × basis cell (default FEATURES_PER_CELL). */
  featuresPerCell?: number;
}

export interface Fixture {
  root: string;
  studiesDir: string;
  studyDir: string;
  studyFile: string;
  loaded: LoadedStudy;
  manifest: Manifest;
  cleanup(): void;
}

export function tempDir(prefix = 'legible-server-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** A 1×1 PNG of one colour. */
export function png(r: number, g: number, b: number): Buffer {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (buf: Buffer) => {
    let c = 0xffffffff;
    for (const byte of buf) c = crcTable[(c ^ byte) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type: string, data: Buffer) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
    const sum = Buffer.alloc(4);
    sum.writeUInt32BE(crc(body));
    return Buffer.concat([len, body, sum]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(1, 0);
  ihdr.writeUInt32BE(1, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // RGB
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(Buffer.from([0, r, g, b]))),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

/** makeFixture for a test file: every fixture it makes is removed after the file's tests. */
export function fixtureMaker(): (opts?: FixtureOptions) => Fixture {
  const made: Fixture[] = [];
  after(() => made.forEach((f) => f.cleanup()));
  return (opts = {}) => {
    const f = makeFixture(opts);
    made.push(f);
    return f;
  };
}

export function makeFixture(opts: FixtureOptions = {}): Fixture {
  const root = tempDir();
  const id = opts.id ?? 'fixture';
  const studiesDir = join(root, 'studies');
  const studyDir = join(studiesDir, id);
  const buildDir = join(studyDir, 'build');
  mkdirSync(join(buildDir, 'img'), { recursive: true });
  mkdirSync(join(studyDir, 'data'), { recursive: true });
  if (!opts.noModel) writeFileSync(join(studyDir, 'model.onnx'), Buffer.from('not a real model; the server never reads it'));
  writeFileSync(join(studyDir, 'data', 'a.png'), png(1, 2, 3));

  const kinds = opts.referenceKinds ?? ['natural'];
  const layers = opts.layers ?? [...LAYERS];
  const recruitment = opts.recruitment ?? [
    `  platform: ${opts.platform ?? 'prolific'}`,
    '  completed:',
    '    code: FIX-DONE',
    '  failed_checks:',
    '    code: FIX-CHECK',
    '  no_consent:',
    '    code: FIX-NOCONSENT',
    '  unsynced:',
    '    code: FIX-UNSYNCED',
  ];
  const yaml = [
    `id: ${id}`,
    `title: ${JSON.stringify(opts.title ?? 'Server test study')}`,
    `mode: ${opts.mode ?? 'pilot'}`,
    'seed: 7',
    'model:',
    '  onnx: model.onnx',
    '  input:',
    '    size: 28',
    '    channels: gray',
    '    mean: [0.5]',
    '    std: [0.25]',
    '  layers:',
    ...layers.flatMap((l) => [`    - name: ${l}`, `      tensor: ${l}`]),
    'dataset:',
    '  images: data',
    'bases:',
    '  - kind: channels',
    '  - kind: nmf',
    '    components: 4',
    'features:',
    '  select: random',
    `  count: ${FEATURES_PER_CELL}`,
    'references:',
    '  per_side: 9',
    '  columns: 3',
    `  kinds: [${kinds.join(', ')}]`,
    'design:',
    `  trials_per_participant: ${opts.trialsPerParticipant ?? 4}`,
    `  catch_trials: ${opts.catchTrials ?? 2}`,
    `  practice_trials: ${opts.practiceTrials ?? 2}`,
    `  time_limit_minutes: ${opts.timeLimitMinutes ?? 30}`,
    `  within: [${(opts.within ?? ['layer', 'basis']).join(', ')}]`,
    ...(opts.design ?? []).map((l) => `  ${l}`),
    'exclusions:',
    ...(opts.exclusions ?? ['  catch_accuracy_min: 0.5']),
    'recruitment:',
    ...recruitment,
    'text:',
    '  consent: |',
    '    ## Consent',
    '',
    '    You will see **pictures**.',
    ...(opts.consentExtra ?? '').split('\n').map((l) => `    ${l}`),
    '  instructions: |',
    '    Pick the picture that fits the *right* side.',
  ].join('\n');
  const studyFile = join(studyDir, 'study.yaml');
  writeFileSync(studyFile, `${yaml}\n`);

  // Stimuli: every image is a distinct 1×1 PNG named by its content hash.
  let colour = 0;
  const image = (): string => {
    colour++;
    const data = png(colour & 0xff, (colour >> 8) & 0xff, 200);
    const name = `img/${createHash('sha256').update(data).digest('hex').slice(0, 16)}.png`;
    writeFileSync(join(buildDir, name), data);
    return name;
  };

  const features: ManifestFeature[] = [];
  for (const layer of layers) {
    for (const basis of BASES) {
      for (let index = 0; index < (opts.featuresPerCell ?? FEATURES_PER_CELL); index++) {
        features.push({
          id: `${layer}/${basis}/${index}`,
          layer,
          basis,
          index,
          importance: null,
          stats: { mean: 0.5, std: 0.1, min: 0, max: 1 },
          references: { min: [`ref-min-${layer}-${basis}-${index}.png`], max: [`ref-max-${layer}-${basis}-${index}.png`] },
          queries: { min: [`q-min-${layer}-${basis}-${index}.png`], max: [`q-max-${layer}-${basis}-${index}.png`] },
        });
      }
    }
  }
  const trials: ManifestTrial[] = [];
  let n = 0;
  const trial = (kind: ManifestTrial['kind'], feature: ManifestFeature, referenceKind: 'natural' | 'visualization'): ManifestTrial => {
    const answer = (n++ % 2) as 0 | 1; // the max-matching query is first in half of the trials
    const maxImage = `dataset/max-${kind}-${n}.png`;
    const minImage = `dataset/min-${kind}-${n}.png`;
    return {
      id: `t${String(n).padStart(3, '0')}`,
      feature: feature.id,
      kind,
      reference_kind: referenceKind,
      assets: { min: image(), max: image(), queries: [image(), image()] },
      query_images: answer === 0 ? [maxImage, minImage] : [minImage, maxImage],
      answer,
    };
  };
  for (const f of features) {
    for (const rk of kinds) for (let i = 0; i < (opts.mainPerFeature ?? 1); i++) trials.push(trial('main', f, rk));
  }
  for (const f of features.slice(0, 4)) trials.push(trial('catch', f, kinds[0]));
  for (const f of features.slice(4, 7)) trials.push(trial('practice', f, kinds[0]));

  const manifest: Manifest = Manifest.parse({
    format: MANIFEST_FORMAT,
    study: id,
    seed: 7,
    model: { file: 'model.onnx', sha256: 'f'.repeat(64), input: { size: 28 } },
    dataset: { images: 'data', sha256: 'e'.repeat(64), count: 100, skipped: [], reference: 80, query: 20 },
    config: {},
    layers: layers.map((l) => ({ name: l, tensor: l, shape: [1, 8, 7, 7] })),
    bases: layers.flatMap((l) => BASES.map((b) => ({ layer: l, basis: b, features: 8, info: {} }))),
    features,
    trials,
  });
  writeFileSync(join(buildDir, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  const loaded = loadStudy(studyFile, { checkFiles: false });
  return { root, studiesDir, studyDir, studyFile, loaded, manifest, cleanup: () => rmSync(root, { recursive: true, force: true }) };
}
