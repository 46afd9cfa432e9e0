// The demo CNN, forward and backward by hand over Float32Arrays (no ML library).
//
//   image [N,1,28,28]
//   conv1 1→16 3×3 pad 1 → BN → ReLU = block1 [N,16,28,28] → MaxPool 2×2
//   conv2 16→32 3×3 pad 1 → BN → ReLU = block2 [N,32,14,14] → MaxPool 2×2
//   conv3 32→64 3×3 pad 1 → BN → ReLU = block3 [N,64,7,7] → GlobalAveragePool → Flatten
//   Gemm 64→10 = logits [N,10]
//
// Training uses batch normalisation after each convolution (convolutions without bias); the export
// folds each BN into its convolution's weights and bias, so the ONNX graph is Conv → Relu.
//
// Memory layout: activations are kept channel-major over the whole batch, [C][B][H][W] ("CNHW"), so
// a convolution is a few matrix products over all images and a channel's values are one contiguous
// row (batch norm and pooling work row by row). conv1 (one input channel) is im2col + one product;
// conv2 and conv3 use Winograd F(2×2, 3×3), which needs 2.25× fewer multiplications. All products go
// through one register-blocked dot-product kernel (gemmABt). The input gradient of a convolution is
// itself a convolution (of the output gradient with the flipped, transposed kernel).
//
// Measured on this 2-core machine (one ghost batch of 64, forward + backward, one core): im2col
// everywhere ≈ 230 ms, Winograd for conv2/conv3 ≈ 150 ms; the dot-product kernel runs at ≈ 2 GMAC/s.
//
// Each operation's backward rule sits next to its forward.

export const H0 = 28;
export const CLASSES = 10;
export const CHANNELS = [1, 16, 32, 64] as const;
export const BN_EPS = 1e-5;
/** Input normalisation: (pixel/255 − MEAN) / STD, the study file's model.input. */
export const PIXEL_MEAN = 0.286;
export const PIXEL_STD = 0.353;

// ─── Parameters ─────────────────────────────────────────────────────────────────────────────

export interface ParamSpec {
  name: string;
  shape: number[];
  offset: number;
  size: number;
}

function layout(specs: [string, number[]][]): { params: ParamSpec[]; total: number } {
  let offset = 0;
  const params = specs.map(([name, shape]) => {
    const size = shape.reduce((a, b) => a * b, 1);
    const p = { name, shape, offset, size };
    offset += size;
    return p;
  });
  return { params, total: offset };
}

/** Trainable parameters, one flat Float32Array. Conv weights are [Cout, Cin·3·3]. */
export const TRAIN_PARAMS = layout([
  ['conv1.weight', [16, 1, 3, 3]],
  ['bn1.weight', [16]],
  ['bn1.bias', [16]],
  ['conv2.weight', [32, 16, 3, 3]],
  ['bn2.weight', [32]],
  ['bn2.bias', [32]],
  ['conv3.weight', [64, 32, 3, 3]],
  ['bn3.weight', [64]],
  ['bn3.bias', [64]],
  ['fc.weight', [10, 64]],
  ['fc.bias', [10]],
]);

/** Inference parameters (BN folded into the convolutions): the initializers of the ONNX file. */
export const INFER_PARAMS = layout([
  ['conv1.weight', [16, 1, 3, 3]],
  ['conv1.bias', [16]],
  ['conv2.weight', [32, 16, 3, 3]],
  ['conv2.bias', [32]],
  ['conv3.weight', [64, 32, 3, 3]],
  ['conv3.bias', [64]],
  ['fc.weight', [10, 64]],
  ['fc.bias', [10]],
]);

/** BN channels of the three layers, concatenated: 16 + 32 + 64. */
export const BN_CHANNELS = 16 + 32 + 64;
const BN_OFFSET = [0, 16, 48];

export function paramView(all: Float32Array, specs: { params: ParamSpec[] }, name: string): Float32Array {
  const p = specs.params.find((s) => s.name === name);
  if (!p) throw new Error(`no parameter ${name}`);
  return all.subarray(p.offset, p.offset + p.size);
}

/**
 * Folds batch norm (running statistics) into the convolutions: W' = W·s, b' = β − μ·s with
 * s = γ / √(σ² + ε). `running` holds the BN means then variances (2 × BN_CHANNELS).
 */
export function foldParams(train: Float32Array, running: Float64Array, out: Float32Array = new Float32Array(INFER_PARAMS.total)): Float32Array {
  for (let l = 0; l < 3; l++) {
    const cout = CHANNELS[l + 1];
    const w = paramView(train, TRAIN_PARAMS, `conv${l + 1}.weight`);
    const gamma = paramView(train, TRAIN_PARAMS, `bn${l + 1}.weight`);
    const beta = paramView(train, TRAIN_PARAMS, `bn${l + 1}.bias`);
    const wOut = paramView(out, INFER_PARAMS, `conv${l + 1}.weight`);
    const bOut = paramView(out, INFER_PARAMS, `conv${l + 1}.bias`);
    const k = w.length / cout;
    for (let o = 0; o < cout; o++) {
      const mean = running[BN_OFFSET[l] + o];
      const variance = running[BN_CHANNELS + BN_OFFSET[l] + o];
      const s = gamma[o] / Math.sqrt(variance + BN_EPS);
      for (let i = 0; i < k; i++) wOut[o * k + i] = w[o * k + i] * s;
      bOut[o] = beta[o] - mean * s;
    }
  }
  paramView(out, INFER_PARAMS, 'fc.weight').set(paramView(train, TRAIN_PARAMS, 'fc.weight'));
  paramView(out, INFER_PARAMS, 'fc.bias').set(paramView(train, TRAIN_PARAMS, 'fc.bias'));
  return out;
}

