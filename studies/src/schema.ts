// The study file: the single source of truth for a study. Every part of legible reads studies
// through this schema; `npm run schema -w studies` writes the JSON Schema that editors use.
// Browser-safe: zod only.
import { z } from 'zod';

const int = (what: string) => z.number({ error: `expected a number (${what})` }).int({ error: `expected a whole number (${what})` });
const positiveInt = (what: string) => int(what).min(1, { error: `expected a whole number ≥ 1 (${what})` });
const nonNegativeInt = (what: string) => int(what).min(0, { error: `expected a whole number ≥ 0 (${what})` });
const fraction = z.number().gt(0, { error: 'expected a fraction between 0 and 1' }).lt(1, { error: 'expected a fraction between 0 and 1' });
const markdown = z.string().trim().min(1, { error: 'expected non-empty Markdown text' });
const name = z
  .string()
  .regex(/^[A-Za-z][A-Za-z0-9_-]{0,39}$/, { error: 'expected a short name: a letter, then letters, digits, "_" or "-" (at most 40)' });

export const FACTORS = ['layer', 'basis', 'reference_kind'] as const;
export const Factor = z.enum(FACTORS);

export const Layer = z.strictObject({
  name: name.describe('Short name used in the data and reports, e.g. "block2".'),
  tensor: z.string().min(1).describe('ONNX tensor to tap (list them with `legible layers model.onnx`).'),
  layout: z
    .enum(['nchw', 'nhwc', 'tokens'])
    .optional()
    .describe(
      'Axes of the tensor: nchw [N, C, H, W] (or [N, C]), nhwc [N, H, W, C] (channels last), tokens [N, T, D] (a transformer\'s tokens; D is the channels). Default: inferred from the graph (`legible layers` shows it); required where the graph does not tell.',
    ),
  class_token: z
    .boolean()
    .optional()
    .describe('With layout tokens: whether the first token is a class token, left out of spatial means, patches and visualization objectives. Default: inferred from the graph.'),
});

export const ModelInput = z
  .strictObject({
    size: z
      .union([positiveInt('pixels'), z.tuple([positiveInt('height in pixels'), positiveInt('width in pixels')])])
      .describe('Input size in pixels: one number for a square input, or [height, width].'),
    resize: positiveInt('pixels')
      .optional()
      .describe('Resize the shorter side to this many pixels, then centre-crop to `size` (e.g. 256 for 224). Default: resize straight to `size`.'),
    channels: z.enum(['rgb', 'bgr', 'gray']).default('rgb').describe('Channel order the model expects.'),
    range: z
      .union([z.literal(1), z.literal(255)])
      .default(1)
      .describe('Pixel values are scaled to [0, range] before mean and std are applied: 1 for torchvision, 255 for Caffe-style models.'),
    mean: z.array(z.number()).min(1).max(3).describe('Per-channel mean subtracted after scaling (one value per channel).'),
    std: z.array(z.number().positive()).min(1).max(3).describe('Per-channel standard deviation divided after subtracting the mean.'),
  })
  .superRefine((input, ctx) => {
    const channels = input.channels === 'gray' ? 1 : 3;
    for (const key of ['mean', 'std'] as const) {
      if (input[key].length !== channels && input[key].length !== 1) {
        ctx.addIssue({
          code: 'custom',
          path: [key],
          message: `expected ${channels} value${channels > 1 ? 's' : ''} (one per ${input.channels} channel) or one value for all, got ${input[key].length}`,
        });
      }
    }
  });

export const Model = z.strictObject({
  onnx: z.string().min(1).describe('Path to the ONNX model file, relative to the study file.'),
  input: ModelInput.optional().describe(
    'The model\'s preprocessing. Default: the `input` of model.json beside the ONNX file (`legible model init`); where both are given they must agree.',
  ),
  layers: z
    .array(Layer)
    .min(1, { error: 'expected at least one layer' })
    .superRefine((layers, ctx) => uniqueBy(layers, (l) => l.name, 'name', ctx)),
});

