// Adam (Kingma & Ba 2015) over named Float32Array parameters, driven from TypeScript: a gradient
// graph (grad/vjp.ts, params: 'inputs') takes the parameters as inputs and returns their gradients;
// step() updates them in place. Moments are kept in float32 and the update is computed in double.

export interface AdamOptions {
  /** Learning rate (default 1e-3). */
  lr?: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  /** Decoupled weight decay (AdamW), per step: p ← p − lr·wd·p (default 0). */
  weightDecay?: number;
  /** Gradient ascent instead of descent (feature visualization maximises its objective). */
  maximize?: boolean;
}

export class Adam {
  readonly lr: number;
  private readonly b1: number;
  private readonly b2: number;
  private readonly eps: number;
  private readonly wd: number;
  private readonly sign: number;
  private readonly m = new Map<string, Float32Array>();
  private readonly v = new Map<string, Float32Array>();
  /** Steps taken. */
  t = 0;

  constructor(
    /** The parameters, updated in place. */
    readonly params: Record<string, Float32Array>,
    opts: AdamOptions = {},
  ) {
    this.lr = opts.lr ?? 1e-3;
    this.b1 = opts.beta1 ?? 0.9;
    this.b2 = opts.beta2 ?? 0.999;
    this.eps = opts.eps ?? 1e-8;
    this.wd = opts.weightDecay ?? 0;
    this.sign = opts.maximize ? 1 : -1;
    for (const [name, p] of Object.entries(params)) {
      this.m.set(name, new Float32Array(p.length));
      this.v.set(name, new Float32Array(p.length));
    }
  }

  /** Restart the moments of params[name][start, end) (e.g. after reinitialising those entries). */
  reset(name: string, start: number, end: number): void {
    this.m.get(name)!.fill(0, start, end);
    this.v.get(name)!.fill(0, start, end);
  }

  /** One update from the gradients of every parameter (same names and lengths). */
  step(grads: Record<string, ArrayLike<number>>, lr = this.lr): void {
    this.t++;
    const c1 = 1 - this.b1 ** this.t;
    const c2 = 1 - this.b2 ** this.t;
    const stepSize = (lr * Math.sqrt(c2)) / c1;
    // ε is added to √v̂ = √v / √c2, as in the paper: scale it into √v's units.
    const epsHat = this.eps * Math.sqrt(c2);
    const { b1, b2, sign } = this;
    for (const [name, p] of Object.entries(this.params)) {
      const g = grads[name];
      if (!g || g.length !== p.length) throw new Error(`Adam: gradient of "${name}" has ${g?.length ?? 'no'} values, the parameter ${p.length}`);
      const m = this.m.get(name)!;
      const v = this.v.get(name)!;
      const decay = 1 - lr * this.wd;
      for (let i = 0; i < p.length; i++) {
        const gi = g[i];
        const mi = (m[i] = b1 * m[i] + (1 - b1) * gi);
        const vi = (v[i] = b2 * v[i] + (1 - b2) * gi * gi);
        p[i] = p[i] * decay + (sign * stepSize * mi) / (Math.sqrt(vi) + epsHat);
      }
    }
  }
}
