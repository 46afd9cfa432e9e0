// "Try an image": the study's model, truncated at its tapped tensors (model/probe.onnx), runs in the
// browser with onnxruntime-web — WebGPU where the browser has it, else wasm (multi-threaded when the
// page is cross-origin isolated). Each study feature's value is computed as `legible stimuli`
// computes it: channels from the in-graph spatial mean (or max), NMF codes from the spatial mean by the
// same exact float64 non-negative least-squares solve with the dictionary fixed
// (stimuli-pipeline/src/hals.ts); then its percentile among the reference
// images and a spatial heat map over the photo. Loaded only when the panel opens.
import { nmfCodes, nmfGram } from '@legible/stimuli-pipeline/hals';
import type { ExplorerData, TryData } from '../build.ts';
import type { ProbeLayer } from '../model.ts';
import { el } from './main.ts';

type Ort = typeof import('onnxruntime-web');

export interface TryResult {
  backend: string;
  /** The whole computation: model, projections, percentiles, heat maps. */
  ms: number;
  /** onnxruntime-web's session.run alone. */
  modelMs: number;
  values: Record<string, number>;
  percentiles: Record<string, number>;
  maps: Record<string, { w: number; h: number; data: Float32Array }>;
}

/** uint8 RGBA pixels (the canvas's) → the model's normalised CHW input, as stimuli-pipeline's normalise(). */
export function toInput(rgba: Uint8ClampedArray, input: TryData['input'], w: number, h: number): Float32Array {
  const channels = input.channels === 'gray' ? 1 : 3;
  const plane = w * h;
  const out = new Float32Array(channels * plane);
  const scale = input.range / 255;
  for (let c = 0; c < channels; c++) {
    const src = input.channels === 'bgr' ? 2 - c : c;
    const mean = input.mean[input.mean.length === 1 ? 0 : c];
    const std = input.std[input.std.length === 1 ? 0 : c];
    for (let p = 0; p < plane; p++) {
      const px = channels === 1 ? Math.round(0.2126 * rgba[4 * p] + 0.7152 * rgba[4 * p + 1] + 0.0722 * rgba[4 * p + 2]) : rgba[4 * p + src];
      out[c * plane + p] = (px * scale - mean) / std;
    }
  }
  return out;
}

/** Mid-rank percentile of x among sorted reference values (0–100). */
export function percentile(sorted: readonly number[], x: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const m = (lo + hi) >> 1;
    if (sorted[m] < x) lo = m + 1;
    else hi = m;
  }
  let eq = lo;
  while (eq < sorted.length && sorted[eq] === x) eq++;
  return (100 * (lo + (eq - lo) / 2)) / sorted.length;
}

/**
 * TopK SAE codes from the encoder's pre-activations (rows × d): per row the `active` largest kept,
 * through ReLU, times the scale s — what the pipeline's encoder graph returns (train/sae.ts).
 */
export function saeCodes(pre: Float32Array, rows: number, enc: { d: number; active: number; scale: number }): Float32Array {
  const out = new Float32Array(rows * enc.d);
  for (let r = 0; r < rows; r++) {
    const row = pre.subarray(r * enc.d, (r + 1) * enc.d);
    const order = Array.from(row.keys()).sort((a, b) => row[b] - row[a] || a - b);
    for (const j of order.slice(0, enc.active)) out[r * enc.d + j] = Math.max(0, row[j]) * enc.scale;
  }
  return out;
}

/** The grid of positions of a layer and each position's channel vector (positions × channels). */
function positions(layer: ProbeLayer, raw: Float32Array): { w: number; h: number; rows: Float32Array } {
  const c = layer.channels;
  if (layer.shape.length === 1) return { w: 1, h: 1, rows: raw.slice(0, c) };
  let h: number;
  let w: number;
  let at: (p: number, ch: number) => number;
  if (layer.layout === 'nchw') {
    h = layer.shape[1];
    w = layer.shape.length > 2 ? layer.shape[2] : 1;
    at = (p, ch) => raw[ch * h * w + p];
  } else if (layer.layout === 'nhwc') {
    h = layer.shape[0];
    w = layer.shape[1];
    at = (p, ch) => raw[p * c + ch];
  } else {
    const t = layer.shape[0] - layer.classTokens;
    const side = Math.round(Math.sqrt(t));
    h = side * side === t ? side : 1;
    w = side * side === t ? side : t;
    at = (p, ch) => raw[(p + layer.classTokens) * c + ch];
  }
  const rows = new Float32Array(h * w * c);
  for (let p = 0; p < h * w; p++) for (let ch = 0; ch < c; ch++) rows[p * c + ch] = at(p, ch);
  return { w, h, rows };
}

