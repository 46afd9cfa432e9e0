// Runs the PyTorch reference scripts (Debian's /usr/bin/python3 with python3-torch and
// python3-torchvision) and caches what they write under .cache/grad-reference/, keyed by a hash of
// the script and its arguments, so reruns are fast.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
/** Debian's Python, which has torch; the python3 on PATH may not. */
export const TORCH_PYTHON = process.env.LEGIBLE_TORCH_PYTHON ?? '/usr/bin/python3';

let torchAvailable: string | null | undefined;
/** null when torch and torchvision import, else why not (for a test's skip message). */
export function torchMissing(): string | null {
  if (torchAvailable !== undefined) return torchAvailable;
  // (torch.onnx.export needs no `onnx` Python package: python3-onnx is not required.)
  const r = spawnSync(TORCH_PYTHON, ['-c', 'import torch, torchvision'], { encoding: 'utf8' });
  torchAvailable = r.status === 0 ? null : `${TORCH_PYTHON} cannot import torch and torchvision (apt install python3-torch python3-torchvision)`;
  return torchAvailable;
}

/**
 * Runs `script` (a file in stimuli-pipeline/test, or a path under stimuli-pipeline such as
 * bench/x.py) as `script [...before] OUTDIR ...args` into a cached folder under `cache`; returns
 * the folder.
 */
export function cachedRun(script: string, args: (string | number)[], before: string[] = [], cache = join(ROOT, '.cache/grad-reference')): string {
  const path = join(ROOT, 'stimuli-pipeline', script.includes('/') ? script : join('test', script));
  const hash = createHash('sha256').update(readFileSync(path)).update(JSON.stringify([before, args])).digest('hex').slice(0, 16);
  const dir = join(cache, `${args.join('-')}-${hash}`);
  if (existsSync(join(dir, 'meta.json'))) return dir;
  const tmp = `${dir}.tmp${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  const r = spawnSync(TORCH_PYTHON, [path, ...before, tmp, ...args.map(String)], { encoding: 'utf8', env: { ...process.env, PYTHONWARNINGS: 'ignore' } });
  if (r.status !== 0) throw new Error(`${script} ${args.join(' ')} failed:\n${r.stderr.slice(-3000)}`);
  rmSync(dir, { recursive: true, force: true });
  renameSync(tmp, dir);
  return dir;
}

export const readF32 = (path: string) => {
  const b = readFileSync(path);
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
};
export const readF64 = (path: string) => {
  const b = readFileSync(path);
  return new Float64Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
};

/** ‖a − b‖ / ‖b‖. */
export function relL2(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`lengths differ: ${a.length} vs ${b.length}`);
  let d = 0;
  let n = 0;
  for (let i = 0; i < a.length; i++) {
    d += (a[i] - b[i]) ** 2;
    n += b[i] ** 2;
  }
  return Math.sqrt(d / n);
}

let torchVersionText: string | undefined;
/** PyTorch's and torchvision's versions, e.g. "1.13.1 0.14.1" (part of the zoo's cache keys). */
export function torchVersion(): string {
  if (torchVersionText === undefined) {
    const r = spawnSync(TORCH_PYTHON, ['-c', 'import torch, torchvision; print(torch.__version__, torchvision.__version__)'], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`cannot import torch: ${r.stderr.slice(-500)}`);
    torchVersionText = r.stdout.trim();
  }
  return torchVersionText;
}

/**
 * A torchvision architecture as a lab exports it (grad_reference.py --zoo: random weights from
 * torchvision's own initialisation, outputs "logits" and "feat"), with autograd's input gradients.
 * Exported once and cached under ~/.cache/legible-zoo (LEGIBLE_ZOO_CACHE), keyed by the torch and
 * torchvision versions, the architecture and the script: some exports are hundreds of MB.
 */
export function zooExport(arch: string, size: number, batch: number, opset = 17): string {
  const cache = join(process.env.LEGIBLE_ZOO_CACHE ?? join(homedir(), '.cache', 'legible-zoo'), `torch-${torchVersion().replace(/[^0-9A-Za-z.]+/g, '-')}`);
  return cachedRun('grad_reference.py', [arch, size, batch, opset], ['--zoo'], cache);
}
