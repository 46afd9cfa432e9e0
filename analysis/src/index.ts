// @legible/analysis: tidy exports, exclusions, statistics (with a GLMM checked against lme4) and reports.
export { exportStudy, writeTrialsCsv, writeTrialsJsonl, writeParticipants, dataDictionary, type ExportOptions, type ExportResult, type ExportFormat } from './export.ts';
export { csvCell, parseCsv, parseCsvRecords } from './csv.ts';
export { TRIAL_COLUMNS, type Column } from './columns.ts';
export { PARTICIPANT_COLUMNS, participantRows, type ParticipantRow } from './participants.ts';
export { COUNT_DEFINITIONS, countSessions, formatCounts, type SessionCounts } from './exclusions.ts';
export { studySessionCounts } from './participants.ts';
export { decide, ExclusionTally, RULES, sessionsOfMode, type ModeSessions, type ExclusionConfig, type ExclusionDecision, type ExclusionSummary, type ParticipantFacts } from './exclusions.ts';
export { loadLegibleExport, type Dataset } from './dataset.ts';
export { loadMapped, loadMapping, parseMapping, Mapping } from './mapping.ts';
export { readTable, Table } from './table.ts';
export { analyze, type AnalyzeOptions, type AnalysisResult } from './analyze.ts';
export { fitGlmm, type GlmmFit, type GlmmInput } from './stats/glmm.ts';
export { fitModel, likelihoodRatio, dropTermTests, powerSimulation, type FittedModel, type LikelihoodRatio, type PowerResult } from './stats/models.ts';
export { parseFormula, modelMatrix } from './stats/formula.ts';
export { simulateStudy, type SimulationSpec } from './stats/simulate.ts';