export class Probe {
  private constructor(
    private readonly ort: Ort,
    private readonly session: import('onnxruntime-web').InferenceSession,
    private readonly spec: TryData,
    readonly backend: string,
  ) {}

  static async open(spec: TryData, base: string, preferWebGpu = true): Promise<Probe> {
    const model = new Uint8Array(await (await fetch(new URL(spec.model, base))).arrayBuffer());
    const load = async (file: string) => {
      const ort = (await import(/* @vite-ignore */ new URL(`ort/${file}`, base).href)) as Ort;
      ort.env.wasm.wasmPaths = new URL('ort/', base).href;
      return ort;
    };
    // WebGPU where the browser has an adapter (onnxruntime-web's WebGPU build); the wasm build otherwise.
    const gpu = (navigator as unknown as { gpu?: { requestAdapter(): Promise<unknown> } }).gpu;
    if (preferWebGpu && gpu) {
      try {
        if (await gpu.requestAdapter()) {
          const ort = await load('ort.webgpu.min.mjs');
          return new Probe(ort, await ort.InferenceSession.create(model, { executionProviders: ['webgpu'] }), spec, 'webgpu');
        }
      } catch {
        // No usable GPU: the wasm backend below.
      }
    }
    const ort = await load('ort.wasm.min.mjs');
    const threads = globalThis.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
    ort.env.wasm.numThreads = threads;
    const session = await ort.InferenceSession.create(model, { executionProviders: ['wasm'], graphOptimizationLevel: 'all' });
    return new Probe(ort, session, spec, `wasm (${threads} thread${threads === 1 ? '' : 's'}${globalThis.crossOriginIsolated ? ', cross-origin isolated' : ''})`);
  }

