import type { SqliteDatabase } from "./sqlite-database.ts";

interface Pending {
  readonly operation: () => unknown;
  readonly resolve: (value: unknown) => void;
  readonly reject: (error: unknown) => void;
}

/**
 * Group commit: write operations asked for in the same turn of the event loop run in one
 * IMMEDIATE transaction, each in a savepoint of its own (given here; the operations do not open
 * one), and are answered once that transaction has committed. One refused operation rolls back
 * only its own savepoint; if the transaction itself fails (its commit, or an error after which
 * SQLite has rolled it back), every operation in it fails, and none was committed. So an answer
 * still means committed, and the commit and its WAL writes are paid once per group. Any other
 * write of the store commits the queued group first (SqliteDatabase's `beforeWrite`), so writes
 * keep the order they were asked in; a read asked before a change's answer may not see it yet.
 */
export class GroupCommit {
  readonly #d: SqliteDatabase;
  #pending: Pending[] = [];

  constructor(d: SqliteDatabase) {
    this.#d = d;
  }

  run<T>(operation: () => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.#pending.push({ operation, resolve: resolve as (value: unknown) => void, reject });
      if (this.#pending.length === 1) setImmediate(() => this.#flushQueued());
    });
  }

  /** The group's own turn: a failure has been handed to each of its operations already. */
  #flushQueued(): void {
    try {
      this.flush();
    } catch {
      // Answered: every operation of the group was rejected with it.
    }
  }

  /**
   * Commits what is queued, now. The store calls it before any other write and before closing,
   * so writes still take effect in the order they were asked, across all of the store's
   * operations, and nothing asked before a close is left behind. If the group's transaction
   * fails, its operations are rejected and the error is thrown here too: a write that was to
   * follow the group (the effect of a message whose replay-cache row was in it, say) must not
   * commit without what was asked before it.
   */
  flush(): void {
    if (this.#pending.length === 0) return;
    const group = this.#pending;
    this.#pending = [];
    const outcomes: { ok: boolean; value: unknown }[] = [];
    try {
      this.#d.write(() => {
        for (const { operation } of group) {
          try {
            // Its own savepoint, whatever the operation does itself: a refusal undoes all of it.
            outcomes.push({ ok: true, value: this.#d.write(operation) });
          } catch (error) {
            // SQLite may have rolled the whole transaction back (I/O error, disk full): then
            // nothing of the group stands, and the group fails as one.
            if (!this.#d.inTransaction) throw error;
            outcomes.push({ ok: false, value: error });
          }
        }
      });
    } catch (error) {
      for (const { reject } of group) reject(error);
      throw error;
    }
    group.forEach(({ resolve, reject }, i) => (outcomes[i]!.ok ? resolve : reject)(outcomes[i]!.value));
  }
}