export const Dataset = z.strictObject({
  images: z.string().min(1).describe('Image folder (flat, or one sub-folder per class), relative to the study file.'),
  generate: z
    .strictObject({
      from: z.enum(['fashion-mnist']).describe('A public data set that installs with legible.'),
      per_class: positiveInt('images per class').max(7000).default(200),
    })
    .optional()
    .describe('Write the folder from a bundled public data set if it does not exist yet (used by the demo).'),
  split: z
    .strictObject({
      seed: nonNegativeInt('seed').default(0),
      reference: fraction.default(0.8).describe('Fraction of images that references are drawn from.'),
      query: fraction.default(0.2).describe('Fraction of held-out images that queries are drawn from.'),
    })
    .prefault({})
    .refine((s) => s.reference + s.query <= 1 + 1e-9, { error: 'reference + query must not exceed 1', path: ['query'] }),
  limit: positiveInt('images').optional().describe('Use at most this many images (after sorting by path).'),
  classes: z
    .array(z.string().min(1))
    .min(2)
    .superRefine((names, ctx) =>
      names.forEach((n, i) => {
        if (names.indexOf(n) !== i) ctx.addIssue({ code: 'custom', path: [i], message: `"${n}" is listed twice (also at item ${names.indexOf(n) + 1})` });
      }),
    )
    .optional()
    .describe("Class sub-folder names in the order of the model's outputs (decision contribution's labels). Default: the folder names sorted, as torchvision's ImageFolder does."),
});

export const ChannelsBasis = z.strictObject({
  kind: z.literal('channels'),
  aggregate: z.enum(['mean', 'max']).default('mean').describe('Activation of an image: spatial mean (the convention) or spatial max.'),
});
export const NmfBasis = z
  .strictObject({
    kind: z.literal('nmf'),
    components: positiveInt('concepts per layer').describe('Number of concepts k (rows of W).'),
    solver: z.enum(['hals', 'mu']).default('hals').describe('hals (fast, exact block updates) or mu (multiplicative updates, scikit-learn\'s mu).'),
    max_iter: positiveInt('iterations').default(500),
    tol: z.number().positive().default(1e-4).describe('Stop when the error improves by less than tol × the initial error over 10 iterations (as scikit-learn).'),
    seed: nonNegativeInt('seed').default(0),
    patch: z
      .strictObject({
        size: positiveInt('pixels').describe('Patch side in pixels of the model input (CRAFT: 64 at 224).'),
        stride: positiveInt('pixels').describe('Step between patches (CRAFT: 0.8 × size).'),
      })
      .optional()
      .describe('Fit the concepts on image patches, as CRAFT does; without it, on whole images.'),
    fit_images: positiveInt('images').default(1000).describe('With patch: how many reference images to cut patches from.'),
    fit_rows: positiveInt('rows').default(50_000).describe('Fit on at most this many rows (images or patches), a seeded sample.'),
  })
  .superRefine((b, ctx) => {
    if (b.patch && b.patch.stride > b.patch.size) ctx.addIssue({ code: 'custom', path: ['patch', 'stride'], message: 'stride larger than size leaves parts of the image out' });
  });
export const SaeBasis = z
  .strictObject({
    kind: z.literal('sae'),
    dictionary: positiveInt('dictionary size').describe('Number of latents (dictionary directions) per layer.'),
    k: positiveInt('active latents per input').describe('Latents active per image (TopK); at most dictionary.'),
    epochs: positiveInt('epochs').default(10),
    seed: nonNegativeInt('seed').default(0),
    fit_rows: positiveInt('rows').default(50_000).describe('Train on at most this many reference images (spatially averaged activations), a seeded sample.'),
  })
  .superRefine((b, ctx) => {
    if (b.k > b.dictionary) ctx.addIssue({ code: 'custom', path: ['k'], message: `k = ${b.k} is more than dictionary = ${b.dictionary}: lower k or raise dictionary` });
  });
export const Basis = z.discriminatedUnion('kind', [ChannelsBasis, NmfBasis, SaeBasis], {
  error: 'expected `kind` to be one of channels, nmf, sae',
});

