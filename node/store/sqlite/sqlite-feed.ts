import type { StoredNotification } from "../../domain/notification.ts";
import type { TwinRole } from "../../domain/twin.ts";
import type { SqliteDatabase } from "./sqlite-database.ts";
import { toNotification, type NotificationRow } from "./sqlite-rows.ts";

/**
 * A subscriber's notification feed, as its stream replays it (Last-Event-ID). Each notification
 * is one row of `notifications`, appended in id order in the commit of the change it reports.
 * Finding one subscriber's rows needs them by (address, role, id): that is `notification_feed`,
 * which is written in batches (indexFeed), not in every commit. An index entry written with each
 * notification put one more page into every commit for each subscriber notified, and was the
 * largest single cost of a toggle under load (measured: 12 µs of ~95); a batch writes each
 * subscriber's page once. The feed covers the ids up to its mark; the few rows after it are read
 * by scanning that tail in id order.
 */

const MARK = `(SELECT indexed_through FROM notification_feed_mark)`;

/** The highest notification id the feed covers. */
export const feedMark = (d: SqliteDatabase): number => (d.sql(`SELECT ${MARK} AS id`).get() as { id: number }).id;

/** One subscriber's notifications after afterId, in id order, at most limit: the feed's, then the tail's. */
export function notificationsAfter(d: SqliteDatabase, address: string, role: TwinRole, afterId: number, limit: number): StoredNotification[] {
  const covered = d
    .sql(
      `SELECT n.id, n.address, n.role, n.type, n.content FROM notification_feed f JOIN notifications n ON n.id = f.id
       WHERE f.address = ? AND f.role = ? AND f.id > ? ORDER BY f.id LIMIT CAST(? AS INTEGER)`,
    )
    .all(address, role, afterId, limit) as NotificationRow[];
  const rows =
    covered.length >= limit
      ? covered
      : covered.concat(
          d
            .sql(`SELECT id, address, role, type, content FROM notifications WHERE id > max(?, ${MARK}) AND address = ? AND role = ? ORDER BY id LIMIT CAST(? AS INTEGER)`)
            .all(afterId, address, role, limit - covered.length) as NotificationRow[],
        );
  return rows.map(toNotification);
}

/**
 * Brings up to maxRows notifications after the mark into the feed, in one transaction with the
 * new mark; returns how many were covered (0: the feed is up to date, and nothing was written).
 */
export function indexFeed(d: SqliteDatabase, maxRows: number): number {
  const next = (from: number) =>
    (d.sql(`SELECT MAX(id) AS id, COUNT(*) AS n FROM (SELECT id FROM notifications WHERE id > ? ORDER BY id LIMIT CAST(? AS INTEGER))`).get(from, maxRows) as {
      id: number | null;
      n: number;
    });
  if (next(feedMark(d)).id === null) return 0;
  return d.write(() => {
    const mark = feedMark(d);
    const { id: through, n } = next(mark);
    if (through === null) return 0;
    // In key order: the b-tree is written page by page, each subscriber's page once.
    d.sql(`INSERT INTO notification_feed (address, role, id) SELECT address, role, id FROM notifications WHERE id > ? AND id <= ? ORDER BY address, role, id`).run(mark, through);
    d.sql(`UPDATE notification_feed_mark SET indexed_through = ?`).run(through);
    return n;
  });
}

/**
 * Deletes up to `maxRows` of the oldest notifications older than the retention, with their feed
 * entries (in the caller's transaction); returns how many.
 */
export function pruneNotifications(d: SqliteDatabase, createdAtOrBeforeMs: number, maxRows: number): number {
  // Ids grow with time: the old rows are the ones before the first kept one, read in id order
  // (only the old rows are visited, no scan of the table).
  const kept = d.sql(`SELECT id FROM notifications WHERE created_at > ? ORDER BY id LIMIT 1`).get(createdAtOrBeforeMs) as { id: number } | undefined;
  const before = kept?.id ?? (d.sql(`SELECT COALESCE(MAX(id), 0) + 1 AS id FROM notifications`).get() as { id: number }).id;
  // At most maxRows of them: up to the maxRows-th old row (a walk of the ids, no more).
  const last = d.sql(`SELECT id FROM notifications WHERE id < ? ORDER BY id LIMIT 1 OFFSET ?`).get(before, maxRows - 1) as { id: number } | undefined;
  const end = last === undefined ? before : last.id + 1;
  // Each pruned row's feed entry is found by its key: the work grows with what is pruned, not with the feed.
  d.sql(`DELETE FROM notification_feed WHERE (address, role, id) IN (SELECT address, role, id FROM notifications WHERE id < ?)`).run(end);
  return d.sql(`DELETE FROM notifications WHERE id < ?`).run(end).changes;
}

/** Deletes every notification to one address, in either role, with its feed (in the caller's transaction). */
export function deleteNotificationsTo(d: SqliteDatabase, address: string): void {
  d.sql(`DELETE FROM notifications WHERE id IN (SELECT id FROM notification_feed WHERE address = ?)`).run(address);
  d.sql(`DELETE FROM notifications WHERE id > ${MARK} AND address = ?`).run(address);
  d.sql(`DELETE FROM notification_feed WHERE address = ?`).run(address);
}
