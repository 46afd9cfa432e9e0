export * from './schema.ts';
export * from './contracts.ts';
export * from './load.ts';
export * from './errors.ts';
export * from './cli.ts';
export * from './random.ts';
export * from './names.ts';
export { commands, validateCommand, type StudyCheck } from './commands.ts';
export * from './model-file.ts';
