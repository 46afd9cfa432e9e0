// docs/gpu.md stays true: the CUDA provider files and the install flag it names are the ones
// onnxruntime-node's own install manifest lists (and the ones runtime.ts looks for), and the line
// it quotes for `--device auto` on a machine without a GPU is what openSession prints here.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { openSession, unavailable } from '../src/runtime.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const doc = readFileSync(join(root, 'docs/gpu.md'), 'utf8');
const require = createRequire(import.meta.url);
const ortDir = dirname(require.resolve('onnxruntime-node/package.json'));
const ortVersion = (JSON.parse(readFileSync(join(ortDir, 'package.json'), 'utf8')) as { version: string }).version;
/** The code blocks of the page. */
const blocks = [...doc.matchAll(/```[a-z]*\n([\s\S]*?)```/g)].map((m) => m[1].trim());

describe('docs/gpu.md', () => {
  test("the install command and the files it puts next to the binding are onnxruntime-node's own", () => {
    const metadata = require(join(ortDir, 'script/install-metadata.js')) as {
      requirements: Record<string, string[]>;
      manifests: Record<string, Record<string, unknown>>;
    };
    assert.ok(metadata.requirements['linux/x64'].includes('cuda12'), 'onnxruntime-node offers cuda12 on linux/x64');
    assert.ok(doc.includes('ONNXRUNTIME_NODE_INSTALL=cuda12 node node_modules/onnxruntime-node/script/install.js'));
    const files = Object.keys(metadata.manifests['linux/x64:cuda12']).map((f) => f.replace(/^\.\//, ''));
    assert.ok(files.length >= 1);
    for (const f of files) assert.ok(doc.includes(f), `docs/gpu.md names ${f}`);
    // runtime.ts's check looks for one of exactly these files.
    const why = unavailable('cuda');
    if (why?.includes('provider')) assert.ok(files.some((f) => why.includes(f)), why);
    assert.ok(doc.includes(`onnxruntime ${ortVersion}: cuda execution provider (auto)`), 'the GPU line quotes the installed version');
    assert.ok(doc.includes(`(${ortVersion})`), 'the page names the installed onnxruntime-node version');
  });

  test('the line quoted for a machine without a GPU is what --device auto prints here', async (t) => {
    if (!unavailable('cuda') || !unavailable('webgpu')) return t.skip(`this machine has a GPU provider (cuda: ${unavailable('cuda') ?? 'available'}; webgpu: ${unavailable('webgpu') ?? 'available'}), so auto does not fall back to the CPU`);
    if (!/not installed next to/.test(unavailable('cuda')!) || !/no GPU device/.test(unavailable('webgpu')!)) {
      return t.skip(`the page quotes the machine without CUDA provider files and without a GPU device; here: cuda: ${unavailable('cuda')}; webgpu: ${unavailable('webgpu')}`);
    }
    const lines: string[] = [];
    const { device } = await openSession(readFileSync(join(root, 'studies/demo/model.onnx')), { device: 'auto', log: (s) => lines.push(s) });
    assert.equal(device, 'cpu');
    assert.equal(lines.length, 1);
    assert.ok(blocks.includes(lines[0]), `docs/gpu.md quotes the line as printed:\n${lines[0]}`);
    await assert.rejects(openSession(readFileSync(join(root, 'studies/demo/model.onnx')), { device: 'cuda' }), (e: Error) => {
      assert.ok(doc.includes(`legible stimuli: ${e.message}`), `docs/gpu.md quotes the --device cuda error:\n${e.message}`);
      return true;
    });
  });
});
