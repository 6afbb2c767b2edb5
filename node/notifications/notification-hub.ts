import type { StoredNotification } from "../domain/notification.ts";
import type { TwinRole } from "../domain/twin.ts";

type Listener = (n: StoredNotification) => void;

/** Adds `value` to the set under `key`; returns its removal (the set goes with its last member). */
function addTo<T>(map: Map<string, Set<T>>, key: string, value: T): () => void {
  let set = map.get(key);
  if (!set) map.set(key, (set = new Set()));
  set.add(value);
  return () => {
    set.delete(value);
    if (set.size === 0) map.delete(key);
  };
}

/**
 * In-process fan-out of committed changes: SSE streams listen per subscriber, and long polls
 * on an activation code wait for its redemption. Only ever fed after a commit; the store's
 * notification feed stays the source of truth (an SSE client replays from Last-Event-ID).
 *
 * Notifications reach the streams in commit order (id order): the store hands each commit's
 * notifications to `committed` as it commits, and they are published when the request that
 * committed them says so (`publish`, once it has answered what it answers first), together with
 * any committed before them and not yet published; the rest at the next turn of the event loop.
 * Published straight from each request's continuation, a later commit could overtake an earlier
 * one (their continuations resume after different numbers of steps), and a stream, which skips
 * ids at or below the last it sent, would drop the earlier one for good.
 */
export class NotificationHub {
  readonly #listeners = new Map<string, Set<Listener>>();
  /** Committed, not yet published, in commit order. */
  #unpublished: StoredNotification[] = [];
  #sweep: NodeJS.Immediate | undefined;
  readonly #codeWaiters = new Map<string, Set<() => void>>();
  readonly #revocations = new Map<string, Set<() => void>>();

  subscribe(address: string, role: TwinRole, listener: Listener): () => void {
    return addTo(this.#listeners, `${role}:${address}`, listener);
  }

  connections(address: string, role: TwinRole): number {
    return this.#listeners.get(`${role}:${address}`)?.size ?? 0;
  }

  /** From the store, as each commit lands (see the class). */
  committed(notifications: readonly StoredNotification[]): void {
    for (const n of notifications) this.#unpublished.push(n);
    this.#sweep ??= setImmediate(() => {
      this.#sweep = undefined;
      this.#publishThrough(this.#unpublished.length);
    });
  }

  /** The request that committed `notifications` is ready for them: they go out, after any committed before them. */
  publish(notifications: readonly StoredNotification[]): void {
    const last = notifications[notifications.length - 1];
    if (last === undefined) return;
    const end = this.#unpublished.findIndex((n) => n.id === last.id);
    if (end >= 0) this.#publishThrough(end + 1);
  }

  /** Stops the pending sweep (the node is stopping). */
  close(): void {
    if (this.#sweep) clearImmediate(this.#sweep);
    this.#sweep = undefined;
  }

  #publishThrough(count: number): void {
    if (count === 0) return;
    const due = this.#unpublished.splice(0, count);
    for (const n of due) {
      for (const listener of this.#listeners.get(`${n.recipientRole}:${n.recipientAddress}`) ?? []) listener(n);
    }
  }

  /** Calls `end` when the subscriber's tokens are revoked (de-provisioned, or a new credential); returns the undo. */
  onRevoked(address: string, end: () => void): () => void {
    return addTo(this.#revocations, address, end);
  }

  /** The subscriber's tokens no longer work: what was opened with them ends now. */
  revoke(address: string): void {
    for (const end of [...(this.#revocations.get(address) ?? [])]) end();
  }

  /** Resolves when the code is redeemed, or after timeoutMs, or when signal aborts. */
  waitForCode(codeId: string, timeoutMs: number, signal?: AbortSignal): Promise<void> {
    // Already aborted (the client left, or the node is stopping): an abort listener would never fire.
    if (signal?.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", done);
        remove();
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      timer.unref();
      signal?.addEventListener("abort", done, { once: true });
      const remove = addTo(this.#codeWaiters, codeId, done);
    });
  }

  codeUsed(codeId: string): void {
    for (const done of [...(this.#codeWaiters.get(codeId) ?? [])]) done();
  }
}
