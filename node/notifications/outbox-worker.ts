import pRetry from "p-retry";
import type { Logger } from "pino";
import type { OutboxEntry, TwinningStore } from "../store/store-port.ts";
import { afterCallsOfThisTurn } from "../../peers/bounded-call.ts";
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
  /**
   * Delivers several consecutive entries of one peer lane at once (the batch extension);
   * one outcome per entry, in order. Used for `peer` entries when given.
   */
  readonly deliverBatch?: (entries: OutboxEntry[]) => Promise<BatchOutcome[]>;
  /** Entries per batch (default 100). */
  readonly batchSize?: number;
}

/** After a round or a lane that failed on the store, the worker (or the lane) rests this long. */
const FAILED_ROUND_PAUSE_MS = 1_000;

export type BatchOutcome = { readonly outcome: "delivered" } | { readonly outcome: "retry" | "permanent"; readonly error: string };

/** While lanes are being delivered, the due times of the others are looked at this often. */
const BUSY_RECHECK_MS = 100;

/**
 * The slots one kind of lane (peer, callback) may hold at once: all but one, kept for the other
 * kind, so callbacks stuck on receivers that never answer cannot hold back the federation, nor
 * slow peers every subscriber's callbacks. With a concurrency of 1 the kinds share the one slot.
 */
export function slotsPerKind(concurrency: number): number {
  return concurrency < 2 ? concurrency : concurrency - 1;
}

/**
 * The callback slots one subscriber's lanes may hold at once: a quarter of the kind's (at least
 * one). A subscriber whose receivers answer slowly, with one subscription per slot, would
 * otherwise hold every callback slot while its backlog lasts, and everyone else's wait.
 */
export function callbackSlotsPerSubscriber(concurrency: number): number {
  return Math.max(1, Math.floor(slotsPerKind(concurrency) / 4));
}

/**
 * Delivers the durable outbox: woken at commit (no slow polling), one entry at a time per lane
 * (so order per target holds), many lanes at once, each on its own: a lane that waits on a slow
 * target holds back only itself, and a freed slot is filled at once. A failed entry is written
 * back with its attempt count, last error and next due time from the pure retry policy, so
 * retries survive restarts; when the policy gives up, the entry becomes a dead letter.
 */
export class OutboxWorker {
  readonly #o: OutboxWorkerOptions;
  #running = false;
  #loop: Promise<void> | undefined;
  #wake: (() => void) | undefined;
  #pendingWake = false;
  #timer: NodeJS.Timeout | undefined;
  /** The lanes being delivered now (never two deliveries of one lane at once). */
  readonly #active = new Map<string, Promise<void>>();
  /** How many of them are of each kind (see slotsPerKind). */
  readonly #activeOfKind: Record<OutboxEntry["kind"], number> = { peer: 0, callback: 0 };
  /** How many callback lanes under way are each subscriber's (see callbackSlotsPerSubscriber). */
  readonly #activeOfOwner = new Map<string, number>();
  /** Resolved by the next wake: lanes that found nothing more wait on it while their completions commit. */
  #news: { promise: Promise<void>; resolve: () => void } | undefined;

  constructor(options: OutboxWorkerOptions) {
    this.#o = options;
  }

