import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { TwinRole, TwinStatus } from "../../node/domain/twin.ts";
import type { TwinningStore } from "../../node/store/store-port.ts";
import {
  activated,
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
  subscription,
  T0,
  useStore,
  uuid,
  type MakeStore,
} from "./store-fixtures.ts";

/** Twins (HLF-PD-*, HLF-SD-004..007, HLF-TE-*), subscriptions and the notification feed. */
export function twinContract(makeStore: MakeStore): void {
  describe("twins", () => {
    const h = useStore(makeStore);

    it("HLF-TE-002 concurrent status changes are independent: one refused leaves the others committed, in the order asked", async () => {
      const { store } = h();
      const a = await activated(store, P1, S1);
      const b = await activated(store, P1, S2, { nowMs: T0 + SECOND });
      const gone = await activated(store, P2, S3);
      await store.deactivateTwin({ twinId: gone.twinId, changedBy: "primary", nowMs: T0 + SECOND });
      // Asked together, without awaiting in between (an implementation may commit them as one group).
      const change = (twinId: string, status: "On" | "Off", at: number) => store.changeTwinStatus({ twinId, status, changedBy: "primary", origin: OP, nowMs: T0 + at * SECOND });
      const results = await Promise.allSettled([change(a.twinId, "Off", 2), change(gone.twinId, "Off", 2), change(b.twinId, "Off", 2), change(a.twinId, "On", 3)]);
      expect(results.map((r) => r.status)).toEqual(["fulfilled", "rejected", "fulfilled", "fulfilled"]);
      expect(((results[1] as PromiseRejectedResult).reason as { code?: string }).code).toBe("update_not_allowed");
      const [first, , , second] = results as PromiseFulfilledResult<Awaited<ReturnType<typeof change>>>[];
      expect([first!.value.twin.version, second!.value.twin.version]).toEqual([a.version + 1, a.version + 2]);
      expect(((await store.getTwin(a.twinId)) ?? {}).status).toBe("On");
      expect(((await store.getTwin(b.twinId)) ?? {}).status).toBe("Off");
      expect(((await store.getTwin(gone.twinId)) ?? {}).status).toBe("On");
    });

    it("HLF-TE-004 writes take effect in the order they were asked, even when none is awaited in between", async () => {
      const { store } = h();
      const twin = await activated(store, P1, S1);
      const toggled = store.changeTwinStatus({ twinId: twin.twinId, status: "Off", changedBy: "primary", origin: OP, nowMs: T0 + SECOND });
      const ended = store.deactivateTwin({ twinId: twin.twinId, changedBy: "secondary", nowMs: T0 + 2 * SECOND });
      const [toggle, deactivation] = await Promise.all([toggled, ended]);
      expect([toggle.changed, toggle.twin.status, deactivation.twin.active, deactivation.twin.status]).toEqual([true, "Off", false, "Off"]);
      expect(Math.max(...toggle.notifications.map((n) => n.id))).toBeLessThan(Math.min(...deactivation.notifications.map((n) => n.id)));
    });

    it("HLF-PD-003 a primary lists its twins in creation order and finds each by twinId, secondary address or name", async () => {
      const { store } = h();
      const a = await activated(store, P1, S1, { name: "Watch" });
      const b = await activated(store, P1, S2, { nowMs: T0 + SECOND });
      const other = await activated(store, P2, S3);
      expect(await store.listTwinsOfPrimary(P1)).toEqual([a, b]);
      expect(await store.findTwinOfPrimary(P1, { kind: "twinId", twinId: b.twinId })).toEqual(b);
      expect(await store.findTwinOfPrimary(P1, { kind: "secondary", address: S1 })).toEqual(a);
      expect(await store.findTwinOfPrimary(P1, { kind: "name", name: "Watch" })).toEqual(a);
      // Another primary's twin is not found through P1, whatever the ref.
      expect(await store.findTwinOfPrimary(P1, { kind: "twinId", twinId: other.twinId })).toBeUndefined();
      expect(await store.findTwinOfPrimary(P1, { kind: "secondary", address: S3 })).toBeUndefined();
      expect(await store.findTwinOfPrimary(P1, { kind: "name", name: "Nope" })).toBeUndefined();
      expect(await store.findTwinOfSecondary(S2)).toEqual(b);
      expect(await store.findTwinOfSecondary(P1)).toBeUndefined();
      expect(await store.getTwin(other.twinId)).toEqual(other);
      expect(await store.getTwin(uuid())).toBeUndefined();
    });

    it("HLF-PD-004 renameTwin changes the name; a name another active twin has is invalid_input", async () => {
      const { store } = h();
      const a = await activated(store, P1, S1);
      const b = await activated(store, P1, S2);
      const renamed = await store.renameTwin({ twinId: a.twinId, name: "Car", nowMs: T0 + SECOND });
      expect(renamed).toEqual({ ...a, name: "Car", updatedAtMs: T0 + SECOND });
      expect(await store.findTwinOfPrimary(P1, { kind: "name", name: "Car" })).toEqual(renamed);
      expect(await store.findTwinOfPrimary(P1, { kind: "name", name: a.name })).toBeUndefined();
      expect((await store.renameTwin({ twinId: a.twinId, name: "Car", nowMs: T0 + 2 * SECOND })).name).toBe("Car");
      await expectTwinningError(store.renameTwin({ twinId: b.twinId, name: "Car", nowMs: T0 + 2 * SECOND }), "invalid_input");
      await expectTwinningError(store.renameTwin({ twinId: uuid(), name: "Bike", nowMs: T0 }), "not_found");
      expect((await store.getTwin(b.twinId))?.name).toBe(b.name);
    });

    it("HLF-TE-003 toggling Off keeps the relationship", async () => {
      const { store } = h();
      const twin = await activated(store, P1, S1);
      const result = await store.changeTwinStatus({ twinId: twin.twinId, status: "Off", changedBy: "primary", origin: OP, nowMs: T0 + SECOND });
      expect(result.changed).toBe(true);
      expect(result.twin).toEqual({ ...twin, status: "Off", version: twin.version + 1, statusOrigin: OP, updatedAtMs: T0 + SECOND });
      expect(await store.findTwinOfSecondary(S1)).toEqual(result.twin);
      expect(await store.listTwinsOfPrimary(P1)).toEqual([result.twin]);
      const back = await store.changeTwinStatus({ twinId: twin.twinId, status: "On", changedBy: "secondary", origin: OP, nowMs: T0 + 2 * SECOND });
      expect(back.twin).toMatchObject({ status: "On", version: twin.version + 2, active: true });
    });

    it("HLF-PD-002 a status change by the primary notifies the secondary", async () => {
      const { store } = h();
      const twin = await activated(store, P1, S1);
      const { notifications } = await store.changeTwinStatus({ twinId: twin.twinId, status: "Off", changedBy: "primary", origin: OP, nowMs: T0 + SECOND });
      expect(notifications).toHaveLength(1);
      expect(notifications[0]).toMatchObject({
        recipientAddress: S1,
        recipientRole: "secondary",
        type: "twinningStatusNotification",
        content: { twinId: twin.twinId, primaryAddress: P1, secondaryAddress: S1, status: "Off", changedBy: "primary", timestamp: new Date(T0 + SECOND).toISOString() },
      });
      expect(await store.notificationsAfter(P1, "primary", 0, 10)).toEqual([]);
    });

    it("HLF-SD-004 a status change by the secondary notifies the primary", async () => {
      const { store } = h();
      const twin = await activated(store, P1, S1);
      const { notifications } = await store.changeTwinStatus({ twinId: twin.twinId, status: "Off", changedBy: "secondary", origin: OP, nowMs: T0 + SECOND });
      expect(notifications).toHaveLength(1);
      expect(notifications[0]).toMatchObject({ recipientAddress: P1, recipientRole: "primary", content: { changedBy: "secondary", status: "Off" } });
      expect(await store.notificationsAfter(P1, "primary", 0, 10)).toEqual(notifications);
    });

    it("changeTwinStatus to the current status is changed:false, keeps the version and records nothing", async () => {
      const { store } = h();
      const twin = await activated(store, P1, S1);
      const latest = await store.latestNotificationId();
      const result = await store.changeTwinStatus({ twinId: twin.twinId, status: "On", changedBy: "primary", origin: OP, nowMs: T0 + SECOND });
      expect(result).toEqual({ twin, changed: false, notifications: [], queued: false });
      expect(await store.latestNotificationId()).toBe(latest);
      await expectTwinningError(store.changeTwinStatus({ twinId: uuid(), status: "Off", changedBy: "primary", origin: OP, nowMs: T0 }), "not_found");
    });

    it("HLF-PD-002 changeTwinStatus with primaryAddress changes only that primary's twin: another's is not_found and unchanged, whatever its state", async () => {
      const { store } = h();
      const mine = await activated(store, P1, S1);
      const theirs = await activated(store, P2, S2);
      const gone = await activated(store, P2, S3);
      await store.deactivateTwin({ twinId: gone.twinId, changedBy: "primary", nowMs: T0 + SECOND });
      const latest = await store.latestNotificationId();
      const change = (twinId: string, status: "On" | "Off") => store.changeTwinStatus({ twinId, primaryAddress: P1, status, changedBy: "primary", origin: OP, nowMs: T0 + 2 * SECOND });
      await expectTwinningError(change(theirs.twinId, "Off"), "not_found");
      await expectTwinningError(change(theirs.twinId, "On"), "not_found");
      await expectTwinningError(change(gone.twinId, "Off"), "not_found");
      await expectTwinningError(change(uuid(), "Off"), "not_found");
      expect(await store.getTwin(theirs.twinId)).toMatchObject({ status: "On", version: theirs.version });
      expect(await store.latestNotificationId()).toBe(latest);
      const result = await change(mine.twinId, "Off");
      expect(result).toMatchObject({ changed: true, twin: { twinId: mine.twinId, status: "Off", version: mine.version + 1 } });
      expect(await change(mine.twinId, "Off")).toMatchObject({ changed: false, twin: { status: "Off", version: mine.version + 1 } });
      await store.deactivateTwin({ twinId: mine.twinId, changedBy: "primary", nowMs: T0 + 3 * SECOND });
      await expectTwinningError(change(mine.twinId, "On"), "update_not_allowed");
    });

    it("HLF-TE-004 a deactivated twin leaves lists and finds; getTwin still returns it with active:false", async () => {
      const { store } = h();
      const twin = await activated(store, P1, S1, { name: "Watch" });
      const result = await store.deactivateTwin({ twinId: twin.twinId, changedBy: "secondary", nowMs: T0 + SECOND });
      expect(result.changed).toBe(true);
      expect(result.twin).toMatchObject({ twinId: twin.twinId, active: false });
      expect(result.notifications).toHaveLength(1);
      expect(result.notifications[0]).toMatchObject({ recipientAddress: P1, recipientRole: "primary", type: "twinningDeactivatedNotification", content: { changedBy: "secondary" } });
      expect(await store.listTwinsOfPrimary(P1)).toEqual([]);
      expect(await store.findTwinOfPrimary(P1, { kind: "twinId", twinId: twin.twinId })).toBeUndefined();
      expect(await store.findTwinOfPrimary(P1, { kind: "name", name: "Watch" })).toBeUndefined();
      expect(await store.findTwinOfSecondary(S1)).toBeUndefined();
      expect(await store.getTwin(twin.twinId)).toMatchObject({ twinId: twin.twinId, primaryAddress: P1, secondaryAddress: S1, active: false });
      // The name is free again for a new twin of the same primary.
      expect((await activated(store, P1, S2, { name: "Watch", nowMs: T0 + 2 * SECOND })).name).toBe("Watch");
    });

    it("POL1038 a deactivated twin cannot change: update_not_allowed for status, rename and deactivation", async () => {
      const { store } = h();
      const twin = await activated(store, P1, S1);
      await store.deactivateTwin({ twinId: twin.twinId, changedBy: "primary", nowMs: T0 + SECOND });
      const latest = await store.latestNotificationId();
      await expectTwinningError(store.changeTwinStatus({ twinId: twin.twinId, status: "Off", changedBy: "primary", origin: OP, nowMs: T0 + 2 * SECOND }), "update_not_allowed");
      await expectTwinningError(store.renameTwin({ twinId: twin.twinId, name: "Car", nowMs: T0 + 2 * SECOND }), "update_not_allowed");
      await expectTwinningError(store.deactivateTwin({ twinId: twin.twinId, changedBy: "secondary", nowMs: T0 + 2 * SECOND }), "update_not_allowed");
      expect(await store.getTwin(twin.twinId)).toMatchObject({ status: "On", active: false });
      expect(await store.latestNotificationId()).toBe(latest);
    });

    it("HLF-TE-007 a federated twin at the primary's side: a chosen name already used is refused, a default one taken meanwhile becomes the next free default", async () => {
      const { store } = h();
      await activated(store, P1, S1, { name: "twin-1" });
      const federated = (name: string, nameIsDefault: boolean, secondary: string) =>
        store.insertFederatedTwin({
          twin: { twinId: uuid(), primaryAddress: P1, primaryOperatorId: OP, secondaryAddress: secondary, secondaryOperatorId: OTHER_OP, name, status: "On", version: 1, statusOrigin: OP },
          localSide: "primary",
          nameIsDefault,
          nowMs: T0 + SECOND,
          maxTwinsPerPrimary: 10,
        });
      await expectTwinningError(federated("twin-1", false, "tel:+19990000001"), "invalid_input");
      expect((await federated("twin-1", true, "tel:+19990000002")).twin.name).toBe("twin-2");
    });

    it("HLF-IC-004 a federated twin whose peer side is a subscriber of ours, or the other side's own address, is refused and nothing is written", async () => {
      const { store } = h();
      await store.putSubscriber({ address: S1, twinningEnabled: true, credentialHash: "scrypt:a", updatedAtMs: T0 }, OP);
      const latest = await store.latestNotificationId();
      const federated = (localSide: "primary" | "secondary", primaryAddress: string, secondaryAddress: string) =>
        store.insertFederatedTwin({
          twin: {
            twinId: uuid(),
            primaryAddress,
            primaryOperatorId: localSide === "primary" ? OP : OTHER_OP,
            secondaryAddress,
            secondaryOperatorId: localSide === "primary" ? OTHER_OP : OP,
            name: "watch",
            status: "On",
            version: 1,
            statusOrigin: OP,
          },
          localSide,
          nowMs: T0 + SECOND,
          maxTwinsPerPrimary: 10,
        });
      // A peer's answer to our activation naming our own subscriber, or our primary itself, as its secondary.
      await expectTwinningError(federated("primary", P1, S1), "peer_unreachable");
      await expectTwinningError(federated("primary", P1, P1), "peer_unreachable");
      // A peer's activation naming our subscriber as its primary.
      await expectTwinningError(federated("secondary", S1, S2), "access_denied");
      await expectTwinningError(federated("secondary", S2, S2), "access_denied");
      expect(await store.findTwinOfSecondary(S1)).toBeUndefined();
      expect(await store.listTwinsOfPrimary(P1)).toEqual([]);
      expect(await store.latestNotificationId()).toBe(latest);
      // The same twins with the peer's own addresses are created.
      expect((await federated("primary", P1, "tel:+19990000003")).twin.active).toBe(true);
      expect((await federated("secondary", "tel:+19990000004", S2)).twin.active).toBe(true);
    });

    it("HLF-TE-007 at the secondary's side a remote primary's names are not checked (they may be stale there)", async () => {
      const { store } = h();
      const remote = (secondary: string) =>
        store.insertFederatedTwin({
          twin: { twinId: uuid(), primaryAddress: "tel:+19990000009", primaryOperatorId: OTHER_OP, secondaryAddress: secondary, secondaryOperatorId: OP, name: "watch", status: "On", version: 1, statusOrigin: OTHER_OP },
          localSide: "secondary",
          nowMs: T0,
          maxTwinsPerPrimary: 10,
        });
      await remote(S1);
      expect((await remote(S2)).twin.name).toBe("watch");
    });

    it("HLF-IC-005 toggles at both operators' nodes, each side's messages delivered in order at any interleaving, converge to one status, version and origin (last writer wins)", async () => {
      // Two stores, one per operator, for each generated schedule of local toggles and deliveries.
      const step = fc.constantFrom("A toggles", "B toggles", "deliver to B", "deliver to A");
      await fc.assert(
        fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 14 }), async (schedule) => {
          const [a, b] = [await makeStore(), await makeStore()];
          try {
            const twin = { twinId: uuid(), primaryAddress: P1, primaryOperatorId: OP, secondaryAddress: "tel:+19990000021", secondaryOperatorId: OTHER_OP, name: "watch", status: "On" as const, version: 1, statusOrigin: OP };
            await a.store.insertFederatedTwin({ twin, localSide: "primary", nowMs: T0, maxTwinsPerPrimary: 10 });
            await b.store.insertFederatedTwin({ twin, localSide: "secondary", nowMs: T0, maxTwinsPerPrimary: 10 });
            type Side = { store: TwinningStore; own: string; role: TwinRole; sent: { status: TwinStatus; version: number }[] };
            const side: { A: Side; B: Side } = { A: { store: a.store, own: OP, role: "primary", sent: [] }, B: { store: b.store, own: OTHER_OP, role: "secondary", sent: [] } };
            const toggle = async (x: Side) => {
              const current = (await x.store.getTwin(twin.twinId))!;
              const { twin: after } = await x.store.changeTwinStatus({ twinId: twin.twinId, status: current.status === "On" ? "Off" : "On", changedBy: x.role, origin: x.own, nowMs: T0 + 1 });
              x.sent.push({ status: after.status, version: after.version });
            };
            const deliver = async (from: Side, to: Side) => {
              const m = from.sent.shift();
              if (m) await to.store.applyRemoteStatus({ twinId: twin.twinId, ...m, fromOperatorId: from.own, ownOperatorId: to.own, nowMs: T0 + 2 });
            };
            for (const s of schedule) {
              if (s === "A toggles") await toggle(side.A);
              else if (s === "B toggles") await toggle(side.B);
              else if (s === "deliver to B") await deliver(side.A, side.B);
              else await deliver(side.B, side.A);
            }
            while (side.A.sent.length > 0) await deliver(side.A, side.B);
            while (side.B.sent.length > 0) await deliver(side.B, side.A);
            const [x, y] = [(await a.store.getTwin(twin.twinId))!, (await b.store.getTwin(twin.twinId))!];
            expect([y.status, y.version, y.statusOrigin], schedule.join(", ")).toEqual([x.status, x.version, x.statusOrigin]);
          } finally {
            await a.cleanup();
            await b.cleanup();
          }
        }),
        { numRuns: 60, seed: 20261125 },
      );
    });

    it("HLF-IC-006 a remote primary's service endpoints are kept with the twin activated here as the secondary, by either path; none named, none kept", async () => {
      const { store } = h();
      const endpoints = { messaging: "https://messaging.op2.example/v1", nms: "https://nms.op2.example/v1" };
      const inserted = await store.insertFederatedTwin({
        twin: { twinId: uuid(), primaryAddress: "tel:+19990000011", primaryOperatorId: OTHER_OP, secondaryAddress: S1, secondaryOperatorId: OP, name: "watch", status: "On", version: 1, statusOrigin: OTHER_OP },
        localSide: "secondary",
        nowMs: T0,
        maxTwinsPerPrimary: 10,
        primaryServiceEndpoints: endpoints,
      });
      expect(await store.primaryServiceEndpoints(inserted.twin.twinId)).toEqual(endpoints);
      // A peer's primary redeeming our code.
      const redeemed = await activated(store, "tel:+19990000012", S2, { primaryOperatorId: OTHER_OP, primaryServiceEndpoints: { ...endpoints, nms: "https://nms2.op2.example/v1" } });
      expect(await store.primaryServiceEndpoints(redeemed.twinId)).toEqual({ ...endpoints, nms: "https://nms2.op2.example/v1" });
      const without = await activated(store, "tel:+19990000013", "tel:+15550009913", { primaryOperatorId: OTHER_OP });
      expect(await store.primaryServiceEndpoints(without.twinId)).toBeUndefined();
      // Both sides local: the primary's endpoints are this node's own, nothing is kept.
      const local = await activated(store, P1, "tel:+15550009914", { primaryServiceEndpoints: endpoints });
      expect(await store.primaryServiceEndpoints(local.twinId)).toBeUndefined();
    });

    it("a peer's deactivation of a twin not known yet refuses that twin's late activation, until prune drops it after the retention", async () => {
      const { store } = h();
      const twinId = uuid();
      const remote = (nowMs: number) =>
        store.insertFederatedTwin({
          twin: { twinId, primaryAddress: "tel:+19990000019", primaryOperatorId: OTHER_OP, secondaryAddress: S1, secondaryOperatorId: OP, name: "watch", status: "On", version: 1, statusOrigin: OTHER_OP },
          localSide: "secondary",
          nowMs,
          maxTwinsPerPrimary: 10,
        });
      expect(await store.applyRemoteDeactivation({ twinId, fromOperatorId: OTHER_OP, ownOperatorId: OP, nowMs: T0 })).toBeUndefined();
      await expectTwinningError(remote(T0 + SECOND), "update_not_allowed");
      // Kept at least an hour, however short the notifications' retention.
      await store.prune({ nowMs: T0 + 59 * MINUTE, notificationRetentionMs: MINUTE, attemptWindowMs: MINUTE, deadLetterRetentionMs: 365 * 24 * 60 * MINUTE });
      await expectTwinningError(remote(T0 + 59 * MINUTE), "update_not_allowed");
      await store.prune({ nowMs: T0 + 2 * 60 * MINUTE, notificationRetentionMs: 60 * MINUTE, attemptWindowMs: MINUTE, deadLetterRetentionMs: 365 * 24 * 60 * MINUTE });
      expect((await remote(T0 + 2 * 60 * MINUTE)).twin.twinId).toBe(twinId);
    });

    it("listActiveTwins lists every active twin, oldest first, without deactivated ones, up to limit", async () => {
      const { store } = h();
      const a = await activated(store, P1, S1, { nowMs: T0 });
      const b = await activated(store, P2, S2, { nowMs: T0 + SECOND });
      const c = await activated(store, P1, S3, { nowMs: T0 + 2 * SECOND, name: "third" });
      await store.deactivateTwin({ twinId: b.twinId, changedBy: "primary", nowMs: T0 + 3 * SECOND });
      expect((await store.listActiveTwins(10)).map((t) => t.twinId)).toEqual([a.twinId, c.twinId]);
      expect(await store.listActiveTwins(1)).toHaveLength(1);
      // Pages after a cursor: the last twin of the previous page, even one deactivated since.
      expect((await store.listActiveTwins(1, a.twinId)).map((t) => t.twinId)).toEqual([c.twinId]);
      expect((await store.listActiveTwins(10, b.twinId)).map((t) => t.twinId)).toEqual([c.twinId]);
      expect(await store.listActiveTwins(10, c.twinId)).toEqual([]);
      await expectTwinningError(store.listActiveTwins(10, uuid()), "invalid_input");
      // Twins created in the same millisecond are ordered by id, and none is skipped or repeated.
      const same = [await activated(store, "tel:+15550000031", "tel:+15550000131", { nowMs: T0 + 4 * SECOND }), await activated(store, "tel:+15550000032", "tel:+15550000132", { nowMs: T0 + 4 * SECOND })];
      const paged: string[] = [];
      for (let page = await store.listActiveTwins(1); page.length > 0; page = await store.listActiveTwins(1, paged[paged.length - 1])) paged.push(page[0]!.twinId);
      expect(paged).toEqual([a.twinId, c.twinId, ...same.map((t) => t.twinId).sort()]);
    });
  });

  describe("subscriptions and notifications", () => {
    const h = useStore(makeStore);

    it("HLF-CM-005 createSubscription stores a subscription that get and list return for its address and role", async () => {
      const { store } = h();
      const record = subscription(S1, "secondary", { callbackData: "abc" });
      expect(await store.createSubscription({ subscription: record, maxPerSubscriber: 5 })).toEqual({ subscription: record, replayed: false });
      expect(await store.getSubscription(S1, "secondary", record.subscriptionId, T0)).toEqual(record);
      expect(await store.listSubscriptions(S1, "secondary", T0)).toEqual([record]);
      expect(await store.getSubscription(S1, "primary", record.subscriptionId, T0)).toBeUndefined();
      expect(await store.getSubscription(S2, "secondary", record.subscriptionId, T0)).toBeUndefined();
      expect(await store.listSubscriptions(S1, "primary", T0)).toEqual([]);
      const forever = await subscribe(store, S1, "secondary", { expiresAtMs: undefined, createdAtMs: T0 + SECOND });
      expect(await store.listSubscriptions(S1, "secondary", T0 + 365 * 24 * 60 * MINUTE)).toEqual([forever]);
    });

    it("HLF-CM-005 deleteSubscriber also removes the subscriber's subscriptions in both roles, and no one else's", async () => {
      const { store } = h();
      for (const address of [S1, S2]) await store.putSubscriber({ address, twinningEnabled: true, credentialHash: "scrypt:a", updatedAtMs: T0 }, OP);
      await subscribe(store, S1, "secondary");
      await subscribe(store, S1, "primary");
      const others = await subscribe(store, S2, "secondary");
      expect(await store.deleteSubscriber({ address: S1, ownOperatorId: OP, nowMs: T0 })).toMatchObject({ deleted: true });
      expect([await store.listSubscriptions(S1, "secondary", T0), await store.listSubscriptions(S1, "primary", T0)]).toEqual([[], []]);
      expect(await store.listSubscriptions(S2, "secondary", T0)).toEqual([others]);
    });

    it("HLF-TE-004 deleteSubscriber ends the subscriber's twins (the other side notified here or sent a deactivation) and deletes its queued callbacks and its notification feed", async () => {
      const { store } = h();
      const provision = (address: string) => store.putSubscriber({ address, twinningEnabled: true, credentialHash: "scrypt:a", updatedAtMs: T0 }, OP);
      for (const address of [P1, S1, S3]) await provision(address);
      const local = await activated(store, P1, S1);
      // P1's twin with another operator's secondary S2.
      const { twin: across } = await store.insertFederatedTwin({
        twin: { twinId: uuid(), primaryAddress: P1, primaryOperatorId: OP, secondaryAddress: S2, secondaryOperatorId: OTHER_OP, name: "car", status: "On", version: 1, statusOrigin: OP },
        localSide: "primary",
        nowMs: T0 + SECOND,
        maxTwinsPerPrimary: 10,
      });
      const untouched = await activated(store, P2, S3, { nowMs: T0 + 2 * SECOND });
      const callback = await subscribe(store, P1, "primary");
      await store.changeTwinStatus({ twinId: local.twinId, primaryAddress: P1, status: "Off", changedBy: "secondary", origin: OP, nowMs: T0 + 3 * SECOND });
      expect((await store.notificationsAfter(P1, "primary", 0, 10)).length).toBe(1);
      expect((await store.dueOutboxHeads(T0 + 3 * SECOND, 10)).some((e) => e.lane === `callback:${callback.subscriptionId}`)).toBe(true);

      const change = await store.deleteSubscriber({ address: P1, ownOperatorId: OP, nowMs: T0 + 4 * SECOND });
      expect(change.deleted).toBe(true);
      expect(change.endedTwins.map((t) => t.twinId).sort()).toEqual([local.twinId, across.twinId].sort());
      expect(await store.findTwinOfSecondary(S1)).toBeUndefined();
      expect(await store.listTwinsOfPrimary(P1)).toEqual([]);
      expect((await store.findTwinOfSecondary(S3))?.twinId).toBe(untouched.twinId);
      // S1 hears that its primary ended the twin.
      expect(change.notifications).toEqual([expect.objectContaining({ recipientAddress: S1, type: "twinningDeactivatedNotification" })]);
      expect((await store.notificationsAfter(S1, "secondary", 0, 10)).at(-1)?.type).toBe("twinningDeactivatedNotification");
      // Whoever gets the number next inherits no history and no queued callback.
      expect(await store.notificationsAfter(P1, "primary", 0, 10)).toEqual([]);
      const heads = await store.dueOutboxHeads(T0 + 4 * SECOND, 10);
      expect(heads.some((e) => e.lane === `callback:${callback.subscriptionId}`)).toBe(false);
      // S2's operator is sent the deactivation.
      expect(heads.filter((e) => e.kind === "peer").map((e) => [e.target, JSON.parse(e.payload).method, JSON.parse(e.payload).path])).toEqual([[OTHER_OP, "DELETE", `/twins/${across.twinId}`]]);
    });

    it("HLF-TE-004 putSubscriber of a new number ends a twin that names it as another operator's subscriber: that operator is sent a deactivation, our party notified; an update ends nothing", async () => {
      const { store } = h();
      await store.putSubscriber({ address: S1, twinningEnabled: true, credentialHash: "scrypt:a", updatedAtMs: T0 }, OP);
      // A peer's twin: its primary P1 (claimed as OTHER_OP's subscriber), our secondary S1.
      const claimed = await activated(store, P1, S1, { primaryOperatorId: OTHER_OP });
      const change = await store.putSubscriber({ address: P1, twinningEnabled: true, credentialHash: "scrypt:b", updatedAtMs: T0 + SECOND }, OP);
      expect(change.created).toBe(true);
      expect(change.endedTwins.map((t) => t.twinId)).toEqual([claimed.twinId]);
      expect(change.queued).toBe(true);
      expect(await store.findTwinOfSecondary(S1)).toBeUndefined();
      expect(change.notifications).toEqual([expect.objectContaining({ recipientAddress: S1, recipientRole: "secondary", type: "twinningDeactivatedNotification" })]);
      const sent = (await store.dueOutboxHeads(T0 + SECOND, 10)).filter((e) => e.kind === "peer");
      expect(sent.map((e) => [e.target, JSON.parse(e.payload).method, JSON.parse(e.payload).path])).toEqual([[OTHER_OP, "DELETE", `/twins/${claimed.twinId}`]]);
      // Our own twins of the number, and updates, end nothing.
      await store.putSubscriber({ address: S2, twinningEnabled: true, credentialHash: "scrypt:a", updatedAtMs: T0 + 2 * SECOND }, OP);
      const ours = await activated(store, P1, S2, { nowMs: T0 + 2 * SECOND });
      expect(await store.putSubscriber({ address: P1, twinningEnabled: true, credentialHash: "scrypt:c", updatedAtMs: T0 + 3 * SECOND }, OP)).toMatchObject({ created: false, endedTwins: [] });
      expect((await store.findTwinOfSecondary(S2))?.twinId).toBe(ours.twinId);
    });

    it("HLF-CM-006 every putSubscriber and deleteSubscriber end what the previous provisioning opened: its pending codes (its own and a peer's copies), its subscriptions with their queued callbacks, its clientCorrelators", async () => {
      const { store } = h();
      const provision = (at: number) => store.putSubscriber({ address: S1, twinningEnabled: true, credentialHash: `scrypt:${at}`, updatedAtMs: at }, OP);
      const correlator = { subscriber: S1, operation: "activationCode", key: "k1", fingerprint: "f1", replayData: "sealed" };
      for (const [step, end] of [
        ["a credential change", () => provision(T0 + MINUTE)],
        ["a de-provisioning", () => store.deleteSubscriber({ address: S1, ownOperatorId: OP, nowMs: T0 + MINUTE })],
      ] as const) {
        await provision(T0);
        const own = newCode();
        await issued(store, S1, own, { correlator });
        // A code the peer issued to S1 (its primary redeems it there; the activation then consumes this copy).
        await issued(store, S1, newCode(), { issuerOperatorId: OTHER_OP });
        const callback = await subscribe(store, S1, "secondary");
        await end();
        const at = T0 + 2 * MINUTE;
        expect((await store.redeemActivationCode(redeemInput(P1, own, { nowMs: at }))).kind, step).toBe("invalid-code");
        await expectTwinningError(
          store.insertFederatedTwin({
            twin: { twinId: uuid(), primaryAddress: P2, primaryOperatorId: OTHER_OP, secondaryAddress: S1, secondaryOperatorId: OP, name: "watch", status: "On", version: 1, statusOrigin: OTHER_OP },
            localSide: "secondary",
            nowMs: at,
            maxTwinsPerPrimary: 10,
            consumeRemoteCodeFrom: OTHER_OP,
          }),
          "invalid_code",
        );
        expect(await store.listSubscriptions(S1, "secondary", at), step).toEqual([]);
        expect((await store.dueOutboxHeads(at, 10)).some((e) => e.lane === `callback:${callback.subscriptionId}`), step).toBe(false);
        // The correlator gets a fresh code, not the previous provisioning's.
        expect((await store.issueActivationCode({ codeId: uuid(), secondaryAddress: S1, secondaryOperatorId: OP, issuerOperatorId: OP, codeHash: `hash:${newCode()}`, nowMs: at, expiresAtMs: at + MINUTE, correlator })).kind, step).toBe("issued");
        await store.deleteSubscriber({ address: S1, ownOperatorId: OP, nowMs: at });
      }
    });

    it("HLF-CM-006 putSubscriber of a new number ends the twins that name it as ours (made by a request authenticated before the number was de-provisioned): the other party is notified", async () => {
      const { store } = h();
      // S2 is not provisioned: its twin is what a request that outlived the de-provisioning left.
      const left = await activated(store, P1, S2);
      const change = await store.putSubscriber({ address: S2, twinningEnabled: true, credentialHash: "scrypt:new", updatedAtMs: T0 + SECOND }, OP);
      expect(change.endedTwins.map((t) => t.twinId)).toEqual([left.twinId]);
      expect(await store.findTwinOfSecondary(S2)).toBeUndefined();
      expect(change.notifications).toEqual([expect.objectContaining({ recipientAddress: P1, recipientRole: "primary", type: "twinningDeactivatedNotification" })]);
    });

    it("deleteSubscription removes only the subscriber's own subscription", async () => {
      const { store } = h();
      const record = await subscribe(store, S1, "secondary");
      expect(await store.deleteSubscription(S2, "secondary", record.subscriptionId, T0)).toBe(false);
      expect(await store.deleteSubscription(S1, "primary", record.subscriptionId, T0)).toBe(false);
      expect(await store.deleteSubscription(S1, "secondary", record.subscriptionId, T0)).toBe(true);
      expect(await store.getSubscription(S1, "secondary", record.subscriptionId, T0)).toBeUndefined();
      expect(await store.listSubscriptions(S1, "secondary", T0)).toEqual([]);
      expect(await store.deleteSubscription(S1, "secondary", record.subscriptionId, T0)).toBe(false);
    });

    it("list and get exclude expired subscriptions", async () => {
      const { store } = h();
      const short = await subscribe(store, S1, "secondary", { expiresAtMs: T0 + MINUTE });
      const long = await subscribe(store, S1, "secondary", { expiresAtMs: T0 + 2 * MINUTE });
      expect(await store.listSubscriptions(S1, "secondary", T0 + MINUTE - 1)).toEqual([short, long]);
      expect(await store.listSubscriptions(S1, "secondary", T0 + MINUTE)).toEqual([long]);
      expect(await store.getSubscription(S1, "secondary", short.subscriptionId, T0 + MINUTE)).toBeUndefined();
      expect(await store.getSubscription(S1, "secondary", long.subscriptionId, T0 + MINUTE)).toEqual(long);
    });

    it("deleteSubscription of an expired subscription removes it and answers false, as getSubscription already would not find it", async () => {
      const { store } = h();
      const short = await subscribe(store, S1, "secondary", { expiresAtMs: T0 + MINUTE });
      expect(await store.deleteSubscription(S1, "secondary", short.subscriptionId, T0 + MINUTE)).toBe(false);
      // Removed all the same: nothing is left to find even at a time it would have been live.
      expect(await store.getSubscription(S1, "secondary", short.subscriptionId, T0)).toBeUndefined();
      const live = await subscribe(store, S1, "secondary", { expiresAtMs: T0 + MINUTE });
      expect(await store.deleteSubscription(S1, "secondary", live.subscriptionId, T0 + MINUTE - 1)).toBe(true);
    });

    it("HLF-CM-006 subscriptions are capped per subscriber and role (policy_error); expired ones do not count", async () => {
      const { store } = h();
      await store.createSubscription({ subscription: subscription(S1, "secondary", { expiresAtMs: T0 + MINUTE }), maxPerSubscriber: 2 });
      await store.createSubscription({ subscription: subscription(S1, "secondary"), maxPerSubscriber: 2 });
      const third = subscription(S1, "secondary");
      const error = await expectTwinningError(store.createSubscription({ subscription: third, maxPerSubscriber: 2 }), "policy_error");
      expect(error.messageId).toBe("POL0001");
      expect(await store.getSubscription(S1, "secondary", third.subscriptionId, T0)).toBeUndefined();
      // Another role of the same address has its own count; an expired subscription frees its slot.
      expect((await store.createSubscription({ subscription: subscription(S1, "primary"), maxPerSubscriber: 2 })).replayed).toBe(false);
      const later = subscription(S1, "secondary", { createdAtMs: T0 + MINUTE });
      expect(await store.createSubscription({ subscription: later, maxPerSubscriber: 2 })).toEqual({ subscription: later, replayed: false });
    });

    it("the same clientCorrelator replays the first subscription; a different request is correlator_conflict", async () => {
      const { store } = h();
      const correlator = { subscriber: S1, operation: "subscription:secondary", key: "corr-1", fingerprint: "fp-1" };
      const first = subscription(S1, "secondary");
      await store.createSubscription({ subscription: first, maxPerSubscriber: 5, correlator });
      const retry = subscription(S1, "secondary", { createdAtMs: T0 + SECOND });
      expect(await store.createSubscription({ subscription: retry, maxPerSubscriber: 5, correlator })).toEqual({ subscription: first, replayed: true });
      expect(await store.listSubscriptions(S1, "secondary", T0 + SECOND)).toEqual([first]);
      await expectTwinningError(
        store.createSubscription({ subscription: subscription(S1, "secondary"), maxPerSubscriber: 5, correlator: { ...correlator, fingerprint: "fp-2" } }),
        "correlator_conflict",
      );
    });

    it("a clientCorrelator whose subscription was deleted creates a new subscription instead of failing in storage", async () => {
      const { store } = h();
      const correlator = { subscriber: S1, operation: "subscription:secondary", key: "corr-1", fingerprint: "fp-1" };
      const first = subscription(S1, "secondary");
      await store.createSubscription({ subscription: first, maxPerSubscriber: 5, correlator });
      await store.deleteSubscription(S1, "secondary", first.subscriptionId, T0);
      const retry = subscription(S1, "secondary", { createdAtMs: T0 + SECOND });
      expect(await store.createSubscription({ subscription: retry, maxPerSubscriber: 5, correlator })).toEqual({ subscription: retry, replayed: false });
      expect(await store.listSubscriptions(S1, "secondary", T0 + SECOND)).toEqual([retry]);
    });

    it("HLF-CM-005 notificationsAfter returns one subscriber's feed in id order, after afterId, up to limit", async () => {
      const { store } = h();
      expect(await store.latestNotificationId()).toBe(0);
      const twin = await activated(store, P1, S1);
      await activated(store, P2, S2); // another secondary's feed
      for (const [i, status] of (["Off", "On", "Off"] as const).entries()) {
        await store.changeTwinStatus({ twinId: twin.twinId, status, changedBy: "primary", origin: OP, nowMs: T0 + (i + 1) * SECOND });
      }
      const feed = await store.notificationsAfter(S1, "secondary", 0, 100);
      expect(feed.map((n) => [n.type, n.content.status])).toEqual([
        ["twinningActivatedNotification", "On"],
        ["twinningStatusNotification", "Off"],
        ["twinningStatusNotification", "On"],
        ["twinningStatusNotification", "Off"],
      ]);
      const ids = feed.map((n) => n.id);
      expect([...ids].sort((a, b) => a - b)).toEqual(ids);
      expect(new Set(ids).size).toBe(4);
      expect(feed.every((n) => n.recipientAddress === S1 && n.recipientRole === "secondary")).toBe(true);
      expect(await store.notificationsAfter(S1, "secondary", ids[1]!, 100)).toEqual(feed.slice(2));
      expect(await store.notificationsAfter(S1, "secondary", ids[0]!, 2)).toEqual(feed.slice(1, 3));
      expect(await store.notificationsAfter(S1, "secondary", ids[3]!, 100)).toEqual([]);
      expect(await store.notificationsAfter(S1, "primary", 0, 100)).toEqual([]);
      expect(await store.latestNotificationId()).toBe(ids[3]);
    });
  });
}
