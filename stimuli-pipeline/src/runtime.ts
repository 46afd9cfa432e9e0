// onnxruntime-node sessions: one place that picks the execution provider, falls back, and says
// which it used and why.
//   cpu    — always there (bundled);
//   webgpu — bundled with onnxruntime-node; needs a GPU with Vulkan (Linux), Metal or D3D12;
//   cuda   — needs onnxruntime's CUDA provider libraries next to the binding and an NVIDIA driver.
// `auto` tries cuda and webgpu where the machine has what they need, then cpu.
import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { InferenceSession } from 'onnxruntime-node';
import { LegibleError } from '@legible/studies';

export type Device = 'auto' | 'cpu' | 'webgpu' | 'cuda';
export const DEVICES: readonly Device[] = ['auto', 'cpu', 'webgpu', 'cuda'];

export interface OpenedSession {
  session: InferenceSession;
  device: Exclude<Device, 'auto'>;
}

export interface SessionOptions {
  device?: Device;
  /** Intra-op threads (0: onnxruntime's default, one per core). */
  threads?: number;
  /**
   * Whether onnxruntime's intra-op threads spin while waiting for work (its default, true). Spinning
   * saves a wake-up between short operators, but burns the cores that other work (decoding the next
   * batch, other processes) needs: on a 2-core machine extraction used 24% more CPU time with it.
   */
  spinning?: boolean;
  log?: (s: string) => void;
}

/** Why a GPU provider can't be tried on this machine, or null if it can. */
export function unavailable(device: 'webgpu' | 'cuda'): string | null {
  if (device === 'cuda') {
    if (process.platform !== 'linux' && process.platform !== 'win32') return 'CUDA runs on Linux and Windows only';
    const dir = bindingDir();
    const lib = process.platform === 'win32' ? 'onnxruntime_providers_cuda.dll' : 'libonnxruntime_providers_cuda.so';
    if (!dir || !existsSync(join(dir, lib))) return `onnxruntime's CUDA provider (${lib}) is not installed next to onnxruntime-node's binding`;
    if (process.platform === 'linux' && !existsSync('/dev/nvidiactl')) return 'no NVIDIA driver (/dev/nvidiactl)';
    return null;
  }
  if (process.platform === 'linux') {
    const gpu = (existsSync('/dev/dri') && readdirSync('/dev/dri').some((f) => f.startsWith('render'))) || existsSync('/dev/nvidiactl');
    if (!gpu) return 'no GPU device (/dev/dri/render* or /dev/nvidiactl)';
  }
  return null;
}

function bindingDir(): string | null {
  try {
    const require = createRequire(import.meta.url);
    const pkg = dirname(require.resolve('onnxruntime-node/package.json'));
    const arch = `${process.platform}/${process.arch}`;
    return join(pkg, 'bin', 'napi-v6', arch);
  } catch {
    return null;
  }
}

async function create(model: Uint8Array, device: Exclude<Device, 'auto'>, threads: number, spinning: boolean): Promise<InferenceSession> {
  const ort = await import('onnxruntime-node');
  return ort.InferenceSession.create(model, {
    executionProviders: [device],
    graphOptimizationLevel: 'all',
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    ...(spinning ? {} : { extra: { session: { intra_op: { allow_spinning: '0' } } } }),
  });
}

/** Open a session on the requested device; `auto` falls back to the next device and says why. */
export async function openSession(model: Uint8Array, opts: SessionOptions = {}): Promise<OpenedSession> {
  const ort = await import('onnxruntime-node');
  const requested = opts.device ?? 'auto';
  const threads = opts.threads ?? 0;
  const spinning = opts.spinning ?? true;
  const log = opts.log ?? (() => {});
  if (requested !== 'auto') {
    const why = requested === 'cpu' ? null : unavailable(requested);
    if (why) throw new LegibleError(`--device ${requested} is not available here: ${why}. Use --device auto or cpu.`);
    try {
      const session = await create(model, requested, threads, spinning);
      log(`onnxruntime ${ort.env.versions.common}: ${requested} execution provider`);
      return { session, device: requested };
    } catch (err) {
      throw new LegibleError(`could not start onnxruntime on "${requested}": ${firstLine(err)}\n  Use --device auto or cpu.`);
    }
  }
  const notes: string[] = [];
  for (const device of ['cuda', 'webgpu'] as const) {
    const why = unavailable(device);
    if (why) {
      notes.push(`${device}: ${why}`);
      continue;
    }
    try {
      const session = await create(model, device, threads, spinning);
      log(`onnxruntime ${ort.env.versions.common}: ${device} execution provider (auto)`);
      return { session, device };
    } catch (err) {
      notes.push(`${device}: ${firstLine(err)}`);
    }
  }
  const session = await create(model, 'cpu', threads, spinning);
  log(`onnxruntime ${ort.env.versions.common}: cpu execution provider (auto; ${notes.join('; ')})`);
  return { session, device: 'cpu' };
}

function firstLine(err: unknown): string {
  return String((err as Error)?.message ?? err)
    .split('\n')[0]
    .slice(0, 300);
}

/** The fixed batch size of the model's first input, or null when the batch dimension is dynamic. */
export function fixedBatch(session: InferenceSession): number | null {
  const meta = session.inputMetadata?.[0];
  if (!meta || !meta.isTensor) return null;
  const first = meta.shape[0];
  return typeof first === 'number' && first > 0 ? first : null;
}