  start(): void {
    if (this.#running) return;
    this.#running = true;
    this.#loop = this.#run();
  }

  /**
   * Called after a commit that wrote outbox entries (and when a lane's delivery ends).
   * `laneHeads`: entries that were first in their lane at that commit, due now (ChangeResult):
   * an idle lane among them starts at once, without a look at the outbox; the others are found
   * by the round this wake asks for, as every entry is.
   */
  wake(laneHeads?: readonly OutboxEntry[]): void {
    const news = this.#news;
    this.#news = undefined;
    news?.resolve();
    for (const head of laneHeads ?? []) {
      if (!this.#running || !this.#hasSlotFor(head) || this.#active.has(head.lane)) continue;
      this.#startLane(head, true);
    }
    this.#pendingWake = true;
    this.#wake?.();
  }

  /** Stops taking new entries; deliveries under way finish, and everything else stays queued. */
  async stop(): Promise<void> {
    this.#running = false;
    this.#wake?.();
    await this.#loop;
    await Promise.allSettled(this.#active.values());
  }

  async #run(): Promise<void> {
    while (this.#running) {
      let waitMs: number;
      try {
        waitMs = await this.#round();
      } catch (error) {
        // A failed read (disk full, I/O error): the entries stay queued; try again in a while
        // rather than stop delivering until a restart.
        this.#o.logger.error({ err: error }, "outbox delivery round failed");
        waitMs = FAILED_ROUND_PAUSE_MS;
      }
      // A wake since the round looked (between its last check and here) is news: look again.
      if (waitMs === 0 || !this.#running || this.#pendingWake) continue;
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
        this.#timer = setTimeout(resolve, Math.min(waitMs, 60_000));
      });
      clearTimeout(this.#timer);
      this.#wake = undefined;
    }
  }

  /** Starts the due lanes that are not under way, up to the concurrency; returns how long to wait (0: at once). */
  async #round(): Promise<number> {
    this.#pendingWake = false;
    const o = this.#o;
    if (o.concurrency - this.#active.size > 0) {
      // Lanes under way still have their heads pending: ask for enough to find the free slots' worth of others.
      const due = (await o.store.dueOutboxHeads(o.nowMs(), o.concurrency + this.#active.size, callbackSlotsPerSubscriber(o.concurrency))).filter((e) => !this.#active.has(e.lane));
      // Slots counted at each start: a wake may have started lanes meanwhile.
      let left = false;
      for (const head of due) {
        if (this.#hasSlotFor(head)) this.#startLane(head);
        else left = true;
      }
      // Every slot taken: a lane that ends wakes the loop. Heads held back by their kind's share
      // while slots are free: the other kind's due times are looked at again soon (below).
      if (left && this.#active.size >= o.concurrency) return this.#pendingWake ? 0 : 60_000;
    }
    if (this.#pendingWake) return 0;
    // While lanes are under way their heads count as due, so the next due time says nothing:
    // a lane that ends wakes the loop, and the others' due times are looked at again soon.
    if (this.#active.size > 0) return BUSY_RECHECK_MS;
    const next = await o.store.nextOutboxDueAtMs();
    if (this.#pendingWake) return 0;
    return next === undefined ? 60_000 : Math.max(0, next - o.nowMs());
  }

  #hasSlotFor(head: OutboxEntry): boolean {
    const c = this.#o.concurrency;
    if (head.owner !== undefined && (this.#activeOfOwner.get(head.owner) ?? 0) >= callbackSlotsPerSubscriber(c)) return false;
    return this.#active.size < c && this.#activeOfKind[head.kind] < slotsPerKind(c);
  }

  /** `alone`: the head is known to be all the lane holds that was due when it was found (a wake's lane head). */
  #startLane(head: OutboxEntry, alone = false): void {
    this.#activeOfKind[head.kind] += 1;
    const owner = head.owner;
    if (owner !== undefined) this.#activeOfOwner.set(owner, (this.#activeOfOwner.get(owner) ?? 0) + 1);
    const task = this.#deliverLane(head, alone)
      .catch(async (error: unknown) => {
        // A failed write-back or read in the lane: it stays queued; the lane rests before it is
        // taken again, so a store that keeps failing is not hammered (nor the target).
        this.#o.logger.error({ err: error, lane: head.lane }, "outbox lane delivery failed");
        await new Promise((r) => setTimeout(r, FAILED_ROUND_PAUSE_MS).unref());
      })
      .finally(() => {
        this.#active.delete(head.lane);
        this.#activeOfKind[head.kind] -= 1;
        if (owner !== undefined) {
          const left = this.#activeOfOwner.get(owner)! - 1;
          if (left === 0) this.#activeOfOwner.delete(owner);
          else this.#activeOfOwner.set(owner, left);
        }
        if (this.#running) this.wake();
      });
    this.#active.set(head.lane, task);
  }

  /**
   * Delivers a lane's entries one after the other, from its head, while they succeed: each next
   * entry is an index range read, so a long queue drains without rescanning every lane.
   */
  async #deliverLane(head: OutboxEntry, alone: boolean): Promise<void> {
    if (this.#o.deliverBatch && head.kind === "peer") return this.#deliverLaneInBatches(head, alone);
    let entry: OutboxEntry | undefined = head;
    // Bounded, so one long lane cannot hold back the others (they are looked at again after it).
    for (let n = 0; entry && this.#running && n < 100; n++) {
      if (!(await this.#deliverOne(entry))) return;
      [entry] = await this.#o.store.nextOutboxEntriesInLane(entry.lane, entry.id, this.#o.nowMs(), 1).catch(() => []);
    }
  }

  /**
   * A peer lane in batches: consecutive entries in one call, outcomes applied in order. A
   * delivered entry is completed, a permanent refusal becomes a dead letter and the lane moves
   * on, a retry stops the lane there (what follows waits, so order of effect holds).
   */
  async #deliverLaneInBatches(head: OutboxEntry, alone: boolean): Promise<void> {
    const o = this.#o;
    const size = o.batchSize ?? 100;
    let batch = alone ? [head] : [head, ...(await o.store.nextOutboxEntriesInLane(head.lane, head.id, o.nowMs(), size - 1))];
    // The completion of the last delivered batch, under way while the lane goes on. The next
    // batch is read after the delivered ones' ids and sent without waiting for their deletion to
    // commit: their answers have arrived, so order of effect holds. A crash in between sends them
    // again before what follows, and the peer's answer is the same (msgId, version). The lane
    // ends, or writes a failure back, only once it has committed, so no round takes a delivered
    // entry for a pending head.
    let completing: Promise<void> = Promise.resolve();
    /** Completions chained onto `completing` that have not settled yet. */
    let uncommitted = 0;
    let completionFailed: { error: unknown } | undefined;
    const completed = async () => {
      await completing;
      if (completionFailed) throw completionFailed.error;
    };
    try {
      for (let round = 0; batch.length > 0 && this.#running && round < 20; round++) {
        let outcomes: BatchOutcome[];
        try {
          outcomes = await o.deliverBatch!(batch);
        } catch (error) {
          await completed();
          await this.#failed(batch[0]!, error);
          return;
        }
        const delivered: OutboxEntry[] = [];
        for (const [i, entry] of batch.entries()) {
          const result = outcomes[i] ?? { outcome: "retry" as const, error: "no result for this message" };
          if (result.outcome === "delivered") {
            delivered.push(entry);
            continue;
          }
          await completed();
          await this.#completed(delivered);
          delivered.length = 0;
          const dead = await this.#failed(entry, new DeliveryError(result.error, undefined, { permanent: result.outcome === "permanent" }));
          if (!dead) return;
        }
        // Handled at once (a rejection nobody awaits yet would be unhandled), thrown where awaited.
        // Asked of the store once this turn's calls are written: when the next message is already
        // waiting (as it is when the answer comes as the next change commits), its send goes
        // before the completion's commit (~30 µs of the propagation p50 here).
        uncommitted += 1;
        completing = completing
          .then(afterCallsOfThisTurn)
          .then(() => this.#completed(delivered))
          .catch((error: unknown) => void (completionFailed ??= { error }))
          .then(() => void (uncommitted -= 1));
        if (completionFailed) break;
        // A short batch was all the lane held when it was read; what was queued since (often the
        // next toggle) is taken here, not by a new round. Until the completions have committed
        // the lane stays its peer's, so what a commit queues meanwhile (a wake) is read again
        // and sent at once, not left to the round that the lane's end would ask for.
        const lastId = batch[batch.length - 1]!.id;
        batch = await o.store.nextOutboxEntriesInLane(head.lane, lastId, o.nowMs(), size);
        while (batch.length === 0 && uncommitted > 0 && !completionFailed && this.#running) {
          await Promise.race([completing, this.#nextWake()]);
          batch = await o.store.nextOutboxEntriesInLane(head.lane, lastId, o.nowMs(), size);
        }
      }
    } finally {
      await completed();
    }
  }

  /** Resolves at the next wake (one promise shared by all who wait). */
  #nextWake(): Promise<void> {
    if (!this.#news) {
      let resolve!: () => void;
      const promise = new Promise<void>((r) => (resolve = r));
      this.#news = { promise, resolve };
    }
    return this.#news.promise;
  }

  async #completed(entries: readonly OutboxEntry[]): Promise<void> {
    if (entries.length === 0) return;
    await this.#o.store.completeOutboxEntries(entries.map((e) => e.id));
    for (const e of entries) this.#o.onDelivered?.(e);
  }

  /** True when delivered; a failure is written back with its next attempt (or as a dead letter). */
  async #deliverOne(entry: OutboxEntry): Promise<boolean> {
    const o = this.#o;
    // A callback queued behind a receiver that did not answer for longer than the policy's age
    // is not sent late: it is a dead letter at once (and the lane moves on without a call).
    if (entry.kind === "callback" && o.nowMs() - entry.createdAtMs >= o.policy.maxAgeMs) {
      return this.#failed(entry, new DeliveryError("not sent: older than the delivery's maxAgeSeconds", undefined, { permanent: true }));
    }
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
      return this.#failed(entry, error);
    }
  }

  /** Writes a failure back: next attempt from the retry policy, or a dead letter. True when dead (the lane moves on). */
  async #failed(entry: OutboxEntry, error: unknown): Promise<boolean> {
    const o = this.#o;
    const attempts = entry.attempts + 1;
    const nowMs = o.nowMs();
    const permanent = error instanceof DeliveryError && error.permanent;
    // Peer messages are retried until acknowledged (DESIGN "Invariants"): no cap by count or age.
    const policy = entry.kind === "peer" ? { ...o.policy, maxAttempts: Number.MAX_SAFE_INTEGER, maxAgeMs: Number.POSITIVE_INFINITY } : o.policy;
    const delay = permanent ? undefined : nextRetryDelayMs({ attempts, ageMs: nowMs - entry.createdAtMs }, policy);
    const lastError = ((error as Error).message ?? "delivery failed").slice(0, 300);
    o.logger.warn({ outboxId: entry.id, lane: entry.lane, attempts, dead: delay === undefined, error: lastError }, "outbox delivery failed");
    // A write-back that fails (disk full) fails the lane, which rests before it is taken again
    // (#startLane): the entry is still pending and due, so the lane must neither move past it
    // (its order of effect) nor send it again at once.
    await o.store.failOutboxEntry({ id: entry.id, attempts, nextAttemptAtMs: delay === undefined ? undefined : nowMs + delay, lastError, nowMs });
    o.onFailed?.(entry, delay === undefined);
    // A dead letter does not hold its lane back; a retry does.
    return delay === undefined;
  }

}
