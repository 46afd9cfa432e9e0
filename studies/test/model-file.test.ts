// model.json beside model.onnx carries the model's preprocessing; a study without model.input takes
// it, a study with one must agree with it, and a study with neither is told how to write one.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { loadStudy, StudyFileError } from '../src/load.ts';
import { modelFileFor, presetInput } from '../src/model-file.ts';

const scratch = mkdtempSync(join(tmpdir(), 'legible-model-file-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

let n = 0;
/** A study folder with model.onnx (bytes only: loading reads no graph), images/, and optional model.json. */
function folder(input: string | null, modelJson: unknown | null): string {
  const dir = join(scratch, `s${n++}`);
  mkdirSync(join(dir, 'images'), { recursive: true });
  writeFileSync(join(dir, 'model.onnx'), 'not read');
  if (modelJson !== null) writeFileSync(join(dir, 'model.json'), typeof modelJson === 'string' ? modelJson : JSON.stringify(modelJson, null, 2));
  writeFileSync(
    join(dir, 'study.yaml'),
    `id: m
title: M
model:
  onnx: model.onnx
${input ?? ''}  layers:
    - { name: a, tensor: t }
dataset:
  images: images
bases:
  - kind: channels
features: { select: all }
design: { trials_per_participant: 4 }
text: { consent: c, instructions: i }
`,
  );
  return join(dir, 'study.yaml');
}

const torchvision224 = modelFileFor('model.onnx', presetInput('torchvision', 224), 'torchvision', 'input');

describe('model.json: the preprocessing beside model.onnx', () => {
  it('a study without model.input takes model.json\'s', () => {
    const { study } = loadStudy(folder(null, torchvision224));
    assert.deepEqual(study.model.input, { size: 224, resize: 256, channels: 'rgb', range: 1, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] });
  });

  it('a study whose model.input agrees with model.json loads (one mean for all channels counts as three)', () => {
    const { study } = loadStudy(folder('  input: { size: [224, 224], resize: 256, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] }\n', torchvision224));
    assert.equal(study.model.input!.resize, 256);
    const hf = modelFileFor('model.onnx', presetInput('hf-vit', 224), 'hf-vit');
    assert.equal(loadStudy(folder('  input: { size: 224, mean: [0.5], std: [0.5] }\n', hf)).study.model.input!.size, 224);
  });

  it('a conflict is an error at each differing field of the study, naming model.json and the fix', () => {
    const file = folder('  input:\n    size: 224\n    mean: [0.5, 0.5, 0.5]\n    std: [0.229, 0.224, 0.225]\n', torchvision224);
    try {
      loadStudy(file);
      assert.fail('loaded');
    } catch (e) {
      assert.ok(e instanceof StudyFileError, String(e));
      const byPath = new Map(e.problems.map((p) => [p.path, p]));
      assert.deepEqual([...byPath.keys()].sort(), ['model.input.mean', 'model.input.resize']);
      const mean = byPath.get('model.input.mean')!;
      assert.equal(mean.line, 7);
      assert.match(mean.message, /\[0\.5,0\.5,0\.5\] here but \[0\.485,0\.456,0\.406\] in .*model\.json/);
      assert.match(mean.message, /Remove model\.input from the study to use model\.json, or correct the one that is wrong/);
      assert.match(byPath.get('model.input.resize')!.message, /\(not set\) here but 256 in/);
    }
    // The server loads without checking files, but a conflict is still a conflict.
    assert.throws(() => loadStudy(file, { checkFiles: false }), StudyFileError);
  });

  it('neither model.input nor model.json: an error that says how to write model.json', () => {
    const file = folder(null, null);
    assert.throws(
      () => loadStudy(file),
      (e: unknown) => e instanceof StudyFileError && e.problems.some((p) => p.path === 'model.input' && p.line === 4 && /legible model init \S*model\.onnx --preset torchvision/.test(p.message)),
    );
    // Without file checks (the server, which never runs the model) the study loads.
    assert.equal(loadStudy(file, { checkFiles: false }).study.model.input, undefined);
  });

  it('a model.json without an input section (the demo\'s training record) or for another ONNX file is not preprocessing', () => {
    assert.throws(() => loadStudy(folder(null, { format: 'legible-demo-model/1', file: 'model.onnx' })), /model\.input.*missing/s);
    assert.throws(() => loadStudy(folder(null, { ...torchvision224, file: 'other.onnx' })), /model\.input.*missing/s);
  });

  it('a broken model.json is an error naming its field', () => {
    const bad = { ...torchvision224, input: { ...torchvision224.input, mean: [0.5, 0.5] } };
    assert.throws(() => loadStudy(folder(null, bad)), (e: unknown) => e instanceof StudyFileError && /model\.json: input\.mean: expected 3 values/.test(e.message));
    const nhwc = { ...torchvision224, input: { ...torchvision224.input, layout: 'nhwc' } };
    assert.throws(() => loadStudy(folder(null, nhwc)), /input\.layout: legible feeds images as \[batch, channels, height, width\]/);
    assert.throws(() => loadStudy(folder(null, '{ "input": ')), /model\.json: not valid JSON/);
  });
});
