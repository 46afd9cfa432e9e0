export { exportStudy, writeTrialsCsv, dataDictionary, csvCell } from './export.ts';
export { TRIAL_COLUMNS, type Column } from './columns.ts';
