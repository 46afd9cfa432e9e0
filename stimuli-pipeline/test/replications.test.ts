// The replication studies (studies/<replication>/<id>/study.yaml, issue 14): each validates with
// `legible validate` and builds at reduced size on a random-weight stand-in of its architecture
// (torchvision's own initialisation, the zoo's cached export, test/torch-ref.ts zooExport) with
// model.json written by `legible model init --preset torchvision`, in a scratch tree laid out as
// the READMEs say (models/<arch>/model.onnx, data/imagenet/val/<class>/), so the study file's own
// relative paths are used unchanged. Images: Fashion-MNIST's class folders (installed with legible;
// grey, read as RGB). Reduced: fewer images, features, iterations, trials and (VGG-16, at 224 px)
// layers; every other setting as committed. Skipped without PyTorch.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, describe, it } from 'node:test';
import { parseDocument } from 'yaml';
import { Manifest, parseStudy } from '@legible/studies';
import { writeFashionMnist } from '../src/dataset.ts';
import { ROOT, torchMissing, zooExport } from './torch-ref.ts';

interface Replication {
  /** studies/<path>/study.yaml */
  path: string;
  arch: string;
  /** The stand-in's input size (the zoo's: VGG-16 exports only at 224). */
  size: number;
  /** The zoo export names this tensor "feat" (its second output): the study's tensor there. */
  feat: string;
  /** Keep only the last n layers (at reduced size). */
  layers?: number;
  /** Fashion-MNIST images per class (default 5; percentile queries need a larger held-out split). */
  perClass?: number;
}

const REPLICATIONS: Replication[] = [
  { path: 'neurons-vs-dictionary/basis-resnet50', arch: 'resnet50', size: 64, feat: '/layer3/layer3.5/relu_2/Relu_output_0' },
  { path: 'neurons-vs-dictionary/basis-vgg16', arch: 'vgg16', size: 224, feat: '/features/features.22/Relu_output_0', layers: 2 },
  { path: 'natural-vs-visualization/borowski-exp1', arch: 'googlenet', size: 64, feat: '/inception4c/Concat_output_0', layers: 3 },
  { path: 'imi-protocol/imi-resnet50', arch: 'resnet50', size: 64, feat: '/layer3/layer3.5/relu_2/Relu_output_0', perClass: 25 },
];

const cli = (args: string[], timeout = 1_200_000) =>
  spawnSync(process.execPath, [join(ROOT, 'bin/legible.mjs'), ...args], { cwd: ROOT, encoding: 'utf8', timeout, maxBuffer: 1 << 26, env: { ...process.env, LEGIBLE_TEST: '1' } });

type Items = { items: { get(k: string): unknown; set(k: string, v: unknown): void }[] };

/** The study at reduced size: everything as committed but the counts below. */
function reduce(file: string, size: number, keepLayers?: number): void {
  const doc = parseDocument(readFileSync(file, 'utf8'));
  const layers = doc.getIn(['model', 'layers']) as Items;
  if (keepLayers) layers.items.splice(0, layers.items.length - keepLayers);
  doc.setIn(['features', 'count'], 1);
  for (const b of (doc.getIn(['bases']) as Items).items) {
    if (b.get('kind') === 'nmf') {
      b.set('components', 4);
      b.set('max_iter', 30);
      // Each patch is resized to the input and run through the model: 4 per image, 4 images.
      b.set('patch', doc.createNode({ size: Math.floor(size / 2), stride: Math.floor(size / 2) }));
      b.set('fit_images', 4);
    }
    if (b.get('kind') === 'sae') {
      b.set('dictionary', 16);
      b.set('k', 4);
      b.set('epochs', 3);
    }
  }
  doc.setIn(['references', 'per_side'], 3);
  if (doc.hasIn(['references', 'visualization'])) doc.setIn(['references', 'visualization'], doc.createNode({ method: 'maco', steps: 4, batch: 4 }));
  if ((doc.getIn(['contribution', 'images']) as number) > 0) doc.setIn(['contribution', 'images'], 16);
  doc.setIn(['stimuli'], doc.createNode({ cell_px: 32, gap_px: 2, quality: 70 }));
  doc.setIn(['design', 'trials_per_participant'], 4);
  doc.setIn(['design', 'catch_trials'], 1);
  doc.setIn(['design', 'practice_trials'], 1);
  writeFileSync(file, doc.toString());
}

