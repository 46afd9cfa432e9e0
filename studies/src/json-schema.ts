// The JSON Schema of the study file, generated from the zod schema, for editors' autocompletion
// (YAML language server: `# yaml-language-server: $schema=<path>/study.schema.json`).
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { Study } from './schema.ts';

export const SCHEMA_FILE = fileURLToPath(new URL('../study.schema.json', import.meta.url));

export function studyJsonSchema(): string {
  const schema = z.toJSONSchema(Study, { io: 'input', unrepresentable: 'any', target: 'draft-2020-12' }) as Record<string, unknown>;
  const out = {
    $id: 'https://legible.invalid/study.schema.json',
    title: 'legible study file',
    description: 'A legible study: model, data set, bases, design, rules and texts. Validate with `legible validate`.',
    ...schema,
  };
  return `${JSON.stringify(out, null, 2)}\n`;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  writeFileSync(SCHEMA_FILE, studyJsonSchema());
  console.log(`wrote ${SCHEMA_FILE}`);
}
