import { closeSync, mkdirSync, openSync, statfsSync } from "node:fs";
import { dirname } from "node:path";
import Database from "better-sqlite3";
import type { StoredNotification } from "../../domain/notification.ts";
import { migrate } from "./migrations.ts";

/** An open database with a cache of prepared statements (each SQL text is prepared once). */
export class SqliteDatabase {
  readonly db: Database.Database;
  readonly #statements = new Map<string, { statement: Database.Statement; writes: string | undefined }>();
  /** Per table, how many times it may have been written; `*` counts writes to any table. */
  readonly #generations = new Map<string, number>([["*", 0]]);
  /** One transaction function for every write (better-sqlite3 builds four variants per call to `transaction`). */
  #transaction: Database.Transaction<(fn: () => unknown) => unknown> | undefined;
  /**
   * Set when a write failed for the storage's sake (disk full, I/O error, corruption), cleared
   * by the next write that commits: while set, the node is not ready (SqliteStore.ping).
   */
  storageFailure: string | undefined;
  /** The directory of the database file (undefined in memory), for its filesystem's free space. */
  readonly #dir: string | undefined;
  /** The last failed probe (ping), tried again at most once a second. */
  #failedProbe: { atMs: number; error: unknown } | undefined;

  /**
   * `exclusiveLock` (SQLite locking_mode EXCLUSIVE, set before the first WAL access): the
   * connection keeps the file's lock and the WAL index in its own memory, so no transaction
   * pays the file-lock system calls (on the benchmark machine, ~45% more two-read requests per
   * second); the price is that no other process can open the file while the node runs.
   */
  constructor(file: string, nowMs: number, options: { exclusiveLock: boolean; synchronous?: "full" | "normal"; maxPageCount?: number } = { exclusiveLock: false }) {
    this.#dir = file === ":memory:" ? undefined : dirname(file);
    if (file !== ":memory:") {
      mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
      // Created readable by its owner only (it holds the subscribers' credential hashes); SQLite
      // gives the -wal and -shm files the database file's mode. An existing file keeps its own.
      closeSync(openSync(file, "a", 0o600));
    }
    // Busy timeout: alone on its file, the node waits on a lock only at start, for a previous process.
    this.db = new Database(file, { timeout: options.exclusiveLock ? 1_000 : 5_000 });
    try {
      if (options.exclusiveLock) this.db.pragma("locking_mode = EXCLUSIVE");
      // WAL: readers never block the writer. FULL flushes the WAL at every commit; NORMAL only
      // at checkpoints (durable across process crashes, not an OS crash or power loss).
      this.db.pragma("journal_mode = WAL");
      // A large transaction (a prune, a burst) grows the WAL file; it is cut back to this at the next checkpoint.
      this.db.pragma("journal_size_limit = 67108864");
      this.db.pragma(`synchronous = ${options.synchronous === "normal" ? "NORMAL" : "FULL"}`);
      this.db.pragma("foreign_keys = ON");
      // Savepoint and statement journals (and sorts) in memory. On a file, a statement journal
      // past 64 KiB spills to a temporary file, which, with the exclusive lock, stays open for
      // the connection's life: from then on every group commit's savepoints wrote pages to it,
      // three system calls per toggle (measured: 15 → 23 µs of CPU per toggle).
      this.db.pragma("temp_store = MEMORY");
      migrate(this.db, nowMs);
      // A cap on the file's size, past which writes fail as on a full disk (tests of that path).
      if (options.maxPageCount !== undefined) this.db.pragma(`max_page_count = ${Math.trunc(options.maxPageCount)}`);
    } catch (error) {
      this.db.close();
      if ((error as { code?: string }).code !== "SQLITE_BUSY") throw error;
      throw new Error(`the database ${file} is in use by another process (is another node running on the same data?)`, { cause: error });
    }
  }

  /**
   * Changes whenever this connection may have written `table`: a statement that writes it (or
   * that may write anything) was handed out. Cached reads are valid only
   * for the generation they were read in (see ReadCache). Alone on its file (the exclusive
   * lock), no other writer exists.
   */
  generationOf(table: string): number {
    return (this.#generations.get(table) ?? 0) + this.#generations.get("*")!;
  }

  /** True inside a transaction: what is read there may still be rolled back. */
  get inTransaction(): boolean {
    return this.db.inTransaction;
  }

  /** Runs before any write that starts outside a transaction (the store commits queued writes there). */
  beforeWrite: (() => void) | undefined;

  /**
   * Called once a transaction that recorded notifications has committed, synchronously and
   * in commit order, with them in the order recorded (see `recorded`). Not called for what a
   * rollback undid.
   */
  onNotificationsCommitted: ((notifications: readonly StoredNotification[]) => void) | undefined;
  /** Notifications recorded by the transaction under way, its savepoints included. */
  #recorded: StoredNotification[] = [];

  /** A notification written in the current transaction: handed to `onNotificationsCommitted` once it commits. */
  recorded(notification: StoredNotification): void {
    this.#recorded.push(notification);
    if (!this.db.inTransaction) this.#committed();
  }

  #committed(): void {
    if (this.#recorded.length === 0) return;
    const notifications = this.#recorded;
    this.#recorded = [];
    this.onNotificationsCommitted?.(notifications);
  }

  /** A prepared statement for this SQL; parameters are always bound, never interpolated. */
  sql(text: string): Database.Statement {
    let entry = this.#statements.get(text);
    if (!entry) {
      if (BARE_LIMIT.test(text)) throw new Error(`bind a LIMIT as CAST(? AS INTEGER), not as a bare ?: ${text}`);
      const statement = this.db.prepare(text);
      entry = { statement, writes: writtenTable(text, statement) };
      this.#statements.set(text, entry);
    }
    // Handed out to be run at once: whatever it may write, cached reads of it are stale from here.
    if (entry.writes !== undefined) {
      if (!this.db.inTransaction) this.beforeWrite?.();
      this.#bump(entry.writes);
    }
    return entry.statement;
  }

  #bump(table: string): void {
    this.#generations.set(table, (this.#generations.get(table) ?? 0) + 1);
  }

