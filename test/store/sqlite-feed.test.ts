import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import fc from "fast-check";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { Twin } from "../../node/domain/twin.ts";
import { SqliteStore } from "../../node/store/sqlite/sqlite-store.ts";
import { activated, MINUTE, OP, P1, P2, S1, S2, SECOND, T0 } from "./store-fixtures.ts";

/**
 * The SQLite store's notification feed (sqlite-feed.ts): notifications are found by subscriber
 * through `notification_feed`, written in batches up to a mark, and after the mark by scanning
 * the tail. Whatever has been brought into the feed, a subscriber's notifications read the same.
 */

const dirs: string[] = [];
const stores: SqliteStore[] = [];
afterEach(async () => {
  for (const s of stores.splice(0)) await s.close();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function open(options: { feedIndexIntervalMs?: number; file?: string } = {}) {
  const file = options.file ?? join(dirs[dirs.push(mkdtempSync(join(tmpdir(), "twinning-feed-"))) - 1]!, "node.db");
  const store = new SqliteStore({ file, nowMs: T0, feedIndexIntervalMs: options.feedIndexIntervalMs ?? 0 });
  stores.push(store);
  return { store, file };
}

/** Reads the file directly (the store's connection does not hold the lock here). */
function query<T>(file: string, sql: string, ...params: unknown[]): T[] {
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    return db.prepare(sql).all(...params) as T[];
  } finally {
    db.close();
  }
}

/** The oracle: one subscriber's notifications straight from the table, by a full scan. */
const scanned = (file: string, address: string, role: string, afterId: number, limit: number) =>
  query<{ id: number }>(file, `SELECT id FROM notifications WHERE address = ? AND role = ? AND id > ? ORDER BY id LIMIT ?`, address, role, afterId, limit).map((r) => r.id);

const toggle = (store: SqliteStore, twin: Twin, i: number, changedBy: "primary" | "secondary" = "primary") =>
  store.changeTwinStatus({ twinId: twin.twinId, status: i % 2 === 0 ? "Off" : "On", changedBy, origin: OP, nowMs: T0 + (i + 1) * SECOND });

describe("SqliteStore notification feed", () => {
  it("HLF-CM-005 a subscriber's notifications read the same before, across and after the feed's mark", async () => {
    const { store, file } = open();
    const twins = [await activated(store, P1, S1), await activated(store, P2, S2)];
    let step = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.oneof(fc.record({ toggle: fc.nat(3) }), fc.record({ index: fc.integer({ min: 1, max: 5 }) })), { maxLength: 25 }),
        fc.nat(60),
        fc.integer({ min: 1, max: 12 }),
        async (ops, afterId, limit) => {
          for (const op of ops) {
            if ("index" in op) store.indexNotificationFeed(op.index);
            // Toggles by either side notify the other: both roles of both twins get a feed.
            else await toggle(store, twins[op.toggle % 2]!, step++, op.toggle < 2 ? "primary" : "secondary");
          }
          for (const [address, role] of [[S1, "secondary"], [S2, "secondary"], [P1, "primary"], [P2, "primary"]] as const) {
            const read = await store.notificationsAfter(address, role, afterId, limit);
            expect(read.map((n) => n.id)).toEqual(scanned(file, address, role, afterId, limit));
            expect(read.every((n) => n.recipientAddress === address && n.recipientRole === role)).toBe(true);
          }
        },
      ),
      { numRuns: 60 },
    );
    // The property ran across the mark: some notifications were brought into the feed, some not.
    const [mark] = query<{ mark: number }>(file, `SELECT indexed_through AS mark FROM notification_feed_mark`);
    expect(mark?.mark).toBeGreaterThan(0);
    expect(query(file, `SELECT 1 FROM notification_feed`).length).toBeGreaterThan(0);
  });

  it("indexNotificationFeed brings at most the batch into the feed, with the mark, and nothing when up to date", async () => {
    const { store, file } = open();
    const twin = await activated(store, P1, S1);
    for (let i = 0; i < 5; i++) await toggle(store, twin, i);
    const all = scanned(file, S1, "secondary", 0, 100);
    expect(all).toHaveLength(6); // the activation and five toggles
    expect(store.indexNotificationFeed(4)).toBe(4);
    expect(query<{ id: number }>(file, `SELECT id FROM notification_feed ORDER BY id`).map((r) => r.id)).toEqual(all.slice(0, 4));
    expect(query(file, `SELECT indexed_through AS mark FROM notification_feed_mark`)).toEqual([{ mark: all[3] }]);
    expect(store.indexNotificationFeed(4)).toBe(2);
    expect(store.indexNotificationFeed(4)).toBe(0);
    expect(query(file, `SELECT indexed_through AS mark FROM notification_feed_mark`)).toEqual([{ mark: all[5] }]);
    expect((await store.notificationsAfter(S1, "secondary", 0, 100)).map((n) => n.id)).toEqual(all);
  });

  it("the store brings new notifications into the feed by itself, every feedIndexIntervalMs", async () => {
    const { store, file } = open({ feedIndexIntervalMs: 5 });
    const twin = await activated(store, P1, S1);
    for (let i = 0; i < 3; i++) await toggle(store, twin, i);
    const all = scanned(file, S1, "secondary", 0, 100);
    await vi.waitFor(() => expect(query<{ id: number }>(file, `SELECT id FROM notification_feed ORDER BY id`).map((r) => r.id)).toEqual(all), { timeout: 5_000 });
    await toggle(store, twin, 3);
    const more = scanned(file, S1, "secondary", 0, 100);
    await vi.waitFor(() => expect(query(file, `SELECT indexed_through AS mark FROM notification_feed_mark`)).toEqual([{ mark: more.at(-1) }]), { timeout: 5_000 });
  });

  it("prune deletes old notifications with their feed entries, in the feed or after its mark, and keeps the rest", async () => {
    const { store, file } = open();
    const twin = await activated(store, P1, S1); // at T0
    for (let i = 0; i < 4; i++) await toggle(store, twin, i); // T0 + 1..4 s
    store.indexNotificationFeed(3); // the activation and two toggles in the feed, two after its mark
    await toggle(store, twin, 120); // T0 + 121 s
    const before = scanned(file, S1, "secondary", 0, 100);
    await store.prune({ nowMs: T0 + 3 * MINUTE, notificationRetentionMs: 2 * MINUTE, attemptWindowMs: MINUTE, deadLetterRetentionMs: MINUTE });
    expect(scanned(file, S1, "secondary", 0, 100)).toEqual(before.slice(-1));
    expect(query(file, `SELECT id FROM notification_feed`)).toEqual([]);
    expect((await store.notificationsAfter(S1, "secondary", 0, 100)).map((n) => n.id)).toEqual(before.slice(-1));
    // Everything old: the table and the feed end up empty.
    store.indexNotificationFeed();
    await store.prune({ nowMs: T0 + 10 * MINUTE, notificationRetentionMs: 2 * MINUTE, attemptWindowMs: MINUTE, deadLetterRetentionMs: MINUTE });
    expect(query(file, `SELECT id FROM notifications UNION ALL SELECT id FROM notification_feed`)).toEqual([]);
  });

  it("HLF-CM-005 deleting a subscriber deletes its notifications in the feed and after its mark, and no one else's", async () => {
    const { store, file } = open();
    for (const address of [S1, S2]) await store.putSubscriber({ address, twinningEnabled: true, credentialHash: "scrypt:a", updatedAtMs: T0 }, OP);
    await activated(store, P1, S1);
    const other = await activated(store, P2, S2);
    await toggle(store, other, 0);
    store.indexNotificationFeed();
    await toggle(store, other, 1);
    const kept = scanned(file, S2, "secondary", 0, 100);
    expect(kept).toHaveLength(3);
    expect(await store.deleteSubscriber({ address: S1, ownOperatorId: OP, nowMs: T0 + MINUTE })).toMatchObject({ deleted: true });
    expect(scanned(file, S1, "secondary", 0, 100)).toEqual([]);
    expect(query(file, `SELECT id FROM notification_feed WHERE address = ?`, S1)).toEqual([]);
    expect((await store.notificationsAfter(S2, "secondary", 0, 100)).map((n) => n.id)).toEqual(kept);
  });

  it("migration 10 brings a version-9 file's notifications into the feed: none is lost", async () => {
    const { store, file } = open();
    const twin = await activated(store, P1, S1);
    for (let i = 0; i < 3; i++) await toggle(store, twin, i);
    const before = await store.notificationsAfter(S1, "secondary", 0, 100);
    await stores.pop()!.close();
    // The file as version 9 left it: the per-subscriber index on the notifications, no feed.
    const db = new Database(file);
    db.exec(`DROP TABLE notification_feed; DROP TABLE notification_feed_mark;
      CREATE INDEX notifications_address ON notifications (address, role, id);
      DELETE FROM schema_migrations WHERE version = 10;`);
    db.close();
    const upgraded = open({ file }).store;
    expect(await upgraded.notificationsAfter(S1, "secondary", 0, 100)).toEqual(before);
    expect(query<{ id: number }>(file, `SELECT id FROM notification_feed ORDER BY id`).map((r) => r.id)).toEqual(before.map((n) => n.id));
    expect(query(file, `SELECT name FROM sqlite_master WHERE name = 'notifications_address'`)).toEqual([]);
    expect(upgraded.indexNotificationFeed()).toBe(0);
  });
});
