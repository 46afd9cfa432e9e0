// A few SVG drawing helpers for the report's figures: scales with round ticks, text that is
// escaped, and a palette that stays distinguishable for colour-blind readers (Okabe & Ito).

export const PALETTE = ['#0072B2', '#D55E00', '#009E73', '#CC79A7', '#E69F00', '#56B4E9', '#F0E442', '#000000'];
export const FONT = "DejaVu Sans, Helvetica, Arial, sans-serif";
export const INK = '#222';
export const GRID = '#e4e4e4';

export function esc(s: string | number): string {
  return String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

export class Svg {
  private readonly parts: string[] = [];
  constructor(
    readonly width: number,
    /** May be set after drawing, once the layout (e.g. a wrapped legend) is known. */
    public height: number,
    readonly title: string,
  ) {}

  add(s: string): this {
    this.parts.push(s);
    return this;
  }
  line(x1: number, y1: number, x2: number, y2: number, stroke = INK, width = 1, extra = ''): this {
    return this.add(`<line x1="${r(x1)}" y1="${r(y1)}" x2="${r(x2)}" y2="${r(y2)}" stroke="${stroke}" stroke-width="${width}"${extra}/>`);
  }
  rect(x: number, y: number, w: number, h: number, fill: string, extra = ''): this {
    return this.add(`<rect x="${r(x)}" y="${r(y)}" width="${r(Math.max(0, w))}" height="${r(Math.max(0, h))}" fill="${fill}"${extra}/>`);
  }
  circle(cx: number, cy: number, radius: number, fill: string, extra = ''): this {
    return this.add(`<circle cx="${r(cx)}" cy="${r(cy)}" r="${radius}" fill="${fill}"${extra}/>`);
  }
  polyline(points: [number, number][], stroke: string, width = 2, extra = ''): this {
    return this.add(`<polyline points="${points.map(([x, y]) => `${r(x)},${r(y)}`).join(' ')}" fill="none" stroke="${stroke}" stroke-width="${width}"${extra}/>`);
  }
  text(x: number, y: number, s: string | number, opts: { size?: number; anchor?: 'start' | 'middle' | 'end'; weight?: string; fill?: string; rotate?: number; baseline?: string } = {}): this {
    const rot = opts.rotate ? ` transform="rotate(${opts.rotate} ${r(x)} ${r(y)})"` : '';
    const base = opts.baseline ? ` dominant-baseline="${opts.baseline}"` : '';
    return this.add(
      `<text x="${r(x)}" y="${r(y)}" font-size="${opts.size ?? 12}" text-anchor="${opts.anchor ?? 'start'}"${opts.weight ? ` font-weight="${opts.weight}"` : ''} fill="${opts.fill ?? INK}"${rot}${base}>${esc(s)}</text>`,
    );
  }
  toString(): string {
    return [
      `<svg xmlns="http://www.w3.org/2000/svg" width="${this.width}" height="${this.height}" viewBox="0 0 ${this.width} ${this.height}" font-family="${FONT}" role="img" aria-label="${esc(this.title)}">`,
      `<title>${esc(this.title)}</title>`,
      `<rect width="100%" height="100%" fill="#fff"/>`,
      ...this.parts,
      '</svg>',
    ].join('\n');
  }
}

const r = (x: number) => Math.round(x * 10) / 10;

/** Round tick values covering [lo, hi]. */
export function ticks(lo: number, hi: number, target = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / target;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + 1e-9 * step; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

export function linear(d0: number, d1: number, r0: number, r1: number): (v: number) => number {
  return (v) => r0 + ((v - d0) / (d1 - d0 || 1)) * (r1 - r0);
}

/** A left y axis with grid lines. */
export function yAxis(svg: Svg, y: (v: number) => number, values: number[], x0: number, x1: number, format: (v: number) => string, label: string, labelX: number): void {
  for (const v of values) {
    svg.line(x0, y(v), x1, y(v), GRID);
    svg.text(x0 - 6, y(v) + 4, format(v), { anchor: 'end', size: 11, fill: '#555' });
  }
  const mid = (y(values[0]) + y(values[values.length - 1])) / 2;
  svg.text(labelX, mid, label, { anchor: 'middle', size: 12, rotate: -90 });
}

/** A deterministic jitter in [−1, 1] from an index. */
export function jitter(i: number): number {
  const x = Math.sin(i * 12.9898 + 78.233) * 43758.5453;
  return 2 * (x - Math.floor(x)) - 1;
}

/** Legend entries in rows that wrap at the figure's right edge; returns the height used. */
export function legend(svg: Svg, x: number, y: number, items: { label: string; color: string; hollow?: boolean }[]): number {
  let cx = x;
  let cy = y;
  for (const it of items) {
    const w = 30 + it.label.length * 7;
    if (cx > x && cx + w > svg.width - 10) {
      cx = x;
      cy += 18;
    }
    if (it.hollow) svg.circle(cx + 6, cy - 3, 4.5, '#fff', ` stroke="${it.color}" stroke-width="2"`);
    else svg.rect(cx, cy - 9, 12, 12, it.color, ' rx="2"');
    svg.text(cx + 17, cy + 1, it.label, { size: 12 });
    cx += w;
  }
  return cy - y + 18;
}
