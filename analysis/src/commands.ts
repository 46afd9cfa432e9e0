import type { Command } from '@legible/studies';

export const commands: Command[] = [];
