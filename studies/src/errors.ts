/** An error the user can fix: printed as a message, without a stack trace. */
export class LegibleError extends Error {
  override name = 'LegibleError';
}

/** Wrong command-line usage: printed with the command's usage line. */
export class UsageError extends Error {
  override name = 'UsageError';
}
