// onnxruntime-node sessions: one place that picks the execution provider and says which it used.
import type { InferenceSession } from 'onnxruntime-node';
import { LegibleError } from '@legible/studies';

export type Device = 'auto' | 'cpu' | 'webgpu' | 'cuda';

export interface OpenedSession {
  session: InferenceSession;
  device: Exclude<Device, 'auto'>;
}

/**
 * Open a session on the requested device. `auto` uses the CPU provider for now: choosing and
 * falling back between GPU providers is the pipeline issue's work (stimuli-pipeline/README).
 */
export async function openSession(model: Uint8Array, opts: { device?: Device; threads?: number; log?: (s: string) => void } = {}): Promise<OpenedSession> {
  const ort = await import('onnxruntime-node');
  const device = opts.device === undefined || opts.device === 'auto' ? 'cpu' : opts.device;
  try {
    const session = await ort.InferenceSession.create(model, {
      executionProviders: [device],
      graphOptimizationLevel: 'all',
      intraOpNumThreads: opts.threads ?? 0,
      interOpNumThreads: 1,
    });
    opts.log?.(`onnxruntime ${ort.env.versions.common}: ${device} execution provider`);
    return { session, device };
  } catch (err) {
    throw new LegibleError(`could not start onnxruntime on "${device}": ${(err as Error).message}\n  Try --device cpu.`);
  }
}

/** The fixed batch size of the model's first input, or null when the batch dimension is dynamic. */
export function fixedBatch(session: InferenceSession): number | null {
  const meta = session.inputMetadata?.[0];
  if (!meta || !meta.isTensor) return null;
  const first = meta.shape[0];
  return typeof first === 'number' && first > 0 ? first : null;
}
