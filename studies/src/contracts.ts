// Contracts between the parts: the manifest the pipeline writes and the server reads, and the
// HTTP payloads the server and the client exchange (server/API.md documents them).
// Browser-safe: zod only.
import { z } from 'zod';

// ─── Manifest: studies/<id>/build/manifest.json ────────────────────────────────────────────
export const MANIFEST_FORMAT = 'legible-manifest/1';

export const FeatureStats = z.object({
  mean: z.number(),
  std: z.number(),
  min: z.number(),
  max: z.number(),
  /** Share of the reference images at exactly 0 (sparse bases: SAE latents, ReLU channels; NMF codes: at the solver's floor, 1e-10). */
  zero_fraction: z.number().optional(),
});

export const ManifestFeature = z.object({
  /** "layer/basis/index", unique within the study. */
  id: z.string(),
  layer: z.string(),
  basis: z.enum(['channels', 'nmf', 'sae']),
  index: z.number().int().min(0),
  /** Contribution to the model's decision (contribution.logit_drop); null where not measured. */
  importance: z.number().nullable(),
  /** Activation of the feature over the reference split. */
  stats: FeatureStats,
  /** Image ids (paths relative to the data set folder), most extreme first. */
  references: z.object({ min: z.array(z.string()), max: z.array(z.string()) }),
  queries: z.object({ min: z.array(z.string()), max: z.array(z.string()) }),
  /**
   * Decision contribution: with the feature removed from the layer (channel zeroed, or its
   * dictionary component subtracted), the mean drop of the correct class's logit, the drop in
   * accuracy, and the share of images whose predicted class changed (manifest.contribution says over what).
   */
  contribution: z.object({ logit_drop: z.number(), accuracy_drop: z.number(), changed: z.number() }).optional(),
  /** Feature visualizations (paths relative to the build folder), with references.kinds: [visualization]. */
  visualizations: z
    .object({
      min: z.array(z.string()),
      max: z.array(z.string()),
      /** MACO attribution map of each max-side visualization (paths relative to the build folder; the explorer shows them). */
      attributions: z.array(z.string()).optional(),
    })
    .optional(),
  /**
   * Feature complexity (study file `complexity:`): the share of the feature's held-out variance each
   * disentangler depth explains (manifest.complexity.depths), ρ per order, and the complexity order
   * (null, with the reason, where the deepest net explains too little of it).
   */
  complexity: z.object({ order: z.number().int().nullable(), explained: z.array(z.number()), rho: z.array(z.number()), reason: z.string().optional() }).optional(),
  /** The feature's activation on each reference and query image, in the order of references and queries. */
  activations: z
    .object({ min: z.array(z.number()), max: z.array(z.number()), queries: z.object({ min: z.array(z.number()), max: z.array(z.number()) }) })
    .optional(),
  /**
   * Predicted P(correct) from `legible predict`'s machine observer (MIS-style), with its 95% bootstrap
   * CI, the number of query pairs scored, the observer's name, and whether it is only a weak proxy
   * (the study's own model). Absent until `legible predict` runs (a rebuild drops it).
   */
  machine_score: z
    .object({ p: z.number(), lo: z.number(), hi: z.number(), n_pairs: z.number().int(), observer: z.string(), weak_proxy: z.boolean() })
    .optional(),
});

/** A feature the pipeline left out because it can't make valid trials, why, and the numbers that decided it. */
export const ManifestRejection = z.object({
  id: z.string(),
  layer: z.string(),
  basis: z.enum(['channels', 'nmf', 'sae']),
  index: z.number().int().min(0),
  /** study: drawn for the study; practice: drawn for a practice trial (extreme queries). */
  for: z.enum(['study', 'practice']),
  /** constant over the reference split; references: max side not clearly above the min side; queries: the query pair not separated. */
  reason: z.enum(['constant', 'references', 'queries']),
  message: z.string(),
  numbers: z.record(z.string(), z.number()),
});

/** `example`: the annotated example of the instructions, on a feature outside the study; never recorded. */
export const TrialKind = z.enum(['main', 'catch', 'practice', 'example']);
export const ReferenceKind = z.enum(['natural', 'visualization']);

export const ManifestTrial = z.object({
  id: z.string(),
  feature: z.string(),
  kind: TrialKind,
  reference_kind: ReferenceKind,
  /** Paths relative to the build folder. queries[answer] matches the max side. */
  assets: z.object({ min: z.string(), max: z.string(), queries: z.tuple([z.string(), z.string()]) }),
  /** Image ids shown as the two queries, in the order of assets.queries. */
  query_images: z.tuple([z.string(), z.string()]),
  answer: z.union([z.literal(0), z.literal(1)]),
});

