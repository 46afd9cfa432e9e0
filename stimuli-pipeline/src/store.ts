// The activation store: per image and tapped layer, one value per channel (spatial mean, and
// spatial max), on disk in fixed-size shards, never all in memory.
//
//   build/cache/activations/
//     store.json               what the store holds: model, input, layers, the image list, shard size
//     shard-000012.bin         float32 rows: for each layer, [images × channels] means then maxes
//     shard-000012.json        the shard's image ids, skipped files and content hashes
//
// Shard i holds images [i·S, (i+1)·S) of the image list. A shard is finished once its .json exists
// (written last, by rename), so an interrupted run resumes at the first unfinished shard, and
// several processes (`--shard k/n`, one per job of a Slurm array or Kubernetes Indexed Job) can
// fill one store on a shared file system: process k takes the shards i with i mod n = k.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, openSync, readFileSync, readSync, closeSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { LegibleError } from '@legible/studies';

export const STORE_FORMAT = 'legible-activations/1';

export interface StoreLayer {
  name: string;
  tensor: string;
  channels: number;
  /** Shape of one image's activation, e.g. [C, H, W]. */
  shape: number[];
}

export interface StoreHeader {
  format: typeof STORE_FORMAT;
  /** Identifies what was extracted: model bytes, input config, taps, image list. Different key, different store. */
  key: string;
  shardSize: number;
  images: number;
  /** Filled in by the first shard written (shapes are known only after a run). */
  layers: StoreLayer[] | null;
}

export interface ShardMeta {
  index: number;
  /** Ids of the images in this shard's rows, in order (images that failed to decode are absent). */
  ids: string[];
  skipped: { path: string; reason: string }[];
  hashes: Record<string, string>;
}

export interface ShardData extends ShardMeta {
  /** Per layer: row-major [row][channel] means and maxes. */
  mean: Float32Array[];
  max: Float32Array[];
}

/** Which shards a process takes: "k/n" → shards with index mod n = k. */
export interface ShardSlice {
  k: number;
  n: number;
}

export function parseShardSlice(text: string): ShardSlice {
  const m = /^(\d+)\/(\d+)$/.exec(text.trim());
  const k = m ? Number(m[1]) : NaN;
  const n = m ? Number(m[2]) : NaN;
  if (!m || n < 1 || k >= n) throw new LegibleError(`--shard expects k/n with 0 ≤ k < n (e.g. 0/8 for the first of 8 jobs), got "${text}"`);
  return { k, n };
}

export function storeKey(parts: { model: string; input: unknown; tensors: string[]; ids: string[] }): string {
  const h = createHash('sha256');
  h.update(`${parts.model}\n${JSON.stringify(parts.input)}\n${parts.tensors.join('\n')}\n`);
  for (const id of parts.ids) h.update(`${id}\n`);
  return h.digest('hex');
}

export class ActivationStore {
  readonly dir: string;
  header: StoreHeader;

  private constructor(dir: string, header: StoreHeader) {
    this.dir = dir;
    this.header = header;
  }

  /**
   * Open the store in `dir` for this key, creating it if needed. A store made for other inputs
   * (another model, input config, layer list or image list) is discarded.
   */
  static open(dir: string, key: string, images: number, shardSize: number, log: (s: string) => void = () => {}): ActivationStore {
    const file = join(dir, 'store.json');
    if (existsSync(file)) {
      const header = JSON.parse(readFileSync(file, 'utf8')) as StoreHeader;
      if (header.format === STORE_FORMAT && header.key === key && header.shardSize === shardSize && header.images === images) {
        return new ActivationStore(dir, header);
      }
      log(`activation store in ${dir} was made for other inputs: starting it afresh`);
      rmSync(dir, { recursive: true, force: true });
    }
    mkdirSync(dir, { recursive: true });
    const header: StoreHeader = { format: STORE_FORMAT, key, shardSize, images, layers: null };
    writeJsonAtomic(file, header);
    return new ActivationStore(dir, header);
  }