// ─── Kernels ────────────────────────────────────────────────────────────────────────────────

/**
 * C[M,N] = A[M,K] · Bt[N,K]ᵀ, all row-major. Each output is a dot product of two contiguous rows;
 * blocks of 4 rows of A × 2 rows of Bt keep 8 accumulators in registers (measured ≈2 GMAC/s per
 * core in V8 on this machine, against ≈1.1 for the i-k-j loop and ≈1.4 for 2×2 blocks).
 */
export function gemmABt(A: Float32Array, Bt: Float32Array, C: Float32Array, M: number, N: number, K: number): void {
  const M4 = M - (M % 4);
  const N2 = N - (N % 2);
  for (let i = 0; i < M4; i += 4) {
    const a0 = i * K;
    const a1 = a0 + K;
    const a2 = a1 + K;
    const a3 = a2 + K;
    const c0 = i * N;
    for (let j = 0; j < N2; j += 2) {
      const b0 = j * K;
      const b1 = b0 + K;
      let s00 = 0, s01 = 0, s10 = 0, s11 = 0, s20 = 0, s21 = 0, s30 = 0, s31 = 0;
      for (let k = 0; k < K; k++) {
        const x = Bt[b0 + k];
        const y = Bt[b1 + k];
        const p = A[a0 + k];
        const q = A[a1 + k];
        const r = A[a2 + k];
        const s = A[a3 + k];
        s00 += p * x;
        s01 += p * y;
        s10 += q * x;
        s11 += q * y;
        s20 += r * x;
        s21 += r * y;
        s30 += s * x;
        s31 += s * y;
      }
      const c = c0 + j;
      C[c] = s00;
      C[c + 1] = s01;
      C[c + N] = s10;
      C[c + N + 1] = s11;
      C[c + 2 * N] = s20;
      C[c + 2 * N + 1] = s21;
      C[c + 3 * N] = s30;
      C[c + 3 * N + 1] = s31;
    }
    for (let j = N2; j < N; j++) {
      for (let ii = i; ii < i + 4; ii++) C[ii * N + j] = dot(A, ii * K, Bt, j * K, K);
    }
  }
  for (let i = M4; i < M; i++) for (let j = 0; j < N; j++) C[i * N + j] = dot(A, i * K, Bt, j * K, K);
}

function dot(a: Float32Array, ai: number, b: Float32Array, bi: number, n: number): number {
  let s = 0;
  for (let k = 0; k < n; k++) s += a[ai + k] * b[bi + k];
  return s;
}

// ─── 3×3 convolutions (stride 1, pad 1) over CNHW batches ──────────────────────────────────

/**
 * A 3×3 convolution layer's three products. `forward` keeps what the backward pass needs, so call
 * backwardWeights / backwardInput after the forward of the same batch.
 */
export interface Conv3x3 {
  /** Y [Cout][B·H·W] = conv(X [Cin][B·H·W], W [Cout][Cin·9]), no bias. */
  forward(X: Float32Array, W: Float32Array, Y: Float32Array, B: number): void;
  /** dW [Cout][Cin·9] = ∂L/∂W for dY = ∂L/∂Y. */
  backwardWeights(dY: Float32Array, dW: Float32Array, B: number): void;
  /** dX [Cin][B·H·W] = ∂L/∂X: the convolution of dY with the flipped, transposed kernel. */
  backwardInput(dY: Float32Array, W: Float32Array, dX: Float32Array, B: number): void;
}

/** Wt[c][o·9 + (8 − t)] = W[o][c·9 + t]: the kernel of the input gradient (transposed and flipped). */
export function flipTranspose(W: Float32Array, Wt: Float32Array, Cout: number, Cin: number): void {
  for (let o = 0; o < Cout; o++) {
    for (let c = 0; c < Cin; c++) {
      for (let t = 0; t < 9; t++) Wt[c * Cout * 9 + o * 9 + (8 - t)] = W[o * Cin * 9 + c * 9 + t];
    }
  }
}

/** Zero-padded copy: X [planes][H][W] → P [planes][Hp][Wp] with the data at (1, 1); the rest zero. */
export function padPlanes(X: Float32Array, P: Float32Array, planes: number, H: number, W: number, Hp: number, Wp: number): void {
  for (let pl = 0; pl < planes; pl++) {
    const dst = pl * Hp * Wp;
    P.fill(0, dst, dst + Wp);
    for (let y = 0; y < H; y++) {
      const d = dst + (y + 1) * Wp;
      const s = (pl * H + y) * W;
      P[d] = 0;
      for (let x = 0; x < W; x++) P[d + 1 + x] = X[s + x];
      P.fill(0, d + W + 1, d + Wp);
    }
    P.fill(0, dst + (H + 1) * Wp, dst + Hp * Wp);
  }
}

/**
 * im2col: the convolution as one matrix product over the whole batch. Used for conv1, whose single
 * input channel leaves nothing for Winograd's per-frequency products to share.
 */
export class Im2colConv implements Conv3x3 {
  private readonly pad: Float32Array;
  private readonly col: Float32Array;
  private transposed?: Im2colConv;
  private wt?: Float32Array;

