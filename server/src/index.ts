// @legible/server: the study server. One entry point; the commands (`legible serve`, `admin-token`,
// `backup`, `withdraw`) are in commands.ts.
export { createApp, createHandler, startServer, defaultClientDir, DEFAULT_RATE_LIMITS, type AppOptions, type ServerOptions, type RunningServer, type RateLimits } from './app.ts';
export { openDatabase, LegibleDb, SCHEMA_VERSION, MAX_EVENTS_PER_SESSION, type SessionRow, type SessionMeta, type TrialRow, type IdentityRow, type EventRow, type AuditRow, type AdminTokenRow, type Mode, type RecordResult } from './db.ts';
export { loadRegistry, Registry, studyEntry, readManifest, type StudyEntry, type Builder } from './registry.ts';
export { assignTasks, makePlan, tallyLoad, conditionKey, unitKey, practiceRoundsOf, type Task, type Load, type Plan, type Condition } from './assign.ts';
export { practiceState, practiceLayout, roundSummaryFor, type PracticeState, type RoundSummary } from './practice.ts';
export { LoadTracker } from './balance.ts';
export { AdminService, type StudyProgress, type ParticipantRow } from './admin.ts';
export { backupDatabase, type BackupResult } from './backup.ts';
export { SessionService, HttpError } from './sessions.ts';
