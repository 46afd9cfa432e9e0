export { exportStudy, writeTrialsCsv, dataDictionary } from './export.ts';
export { csvCell, parseCsv, parseCsvRecords } from './csv.ts';
export { TRIAL_COLUMNS, type Column } from './columns.ts';