  constructor(readonly Cin: number, readonly Cout: number, readonly H: number, readonly capacity: number) {
    this.pad = new Float32Array(Cin * capacity * (H + 2) * (H + 2));
    this.col = new Float32Array(capacity * H * H * Cin * 9);
  }

  forward(X: Float32Array, W: Float32Array, Y: Float32Array, B: number): void {
    const { Cin, Cout, H } = this;
    padPlanes(X, this.pad, Cin * B, H, H, H + 2, H + 2);
    // Patch-major columns: col[n][c·9 + ky·3 + kx], one 3×3×Cin patch per output pixel n.
    const P = this.pad;
    const col = this.col;
    const Wp = H + 2;
    const plane = B * Wp * Wp;
    const K = Cin * 9;
    for (let b = 0; b < B; b++) {
      for (let y = 0; y < H; y++) {
        for (let x = 0; x < H; x++) {
          let dst = ((b * H + y) * H + x) * K;
          let src = (b * Wp + y) * Wp + x;
          for (let c = 0; c < Cin; c++, src += plane, dst += 9) {
            col[dst] = P[src];
            col[dst + 1] = P[src + 1];
            col[dst + 2] = P[src + 2];
            col[dst + 3] = P[src + Wp];
            col[dst + 4] = P[src + Wp + 1];
            col[dst + 5] = P[src + Wp + 2];
            col[dst + 6] = P[src + 2 * Wp];
            col[dst + 7] = P[src + 2 * Wp + 1];
            col[dst + 8] = P[src + 2 * Wp + 2];
          }
        }
      }
    }
    gemmABt(W, col, Y, Cout, B * H * H, K);
  }

  backwardWeights(dY: Float32Array, dW: Float32Array, B: number): void {
    // dW[o][k] = Σ_n dY[o][n]·col[n][k], with the columns laid out row-major (colT[k][n]) so that both
    // operands of each dot product are contiguous.
    const { Cin, Cout, H } = this;
    const N = B * H * H;
    const P = this.pad;
    const colT = this.col;
    const Wp = H + 2;
    for (let c = 0; c < Cin; c++) {
      for (let ky = 0; ky < 3; ky++) {
        for (let kx = 0; kx < 3; kx++) {
          const row = (c * 9 + ky * 3 + kx) * N;
          for (let b = 0; b < B; b++) {
            for (let y = 0; y < H; y++) {
              const src = ((c * B + b) * Wp + y + ky) * Wp + kx;
              const dst = row + (b * H + y) * H;
              for (let x = 0; x < H; x++) colT[dst + x] = P[src + x];
            }
          }
        }
      }
    }
    gemmABt(dY, colT, dW, Cout, Cin * 9, N);
  }

  backwardInput(dY: Float32Array, W: Float32Array, dX: Float32Array, B: number): void {
    this.transposed ??= new Im2colConv(this.Cout, this.Cin, this.H, this.capacity);
    this.wt ??= new Float32Array(W.length);
    flipTranspose(W, this.wt, this.Cout, this.Cin);
    this.transposed.forward(dY, this.wt, dX, B);
  }
}

/**
 * Winograd F(2×2, 3×3) (Lavin & Gray 2016): each 2×2 block of outputs comes from a 4×4 input tile d
 * as Y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A, so the channel sums become 16 independent matrix products
 * (one per tile frequency ξ) with 16 multiplications per 4 outputs instead of 36: 2.25× fewer.
 *
 *   Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1]   G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1]   Aᵀ = [1 1 1 0; 0 1 −1 −1]
 *
 * The weight gradient is the adjoint of the same map: dW = Gᵀ[Σ_tiles (A dY Aᵀ) ⊙ (Bᵀ d B)]G.
 * Tiles cover ⌈H/2⌉² blocks; for odd H (7×7) the last row and column of blocks are cropped.
 */
export class WinogradConv implements Conv3x3 {
  readonly tiles: number; // 2×2 blocks per row
  private readonly Hp: number; // padded side: 2·tiles + 2
  private readonly pad: Float32Array; // [Cin][B][Hp][Hp]
  private readonly V: Float32Array; // [16][T][Cin] (forward) or [16][Cin][T] (weight gradient)
  private readonly U: Float32Array; // [16][Cout][Cin]
  private readonly M: Float32Array; // [16][Cout][T]
  private transposed?: WinogradConv;
  private wt?: Float32Array;

  constructor(readonly Cin: number, readonly Cout: number, readonly H: number, readonly capacity: number) {
    this.tiles = Math.ceil(H / 2);
    this.Hp = 2 * this.tiles + 2;
    const T = capacity * this.tiles * this.tiles;
    this.pad = new Float32Array(Cin * capacity * this.Hp * this.Hp);
    this.V = new Float32Array(16 * T * Cin);
    this.U = new Float32Array(16 * Cout * Cin);
    this.M = new Float32Array(16 * Cout * T);
  }

  forward(X: Float32Array, W: Float32Array, Y: Float32Array, B: number): void {
    const { Cin, Cout, H, Hp } = this;
    const T = B * this.tiles * this.tiles;
    padPlanes(X, this.pad, Cin * B, H, H, Hp, Hp);
    this.inputTransform(B, true);
    weightTransform(W, this.U, Cout, Cin);
    for (let f = 0; f < 16; f++) {
      gemmABt(this.U.subarray(f * Cout * Cin, (f + 1) * Cout * Cin), this.V.subarray(f * T * Cin, (f + 1) * T * Cin), this.M.subarray(f * Cout * T, (f + 1) * Cout * T), Cout, T, Cin);
    }
    this.outputTransform(Y, B);
  }

