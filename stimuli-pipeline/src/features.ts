// From the activation store to features: two streaming passes over the shards, so memory holds
// only what the study uses, never the whole store.
//   pass 1 — per channel, statistics over the reference split (which channels are alive), and a
//            seeded sample of rows to fit NMF on (unless NMF is fitted on patches);
//   NMF    — fitted per layer (onnxruntime products, HALS or MU);
//   SAE    — a TopK sparse autoencoder trained per layer on a seeded sample of the reference split's
//            spatially averaged activations (train/sae.ts: gradients from the VJP graph builder);
//   pass 2 — the values of the first channels of the draw and of every NMF concept and SAE latent (an
//            image's code: NMF's non-negative least squares with W fixed, the SAE encoder's output),
//            for every image, so exemplars and queries can be ranked;
//   pick   — per layer and basis, the features that make valid trials (exemplars.ts: pickFeatures);
//            channels the draw reaches beyond those of pass 2 are read from the store as needed.
// The fitted dictionaries stay open for what follows (decision contribution, visualizations); the
// caller releases them.
import { LegibleError, modelInput, rng, seedFrom, type Study } from '@legible/studies';
import type { ImageEntry } from './dataset.ts';
import { splitOf } from './dataset.ts';
import { checkSplitSizes, zeroOf, drawOrder, featureId, pickFeatures, rankContext, tallyOf, type Exemplars, type FeatureColumn, type Rejection } from './exemplars.ts';
import { fitNmf, NmfEncoder } from './nmf.ts';
import { patchActivations } from './patches.ts';
import { trainTopKSae, type TopKSae } from './train/sae.ts';
import type { Device } from './runtime.ts';
import type { ActivationStore, StoreLayer } from './store.ts';

export interface FeatureSet {
  /** Image ids of the rows, in store order. */
  ids: string[];
  refRows: number[];
  queryRows: number[];
  hashes: Map<string, string>;
  skipped: { path: string; reason: string }[];
  layers: StoreLayer[];
  bases: { layer: string; basis: string; features: number; info: Record<string, unknown> }[];
  selected: FeatureColumn[];
  /** Valid features outside the study (with extreme queries), from which practice trials and the example are drawn. */
  spare: FeatureColumn[];
  /** References and queries of every selected and spare feature, by feature id. */
  exemplars: Map<string, Exemplars>;
  /** Features left out because they can't make valid trials. */
  rejected: Rejection[];
  /** Per "layer/basis" (nmf, sae): the fitted dictionary, open until `release`. */
  dictionaries: Map<string, Dictionary>;
  /** Seconds spent fitting, per "layer/basis" (for the report; not part of the manifest). */
  fitSeconds: Map<string, number>;
  release(): Promise<void>;
}

/** A layer's fitted dictionary: k directions over its c channels and the encoder giving codes. */
export interface Dictionary {
  k: number;
  channels: number;
  /** k × c: NMF's W rows, or the SAE's unit-norm decoder rows. */
  directions: Float32Array;
  /** Codes of `count` activation vectors (count × c) → count × k. */
  encode(rows: Float32Array, count: number): Promise<Float32Array>;
  /** The SAE's encoder (sae only), for tools that run it elsewhere (the explorer's browser panel). */
  sae?: TopKSae['encoder'] & { active: number };
}

/** Below this variance explained an SAE basis is reported as fitting poorly (a warning; 0 or less: no better than the mean). */
export const SAE_POOR_FIT = 0.1;

/**
 * The warning for a trained SAE whose variance explained is below SAE_POOR_FIT (null otherwise): the
 * layer, the numbers, and what to change in the study file.
 */
