import type { StoredNotification } from "../../domain/notification.ts";
import type { PrimaryServiceEndpoints, Twin, TwinRef, TwinRole } from "../../domain/twin.ts";
import type {
  ActivationCodeRecord,
  ChangeResult,
  ChangeStatusInput,
  CorrelatorInput,
  CorrelatorReplay,
  CreateSubscriptionInput,
  FederatedTwinResult,
  InsertFederatedTwinInput,
  RemoteDeactivationInput,
  RemoteStatusInput,
  DeactivateInput,
  DeleteSubscriberInput,
  IssueCodeInput,
  IssueCodeResult,
  OutboxEntry,
  PruneInput,
  RedeemCodeInput,
  RedeemCodeResult,
  SubscriberChange,
  SubscriberRecord,
  SubscriptionRecord,
  TwinningStore,
} from "../store-port.ts";
import { TwinningError } from "../../errors/twinning-error.ts";
import { GroupCommit } from "./group-commit.ts";
import { ReadCache } from "./read-cache.ts";
import { SqliteDatabase } from "./sqlite-database.ts";
import * as notifications from "./sqlite-notifications.ts";
import * as feed from "./sqlite-feed.ts";
import { toCode, toOutboxEntry, toSubscriber, toSubscription, toTwin, type CodeRow, type OutboxRow, type SubscriberRow, type SubscriptionRow, type TwinRow } from "./sqlite-rows.ts";
import * as subscribers from "./sqlite-subscribers.ts";
import * as twins from "./sqlite-twins.ts";
import * as federation from "./sqlite-federation.ts";
import { findCorrelator } from "./sqlite-correlators.ts";
import type { PeerMessageDraft } from "../../domain/change-effects.ts";

/** Notifications are brought into the feed about ten times a second, at most this many per transaction. */
const FEED_INDEX_INTERVAL_MS = 100;
const FEED_BATCH_ROWS = 4_096;
/** Notifications pruned per transaction (~15 ms here). */
const PRUNE_BATCH_ROWS = 5_000;

const isDue = (row: OutboxRow, nowMs: number) => row.next_attempt_at <= nowMs;

/**
 * The storage port on better-sqlite3 (WAL, versioned migrations, prepared statements, one
 * IMMEDIATE transaction per domain operation). Calls are synchronous underneath and resolve
 * at once; the async signature is the port's, so PostgreSQL can implement it unchanged.
 */
/** A peer's cancellation of a twin not known yet is remembered at least this long. */
const MIN_CANCELLATION_RETENTION_MS = 3_600_000;

export class SqliteStore implements TwinningStore {
  readonly #d: SqliteDatabase;
  readonly #minFreeDiskBytes: number;
  /** The request path's reads between writes, per table; only with the exclusive lock (see ReadCache). */
  readonly #caches: { subscribers: ReadCache; twins: ReadCache } | undefined;
  readonly #group: GroupCommit;
  /** Replay-cache entries answered but not yet written (see rememberJti). */
  readonly #unwrittenJtis = new Set<string>();
  readonly #notificationListeners = new Set<(notifications: readonly StoredNotification[]) => void>();
  readonly #feedTimer: NodeJS.Timeout | undefined;
  /** The notifications table's write generation the feed was last brought up to date at. */
  #feedSeen: number | undefined;

