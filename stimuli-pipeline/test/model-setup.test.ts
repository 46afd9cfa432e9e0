// `legible model init` and `legible model check` (docs/models.md): the torchvision export recipe, run
// exactly as docs/models.md prints it (random weights, ResNet-18 at 64 px to save time), then
// model.json written from the graph and the export checked against the recipe's own numbers; a
// wrong mean or channel order fails the check. Model init's refusals run on the demo model.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { ROOT, torchMissing } from './torch-ref.ts';

const scratch = mkdtempSync(join(tmpdir(), 'legible-model-setup-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

const cli = (args: string[], timeout = 120_000) =>
  spawnSync(process.execPath, [join(ROOT, 'bin/legible.mjs'), ...args], { cwd: ROOT, encoding: 'utf8', timeout, env: { ...process.env, LEGIBLE_TEST: '1' } });

/** The code block that follows `<!-- recipe: NAME -->` in docs/models.md. */
export function recipe(name: string): string {
  const doc = readFileSync(join(ROOT, 'docs/models.md'), 'utf8');
  const at = doc.indexOf(`<!-- recipe: ${name} -->`);
  assert.ok(at >= 0, `docs/models.md has no recipe "${name}"`);
  const block = /```python\n([\s\S]*?)```/.exec(doc.slice(at));
  assert.ok(block, `recipe "${name}" has no python block`);
  return block[1];
}

describe('legible model init', () => {
  it('infers the size and channels from the graph; refuses a preset that disagrees, and an existing model.json without --force', () => {
    const dir = mkdtempSync(join(scratch, 'demo-'));
    const onnx = join(dir, 'model.onnx');
    copyFileSync(join(ROOT, 'studies/demo/model.onnx'), onnx);
    let r = cli(['model', 'init', onnx, '--preset', 'torchvision']);
    assert.equal(r.status, 1, r.stdout + r.stderr);
    assert.match(r.stderr, /input "image" has 1 channel but preset torchvision is rgb \(3\)\. Give --channels gray with one --mean and --std value/);
    r = cli(['model', 'init', onnx, '--channels', 'gray', '--mean', '0.2860', '--std', '0.3530']);
    assert.equal(r.status, 0, r.stderr);
    const written = JSON.parse(readFileSync(join(dir, 'model.json'), 'utf8'));
    assert.deepEqual(written, {
      format: 'legible-model/1',
      file: 'model.onnx',
      preset: 'custom',
      input: { name: 'image', size: 28, channels: 'gray', range: 1, mean: [0.286], std: [0.353], layout: 'nchw' },
    });
    r = cli(['model', 'init', onnx, '--channels', 'gray', '--mean', '0.5', '--std', '0.5']);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /model\.json exists already: give --force to replace it/);
    r = cli(['model', 'init', onnx, '--channels', 'gray', '--mean', '0.5', '--std', '0.5', '--size', '32']);
    assert.equal(r.status, 1);
    r = cli(['model', 'init', onnx, '--channels', 'gray', '--mean', '0.5', '--std', '0.5', '--size', '32', '--force']);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /--size 32 disagrees with the graph: its input "image" is fixed at 28×28 pixels/);
  });
});

describe('the torchvision export recipe of docs/models.md', { skip: torchMissing() ?? false }, () => {
  const out = join(scratch, 'resnet18');
  let exported: ReturnType<typeof spawnSync> | null = null;
  const exportOnce = () => {
    if (!exported) {
      const script = join(scratch, 'export_torchvision.py');
      writeFileSync(script, recipe('torchvision'));
      exported = spawnSync('/usr/bin/python3', [script, 'resnet18', 'none', out], { encoding: 'utf8', timeout: 300_000, env: { ...process.env, LEGIBLE_EXPORT_SIZE: '64' } });
      assert.equal(exported.status, 0, String(exported.stderr));
    }
    return exported;
  };

  it('exports; model init writes the torchvision preprocessing at the graph\'s size; model check matches the recipe\'s numbers', (t) => {
    const said = String(exportOnce().stdout);
    assert.match(said, /next: legible model init .*model\.onnx --preset torchvision\n/);
    let r = cli(['model', 'init', join(out, 'model.onnx'), '--preset', 'torchvision']);
    assert.equal(r.status, 0, r.stderr);
    const written = JSON.parse(readFileSync(join(out, 'model.json'), 'utf8'));
    assert.deepEqual(written.input, { name: 'input', size: 64, resize: 73, channels: 'rgb', range: 1, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], layout: 'nchw' });
    r = cli(['model', 'check', join(out, 'model.onnx')]);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    const m = /largest difference (\S+) \((\S+) of the largest value\); top class (\d+), recipe (\d+)/.exec(r.stdout);
    assert.ok(m, r.stdout);
    assert.ok(Number(m[2]) < 1e-4, `relative difference ${m[2]}`);
    assert.equal(m[3], m[4]);
    t.diagnostic(r.stdout.trim());
  });

  for (const [what, change] of [
    ['a wrong mean', (i: Record<string, unknown>) => ({ ...i, mean: [0.5, 0.5, 0.5] })],
    ['BGR for RGB', (i: Record<string, unknown>) => ({ ...i, channels: 'bgr' })],
    ['no crop', (i: Record<string, unknown>) => ({ ...i, resize: undefined })],
  ] as const) {
    it(`model check fails with ${what}`, (t) => {
      exportOnce();
      const file = join(out, 'model.json');
      const good = readFileSync(file, 'utf8');
      try {
        const json = JSON.parse(good);
        writeFileSync(file, JSON.stringify({ ...json, input: change(json.input) }));
        const r = cli(['model', 'check', join(out, 'model.onnx')]);
        assert.equal(r.status, 1, r.stdout + r.stderr);
        assert.match(r.stderr, /does not match the recipe's numbers/);
        t.diagnostic(r.stderr.split('\n')[0]);
      } finally {
        writeFileSync(file, good);
      }
    });
  }
});