  backwardWeights(dY: Float32Array, dW: Float32Array, B: number): void {
    const { Cin, Cout } = this;
    const T = B * this.tiles * this.tiles;
    this.inputTransform(B, false); // the padded input is still that of the forward pass
    this.gradOutputTransform(dY, B); // into M
    const S = this.U; // Σ_tiles products, [16][Cout][Cin]
    for (let f = 0; f < 16; f++) {
      gemmABt(this.M.subarray(f * Cout * T, (f + 1) * Cout * T), this.V.subarray(f * Cin * T, (f + 1) * Cin * T), S.subarray(f * Cout * Cin, (f + 1) * Cout * Cin), Cout, Cin, T);
    }
    weightGradTransform(S, dW, Cout, Cin);
  }

  backwardInput(dY: Float32Array, W: Float32Array, dX: Float32Array, B: number): void {
    this.transposed ??= new WinogradConv(this.Cout, this.Cin, this.H, this.capacity);
    this.wt ??= new Float32Array(W.length);
    flipTranspose(W, this.wt, this.Cout, this.Cin);
    this.transposed.forward(dY, this.wt, dX, B);
  }

  /** V = Bᵀ d B for every tile and input channel; layout [16][T][Cin] (tileMajor) or [16][Cin][T]. */
  private inputTransform(B: number, tileMajor: boolean): void {
    const { Cin, Hp, tiles } = this;
    const P = this.pad;
    const V = this.V;
    const T = B * tiles * tiles;
    const F = T * Cin; // stride between frequencies
    for (let c = 0; c < Cin; c++) {
      for (let b = 0; b < B; b++) {
        for (let ty = 0; ty < tiles; ty++) {
          for (let tx = 0; tx < tiles; tx++) {
            const t = (b * tiles + ty) * tiles + tx;
            const o = tileMajor ? t * Cin + c : c * T + t;
            let p = ((c * B + b) * Hp + 2 * ty) * Hp + 2 * tx;
            const d00 = P[p], d01 = P[p + 1], d02 = P[p + 2], d03 = P[p + 3];
            p += Hp;
            const d10 = P[p], d11 = P[p + 1], d12 = P[p + 2], d13 = P[p + 3];
            p += Hp;
            const d20 = P[p], d21 = P[p + 1], d22 = P[p + 2], d23 = P[p + 3];
            p += Hp;
            const d30 = P[p], d31 = P[p + 1], d32 = P[p + 2], d33 = P[p + 3];
            // Columns: Bᵀ d
            const a00 = d00 - d20, a01 = d01 - d21, a02 = d02 - d22, a03 = d03 - d23;
            const a10 = d10 + d20, a11 = d11 + d21, a12 = d12 + d22, a13 = d13 + d23;
            const a20 = d20 - d10, a21 = d21 - d11, a22 = d22 - d12, a23 = d23 - d13;
            const a30 = d10 - d30, a31 = d11 - d31, a32 = d12 - d32, a33 = d13 - d33;
            // Rows: (Bᵀ d) B
            V[o] = a00 - a02;
            V[o + F] = a01 + a02;
            V[o + 2 * F] = a02 - a01;
            V[o + 3 * F] = a01 - a03;
            V[o + 4 * F] = a10 - a12;
            V[o + 5 * F] = a11 + a12;
            V[o + 6 * F] = a12 - a11;
            V[o + 7 * F] = a11 - a13;
            V[o + 8 * F] = a20 - a22;
            V[o + 9 * F] = a21 + a22;
            V[o + 10 * F] = a22 - a21;
            V[o + 11 * F] = a21 - a23;
            V[o + 12 * F] = a30 - a32;
            V[o + 13 * F] = a31 + a32;
            V[o + 14 * F] = a32 - a31;
            V[o + 15 * F] = a31 - a33;
          }
        }
      }
    }
  }

  /** Y = Aᵀ M A for every tile and output channel, cropped to H×H: M [16][Cout][T] → Y [Cout][B][H][H]. */
  private outputTransform(Y: Float32Array, B: number): void {
    const { Cout, H, tiles } = this;
    const M = this.M;
    const T = B * tiles * tiles;
    const F = Cout * T;
    for (let o = 0; o < Cout; o++) {
      for (let b = 0; b < B; b++) {
        for (let ty = 0; ty < tiles; ty++) {
          for (let tx = 0; tx < tiles; tx++) {
            const i = o * T + (b * tiles + ty) * tiles + tx;
            const m00 = M[i], m01 = M[i + F], m02 = M[i + 2 * F], m03 = M[i + 3 * F];
            const m10 = M[i + 4 * F], m11 = M[i + 5 * F], m12 = M[i + 6 * F], m13 = M[i + 7 * F];
            const m20 = M[i + 8 * F], m21 = M[i + 9 * F], m22 = M[i + 10 * F], m23 = M[i + 11 * F];
            const m30 = M[i + 12 * F], m31 = M[i + 13 * F], m32 = M[i + 14 * F], m33 = M[i + 15 * F];
            // Aᵀ M (rows), then (Aᵀ M) A (columns).
            const s00 = m00 + m10 + m20, s01 = m01 + m11 + m21, s02 = m02 + m12 + m22, s03 = m03 + m13 + m23;
            const s10 = m10 - m20 - m30, s11 = m11 - m21 - m31, s12 = m12 - m22 - m32, s13 = m13 - m23 - m33;
            const y = 2 * ty;
            const x = 2 * tx;
            const row = ((o * B + b) * H + y) * H + x;
            Y[row] = s00 + s01 + s02;
            if (x + 1 < H) Y[row + 1] = s01 - s02 - s03;
            if (y + 1 < H) {
              Y[row + H] = s10 + s11 + s12;
              if (x + 1 < H) Y[row + H + 1] = s11 - s12 - s13;
            }
          }
        }
      }
    }
  }

