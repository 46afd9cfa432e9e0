// Near-miss names, for error messages that say what was probably meant.

/** Levenshtein distance (insertions, deletions, substitutions). */
export function editDistance(a: string, b: string): number {
  if (a === b) return 0;
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  let cur = new Array<number>(b.length + 1);
  for (let i = 1; i <= a.length; i++) {
    cur[0] = i;
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a.charCodeAt(i - 1) === b.charCodeAt(j - 1) ? 0 : 1));
    }
    [prev, cur] = [cur, prev];
  }
  return prev[b.length];
}

/** The `count` names nearest to `name` by edit distance (ties in the given order). */
export function nearestNames(name: string, candidates: readonly string[], count = 5): string[] {
  return candidates
    .map((c, i) => ({ c, i, d: editDistance(name, c) }))
    .sort((x, y) => x.d - y.d || x.i - y.i)
    .slice(0, count)
    .map((x) => x.c);
}

/** The one name `word` was probably meant to be (case-insensitive, close enough), if any. */
export function didYouMean(word: string, options: readonly string[]): string | undefined {
  const [best] = nearestNames(word.toLowerCase(), options.map((o) => o.toLowerCase()), 1);
  if (best === undefined) return undefined;
  const close = editDistance(word.toLowerCase(), best) <= Math.max(2, Math.floor(word.length / 3));
  return close ? options.find((o) => o.toLowerCase() === best) : undefined;
}
