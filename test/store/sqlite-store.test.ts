import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterEach, describe, expect, it } from "vitest";
import { SqliteStore } from "../../node/store/sqlite/sqlite-store.ts";
import { latestSchemaVersion } from "../../node/store/sqlite/migrations.ts";
import type { TwinningStore } from "../../node/store/store-port.ts";
import { runStoreContract } from "./store-contract.ts";
import { activated, P1, S1, T0 } from "./store-fixtures.ts";

/** A fresh database file in its own temporary directory; cleanup closes the store and removes it. */
function tempStore(nowMs = T0, exclusiveLock = false) {
  const dir = mkdtempSync(join(tmpdir(), "twinning-store-"));
  const file = join(dir, "node.db");
  let current: TwinningStore = new SqliteStore({ file, nowMs, exclusiveLock });
  return {
    file,
    get store(): TwinningStore {
      return current;
    },
    reopen: async (reopenNowMs = nowMs): Promise<TwinningStore> => {
      await current.close();
      current = new SqliteStore({ file, nowMs: reopenNowMs, exclusiveLock });
      return current;
    },
    cleanup: async (): Promise<void> => {
      await current.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

runStoreContract("SqliteStore", async () => tempStore());
// The node's default: the file's lock held for the store's lifetime.
runStoreContract("SqliteStore with an exclusive lock", async () => tempStore(T0, true));

/** Reads the file directly, read-only, as an operator's tooling would. */
function inspect<T>(file: string, fn: (db: Database.Database) => T): T {
  const db = new Database(file, { readonly: true, fileMustExist: true, timeout: 200 });
  try {
    return fn(db);
  } finally {
    db.close();
  }
}

describe("SqliteStore on disk", () => {
  let t: ReturnType<typeof tempStore> | undefined;
  afterEach(async () => {
    await t?.cleanup();
    t = undefined;
  });

  it("a status change asked just before the store closes is committed, not dropped with the queue", async () => {
    t = tempStore(T0, true);
    const twin = await activated(t.store, P1, S1);
    const change = t.store.changeTwinStatus({ twinId: twin.twinId, status: "Off", changedBy: "primary", origin: "001-01", nowMs: T0 + 1_000 });
    const reopened = await t.reopen();
    await expect(change).resolves.toMatchObject({ changed: true });
    expect((await reopened.getTwin(twin.twinId))?.status).toBe("Off");
  });

  it("a listener of committed notifications that throws is reported through onUpkeepError; the commit stands and the other listeners still hear it", async () => {
    const dir = mkdtempSync(join(tmpdir(), "twinning-store-"));
    const reported: unknown[] = [];
    const store = new SqliteStore({ file: join(dir, "node.db"), nowMs: T0, onUpkeepError: (error) => reported.push(error) });
    try {
      const twin = await activated(store, P1, S1);
      const heard: number[] = [];
      store.onNotificationsCommitted(() => {
        throw new Error("listener broke");
      });
      store.onNotificationsCommitted((ns) => heard.push(...ns.map((n) => n.id)));
      await expect(store.changeTwinStatus({ twinId: twin.twinId, status: "Off", changedBy: "primary", origin: "001-01", nowMs: T0 + 1_000 })).resolves.toMatchObject({ changed: true });
      expect(reported.map((e) => (e as Error).message)).toEqual(["listener broke"]);
      expect(heard).toHaveLength(1);
      expect((await store.getTwin(twin.twinId))?.status).toBe("Off");
    } finally {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("creates the database, its WAL and its shared-memory file readable by their owner only (they hold the credential hashes)", async () => {
    // Without the exclusive lock, so SQLite makes its shared-memory file too.
    t = tempStore(T0, false);
    await activated(t.store, P1, S1);
    for (const file of [t.file, `${t.file}-wal`, `${t.file}-shm`]) expect((statSync(file).mode & 0o777).toString(8), file).toBe("600");
  });

  it("prune deletes a backlog of old notifications in batches, letting the event loop run between them, and keeps the newer ones", async () => {
    t = tempStore(T0, true);
    const twin = await activated(t.store, P1, S1);
    for (let i = 0; i < 12_000; i++) await t.store.changeTwinStatus({ twinId: twin.twinId, status: i % 2 ? "On" : "Off", changedBy: "primary", origin: "001-01", nowMs: T0 + 1_000 });
    // The 12,000th left it On: this one changes it, and is kept.
    await t.store.changeTwinStatus({ twinId: twin.twinId, status: "Off", changedBy: "primary", origin: "001-01", nowMs: T0 + 10 * 86_400_000 });
    const newest = await t.store.latestNotificationId();
    let ranDuringPrune = false;
    setImmediate(() => (ranDuringPrune = true));
    await t.store.prune({ nowMs: T0 + 10 * 86_400_000, notificationRetentionMs: 86_400_000, attemptWindowMs: 900_000, deadLetterRetentionMs: 86_400_000 });
    // In one transaction, the prune's promise would settle before any callback of the next turn.
    expect(ranDuringPrune).toBe(true);
    expect((await t.store.notificationsAfter(S1, "secondary", 0, 100_000)).map((n) => n.id)).toEqual([newest]);
  });

  it("runs in WAL journal mode", async () => {
    t = tempStore();
    await activated(t.store, P1, S1);
    expect(inspect(t.file, (db) => db.pragma("journal_mode", { simple: true }))).toBe("wal");
  });

  it("with an exclusive lock, no other connection can read the live file; after close it can, and nothing committed is lost", async () => {
    t = tempStore(T0, true);
    const twin = await activated(t.store, P1, S1);
    expect(() => inspect(t!.file, (db) => db.prepare(`SELECT COUNT(*) AS n FROM twins`).get())).toThrow(/locked|busy/i);
    await t.store.close();
    expect(inspect(t.file, (db) => db.prepare(`SELECT twin_id FROM twins`).all())).toEqual([{ twin_id: twin.twinId }]);
    const again = await t.reopen();
    expect(await again.getTwin(twin.twinId)).toEqual(twin);
    // A second store on the same file (a second node by mistake) is refused, and says why.
    expect(() => new SqliteStore({ file: t!.file, exclusiveLock: true })).toThrow(/in use by another process/);
    expect(await again.getTwin(twin.twinId)).toEqual(twin);
  });

  it("records every applied schema version, in order, in schema_migrations", async () => {
    t = tempStore(T0);
    const rows = inspect(t.file, (db) => db.prepare(`SELECT version, name, applied_at FROM schema_migrations ORDER BY version`).all()) as { version: number; name: string; applied_at: number }[];
    expect(rows.map((r) => r.version)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]);
    expect(rows[0]).toEqual({ version: 1, name: "initial schema", applied_at: T0 });
    expect(rows.every((r) => r.applied_at === T0)).toBe(true);
  });

  it("migration 9 keeps the replay cache: a jti seen before the upgrade is still refused after it", async () => {
    t = tempStore(T0);
    await t.store.close();
    // The file as version 8 left it: the replay cache as a rowid table, holding one jti.
    const db = new Database(t.file);
    db.exec(`DROP TABLE federation_jti;
      CREATE TABLE federation_jti (jti TEXT PRIMARY KEY, expires_at INTEGER NOT NULL) STRICT;
      CREATE INDEX federation_jti_expiry ON federation_jti (expires_at);
      DELETE FROM schema_migrations WHERE version IN (9, 12);`);
    db.prepare(`INSERT INTO federation_jti (jti, expires_at) VALUES (?, ?)`).run("002-01:seen", T0 + 60_000);
    db.close();
    const upgraded = await t.reopen(T0);
    expect(await upgraded.rememberJti("002-01:seen", T0 + 60_000, T0)).toBe(false);
    expect(await upgraded.rememberJti("002-01:new", T0 + 60_000, T0)).toBe(true);
    await upgraded.prune({ nowMs: T0 + 120_000, notificationRetentionMs: 86_400_000, attemptWindowMs: 900_000, deadLetterRetentionMs: 86_400_000 });
    expect(await upgraded.rememberJti("002-01:seen", T0 + 180_000, T0 + 120_000)).toBe(true);
  });

  it("the admin listings read an index range, not the whole table: active twins after a cursor, dead letters newest first", async () => {
    t = tempStore(T0);
    await activated(t.store, P1, S1);
    const plan = (sql: string, ...args: unknown[]) => inspect(t!.file, (db) => (db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(...args) as { detail: string }[]).map((r) => r.detail).join("; "));
    // The statements of listActiveTwins and listDeadLetters (sqlite-store.ts).
    for (const sql of [
      "SELECT * FROM twins WHERE active = 1 ORDER BY created_at, twin_id LIMIT CAST(? AS INTEGER)",
      "SELECT * FROM twins WHERE active = 1 AND (created_at, twin_id) > (?, ?) ORDER BY created_at, twin_id LIMIT CAST(? AS INTEGER)",
    ]) {
      const detail = plan(sql, ...(sql.includes("(?, ?)") ? [T0, "x", 10] : [10]));
      expect(detail, sql).toContain("USING INDEX twins_active_created");
      expect(detail, sql).not.toContain("TEMP B-TREE");
    }
    const dead = plan("SELECT * FROM outbox WHERE state = 'dead' ORDER BY created_at DESC, id DESC LIMIT CAST(? AS INTEGER)", 10);
    expect(dead).toContain("USING INDEX outbox_dead");
    expect(dead).not.toContain("TEMP B-TREE");
  });

  it("migration 12 keys the replay cache by (expiry, jti) in one b-tree: a jti seen before the upgrade is still refused after it, and pruned by its expiry", async () => {
    t = tempStore(T0);
    await t.store.close();
    // The file as version 11 left it: keyed by jti, with an index of expiries beside it.
    const db = new Database(t.file);
    db.exec(`DROP TABLE federation_jti;
      CREATE TABLE federation_jti (jti TEXT PRIMARY KEY, expires_at INTEGER NOT NULL) STRICT, WITHOUT ROWID;
      CREATE INDEX federation_jti_expiry ON federation_jti (expires_at);
      DELETE FROM schema_migrations WHERE version = 12;`);
    db.prepare(`INSERT INTO federation_jti (jti, expires_at) VALUES (?, ?)`).run("002-01:seen", T0 + 60_000);
    db.prepare(`INSERT INTO federation_jti (jti, expires_at) VALUES (?, ?)`).run("002-01:later", T0 + 600_000);
    db.close();
    const upgraded = await t.reopen(T0);
    expect(await upgraded.rememberJti("002-01:seen", T0 + 60_000, T0)).toBe(false);
    expect(await upgraded.rememberJti("002-01:new", T0 + 60_000, T0)).toBe(true);
    expect(await upgraded.rememberJti("002-01:new", T0 + 60_000, T0)).toBe(false);
    await upgraded.prune({ nowMs: T0 + 120_000, notificationRetentionMs: 86_400_000, attemptWindowMs: 900_000, deadLetterRetentionMs: 86_400_000 });
    expect(await upgraded.rememberJti("002-01:seen", T0 + 60_000, T0 + 120_000)).toBe(true);
    expect(await upgraded.rememberJti("002-01:later", T0 + 600_000, T0 + 120_000)).toBe(false);
    await upgraded.close();
    const objects = inspect(t.file, (db) => db.prepare(`SELECT type, name FROM sqlite_master WHERE tbl_name = 'federation_jti' ORDER BY type, name`).all());
    expect(objects).toEqual([{ type: "table", name: "federation_jti" }]);
  });

  it("a database migrated by a newer release is refused at open (a rollback of the code), and nothing in it changes", async () => {
    t = tempStore(T0);
    const twin = await activated(t.store, P1, S1);
    await t.store.close();
    const db = new Database(t.file);
    db.prepare(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`).run(latestSchemaVersion + 1, "from a newer release", T0);
    db.close();
    expect(() => new SqliteStore({ file: t!.file })).toThrow(new RegExp(`schema \\(version ${latestSchemaVersion + 1}\\) is newer than this release knows \\(${latestSchemaVersion}\\)`));
    expect(inspect(t.file, (d) => d.prepare(`SELECT twin_id FROM twins`).all())).toEqual([{ twin_id: twin.twinId }]);
  });

  it("reopening an existing file does not re-run migrations and keeps the data", async () => {
    t = tempStore(T0);
    const twin = await activated(t.store, P1, S1);
    const again = await t.reopen(T0 + 86_400_000);
    expect(await again.getTwin(twin.twinId)).toEqual(twin);
    const rows = inspect(t.file, (db) => db.prepare(`SELECT version, applied_at FROM schema_migrations`).all());
    expect(rows).toEqual(Array.from({ length: latestSchemaVersion }, (_, k) => ({ version: k + 1, applied_at: T0 })));
    expect(latestSchemaVersion).toBe(14);
  });
});