export function saePoorFit(study: Study, layer: string, rows: number, info: { fvu: number; epochs: number; steps: number; dead: number }): string | null {
  const ve = 1 - info.fvu;
  if (Number.isFinite(ve) && ve >= SAE_POOR_FIT) return null;
  const i = study.bases.findIndex((b) => b.kind === 'sae');
  const b = study.bases[i] as SaeBasis;
  const failed = !Number.isFinite(ve) || ve <= 0;
  return (
    `sae on layer "${layer}" ${failed ? 'reconstructs the layer no better than its mean' : `explains little of the layer (below ${SAE_POOR_FIT})`}: ` +
    `variance explained ${Number.isFinite(ve) ? ve.toFixed(4) : ve} after ${info.epochs} epoch${info.epochs === 1 ? '' : 's'} (${info.steps} Adam steps) on ${rows} images, ` +
    `${info.dead} of ${b.dictionary} latents dead; ${failed ? 'the fit failed, and its latents' : 'its latents are close to their random start and'} may not separate images. ` +
    `In the study file, raise bases[${i}].epochs (now ${b.epochs}; each epoch is one step per 64 images), add images (dataset.images, or a larger dataset.split.reference)` +
    `${b.dictionary > 2 * b.k ? `, or lower bases[${i}].dictionary (now ${b.dictionary})` : ''}.`
  );
}

type NmfBasis = Extract<Study['bases'][number], { kind: 'nmf' }>;
type SaeBasis = Extract<Study['bases'][number], { kind: 'sae' }>;

interface ChannelStats {
  min: Float64Array;
  max: Float64Array;
  /** Reference images at exactly 0, per channel. */
  zeros: Float64Array;
}

