// @legible/explorer: `legible explore` — a static site per study that shows every feature (exemplars
// by quantile, visualizations, decision contribution, machine score, human answers) and runs the
// model on a photo in the browser with onnxruntime-web.
export { buildExplorer, distDir, EXPLORER_FORMAT, ORT_FILES, QUANTILES, type ExploreOptions, type ExplorerData, type FeatureCard, type FeaturePage, type TryData } from './build.ts';
export { readAnswers, summarise, type Answer, type HumanSummary } from './human.ts';
export { probeModel, pruneToOutputs, type ProbeLayer } from './model.ts';
