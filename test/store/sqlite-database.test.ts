import { mkdtempSync, readdirSync, readlinkSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { SqliteDatabase } from "../../node/store/sqlite/sqlite-database.ts";
import { recordNotifications } from "../../node/store/sqlite/sqlite-notifications.ts";
import type { NotificationDraft } from "../../node/domain/notification.ts";

describe("SqliteDatabase statements", () => {
  it("refuses a LIMIT bound as a bare parameter (SQLite would prepare the statement anew at every run)", () => {
    const d = new SqliteDatabase(":memory:", 0);
    try {
      expect(() => d.sql(`SELECT * FROM outbox ORDER BY id LIMIT ?`)).toThrow(/CAST\(\? AS INTEGER\)/);
      expect(() => d.sql(`SELECT * FROM outbox ORDER BY id limit  ?`)).toThrow(/CAST/);
    } finally {
      d.close();
    }
  });

  it("a LIMIT bound through CAST honours each run's value", () => {
    const d = new SqliteDatabase(":memory:", 0);
    try {
      const insert = d.sql(`INSERT INTO outbox (lane, kind, target, payload, state, attempts, next_attempt_at, created_at) VALUES (?, 'peer', 'x', '{}', 'pending', 0, 0, 0)`);
      for (let i = 0; i < 5; i++) insert.run(`lane-${i}`);
      const firstN = d.sql(`SELECT lane FROM outbox ORDER BY id LIMIT CAST(? AS INTEGER)`);
      expect(firstN.all(2)).toEqual([{ lane: "lane-0" }, { lane: "lane-1" }]);
      expect(firstN.all(4)).toHaveLength(4);
      expect(firstN.all(0)).toHaveLength(0);
      expect(firstN.all(10)).toHaveLength(5);
    } finally {
      d.close();
    }
  });
});

describe("SqliteDatabase committed notifications", () => {
  const draft = (twinId: string): NotificationDraft => ({
    recipientAddress: "tel:+15550000101",
    recipientRole: "secondary",
    type: "twinningStatusNotification",
    content: { twinId, primaryAddress: "tel:+15550000001", secondaryAddress: "tel:+15550000101", status: "Off", changedBy: "primary", timestamp: new Date(0).toISOString() },
  });

  it("HLF-CM-005 hands over what a transaction recorded once it commits, without what a rolled-back savepoint recorded, and nothing of a rolled-back transaction", () => {
    const d = new SqliteDatabase(":memory:", 0);
    const heard: string[][] = [];
    d.onNotificationsCommitted = (ns) => heard.push(ns.map((n) => n.content.twinId));
    /** A write (a savepoint inside a transaction, else a transaction) that records one notification, then fails. */
    const refusedWrite = (twinId: string) =>
      expect(() =>
        d.write(() => {
          recordNotifications(d, [draft(twinId)], 0);
          throw new Error(`${twinId} refused`);
        }),
      ).toThrow(`${twinId} refused`);
    try {
      d.write(() => {
        recordNotifications(d, [draft("kept-1")], 0);
        refusedWrite("undone");
        expect(heard).toEqual([]); // not before the commit
        recordNotifications(d, [draft("kept-2")], 0);
      });
      refusedWrite("rolled-back");
      d.write(() => void recordNotifications(d, [draft("next")], 0));
      expect(heard).toEqual([["kept-1", "kept-2"], ["next"]]);
      // The ids handed over are the rows that stand.
      expect(d.sql(`SELECT json_extract(content, '$.twinId') AS t FROM notifications ORDER BY id`).all().map((r) => (r as { t: string }).t)).toEqual(["kept-1", "kept-2", "next"]);
    } finally {
      d.close();
    }
  });
});

describe("SqliteDatabase temporary files", () => {
  /** SQLite's temporary files this process holds open (Linux: /proc/self/fd). */
  const openTemporaryFiles = () =>
    readdirSync("/proc/self/fd")
      .map((fd) => {
        try {
          return readlinkSync(`/proc/self/fd/${fd}`);
        } catch {
          return "";
        }
      })
      .filter((target) => /etilqs_/.test(target));

  it.runIf(process.platform === "linux")("keeps statement journals in memory: with the exclusive lock, a large statement leaves no temporary file open for later savepoints to write to", () => {
    const dir = mkdtempSync(join(tmpdir(), "twinning-temp-"));
    const d = new SqliteDatabase(join(dir, "db.sqlite"), 0, { exclusiveLock: true });
    try {
      d.db.exec(`CREATE TABLE big (k TEXT PRIMARY KEY, v TEXT NOT NULL)`);
      d.write(() => {
        for (let i = 0; i < 2_000; i++) d.sql(`INSERT INTO big (k, v) VALUES (?, ?)`).run(`k${i}`, "v".repeat(200));
      });
      // One statement over many rows, in a transaction with earlier changes: it journals the
      // pages it changes (well past the 64 KiB that a file-backed journal keeps in memory).
      d.write(() => {
        d.sql(`UPDATE big SET v = v || 'x' WHERE k < 'k5'`).run();
        d.sql(`INSERT INTO big (k, v) SELECT k || '-copy', v FROM big`).run();
      });
      d.write(() => d.sql(`UPDATE big SET v = 'y' WHERE k = 'k1'`).run());
      expect(openTemporaryFiles()).toEqual([]);
    } finally {
      d.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("SqliteDatabase durability", () => {
  it("flushes every commit by default (synchronous=FULL), at checkpoints only when asked (NORMAL)", () => {
    const dir = mkdtempSync(join(tmpdir(), "twinning-sync-"));
    try {
      const level = (options?: { exclusiveLock: boolean; synchronous?: "full" | "normal" }) => {
        const d = new SqliteDatabase(join(dir, "db.sqlite"), 0, options);
        try {
          return d.db.pragma("synchronous", { simple: true });
        } finally {
          d.close();
        }
      };
      // SQLite's numbers: 1 NORMAL, 2 FULL.
      expect([level(), level({ exclusiveLock: false, synchronous: "full" }), level({ exclusiveLock: true, synchronous: "normal" })]).toEqual([2, 2, 1]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("SqliteDatabase readiness (/readyz)", () => {
  const insertLane = (d: SqliteDatabase, lane: string) =>
    d.write(() => d.sql(`INSERT INTO outbox (lane, kind, target, payload, state, attempts, next_attempt_at, created_at) VALUES (?, 'peer', 'x', ?, 'pending', 0, 0, 0)`).run(lane, "x".repeat(3_000)));

  it("a write the storage refuses (read-only, as a failed disk) makes ping throw until a write commits again; a refusal of ours does not", async () => {
    const d = new SqliteDatabase(":memory:", 0);
    try {
      d.ping();
      // A domain refusal rolls its transaction back: the storage is fine.
      expect(() => d.write(() => { throw new Error("refused"); })).toThrow("refused");
      expect(d.storageFailure).toBeUndefined();
      d.db.pragma("query_only = ON");
      expect(() => insertLane(d, "a")).toThrow();
      expect(d.storageFailure).toBe("SQLITE_READONLY");
      // Not ready while the probe's write fails too.
      expect(() => d.ping()).toThrow();
      expect(d.storageFailure).toBe("SQLITE_READONLY");
      d.db.pragma("query_only = OFF");
      // The failed probe is tried again after a second (see below).
      await new Promise((resolve) => setTimeout(resolve, 1_050));
      d.ping();
      expect(d.storageFailure).toBeUndefined();
    } finally {
      d.close();
    }
  });

  it("SQLITE_FULL (here a page cap; a full disk refuses the writes that need new space) counts as a storage failure, cleared by the next write that commits", () => {
    const dir = mkdtempSync(join(tmpdir(), "twinning-full-"));
    try {
      const file = join(dir, "node.db");
      const pages = (() => {
        const probe = new SqliteDatabase(file, 0);
        try {
          return Number(probe.db.pragma("page_count", { simple: true }));
        } finally {
          probe.close();
        }
      })();
      const d = new SqliteDatabase(file, 0, { exclusiveLock: false, maxPageCount: pages + 2 });
      try {
        let failure: unknown;
        for (let i = 0; i < 200 && failure === undefined; i++) {
          try {
            insertLane(d, `lane-${i}`);
          } catch (error) {
            failure = error;
          }
        }
        expect((failure as { code?: string }).code).toBe("SQLITE_FULL");
        expect(d.storageFailure).toBe("SQLITE_FULL");
        // A write that needs no new page still commits: the storage takes writes again (ping's
        // probe is one); a full disk is judged by its free space instead (next test).
        d.ping();
        expect(d.storageFailure).toBeUndefined();
      } finally {
        d.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("ping fails while the database's filesystem has less free space than asked, and passes with enough", () => {
    const dir = mkdtempSync(join(tmpdir(), "twinning-free-"));
    const d = new SqliteDatabase(join(dir, "node.db"), 0);
    try {
      expect(() => d.ping(Number.MAX_SAFE_INTEGER)).toThrow(/bytes free, fewer than/);
      d.ping(1);
      d.ping(0);
    } finally {
      d.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("a failing probe is tried again at most once a second", () => {
    const d = new SqliteDatabase(":memory:", 0);
    try {
      d.db.pragma("query_only = ON");
      expect(() => d.write(() => d.sql(`INSERT INTO outbox (lane, kind, target, payload, state, attempts, next_attempt_at, created_at) VALUES ('x', 'peer', 'x', '{}', 'pending', 0, 0, 0)`).run())).toThrow();
      expect(() => d.ping()).toThrow();
      // Writable again, but within the second the failed probe's answer stands.
      d.db.pragma("query_only = OFF");
      expect(() => d.ping()).toThrow();
      expect(d.storageFailure).toBe("SQLITE_READONLY");
    } finally {
      d.close();
    }
  });
});