  /** Every study feature's value, percentile and heat map for a normalised input. */
  async run(input: Float32Array): Promise<TryResult> {
    const [h, w] = this.spec.size;
    const channels = this.spec.input.channels === 'gray' ? 1 : 3;
    const t0 = performance.now();
    const feeds = { [this.session.inputNames[0]]: new this.ort.Tensor('float32', input, [1, channels, h, w]) };
    const out = await this.session.run(feeds);
    const modelMs = performance.now() - t0;
    const get = (name: string) => out[name].data as Float32Array;
    const values: Record<string, number> = {};
    const percentiles: Record<string, number> = {};
    const maps: TryResult['maps'] = {};
    const nmfOf = new Map<string, Float32Array>();
    const nmfMaps = new Map<string, { w: number; h: number; codes: Float32Array }>();
    const saeOf = new Map<string, Float32Array>();
    const saeMaps = new Map<string, Float32Array>();
    const grids = new Map<string, ReturnType<typeof positions>>();
    const dicts = new Map<string, { W: Float64Array; G: Float64Array }>();
    for (const f of this.spec.features) {
      const layer = this.spec.layers.find((l) => l.name === f.layer)!;
      if (!grids.has(layer.name)) grids.set(layer.name, positions(layer, get(layer.outputs.raw)));
      const grid = grids.get(layer.name)!;
      const P = grid.w * grid.h;
      const map = new Float32Array(P);
      if (f.basis === 'channels') {
        values[f.id] = get(f.aggregate === 'max' ? layer.outputs.max : layer.outputs.mean)[f.index];
        for (let p = 0; p < P; p++) map[p] = grid.rows[p * layer.channels + f.index];
      } else if (f.basis === 'nmf') {
        const dict = this.spec.nmf[f.layer];
        const c = layer.channels;
        if (!dicts.has(f.layer)) {
          const W = Float64Array.from(dict.W);
          dicts.set(f.layer, { W, G: nmfGram(W, dict.k, c) });
        }
        const { W, G } = dicts.get(f.layer)!;
        if (!nmfOf.has(f.layer)) nmfOf.set(f.layer, nmfCodes(get(layer.outputs.mean), 1, W, G, dict.k, c));
        values[f.id] = nmfOf.get(f.layer)![f.index];
        if (!nmfMaps.has(f.layer)) {
          // Each position's code: its channel vector through the same solve.
          nmfMaps.set(f.layer, { w: grid.w, h: grid.h, codes: nmfCodes(grid.rows, P, W, G, dict.k, c) });
        }
        const codes = nmfMaps.get(f.layer)!.codes;
        for (let p = 0; p < P; p++) map[p] = codes[p * dict.k + f.index];
      } else if (f.basis === 'sae') {
        const enc = this.spec.sae[f.layer];
        if (!saeOf.has(f.layer)) {
          saeOf.set(f.layer, saeCodes(get(layer.outputs.sae!), 1, enc));
          // Each position's codes: its channel vector through the same encoder.
          const c = layer.channels;
          const pre = new Float32Array(P * enc.d);
          for (let p = 0; p < P; p++) {
            for (let j = 0; j < enc.d; j++) {
              let s = 0;
              for (let q = 0; q < c; q++) s += Math.fround(Math.fround(grid.rows[p * c + q] - enc.b_pre[q]) * enc.inv_scale) * enc.W_enc[q * enc.d + j];
              pre[p * enc.d + j] = s + enc.b_enc[j];
            }
          }
          saeMaps.set(f.layer, saeCodes(pre, P, enc));
        }
        values[f.id] = saeOf.get(f.layer)![f.index];
        const codes = saeMaps.get(f.layer)!;
        for (let p = 0; p < P; p++) map[p] = codes[p * enc.d + f.index];
      } else continue;
      percentiles[f.id] = percentile(f.sorted, values[f.id]);
      maps[f.id] = { w: grid.w, h: grid.h, data: map };
    }
    return { backend: this.backend, ms: performance.now() - t0, modelMs, values, percentiles, maps };
  }
}

