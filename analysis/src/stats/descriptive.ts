// Accuracy per condition cell with the intervals this literature reports: a percentile bootstrap
// resampling participants and, separately, units (features), and the participant-level
// mean ± 1.96·SD/√N. Also per-unit accuracies (the observations of the non-parametric tests),
// and response time and confidence by cell.
import { Rng } from '@legible/studies';

export interface CellTrials {
  /** Cell label per trial, e.g. "nmf · block2". */
  cell: Int32Array;
  cells: string[][];
  participant: Int32Array;
  unit: Int32Array;
  units: string[];
  correct: Uint8Array;
  rt: Float64Array;
  confidence: Float64Array;
}

export interface CellAccuracy {
  /** Levels of the condition factors, in factor order. */
  levels: string[];
  trials: number;
  participants: number;
  units: number;
  /** Proportion correct over the cell's trials. */
  accuracy: number;
  /** 95% percentile bootstrap interval resampling the cell's participants. */
  ciParticipants: [number, number];
  /** 95% percentile bootstrap interval resampling the cell's units. */
  ciUnits: [number, number];
  /** Mean of the participants' accuracies in the cell, their SD (n − 1), and ± 1.96·SD/√N. */
  participantMean: number;
  participantSd: number;
  participantHalfWidth: number;
  /** Each participant's accuracy in the cell (the figure's dots). */
  participantAccuracies: number[];
  /** Mean of the units' accuracies in the cell (the unit-level summary IMI reports). */
  unitMean: number;
}

export interface UnitAccuracy {
  unit: string;
  cell: number;
  levels: string[];
  trials: number;
  correct: number;
  accuracy: number;
  medianRt: number;
  meanConfidence: number;
}

/** Percentile of sorted values (type 7, as R's quantile default). */
export function quantileSorted(sorted: ArrayLike<number>, p: number): number {
  const n = sorted.length;
  if (n === 0) return NaN;
  const h = (n - 1) * p;
  const lo = Math.floor(h);
  const hi = Math.min(n - 1, lo + 1);
  return sorted[lo] + (h - lo) * (sorted[hi] - sorted[lo]);
}

export function median(values: ArrayLike<number>): number {
  const v = Array.from(values).filter(Number.isFinite).sort((a, b) => a - b);
  return quantileSorted(v, 0.5);
}

/**
 * Cluster bootstrap of a pooled proportion: clusters with (correct, total) counts are resampled
 * with replacement B times; returns the 2.5% and 97.5% percentiles of Σcorrect/Σtotal.
 */
export function clusterBootstrapCI(correct: ArrayLike<number>, total: ArrayLike<number>, B: number, rng: Rng, level = 0.95): [number, number] {
  const k = correct.length;
  if (k === 0) return [NaN, NaN];
  const stats = new Float64Array(B);
  for (let b = 0; b < B; b++) {
    let c = 0;
    let t = 0;
    for (let j = 0; j < k; j++) {
      const pick = rng.int(k);
      c += correct[pick];
      t += total[pick];
    }
    stats[b] = c / t;
  }
  stats.sort();
  const a = (1 - level) / 2;
  return [quantileSorted(stats, a), quantileSorted(stats, 1 - a)];
}

export function cellAccuracies(data: CellTrials, opts: { boot?: number; seed?: number } = {}): CellAccuracy[] {
  const B = opts.boot ?? 2000;
  const rng = new Rng(opts.seed ?? 1);
  const nCells = data.cells.length;
  const perCell = Array.from({ length: nCells }, () => ({
    byParticipant: new Map<number, [number, number]>(),
    byUnit: new Map<number, [number, number]>(),
    trials: 0,
    correct: 0,
  }));
  for (let i = 0; i < data.cell.length; i++) {
    const c = perCell[data.cell[i]];
    c.trials++;
    c.correct += data.correct[i];
    const p = c.byParticipant.get(data.participant[i]) ?? [0, 0];
    p[0] += data.correct[i];
    p[1]++;
    c.byParticipant.set(data.participant[i], p);
    const u = c.byUnit.get(data.unit[i]) ?? [0, 0];
    u[0] += data.correct[i];
    u[1]++;
    c.byUnit.set(data.unit[i], u);
  }
  return perCell.map((c, ci) => {
    const pc = [...c.byParticipant.values()];
    const uc = [...c.byUnit.values()];
    const pAcc = pc.map(([k, n]) => k / n);
    const mean = pAcc.reduce((a, b) => a + b, 0) / pAcc.length;
    const sd = pAcc.length > 1 ? Math.sqrt(pAcc.reduce((a, b) => a + (b - mean) ** 2, 0) / (pAcc.length - 1)) : NaN;
    return {
      levels: data.cells[ci],
      trials: c.trials,
      participants: pc.length,
      units: uc.length,
      accuracy: c.correct / c.trials,
      ciParticipants: clusterBootstrapCI(
        pc.map((x) => x[0]),
        pc.map((x) => x[1]),
        B,
        rng,
      ),
      ciUnits: clusterBootstrapCI(
        uc.map((x) => x[0]),
        uc.map((x) => x[1]),
        B,
        rng,
      ),
      participantMean: mean,
      participantSd: sd,
      participantAccuracies: pAcc,
      participantHalfWidth: (1.96 * sd) / Math.sqrt(pAcc.length),
      unitMean: uc.reduce((a, [k, n]) => a + k / n, 0) / uc.length,
    };
  });
}

