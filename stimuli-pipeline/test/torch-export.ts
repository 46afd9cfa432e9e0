// torchvision architectures exported to ONNX with random weights (export_torchvision.py), cached
// outside the repository (os.tmpdir()/legible-torch-exports): vit_b_16 alone is 330 MB.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TORCH_PYTHON } from './torch-ref.ts';

const SCRIPT = fileURLToPath(new URL('./export_torchvision.py', import.meta.url));
export const EXPORT_DIR = process.env.LEGIBLE_EXPORT_CACHE ?? join(tmpdir(), 'legible-torch-exports');

let missing: string | null | undefined;
/** null when torch and torchvision import, else why not (a test's skip reason). */
export function torchvisionMissing(): string | null {
  if (missing === undefined) {
    const r = spawnSync(TORCH_PYTHON, ['-c', 'import torch, torchvision'], { encoding: 'utf8' });
    missing = r.status === 0 ? null : `${TORCH_PYTHON} cannot import torch and torchvision (apt install python3-torch python3-torchvision)`;
  }
  return missing;
}

export interface Exported {
  file: string;
  size: number;
  /** torch's named_modules() names. */
  modules: string[];
}

/** The ONNX export of torchvision architecture `name` (or tiny_vit / tiny_convnext), exported once. */
export function torchvisionExport(name: string, seed = 0): Exported {
  const hash = createHash('sha256').update(readFileSync(SCRIPT)).update(`${name}/${seed}`).digest('hex').slice(0, 12);
  const file = join(EXPORT_DIR, `${name}-${seed}-${hash}.onnx`);
  if (!existsSync(`${file}.json`)) {
    mkdirSync(EXPORT_DIR, { recursive: true });
    const tmp = `${file}.tmp${process.pid}.onnx`;
    const r = spawnSync(TORCH_PYTHON, [SCRIPT, tmp, name, String(seed)], { encoding: 'utf8', env: { ...process.env, PYTHONWARNINGS: 'ignore' } });
    if (r.status !== 0) throw new Error(`export of ${name} failed:\n${r.stderr.slice(-3000)}`);
    renameSync(tmp, file);
    renameSync(`${tmp}.json`, `${file}.json`);
  }
  const meta = JSON.parse(readFileSync(`${file}.json`, 'utf8')) as { size: number; modules: string[] };
  return { file, ...meta };
}