describe('replication studies: validate and build at reduced size on random-weight stand-ins', { skip: torchMissing() ?? false }, () => {
  const scratch = mkdtempSync(join(tmpdir(), 'legible-replications-'));
  after(() => rmSync(scratch, { recursive: true, force: true }));

  /** LEGIBLE_REPLICATIONS=imi-protocol,… runs only those (a substring of the path). */
  const only = process.env.LEGIBLE_REPLICATIONS?.split(',');
  for (const rep of REPLICATIONS.filter((r) => !only || only.some((o) => r.path.includes(o)))) {
    it(`${rep.path} (${rep.arch} at ${rep.size} px)`, async (t) => {
      // A tree of its own: models/<arch>/, data/imagenet/val/<class>/, studies/<replication>/<id>/.
      const root = mkdtempSync(join(scratch, `${rep.arch}-`));
      await writeFashionMnist(join(root, 'data', 'imagenet', 'val'), rep.perClass ?? 5);
      const modelDir = join(root, 'models', rep.arch);
      const onnx = join(modelDir, 'model.onnx');
      mkdirSync(modelDir, { recursive: true });
      symlinkSync(join(zooExport(rep.arch, rep.size, 1), 'model.onnx'), onnx); // model.json beside the link, not in the cache
      let r = cli(['model', 'init', onnx, '--preset', 'torchvision']);
      assert.equal(r.status, 0, r.stderr);
      const committed = join(ROOT, 'studies', rep.path);
      const dir = join(root, 'studies', rep.path);
      mkdirSync(dirname(dir), { recursive: true });
      cpSync(committed, dir, { recursive: true });
      const file = join(dir, 'study.yaml');
      const text = readFileSync(file, 'utf8');
      assert.ok(text.includes(`tensor: ${rep.feat} `), `${rep.path} does not tap ${rep.feat}`);
      writeFileSync(file, text.replace(`tensor: ${rep.feat} `, 'tensor: feat '));

      r = cli(['validate', file]);
      assert.equal(r.status, 0, r.stdout + r.stderr);
      reduce(file, rep.size, rep.layers);
      const study = parseStudy(readFileSync(file, 'utf8')).study!;
      const t0 = performance.now();
      r = cli(['stimuli', file, '--batch', '8']);
      assert.equal(r.status, 0, `legible stimuli failed (${r.signal ?? r.status}):\n${(r.stdout + r.stderr).split('\n').filter((l) => l && !/^(activations|visualized) /.test(l)).slice(-20).join('\n')}`);
      const seconds = (performance.now() - t0) / 1000;
      const manifest = Manifest.parse(JSON.parse(readFileSync(join(dir, 'build', 'manifest.json'), 'utf8')));
      for (const layer of study.model.layers) {
        for (const basis of study.bases) {
          assert.ok(manifest.features.some((f) => f.layer === layer.name && f.basis === basis.kind), `no ${layer.name}/${basis.kind} feature (rejected: ${(manifest.rejected ?? []).length})`);
        }
      }
      if ((study.contribution?.images ?? 500) > 0) {
        assert.ok(manifest.contribution && manifest.contribution.images > 0, 'no decision contribution');
        const studied = new Set(manifest.trials.filter((x) => x.kind === 'main').map((x) => x.feature));
        assert.ok(manifest.features.filter((f) => studied.has(f.id)).every((f) => f.contribution), 'a studied feature without its decision contribution');
      }
      for (const kind of study.references.kinds) assert.ok(manifest.trials.some((x) => x.kind === 'main' && x.reference_kind === kind), `no ${kind} trials`);
      assert.ok(manifest.trials.some((x) => x.kind === 'catch'), 'no catch trials');
      t.diagnostic(`${rep.path}: ${study.model.layers.length} layers × ${study.bases.length} bases, built in ${seconds.toFixed(1)} s: ${manifest.features.length} features, ${manifest.trials.length} trials`);
    });
  }
});