  /** A dY Aᵀ for every tile and output channel (zero outside H×H): dY [Cout][B][H][H] → M [16][Cout][T]. */
  private gradOutputTransform(dY: Float32Array, B: number): void {
    const { Cout, H, tiles } = this;
    const M = this.M;
    const T = B * tiles * tiles;
    const F = Cout * T;
    for (let o = 0; o < Cout; o++) {
      for (let b = 0; b < B; b++) {
        for (let ty = 0; ty < tiles; ty++) {
          for (let tx = 0; tx < tiles; tx++) {
            const y = 2 * ty;
            const x = 2 * tx;
            const row = ((o * B + b) * H + y) * H + x;
            const right = x + 1 < H;
            const down = y + 1 < H;
            const e00 = dY[row];
            const e01 = right ? dY[row + 1] : 0;
            const e10 = down ? dY[row + H] : 0;
            const e11 = right && down ? dY[row + H + 1] : 0;
            // A e (rows): [e0, e0 + e1, e0 − e1, −e1] per column; then the same along each row.
            const r00 = e00, r01 = e01;
            const r10 = e00 + e10, r11 = e01 + e11;
            const r20 = e00 - e10, r21 = e01 - e11;
            const r30 = -e10, r31 = -e11;
            const i = o * T + (b * tiles + ty) * tiles + tx;
            M[i] = r00;
            M[i + F] = r00 + r01;
            M[i + 2 * F] = r00 - r01;
            M[i + 3 * F] = -r01;
            M[i + 4 * F] = r10;
            M[i + 5 * F] = r10 + r11;
            M[i + 6 * F] = r10 - r11;
            M[i + 7 * F] = -r11;
            M[i + 8 * F] = r20;
            M[i + 9 * F] = r20 + r21;
            M[i + 10 * F] = r20 - r21;
            M[i + 11 * F] = -r21;
            M[i + 12 * F] = r30;
            M[i + 13 * F] = r30 + r31;
            M[i + 14 * F] = r30 - r31;
            M[i + 15 * F] = -r31;
          }
        }
      }
    }
  }
}

/** U = G g Gᵀ for every (output, input) channel pair: W [Cout][Cin][3][3] → U [16][Cout][Cin]. */
function weightTransform(W: Float32Array, U: Float32Array, Cout: number, Cin: number): void {
  const F = Cout * Cin;
  for (let i = 0; i < F; i++) {
    const w = i * 9;
    const g00 = W[w], g01 = W[w + 1], g02 = W[w + 2];
    const g10 = W[w + 3], g11 = W[w + 4], g12 = W[w + 5];
    const g20 = W[w + 6], g21 = W[w + 7], g22 = W[w + 8];
    // G g (rows): [g0, (g0 + g1 + g2)/2, (g0 − g1 + g2)/2, g2] per column.
    const h00 = g00, h01 = g01, h02 = g02;
    const h10 = 0.5 * (g00 + g10 + g20), h11 = 0.5 * (g01 + g11 + g21), h12 = 0.5 * (g02 + g12 + g22);
    const h20 = 0.5 * (g00 - g10 + g20), h21 = 0.5 * (g01 - g11 + g21), h22 = 0.5 * (g02 - g12 + g22);
    const h30 = g20, h31 = g21, h32 = g22;
    // (G g) Gᵀ (columns).
    U[i] = h00;
    U[i + F] = 0.5 * (h00 + h01 + h02);
    U[i + 2 * F] = 0.5 * (h00 - h01 + h02);
    U[i + 3 * F] = h02;
    U[i + 4 * F] = h10;
    U[i + 5 * F] = 0.5 * (h10 + h11 + h12);
    U[i + 6 * F] = 0.5 * (h10 - h11 + h12);
    U[i + 7 * F] = h12;
    U[i + 8 * F] = h20;
    U[i + 9 * F] = 0.5 * (h20 + h21 + h22);
    U[i + 10 * F] = 0.5 * (h20 - h21 + h22);
    U[i + 11 * F] = h22;
    U[i + 12 * F] = h30;
    U[i + 13 * F] = 0.5 * (h30 + h31 + h32);
    U[i + 14 * F] = 0.5 * (h30 - h31 + h32);
    U[i + 15 * F] = h32;
  }
}

