// Trial image composition: grid and query sizes at the display size and at a smaller stored size
// (stimuli.image_px), with the gap scaled alike, and cells that keep their source's colours.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { Stimuli } from '@legible/studies';
import { Composer } from '../src/compose.ts';

describe('Composer', () => {
  let dir: string;
  const colours = [
    [200, 30, 30],
    [30, 200, 30],
    [30, 30, 200],
    [220, 220, 40],
  ];
  const ids = colours.map((_, i) => `img${i}.png`);

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'legible-compose-'));
    for (const [i, [r, g, b]] of colours.entries()) {
      await sharp({ create: { width: 12, height: 12, channels: 3, background: { r, g, b } } })
        .png()
        .toFile(join(dir, ids[i]));
    }
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  async function compose(stimuli: Record<string, unknown>, out: string) {
    const c = new Composer((id) => join(dir, id), Stimuli.parse(stimuli), join(dir, out));
    const grid = await sharp(join(dir, out, await c.grid(ids, 2))).raw().toBuffer({ resolveWithObject: true });
    const query = await sharp(join(dir, out, await c.single(ids[0]))).metadata();
    return { grid, query };
  }

  it('stores images at cell_px by default, and at image_px when given, the gap scaled with them', async () => {
    const full = await compose({ cell_px: 24, gap_px: 4, resample: 'nearest', quality: 95 }, 'full');
    assert.deepEqual([full.grid.info.width, full.grid.info.height], [2 * 24 + 4, 2 * 24 + 4]);
    assert.deepEqual([full.query.width, full.query.height], [24, 24]);

    const small = await compose({ cell_px: 24, gap_px: 4, image_px: 12, resample: 'nearest', quality: 95 }, 'small');
    assert.deepEqual([small.grid.info.width, small.grid.info.height], [2 * 12 + 2, 2 * 12 + 2]);
    assert.deepEqual([small.query.width, small.query.height], [12, 12]);

    // Each cell holds its own image, row by row: the centre pixel of cell i has colour i.
    const { data, info } = small.grid;
    for (const [i, expected] of colours.entries()) {
      const x = (i % 2) * (12 + 2) + 6;
      const y = Math.floor(i / 2) * (12 + 2) + 6;
      const at = (y * info.width + x) * info.channels;
      for (let ch = 0; ch < 3; ch++) assert.ok(Math.abs(data[at + ch] - expected[ch]) < 20, `cell ${i} channel ${ch}: ${data[at + ch]} vs ${expected[ch]}`);
    }
  });

  it('refuses an image_px below 8 or above 1024, naming the field', () => {
    assert.throws(() => Stimuli.parse({ image_px: 4 }), /image_px|8/);
    assert.throws(() => Stimuli.parse({ image_px: 2048 }), /image_px|1024/);
  });
});
