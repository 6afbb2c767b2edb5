import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import Database from "better-sqlite3";
import { migrate } from "./migrations.ts";

/** An open database with a cache of prepared statements (each SQL text is prepared once). */
export class SqliteDatabase {
  readonly db: Database.Database;
  readonly #statements = new Map<string, Database.Statement>();
  #generation = 0;
  /** One transaction function for every write (better-sqlite3 builds four variants per call to `transaction`). */
  #transaction: Database.Transaction<(fn: () => unknown) => unknown> | undefined;

  /**
   * `exclusiveLock` (SQLite locking_mode EXCLUSIVE, set before the first WAL access): the
   * connection keeps the file's lock and the WAL index in its own memory, so no transaction
   * pays the file-lock system calls (on the benchmark machine, ~45% more two-read requests per
   * second); the price is that no other process can open the file while the node runs.
   */
  constructor(file: string, nowMs: number, options: { exclusiveLock: boolean } = { exclusiveLock: false }) {
    if (file !== ":memory:") mkdirSync(dirname(file), { recursive: true });
    // Busy timeout: alone on its file, the node waits on a lock only at start, for a previous process.
    this.db = new Database(file, { timeout: options.exclusiveLock ? 1_000 : 5_000 });
    try {
      if (options.exclusiveLock) this.db.pragma("locking_mode = EXCLUSIVE");
      // WAL: readers never block the writer; NORMAL is durable across process crashes in WAL
      // mode (only an OS crash or power loss can lose the last transactions).
      this.db.pragma("journal_mode = WAL");
      this.db.pragma("synchronous = NORMAL");
      this.db.pragma("foreign_keys = ON");
      migrate(this.db, nowMs);
    } catch (error) {
      this.db.close();
      if ((error as { code?: string }).code !== "SQLITE_BUSY") throw error;
      throw new Error(`the database ${file} is in use by another process (is another node running on the same data?)`, { cause: error });
    }
  }

  /**
   * Changes whenever this connection may have written: a statement that writes was handed out,
   * or a transaction ended. Cached reads are valid only for the generation they were read in
   * (see ReadCache). Alone on its file (the exclusive lock), no other writer exists.
   */
  get generation(): number {
    return this.#generation;
  }

  /** A prepared statement for this SQL; parameters are always bound, never interpolated. */
  sql(text: string): Database.Statement {
    let statement = this.#statements.get(text);
    if (!statement) {
      statement = this.db.prepare(text);
      this.#statements.set(text, statement);
    }
    // Handed out to be run at once: if it can write (SQLite's own judgement, which also sees
    // INSERT … RETURNING as a writer), cached reads are stale from here.
    if (!statement.readonly) this.#generation++;
    return statement;
  }

  /** Runs fn in one IMMEDIATE transaction (takes the write lock up front, no upgrade deadlocks). */
  write<T>(fn: () => T): T {
    try {
      this.#transaction ??= this.db.transaction((body: () => unknown) => body());
      return this.#transaction.immediate(fn) as T;
    } finally {
      this.#generation++;
    }
  }

  close(): void {
    this.#statements.clear();
    if (this.db.open) this.db.close();
  }
}
