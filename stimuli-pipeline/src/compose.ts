// Trial images: each side's reference grid composed into one image, and each query alone, at the
// study's image size (stimuli.image_px, else cell_px; the client scales a cell to cell_px) and
// encoding. Files are named by a hash of their bytes, so identical images
// are stored once and can be cached forever by browsers.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp, { type Sharp } from 'sharp';
import type { Study } from '@legible/studies';

type Stimuli = Study['stimuli'];

export class Composer {
  private cells = new Map<string, Promise<Buffer>>();
  private grids = new Map<string, Promise<string>>();
  private written = new Map<string, Promise<string>>();
  /** Side of one stored cell, and the gap between cells in stored pixels (scaled with the cells). */
  private readonly px: number;
  private readonly gap: number;

  constructor(
    private readonly resolveImage: (id: string) => string,
    private readonly stimuli: Stimuli,
    private readonly outDir: string,
  ) {
    mkdirSync(join(outDir, 'img'), { recursive: true });
    this.px = stimuli.image_px ?? stimuli.cell_px;
    const gap = (stimuli.gap_px * this.px) / stimuli.cell_px;
    this.gap = stimuli.gap_px > 0 ? Math.max(1, Math.round(gap)) : 0;
  }

  /** One image at cell size: raw RGB, centre-cropped to a square. */
  private cell(id: string): Promise<Buffer> {
    let cell = this.cells.get(id);
    if (!cell) {
      const px = this.px;
      cell = sharp(this.resolveImage(id))
        .toColourspace('srgb')
        .flatten({ background: '#ffffff' })
        .resize(px, px, { fit: 'cover', kernel: this.stimuli.resample === 'nearest' ? 'nearest' : 'lanczos3' })
        .removeAlpha()
        .raw()
        .toBuffer();
      this.cells.set(id, cell);
    }
    return cell;
  }

  /** A grid of images, row by row, `columns` wide. Returns the asset path relative to the build folder. */
  grid(ids: string[], columns: number): Promise<string> {
    const key = `${columns}:${ids.join('\n')}`;
    let grid = this.grids.get(key);
    if (!grid) {
      grid = this.composeGrid(ids, columns);
      this.grids.set(key, grid);
    }
    return grid;
  }

  private async composeGrid(ids: string[], columns: number): Promise<string> {
    const { px, gap } = this;
    const cols = Math.min(columns, ids.length);
    const rows = Math.ceil(ids.length / cols);
    const width = cols * px + (cols - 1) * gap;
    const height = rows * px + (rows - 1) * gap;
    const cells = await Promise.all(ids.map((id) => this.cell(id)));
    const composed = sharp({ create: { width, height, channels: 3, background: '#ffffff' } }).composite(
      cells.map((input, i) => ({ input, raw: { width: px, height: px, channels: 3 as const }, left: (i % cols) * (px + gap), top: Math.floor(i / cols) * (px + gap) })),
    );
    return this.write(await this.encode(composed));
  }

  /** One query image. */
  async single(id: string): Promise<string> {
    const px = this.px;
    const raw = await this.cell(id);
    return this.write(await this.encode(sharp(raw, { raw: { width: px, height: px, channels: 3 } })));
  }

  private encode(img: Sharp): Promise<Buffer> {
    const { format, quality } = this.stimuli;
    return (format === 'jpeg' ? img.jpeg({ quality, mozjpeg: true }) : img.webp({ quality, effort: 4 })).toBuffer();
  }

  private write(bytes: Buffer): Promise<string> {
    const name = `img/${createHash('sha256').update(bytes).digest('hex').slice(0, 20)}.${this.stimuli.format === 'jpeg' ? 'jpg' : 'webp'}`;
    let done = this.written.get(name);
    if (!done) {
      const file = join(this.outDir, name);
      done = Promise.resolve().then(() => {
        if (!existsSync(file)) writeFileSync(file, bytes);
        return name;
      });
      this.written.set(name, done);
    }
    return done;
  }

  /** Every asset written, relative to the build folder. */
  assets(): string[] {
    return [...this.written.keys()].sort();
  }
}
