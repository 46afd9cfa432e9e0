// @legible/server: the study server. One entry point; `legible serve` is in commands.ts.
export { createApp, startServer, defaultClientDir, type AppOptions, type ServerOptions, type RunningServer } from './app.ts';
export { openDatabase, LegibleDb, SCHEMA_VERSION, type SessionRow, type SessionMeta, type TrialRow, type IdentityRow, type Mode, type RecordResult } from './db.ts';
export { loadRegistry, Registry, studyEntry, readManifest, type StudyEntry, type Builder } from './registry.ts';
export { assignTasks, makePlan, tallyLoad, conditionKey, unitKey, type Task, type Load, type Plan, type Condition } from './assign.ts';
export { SessionService, HttpError } from './sessions.ts';