export const Manifest = z.object({
  format: z.literal(MANIFEST_FORMAT),
  study: z.string(),
  seed: z.number().int(),
  model: z.object({ file: z.string(), sha256: z.string(), input: z.record(z.string(), z.unknown()) }),
  dataset: z.object({
    images: z.string(),
    sha256: z.string(),
    count: z.number().int(),
    skipped: z.array(z.object({ path: z.string(), reason: z.string() })),
    reference: z.number().int(),
    query: z.number().int(),
  }),
  config: z.record(z.string(), z.unknown()),
  layers: z.array(z.object({ name: z.string(), tensor: z.string(), shape: z.array(z.number().int()) })),
  bases: z.array(z.object({ layer: z.string(), basis: z.string(), features: z.number().int(), info: z.record(z.string(), z.unknown()) })),
  features: z.array(ManifestFeature),
  trials: z.array(ManifestTrial),
  /** Features left out because they can't make valid trials (absent in manifests before pipeline 4). */
  rejected: z.array(ManifestRejection).optional(),
  /** Feature complexity per layer (study file `complexity:`); absent where it was not measured. */
  complexity: z
    .object({
      depths: z.array(z.number().int()),
      width: z.number().int(),
      epochs: z.number().int(),
      threshold: z.number(),
      layers: z.array(
        z.object({
          layer: z.string(),
          images: z.object({ train: z.number().int(), held_out: z.number().int() }),
          /** Per depth: standardised MSE (1 ≈ each channel's mean) on held-out and training images. */
          held_out_loss: z.array(z.number()),
          train_loss: z.array(z.number()),
          /** Per depth: share of the layer's held-out variance explained. */
          explained: z.array(z.number()),
          /** Per order (depth): ρ = Var[c(l)] / Var[f]. */
          rho: z.array(z.number()),
          /** Per order: the share of c(l) that complexity.reliability's second model's layer linearly predicts. */
          reliability: z.array(z.number()).optional(),
        }),
      ),
    })
    .optional(),
  /** How the features' decision contributions were measured; absent where they were not. */
  contribution: z
    .object({
      images: z.number().int(),
      /** given: the class sub-folders' labels; predicted: the unmodified model's predictions. */
      labels: z.enum(['given', 'predicted']),
      baseline_accuracy: z.number(),
      note: z.string().optional(),
    })
    .optional(),
});

export type Manifest = z.infer<typeof Manifest>;
export type ManifestFeature = z.infer<typeof ManifestFeature>;
/** What `legible predict` writes into a manifest feature. */
export type MachineScore = NonNullable<ManifestFeature['machine_score']>;
export type ManifestTrial = z.infer<typeof ManifestTrial>;
export type ManifestRejection = z.infer<typeof ManifestRejection>;
export type TrialKind = z.infer<typeof TrialKind>;
export type ReferenceKind = z.infer<typeof ReferenceKind>;

// ─── HTTP API (server/API.md) ──────────────────────────────────────────────────────────────
const id = z.string().trim().min(1).max(128);
/** The resume secret a browser got with its session (CreateSessionResponse.resume_secret). */
const resume = z.string().min(1).max(128).optional();

export const CreateSessionRequest = z.union([
  z.strictObject({ study: id, PROLIFIC_PID: id, STUDY_ID: id.optional(), SESSION_ID: id.optional(), resume }),
  z.strictObject({ study: id, participant: id, resume }),
]);
export type CreateSessionRequest = z.infer<typeof CreateSessionRequest>;

/** One trial of a participant's task list, as the client sees it: no answer key, no catch flag. */
export const TaskTrial = z.object({
  seq: z.number().int().min(0),
  practice: z.boolean(),
  /**
   * Practice round (0-based) when the study repeats practice until a criterion
   * (design.practice_criterion); null for main trials. Round r's trials are consecutive seqs.
   */
  practice_round: z.number().int().min(0).nullable(),
  reference_kind: ReferenceKind,
  min_url: z.string(),
  max_url: z.string(),
  query_urls: z.tuple([z.string(), z.string()]),
});
export type TaskTrial = z.infer<typeof TaskTrial>;

export const ClientConfig = z.object({
  initial_wait_ms: z.number().int(),
  max_side: z.enum(['left', 'right']),
  columns: z.number().int(),
  per_side: z.number().int(),
  cell_px: z.number().int(),
  gap_px: z.number().int(),
  /** Scale images up without smoothing (the study's stimuli.resample: nearest). */
  pixelated: z.boolean().optional(),
  practice_criterion: z.number().nullable(),
});
export type ClientConfig = z.infer<typeof ClientConfig>;

export const CreateSessionResponse = z.object({
  session: z.string(),
  token: z.string(),
  trials: z.array(TaskTrial),
  /** seq of the first unanswered trial that is still required (trials.length when all are answered). */
  resume_at: z.number().int(),
  /** Seqs already recorded, ascending (not always a prefix: answers sent as a page closes can arrive out of order). */
  recorded: z.array(z.number().int()).optional(),
  config: ClientConfig,
  /**
   * The annotated example of the instructions: a trial whose images appear nowhere in this task
   * list (not recorded; null when the manifest has none to spare).
   */
  example: TaskTrial.pick({ reference_kind: true, min_url: true, max_url: true, query_urls: true }).nullable().optional(),
  /** Code to show if the browser cannot save every answer by the end (recruitment.unsynced, else null; never the completed code). */
  unsynced_code: z.string().nullable(),
  /**
   * Proof of holding this session: the browser keeps it and sends it as `resume` when it comes back
   * (a reload, the tab reopened). Without it, only Prolific's SESSION_ID of the same attempt resumes.
   */
  resume_secret: z.string(),
});
export type CreateSessionResponse = z.infer<typeof CreateSessionResponse>;

