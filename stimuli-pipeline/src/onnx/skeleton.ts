// The structure of an .onnx file without its weights: the graph (nodes, inputs, outputs,
// value_info) and every initializer's name, type and dims, with the data of large initializers left
// in the file. Reads the file in small positional reads, so listing or checking a 500 MB model
// costs a few megabytes of memory, not the model's size. Small initializers (shape constants, class
// tokens) keep their data: shape inference reads their values.
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { decodeMessage, ProtoError, type ModelProto } from './proto.ts';

/** Initializers above this many bytes are read without their data. */
const KEEP_BYTES = 64 * 1024;
const LEN = 2;

class FileReader {
  private window = Buffer.alloc(0);
  private start = 0;
  constructor(
    private readonly fd: number,
    readonly size: number,
  ) {}

  /** `n` bytes at `pos` (a copy for large reads; a view into the window for small ones). */
  bytes(pos: number, n: number): Uint8Array {
    if (pos + n > this.size) throw new ProtoError(`malformed protobuf: field at byte ${pos} runs past the end of the file`);
    if (pos >= this.start && pos + n <= this.start + this.window.length) return this.window.subarray(pos - this.start, pos - this.start + n);
    if (n > 1 << 20) {
      const out = Buffer.alloc(n);
      readSync(this.fd, out, 0, n, pos);
      return out;
    }
    const len = Math.min(Math.max(n, 1 << 16), this.size - pos);
    this.window = Buffer.alloc(len);
    readSync(this.fd, this.window, 0, len, pos);
    this.start = pos;
    return this.window.subarray(0, n);
  }

  /** A varint at `pos`: its value and the position after it. */
  varint(pos: number): [number, number] {
    const b = this.bytes(pos, Math.min(10, this.size - pos));
    let value = 0;
    let mult = 1;
    for (let i = 0; i < b.length; i++) {
      value += (b[i] & 0x7f) * mult;
      mult *= 128;
      if (b[i] < 0x80) return [value, pos + i + 1];
    }
    throw new ProtoError(`malformed protobuf: truncated varint at byte ${pos}`);
  }

  /** The fields of the message in [pos, end): number, wire type, payload start and end (tag included from `at`). */
  *fields(pos: number, end: number): Generator<{ no: number; wire: number; at: number; start: number; end: number }> {
    while (pos < end) {
      const at = pos;
      const [tag, p] = this.varint(pos);
      const no = Math.floor(tag / 8);
      const wire = tag & 7;
      let start = p;
      let stop: number;
      if (wire === 0) stop = this.varint(p)[1];
      else if (wire === 1) stop = p + 8;
      else if (wire === 5) stop = p + 4;
      else if (wire === LEN) {
        const [n, q] = this.varint(p);
        start = q;
        stop = q + n;
      } else throw new ProtoError(`malformed protobuf: wire type ${wire} at byte ${at}`);
      if (stop > end) throw new ProtoError(`malformed protobuf: field ${no} at byte ${at} runs past its message`);
      yield { no, wire, at, start, end: stop };
      pos = stop;
    }
  }
}

/** Bytes of a length-delimited field with the given number and payload. */
function lenField(no: number, payload: Uint8Array[]): Uint8Array[] {
  const n = payload.reduce((s, p) => s + p.length, 0);
  return [varintBytes(no * 8 + LEN), varintBytes(n), ...payload];
}

function varintBytes(v: number): Uint8Array {
  const out: number[] = [];
  while (v >= 128) {
    out.push((v % 128) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return Uint8Array.from(out);
}

const join = (parts: Uint8Array[]) => Buffer.concat(parts);

/**
 * The model in `path` with the data of initializers larger than 64 KiB left out (their `dims`,
 * `data_type` and `name` are kept; `raw_data` and the typed data fields are absent).
 */
export function readModelSkeleton(path: string): ModelProto {
  const fd = openSync(path, 'r');
  try {
    const r = new FileReader(fd, fstatSync(fd).size);
    const top: Uint8Array[] = [];
    for (const f of r.fields(0, r.size)) {
      if (f.no === 7 && f.wire === LEN) top.push(...lenField(7, [graphSkeleton(r, f.start, f.end)]));
      else top.push(Buffer.from(r.bytes(f.at, f.end - f.at)));
    }
    return decodeMessage('ModelProto', join(top));
  } finally {
    closeSync(fd);
  }
}

function graphSkeleton(r: FileReader, start: number, end: number): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const f of r.fields(start, end)) {
    if (f.no === 5 && f.wire === LEN && f.end - f.start > KEEP_BYTES) {
      // An initializer: keep its small fields, drop the data.
      const kept: Uint8Array[] = [];
      for (const t of r.fields(f.start, f.end)) {
        if ([4, 5, 6, 7, 9, 10, 11].includes(t.no)) continue;
        kept.push(Buffer.from(r.bytes(t.at, t.end - t.at)));
      }
      parts.push(...lenField(5, kept));
    } else {
      parts.push(Buffer.from(r.bytes(f.at, f.end - f.at)));
    }
  }
  return join(parts);
}
