import { describe, expect, it } from "vitest";
import type { TwinningStore } from "../../node/store/store-port.ts";
import {
  activated,
  codeInput,
  expectTwinningError,
  issued,
  MINUTE,
  newCode,
  OP,
  OTHER_OP,
  P1,
  P2,
  redeemInput,
  S1,
  S2,
  S3,
  S4,
  SECOND,
  subscribe,
  subscription,
  T0,
  useStore,
  type MakeStore,
} from "./store-fixtures.ts";

/**
 * What a node commits must outlive a restart (DESIGN "Invariants and delivery": delivery
 * survives restarts). Runs only when the implementation can close and reopen the same data.
 */
export function durabilityContract(makeStore: MakeStore): void {
  describe("durability across close and reopen", () => {
    const h = useStore(makeStore);

    it("HLF-TE-001 HLF-TE-002 twins with their statuses and names, tombstones, codes and subscribers survive a reopen", async ({ skip }) => {
      const { store, reopen } = h();
      if (!reopen) return skip("the implementation offers no reopen");
      const a = await activated(store, P1, S1);
      await store.changeTwinStatus({ twinId: a.twinId, status: "Off", changedBy: "secondary", origin: OP, nowMs: T0 + SECOND });
      await store.renameTwin({ twinId: a.twinId, name: "Watch", nowMs: T0 + 2 * SECOND });
      const b = await activated(store, P1, S2);
      await store.deactivateTwin({ twinId: b.twinId, changedBy: "primary", nowMs: T0 + 3 * SECOND });
      const code = await issued(store, S3, newCode(), { nowMs: T0 + 3 * SECOND });
      await store.putSubscriber({ address: S4, twinningEnabled: true, credentialHash: "scrypt:x", updatedAtMs: T0 }, OP);

      const snapshot = async (s: TwinningStore) => ({
        twins: await s.listTwinsOfPrimary(P1),
        bySecondary: await s.findTwinOfSecondary(S1),
        byName: await s.findTwinOfPrimary(P1, { kind: "name", name: "Watch" }),
        tombstone: await s.getTwin(b.twinId),
        code: await s.getActivationCode(S3, code.codeId, T0 + 4 * SECOND),
        subscriber: await s.getSubscriber(S4),
      });
      const before = await snapshot(store);
      expect(before.twins).toEqual([{ ...a, name: "Watch", status: "Off", version: 2, statusOrigin: OP, updatedAtMs: T0 + 2 * SECOND }]);
      expect(before.tombstone).toMatchObject({ active: false });
      expect(before.code).toMatchObject({ state: "Pending" });
      expect(before.subscriber).toMatchObject({ address: S4 });

      const again = await reopen();
      expect(await snapshot(again)).toEqual(before);
      // The rules still hold on the reopened data (HLF-TE-009).
      await expectTwinningError(again.issueActivationCode(codeInput(S1, newCode(), { nowMs: T0 + 5 * SECOND })), "secondary_already_twinned");
    });

    it("HLF-PD-007 subscriptions, notifications, undelivered outbox entries and dead letters survive a reopen", async ({ skip }) => {
      const { store, reopen } = h();
      if (!reopen) return skip("the implementation offers no reopen");
      const twin = await activated(store, P1, S1);
      await subscribe(store, S1, "secondary", { callbackData: "cb" });
      await subscribe(store, P1, "primary");
      const change = (status: "On" | "Off", changedBy: "primary" | "secondary", nowMs: number) =>
        store.changeTwinStatus({ twinId: twin.twinId, status, changedBy, origin: OP, nowMs });
      await change("Off", "primary", T0 + SECOND);
      await change("On", "primary", T0 + 2 * SECOND);
      await change("Off", "secondary", T0 + 3 * SECOND);
      const heads = await store.dueOutboxHeads(T0 + 3 * SECOND, 10);
      const toSecondary = heads.find((e) => e.createdAtMs === T0 + SECOND);
      const toPrimary = heads.find((e) => e.createdAtMs === T0 + 3 * SECOND);
      if (!toSecondary || !toPrimary) throw new Error("expected one head per subscription");
      await store.failOutboxEntry({ id: toSecondary.id, attempts: 1, nextAttemptAtMs: T0 + MINUTE, lastError: "HTTP 503", nowMs: T0 + 3 * SECOND });
      await store.failOutboxEntry({ id: toPrimary.id, attempts: 9, nextAttemptAtMs: undefined, lastError: "gave up", nowMs: T0 + 3 * SECOND });

      const snapshot = async (s: TwinningStore) => ({
        secondarySubscriptions: await s.listSubscriptions(S1, "secondary", T0 + 4 * SECOND),
        primarySubscriptions: await s.listSubscriptions(P1, "primary", T0 + 4 * SECOND),
        secondaryFeed: await s.notificationsAfter(S1, "secondary", 0, 100),
        primaryFeed: await s.notificationsAfter(P1, "primary", 0, 100),
        latestNotificationId: await s.latestNotificationId(),
        stats: await s.outboxStats(),
        nextDue: await s.nextOutboxDueAtMs(),
        heads: await s.dueOutboxHeads(T0 + MINUTE, 10),
        dead: await s.listDeadLetters(10),
      });
      const before = await snapshot(store);
      expect(before.secondarySubscriptions).toHaveLength(1);
      expect(before.primarySubscriptions).toHaveLength(1);
      expect(before.secondaryFeed).toHaveLength(3);
      expect(before.primaryFeed).toHaveLength(1);
      expect(before.stats).toEqual({ pending: 2, dead: 1 });
      expect(before.nextDue).toBe(T0 + MINUTE);
      expect(before.heads).toEqual([{ ...toSecondary, attempts: 1, lastError: "HTTP 503" }]);
      // A dead letter names no subscriber: only the heads the worker schedules do.
      const { owner: _owner, ...deadEntry } = toPrimary;
      expect(before.dead).toEqual([{ ...deadEntry, attempts: 9, lastError: "gave up" }]);

      const again = await reopen();
      expect(await snapshot(again)).toEqual(before);
    });

    it("the federation replay cache (DESIGN: jti seen once): a jti is refused again at once, before its row is committed, and after a reopen", async ({ skip }) => {
      const { store, reopen } = h();
      if (!reopen) return skip("the implementation offers no reopen");
      const expiresAtMs = T0 + MINUTE;
      // An expiry that is not whole milliseconds is refused before any answer, not remembered in a row that cannot be written.
      await expect(store.rememberJti("002-01:j0", expiresAtMs + 0.5, T0)).rejects.toThrow(RangeError);
      // Asked twice in the same turn: the second is a replay although nothing has committed yet.
      expect(await Promise.all([store.rememberJti("002-01:j1", expiresAtMs, T0), store.rememberJti("002-01:j1", expiresAtMs, T0)])).toEqual([true, false]);
      // The change the message carried commits after it (here any write).
      await store.putSubscriber({ address: S4, twinningEnabled: true, credentialHash: "scrypt:x", updatedAtMs: T0 }, OP);
      expect(await store.rememberJti("002-01:j1", expiresAtMs, T0)).toBe(false);
      const again = await reopen();
      expect(await again.rememberJti("002-01:j1", expiresAtMs, T0)).toBe(false);
      expect(await again.rememberJti("002-01:j2", expiresAtMs, T0)).toBe(true);
    });

    it("clientCorrelators and failed attempts survive a reopen: retries still replay, a rate limit still holds", async ({ skip }) => {
      const { store, reopen } = h();
      if (!reopen) return skip("the implementation offers no reopen");
      const codeCorrelator = { subscriber: S2, operation: "activationCode", key: "c-code", fingerprint: "f", replayData: "sealed" };
      const firstCode = codeInput(S2, newCode(), { correlator: codeCorrelator });
      await store.issueActivationCode(firstCode);
      const code = newCode();
      await issued(store, S1, code);
      const twinCorrelator = { subscriber: P1, operation: "activation", key: "c-twin", fingerprint: "f" };
      const first = await store.redeemActivationCode(redeemInput(P1, code, { correlator: twinCorrelator }));
      if (first.kind !== "activated") throw new Error(`expected activated, got ${first.kind}`);
      const subCorrelator = { subscriber: S1, operation: "subscription:secondary", key: "c-sub", fingerprint: "f" };
      const firstSub = subscription(S1, "secondary");
      await store.createSubscription({ subscription: firstSub, maxPerSubscriber: 5, correlator: subCorrelator });
      const budgets = [{ key: `primary:${P2}`, limit: 1 }];
      expect((await store.redeemActivationCode(redeemInput(P2, newCode(), { attemptBudgets: budgets }))).kind).toBe("invalid-code");

      const again = await reopen();
      const later = T0 + SECOND;
      expect(await again.issueActivationCode(codeInput(S2, newCode(), { correlator: codeCorrelator, nowMs: later }))).toMatchObject({
        kind: "replayed",
        code: { codeId: firstCode.codeId },
        replay: { resourceId: firstCode.codeId, replayData: "sealed" },
      });
      expect(await again.redeemActivationCode(redeemInput(P1, code, { correlator: twinCorrelator, nowMs: later }))).toEqual({ kind: "replayed", twin: first.twin });
      expect(await again.createSubscription({ subscription: subscription(S1, "secondary"), maxPerSubscriber: 5, correlator: subCorrelator })).toEqual({
        subscription: firstSub,
        replayed: true,
      });
      const fresh = newCode();
      await issued(again, S3, fresh, { nowMs: later });
      expect((await again.redeemActivationCode(redeemInput(P2, fresh, { attemptBudgets: budgets, nowMs: later }))).kind).toBe("rate-limited");
    });

    it("HLF-CM-005 notification ids keep increasing across prune and reopen, so a Last-Event-ID never matches a new event", async ({ skip }) => {
      const { store, reopen } = h();
      if (!reopen) return skip("the implementation offers no reopen");
      const twin = await activated(store, P1, S1);
      await store.changeTwinStatus({ twinId: twin.twinId, status: "Off", changedBy: "primary", origin: OP, nowMs: T0 + SECOND });
      const last = await store.latestNotificationId();
      expect(last).toBeGreaterThan(0);
      const DAY = 24 * 60 * MINUTE;
      await store.prune({ nowMs: T0 + DAY, notificationRetentionMs: MINUTE, attemptWindowMs: MINUTE, deadLetterRetentionMs: 365 * 24 * 60 * MINUTE });
      expect(await store.notificationsAfter(S1, "secondary", 0, 10)).toEqual([]);
      const again = await reopen();
      const { notifications } = await again.changeTwinStatus({ twinId: twin.twinId, status: "On", changedBy: "primary", origin: OP, nowMs: T0 + DAY });
      expect(notifications).toHaveLength(1);
      expect(notifications[0]!.id).toBeGreaterThan(last);
      expect(await again.notificationsAfter(S1, "secondary", last, 10)).toEqual(notifications);
    });
  });
}
