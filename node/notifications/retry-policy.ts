/**
 * Durable retry policy as a pure function (STYLE habit 7): exponential backoff with full
 * jitter (delay drawn uniformly from [0, min(max, base·2^(attempt-1))]), and a stop after
 * `maxAttempts` or `maxAgeMs`. `random` is injected so tests can pin it.
 */
export interface RetryPolicyOptions {
  readonly retryBaseDelayMs: number;
  readonly retryMaxDelayMs: number;
  readonly maxAttempts: number;
  readonly maxAgeMs: number;
}

/** The delay before the next attempt after `attempts` failures, or undefined to give up. */
export function nextRetryDelayMs(
  state: { readonly attempts: number; readonly ageMs: number },
  options: RetryPolicyOptions,
  random: () => number = Math.random,
): number | undefined {
  if (state.attempts >= options.maxAttempts || state.ageMs >= options.maxAgeMs) return undefined;
  const ceiling = Math.min(options.retryMaxDelayMs, options.retryBaseDelayMs * 2 ** Math.max(0, state.attempts - 1));
  // Never 0: at least 1 ms so a failing lane cannot spin.
  return Math.max(1, Math.floor(random() * ceiling));
}
