/**
 * What keeps `/oauth/token` from being a guessing oracle or a CPU sink: each credential check is
 * a scrypt (~16 MiB, tens of ms on libuv's pool), answered to anyone, provisioned or not.
 * - A client id that failed `maxFailures` times within the window is refused (429 with
 *   Retry-After), even with the right secret, until the oldest failure leaves the window (as
 *   activation codes are, HLF-CM-006). A success clears its failures. Kept in memory, per
 *   process, for at most `maxClients` ids (the oldest forgotten first): each replica of a node
 *   counts its own.
 * - At most `maxPendingChecks` checks are under way or waiting at once (the pool runs four);
 *   past that, a request is refused at once (503) instead of queueing behind a flood.
 */
export class LoginGuard {
  readonly #o: LoginGuardOptions;
  readonly #failures = new Map<string, number[]>();
  #pending = 0;

  constructor(options: LoginGuardOptions) {
    this.#o = options;
  }

  /** Milliseconds until `clientId` may try again (0: now). */
  retryAfterMs(clientId: string, nowMs: number): number {
    const recent = this.#recent(clientId, nowMs);
    if (recent.length < this.#o.maxFailures) return 0;
    return recent[recent.length - this.#o.maxFailures]! + this.#o.windowMs - nowMs;
  }

  failed(clientId: string, nowMs: number): void {
    const recent = [...this.#recent(clientId, nowMs), nowMs].slice(-this.#o.maxFailures);
    this.#failures.delete(clientId);
    this.#failures.set(clientId, recent);
    if (this.#failures.size > this.#o.maxClients) this.#failures.delete(this.#failures.keys().next().value as string);
  }

  succeeded(clientId: string): void {
    this.#failures.delete(clientId);
  }

  /** Runs one credential check, or answers undefined when too many are under way or waiting. */
  async check<T>(run: () => Promise<T>): Promise<T | undefined> {
    if (this.#pending >= this.#o.maxPendingChecks) return undefined;
    this.#pending += 1;
    try {
      return await run();
    } finally {
      this.#pending -= 1;
    }
  }

  #recent(clientId: string, nowMs: number): number[] {
    return (this.#failures.get(clientId) ?? []).filter((at) => at > nowMs - this.#o.windowMs);
  }
}

export interface LoginGuardOptions {
  readonly maxFailures: number;
  readonly windowMs: number;
  readonly maxPendingChecks: number;
  /** Client ids whose failures are remembered at once. */
  readonly maxClients: number;
}
