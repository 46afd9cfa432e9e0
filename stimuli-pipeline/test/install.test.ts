// The install: onnxruntime-node's postinstall downloads CUDA libraries from outside the npm registry
// and fails where that is unreachable. The project denies it through package.json's allowScripts
// (npm ≥ 11.19), not through a project .npmrc key that npm warns about on every command.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../..', import.meta.url));

function npm(args: string[]): { status: number | null; stderr: string; stdout: string } {
  const r = spawnSync('npm', args, { cwd: root, encoding: 'utf8', timeout: 120_000, env: { ...process.env, npm_config_loglevel: 'warn' } });
  return { status: r.status, stderr: r.stderr, stdout: r.stdout };
}

describe('install', () => {
  it("denies onnxruntime-node's download script in package.json, and no project config is unknown to npm", () => {
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
    assert.equal(pkg.allowScripts?.['onnxruntime-node'], false, 'package.json allowScripts must deny onnxruntime-node');
    const npmrc = join(root, '.npmrc');
    if (existsSync(npmrc)) assert.doesNotMatch(readFileSync(npmrc, 'utf8'), /onnxruntime-node-install/);
  });

  it('npm commands in the project print no warning the project causes', () => {
    for (const args of [['exec', '--no', '--', 'legible', '--help'], ['config', 'list'], ['install', '--dry-run', '--no-audit', '--no-fund']]) {
      const r = npm(args);
      assert.equal(r.status, 0, `npm ${args.join(' ')} failed:\n${r.stderr}`);
      assert.doesNotMatch(r.stderr, /npm warn/i, `npm ${args.join(' ')} warned:\n${r.stderr}`);
    }
  });

  it('the CPU provider is bundled: onnxruntime-node loads without the skipped download', async () => {
    const ort = await import('onnxruntime-node');
    assert.ok(ort.listSupportedBackends().some((b) => b.name === 'cpu'));
  });
});