/** An image (URL or file) → the model's input, resized as the study file says (sharp's geometry; the browser's resampling). */
async function pixelsOf(source: Blob, spec: TryData): Promise<{ input: Float32Array; url: string }> {
  const bitmap = await createImageBitmap(source, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  const [h, w] = spec.size;
  const canvas = new OffscreenCanvas(w, h);
  const ctx = canvas.getContext('2d', { willReadFrequently: true })!;
  ctx.fillStyle = '#ffffff';
  ctx.fillRect(0, 0, w, h);
  ctx.imageSmoothingQuality = 'high';
  if (bitmap.width === w && bitmap.height === h) ctx.drawImage(bitmap, 0, 0);
  else if (spec.input.resize) {
    const scale = spec.input.resize / Math.min(bitmap.width, bitmap.height);
    const rw = Math.max(w, Math.round(bitmap.width * scale));
    const rh = Math.max(h, Math.round(bitmap.height * scale));
    ctx.drawImage(bitmap, -Math.floor((rw - w) / 2), -Math.floor((rh - h) / 2), rw, rh);
  } else ctx.drawImage(bitmap, 0, 0, w, h);
  const rgba = ctx.getImageData(0, 0, w, h, { colorSpace: 'srgb' }).data;
  return { input: toInput(rgba, spec.input, w, h), url: URL.createObjectURL(source) };
}

function heat(photo: string, map: { w: number; h: number; data: Float32Array }, lo: number, hi: number): HTMLElement {
  const canvas = el('canvas', { class: 'map', width: String(map.w), height: String(map.h) });
  const ctx = canvas.getContext('2d')!;
  const img = ctx.createImageData(map.w, map.h);
  for (let p = 0; p < map.w * map.h; p++) {
    const t = hi > lo ? Math.max(0, Math.min(1, (map.data[p] - lo) / (hi - lo))) : 0;
    img.data[4 * p] = Math.round(255 * t);
    img.data[4 * p + 1] = Math.round(64 * (1 - t));
    img.data[4 * p + 2] = Math.round(255 * (1 - t));
    img.data[4 * p + 3] = Math.round(60 + 195 * t);
  }
  ctx.putImageData(img, 0, 0);
  return el('div', { class: 'heat' }, el('img', { src: photo, alt: '' }), canvas);
}

export async function mountTry(panel: HTMLElement, data: ExplorerData): Promise<void> {
  const base = document.baseURI;
  const status = el('p', { id: 'try-status', text: 'Loading the model and onnxruntime-web…' });
  const results = el('div', { id: 'try-results' });
  const close = el('button', { type: 'button', text: 'Close' });
  close.addEventListener('click', () => (panel.hidden = true));
  panel.replaceChildren(el('h2', { text: 'Try an image' }), close, status);
  const spec = (await (await fetch(new URL('data/try.json', base))).json()) as TryData;
  const probe = await Probe.open(spec, base);
  const file = el('input', { type: 'file', accept: 'image/*', id: 'try-file' });
  const pick = el('select', { id: 'try-pick' }, el('option', { value: '', text: 'or pick a data set image…' }), ...spec.images.map((im) => el('option', { value: im.id, text: im.id })));
  const show = async (blob: Blob, label: string, expected?: Record<string, number>) => {
    status.textContent = `Running ${label}…`;
    const { input, url } = await pixelsOf(blob, spec);
    const r = await probe.run(input);
    const rows = spec.features
      .filter((f) => f.id in r.values)
      .map((f) => {
        const m = r.maps[f.id];
        return el(
          'tr',
          { 'data-feature': f.id, 'data-value': String(r.values[f.id]), ...(expected ? { 'data-expected': String(expected[f.id]) } : {}) },
          el('th', { text: f.id }),
          el('td', { text: r.values[f.id].toPrecision(5) }),
          el('td', { text: `${r.percentiles[f.id].toFixed(1)}` }),
          el('td', {}, heat(url, m, f.sorted[0], f.sorted[f.sorted.length - 1])),
        );
      });
    results.replaceChildren(
      el('p', { text: `${label}: ${r.ms.toFixed(1)} ms on ${r.backend} (the model ${r.modelMs.toFixed(1)} ms)` }),
      el('table', { id: 'try-table' }, el('tr', {}, el('th', { text: 'feature' }), el('th', { text: 'value' }), el('th', { text: 'percentile among references' }), el('th', { text: 'where (heat map over the photo)' })), ...rows),
    );
    status.textContent = `Done: ${label}`;
    panel.dataset.ran = label;
    panel.dataset.ms = String(r.ms);
  };
  file.addEventListener('change', () => {
    const f = file.files?.[0];
    if (f) void show(f, f.name);
  });
  pick.addEventListener('change', async () => {
    const im = spec.images.find((x) => x.id === pick.value);
    if (!im) return;
    const blob = await (await fetch(new URL(im.input, base))).blob();
    await show(blob, im.id, im.values);
  });
  panel.replaceChildren(
    el('h2', { text: 'Try an image' }),
    close,
    el('p', { class: 'muted', text: `The model runs in this browser (${probe.backend}). Data set images are given at the model's input size, so their values equal the pipeline's; a dropped photo is resized by the browser, which differs slightly from the pipeline's resampling. ${data.features.length} study features; ` }),
    el('p', {}, file, ' ', pick),
    status,
    results,
  );
  status.textContent = `Ready (${probe.backend}).`;
  panel.dataset.backend = probe.backend;
  (window as unknown as { legibleTry: unknown }).legibleTry = {
    backend: probe.backend,
    /** Run a data set image (by id) n times; per run, the whole time and the model's, in ms (benchmarks). */
    async time(id: string, n: number): Promise<{ ms: number; modelMs: number }[]> {
      const im = spec.images.find((x) => x.id === id) ?? spec.images[0];
      const { input } = await pixelsOf(await (await fetch(new URL(im.input, base))).blob(), spec);
      const times: { ms: number; modelMs: number }[] = [];
      for (let i = 0; i < n; i++) {
        const r = await probe.run(input);
        times.push({ ms: r.ms, modelMs: r.modelMs });
      }
      return times;
    },
  };
}
