/**
 * What keeps `/oauth/token` from being a guessing oracle or a CPU sink: each credential check is
 * a scrypt (~16 MiB, tens of ms on libuv's pool), answered to anyone, provisioned or not.
 * - A client id that failed `maxFailures` times within the window is refused (429 with
 *   Retry-After), even with the right secret, until the oldest failure leaves the window (as
 *   activation codes are, HLF-CM-006). An attempt counts as a failure from the moment it is let
 *   through, so checks under way at once cannot pass the limit together; a success clears the
 *   failures that ended before it, not the marks of attempts still under way. Only ids that can
 *   be subscribers (`tel:` addresses) are counted: any other id fails every check anyway.
 * - Kept in memory, per process (each replica of a node counts its own), for at most
 *   `maxClients` ids. Ids locked out are kept apart from the others: past the bound, the least
 *   recently failed id that is not locked out is forgotten first, and a locked-out id only when
 *   no other is left.
 * - At most `maxPendingChecks` checks are under way or waiting at once (the pool runs four);
 *   past that, a request is refused at once (503) instead of queueing behind a flood.
 */
export class LoginGuard {
  readonly #o: LoginGuardOptions;
  /** Failure marks per client id, oldest first; each map in order of its ids' latest mark. */
  readonly #open = new Map<string, Mark[]>();
  readonly #locked = new Map<string, Mark[]>();
  /** Marks of attempts whose check is still under way. */
  readonly #underWay = new Set<Mark>();
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
    const mark = clientId === undefined ? undefined : this.#failed(clientId, nowMs);
    this.#pending += 1;
    let valid = false;
    try {
      valid = await check();
    } finally {
      this.#pending -= 1;
      if (mark) this.#underWay.delete(mark);
    }
    if (valid && clientId !== undefined) this.#succeeded(clientId);
    return { outcome: valid ? "valid" : "invalid" };
  }

  /** Milliseconds until `clientId` may try again (0: now). */
  retryAfterMs(clientId: string, nowMs: number): number {
    const recent = this.#recent(clientId, nowMs);
    if (recent.length < this.#o.maxFailures) return 0;
    return recent[recent.length - this.#o.maxFailures]!.at + this.#o.windowMs - nowMs;
  }

  #failed(clientId: string, nowMs: number): Mark {
    const mark = { at: nowMs };
    this.#underWay.add(mark);
    this.#keep(clientId, [...this.#recent(clientId, nowMs), mark].slice(-this.#o.maxFailures));
    this.#forget(clientId);
    return mark;
  }

  /** Failures that ended are cleared; marks of attempts still under way stay. */
  #succeeded(clientId: string): void {
    this.#keep(clientId, this.#marksOf(clientId).filter((m) => this.#underWay.has(m)));
  }

  /** Stores an id's marks in the map its count says (none: the id is forgotten). */
  #keep(clientId: string, marks: Mark[]): void {
    this.#open.delete(clientId);
    this.#locked.delete(clientId);
    if (marks.length > 0) (marks.length >= this.#o.maxFailures ? this.#locked : this.#open).set(clientId, marks);
  }

  /** Back to `maxClients` ids: the least recently failed not locked out first; never `failedNow`. */
  #forget(failedNow: string): void {
    for (const map of [this.#open, this.#locked]) {
      for (const id of map.keys()) {
        if (this.#open.size + this.#locked.size <= this.#o.maxClients) return;
        if (id !== failedNow) map.delete(id);
      }
    }
  }

  #recent(clientId: string, nowMs: number): Mark[] {
    return this.#marksOf(clientId).filter((m) => m.at > nowMs - this.#o.windowMs);
  }

  #marksOf(clientId: string): Mark[] {
    return this.#open.get(clientId) ?? this.#locked.get(clientId) ?? [];
  }
}

interface Mark {
  readonly at: number;
}

export type AttemptOutcome = { readonly outcome: "locked"; readonly retryAfterMs: number } | { readonly outcome: "busy" | "valid" | "invalid" };

export interface LoginGuardOptions {
  readonly maxFailures: number;
  readonly windowMs: number;
  readonly maxPendingChecks: number;
  /** Client ids whose failures are remembered at once. */
  readonly maxClients: number;
}