/** dW = Gᵀ S G for every (output, input) channel pair: S [16][Cout][Cin] → dW [Cout][Cin][3][3]. */
function weightGradTransform(S: Float32Array, dW: Float32Array, Cout: number, Cin: number): void {
  const F = Cout * Cin;
  for (let i = 0; i < F; i++) {
    const s = (r: number, c: number) => S[i + (4 * r + c) * F];
    // Gᵀ S (rows): [s0 + (s1 + s2)/2, (s1 − s2)/2, (s1 + s2)/2 + s3] per column.
    const t = [0, 1, 2, 3].map((c) => {
      const s0 = s(0, c), s1 = s(1, c), s2 = s(2, c), s3 = s(3, c);
      return [s0 + 0.5 * (s1 + s2), 0.5 * (s1 - s2), 0.5 * (s1 + s2) + s3];
    });
    // (Gᵀ S) G (columns).
    for (let r = 0; r < 3; r++) {
      const t0 = t[0][r], t1 = t[1][r], t2 = t[2][r], t3 = t[3][r];
      dW[i * 9 + r * 3] = t0 + 0.5 * (t1 + t2);
      dW[i * 9 + r * 3 + 1] = 0.5 * (t1 - t2);
      dW[i * 9 + r * 3 + 2] = 0.5 * (t1 + t2) + t3;
    }
  }
}

/** MaxPool 2×2 stride 2 over planes [planes,H,W] → [planes,H/2,W/2]; `arg` records the winner (0..3). */
export function maxPoolForward(X: Float32Array, Y: Float32Array, arg: Uint8Array, planes: number, H: number, W: number): void {
  const Ho = H >> 1;
  const Wo = W >> 1;
  for (let pl = 0; pl < planes; pl++) {
    for (let y = 0; y < Ho; y++) {
      const r0 = (pl * H + 2 * y) * W;
      const r1 = r0 + W;
      const o = (pl * Ho + y) * Wo;
      for (let x = 0; x < Wo; x++) {
        let best = X[r0 + 2 * x];
        let a = 0;
        let v = X[r0 + 2 * x + 1];
        if (v > best) (best = v), (a = 1);
        v = X[r1 + 2 * x];
        if (v > best) (best = v), (a = 2);
        v = X[r1 + 2 * x + 1];
        if (v > best) (best = v), (a = 3);
        Y[o + x] = best;
        arg[o + x] = a;
      }
    }
  }
}

/** MaxPool backward: the gradient goes to the winning input of each window, zero elsewhere. */
export function maxPoolBackward(dY: Float32Array, arg: Uint8Array, dX: Float32Array, planes: number, H: number, W: number): void {
  const Ho = H >> 1;
  const Wo = W >> 1;
  dX.fill(0, 0, planes * H * W);
  for (let pl = 0; pl < planes; pl++) {
    for (let y = 0; y < Ho; y++) {
      const r0 = (pl * H + 2 * y) * W;
      const o = (pl * Ho + y) * Wo;
      for (let x = 0; x < Wo; x++) {
        const a = arg[o + x];
        dX[r0 + 2 * x + (a & 1) + (a >> 1) * W] = dY[o + x];
      }
    }
  }
}

/**
 * Batch norm (batch statistics) + ReLU in place over rows [C][M]: Z → A = max(0, γ·x̂ + β).
 * Keeps x̂ and 1/σ for the backward pass; writes the batch mean and (biased) variance to `stats`.
 */
export function bnReluForward(Z: Float32Array, A: Float32Array, xhat: Float32Array, invStd: Float64Array, gamma: Float32Array, beta: Float32Array, C: number, M: number, mean: Float64Array, variance: Float64Array): void {
  for (let c = 0; c < C; c++) {
    const o = c * M;
    let s = 0;
    for (let i = 0; i < M; i++) s += Z[o + i];
    const mu = s / M;
    let v = 0;
    for (let i = 0; i < M; i++) {
      const d = Z[o + i] - mu;
      v += d * d;
    }
    v /= M;
    const is = 1 / Math.sqrt(v + BN_EPS);
    mean[c] = mu;
    variance[c] = v;
    invStd[c] = is;
    const g = gamma[c];
    const b = beta[c];
    for (let i = 0; i < M; i++) {
      const xh = (Z[o + i] - mu) * is;
      xhat[o + i] = xh;
      const y = g * xh + b;
      A[o + i] = y > 0 ? y : 0;
    }
  }
}

/** Backward of bnReluForward: dA → dZ (may alias dA), accumulating dγ and dβ. */
export function bnReluBackward(dA: Float32Array, A: Float32Array, xhat: Float32Array, invStd: Float64Array, gamma: Float32Array, dZ: Float32Array, dGamma: Float32Array, dBeta: Float32Array, C: number, M: number): void {
  for (let c = 0; c < C; c++) {
    const o = c * M;
    let sdy = 0;
    let sdyx = 0;
    for (let i = 0; i < M; i++) {
      const dy = A[o + i] > 0 ? dA[o + i] : 0;
      sdy += dy;
      sdyx += dy * xhat[o + i];
    }
    dGamma[c] = sdyx;
    dBeta[c] = sdy;
    const g = gamma[c];
    // dZ = γ/(σ·M) · (M·dy − Σdy − x̂·Σ(dy·x̂))
    const k = (g * invStd[c]) / M;
    for (let i = 0; i < M; i++) {
      const dy = A[o + i] > 0 ? dA[o + i] : 0;
      dZ[o + i] = k * (M * dy - sdy - xhat[o + i] * sdyx);
    }
  }
}

// ─── Workspace ──────────────────────────────────────────────────────────────────────────────

const SIZES = [28, 14, 7] as const;