  /**
   * `exclusiveLock`: hold the file's lock for the store's lifetime (see SqliteDatabase), which
   * also makes this connection the only writer, so reads are cached between writes.
   */
  constructor(options: {
    file: string;
    nowMs?: number;
    exclusiveLock?: boolean;
    synchronous?: "full" | "normal";
    readCacheEntries?: number;
    /** How often new notifications are brought into the feed (sqlite-feed.ts); 0: only when indexNotificationFeed is called. */
    feedIndexIntervalMs?: number;
    /**
     * Told when background upkeep (the feed's batches) fails, reads staying correct and the tail
     * growing, or when a listener of committed notifications throws (the commit stands).
     */
    onUpkeepError?: (error: unknown) => void;
    /** ping (readiness) fails while the database's filesystem has less free than this; 0: not checked. */
    minFreeDiskBytes?: number;
  }) {
    this.#minFreeDiskBytes = options.minFreeDiskBytes ?? 0;
    // Checked before the file is opened (and its lock taken), so a bad option leaves nothing open.
    const every = options.feedIndexIntervalMs ?? FEED_INDEX_INTERVAL_MS;
    if (!(Number.isInteger(every) && every >= 0)) throw new Error("feedIndexIntervalMs must be a whole number of milliseconds, 0 or more");
    this.#d = new SqliteDatabase(options.file, options.nowMs ?? Date.now(), { exclusiveLock: options.exclusiveLock ?? false, synchronous: options.synchronous ?? "full" });
    const onError = options.onUpkeepError ?? (() => {});
    if (every > 0) {
      this.#feedTimer = setInterval(() => this.#indexFeedWhileBehind(onError), every);
      this.#feedTimer.unref();
    }
    const entries = options.readCacheEntries ?? 10_000;
    this.#group = new GroupCommit(this.#d);
    this.#d.beforeWrite = () => this.#group.flush();
    this.#d.onNotificationsCommitted = (notifications) => {
      for (const listener of this.#notificationListeners) {
        try {
          listener(notifications);
        } catch (error) {
          // A listener's failure is its own (the hub's writes are guarded); the commit stands.
          onError(error);
        }
      }
    };
    const cacheOf = (table: string, keepMisses: boolean) =>
      new ReadCache({ generation: () => this.#d.generationOf(table), bypass: () => this.#d.inTransaction, maxEntries: entries, keepMisses });
    // Subscriber misses are not kept: /oauth/token looks up any client id it is sent, before the credential is checked.
    this.#caches = options.exclusiveLock && entries > 0 ? { subscribers: cacheOf("subscribers", false), twins: cacheOf("twins", true) } : undefined;
  }

  /**
   * Brings up to maxRows new notifications into the subscribers' feeds in one transaction;
   * returns how many. The store does this by itself every feedIndexIntervalMs; reads never
   * depend on it (what is not in the feed yet is read from the tail).
   */
  indexNotificationFeed(maxRows = FEED_BATCH_ROWS): number {
    return feed.indexFeed(this.#d, maxRows);
  }

  /** Batches until the feed is up to date, yielding to I/O between them; nothing is read while no notification was written. */
  #indexFeedWhileBehind(onError: (error: unknown) => void): void {
    const written = this.#d.generationOf("notifications");
    if (written === this.#feedSeen || !this.#d.db.open) return;
    try {
      if (this.indexNotificationFeed() === FEED_BATCH_ROWS) setImmediate(() => this.#indexFeedWhileBehind(onError));
      else this.#feedSeen = written;
    } catch (error) {
      onError(error);
    }
  }

  /** Only while this connection is the file's only writer (the read caches' condition). */
  readVersion(): number | undefined {
    return this.#caches ? this.#d.generationOf("subscribers") + this.#d.generationOf("twins") : undefined;
  }

  #cached<T>(table: "subscribers" | "twins", key: string, load: () => T): T {
    const cache = this.#caches?.[table];
    return cache ? cache.get(key, load) : load();
  }

  async putSubscriber(r: SubscriberRecord, ownOperatorId: string): Promise<SubscriberChange & { created: boolean }> {
    return subscribers.putSubscriber(this.#d, r, ownOperatorId);
  }

  async getSubscriber(address: string): Promise<SubscriberRecord | undefined> {
    return this.#cached("subscribers", address, () => {
      const row = this.#d.sql(`SELECT * FROM subscribers WHERE address = ?`).get(address) as SubscriberRow | undefined;
      return row ? toSubscriber(row) : undefined;
    });
  }

  async deleteSubscriber(input: DeleteSubscriberInput): Promise<SubscriberChange & { deleted: boolean }> {
    return subscribers.deleteSubscriber(this.#d, input);
  }

  async issueActivationCode(input: IssueCodeInput): Promise<IssueCodeResult> {
    return twins.issueActivationCode(this.#d, input);
  }

  async getActivationCode(secondaryAddress: string, codeId: string, nowMs: number): Promise<ActivationCodeRecord | undefined> {
    const row = this.#d.sql(`SELECT * FROM activation_codes WHERE code_id = ? AND secondary_address = ?`).get(codeId, secondaryAddress) as CodeRow | undefined;
    return row ? toCode(row, nowMs) : undefined;
  }

  async redeemActivationCode(input: RedeemCodeInput): Promise<RedeemCodeResult> {
    return twins.redeemActivationCode(this.#d, input);
  }

  async listTwinsOfPrimary(primaryAddress: string): Promise<Twin[]> {
    return this.#cached("twins", `p${primaryAddress}`, () => twins.listTwinsOfPrimary(this.#d, primaryAddress));
  }

  async listActiveTwins(limit: number, afterTwinId?: string): Promise<Twin[]> {
    // From the cursor's place in (created_at, twin_id): an index range (twins_active_created).
    const after = afterTwinId === undefined ? undefined : (this.#d.sql(`SELECT created_at FROM twins WHERE twin_id = ?`).get(afterTwinId) as { created_at: number } | undefined);
    // A cursor that names no twin is a mistake, not the end of the list.
    if (afterTwinId !== undefined && !after) throw new TwinningError("invalid_input", { variables: ["after"], detail: "the cursor names no twin" });
    const rows = after
      ? this.#d.sql(`SELECT * FROM twins WHERE active = 1 AND (created_at, twin_id) > (?, ?) ORDER BY created_at, twin_id LIMIT CAST(? AS INTEGER)`).all(after.created_at, afterTwinId, limit)
      : this.#d.sql(`SELECT * FROM twins WHERE active = 1 ORDER BY created_at, twin_id LIMIT CAST(? AS INTEGER)`).all(limit);
    return (rows as TwinRow[]).map(toTwin);
  }

  async findTwinOfPrimary(primaryAddress: string, ref: TwinRef): Promise<Twin | undefined> {
    return this.#cached("twins", `r${JSON.stringify([primaryAddress, ref])}`, () => twins.findTwinOfPrimary(this.#d, primaryAddress, ref));
  }

  async findTwinOfSecondary(secondaryAddress: string): Promise<Twin | undefined> {
    return this.#cached("twins", `2${secondaryAddress}`, () => twins.findTwinOfSecondary(this.#d, secondaryAddress));
  }

  async getTwin(twinId: string): Promise<Twin | undefined> {
    return this.#cached("twins", `t${twinId}`, () => twins.getTwin(this.#d, twinId));
  }

  async renameTwin(input: { twinId: string; name: string; nowMs: number }): Promise<Twin> {
    return twins.renameTwin(this.#d, input);
  }

  async changeTwinStatus(input: ChangeStatusInput): Promise<ChangeResult> {
    // The hot write (toggles): concurrent ones share a transaction (see GroupCommit).
    return this.#group.run(() => twins.changeTwinStatus(this.#d, input));
  }

  async deactivateTwin(input: DeactivateInput): Promise<ChangeResult> {
    return twins.deactivateTwin(this.#d, input);
  }

  async assertCanTwinAsPrimary(primaryAddress: string, maxTwinsPerPrimary: number): Promise<void> {
    twins.assertCanBePrimary(this.#d, primaryAddress, maxTwinsPerPrimary);
  }

  async assertCanTwinAsSecondary(secondaryAddress: string): Promise<void> {
    twins.assertCanBeSecondary(this.#d, secondaryAddress);
  }

  async lookupCorrelator(correlator: CorrelatorInput): Promise<CorrelatorReplay | undefined> {
    return findCorrelator(this.#d, correlator);
  }

  async insertFederatedTwin(input: InsertFederatedTwinInput): Promise<FederatedTwinResult> {
    return federation.insertFederatedTwin(this.#d, input);
  }

  async primaryServiceEndpoints(twinId: string): Promise<PrimaryServiceEndpoints | undefined> {
    return twins.primaryServiceEndpoints(this.#d, twinId);
  }

  async applyRemoteStatus(input: RemoteStatusInput): Promise<ChangeResult> {
    // A peer's toggle shares the group's transaction, as a device's does, and with it the
    // replay-cache row of the message that carried it (rememberJti).
    return this.#group.run(() => federation.applyRemoteStatus(this.#d, input));
  }

  async applyRemoteDeactivation(input: RemoteDeactivationInput): Promise<ChangeResult | undefined> {
    return this.#group.run(() => federation.applyRemoteDeactivation(this.#d, input));
  }

  async countQueuedForPeer(operatorId: string, limit: number): Promise<number> {
    return notifications.countQueuedForPeer(this.#d, operatorId, limit);
  }

  async enqueuePeerMessages(messages: readonly PeerMessageDraft[], nowMs: number, dueAtMs?: number): Promise<number[]> {
    return this.#d.write(() => notifications.recordPeerMessages(this.#d, messages, nowMs, dueAtMs).map((e) => e.id));
  }

  /**
   * Answered at once; the row is written in the group commit now queued, so it commits with
   * the message's own effect (one commit, one flush) or before it: any other write commits the
   * group first. Until then the jti is held here, so a replay arriving meanwhile is refused too.
   */
  async rememberJti(jti: string, expiresAtMs: number, _nowMs: number): Promise<boolean> {
    // Checked before the answer: a row that could not be written would leave the jti free.
    if (!Number.isSafeInteger(expiresAtMs)) throw new RangeError("a jti's expiry is whole milliseconds");
    const key = `${expiresAtMs} ${jti}`;
    if (this.#unwrittenJtis.has(key) || federation.isKnownJti(this.#d, jti, expiresAtMs)) return false;
    this.#unwrittenJtis.add(key);
    const written = () => this.#unwrittenJtis.delete(key);
    // A failed group fails the message's effect with it; the jti is then free again, as nothing of the message stands.
    this.#group.run(() => federation.rememberJti(this.#d, jti, expiresAtMs)).then(written, written);
    return true;
  }

  async createSubscription(input: CreateSubscriptionInput): Promise<{ subscription: SubscriptionRecord; replayed: boolean }> {
    return notifications.createSubscription(this.#d, input);
  }

  async listSubscriptions(address: string, role: TwinRole, nowMs: number): Promise<SubscriptionRecord[]> {
    return notifications.listSubscriptions(this.#d, address, role, nowMs);
  }

  async getSubscription(address: string, role: TwinRole, id: string, nowMs: number): Promise<SubscriptionRecord | undefined> {
    const row = this.#d
      .sql(`SELECT * FROM subscriptions WHERE subscription_id = ? AND address = ? AND role = ? AND (expires_at IS NULL OR expires_at > ?)`)
      .get(id, address, role, nowMs) as SubscriptionRow | undefined;
    return row ? toSubscription(row) : undefined;
  }

  async deleteSubscription(address: string, role: TwinRole, id: string, nowMs: number): Promise<boolean> {
    return this.#d.write(() => {
      const gone = this.#d
        .sql(`DELETE FROM subscriptions WHERE subscription_id = ? AND address = ? AND role = ? RETURNING expires_at`)
        .get(id, address, role) as { expires_at: number | null } | undefined;
      if (!gone) return false;
      // Unsubscribed: what was queued for that callback is not sent any more.
      this.#d.sql(`DELETE FROM outbox WHERE lane = ? AND state = 'pending'`).run(`callback:${id}`);
      // An expired one, not pruned yet, is removed too, but it was already gone for the subscriber (GET answers 404).
      return gone.expires_at === null || gone.expires_at > nowMs;
    });
  }

  async notificationsAfter(address: string, role: TwinRole, afterId: number, limit: number): Promise<StoredNotification[]> {
    return feed.notificationsAfter(this.#d, address, role, afterId, limit);
  }

  async latestNotificationId(): Promise<number> {
    // AUTOINCREMENT's record, not MAX(id): pruning may have removed the newest rows.
    return (this.#d.sql(`SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'notifications'), 0) AS id`).get() as { id: number }).id;
  }

  onNotificationsCommitted(listener: (notifications: readonly StoredNotification[]) => void): () => void {
    this.#notificationListeners.add(listener);
    return () => void this.#notificationListeners.delete(listener);
  }

  async dueOutboxHeads(nowMs: number, limit: number, perOwner = Number.POSITIVE_INFINITY): Promise<OutboxEntry[]> {
    return notifications.dueOutboxHeads(this.#d, nowMs, limit, perOwner);
  }

  async nextOutboxEntriesInLane(lane: string, afterId: number, nowMs: number, limit: number): Promise<OutboxEntry[]> {
    const rows = this.#d.sql(`SELECT * FROM outbox WHERE lane = ? AND state = 'pending' AND id > ? ORDER BY id LIMIT CAST(? AS INTEGER)`).all(lane, afterId, limit) as OutboxRow[];
    const due = rows.findIndex((row) => !isDue(row, nowMs));
    return (due < 0 ? rows : rows.slice(0, due)).map(toOutboxEntry);
  }

  async completeOutboxEntries(ids: readonly number[]): Promise<void> {
    // In the group commit: a peer's answer often arrives with the next toggle, and both then
    // share one commit.
    await this.#group.run(() => {
      for (const id of ids) this.#d.sql(`DELETE FROM outbox WHERE id = ?`).run(id);
    });
  }

  async nextOutboxDueAtMs(): Promise<number | undefined> {
    return notifications.nextOutboxDueAtMs(this.#d);
  }

  async completeOutboxEntry(id: number): Promise<void> {
    return this.completeOutboxEntries([id]);
  }

  async failOutboxEntry(input: { id: number; attempts: number; nextAttemptAtMs: number | undefined; lastError: string; nowMs: number }): Promise<void> {
    notifications.failOutboxEntry(this.#d, input);
  }

  async outboxStats(): Promise<{ pending: number; dead: number }> {
    const row = this.#d
      // Each count reads only its own partial index, not the whole outbox (metrics scrapes call it).
      .sql(`SELECT (SELECT COUNT(*) FROM outbox WHERE state = 'pending') AS pending, (SELECT COUNT(*) FROM outbox WHERE state = 'dead') AS dead`)
      .get() as { pending: number; dead: number };
    return row;
  }

  async listDeadLetters(limit: number): Promise<OutboxEntry[]> {
    // In the order of the dead letters' own index (ORDER BY id alone scanned the whole outbox).
    return (this.#d.sql(`SELECT * FROM outbox WHERE state = 'dead' ORDER BY created_at DESC, id DESC LIMIT CAST(? AS INTEGER)`).all(limit) as OutboxRow[]).map(toOutboxEntry);
  }

  async prune(input: PruneInput): Promise<void> {
    const old = input.nowMs - input.notificationRetentionMs;
    // The notifications first, in batches of their own, yielding between them: a backlog (after
    // downtime, or a shorter retention) does not hold the event loop or grow the WAL in one go.
    while (this.#d.db.open && this.#d.write(() => feed.pruneNotifications(this.#d, old, PRUNE_BATCH_ROWS)) === PRUNE_BATCH_ROWS) {
      await new Promise((resolve) => setImmediate(resolve));
    }
    if (!this.#d.db.open) return;
    this.#d.write(() => {
      this.#d.sql(`DELETE FROM failed_attempts WHERE at <= ?`).run(input.nowMs - input.attemptWindowMs);
      this.#d.sql(`DELETE FROM activation_codes WHERE expires_at <= ?`).run(old);
      this.#d.sql(`DELETE FROM client_correlators WHERE created_at <= ?`).run(old);
      this.#d.sql(`DELETE FROM federation_jti WHERE expires_at <= ?`).run(input.nowMs);
      // From when it died (a peer message may die days after its creation, when the peer is back
      // and refuses it): the operator has the whole retention to look at it.
      this.#d.sql(`DELETE FROM outbox WHERE state = 'dead' AND next_attempt_at <= ?`).run(input.nowMs - input.deadLetterRetentionMs);
      // A cancellation waits for an activation message that overtook it; none lives this long
      // (at least an hour, whatever the notifications' retention).
      this.#d.sql(`DELETE FROM cancelled_twins WHERE cancelled_at <= ?`).run(Math.min(old, input.nowMs - MIN_CANCELLATION_RETENTION_MS));
      const expired = this.#d.sql(`SELECT subscription_id FROM subscriptions WHERE expires_at IS NOT NULL AND expires_at <= ?`).all(input.nowMs) as { subscription_id: string }[];
      for (const { subscription_id } of expired) this.#d.sql(`DELETE FROM outbox WHERE lane = ? AND state = 'pending'`).run(`callback:${subscription_id}`);
      this.#d.sql(`DELETE FROM subscriptions WHERE expires_at IS NOT NULL AND expires_at <= ?`).run(input.nowMs);
    });
  }

  async ping(): Promise<void> {
    this.#d.ping(this.#minFreeDiskBytes);
  }

  async close(): Promise<void> {
    clearInterval(this.#feedTimer);
    try {
      this.#group.flush();
    } finally {
      // A failed last group was answered (rejected); the file is closed all the same.
      this.#d.close();
    }
  }
}