export const FeatureSelection = z
  .strictObject({
    select: z.enum(['random', 'all', 'list']).default('random').describe('random: a seeded sample per layer and basis; all; or the explicit `list`.'),
    count: positiveInt('features per layer and basis').optional().describe('With select: random, how many features per layer and basis.'),
    seed: nonNegativeInt('seed').default(0),
    min_separation: z
      .number()
      .min(0)
      .max(1)
      .default(0.05)
      .describe(
        "A feature is used only where its weakest maximal reference lies above its strongest minimal one, and its two queries apart, by more than 0 and by at least this fraction of the feature's range over the reference split; others are rejected (the build report says why).",
      ),
    list: z
      .array(z.string().regex(/^[A-Za-z][A-Za-z0-9_-]*\/(channels|nmf|sae)\/\d+$/, { error: 'expected "layer/basis/index", e.g. "block2/nmf/3"' }))
      .optional(),
  })
  .superRefine((f, ctx) => {
    if (f.select === 'random' && f.count === undefined) ctx.addIssue({ code: 'custom', path: ['count'], message: 'select: random needs `count` (features per layer and basis)' });
    if (f.select === 'list' && !f.list?.length) ctx.addIssue({ code: 'custom', path: ['list'], message: 'select: list needs a non-empty `list` of "layer/basis/index"' });
  });

export const References = z.strictObject({
  per_side: positiveInt('images per side').max(64).default(9).describe('Reference images on each side (9 min + 9 max in the IMI paradigm).'),
  columns: positiveInt('columns').max(8).default(3).describe('Columns of each side\'s grid.'),
  kinds: z
    .array(z.enum(['natural', 'visualization']))
    .min(1)
    .default(['natural'])
    .describe('Reference kinds: natural exemplars and/or feature visualizations.'),
  visualization: z
    .strictObject({
      steps: positiveInt('optimisation steps').max(10_000).default(256).describe('Optimisation steps per visualization.'),
      method: z.enum(['maco', 'pixel']).default('maco').describe('maco: phase-only Fourier parameterisation (Fel et al. 2023); pixel: plain pixel-space baseline.'),
      batch: positiveInt('images per run').max(256).default(8).describe('Visualizations optimised together in one batch.'),
    })
    .optional()
    .describe('With kinds: [visualization]: how the feature visualizations are made (max side: maximise the feature, min side: minimise it).'),
});

export const Queries = z.strictObject({
  difficulty: z
    .enum(['extreme', 'p99', 'p95', 'p85'])
    .default('extreme')
    .describe('extreme: the most extreme held-out images; pNN: held-out images at the NNth and (100-NN)th percentiles.'),
});

export const Contribution = z.strictObject({
  images: nonNegativeInt('evaluation images')
    .max(1_000_000)
    .default(500)
    .describe('Held-out (query split) images to measure each feature\'s decision contribution on, a seeded sample; 0 turns it off.'),
});

export const Complexity = z.strictObject({
  layers: z
    .array(name)
    .min(1)
    .optional()
    .describe('Layers to measure (names from model.layers). Default: every layer of the study.'),
  depths: z
    .array(nonNegativeInt('nonlinear layers').max(64))
    .min(1)
    .default([1, 2, 4, 7, 13])
    .describe('The ladder: one disentangler net per depth (its number of nonlinear layers), ascending. 0 is a linear net.'),
  width: positiveInt('channels').max(1024).default(32).describe('Channels of every hidden convolution of the disentanglers.'),
  epochs: positiveInt('epochs').max(10_000).default(20).describe('Training epochs of each disentangler (Adam, MSE to the layer\'s maps).'),
  images: positiveInt('images')
    .min(10)
    .max(1_000_000)
    .default(1000)
    .describe('Reference-split images the disentanglers learn from, a seeded sample; a fifth of them is held out to measure the fit.'),
  threshold: fraction
    .default(0.9)
    .describe('A feature\'s complexity order is the smallest depth explaining this share of what the deepest net explains.'),
  reliability: z
    .strictObject({
      model: z.string().min(1).describe('A second ONNX model trained on the same task (relative to the study file); it takes the same input as model.input.'),
      tensor: z.string().min(1).describe('Its layer to compare with (a tensor name; list them with `legible layers`).'),
    })
    .optional()
    .describe('Reliability: per order, the share of each layer\'s component that this layer of a second model linearly predicts (held-out images).'),
});

