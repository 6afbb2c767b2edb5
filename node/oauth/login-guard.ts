/**
 * What keeps `/oauth/token` from being a guessing oracle or a CPU sink: each credential check is
 * a scrypt (~16 MiB, tens of ms on libuv's pool), answered to anyone, provisioned or not.
 * - A client id that failed `maxFailures` times within the window is refused (429 with
 *   Retry-After), even with the right secret, until the oldest failure leaves the window (as
 *   activation codes are, HLF-CM-006). An attempt counts as a failure from the moment it is let
 *   through, so checks under way at once cannot pass the limit together; a success clears the
 *   count. Only ids that can be subscribers (`tel:` addresses, at most 20 characters) are
 *   counted: any other id fails every check anyway.
 * - Kept in memory, per process (each replica of a node counts its own), for at most
 *   `maxClients` ids. Past that, ids that are not locked out are forgotten first, least recently
 *   failed first; a locked-out id only when every id looked at is locked out too.
 * - At most `maxPendingChecks` checks are under way or waiting at once (the pool runs four);
 *   past that, a request is refused at once (503) instead of queueing behind a flood.
 */
export class LoginGuard {
  readonly #o: LoginGuardOptions;
  /** Failure times per client id, oldest first; the map in order of each id's latest failure. */
  readonly #failures = new Map<string, number[]>();
  #pending = 0;

  constructor(options: LoginGuardOptions) {
    this.#o = options;
  }

  /**
   * Runs one credential check for `clientId` (undefined: not counted), unless the id is locked
   * out (`locked`, with the milliseconds until it may try again) or too many checks are under way
   * (`busy`). The attempt counts as a failure while the check runs and stays one unless it
   * answers true.
   */
  async attempt(clientId: string | undefined, nowMs: number, check: () => Promise<boolean>): Promise<AttemptOutcome> {
    if (clientId !== undefined) {
      const retryAfterMs = this.retryAfterMs(clientId, nowMs);
      if (retryAfterMs > 0) return { outcome: "locked", retryAfterMs };
    }
    if (this.#pending >= this.#o.maxPendingChecks) return { outcome: "busy" };
    if (clientId !== undefined) this.#failed(clientId, nowMs);
    this.#pending += 1;
    let valid: boolean;
    try {
      valid = await check();
    } finally {
      this.#pending -= 1;
    }
    if (valid && clientId !== undefined) this.#failures.delete(clientId);
    return { outcome: valid ? "valid" : "invalid" };
  }

  /** Milliseconds until `clientId` may try again (0: now). */
  retryAfterMs(clientId: string, nowMs: number): number {
    const recent = this.#recent(clientId, nowMs);
    if (recent.length < this.#o.maxFailures) return 0;
    return recent[recent.length - this.#o.maxFailures]! + this.#o.windowMs - nowMs;
  }

  #failed(clientId: string, nowMs: number): void {
    const recent = [...this.#recent(clientId, nowMs), nowMs].slice(-this.#o.maxFailures);
    this.#failures.delete(clientId);
    this.#failures.set(clientId, recent);
    if (this.#failures.size > this.#o.maxClients) this.#forget(clientId, nowMs);
  }

  /**
   * Back to `maxClients` ids: the least recently failed that are not locked out, else the least
   * recently failed; never `failedNow`, the id whose failure is being counted.
   */
  #forget(failedNow: string, nowMs: number): void {
    let looked = 0;
    for (const [id, times] of this.#failures) {
      if (this.#failures.size <= this.#o.maxClients || looked++ >= FORGET_SCAN) break;
      if (id !== failedNow && times.filter((at) => at > nowMs - this.#o.windowMs).length < this.#o.maxFailures) this.#failures.delete(id);
    }
    for (const id of this.#failures.keys()) {
      if (this.#failures.size <= this.#o.maxClients) break;
      if (id !== failedNow) this.#failures.delete(id);
    }
  }

  #recent(clientId: string, nowMs: number): number[] {
    return (this.#failures.get(clientId) ?? []).filter((at) => at > nowMs - this.#o.windowMs);
  }
}

/** How many of the least recently failed ids one overflow looks at for one that is not locked out. */
const FORGET_SCAN = 64;

export type AttemptOutcome = { readonly outcome: "locked"; readonly retryAfterMs: number } | { readonly outcome: "busy" | "valid" | "invalid" };

export interface LoginGuardOptions {
  readonly maxFailures: number;
  readonly windowMs: number;
  readonly maxPendingChecks: number;
  /** Client ids whose failures are remembered at once. */
  readonly maxClients: number;
}
