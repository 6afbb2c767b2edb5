import pRetry from "p-retry";
import type { Logger } from "pino";
import type { OutboxEntry, TwinningStore } from "../store/store-port.ts";
import { DeliveryError } from "./callback-sender.ts";
import { nextRetryDelayMs, type RetryPolicyOptions } from "./retry-policy.ts";

export interface OutboxWorkerOptions {
  readonly store: TwinningStore;
  readonly deliver: (entry: OutboxEntry) => Promise<void>;
  readonly policy: RetryPolicyOptions;
  readonly concurrency: number;
  readonly nowMs: () => number;
  readonly logger: Logger;
  readonly onDelivered?: (entry: OutboxEntry) => void;
  readonly onFailed?: (entry: OutboxEntry, dead: boolean) => void;
  /** Quick in-process retries (p-retry) before a failure is written back with a durable delay. */
  readonly quickRetries?: number;
}

/**
 * Delivers the durable outbox: woken at commit (no slow polling), one entry at a time per lane
 * (so order per target holds), many lanes at once. A failed entry is written back with its
 * attempt count, last error and next due time from the pure retry policy, so retries survive
 * restarts; when the policy gives up, the entry becomes a dead letter.
 */
export class OutboxWorker {
  readonly #o: OutboxWorkerOptions;
  #running = false;
  #loop: Promise<void> | undefined;
  #wake: (() => void) | undefined;
  #pendingWake = false;
  #timer: NodeJS.Timeout | undefined;

  constructor(options: OutboxWorkerOptions) {
    this.#o = options;
  }

  start(): void {
    if (this.#running) return;
    this.#running = true;
    this.#loop = this.#run();
  }

  /** Called after a commit that wrote outbox entries. */
  wake(): void {
    this.#pendingWake = true;
    this.#wake?.();
  }

  /** Stops taking new entries; deliveries under way finish, and everything else stays queued. */
  async stop(): Promise<void> {
    this.#running = false;
    this.#wake?.();
    await this.#loop;
  }

  async #run(): Promise<void> {
    while (this.#running) {
      this.#pendingWake = false;
      let due: OutboxEntry[] = [];
      try {
        due = await this.#o.store.dueOutboxHeads(this.#o.nowMs(), this.#o.concurrency);
      } catch (error) {
        this.#o.logger.error({ err: error }, "outbox read failed");
      }
      if (due.length > 0) {
        await Promise.all(due.map((entry) => this.#deliverLane(entry)));
        continue;
      }
      if (this.#pendingWake) continue;
      const next = await this.#o.store.nextOutboxDueAtMs().catch(() => undefined);
      const waitMs = next === undefined ? 60_000 : Math.max(0, next - this.#o.nowMs());
      if (waitMs === 0) continue;
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
        this.#timer = setTimeout(resolve, Math.min(waitMs, 60_000));
      });
      clearTimeout(this.#timer);
      this.#wake = undefined;
    }
  }

  /**
   * Delivers a lane's entries one after the other, from its head, while they succeed: each next
   * entry is an index range read, so a long queue drains without rescanning every lane.
   */
  async #deliverLane(head: OutboxEntry): Promise<void> {
    let entry: OutboxEntry | undefined = head;
    // Bounded, so one long lane cannot hold back the others (they are looked at again after it).
    for (let n = 0; entry && this.#running && n < 100; n++) {
      if (!(await this.#deliverOne(entry))) return;
      entry = await this.#o.store.nextOutboxEntryInLane(entry.lane, entry.id, this.#o.nowMs()).catch(() => undefined);
    }
  }

  /** True when delivered; a failure is written back with its next attempt (or as a dead letter). */
  async #deliverOne(entry: OutboxEntry): Promise<boolean> {
    const o = this.#o;
    try {
      await pRetry(() => o.deliver(entry), {
        retries: o.quickRetries ?? 1,
        minTimeout: 50,
        maxTimeout: 250,
        randomize: true,
        shouldRetry: ({ error }) => !(error instanceof DeliveryError && error.permanent),
      });
      await o.store.completeOutboxEntry(entry.id);
      o.onDelivered?.(entry);
      return true;
    } catch (error) {
      const attempts = entry.attempts + 1;
      const nowMs = o.nowMs();
      const permanent = error instanceof DeliveryError && error.permanent;
      const delay = permanent ? undefined : nextRetryDelayMs({ attempts, ageMs: nowMs - entry.createdAtMs }, o.policy);
      const lastError = ((error as Error).message ?? "delivery failed").slice(0, 300);
      await o.store
        .failOutboxEntry({ id: entry.id, attempts, nextAttemptAtMs: delay === undefined ? undefined : nowMs + delay, lastError, nowMs })
        .catch((e: unknown) => o.logger.error({ err: e }, "outbox write-back failed"));
      o.onFailed?.(entry, delay === undefined);
      o.logger.warn({ outboxId: entry.id, lane: entry.lane, attempts, dead: delay === undefined, error: lastError }, "outbox delivery failed");
      // A dead letter does not hold its lane back; a retry does.
      return delay === undefined;
    }
  }
}
