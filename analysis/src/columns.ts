// The tidy trial table: one row per answered trial. Each column is defined once, here — its SQL,
// its type and unit, and its description — and both the CSV and its data dictionary come from it.
import { FACTORS } from '@legible/studies';

export interface Column {
  name: string;
  /** SQL over `trials t JOIN sessions s`. */
  sql: string;
  type: 'text' | 'integer' | 'number' | 'boolean' | 'timestamp';
  unit?: string;
  description: string;
  /** A table column the SQL needs that older databases lack: the cell is empty there. */
  requires?: [table: string, column: string];
  /** Turns the SQL value into the cell's value. */
  format?: (value: unknown) => unknown;
}

export const TRIAL_COLUMNS: Column[] = [
  { name: 'study', sql: 't.study', type: 'text', description: 'Study id (the `id` of the study file).' },
  { name: 'mode', sql: 't.mode', type: 'text', description: 'Study mode when the answer was given: `pilot` (flagged test data) or `live`.' },
  { name: 'session', sql: 't.session_id', type: 'text', description: 'Session id: one participant\'s run through the study.' },
  {
    name: 'participant',
    sql: 't.participant',
    type: 'text',
    description: 'Pseudonymous participant id: an HMAC of the recruitment id under a server secret. Raw Prolific ids are never exported here.',
  },
  // One column per between-participant factor (not one "factor=level;…" cell): tidy.
  ...FACTORS.map(
    (f): Column => ({
      name: `condition_${f}`,
      sql: `json_extract(s.condition, '$.${f}')`,
      type: 'text',
      description: `Level of the between-participant factor \`${f}\` assigned to this session (empty when ${f} varies within participants).`,
    }),
  ),
  { name: 'seed', sql: 's.seed', type: 'integer', description: 'Seed of this participant\'s randomisation, drawn by the server and stored with the session: the condition among equally filled ones, the trials among equally loaded ones, the trial order (within blocks under design.order: latin_square, and where catch trials go), and each trial\'s query order — which image is query 0, drawn upper by legible\'s client on every reload and device (drawn anew for each practice round).' },
  { name: 'seq', sql: 't.seq', type: 'integer', description: 'Position of the trial in the participant\'s task list, from 0 (practice trials first).' },
  { name: 'trial_id', sql: 't.trial_id', type: 'text', description: 'Trial id in the study\'s manifest: `layer/basis/index/kind/reference_kind`.' },
  { name: 'kind', sql: 't.kind', type: 'text', description: '`main`, `catch` (the queries are reference images themselves) or `practice`.' },
  { name: 'is_catch', sql: "(t.kind = 'catch')", type: 'boolean', description: '1 for catch trials, else 0.' },
  { name: 'is_practice', sql: "(t.kind = 'practice')", type: 'boolean', description: '1 for practice trials (answered with feedback), else 0.' },
  {
    name: 'practice_round',
    sql: 't.practice_round',
    type: 'integer',
    requires: ['trials', 'practice_round'],
    description: 'Practice round (from 0) of a practice trial when the study repeats practice until a criterion; empty otherwise.',
  },
  { name: 'feature', sql: 't.feature', type: 'text', description: 'Feature id `layer/basis/index`: the unit of analysis.' },
  { name: 'layer', sql: 't.layer', type: 'text', description: 'Layer name from the study file.' },
  { name: 'basis', sql: 't.basis', type: 'text', description: '`channels` (single units), `nmf` (dictionary concepts) or `sae`.' },
  { name: 'feature_index', sql: 't.feature_index', type: 'integer', description: 'Index of the channel or dictionary direction within its layer and basis.' },
  { name: 'reference_kind', sql: 't.reference_kind', type: 'text', description: '`natural` exemplars or feature `visualization`s as references.' },
  { name: 'query_image_0', sql: "json_extract(t.query_images, '$[0]')", type: 'text', description: 'Image id (path in the data set) of query 0 in the task list.' },
  { name: 'query_image_1', sql: "json_extract(t.query_images, '$[1]')", type: 'text', description: 'Image id of query 1 in the task list.' },
  { name: 'answer', sql: 't.answer', type: 'integer', description: 'Task-list index (0 or 1) of the query that matches the maximally activating side: the correct choice.' },
  { name: 'choice', sql: 't.choice', type: 'integer', description: 'Task-list index (0 or 1) of the query the participant chose.' },
  { name: 'confidence', sql: 't.confidence', type: 'integer', unit: '1–3', description: 'Confidence: 1 guessing, 2 fairly sure, 3 very sure.' },
  {
    name: 'button',
    sql: "CASE WHEN t.query_order IS NULL THEN NULL WHEN json_extract(t.query_order, '$[0]') = t.choice THEN 4 - t.confidence ELSE 3 + t.confidence END",
    type: 'integer',
    unit: '1–6',
    description: 'The on-screen button (= key) pressed: 1 upper picture very sure, 2 fairly sure, 3 guessing, 4 lower picture guessing, 5 fairly sure, 6 very sure (empty if the client did not report the query order).',
  },
  { name: 'correct', sql: 't.correct', type: 'boolean', description: '1 if choice = answer, else 0 (scored on the server).' },
  { name: 'rt_ms', sql: 't.rt_ms', type: 'number', unit: 'ms', description: 'Response time from the first painted frame of the trial to the response.' },
  {
    name: 'upper_query',
    sql: "json_extract(t.query_order, '$[0]')",
    type: 'integer',
    description: 'Task-list index of the query drawn in the upper position (empty if the client did not report it). legible\'s client draws query 0 upper, so screen positions follow the seeded task-list order.',
  },
  {
    name: 'seen_twice',
    sql:
      "COALESCE(MIN(t.client_time) OVER (PARTITION BY t.session_id ORDER BY t.seq ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING) < t.client_time, 0) " +
      "OR EXISTS (SELECT 1 FROM events e WHERE e.session_id = t.session_id AND e.type = 'session_conflict' AND e.seq = t.seq)",
    type: 'boolean',
    requires: ['events', 'seq'],
    description:
      '1 if the participant had this trial on screen more than once: its recorded answer was given after the answer to a later trial (client clock; the trial came again after a page closed before its first answer reached the server), or a `session_conflict` event names it (it was also on screen in another tab, window or device; the answer recorded first is the one kept); else 0.',
  },
  { name: 'input', sql: 't.input', type: 'text', description: '`key` or `pointer`: how the response was given.' },
  { name: 'onset_ms', sql: 't.onset_ms', type: 'number', unit: 'ms', description: 'Client clock (performance.now) at the first painted frame of the trial.' },
  { name: 'response_ms', sql: 't.response_ms', type: 'number', unit: 'ms', description: 'Client clock (performance.now) at the response.' },
  { name: 'client_time', sql: 't.client_time', type: 'number', unit: 'ms since 1970-01-01 UTC', description: 'Client wall clock at the response.' },
  { name: 'server_time', sql: 't.server_time', type: 'timestamp', unit: 'ISO 8601 UTC', description: 'Server time when the answer was first recorded.' },
  { name: 'window_w', sql: 't.window_w', type: 'integer', unit: 'CSS px', description: 'Browser window inner width.' },
  { name: 'window_h', sql: 't.window_h', type: 'integer', unit: 'CSS px', description: 'Browser window inner height.' },
  { name: 'screen_w', sql: 't.screen_w', type: 'integer', unit: 'CSS px', description: 'Screen width.' },
  { name: 'screen_h', sql: 't.screen_h', type: 'integer', unit: 'CSS px', description: 'Screen height.' },
  { name: 'dpr', sql: 't.dpr', type: 'number', description: 'devicePixelRatio: device pixels per CSS pixel.' },
  { name: 'plugin_version', sql: 't.plugin_version', type: 'text', description: 'Version of the feature-2afc trial plugin that recorded the trial.' },
  { name: 'session_status', sql: 's.status', type: 'text', description: 'Session status at export: `active`, `finished` or `released`.' },
  { name: 'outcome', sql: "COALESCE(s.outcome, '')", type: 'text', description: 'Session outcome at finish: `completed` or `failed_checks` (empty while unfinished).' },
  {
    name: 'simulated',
    sql: "EXISTS (SELECT 1 FROM meta WHERE key = 'simulated')",
    type: 'boolean',
    description: '1 when the row comes from a database of simulated participants (`legible pilot`: answers drawn from the machine observer\'s predictions or given accuracies; no person took part), else 0.',
  },
];