export async function computeFeatures(
  study: Study,
  store: ActivationStore,
  opts: { model: Uint8Array; images: ImageEntry[]; device?: Device; batchSize?: number; log: (s: string) => void; quiet?: boolean },
): Promise<FeatureSet> {
  const layers = store.header.layers!;
  const channelsBasis = study.bases.find((b) => b.kind === 'channels');
  const nmfBasis = study.bases.find((b): b is NmfBasis => b.kind === 'nmf');
  const saeBasis = study.bases.find((b): b is SaeBasis => b.kind === 'sae');
  const useMax = channelsBasis?.kind === 'channels' && channelsBasis.aggregate === 'max';

  // ── Pass 1: ids and splits, channel statistics over the reference split, NMF fit rows. ──
  const ids: string[] = [];
  const hashes = new Map<string, string>();
  const skipped: { path: string; reason: string }[] = [];
  const stats: ChannelStats[] = layers.map((l) => ({ min: new Float64Array(l.channels).fill(Infinity), max: new Float64Array(l.channels).fill(-Infinity), zeros: new Float64Array(l.channels) }));
  const nRefEstimate = opts.images.filter((img) => splitOf(img.id, study.dataset.split) === 'reference').length;
  const fitShare = nmfBasis && !nmfBasis.patch ? Math.min(1, nmfBasis.fit_rows / Math.max(1, nRefEstimate)) : 0;
  const fitSample: Float32Array[][] = layers.map(() => []);
  const saeShare = saeBasis ? Math.min(1, saeBasis.fit_rows / Math.max(1, nRefEstimate)) : 0;
  const saeSample: Float32Array[][] = layers.map(() => []);
  for (let s = 0; s < store.shardCount; s++) {
    const shard = store.read(s);
    for (const [id, h] of Object.entries(shard.hashes)) hashes.set(id, h);
    skipped.push(...shard.skipped);
    shard.ids.forEach((id, r) => {
      const isRef = splitOf(id, study.dataset.split) === 'reference';
      ids.push(id);
      if (!isRef) return;
      layers.forEach((l, li) => {
        const values = (useMax ? shard.max : shard.mean)[li];
        const st = stats[li];
        for (let c = 0; c < l.channels; c++) {
          const v = values[r * l.channels + c];
          if (v < st.min[c]) st.min[c] = v;
          if (v > st.max[c]) st.max[c] = v;
          if (v === 0) st.zeros[c]++;
        }
        // A seeded, order-free sample of rows for NMF: decided per image id.
        if (fitShare > 0 && seedFrom('nmf-fit', nmfBasis!.seed, id) / 4294967296 < fitShare) {
          fitSample[li].push(shard.mean[li].slice(r * l.channels, (r + 1) * l.channels));
        }
        if (saeShare > 0 && (saeShare === 1 || seedFrom('sae-fit', saeBasis!.seed, id) / 4294967296 < saeShare)) {
          saeSample[li].push(shard.mean[li].slice(r * l.channels, (r + 1) * l.channels));
        }
      });
    });
  }
  const refRows: number[] = [];
  const queryRows: number[] = [];
  ids.forEach((id, row) => (splitOf(id, study.dataset.split) === 'reference' ? refRows : queryRows).push(row));
  checkSplitSizes(study, refRows.length, queryRows.length, ids.length);

  // ── NMF per layer. ──
  const nmf: { W: Float32Array; encoder: NmfEncoder }[] = [];
  const bases: FeatureSet['bases'] = [];
  const dictionaries = new Map<string, Dictionary>();
  const fitSeconds = new Map<string, number>();
  const releases: (() => Promise<void>)[] = [];
  const release = async () => {
    for (const r of releases.splice(0)) await r();
  };
  try {
    if (nmfBasis) {
      let patchRows: Awaited<ReturnType<typeof patchActivations>> | null = null;
      if (nmfBasis.patch) {
        const refImages = opts.images.filter((img) => splitOf(img.id, study.dataset.split) === 'reference');
        const chosen = rng(seedFrom('nmf-images', nmfBasis.seed)).sample(refImages, Math.min(nmfBasis.fit_images, refImages.length));
        chosen.sort((a, b) => (a.id < b.id ? -1 : 1));
        patchRows = await patchActivations({ model: opts.model, input: modelInput(study), layers: study.model.layers, images: chosen, patch: nmfBasis.patch, device: opts.device, batchSize: opts.batchSize, quiet: opts.quiet });
      }
      for (const [li, l] of layers.entries()) {
        let A: Float32Array;
        let n: number;
        if (patchRows) {
          // A seeded sample of at most fit_rows patches.
          n = Math.min(patchRows.rows, nmfBasis.fit_rows);
          const rowsIdx = rng(seedFrom('nmf-patches', nmfBasis.seed, l.name)).sample(Array.from({ length: patchRows.rows }, (_, i) => i), n).sort((a, b) => a - b);
          A = new Float32Array(n * l.channels);
          rowsIdx.forEach((r, i) => A.set(patchRows!.perLayer[li].subarray(r * l.channels, (r + 1) * l.channels), i * l.channels));
        } else {
          n = fitSample[li].length;
          A = new Float32Array(n * l.channels);
          fitSample[li].forEach((row, i) => A.set(row, i * l.channels));
        }
        checkNmfInput(A, l, nmfBasis, n);
        const t0 = performance.now();
        const fit = await fitNmf(A, n, l.channels, { k: nmfBasis.components, maxIter: nmfBasis.max_iter, tol: nmfBasis.tol, seed: seedFrom('nmf', nmfBasis.seed, l.name), solver: nmfBasis.solver, device: opts.device });
        opts.log(
          `nmf ${l.name}: k=${nmfBasis.components} on ${n} ${patchRows ? 'patches' : 'images'}, ${fit.iterations} ${nmfBasis.solver} iterations, relative error ${fit.relativeError.toFixed(4)}${fit.converged ? '' : ' (max_iter reached)'}`,
        );
        const encoder = await NmfEncoder.create(fit.W, nmfBasis.components, l.channels);
        releases.push(() => encoder.release());
        nmf.push({ W: fit.W, encoder });
        fitSeconds.set(`${l.name}/nmf`, (performance.now() - t0) / 1000);
        dictionaries.set(`${l.name}/nmf`, { k: nmfBasis.components, channels: l.channels, directions: fit.W, encode: (rows, count) => encoder.encode(rows, count) });
        bases.push({
          layer: l.name,
          basis: 'nmf',
          features: nmfBasis.components,
          info: {
            solver: nmfBasis.solver,
            iterations: fit.iterations,
            relative_error: round(fit.relativeError),
            converged: fit.converged,
            fit_rows: n,
            fitted_on: patchRows ? `patches ${nmfBasis.patch!.size}px stride ${nmfBasis.patch!.stride}px` : 'images',
          },
        });
      }
    }

    // ── SAE per layer. ──
    const sae: Dictionary[] = [];
    /** Per layer: the warning of an SAE that fits poorly, repeated where its latents then fail to make trials. */
    const saePoor = new Map<string, string>();
    if (saeBasis) {
      for (const [li, l] of layers.entries()) {
        const n = saeSample[li].length;
        if (n < 2) {
          throw new LegibleError(`sae on layer "${l.name}": only ${n} reference image${n === 1 ? '' : 's'} to train on (bases: sae, fit_rows = ${saeBasis.fit_rows}). Add images to dataset.images, or raise dataset.split.reference.`);
        }
        const A = new Float32Array(n * l.channels);
        saeSample[li].forEach((row, i) => A.set(row, i * l.channels));
        const trained = await trainTopKSae(A, n, l.channels, { dictionary: saeBasis.dictionary, k: saeBasis.k, epochs: saeBasis.epochs, seed: seedFrom('sae', saeBasis.seed, l.name), device: opts.device });
        releases.push(() => trained.release());
        const { info } = trained;
        opts.log(`sae ${l.name}: ${saeBasis.dictionary} latents, k=${saeBasis.k}, ${info.epochs} epochs on ${n} images in ${info.seconds.toFixed(1)}s: variance explained ${(1 - info.fvu).toFixed(4)}, ${info.dead} dead latents`);
        const poor = saePoorFit(study, l.name, n, info);
        if (poor) {
          saePoor.set(l.name, poor);
          opts.log(`warning: ${poor}`);
        }
        const dict: Dictionary = { k: saeBasis.dictionary, channels: l.channels, directions: trained.decoderDirections, encode: (rows, count) => trained.encode(rows, count), sae: { ...trained.encoder, active: saeBasis.k } };
        sae.push(dict);
        dictionaries.set(`${l.name}/sae`, dict);
        fitSeconds.set(`${l.name}/sae`, info.seconds);
        bases.push({
          layer: l.name,
          basis: 'sae',
          features: saeBasis.dictionary,
          info: {
            k: saeBasis.k,
            epochs: info.epochs,
            steps: info.steps,
            fit_rows: n,
            mse: round(info.mse),
            variance_explained: round(1 - info.fvu),
            dead_latents: info.dead,
            resampled: info.resampled.reduce((a, b) => a + b, 0),
          },
        });
      }
    }

    for (const l of layers) if (channelsBasis) bases.push({ layer: l.name, basis: 'channels', features: l.channels, info: { aggregate: channelsBasis.aggregate } });

    // ── Pass 2: the values of every NMF concept and SAE latent, and of the first channels of the draw. ──
    const N = ids.length;
    const channelLive = layers.map((l, li) => Array.from({ length: l.channels }, (_, c) => c).filter((c) => stats[li].max[c] > stats[li].min[c]));
    const channelValues = layers.map((_, li) => {
      if (!channelsBasis) return new Map<number, Float32Array>();
      // What the pick will most likely look at first: the listed channels, or the head of the draw.
      const order = drawOrder(study, layers[li].name, 'channels', channelLive[li]);
      // (pickFeatures asks for chunks of max(16, 2 × wanted) for the study, then max(8, 2 × wanted) for practice.)
      const sel = study.features;
      const practice = Math.max(8, 2 * study.design.practice_trials);
      const listed = (sel.list ?? []).filter((id) => id.startsWith(`${layers[li].name}/channels/`)).map((id) => Number(id.split('/')[2]));
      const first =
        sel.select === 'list'
          ? [...listed, ...order.slice(0, listed.length + practice)]
          : order.slice(0, sel.select === 'all' ? order.length : Math.max(16, 2 * sel.count!) + practice);
      return new Map(first.filter((c) => c < layers[li].channels).map((c) => [c, new Float32Array(N)]));
    });
    const codes = layers.map(() => (nmfBasis ? new Float32Array(N * nmfBasis.components) : null));
    const saeCodes = layers.map(() => (saeBasis ? new Float32Array(N * saeBasis.dictionary) : null));
    let row0 = 0;
    for (let s = 0; s < store.shardCount; s++) {
      const shard = store.read(s);
      const rows = shard.ids.length;
      for (const [li, l] of layers.entries()) {
        const values = (useMax ? shard.max : shard.mean)[li];
        for (const [c, column] of channelValues[li]) for (let r = 0; r < rows; r++) column[row0 + r] = values[r * l.channels + c];
        if (nmfBasis && rows > 0) codes[li]!.set(await nmf[li].encoder.encode(shard.mean[li], rows), row0 * nmfBasis.components);
        if (saeBasis && rows > 0) saeCodes[li]!.set(await sae[li].encode(shard.mean[li], rows), row0 * saeBasis.dictionary);
      }
      row0 += rows;
    }
    /** Channels of layer li the draw reached beyond pass 2: one more read of the store for all of them. */
    const loadChannels = (li: number, wanted: number[]): FeatureColumn[] => {
      const l = layers[li];
      const missing = wanted.filter((c) => !channelValues[li].has(c));
      if (missing.length) {
        const columns = missing.map((c) => [c, new Float32Array(N)] as const);
        let r0 = 0;
        for (let s = 0; s < store.shardCount; s++) {
          const shard = store.read(s);
          const rows = shard.ids.length;
          const values = (useMax ? shard.max : shard.mean)[li];
          for (const [c, column] of columns) for (let r = 0; r < rows; r++) column[r0 + r] = values[r * l.channels + c];
          r0 += rows;
        }
        for (const [c, column] of columns) channelValues[li].set(c, column);
      }
      return wanted.map((c) => ({ layer: l.name, basis: 'channels', index: c, values: channelValues[li].get(c)! }));
    };

    // ── Features: per layer and basis, those that make valid trials. ──
    const ctx = rankContext(study, ids, refRows, queryRows, hashes);
    const selected: FeatureColumn[] = [];
    const spare: FeatureColumn[] = [];
    const exemplars = new Map<string, Exemplars>();
    const rejected: Rejection[] = [];
    const refCount = Math.max(1, refRows.length);
    for (const [li, l] of layers.entries()) {
      for (const basis of study.bases) {
        let pick: Awaited<ReturnType<typeof pickFeatures>>;
        let zeroFractions: number[];
        if (basis.kind === 'channels') {
          zeroFractions = Array.from(stats[li].zeros, (z) => z / refCount);
          pick = await pickFeatures({
            ctx,
            layer: l.name,
            basis: 'channels',
            features: l.channels,
            constant: (c) => (stats[li].max[c] > stats[li].min[c] ? null : stats[li].min[c]),
            load: (wanted) => loadChannels(li, wanted),
            spareCount: study.design.practice_trials + 1, // and the instructions' annotated example (build.ts)
          });
        } else {
          const k = basis.kind === 'nmf' ? basis.components : basis.dictionary;
          const all = basis.kind === 'nmf' ? codes[li]! : saeCodes[li]!;
          const column = (j: number): FeatureColumn => {
            const values = new Float32Array(N);
            for (let r = 0; r < N; r++) values[r] = all[r * k + j];
            return { layer: l.name, basis: basis.kind, index: j, values };
          };
          const lo = new Float64Array(k).fill(Infinity);
          const hi = new Float64Array(k).fill(-Infinity);
          const zeros = new Float64Array(k);
          const zero = zeroOf(basis.kind);
          for (const r of refRows) {
            for (let j = 0; j < k; j++) {
              const v = all[r * k + j];
              if (v < lo[j]) lo[j] = v;
              if (v > hi[j]) hi[j] = v;
              if (v <= zero && v >= -zero) zeros[j]++;
            }
          }
          zeroFractions = Array.from(zeros, (z) => z / refCount);
          pick = await pickFeatures({
            ctx,
            layer: l.name,
            basis: basis.kind,
            features: k,
            constant: (j) => (hi[j] > lo[j] ? null : lo[j]),
            load: (wanted) => wanted.map(column),
            spareCount: study.design.practice_trials + 1, // and the instructions' annotated example (build.ts)
          }).catch((err: unknown) => {
            const poor = basis.kind === 'sae' ? saePoor.get(l.name) : undefined;
            if (poor && err instanceof LegibleError) throw new LegibleError(`${err.message}\nThe likely cause: ${poor}`);
            throw err;
          });
        }
        for (const p of [...pick.selected, ...pick.spare]) exemplars.set(featureId(p.column), p.exemplars);
        selected.push(...pick.selected.map((p) => p.column));
        spare.push(...pick.spare.map((p) => p.column));
        rejected.push(...pick.rejected);
        const entry = bases.find((b) => b.layer === l.name && b.basis === basis.kind)!;
        const sorted = zeroFractions.slice().sort((a, b) => a - b);
        entry.info = {
          ...entry.info,
          zero_fraction_mean: round(sorted.reduce((a, b) => a + b, 0) / Math.max(1, sorted.length)),
          zero_fraction_median: round(sorted.length ? (sorted[(sorted.length - 1) >> 1] + sorted[sorted.length >> 1]) / 2 : 0),
          zero_everywhere: zeroFractions.filter((z) => z === 1).length,
          rejected: pick.rejected.filter((r) => r.for === 'study').length,
        };
        const forStudy = pick.rejected.filter((r) => r.for === 'study');
        if (forStudy.length) {
          const example = forStudy.find((r) => r.reason !== 'constant') ?? forStudy[0];
          opts.log(`${l.name} ${basis.kind}: ${forStudy.length} features rejected (${tallyOf(forStudy)}), e.g. ${example.id}: ${example.message}`);
        }
      }
    }
    return { ids, refRows, queryRows, hashes, skipped, layers, bases: sortBases(bases, study), selected, spare, exemplars, rejected, dictionaries, fitSeconds, release };
  } catch (err) {
    await release();
    throw err;
  }
}