export const Stimuli = z.strictObject({
  cell_px: positiveInt('pixels').min(16).max(512).default(96).describe('Displayed size of each image, in CSS pixels.'),
  gap_px: nonNegativeInt('pixels').max(64).default(4),
  format: z.enum(['webp', 'jpeg']).default('webp'),
  quality: positiveInt('quality').max(100).default(85),
  resample: z.enum(['lanczos', 'nearest']).default('lanczos').describe('nearest keeps the pixels of tiny images crisp.'),
  image_px: positiveInt('pixels')
    .min(8)
    .max(1024)
    .optional()
    .describe('Pixel size each image is stored and sent at (default: cell_px). For sources smaller than cell_px (28 for Fashion-MNIST) set their size: the browser scales them to cell_px (crisp with resample: nearest), and a third of the bytes go over the network.'),
});

export const Design = z
  .strictObject({
    trials_per_participant: positiveInt('main trials per participant').describe('Main trials, not counting catch and practice trials.'),
    catch_trials: nonNegativeInt('catch trials per participant').default(0),
    practice_trials: nonNegativeInt('practice trials').default(2),
    practice_criterion: z
      .number()
      .min(0)
      .max(1)
      .optional()
      .describe('Repeat the practice block until this fraction of a round is answered correctly (at most practice_rounds rounds).'),
    practice_rounds: positiveInt('rounds').max(10).default(3).describe('With practice_criterion: the most practice rounds a participant gets before the main trials.'),
    responses_per_feature: positiveInt('responses').default(30).describe('Responses to collect for each feature × condition (30 in IMI).'),
    within: z.array(Factor).default(['layer', 'basis']).describe('Factors every participant sees all levels of.'),
    between: z.array(Factor).default([]).describe('Factors whose level is assigned per participant.'),
    initial_wait_ms: nonNegativeInt('milliseconds').default(0).describe('Responses are allowed only after this delay.'),
    max_side: z.enum(['left', 'right']).default('right').describe('Side of the screen showing the maximally activating references.'),
    time_limit_minutes: positiveInt('minutes').default(60).describe('A task list not finished by then is released to others.'),
    order: z
      .enum(['random', 'latin_square'])
      .default('random')
      .describe(
        'random: main and catch trials shuffled together. latin_square: main trials in blocks, one per within-subject cell (e.g. layer × basis), the block order from a balanced Latin square row that changes from participant to participant; catch trials at seeded places.',
      ),
  })
  .superRefine((d, ctx) => {
    for (const f of d.within) {
      if (d.between.includes(f)) ctx.addIssue({ code: 'custom', path: ['between'], message: `factor "${f}" is listed in both within and between` });
    }
  });

export const Exclusions = z.strictObject({
  catch_accuracy_min: z.number().min(0).max(1).optional().describe('Exclude participants below this accuracy on catch trials.'),
  total_time_s: z
    .strictObject({ min: z.number().min(0).optional(), max: z.number().positive().optional() })
    .optional()
    .describe('Exclude participants whose total time is outside these bounds (seconds).'),
  instruction_time_s_min: z.number().min(0).optional(),
  min_distinct_responses: positiveInt('distinct buttons').max(6).optional().describe('Exclude participants who used fewer of the six buttons.'),
  repeat_participation: z.boolean().default(true).describe('Exclude second and later participations.'),
  practice_pass_required: z.boolean().default(false).describe('Exclude participants who never met design.practice_criterion.'),
});

const completion = z.strictObject({
  code: z.string().regex(/^[A-Za-z0-9_-]{2,32}$/, { error: 'expected a completion code of 2–32 letters, digits, "_" or "-"' }),
  redirect: z.url({ error: 'expected an absolute URL' }).optional().describe('Where to send the participant; `{code}` is replaced by the code.'),
});

