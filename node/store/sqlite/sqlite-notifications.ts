import type { ChangeEffects, PeerMessageDraft } from "../../domain/change-effects.ts";
import { notificationBody, type NotificationDraft, type StoredNotification } from "../../domain/notification.ts";
import type { TwinRole } from "../../domain/twin.ts";
import { TwinningError } from "../../errors/twinning-error.ts";
import type { CreateSubscriptionInput, OutboxEntry, SubscriptionRecord } from "../store-port.ts";
import { findCorrelator, recordCorrelator } from "./sqlite-correlators.ts";
import type { SqliteDatabase } from "./sqlite-database.ts";
import { toOutboxEntry, toSubscription, type OutboxRow, type SubscriptionRow } from "./sqlite-rows.ts";

const ACTIVE_SUBSCRIPTIONS = `SELECT * FROM subscriptions WHERE address = ? AND role = ? AND (expires_at IS NULL OR expires_at > ?) ORDER BY created_at, subscription_id`;

/**
 * Records notifications in the same transaction as the change they report: one feed row per
 * notification (replayable by SSE clients) and one outbox row per active callback
 * subscription, so nothing is sent before the commit and nothing committed is lost.
 */
export function recordNotifications(d: SqliteDatabase, drafts: readonly NotificationDraft[], nowMs: number): { stored: StoredNotification[]; queued: number } {
  const stored: StoredNotification[] = [];
  let queued = 0;
  for (const draft of drafts) {
    const info = d
      .sql(`INSERT INTO notifications (address, role, type, content, created_at) VALUES (?, ?, ?, ?, ?)`)
      .run(draft.recipientAddress, draft.recipientRole, draft.type, JSON.stringify(draft.content), nowMs);
    const notification = { ...draft, id: Number(info.lastInsertRowid) };
    stored.push(notification);
    d.recorded(notification);
    const subscriptions = d.sql(ACTIVE_SUBSCRIPTIONS).all(draft.recipientAddress, draft.recipientRole, nowMs) as SubscriptionRow[];
    for (const s of subscriptions) {
      d.sql(
        `INSERT INTO outbox (lane, kind, target, payload, state, attempts, next_attempt_at, created_at) VALUES (?, 'callback', ?, ?, 'pending', 0, ?, ?)`,
      ).run(`callback:${s.subscription_id}`, s.notify_url, JSON.stringify(notificationBody(draft, s.callback_data ?? undefined)), nowMs, nowMs);
      queued += 1;
    }
  }
  return { stored, queued };
}

/** The outbox lane of a peer operator's messages; its other lanes are `peer:<operatorId>:<subLane>`. */
export const peerLane = (operatorId: string, subLane?: string): string => (subLane === undefined ? `peer:${operatorId}` : `peer:${operatorId}:${subLane}`);

/**
 * Pending messages for a peer in all its lanes (compensations have their own), counted up to
 * limit: its main lane, then the range of its sub-lanes (`peer:<op>:` up to `peer:<op>;`, ';'
 * being the character after ':'), both on the pending-lane index, so the outbox needs no index
 * by peer (one page less in every commit that queues or completes a message).
 */
export function countQueuedForPeer(d: SqliteDatabase, operatorId: string, limit: number): number {
  const lane = peerLane(operatorId);
  return (
    d
      .sql(
        `SELECT MIN(CAST(@limit AS INTEGER),
           (SELECT COUNT(*) FROM (SELECT 1 FROM outbox WHERE state = 'pending' AND lane = @lane LIMIT CAST(@limit AS INTEGER))) +
           (SELECT COUNT(*) FROM (SELECT 1 FROM outbox WHERE state = 'pending' AND lane > @subLanesAfter AND lane < @subLanesBefore LIMIT CAST(@limit AS INTEGER)))) AS n`,
      )
      .get({ lane, subLanesAfter: `${lane}:`, subLanesBefore: `${lane};`, limit }) as { n: number }
  ).n;
}

/** Federation messages go to the outbox, one lane per peer operator (order of effect per peer); returns the entries written. */
export function recordPeerMessages(d: SqliteDatabase, messages: readonly PeerMessageDraft[], nowMs: number, dueAtMs = nowMs): OutboxEntry[] {
  return messages.map((m) => {
    const entry = { lane: peerLane(m.operatorId, m.subLane), kind: "peer" as const, target: m.operatorId, payload: JSON.stringify({ method: m.method, path: m.path, msgId: m.msgId, body: m.body }) };
    const info = d
      .sql(`INSERT INTO outbox (lane, kind, target, payload, state, attempts, next_attempt_at, created_at) VALUES (?, 'peer', ?, ?, 'pending', 0, ?, ?)`)
      .run(entry.lane, entry.target, entry.payload, dueAtMs, nowMs);
    return { ...entry, id: Number(info.lastInsertRowid), attempts: 0, createdAtMs: nowMs, lastError: undefined };
  });
}