function sortBases(bases: FeatureSet['bases'], study: Study): FeatureSet['bases'] {
  const layerIndex = new Map(study.model.layers.map((l, i) => [l.name, i]));
  const basisIndex = new Map<string, number>(study.bases.map((b, i) => [b.kind, i]));
  return bases.sort((a, b) => layerIndex.get(a.layer)! - layerIndex.get(b.layer)! || basisIndex.get(a.basis)! - basisIndex.get(b.basis)!);
}

function checkNmfInput(A: Float32Array, layer: StoreLayer, basis: NmfBasis, n: number): void {
  if (n < basis.components) {
    throw new LegibleError(`nmf on layer "${layer.name}": only ${n} rows to fit ${basis.components} concepts on. Add images, or lower components.`);
  }
  if (basis.components > layer.channels) {
    throw new LegibleError(`nmf: components = ${basis.components} is more than layer "${layer.name}" has channels (${layer.channels}).`);
  }
  let minimum = Infinity;
  for (const v of A) if (v < minimum) minimum = v;
  if (minimum < 0) {
    throw new LegibleError(
      `nmf needs non-negative activations, but layer "${layer.name}" (tensor ${layer.tensor}) goes down to ${minimum.toPrecision(3)}. Tap a tensor after a ReLU, or use the channels basis for this layer.`,
    );
  }
}

function round(x: number): number {
  return Number(x.toPrecision(6));
}