/** Accuracy, median RT and mean confidence of every unit in every cell it appears in. */
export function unitAccuracies(data: CellTrials): UnitAccuracy[] {
  const key = (cell: number, unit: number) => cell * data.units.length + unit;
  const acc = new Map<number, { cell: number; unit: number; k: number; n: number; rts: number[]; conf: number; nConf: number }>();
  for (let i = 0; i < data.cell.length; i++) {
    const id = key(data.cell[i], data.unit[i]);
    let a = acc.get(id);
    if (!a) {
      a = { cell: data.cell[i], unit: data.unit[i], k: 0, n: 0, rts: [], conf: 0, nConf: 0 };
      acc.set(id, a);
    }
    a.k += data.correct[i];
    a.n++;
    if (Number.isFinite(data.rt[i])) a.rts.push(data.rt[i]);
    if (Number.isFinite(data.confidence[i])) {
      a.conf += data.confidence[i];
      a.nConf++;
    }
  }
  return [...acc.values()]
    .map((a) => ({
      unit: data.units[a.unit],
      cell: a.cell,
      levels: data.cells[a.cell],
      trials: a.n,
      correct: a.k,
      accuracy: a.k / a.n,
      medianRt: median(a.rts),
      meanConfidence: a.nConf ? a.conf / a.nConf : NaN,
    }))
    .sort((x, y) => x.cell - y.cell || x.unit.localeCompare(y.unit, 'en', { numeric: true }));
}

export interface CellResponses {
  levels: string[];
  rt: { median: number; q1: number; q3: number; p10: number; p90: number; n: number };
  /** Median RT of correct and of wrong answers. */
  rtCorrect: number;
  rtWrong: number;
  meanConfidence: number;
  /** Share of answers at confidence 1, 2, 3. */
  confidenceShare: [number, number, number];
  /** Accuracy at confidence 1, 2, 3 (NaN where none). */
  accuracyByConfidence: [number, number, number];
}

export function cellResponses(data: CellTrials): CellResponses[] {
  return data.cells.map((levels, c) => {
    const rts: number[] = [];
    const rtC: number[] = [];
    const rtW: number[] = [];
    const confN = [0, 0, 0];
    const confK = [0, 0, 0];
    let conf = 0;
    let nConf = 0;
    for (let i = 0; i < data.cell.length; i++) {
      if (data.cell[i] !== c) continue;
      const rt = data.rt[i];
      if (Number.isFinite(rt)) {
        rts.push(rt);
        (data.correct[i] ? rtC : rtW).push(rt);
      }
      const cf = data.confidence[i];
      if (cf === 1 || cf === 2 || cf === 3) {
        confN[cf - 1]++;
        confK[cf - 1] += data.correct[i];
        conf += cf;
        nConf++;
      }
    }
    rts.sort((a, b) => a - b);
    return {
      levels,
      rt: {
        median: quantileSorted(rts, 0.5),
        q1: quantileSorted(rts, 0.25),
        q3: quantileSorted(rts, 0.75),
        p10: quantileSorted(rts, 0.1),
        p90: quantileSorted(rts, 0.9),
        n: rts.length,
      },
      rtCorrect: median(rtC),
      rtWrong: median(rtW),
      meanConfidence: nConf ? conf / nConf : NaN,
      confidenceShare: confN.map((x) => (nConf ? x / nConf : NaN)) as [number, number, number],
      accuracyByConfidence: confN.map((x, i) => (x ? confK[i] / x : NaN)) as [number, number, number],
    };
  });
}