  get shardCount(): number {
    return Math.ceil(this.header.images / this.header.shardSize);
  }

  /** Image index range [start, end) of shard i. */
  range(i: number): [number, number] {
    const start = i * this.header.shardSize;
    return [start, Math.min(start + this.header.shardSize, this.header.images)];
  }

  isDone(i: number): boolean {
    return existsSync(this.metaFile(i));
  }

  missing(slice?: ShardSlice): number[] {
    const out: number[] = [];
    for (let i = 0; i < this.shardCount; i++) if ((!slice || i % slice.n === slice.k) && !this.isDone(i)) out.push(i);
    return out;
  }

  /** Record the layers' shapes (first writer wins; later writers must agree). */
  setLayers(layers: StoreLayer[]): void {
    const file = join(this.dir, 'store.json');
    const current = JSON.parse(readFileSync(file, 'utf8')) as StoreHeader;
    if (current.layers) {
      if (JSON.stringify(current.layers) !== JSON.stringify(layers)) {
        throw new LegibleError(`activation store ${this.dir}: another process recorded different layer shapes; remove the folder and run again`);
      }
      this.header = current;
      return;
    }
    this.header = { ...current, layers };
    writeJsonAtomic(file, this.header);
  }

  write(shard: ShardData): void {
    const layers = this.header.layers;
    if (!layers) throw new Error('setLayers before writing shards');
    const rows = shard.ids.length;
    const floats = layers.reduce((s, l) => s + 2 * rows * l.channels, 0);
    const buf = new Float32Array(floats);
    let o = 0;
    layers.forEach((l, li) => {
      buf.set(shard.mean[li], o);
      o += rows * l.channels;
      buf.set(shard.max[li], o);
      o += rows * l.channels;
    });
    const binTmp = `${this.binFile(shard.index)}.tmp-${process.pid}`;
    writeFileSync(binTmp, new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength));
    renameSync(binTmp, this.binFile(shard.index));
    const meta: ShardMeta = { index: shard.index, ids: shard.ids, skipped: shard.skipped, hashes: shard.hashes };
    writeJsonAtomic(this.metaFile(shard.index), meta);
  }

  readMeta(i: number): ShardMeta {
    if (!this.isDone(i)) {
      throw new LegibleError(
        `activation shard ${i} of ${this.dir} is missing: not every part has finished. Run the missing parts (legible stimuli <study> --shard k/n), or run without --merge to extract them here.`,
      );
    }
    return JSON.parse(readFileSync(this.metaFile(i), 'utf8')) as ShardMeta;
  }

  read(i: number): ShardData {
    const meta = this.readMeta(i);
    const layers = this.header.layers!;
    const rows = meta.ids.length;
    const floats = layers.reduce((s, l) => s + 2 * rows * l.channels, 0);
    const buf = new Float32Array(floats);
    const fd = openSync(this.binFile(i), 'r');
    try {
      const bytes = new Uint8Array(buf.buffer);
      let got = 0;
      while (got < bytes.length) {
        const n = readSync(fd, bytes, got, bytes.length - got, got);
        if (n === 0) throw new LegibleError(`activation shard ${this.binFile(i)} is truncated: remove it and its .json, then run again`);
        got += n;
      }
    } finally {
      closeSync(fd);
    }
    const mean: Float32Array[] = [];
    const max: Float32Array[] = [];
    let o = 0;
    for (const l of layers) {
      mean.push(buf.subarray(o, o + rows * l.channels));
      o += rows * l.channels;
      max.push(buf.subarray(o, o + rows * l.channels));
      o += rows * l.channels;
    }
    return { ...meta, mean, max };
  }

  private binFile(i: number): string {
    return join(this.dir, `shard-${String(i).padStart(6, '0')}.bin`);
  }
  private metaFile(i: number): string {
    return join(this.dir, `shard-${String(i).padStart(6, '0')}.json`);
  }
}

function writeJsonAtomic(file: string, value: unknown): void {
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, `${JSON.stringify(value)}\n`);
  renameSync(tmp, file);
}