export const Recruitment = z
  .strictObject({
    platform: z.enum(['prolific', 'generic']).default('generic'),
    redirect: z
      .string()
      .optional()
      .describe('Default redirect for all outcomes; `{code}` is replaced. Prolific: https://app.prolific.com/submissions/complete?cc={code}'),
    completed: completion.optional(),
    failed_checks: completion.optional().describe('Code for participants who fail the catch-trial criterion.'),
    no_consent: completion.optional(),
    incompatible_device: completion.optional(),
    unsynced: completion
      .optional()
      .describe(
        'Code shown when the browser could not save every answer before the end (default: no code); must differ from every other code, and live studies with a `completed` code need one. Review these sessions before paying.',
      ),
    reward: z
      .strictObject({ amount: z.number().positive(), currency: z.string().regex(/^[A-Z]{3}$/) })
      .optional()
      .describe('Payment per participant, used for the implied hourly pay on the dashboard.'),
  })
  .superRefine((r, ctx) => {
    if (r.platform === 'prolific' && !r.completed) ctx.addIssue({ code: 'custom', path: ['completed'], message: 'platform: prolific needs a `completed` code' });
    // Codes given before the work is done (no_consent and incompatible_device to anyone, unsynced to
    // every participant up front, as the network may be gone at the end) must never be a code that
    // pays out as a finished study; the unsynced code differs from every other code.
    const finishedCodes = ['completed', 'failed_checks'] as const;
    for (const early of ['no_consent', 'incompatible_device', 'unsynced'] as const) {
      const code = r[early]?.code;
      if (code === undefined) continue;
      const others = early === 'unsynced' ? (['completed', 'failed_checks', 'no_consent', 'incompatible_device'] as const) : finishedCodes;
      for (const other of others) {
        if (r[other]?.code !== code) continue;
        ctx.addIssue({
          code: 'custom',
          path: [early, 'code'],
          message: `is the same as the ${other} code: a participant gets the ${early} code without finishing the study, so it must differ from ${early === 'unsynced' ? 'every other code (sessions that ended unsynced are reviewed before paying)' : 'the completed and failed_checks codes'}`,
        });
      }
    }
  });

export const Data = z.strictObject({
  participant_details: z
    .enum(['coarse', 'full'])
    .default('coarse')
    .describe(
      'What participants.csv says about each participant\'s device and times. coarse: browser family and major version, OS family, a screen class, times rounded down to the hour. full: also the User-Agent header, screen size, devicePixelRatio and exact times (quasi-identifiers: ask for them only if the analysis needs them).',
    ),
});

export const Text = z.strictObject({
  consent: markdown,
  instructions: markdown,
  debrief: markdown.default('Thank you for taking part.'),
});