/** What the client sends for one answered trial. */
export const TrialAnswer = z.strictObject({
  /** Which of the trial's two queries was chosen, in the order the task list gave them. */
  query: z.union([z.literal(0), z.literal(1)]),
  confidence: z.union([z.literal(1), z.literal(2), z.literal(3)]),
  rt_ms: z.number().finite().min(0).max(86_400_000),
  /** Which query the client drew in the upper/left position (0 or 1). */
  query_order: z
    .tuple([z.union([z.literal(0), z.literal(1)]), z.union([z.literal(0), z.literal(1)])])
    .refine(([upper, lower]) => upper !== lower, { error: 'expected [0, 1] or [1, 0]' })
    .optional(),
  /** Response given with the keyboard or a pointer. */
  input: z.enum(['key', 'pointer']).optional(),
  /** performance.now() at the first painted frame of the trial, and at the response. */
  onset_ms: z.number().finite().optional(),
  response_ms: z.number().finite().optional(),
  /** Client wall clock (ms since epoch) at the response. */
  client_time: z.number().finite().optional(),
  window: z.tuple([z.number().int().min(0).max(100_000), z.number().int().min(0).max(100_000)]).optional(),
  screen: z.tuple([z.number().int().min(0).max(100_000), z.number().int().min(0).max(100_000)]).optional(),
  dpr: z.number().positive().max(16).optional(),
  plugin_version: z.string().max(32).optional(),
});
export type TrialAnswer = z.infer<typeof TrialAnswer>;

export const TrialAck = z.object({
  seq: z.number().int(),
  recorded_at: z.string(),
  /** Only on practice trials. */
  feedback: z
    .object({
      correct: z.boolean(),
      /** On the last trial of a practice round: how the round went, and whether practice is over. */
      round: z
        .object({ round: z.number().int(), correct: z.number().int(), total: z.number().int(), passed: z.boolean(), practice_over: z.boolean() })
        .optional(),
    })
    .optional(),
});
export type TrialAck = z.infer<typeof TrialAck>;

export const FinishResponse = z.object({
  outcome: z.enum(['completed', 'failed_checks']),
  code: z.string().nullable(),
  redirect: z.string().nullable(),
});
export type FinishResponse = z.infer<typeof FinishResponse>;

/** Public information about a study, shown before a session exists (consent etc.). */
export const StudyInfo = z.object({
  id: z.string(),
  title: z.string(),
  mode: z.enum(['preview', 'pilot', 'live']),
  platform: z.enum(['prolific', 'generic']),
  html: z.object({ consent: z.string(), instructions: z.string(), debrief: z.string() }),
  no_consent: z.object({ code: z.string().nullable(), redirect: z.string().nullable() }),
  incompatible_device: z.object({ code: z.string().nullable(), redirect: z.string().nullable() }),
  trials: z.object({ main: z.number().int(), practice: z.number().int() }),
  /** Present (true) only on a server of simulated participants (`legible pilot`): its data is never real. */
  simulated: z.boolean().optional(),
});
export type StudyInfo = z.infer<typeof StudyInfo>;

/** Things the client notices outside the trials: failed images, leaving fullscreen, giving up on saving. */
export const ClientEvent = z.strictObject({
  type: z.enum(['preload_failed', 'fullscreen_exit', 'fullscreen_enter', 'blur', 'focus', 'offline', 'online', 'unsynced_end', 'browser_check', 'session_conflict']),
  /** Client wall clock, ms since epoch. */
  at: z.number().finite(),
  /** seq of the trial it happened at, if any. */
  seq: z.number().int().min(0).optional(),
  detail: z.record(z.string(), z.union([z.string().max(500), z.number(), z.boolean(), z.null()])).optional(),
});
export type ClientEvent = z.infer<typeof ClientEvent>;
export const EventsRequest = z.strictObject({ events: z.array(ClientEvent).min(1).max(100) });

export const ApiError = z.object({ error: z.string(), detail: z.unknown().optional() });
/** 409 from finish while trials are missing. */
export const FinishRefused = ApiError.extend({ missing: z.array(z.number().int()) });
/** 403 from create-session: the participant id has a session that this request cannot prove to hold. */
export const ResumeRefused = ApiError.extend({ detail: z.object({ resume_refused: z.literal(true) }) });
/** 409 from create-session for a participant who already finished. */
export const AlreadyCompleted = ApiError.extend({ code: z.string().nullable(), redirect: z.string().nullable() });
/** 400: each bad field of the request. */
export const BadRequest = ApiError.extend({ detail: z.object({ fields: z.array(z.object({ field: z.string(), message: z.string() })) }) });
