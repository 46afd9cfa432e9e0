// torchvision architectures as a lab exports them, for the layers, layout and zoo tests: one export
// path (grad_reference.py --zoo: torchvision's random initialisation, a zero-initialised head redrawn
// so the logits depend on the input, opset 17, outputs "logits" and "feat") and one cache
// (~/.cache/legible-zoo, keyed by the torch and torchvision versions, the architecture, the size and
// the script; test/torch-ref.ts, zooExport), so VGG-16 (528 MB) and ViT-B/16 (330 MB) are exported
// once per machine whichever test asks first.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { torchMissing, zooExport } from './torch-ref.ts';

/** null when torch and torchvision import, else why not (a test's skip reason). */
export const torchvisionMissing = torchMissing;

export interface Exported {
  file: string;
  size: number;
  /** torch's named_modules() names (the exported module's: the tensor names come from them). */
  modules: string[];
  /** Input name ("input"). */
  input: string;
}

/** Input size each architecture is exported at, shared with the zoo so both use one file. */
export const EXPORT_SIZE: Record<string, number> = { vgg16: 224, vit_b_16: 224, inception_v3: 96, tiny_vit: 32, tiny_convnext: 32 };

/** The ONNX export of torchvision architecture `name` (or tiny_vit / tiny_convnext), exported once. */
export function torchvisionExport(name: string, size = EXPORT_SIZE[name] ?? 64): Exported {
  const dir = zooExport(name, size, 1);
  const meta = JSON.parse(readFileSync(join(dir, 'meta.json'), 'utf8')) as { size: number; modules: string[] };
  return { file: join(dir, 'model.onnx'), size: meta.size, modules: meta.modules, input: 'input' };
}