  /** Runs fn in one IMMEDIATE transaction (takes the write lock up front, no upgrade deadlocks). */
  write<T>(fn: () => T): T {
    // Each statement that writes bumps its table's generation as it is handed out, and nothing
    // read inside the transaction is cached, so a rollback leaves no stale entry behind.
    const outermost = !this.db.inTransaction;
    if (outermost) this.beforeWrite?.();
    this.#transaction ??= this.db.transaction((body: () => unknown) => body());
    // Nested, this is a savepoint: what it recorded goes with it if it is rolled back.
    const mark = this.#recorded.length;
    let result: T;
    try {
      result = this.#transaction.immediate(fn) as T;
    } catch (error) {
      this.#recorded.length = outermost ? 0 : mark;
      if (isStorageFailure(error)) this.storageFailure = (error as { code: string }).code;
      throw error;
    }
    if (outermost) {
      this.storageFailure = undefined;
      this.#committed();
    }
    return result;
  }

  /**
   * Throws unless the store can serve: a page of the file is read; its filesystem has at least
   * `minFreeBytes` free (a full disk refuses only the writes that need new space, so it is
   * judged by its free space); and after a write failed for the storage's sake (an I/O error, a
   * read-only file), a probe that writes one row as it is commits (tried at most once a second;
   * then the failure is over).
   */
  ping(minFreeBytes = 0): void {
    this.sql(`SELECT version FROM schema_migrations ORDER BY version DESC LIMIT 1`).get();
    if (minFreeBytes > 0 && this.#dir !== undefined) {
      const fs = statfsSync(this.#dir);
      const free = fs.bavail * fs.bsize;
      if (free < minFreeBytes) throw new Error(`the database's filesystem has ${free} bytes free, fewer than ${minFreeBytes}`);
    }
    if (this.storageFailure === undefined) return;
    const now = performance.now();
    if (this.#failedProbe && now - this.#failedProbe.atMs < 1_000) throw this.#failedProbe.error;
    try {
      this.write(() => this.sql(`UPDATE notification_feed_mark SET indexed_through = indexed_through`).run());
      this.#failedProbe = undefined;
    } catch (error) {
      this.#failedProbe = { atMs: now, error };
      throw error;
    }
  }

  close(): void {
    this.#statements.clear();
    if (this.db.open) this.db.close();
  }
}

/** SQLite's codes for a storage that cannot take writes; a refusal of ours or a constraint is none of these. */
const STORAGE_FAILURE = /^SQLITE_(FULL|IOERR|CORRUPT|NOTADB|READONLY|CANTOPEN|PROTOCOL)/;
const isStorageFailure = (error: unknown): boolean => STORAGE_FAILURE.test(String((error as { code?: unknown } | null)?.code ?? ""));

/**
 * `LIMIT ?` makes SQLite (3.53) plan with the bound value: it marks the parameter so that binding
 * it again expires the plan, and the statement is prepared anew at every run (measured: a lane
 * read 12 µs instead of 3.8, the outbox heads 25 µs instead of 8.5). `LIMIT CAST(? AS INTEGER)`
 * is an expression, not a parameter, to the planner: still bound, planned once.
 */
const BARE_LIMIT = /\bLIMIT\s+\?/i;

const DML = /^\s*(?:INSERT(?:\s+OR\s+\w+)?\s+INTO|REPLACE\s+INTO|UPDATE(?:\s+OR\s+\w+)?|DELETE\s+FROM)\s+(\w+)\s/i;

/**
 * Which table a statement may write: undefined for a query (a reader SQLite judges read-only),
 * the table of a plain INSERT, UPDATE or DELETE (the schema has no triggers and no foreign-key
 * actions, so nothing else changes with it), and `*` for anything else that is not a query
 * (transaction control, WITH … INSERT, DDL, pragmas that set): treated as writing every table.
 */
function writtenTable(text: string, statement: Database.Statement): string | undefined {
  if (statement.reader && statement.readonly) return undefined;
  return DML.exec(text)?.[1]?.toLowerCase() ?? "*";
}