export const Study = z
  .strictObject({
    id: z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/, { error: 'expected lowercase letters, digits and "-" (e.g. "resnet50-nmf")' }),
    title: z.string().trim().min(1),
    description: z.string().optional(),
    mode: z.enum(['preview', 'pilot', 'live']).default('pilot').describe('preview stores nothing, pilot stores flagged data, live is the real study.'),
    seed: nonNegativeInt('seed').default(0),
    model: Model,
    dataset: Dataset,
    bases: z
      .array(Basis)
      .min(1)
      .superRefine((bases, ctx) => uniqueBy(bases, (b) => b.kind, 'kind', ctx)),
    features: FeatureSelection,
    references: References.prefault({}),
    queries: Queries.prefault({}),
    stimuli: Stimuli.prefault({}),
    contribution: Contribution.optional().describe('Decision contribution: the drop in the correct class\'s logit and in accuracy when a feature is removed (default: 500 images).'),
    complexity: Complexity.optional().describe('Feature complexity (disentangler nets): per layer ρ per order, per feature its complexity order. Off when absent.'),
    design: Design,
    exclusions: Exclusions.prefault({}),
    analysis: z
      .strictObject({
        power: z
          .strictObject({
            effect: z.number().describe('The effect the study is meant to detect, in log-odds (e.g. 0.5 ≈ odds ratio 1.65): from a pilot, earlier work or the smallest effect of interest.'),
            coefficient: z.string().optional().describe('The model coefficient it applies to (default: the basis term, e.g. basisnmf).'),
            source: z.string().optional().describe('Where the effect comes from (e.g. "pilot, 12 participants, 2026-05"): printed beside the power curve.'),
          })
          .optional()
          .describe('Prospective power for `legible analyze`.'),
      })
      .optional()
      .describe('Settings of `legible analyze`.'),
    recruitment: Recruitment.prefault({}),
    data: Data.prefault({}).describe('What the export writes about participants (see analysis/README.md).'),
    text: Text,
  })
  .superRefine((s, ctx) => {
    for (const [i, item] of (s.features.list ?? []).entries()) {
      const [layer, basis] = item.split('/');
      if (!s.model.layers.some((l) => l.name === layer)) {
        ctx.addIssue({ code: 'custom', path: ['features', 'list', i], message: `no layer named "${layer}" in model.layers (${s.model.layers.map((l) => l.name).join(', ')})` });
      }
      if (!s.bases.some((b) => b.kind === basis)) {
        ctx.addIssue({ code: 'custom', path: ['features', 'list', i], message: `basis "${basis}" is not in bases (${s.bases.map((b) => b.kind).join(', ')})` });
      }
    }
    for (const b of s.bases) {
      if (b.kind === 'nmf' && b.components < 2) ctx.addIssue({ code: 'custom', path: ['bases'], message: 'nmf needs components ≥ 2' });
    }
    for (const [i, layer] of (s.complexity?.layers ?? []).entries()) {
      if (!s.model.layers.some((l) => l.name === layer)) {
        ctx.addIssue({ code: 'custom', path: ['complexity', 'layers', i], message: `no layer named "${layer}" in model.layers (${s.model.layers.map((l) => l.name).join(', ')})` });
      }
    }
    (s.complexity?.depths ?? []).forEach((d, i, all) => {
      if (i > 0 && d <= all[i - 1]) ctx.addIssue({ code: 'custom', path: ['complexity', 'depths', i], message: `depths must be distinct and ascending (${all.join(', ')}), e.g. [1, 2, 4, 7, 13]` });
    });
    if (s.references.visualization && !s.references.kinds.includes('visualization')) {
      ctx.addIssue({ code: 'custom', path: ['references', 'visualization'], message: 'has no effect: references.kinds does not include "visualization". Add it to kinds, or remove these settings.' });
    }
    if (s.mode === 'live' && s.recruitment.completed && !s.recruitment.unsynced) {
      ctx.addIssue({
        code: 'custom',
        path: ['recruitment', 'unsynced'],
        message: 'a live study with a `completed` code needs an `unsynced` code (shown when the network is gone at the end; never the completed code): add recruitment.unsynced.code, e.g. "UNSYNCED-1", and review those sessions before paying',
      });
    }
    if (s.design.catch_trials > s.design.trials_per_participant) {
      ctx.addIssue({ code: 'custom', path: ['design', 'catch_trials'], message: 'more catch trials than main trials: catch trials should be a small share' });
    }
  });

export type Study = z.output<typeof Study>;
export type StudyInput = z.input<typeof Study>;
export type Basis = z.output<typeof Basis>;
export type BasisKind = Basis['kind'];
export type Layer = z.output<typeof Layer>;
export type ModelInput = z.output<typeof ModelInput>;
export type Factor = z.output<typeof Factor>;

function uniqueBy<T>(items: T[], key: (t: T) => string, field: string, ctx: z.RefinementCtx): void {
  const seen = new Map<string, number>();
  items.forEach((item, i) => {
    const k = key(item);
    if (seen.has(k)) ctx.addIssue({ code: 'custom', path: [i, field], message: `duplicate ${field} "${k}" (also at item ${seen.get(k)! + 1})` });
    else seen.set(k, i);
  });
}

/** Input size as [height, width]. */
export function inputSize(input: ModelInput): [number, number] {
  return typeof input.size === 'number' ? [input.size, input.size] : input.size;
}
