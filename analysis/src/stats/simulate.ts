// Simulated 2AFC studies with known effects: participants answer trials on features that sit in
// condition cells (e.g. basis × layer); the log-odds of a correct answer is a fixed part from the
// cell (and optional covariates) plus N(0, σ²) effects of participant and feature. Used by the
// tests (recovery of known effects, agreement with lme4) and the benchmarks.
import { Rng } from '@legible/studies';

export interface SimulationSpec {
  participants: number;
  /** Factors of the feature cells, e.g. { basis: ['channels', 'nmf'], layer: ['block2', 'block3'] }. */
  factors: Record<string, string[]>;
  /** Features per cell. */
  featuresPerCell: number;
  /** Log-odds of the reference cell. */
  intercept: number;
  /** Effects by "factor=level" (main effects) or "f1=l1:f2=l2" (interactions), treatment-coded. */
  effects: Record<string, number>;
  sdParticipant: number;
  sdFeature: number;
  /** Trials per participant: a number (features drawn without replacement), or [min, max] for an unbalanced design. */
  trialsPerParticipant: number | [number, number];
  /**
   * Random slopes by participant: each participant's own deviation from an effect ("factor=level",
   * as in `effects`), N(0, sd²), correlated `cor` with the participant's intercept.
   */
  participantSlopes?: { effect: string; sd: number; cor?: number }[];
  /** A numeric participant-level covariate with this slope (column "skill_z", standard normal). */
  covariateSlope?: number;
  seed: number;
}

export interface SimulatedTrial {
  participant: string;
  feature: string;
  correct: number;
  rt_ms: number;
  confidence: number;
  [factor: string]: string | number;
}

export function simulateStudy(spec: SimulationSpec): SimulatedTrial[] {
  const rng = new Rng(spec.seed);
  const names = Object.keys(spec.factors);
  // Every combination of the factors' levels is a cell.
  let cells: Record<string, string>[] = [{}];
  for (const f of names) cells = cells.flatMap((c) => spec.factors[f].map((l) => ({ ...c, [f]: l })));
  const features: { id: string; levels: Record<string, string>; eta: number }[] = [];
  cells.forEach((cell) => {
    let eta = spec.intercept;
    for (const [key, value] of Object.entries(spec.effects)) {
      const parts = key.split(':').map((p) => p.split('='));
      if (parts.every(([f, l]) => cell[f] === l)) eta += value;
    }
    for (let k = 0; k < spec.featuresPerCell; k++) {
      features.push({ id: `${names.map((f) => cell[f]).join('/')}/${k}`, levels: cell, eta: eta + rng.normal() * spec.sdFeature });
    }
  });
  const out: SimulatedTrial[] = [];
  for (let p = 0; p < spec.participants; p++) {
    const id = `p${String(p + 1).padStart(4, '0')}`;
    const z0 = rng.normal();
    const bp = z0 * spec.sdParticipant;
    const slopes = (spec.participantSlopes ?? []).map((sl) => {
      const rho = sl.cor ?? 0;
      return { parts: sl.effect.split(':').map((x) => x.split('=')), value: sl.sd * (rho * z0 + Math.sqrt(1 - rho * rho) * rng.normal()) };
    });
    const skill = rng.normal();
    const t = spec.trialsPerParticipant;
    const count = typeof t === 'number' ? t : t[0] + rng.int(t[1] - t[0] + 1);
    const seen = count >= features.length ? features : rng.sample(features, count);
    for (const f of seen) {
      let eta = f.eta + bp + (spec.covariateSlope ?? 0) * skill;
      for (const sl of slopes) if (sl.parts.every(([fa, l]) => f.levels[fa] === l)) eta += sl.value;
      const correct = rng.float() < 1 / (1 + Math.exp(-eta)) ? 1 : 0;
      const rt = Math.exp(7.3 + 0.4 * rng.normal() - 0.1 * correct);
      const confidence = Math.min(3, Math.max(1, Math.round(2 + (correct ? 0.5 : -0.3) + 0.7 * rng.normal())));
      out.push({ participant: id, feature: f.id, ...f.levels, skill_z: Number(skill.toFixed(6)), correct, rt_ms: Math.round(rt), confidence });
    }
  }
  return out;
}

/** Rows as a CSV text (header from the first row's keys). */
export function toCsv(rows: Record<string, string | number>[]): string {
  const cols = Object.keys(rows[0]);
  return `${cols.join(',')}\n${rows.map((r) => cols.map((c) => String(r[c])).join(',')).join('\n')}\n`;
}
