import { describe, expect, it } from "vitest";
import { MAX_TWIN_VERSION, type Twin } from "../../node/domain/twin.ts";
import type { OutboxEntry, TwinningStore } from "../../node/store/store-port.ts";
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
  SECOND,
  subscribe,
  T0,
  uuid,
  useStore,
  type MakeStore,
} from "./store-fixtures.ts";

const toggle = (store: TwinningStore, twin: Twin, status: "On" | "Off", nowMs: number) =>
  store.changeTwinStatus({ twinId: twin.twinId, status, changedBy: "primary", origin: OP, nowMs });
/** Off, On, Off … by the primary, one second apart from `startMs`: each notifies the secondary. */
async function toggles(store: TwinningStore, twin: Twin, count: number, startMs: number): Promise<void> {
  for (let i = 0; i < count; i++) await toggle(store, twin, i % 2 === 0 ? "Off" : "On", startMs + i * SECOND);
}
const statusOf = (e: OutboxEntry) => (JSON.parse(e.payload) as { twinningStatusNotification: { status: string } }).twinningStatusNotification.status;

/** The durable outbox (DESIGN "Invariants and delivery"), prune and ping. */
export function deliveryContract(makeStore: MakeStore): void {
  describe("outbox", () => {
    const h = useStore(makeStore);

    it("HLF-PD-007 a status change creates one outbox entry per active subscription of the recipient", async () => {
      const { store } = h();
      const twin = await activated(store, P1, S1);
      const a = await subscribe(store, S1, "secondary", { callbackData: "cb-a" });
      const b = await subscribe(store, S1, "secondary");
      await subscribe(store, S1, "secondary", { expiresAtMs: T0 + MINUTE }); // expired by the change
      await subscribe(store, P1, "primary"); // the changer hears nothing
      expect(await store.outboxStats()).toEqual({ pending: 0, dead: 0 });
      const at = T0 + 2 * MINUTE;
      const result = await toggle(store, twin, "Off", at);
      expect(result.queued).toBe(true);

      expect(await store.outboxStats()).toEqual({ pending: 2, dead: 0 });
      expect(await store.nextOutboxDueAtMs()).toBe(at);
      expect(await store.dueOutboxHeads(at - 1, 10)).toEqual([]);
      const heads = await store.dueOutboxHeads(at, 10);
      expect(heads.map((e) => e.target).sort()).toEqual([a.notifyUrl, b.notifyUrl].sort());
      expect(new Set(heads.map((e) => e.lane)).size).toBe(2);
      for (const e of heads) expect(e).toMatchObject({ kind: "callback", attempts: 0, createdAtMs: at, lastError: undefined });
      const content = { twinId: twin.twinId, primaryAddress: P1, secondaryAddress: S1, status: "Off", changedBy: "primary", timestamp: new Date(at).toISOString() };
      const byTarget = new Map(heads.map((e) => [e.target, JSON.parse(e.payload) as unknown]));
      expect(byTarget.get(a.notifyUrl)).toEqual({ twinningStatusNotification: { ...content, callbackData: "cb-a" } });
      expect(byTarget.get(b.notifyUrl)).toEqual({ twinningStatusNotification: content });
    });

    it("HLF-SD-007 activations and deactivations reach the recipient's callbacks too", async () => {
      const { store } = h();
      const sub = await subscribe(store, S1, "secondary"); // the secondary waits for its code to be used
      const p = await subscribe(store, P1, "primary");
      const twin = await activated(store, P1, S1, { nowMs: T0 + SECOND });
      await store.deactivateTwin({ twinId: twin.twinId, changedBy: "secondary", nowMs: T0 + 2 * SECOND });
      const heads = await store.dueOutboxHeads(T0 + 3 * SECOND, 10);
      const typesByTarget = new Map(heads.map((e) => [e.target, Object.keys(JSON.parse(e.payload) as object)]));
      expect(heads).toHaveLength(2);
      expect(typesByTarget.get(sub.notifyUrl)).toEqual(["twinningActivatedNotification"]);
      expect(typesByTarget.get(p.notifyUrl)).toEqual(["twinningDeactivatedNotification"]);
    });

    it("dueOutboxHeads returns only the oldest pending entry of each lane, at most limit of them", async () => {
      const { store } = h();
      const twin = await activated(store, P1, S1);
      await subscribe(store, S1, "secondary");
      await subscribe(store, S1, "secondary");
      await toggles(store, twin, 3, T0 + SECOND);
      expect(await store.outboxStats()).toEqual({ pending: 6, dead: 0 });
      const heads = await store.dueOutboxHeads(T0 + MINUTE, 10);
      expect(heads).toHaveLength(2);
      expect(heads.map(statusOf)).toEqual(["Off", "Off"]);
      expect(heads.every((e) => e.createdAtMs === T0 + SECOND)).toBe(true);
      expect(await store.dueOutboxHeads(T0 + MINUTE, 1)).toHaveLength(1);
    });

    for (const peerLanes of [1, 300]) {
      it(`dueOutboxHeads counts its limit per kind: a crowd of callback lanes due earlier never hides a peer's lane (${peerLanes} peer lanes)`, async () => {
        const { store } = h();
        const twin = await activated(store, P1, S1);
        for (let i = 0; i < 3; i++) await subscribe(store, S1, "secondary");
        await toggles(store, twin, 1, T0 + SECOND);
        for (let i = 0; i < peerLanes; i++) {
          await store.enqueuePeerMessages([{ operatorId: OTHER_OP, method: "DELETE", path: `/twins/${uuid()}`, msgId: uuid(), body: {}, subLane: `lane-${i}` }], T0 + 2 * SECOND);
        }
        const heads = await store.dueOutboxHeads(T0 + MINUTE, 2);
        expect(heads.map((e) => e.kind).sort()).toEqual(["callback", "callback", ...Array(Math.min(2, peerLanes)).fill("peer")]);
        expect(heads.filter((e) => e.kind === "peer").every((e) => e.target === OTHER_OP)).toBe(true);
      });
    }

    for (const peerLanes of [0, 300]) {
      it(`dueOutboxHeads gives at most perOwner callback heads of one subscriber, the first by due time and id, each naming its subscriber; the others' are not hidden (${peerLanes} peer lanes)`, async () => {
        const { store } = h();
        const twin = await activated(store, P1, S1);
        const other = await activated(store, P2, S2);
        for (let i = 0; i < 5; i++) await subscribe(store, S1, "secondary");
        const s2 = await subscribe(store, S2, "secondary");
        await toggles(store, twin, 1, T0 + SECOND);
        await toggles(store, other, 1, T0 + 2 * SECOND);
        for (let i = 0; i < peerLanes; i++) {
          await store.enqueuePeerMessages([{ operatorId: OTHER_OP, method: "DELETE", path: `/twins/${uuid()}`, msgId: uuid(), body: {}, subLane: `lane-${i}` }], T0 + 2 * SECOND);
        }
        const all = (await store.dueOutboxHeads(T0 + MINUTE, 10)).filter((e) => e.kind === "callback");
        expect(all.map((e) => e.owner)).toEqual([S1, S1, S1, S1, S1, S2]);
        const shared = (await store.dueOutboxHeads(T0 + MINUTE, 10, 2)).filter((e) => e.kind === "callback");
        expect(shared.map((e) => e.id)).toEqual([all[0]!.id, all[1]!.id, all[5]!.id]);
        expect(shared.at(-1)).toMatchObject({ owner: S2, target: s2.notifyUrl });
        // The limit still counts per kind, after the share.
        expect((await store.dueOutboxHeads(T0 + MINUTE, 2, 1)).filter((e) => e.kind === "callback").map((e) => e.owner)).toEqual([S1, S2]);
        expect((await store.dueOutboxHeads(T0 + MINUTE, 10, 2)).filter((e) => e.kind === "peer")).toHaveLength(Math.min(10, peerLanes));
      });
    }

    it("failOutboxEntry with nextAttemptAtMs delays the entry and holds back the rest of its lane", async () => {
      const { store } = h();
      const twin = await activated(store, P1, S1);
      await subscribe(store, S1, "secondary");
      await toggles(store, twin, 2, T0 + SECOND);
      const [head] = await store.dueOutboxHeads(T0 + 2 * SECOND, 10);
      if (!head) throw new Error("no outbox head");
      await store.failOutboxEntry({ id: head.id, attempts: 1, nextAttemptAtMs: T0 + MINUTE, lastError: "HTTP 503", nowMs: T0 + 2 * SECOND });
      expect(await store.dueOutboxHeads(T0 + MINUTE - 1, 10)).toEqual([]);
      expect(await store.nextOutboxDueAtMs()).toBe(T0 + MINUTE);
      expect(await store.dueOutboxHeads(T0 + MINUTE, 10)).toEqual([{ ...head, attempts: 1, lastError: "HTTP 503" }]);
      expect(await store.outboxStats()).toEqual({ pending: 2, dead: 0 });
    });

    it("failOutboxEntry without nextAttemptAtMs makes the entry dead: outboxStats and listDeadLetters show it, the lane moves on", async () => {
      const { store } = h();
      const twin = await activated(store, P1, S1);
      await subscribe(store, S1, "secondary");
      await toggles(store, twin, 2, T0 + SECOND);
      const [head] = await store.dueOutboxHeads(T0 + 2 * SECOND, 10);
      if (!head) throw new Error("no outbox head");
      await store.failOutboxEntry({ id: head.id, attempts: 7, nextAttemptAtMs: undefined, lastError: "gave up", nowMs: T0 + 2 * SECOND });
      expect(await store.outboxStats()).toEqual({ pending: 1, dead: 1 });
      // A dead letter names no subscriber: only the heads the worker schedules do.
      const { owner: _owner, ...entry } = head;
      expect(await store.listDeadLetters(10)).toEqual([{ ...entry, attempts: 7, lastError: "gave up" }]);
      const next = await store.dueOutboxHeads(T0 + 2 * SECOND, 10);
      expect(next).toHaveLength(1);
      expect(next[0]).toMatchObject({ lane: head.lane, attempts: 0 });
      expect(next[0]!.id).not.toBe(head.id);
      expect(statusOf(next[0]!)).toBe("On");
    });

    it("prune drops dead letters that died longer ago than their retention (counted from the death, not the creation), and nothing pending", async () => {
      const { store } = h();
      const twin = await activated(store, P1, S1);
      await subscribe(store, S1, "secondary", { expiresAtMs: undefined });
      await toggles(store, twin, 2, T0 + SECOND);
      const [head] = await store.dueOutboxHeads(T0 + 2 * SECOND, 10);
      if (!head) throw new Error("no outbox head");
      // Created at T0 + 1 s, it dies 90 minutes later (a receiver back after an outage refuses it).
      const diedAt = T0 + 90 * MINUTE;
      await store.failOutboxEntry({ id: head.id, attempts: 7, nextAttemptAtMs: undefined, lastError: "gave up", nowMs: diedAt });
      const prune = (nowMs: number) => store.prune({ nowMs, notificationRetentionMs: 365 * 24 * 60 * MINUTE, attemptWindowMs: MINUTE, deadLetterRetentionMs: 60 * MINUTE });
      await prune(diedAt + 60 * MINUTE - 1);
      expect(await store.outboxStats()).toEqual({ pending: 1, dead: 1 });
      await prune(diedAt + 60 * MINUTE);
      expect(await store.outboxStats()).toEqual({ pending: 1, dead: 0 });
      expect(await store.listDeadLetters(10)).toEqual([]);
    });

    // 5 lanes, and more lanes than an implementation might visit one by one (SQLite walks up to 256).
    for (const lanes of [5, 300]) {
      it(`dueOutboxHeads gives each due lane's oldest entry, earliest due first; nextOutboxDueAtMs the earliest head (${lanes} lanes)`, async () => {
        const { store } = h();
        // Lane i holds 1 + i % 3 entries, all due at T0 + (i * 7 % 11) s.
        const lanesIds: { ids: number[]; dueAtMs: number }[] = [];
        for (let i = 0; i < lanes; i++) {
          const dueAtMs = T0 + ((i * 7) % 11) * SECOND;
          const drafts = Array.from({ length: 1 + (i % 3) }, () => ({ operatorId: OTHER_OP, method: "DELETE" as const, path: `/twins/${uuid()}`, msgId: uuid(), body: {}, subLane: `lane-${i}` }));
          lanesIds.push({ ids: await store.enqueuePeerMessages(drafts, T0, dueAtMs), dueAtMs });
        }
        // Lane 2 (3 entries, due at T0 + 3 s) moves on to its second entry.
        await store.completeOutboxEntry(lanesIds[2]!.ids[0]!);
        lanesIds[2]!.ids.shift();
        const expected = (nowMs: number) =>
          lanesIds
            .filter((l) => l.dueAtMs <= nowMs)
            .map((l) => ({ id: l.ids[0]!, dueAtMs: l.dueAtMs }))
            .sort((a, b) => a.dueAtMs - b.dueAtMs || a.id - b.id)
            .map((x) => x.id);
        for (const nowMs of [T0 - 1, T0, T0 + 3 * SECOND, T0 + 10 * SECOND]) {
          expect((await store.dueOutboxHeads(nowMs, 10_000)).map((e) => e.id)).toEqual(expected(nowMs));
        }
        expect((await store.dueOutboxHeads(T0 + 10 * SECOND, 3)).map((e) => e.id)).toEqual(expected(T0 + 10 * SECOND).slice(0, 3));
        expect(await store.nextOutboxDueAtMs()).toBe(T0);
      });
    }

    it("nextOutboxEntriesInLane reads the next pending entries of the same lane in order, stopping at one not yet due", async () => {
      const { store } = h();
      const twin = await activated(store, P1, S1);
      await subscribe(store, S1, "secondary");
      await toggles(store, twin, 3, T0 + SECOND);
      const [head] = await store.dueOutboxHeads(T0 + MINUTE, 10);
      if (!head) throw new Error("no outbox head");
      const rest = await store.nextOutboxEntriesInLane(head.lane, head.id, T0 + MINUTE, 10);
      expect(rest.map((e) => [e.lane, e.createdAtMs])).toEqual([
        [head.lane, T0 + 2 * SECOND],
        [head.lane, T0 + 3 * SECOND],
      ]);
      expect(rest[0]!.id).toBeGreaterThan(head.id);
      expect(await store.nextOutboxEntriesInLane(head.lane, head.id, T0 + MINUTE, 1)).toEqual([rest[0]]);
      expect(await store.nextOutboxEntriesInLane(head.lane, rest[1]!.id, T0 + MINUTE, 10)).toEqual([]);
      expect(await store.nextOutboxEntriesInLane("callback:other", 0, T0 + MINUTE, 10)).toEqual([]);
      // Not due yet: a delayed entry, and what follows it, is not handed out.
      await store.failOutboxEntry({ id: rest[0]!.id, attempts: 1, nextAttemptAtMs: T0 + 2 * MINUTE, lastError: "503", nowMs: T0 + MINUTE });
      expect(await store.nextOutboxEntriesInLane(head.lane, head.id, T0 + MINUTE, 10)).toEqual([]);
      expect((await store.nextOutboxEntriesInLane(head.lane, head.id, T0 + 2 * MINUTE, 10)).map((e) => e.id)).toEqual(rest.map((e) => e.id));
      // Completed together, in one transaction.
      await store.completeOutboxEntries([head.id, ...rest.map((e) => e.id)]);
      expect(await store.outboxStats()).toEqual({ pending: 0, dead: 0 });
    });

    it("completeOutboxEntry removes the entry and the lane's next entry becomes head; nextOutboxDueAtMs is then undefined", async () => {
      const { store } = h();
      expect(await store.nextOutboxDueAtMs()).toBeUndefined();
      const twin = await activated(store, P1, S1);
      await subscribe(store, S1, "secondary");
      await toggles(store, twin, 2, T0 + SECOND);
      const [first] = await store.dueOutboxHeads(T0 + MINUTE, 10);
      if (!first) throw new Error("no outbox head");
      await store.completeOutboxEntry(first.id);
      const [second] = await store.dueOutboxHeads(T0 + MINUTE, 10);
      expect(second).toMatchObject({ lane: first.lane, createdAtMs: T0 + 2 * SECOND });
      expect(await store.nextOutboxDueAtMs()).toBe(T0 + 2 * SECOND);
      await store.completeOutboxEntry(second!.id);
      expect(await store.dueOutboxHeads(T0 + MINUTE, 10)).toEqual([]);
      expect(await store.outboxStats()).toEqual({ pending: 0, dead: 0 });
      expect(await store.nextOutboxDueAtMs()).toBeUndefined();
      expect(await store.listDeadLetters(10)).toEqual([]);
    });
  });

  describe("prune and ping", () => {
    const h = useStore(makeStore);

    it("prune drops notifications and codes older than the retention, keeps newer ones, twins and the outbox", async () => {
      const { store } = h();
      const HOUR = 60 * MINUTE;
      const twin = await activated(store, P1, S1); // its notification and used code date from T0
      await subscribe(store, S1, "secondary", { expiresAtMs: undefined });
      const stale = await issued(store, S2, newCode());
      await toggle(store, twin, "Off", T0 + 90 * MINUTE);
      const fresh = await issued(store, S3, newCode(), { nowMs: T0 + 90 * MINUTE });
      const kept = await store.notificationsAfter(S1, "secondary", 0, 10);
      expect(kept).toHaveLength(2);

      await store.prune({ nowMs: T0 + 2 * HOUR, notificationRetentionMs: HOUR, attemptWindowMs: HOUR, deadLetterRetentionMs: 365 * 24 * 60 * MINUTE });
      expect(await store.notificationsAfter(S1, "secondary", 0, 10)).toEqual([kept[1]]);
      expect(await store.getActivationCode(S2, stale.codeId, T0 + 2 * HOUR)).toBeUndefined();
      expect(await store.getActivationCode(S3, fresh.codeId, T0 + 2 * HOUR)).toMatchObject({ codeId: fresh.codeId, state: "Expired" });
      expect(await store.getTwin(twin.twinId)).toMatchObject({ status: "Off", active: true });
      expect(await store.listSubscriptions(S1, "secondary", T0 + 2 * HOUR)).toHaveLength(1);
      expect(await store.outboxStats()).toEqual({ pending: 1, dead: 0 });
    });

    it("prune drops failed attempts older than the attempt window, which lifts a rate limit", async () => {
      const { store } = h();
      const budgets = [{ key: `primary:${P2}`, limit: 1 }];
      const DAY = 24 * 60 * MINUTE;
      expect((await store.redeemActivationCode(redeemInput(P2, newCode(), { attemptBudgets: budgets }))).kind).toBe("invalid-code");
      const code = newCode();
      await store.issueActivationCode(codeInput(S1, code, { nowMs: T0 + 2 * MINUTE }));
      // Under a day-long window the failure still counts …
      const later = { attemptBudgets: budgets, attemptWindowMs: DAY, nowMs: T0 + 2 * MINUTE };
      expect((await store.redeemActivationCode(redeemInput(P2, code, later))).kind).toBe("rate-limited");
      await store.prune({ nowMs: T0 + 2 * MINUTE, notificationRetentionMs: DAY, attemptWindowMs: MINUTE, deadLetterRetentionMs: 365 * 24 * 60 * MINUTE });
      // … until prune has dropped it.
      expect((await store.redeemActivationCode(redeemInput(P2, code, later))).kind).toBe("activated");
    });

    it("HLF-CM-006 a pending code is void once the per-code limit of failures was made since it was issued", async () => {
      const { store } = h();
      const codeBudget = { key: `codes:${OP}`, limit: 3 };
      const attemptBudgets = [{ key: codeBudget.key, limit: 1_000 }];
      const older = newCode();
      const olderCode = await issued(store, S1, older, { nowMs: T0 });
      const guess = (at: number) => store.redeemActivationCode(redeemInput(P2, newCode(), { attemptBudgets, codeBudget, nowMs: at }));
      for (const at of [T0 + 1, T0 + 2]) expect((await guess(at)).kind).toBe("invalid-code");
      // One failure short of the limit, the older code is still pending.
      expect((await store.getActivationCode(S1, olderCode.codeId, T0 + 2))?.state).toBe("Pending");
      // A code issued after two of the failures has seen only the later ones.
      const newer = newCode();
      await issued(store, S2, newer, { nowMs: T0 + 3 });
      expect((await guess(T0 + 4)).kind).toBe("invalid-code");
      // The older code has now seen three failures: void, though right and unexpired.
      expect((await store.redeemActivationCode(redeemInput(P1, older, { attemptBudgets, codeBudget, nowMs: T0 + 5 }))).kind).toBe("invalid-code");
      expect((await store.getActivationCode(S1, olderCode.codeId, T0 + 5))?.state).not.toBe("Pending");
      // The newer one has seen one and still works.
      expect((await store.redeemActivationCode(redeemInput(P1, newer, { attemptBudgets, codeBudget, nowMs: T0 + 6 }))).kind).toBe("activated");
    });

    it("HLF-IC-005 a twin a peer brought to the last version the wire allows cannot be toggled here (update_not_allowed, nothing queued): the next version would be refused by every peer for good", async () => {
      const { store } = h();
      const twinId = await twinWithPeerSecondary(store);
      await store.applyRemoteStatus({ twinId, status: "Off", version: MAX_TWIN_VERSION, fromOperatorId: OTHER_OP, ownOperatorId: OP, nowMs: T0 + SECOND });
      const before = await store.outboxStats();
      await expectTwinningError(store.changeTwinStatus({ twinId, status: "On", changedBy: "primary", origin: OP, nowMs: T0 + 2 * SECOND }), "update_not_allowed");
      expect(await store.getTwin(twinId)).toMatchObject({ status: "Off", version: MAX_TWIN_VERSION });
      expect(await store.outboxStats()).toEqual(before);
    });

    it("HLF-IC-007 a toggle that would queue a peer message behind maxQueuedPerPeer others is refused (SVC3002) and not applied; a deactivation is not", async () => {
      const { store } = h();
      const twinId = await twinWithPeerSecondary(store);
      const toggle = (status: "On" | "Off") => store.changeTwinStatus({ twinId, status, changedBy: "primary", origin: OP, nowMs: T0 + SECOND, maxQueuedPerPeer: 2 });
      await toggle("Off");
      // A message in another lane for the same peer (a compensation) counts too.
      await store.enqueuePeerMessages([{ operatorId: OTHER_OP, method: "DELETE", path: `/twins/${uuid()}`, msgId: uuid(), body: { changedBy: "primary" }, subLane: "activation:x" }], T0);
      expect(await store.countQueuedForPeer(OTHER_OP, 100)).toBe(2);
      expect(await store.countQueuedForPeer(OTHER_OP, 1)).toBe(1);
      // A peer whose id extends this one's (a three-digit MNC) is another peer: neither counts the other's.
      const longer = `${OTHER_OP}5`;
      await store.enqueuePeerMessages(
        [
          { operatorId: longer, method: "DELETE", path: `/twins/${uuid()}`, msgId: uuid(), body: { changedBy: "primary" } },
          { operatorId: longer, method: "DELETE", path: `/twins/${uuid()}`, msgId: uuid(), body: { changedBy: "primary" }, subLane: "activation:y" },
        ],
        T0,
      );
      expect(await store.countQueuedForPeer(OTHER_OP, 100)).toBe(2);
      expect(await store.countQueuedForPeer(longer, 100)).toBe(2);
      await expect(toggle("On")).rejects.toMatchObject({ messageId: "SVC3002" });
      expect((await store.getTwin(twinId))?.status).toBe("Off");
      expect((await store.outboxStats()).pending).toBe(4);
      await store.deactivateTwin({ twinId, changedBy: "primary", nowMs: T0 + 2 * SECOND, ownOperatorId: OP });
      expect((await store.outboxStats()).pending).toBe(5);
    });

    it("a change names its peer messages that are first in their lane (laneHeads), and only those", async () => {
      const { store } = h();
      const twinId = await twinWithPeerSecondary(store);
      const [activation] = await store.dueOutboxHeads(T0, 10);
      if (activation) await store.completeOutboxEntries([activation.id]); // not needed by this test
      const first = await store.changeTwinStatus({ twinId, status: "Off", changedBy: "primary", origin: OP, nowMs: T0 + SECOND });
      // Optional in the port; this store gives it.
      expect(first.laneHeads).toHaveLength(1);
      const [head] = await store.dueOutboxHeads(T0 + SECOND, 10);
      expect(first.laneHeads).toEqual([head]);
      expect(JSON.parse(head!.payload)).toMatchObject({ method: "PUT", body: { status: "Off", version: 2 } });
      // The second toggle's message waits behind the first, undelivered: not a head.
      const second = await store.changeTwinStatus({ twinId, status: "On", changedBy: "primary", origin: OP, nowMs: T0 + 2 * SECOND });
      expect(second.queued).toBe(true);
      expect(second.laneHeads).toEqual([]);
      // Once the lane is empty again, the next one is.
      await store.completeOutboxEntries((await store.nextOutboxEntriesInLane(head!.lane, 0, T0 + 3 * SECOND, 10)).map((e) => e.id));
      const third = await store.deactivateTwin({ twinId, changedBy: "primary", nowMs: T0 + 3 * SECOND, ownOperatorId: OP });
      expect(third.laneHeads?.map((e) => JSON.parse(e.payload).method)).toEqual(["DELETE"]);
    });

    it("HLF-IC-004 insertFederatedTwin withdraws an armed compensation only while it was never tried and is not yet due; one written back after a try stays, and nothing of the insert commits (SVC3002)", async () => {
      const { store } = h();
      const armed = (twinId: string) =>
        store.enqueuePeerMessages([{ operatorId: OTHER_OP, method: "DELETE", path: `/twins/${twinId}`, msgId: uuid(), body: {}, subLane: `activation:${twinId}` }], T0, T0 + 10 * SECOND);
      const insert = (twinId: string, secondaryAddress: string, disarm: number) =>
        store.insertFederatedTwin({
          twin: { twinId, primaryAddress: P1, primaryOperatorId: OP, secondaryAddress, secondaryOperatorId: OTHER_OP, name: secondaryAddress === S1 ? "watch" : "car", status: "On", version: 1, statusOrigin: OP },
          localSide: "primary",
          nowMs: T0 + 2 * SECOND,
          maxTwinsPerPrimary: 10,
          disarmOutboxIds: [disarm],
        });
      const lanesDue = async () => (await store.dueOutboxHeads(T0 + 60 * SECOND, 10)).map((e) => e.lane);

      // Never tried, not yet due: withdrawn with the insert.
      const calm = uuid();
      const [calmId] = await armed(calm);
      await insert(calm, S1, calmId!);
      expect(await lanesDue()).toEqual([]);

      // Tried once (its answer lost) and written back for a later retry: the peer may have ended
      // its twin, so the entry stays and our side is not committed.
      const tried = uuid();
      const [triedId] = await armed(tried);
      await store.failOutboxEntry({ id: triedId!, attempts: 1, nextAttemptAtMs: T0 + 30 * SECOND, lastError: "no answer", nowMs: T0 + SECOND });
      await expectTwinningError(insert(tried, S2, triedId!), "peer_unreachable");
      expect(await lanesDue()).toEqual([`peer:${OTHER_OP}:activation:${tried}`]);
      expect(await store.getTwin(tried)).toBeUndefined();
    });

    it("HLF-CM-005 onNotificationsCommitted hears each commit's notifications once it has committed, in commit order, and nothing of a refused change", async () => {
      const { store } = h();
      const [t1, t2, t3] = [await activated(store, P1, S1), await activated(store, P1, S2), await activated(store, P2, S3)];
      const before = await store.latestNotificationId();
      const heard: { id: number; type: string }[][] = [];
      const stop = store.onNotificationsCommitted((ns) => heard.push(ns.map((n) => ({ id: n.id, type: n.type }))));
      // In one turn: two toggles (which may share a commit), a deactivation, a toggle refused (an unknown twin).
      const results = await Promise.allSettled([
        toggle(store, t1, "Off", T0 + SECOND),
        store.deactivateTwin({ twinId: t2.twinId, changedBy: "primary", nowMs: T0 + SECOND, ownOperatorId: OP }),
        store.changeTwinStatus({ twinId: uuid(), status: "Off", changedBy: "primary", origin: OP, nowMs: T0 + SECOND }),
        toggle(store, t3, "Off", T0 + SECOND),
      ]);
      expect(results.map((r) => r.status)).toEqual(["fulfilled", "fulfilled", "rejected", "fulfilled"]);
      const ids = heard.flat().map((n) => n.id);
      expect(ids).toEqual([...ids].sort((a, b) => a - b));
      const committed = [...(await store.notificationsAfter(S1, "secondary", before, 10)), ...(await store.notificationsAfter(S2, "secondary", before, 10)), ...(await store.notificationsAfter(S3, "secondary", before, 10))];
      expect([...ids].sort((a, b) => a - b)).toEqual(committed.map((n) => n.id).sort((a, b) => a - b));
      expect(heard.flat().map((n) => n.type).sort()).toEqual(["twinningDeactivatedNotification", "twinningStatusNotification", "twinningStatusNotification"]);
      stop();
      await toggle(store, t1, "On", T0 + 2 * SECOND);
      expect(heard.flat()).toHaveLength(3);
    });

    it("ping resolves on an open store", async () => {
      await expect(h().store.ping()).resolves.toBeUndefined();
    });
  });
}

/** P1's twin with S1, a secondary of OTHER_OP: its changes queue peer messages. */
async function twinWithPeerSecondary(store: TwinningStore): Promise<string> {
  const twinId = uuid();
  await store.insertFederatedTwin({
    twin: { twinId, primaryAddress: P1, primaryOperatorId: OP, secondaryAddress: S1, secondaryOperatorId: OTHER_OP, name: "watch", status: "On", version: 1, statusOrigin: OP },
    localSide: "primary",
    nowMs: T0,
    maxTwinsPerPrimary: 10,
  });
  return twinId;
}