/** Whether an entry is first among its lane's pending ones. */
const headsItsLane = (d: SqliteDatabase, e: OutboxEntry): boolean =>
  d.sql(`SELECT 1 FROM outbox WHERE lane = ? AND state = 'pending' AND id < ? LIMIT 1`).get(e.lane, e.id) === undefined;

/**
 * Records everything a change causes, in the caller's transaction; `queued` says whether the
 * outbox got entries (only then is the delivery worker worth waking); `laneHeads`, the peer
 * messages that are first in their lane, which the worker may start at once (see OutboxWorker.wake).
 */
export function recordEffects(d: SqliteDatabase, effects: ChangeEffects, nowMs: number): { notifications: StoredNotification[]; queued: boolean; laneHeads: OutboxEntry[] } {
  const written = recordPeerMessages(d, effects.peerMessages, nowMs);
  const laneHeads = written.filter((e) => headsItsLane(d, e));
  const { stored, queued } = recordNotifications(d, effects.notifications, nowMs);
  return { notifications: stored, queued: written.length + queued > 0, laneHeads };
}

export function createSubscription(d: SqliteDatabase, input: CreateSubscriptionInput): { subscription: SubscriptionRecord; replayed: boolean } {
  return d.write(() => {
    const s = input.subscription;
    const replay = findCorrelator(d, input.correlator);
    if (replay) {
      const row = d
        .sql(`SELECT * FROM subscriptions WHERE subscription_id = ? AND (expires_at IS NULL OR expires_at > ?)`)
        .get(replay.resourceId, s.createdAtMs) as SubscriptionRow | undefined;
      if (row) return { subscription: toSubscription(row), replayed: true };
    }
    const count = (d.sql(`SELECT COUNT(*) AS n FROM (${ACTIVE_SUBSCRIPTIONS})`).get(s.address, s.role, s.createdAtMs) as { n: number }).n;
    if (count >= input.maxPerSubscriber) {
      throw new TwinningError("policy_error", { variables: [`at most ${input.maxPerSubscriber} subscriptions per subscriber`] });
    }
    d.sql(
      `INSERT INTO subscriptions (subscription_id, address, role, notify_url, callback_data, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
    ).run(s.subscriptionId, s.address, s.role, s.notifyUrl, s.callbackData ?? null, s.createdAtMs, s.expiresAtMs ?? null);
    recordCorrelator(d, input.correlator, s.subscriptionId, s.createdAtMs);
    return { subscription: s, replayed: false };
  });
}

export function listSubscriptions(d: SqliteDatabase, address: string, role: TwinRole, nowMs: number): SubscriptionRecord[] {
  return (d.sql(ACTIVE_SUBSCRIPTIONS).all(address, role, nowMs) as SubscriptionRow[]).map(toSubscription);
}

/**
 * The head (oldest pending entry) of each lane, two ways over `outbox_pending_lane (lane, id)`:
 * - walked: one index seek per lane (a recursive walk from lane to lane), whatever the lanes
 *   hold. A peer's lane with 100,000 messages queued through an outage costs ~5 µs, where a scan
 *   of the index cost ~5 ms, on every round of the worker (after each commit's wake);
 * - scanned: every pending entry, grouped by lane. Cheaper when the lanes hold one entry or so
 *   each (a burst of callbacks to many subscribers): ~0.2 µs an entry against ~0.7 µs a lane.
 * The walk stops after LANE_WALK_MAX lanes; past that, the scan answers.
 */
const LANE_WALK_MAX = 256;
/** A callback lane's subscriber (`callback:<subscriptionId>`, through the subscriptions' key), so one subscriber's lanes can be held to a share of the slots. */
const OWNER = `s.address AS owner`;
const OWNER_JOIN = `LEFT JOIN subscriptions s ON o.kind = 'callback' AND s.subscription_id = substr(o.lane, ${"callback:".length + 1})`;
const WALKED_HEADS = `WITH RECURSIVE lanes(lane) AS (
    SELECT (SELECT lane FROM outbox WHERE state = 'pending' ORDER BY lane LIMIT 1)
    UNION ALL
    SELECT (SELECT lane FROM outbox WHERE state = 'pending' AND lane > lanes.lane ORDER BY lane LIMIT 1) FROM lanes WHERE lanes.lane IS NOT NULL
    LIMIT ${LANE_WALK_MAX + 1}
  )
  SELECT o.*, ${OWNER} FROM lanes JOIN outbox o ON o.id = (SELECT MIN(id) FROM outbox WHERE state = 'pending' AND lane = lanes.lane) ${OWNER_JOIN}`;
const SCANNED_HEADS = `SELECT o.* FROM outbox o JOIN (SELECT MIN(id) AS id FROM outbox WHERE state = 'pending' GROUP BY lane) h ON o.id = h.id`;
/**
 * The same scan over one kind's lanes only (`peer:…` or `callback:…`, a range of the index), so
 * asking for both kinds reads each entry once; at most @perOwner heads of one subscriber.
 */
const SCANNED_DUE_HEADS_OF_KIND = `SELECT * FROM (
    SELECT o.*, ${OWNER}, ROW_NUMBER() OVER (PARTITION BY COALESCE(s.address, o.lane) ORDER BY o.next_attempt_at, o.id) AS nth
    FROM outbox o JOIN (SELECT MIN(id) AS id FROM outbox WHERE state = 'pending' AND lane > @from AND lane < @to GROUP BY lane) h ON o.id = h.id ${OWNER_JOIN}
    WHERE o.next_attempt_at <= @nowMs
  ) WHERE nth <= @perOwner ORDER BY next_attempt_at, id LIMIT CAST(@n AS INTEGER)`;
/** The lanes of each kind: names from `<kind>:` up to `<kind>;` (';' is the character after ':'). */
const LANES_OF: Record<OutboxEntry["kind"], { from: string; to: string }> = { peer: { from: "peer:", to: "peer;" }, callback: { from: "callback:", to: "callback;" } };

/** Every lane's head, walked; undefined when there are more lanes than the walk visits. */
function walkedHeads(d: SqliteDatabase): OutboxRow[] | undefined {
  const heads = d.sql(WALKED_HEADS).all() as OutboxRow[];
  return heads.length > LANE_WALK_MAX ? undefined : heads;
}

const byDueThenId = (a: OutboxRow, b: OutboxRow) => a.next_attempt_at - b.next_attempt_at || a.id - b.id;

/** Due lane heads, at most `limit` of each kind (peer, callback) and `perOwner` of one subscriber, each kind by due time then id. */
export function dueOutboxHeads(d: SqliteDatabase, nowMs: number, limit: number, perOwner: number): OutboxEntry[] {
  const heads = walkedHeads(d);
  const n = Math.max(0, limit);
  if (heads) {
    const due = heads.filter((h) => h.next_attempt_at <= nowMs).sort(byDueThenId);
    const ofOwner = new Map<string, number>();
    const withinShare = (h: OutboxRow) => h.owner == null || (ofOwner.set(h.owner, (ofOwner.get(h.owner) ?? 0) + 1).get(h.owner)! <= perOwner);
    return [...due.filter((h) => h.kind === "peer").slice(0, n), ...due.filter((h) => h.kind !== "peer" && withinShare(h)).slice(0, n)].map(toOutboxEntry);
  }
  const scanned = (kind: OutboxEntry["kind"]) =>
    d.sql(SCANNED_DUE_HEADS_OF_KIND).all({ ...LANES_OF[kind], nowMs, n, perOwner: Number.isFinite(perOwner) ? perOwner : Number.MAX_SAFE_INTEGER }) as OutboxRow[];
  return [...scanned("peer"), ...scanned("callback")].map(toOutboxEntry);
}

export function nextOutboxDueAtMs(d: SqliteDatabase): number | undefined {
  const heads = walkedHeads(d);
  if (heads) return heads.length === 0 ? undefined : Math.min(...heads.map((h) => h.next_attempt_at));
  const row = d.sql(`SELECT MIN(o.next_attempt_at) AS due FROM (${SCANNED_HEADS}) o`).get() as { due: number | null };
  return row.due ?? undefined;
}

export function failOutboxEntry(
  d: SqliteDatabase,
  input: { id: number; attempts: number; nextAttemptAtMs: number | undefined; lastError: string; nowMs: number },
): void {
  if (input.nextAttemptAtMs === undefined) {
    // A dead letter's next_attempt_at is when it died: its retention runs from then (see prune).
    d.sql(`UPDATE outbox SET state = 'dead', attempts = ?, next_attempt_at = ?, last_error = ? WHERE id = ?`).run(input.attempts, input.nowMs, input.lastError, input.id);
  } else {
    d.sql(`UPDATE outbox SET attempts = ?, next_attempt_at = ?, last_error = ? WHERE id = ?`).run(input.attempts, input.nextAttemptAtMs, input.lastError, input.id);
  }
}