/** Layers and buffers for one batch of up to `capacity` images, allocated once and reused. */
export class Workspace {
  readonly capacity: number;
  /** conv1 by im2col (one input channel), conv2 and conv3 by Winograd. */
  readonly conv: Conv3x3[];
  // Forward
  readonly x: Float32Array; // [1][B][28][28]
  readonly z: Float32Array[]; // conv outputs [C][B][H][W]
  readonly xhat: Float32Array[];
  readonly a: Float32Array[]; // block1..3 (after ReLU)
  readonly invStd: Float64Array[];
  readonly pool: Float32Array[]; // pool1, pool2
  readonly arg: Uint8Array[];
  readonly gap: Float32Array; // [64][B]
  readonly logits: Float32Array; // [B][10]
  // Backward
  readonly dLogits: Float32Array;
  readonly dGap: Float32Array;
  readonly dA: Float32Array[];
  readonly dPool: Float32Array[];

  constructor(capacity: number, opts: { winograd?: boolean } = {}) {
    this.capacity = capacity;
    const B = capacity;
    const winograd = opts.winograd ?? true;
    this.conv = [0, 1, 2].map((l) =>
      l > 0 && winograd ? new WinogradConv(CHANNELS[l], CHANNELS[l + 1], SIZES[l], B) : new Im2colConv(CHANNELS[l], CHANNELS[l + 1], SIZES[l], B),
    );
    this.x = new Float32Array(B * 784);
    this.z = [0, 1, 2].map((l) => new Float32Array(CHANNELS[l + 1] * B * SIZES[l] ** 2));
    this.xhat = this.z.map((z) => new Float32Array(z.length));
    this.a = this.z.map((z) => new Float32Array(z.length));
    this.dA = this.z.map((z) => new Float32Array(z.length));
    this.invStd = [0, 1, 2].map((l) => new Float64Array(CHANNELS[l + 1]));
    this.pool = [0, 1].map((l) => new Float32Array(CHANNELS[l + 1] * B * (SIZES[l] / 2) ** 2));
    this.dPool = this.pool.map((p) => new Float32Array(p.length));
    this.arg = this.pool.map((p) => new Uint8Array(p.length));
    this.gap = new Float32Array(64 * B);
    this.dGap = new Float32Array(64 * B);
    this.logits = new Float32Array(B * CLASSES);
    this.dLogits = new Float32Array(B * CLASSES);
  }
}

/** Writes B normalised images into ws.x from 784-byte pixel rows, mirrored left–right where flip[i]. */
export function loadImages(ws: Workspace, pixels: Uint8Array, indices: ArrayLike<number>, flip: ArrayLike<number> | null, B: number): void {
  const x = ws.x;
  for (let i = 0; i < B; i++) {
    const src = indices[i] * 784;
    const dst = i * 784;
    const mirrored = flip !== null && flip[i] !== 0;
    for (let y = 0; y < 28; y++) {
      for (let c = 0; c < 28; c++) x[dst + y * 28 + c] = normalisePixel(pixels[src + y * 28 + (mirrored ? 27 - c : c)]);
    }
  }
}

const NORMALISED = new Float32Array(256).map((_, p) => (p / 255 - PIXEL_MEAN) / PIXEL_STD);
/** (p/255 − 0.2860)/0.3530 rounded to float32: the exact value fed to onnxruntime too. */
export function normalisePixel(p: number): number {
  return NORMALISED[p];
}

// ─── Inference (folded parameters: the exported model) ──────────────────────────────────────

/** Logits of the B images in ws.x with folded parameters (what the ONNX file computes) → ws.logits. */
export function inferForward(ws: Workspace, params: Float32Array, B: number, taps?: { block1?: Float32Array; block2?: Float32Array; block3?: Float32Array }): Float32Array {
  let input = ws.x;
  for (let l = 0; l < 3; l++) {
    const H = SIZES[l];
    const Cout = CHANNELS[l + 1];
    const N = B * H * H;
    const a = ws.a[l];
    ws.conv[l].forward(input, paramView(params, INFER_PARAMS, `conv${l + 1}.weight`), a, B);
    const bias = paramView(params, INFER_PARAMS, `conv${l + 1}.bias`);
    for (let c = 0; c < Cout; c++) {
      const bc = bias[c];
      for (let i = c * N; i < (c + 1) * N; i++) {
        const v = a[i] + bc;
        a[i] = v > 0 ? v : 0;
      }
    }
    const tap = taps?.[`block${l + 1}` as 'block1'];
    if (tap) toNCHW(a, tap, Cout, B, H * H);
    if (l < 2) {
      maxPoolForward(a, ws.pool[l], ws.arg[l], Cout * B, H, H);
      input = ws.pool[l];
    }
  }
  globalAvgPool(ws.a[2], ws.gap, 64 * B, 49);
  fcForward(ws.gap, paramView(params, INFER_PARAMS, 'fc.weight'), paramView(params, INFER_PARAMS, 'fc.bias'), ws.logits, B);
  return ws.logits;
}

/** [C,B,S] → [B,C,S] (ONNX's NCHW order). */
export function toNCHW(src: Float32Array, dst: Float32Array, C: number, B: number, S: number): void {
  for (let c = 0; c < C; c++) for (let b = 0; b < B; b++) dst.set(src.subarray((c * B + b) * S, (c * B + b + 1) * S), (b * C + c) * S);
}

function globalAvgPool(A: Float32Array, G: Float32Array, planes: number, S: number): void {
  for (let p = 0; p < planes; p++) {
    let s = 0;
    for (let i = p * S; i < (p + 1) * S; i++) s += A[i];
    G[p] = s / S;
  }
}

/** logits[b,j] = Σ_c W[j,c]·g[c,b] + bias[j], with g in [64,B] order. */
function fcForward(g: Float32Array, W: Float32Array, bias: Float32Array, logits: Float32Array, B: number): void {
  for (let b = 0; b < B; b++) {
    for (let j = 0; j < CLASSES; j++) {
      let s = bias[j];
      for (let c = 0; c < 64; c++) s += W[j * 64 + c] * g[c * B + b];
      logits[b * CLASSES + j] = s;
    }
  }
}

// ─── Training step ──────────────────────────────────────────────────────────────────────────

export interface StepResult {
  /** Sum of the cross-entropy losses of the B images. */
  loss: number;
  correct: number;
}

/**
 * Forward and backward over the B images in ws.x (one "ghost batch": batch norm uses its statistics).
 * Writes into `grad` (layout TRAIN_PARAMS) the gradient of Σ loss / `scale` and into `bnStats` the
 * batch means then variances of the three BN layers.
 */
export function trainStep(ws: Workspace, params: Float32Array, labels: ArrayLike<number>, B: number, scale: number, grad: Float32Array, bnStats: Float64Array): StepResult {
  let input = ws.x;
  const view = (name: string) => paramView(params, TRAIN_PARAMS, name);
  const gview = (name: string) => paramView(grad, TRAIN_PARAMS, name);

  // Forward.
  for (let l = 0; l < 3; l++) {
    const H = SIZES[l];
    const Cout = CHANNELS[l + 1];
    const N = B * H * H;
    ws.conv[l].forward(input, view(`conv${l + 1}.weight`), ws.z[l], B);
    bnReluForward(
      ws.z[l], ws.a[l], ws.xhat[l], ws.invStd[l], view(`bn${l + 1}.weight`), view(`bn${l + 1}.bias`), Cout, N,
      bnStats.subarray(BN_OFFSET[l], BN_OFFSET[l] + Cout),
      bnStats.subarray(BN_CHANNELS + BN_OFFSET[l], BN_CHANNELS + BN_OFFSET[l] + Cout),
    );
    if (l < 2) {
      maxPoolForward(ws.a[l], ws.pool[l], ws.arg[l], Cout * B, H, H);
      input = ws.pool[l];
    }
  }
  globalAvgPool(ws.a[2], ws.gap, 64 * B, 49);
  const fcW = view('fc.weight');
  fcForward(ws.gap, fcW, view('fc.bias'), ws.logits, B);

  // Softmax cross-entropy.
  let loss = 0;
  let correct = 0;
  const dl = ws.dLogits;
  for (let b = 0; b < B; b++) {
    const o = b * CLASSES;
    let max = -Infinity;
    let argmax = 0;
    for (let j = 0; j < CLASSES; j++) {
      if (ws.logits[o + j] > max) (max = ws.logits[o + j]), (argmax = j);
    }
    let z = 0;
    for (let j = 0; j < CLASSES; j++) z += Math.exp(ws.logits[o + j] - max);
    const y = labels[b];
    loss += Math.log(z) - (ws.logits[o + y] - max);
    if (argmax === y) correct++;
    for (let j = 0; j < CLASSES; j++) dl[o + j] = (Math.exp(ws.logits[o + j] - max) / z - (j === y ? 1 : 0)) / scale;
  }

  // Backward: classifier.
  const dW = gview('fc.weight');
  const db = gview('fc.bias');
  for (let j = 0; j < CLASSES; j++) {
    let sb = 0;
    for (let b = 0; b < B; b++) sb += dl[b * CLASSES + j];
    db[j] = sb;
    for (let c = 0; c < 64; c++) {
      let s = 0;
      for (let b = 0; b < B; b++) s += dl[b * CLASSES + j] * ws.gap[c * B + b];
      dW[j * 64 + c] = s;
    }
  }
  for (let c = 0; c < 64; c++) {
    for (let b = 0; b < B; b++) {
      let s = 0;
      for (let j = 0; j < CLASSES; j++) s += fcW[j * 64 + c] * dl[b * CLASSES + j];
      ws.dGap[c * B + b] = s;
    }
  }
  // Global average pool backward.
  const dA3 = ws.dA[2];
  for (let p = 0; p < 64 * B; p++) {
    const v = ws.dGap[p] / 49;
    for (let i = p * 49; i < (p + 1) * 49; i++) dA3[i] = v;
  }

  // Backward: conv blocks, last to first.
  for (let l = 2; l >= 0; l--) {
    const H = SIZES[l];
    const Cin = CHANNELS[l];
    const Cout = CHANNELS[l + 1];
    const N = B * H * H;
    const dZ = ws.dA[l]; // in place
    bnReluBackward(ws.dA[l], ws.a[l], ws.xhat[l], ws.invStd[l], view(`bn${l + 1}.weight`), dZ, gview(`bn${l + 1}.weight`), gview(`bn${l + 1}.bias`), Cout, N);
    ws.conv[l].backwardWeights(dZ, gview(`conv${l + 1}.weight`), B);
    if (l === 0) break;
    ws.conv[l].backwardInput(dZ, view(`conv${l + 1}.weight`), ws.dPool[l - 1], B);
    maxPoolBackward(ws.dPool[l - 1], ws.arg[l - 1], ws.dA[l - 1], Cin * B, 2 * H, 2 * H);
  }
  return { loss, correct };
}
