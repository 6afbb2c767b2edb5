import { describe, expect, it } from "vitest";
import type { TwinningStore } from "../../node/store/store-port.ts";
import type { Twin } from "../../node/domain/twin.ts";
import { provisioningStamp } from "../../node/tokens/credentials.ts";
import { localPrimaryBudgetKey } from "../../node/domain/activation-code.ts";
import { deliveryContract } from "./store-contract-delivery.ts";
import { durabilityContract } from "./store-contract-durability.ts";
import { twinContract } from "./store-contract-twins.ts";
import {
  activated,
  CODE_TTL_MS,
  codeInput,
  expectTwinningError,
  hashOf,
  issued,
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
  T0,
  useStore,
  uuid,
  WINDOW_MS,
  type MakeStore,
} from "./store-fixtures.ts";

/**
 * The shared suite of the storage port (STYLE habit 5): every implementation of
 * TwinningStore runs it unchanged, through the public interface only. `makeStore` gives a
 * fresh, empty store per test; with `reopen`, the durability tests also run.
 */
export function runStoreContract(
  name: string,
  makeStore: () => Promise<{ store: TwinningStore; reopen?: () => Promise<TwinningStore>; cleanup: () => Promise<void> }>,
): void {
  describe(`TwinningStore contract: ${name}`, () => {
    subscriberContract(makeStore);
    codeContract(makeStore);
    redemptionContract(makeStore);
    twinContract(makeStore);
    deliveryContract(makeStore);
    durabilityContract(makeStore);
    freshReadsContract(makeStore);
  });
}

/**
 * An implementation may keep reads in memory (the SQLite store does, between writes): a read
 * made before a write must never hide that write afterwards. Each read is made first, then the
 * write, then the read again.
 */
function freshReadsContract(makeStore: MakeStore): void {
  describe("reads after writes", () => {
    const h = useStore(makeStore);

    it("a subscriber read before its update or deletion is never served after it", async () => {
      const { store } = h();
      await store.putSubscriber({ address: S1, twinningEnabled: true, credentialHash: "scrypt:a", updatedAtMs: T0 }, OP);
      expect((await store.getSubscriber(S1))?.twinningEnabled).toBe(true);
      await store.putSubscriber({ address: S1, twinningEnabled: false, credentialHash: "scrypt:a", updatedAtMs: T0 + 1 }, OP);
      expect((await store.getSubscriber(S1))?.twinningEnabled).toBe(false);
      await store.deleteSubscriber({ address: S1, ownOperatorId: OP, nowMs: T0 });
      expect(await store.getSubscriber(S1)).toBeUndefined();
      expect(await store.getSubscriber(S2)).toBeUndefined();
      await store.putSubscriber({ address: S2, twinningEnabled: true, credentialHash: "scrypt:b", updatedAtMs: T0 }, OP);
      expect((await store.getSubscriber(S2))?.address).toBe(S2);
    });

    it("twin reads made before a toggle, rename, activation or deactivation show it right after", async () => {
      const { store } = h();
      const twin = await activated(store, P1, S1);
      const reads = async () => ({
        list: await store.listTwinsOfPrimary(P1),
        byId: await store.getTwin(twin.twinId),
        ofPrimary: await store.findTwinOfPrimary(P1, { kind: "twinId", twinId: twin.twinId }),
        bySecondary: await store.findTwinOfPrimary(P1, { kind: "secondary", address: S1 }),
        ofSecondary: await store.findTwinOfSecondary(S1),
      });
      expect((await reads()).list.map((t) => t.status)).toEqual(["On"]);
      await store.changeTwinStatus({ twinId: twin.twinId, status: "Off", changedBy: "primary", origin: OP, nowMs: T0 + SECOND });
      const off = await reads();
      expect([off.list[0]?.status, off.byId?.status, off.ofPrimary?.status, off.bySecondary?.status, off.ofSecondary?.status]).toEqual(["Off", "Off", "Off", "Off", "Off"]);
      expect(await store.findTwinOfPrimary(P1, { kind: "name", name: "Watch" })).toBeUndefined();
      await store.renameTwin({ twinId: twin.twinId, name: "Watch", nowMs: T0 + 2 * SECOND });
      expect((await store.findTwinOfPrimary(P1, { kind: "name", name: "Watch" }))?.twinId).toBe(twin.twinId);
      expect((await reads()).list.map((t) => t.name)).toEqual(["Watch"]);
      expect(await store.findTwinOfSecondary(S2)).toBeUndefined();
      const second = await activated(store, P1, S2, { nowMs: T0 + 3 * SECOND });
      expect((await store.findTwinOfSecondary(S2))?.twinId).toBe(second.twinId);
      expect((await store.listTwinsOfPrimary(P1)).map((t) => t.twinId)).toEqual([twin.twinId, second.twinId]);
      await store.deactivateTwin({ twinId: twin.twinId, changedBy: "secondary", nowMs: T0 + 4 * SECOND });
      const gone = await reads();
      expect(gone.list.map((t) => t.twinId)).toEqual([second.twinId]);
      expect(gone.byId?.active).toBe(false);
      expect([gone.ofPrimary, gone.bySecondary, gone.ofSecondary]).toEqual([undefined, undefined, undefined]);
    });

    it("readVersion holds across reads and moves with every write to subscribers or twins (or is never known)", async () => {
      const { store } = h();
      const known = store.readVersion() !== undefined;
      let last = store.readVersion();
      const moved = async (write: () => Promise<unknown>) => {
        await write();
        const now = store.readVersion();
        if (!known) return expect(now).toBeUndefined();
        expect(now).not.toBe(last);
        last = now;
      };
      await moved(() => store.putSubscriber({ address: P1, twinningEnabled: true, credentialHash: "scrypt:a", updatedAtMs: T0 }, OP));
      let twin: Twin | undefined;
      await moved(async () => (twin = await activated(store, P1, S1)));
      await store.listTwinsOfPrimary(P1);
      await store.getSubscriber(P1);
      await store.findTwinOfSecondary(S1);
      expect(store.readVersion()).toBe(last);
      await moved(() => store.changeTwinStatus({ twinId: twin!.twinId, status: "Off", changedBy: "primary", origin: OP, nowMs: T0 + SECOND }));
      await moved(() => store.renameTwin({ twinId: twin!.twinId, name: "Watch", nowMs: T0 + 2 * SECOND }));
      await moved(() => store.deactivateTwin({ twinId: twin!.twinId, changedBy: "secondary", nowMs: T0 + 3 * SECOND }));
      await moved(() => store.putSubscriber({ address: P1, twinningEnabled: false, credentialHash: "scrypt:a", updatedAtMs: T0 + 4 * SECOND }, OP));
      await moved(() => store.deleteSubscriber({ address: P1, ownOperatorId: OP, nowMs: T0 }));
    });

    it("records handed out are not changed by later writes", async () => {
      const { store } = h();
      const twin = await activated(store, P1, S1);
      const before = await store.getTwin(twin.twinId);
      await store.changeTwinStatus({ twinId: twin.twinId, status: "Off", changedBy: "primary", origin: OP, nowMs: T0 + SECOND });
      expect(before?.status).toBe("On");
      expect((await store.getTwin(twin.twinId))?.status).toBe("Off");
    });
  });
}

function subscriberContract(makeStore: MakeStore): void {
  describe("subscribers", () => {
    const h = useStore(makeStore);

    it("putSubscriber creates, then updates; getSubscriber reads the latest record", async () => {
      const { store } = h();
      expect(await store.putSubscriber({ address: S1, twinningEnabled: true, credentialHash: "scrypt:a", updatedAtMs: T0 }, OP)).toMatchObject({ created: true, endedTwins: [] });
      expect(await store.putSubscriber({ address: S1, twinningEnabled: false, credentialHash: "scrypt:b", updatedAtMs: T0 + 1 }, OP)).toMatchObject({ created: false, endedTwins: [] });
      expect(await store.getSubscriber(S1)).toEqual({ address: S1, twinningEnabled: false, credentialHash: "scrypt:b", updatedAtMs: T0 + 1 });
      expect(await store.getSubscriber(S2)).toBeUndefined();
    });

    it("deleteSubscriber removes the record and tells whether there was one", async () => {
      const { store } = h();
      await store.putSubscriber({ address: S1, twinningEnabled: true, credentialHash: "scrypt:a", updatedAtMs: T0 }, OP);
      expect(await store.deleteSubscriber({ address: S1, ownOperatorId: OP, nowMs: T0 })).toMatchObject({ deleted: true });
      expect(await store.getSubscriber(S1)).toBeUndefined();
      expect(await store.deleteSubscriber({ address: S1, ownOperatorId: OP, nowMs: T0 })).toMatchObject({ deleted: false, endedTwins: [] });
    });
  });
}

function codeContract(makeStore: MakeStore): void {
  describe("activation codes", () => {
    const h = useStore(makeStore);

    it("HLF-SD-001 issueActivationCode stores a Pending code that only its secondary can read", async () => {
      const { store } = h();
      const input = codeInput(S1, newCode(), { issuerOperatorId: OTHER_OP });
      const result = await store.issueActivationCode(input);
      const expected = {
        codeId: input.codeId,
        secondaryAddress: S1,
        secondaryOperatorId: OP,
        issuerOperatorId: OTHER_OP,
        state: "Pending",
        expiresAtMs: T0 + CODE_TTL_MS,
        createdAtMs: T0,
        twinId: undefined,
      };
      expect(result).toEqual({ kind: "issued", code: expected });
      expect(await store.getActivationCode(S1, input.codeId, T0 + SECOND)).toEqual(expected);
      expect(await store.getActivationCode(S2, input.codeId, T0)).toBeUndefined();
      expect(await store.getActivationCode(S1, "00000000-0000-4000-8000-ffffffffffff", T0)).toBeUndefined();
    });

    it("HLF-TE-005 a code reads as Expired once nowMs reaches expiresAtMs", async () => {
      const { store } = h();
      const code = await issued(store, S1, newCode());
      expect((await store.getActivationCode(S1, code.codeId, code.expiresAtMs - 1))?.state).toBe("Pending");
      expect((await store.getActivationCode(S1, code.codeId, code.expiresAtMs))?.state).toBe("Expired");
    });

    it("HLF-TE-005 a new code supersedes the secondary's pending one, which reads as Expired and cannot be redeemed", async () => {
      const { store } = h();
      const first = newCode();
      const old = await issued(store, S1, first);
      const fresh = await issued(store, S1, newCode(), { nowMs: T0 + SECOND });
      expect((await store.getActivationCode(S1, old.codeId, T0 + 2 * SECOND))?.state).toBe("Expired");
      expect((await store.getActivationCode(S1, fresh.codeId, T0 + 2 * SECOND))?.state).toBe("Pending");
      expect(await store.redeemActivationCode(redeemInput(P1, first, { nowMs: T0 + 2 * SECOND }))).toEqual({ kind: "invalid-code" });
    });

    it("HLF-IC-003 maxPendingForOperator bounds the live codes held for one operator's secondaries, not counting the asking secondary's own or expired ones", async () => {
      const { store } = h();
      const forPeer = (secondary: string, nowMs: number) => codeInput(secondary, newCode(), { secondaryOperatorId: OTHER_OP, nowMs, maxPendingForOperator: 2 });
      await store.issueActivationCode(forPeer(S1, T0));
      await store.issueActivationCode(forPeer(S2, T0));
      await expectTwinningError(store.issueActivationCode(forPeer(S3, T0)), "policy_error");
      // S1 asks again: its own pending code is superseded, so it does not count.
      expect((await store.issueActivationCode(forPeer(S1, T0 + SECOND))).kind).toBe("issued");
      // Our own secondaries are not counted against the peer, nor the peer's against ours.
      expect((await store.issueActivationCode(codeInput(S4, newCode(), { maxPendingForOperator: 1 }))).kind).toBe("issued");
      // Once they expire they no longer count.
      expect((await store.issueActivationCode(forPeer(S3, T0 + CODE_TTL_MS + 2 * SECOND))).kind).toBe("issued");
    });

    it("issueActivationCode answers collision while another pending code of the same issuer has the same hash", async () => {
      const { store } = h();
      const code = newCode();
      const first = await issued(store, S1, code);
      const clash = codeInput(S2, code, { nowMs: T0 + SECOND });
      expect(await store.issueActivationCode(clash)).toEqual({ kind: "collision" });
      expect(await store.getActivationCode(S2, clash.codeId, T0 + SECOND)).toBeUndefined();
      // The first code is untouched; the same digits from another issuer are a different code.
      expect((await store.getActivationCode(S1, first.codeId, T0 + SECOND))?.state).toBe("Pending");
      expect((await store.issueActivationCode(codeInput(S2, code, { issuerOperatorId: OTHER_OP }))).kind).toBe("issued");
      // Once the first code has expired it no longer blocks its digits.
      expect((await store.issueActivationCode(codeInput(S3, code, { nowMs: first.expiresAtMs }))).kind).toBe("issued");
    });

    it("HLF-SD-002 the same clientCorrelator and request replays the first code instead of issuing another", async () => {
      const { store } = h();
      const correlator = { subscriber: S1, operation: "activationCode", key: "corr-1", fingerprint: "fp-1", replayData: "sealed-code" };
      const first = codeInput(S1, newCode(), { correlator });
      expect((await store.issueActivationCode(first)).kind).toBe("issued");
      const retry = codeInput(S1, newCode(), { correlator, nowMs: T0 + SECOND });
      const result = await store.issueActivationCode(retry);
      expect(result).toMatchObject({ kind: "replayed", code: { codeId: first.codeId, state: "Pending" }, replay: { resourceId: first.codeId, replayData: "sealed-code" } });
      expect(await store.getActivationCode(S1, retry.codeId, T0 + SECOND)).toBeUndefined();
      expect((await store.getActivationCode(S1, first.codeId, T0 + SECOND))?.state).toBe("Pending");
    });

    it("SVC0005 the same clientCorrelator with a different request is correlator_conflict", async () => {
      const { store } = h();
      const correlator = { subscriber: S1, operation: "activationCode", key: "corr-1", fingerprint: "fp-1" };
      await issued(store, S1, newCode(), { correlator });
      await expectTwinningError(store.issueActivationCode(codeInput(S1, newCode(), { correlator: { ...correlator, fingerprint: "fp-2" } })), "correlator_conflict");
    });

    it("HLF-TE-009 a secondary that is already twinned cannot get a code: secondary_already_twinned", async () => {
      const { store } = h();
      await activated(store, P1, S1);
      await expectTwinningError(store.issueActivationCode(codeInput(S1, newCode())), "secondary_already_twinned");
    });

    it("HLF-TE-008 an active primary cannot get a code as a secondary: role_mixture", async () => {
      const { store } = h();
      await activated(store, P1, S1);
      await expectTwinningError(store.issueActivationCode(codeInput(P1, newCode())), "role_mixture");
    });

    it("HLF-TE-004 once deactivated, the former secondary and primary may take either role again", async () => {
      const { store } = h();
      const twin = await activated(store, P1, S1);
      await store.deactivateTwin({ twinId: twin.twinId, changedBy: "primary", nowMs: T0 + SECOND });
      expect((await store.issueActivationCode(codeInput(S1, newCode(), { nowMs: T0 + 2 * SECOND }))).kind).toBe("issued");
      expect((await store.issueActivationCode(codeInput(P1, newCode(), { nowMs: T0 + 2 * SECOND }))).kind).toBe("issued");
    });
  });
}

function redemptionContract(makeStore: MakeStore): void {
  describe("code redemption", () => {
    const h = useStore(makeStore);

    it("HLF-TE-004 a request's subscriber is checked again in the write: de-provisioned or provisioned again since (a peer's round trip), a code, a redemption or a federated twin is invalid_token and leaves nothing", async () => {
      const { store } = h();
      const provision = async (address: string, hash: string) => store.putSubscriber({ address, twinningEnabled: true, credentialHash: hash, updatedAtMs: T0 }, OP);
      await provision(S1, "scrypt:s1");
      await provision(P1, "scrypt:p1");
      const stampOf = (hash: string) => provisioningStamp({ address: "", twinningEnabled: true, credentialHash: hash, updatedAtMs: 0 });
      // Provisioned as the request was authenticated: the write goes ahead.
      const code = newCode();
      const live = codeInput(S1, code, { provisionedParty: { address: S1, stamp: stampOf("scrypt:s1") } });
      expect((await store.issueActivationCode(live)).kind).toBe("issued");
      // Provisioned again (a new credential) during the request.
      const stale = codeInput(S1, newCode(), { provisionedParty: { address: S1, stamp: stampOf("scrypt:old") } });
      await expectTwinningError(store.issueActivationCode(stale), "invalid_token");
      expect(await store.getActivationCode(S1, stale.codeId, T0)).toBeUndefined();
      // P1 de-provisioned while its redemption was under way: the code stays Pending, no twin.
      await store.deleteSubscriber({ address: P1, ownOperatorId: OP, nowMs: T0 });
      const redeem = redeemInput(P1, code, { provisionedParty: { address: P1 } });
      await expectTwinningError(store.redeemActivationCode(redeem), "invalid_token");
      expect(await store.getTwin(redeem.twinId)).toBeUndefined();
      expect((await store.getActivationCode(S1, live.codeId, T0))?.state).toBe("Pending");
      const across = {
        twin: { twinId: uuid(), primaryAddress: P1, primaryOperatorId: OP, secondaryAddress: S2, secondaryOperatorId: OTHER_OP, name: "car", status: "On" as const, version: 1, statusOrigin: OP },
        localSide: "primary" as const,
        nowMs: T0,
        maxTwinsPerPrimary: 10,
      };
      await expectTwinningError(store.insertFederatedTwin({ ...across, provisionedParty: { address: P1 } }), "invalid_token");
      expect(await store.getTwin(across.twin.twinId)).toBeUndefined();
      // Provisioned with twinning switched off counts as not provisioned for twinning.
      await store.putSubscriber({ address: P1, twinningEnabled: false, credentialHash: "scrypt:p1b", updatedAtMs: T0 }, OP);
      await expectTwinningError(store.insertFederatedTwin({ ...across, provisionedParty: { address: P1, stamp: stampOf("scrypt:p1b") } }), "invalid_token");
      await provision(P1, "scrypt:p1c");
      expect((await store.insertFederatedTwin({ ...across, provisionedParty: { address: P1, stamp: stampOf("scrypt:p1c") } })).twin.twinId).toBe(across.twin.twinId);
    });

    it("HLF-PD-001 redeeming a pending code creates an On twin, uses the code and notifies the secondary", async () => {
      const { store } = h();
      const code = newCode();
      const record = await issued(store, S1, code);
      const input = redeemInput(P1, code, { nowMs: T0 + SECOND, primaryOperatorId: OTHER_OP, name: "Watch" });
      const result = await store.redeemActivationCode(input);
      if (result.kind !== "activated") throw new Error(`expected activated, got ${result.kind}`);
      expect(result.codeId).toBe(record.codeId);
      expect(result.twin).toEqual({
        twinId: input.twinId,
        primaryAddress: P1,
        primaryOperatorId: OTHER_OP,
        secondaryAddress: S1,
        secondaryOperatorId: OP,
        name: "Watch",
        status: "On",
        version: 1,
        statusOrigin: OTHER_OP,
        active: true,
        createdAtMs: T0 + SECOND,
        updatedAtMs: T0 + SECOND,
      });
      expect(result.notifications).toHaveLength(1);
      expect(result.notifications[0]).toMatchObject({
        recipientAddress: S1,
        recipientRole: "secondary",
        type: "twinningActivatedNotification",
        content: { twinId: input.twinId, primaryAddress: P1, secondaryAddress: S1, status: "On", changedBy: "primary", timestamp: new Date(T0 + SECOND).toISOString() },
      });
      expect(await store.notificationsAfter(S1, "secondary", 0, 10)).toEqual(result.notifications);
      expect(await store.getActivationCode(S1, record.codeId, T0 + 2 * SECOND)).toMatchObject({ state: "Used", twinId: input.twinId });
      // One use only (HLF-TE-005).
      expect(await store.redeemActivationCode(redeemInput(P2, code, { nowMs: T0 + 2 * SECOND }))).toEqual({ kind: "invalid-code" });
    });

    it("HLF-TE-005 an expired code, or a code of another issuer, is invalid-code", async () => {
      const { store } = h();
      const code = newCode();
      const record = await issued(store, S1, code);
      expect(await store.redeemActivationCode(redeemInput(P1, code, { issuerOperatorId: OTHER_OP }))).toEqual({ kind: "invalid-code" });
      expect(await store.redeemActivationCode(redeemInput(P1, code, { nowMs: record.expiresAtMs }))).toEqual({ kind: "invalid-code" });
      expect(await store.findTwinOfSecondary(S1)).toBeUndefined();
    });

    it("the verify callback is honoured: a hash that verify rejects is invalid-code and the code stays Pending", async () => {
      const { store } = h();
      const code = newCode();
      const record = await issued(store, S1, code);
      const seen: string[] = [];
      const result = await store.redeemActivationCode(redeemInput(P1, code, { verify: (stored) => (seen.push(stored), false) }));
      expect(result).toEqual({ kind: "invalid-code" });
      expect(seen).toEqual([hashOf(code)]);
      expect((await store.getActivationCode(S1, record.codeId, T0))?.state).toBe("Pending");
      expect(await store.listTwinsOfPrimary(P1)).toEqual([]);
    });

    it("HLF-CM-006 failed attempts count against every budget; a used-up budget rate-limits even a valid code", async () => {
      const { store } = h();
      const budgets = [
        { key: `primary:${P1}`, limit: 2 },
        { key: `operator:${OP}`, limit: 3 },
      ];
      const wrong = newCode();
      expect(await store.redeemActivationCode(redeemInput(P1, wrong, { attemptBudgets: budgets, nowMs: T0 }))).toEqual({ kind: "invalid-code" });
      expect(await store.redeemActivationCode(redeemInput(P1, wrong, { attemptBudgets: budgets, nowMs: T0 + SECOND }))).toEqual({ kind: "invalid-code" });
      const good = newCode();
      await issued(store, S1, good, { nowMs: T0 + 2 * SECOND });
      const limited = await store.redeemActivationCode(redeemInput(P1, good, { attemptBudgets: budgets, nowMs: T0 + 2 * SECOND }));
      if (limited.kind !== "rate-limited") throw new Error(`expected rate-limited, got ${limited.kind}`);
      // Retry once the oldest failure has left the window.
      expect(limited.retryAfterMs).toBeGreaterThan(0);
      expect(limited.retryAfterMs).toBeLessThanOrEqual(WINDOW_MS - 2 * SECOND);
      // The operator budget (2 of 3 used) does not stop another primary.
      const other = [{ key: `primary:${P2}`, limit: 2 }, budgets[1]!];
      expect((await store.redeemActivationCode(redeemInput(P2, good, { attemptBudgets: other, nowMs: T0 + 3 * SECOND }))).kind).toBe("activated");
    });

    it("HLF-CM-006 a de-provisioned number's failed redemptions as our primary go with it: its next holder is not rate-limited for them; the operator's budget keeps them", async () => {
      const { store } = h();
      await store.putSubscriber({ address: P1, twinningEnabled: true, credentialHash: "scrypt:a", updatedAtMs: T0 }, OP);
      const budgets = [{ key: localPrimaryBudgetKey(P1), limit: 1 }];
      const operatorBudget = [{ key: `operator:${OP}`, limit: 1 }];
      expect((await store.redeemActivationCode(redeemInput(P1, newCode(), { attemptBudgets: [...budgets, ...operatorBudget] }))).kind).toBe("invalid-code");
      const good = newCode();
      await issued(store, S1, good);
      expect((await store.redeemActivationCode(redeemInput(P1, good, { attemptBudgets: budgets, nowMs: T0 + SECOND }))).kind).toBe("rate-limited");
      await store.deleteSubscriber({ address: P1, ownOperatorId: OP, nowMs: T0 + SECOND });
      await store.putSubscriber({ address: P1, twinningEnabled: true, credentialHash: "scrypt:b", updatedAtMs: T0 + SECOND }, OP);
      expect((await store.redeemActivationCode(redeemInput(P1, good, { attemptBudgets: operatorBudget, nowMs: T0 + SECOND }))).kind).toBe("rate-limited");
      expect((await store.redeemActivationCode(redeemInput(P1, good, { attemptBudgets: budgets, nowMs: T0 + SECOND }))).kind).toBe("activated");
    });

    it("HLF-CM-006 a rate limit ends when the failures leave the attempt window", async () => {
      const { store } = h();
      const budgets = [{ key: `primary:${P1}`, limit: 1 }];
      expect((await store.redeemActivationCode(redeemInput(P1, newCode(), { attemptBudgets: budgets }))).kind).toBe("invalid-code");
      const good = newCode();
      await issued(store, S1, good, { nowMs: T0 + SECOND, expiresAtMs: T0 + 2 * WINDOW_MS });
      expect((await store.redeemActivationCode(redeemInput(P1, good, { attemptBudgets: budgets, nowMs: T0 + SECOND }))).kind).toBe("rate-limited");
      expect((await store.redeemActivationCode(redeemInput(P1, good, { attemptBudgets: budgets, nowMs: T0 + WINDOW_MS - 1 }))).kind).toBe("rate-limited");
      expect((await store.redeemActivationCode(redeemInput(P1, good, { attemptBudgets: budgets, nowMs: T0 + WINDOW_MS + SECOND }))).kind).toBe("activated");
    });

    it("HLF-PD-001 the same clientCorrelator replays the activation; a different request is correlator_conflict", async () => {
      const { store } = h();
      const code = newCode();
      await issued(store, S1, code);
      const correlator = { subscriber: P1, operation: "activation", key: "corr-1", fingerprint: "fp-1" };
      const first = await store.redeemActivationCode(redeemInput(P1, code, { correlator }));
      if (first.kind !== "activated") throw new Error(`expected activated, got ${first.kind}`);
      const again = await store.redeemActivationCode(redeemInput(P1, code, { correlator, nowMs: T0 + SECOND }));
      expect(again).toEqual({ kind: "replayed", twin: first.twin });
      expect(await store.listTwinsOfPrimary(P1)).toHaveLength(1);
      await expectTwinningError(store.redeemActivationCode(redeemInput(P1, code, { correlator: { ...correlator, fingerprint: "fp-2" } })), "correlator_conflict");
    });

    it("HLF-TE-008 a device cannot twin with itself: role_mixture, and the code stays Pending", async () => {
      const { store } = h();
      const code = newCode();
      const record = await issued(store, S1, code);
      await expectTwinningError(store.redeemActivationCode(redeemInput(S1, code)), "role_mixture");
      expect((await store.getActivationCode(S1, record.codeId, T0))?.state).toBe("Pending");
      expect(await store.latestNotificationId()).toBe(0);
    });

    it("HLF-TE-008 a secondary cannot become a primary: role_mixture", async () => {
      const { store } = h();
      await activated(store, P1, S1);
      const code = newCode();
      await issued(store, S2, code);
      await expectTwinningError(store.redeemActivationCode(redeemInput(S1, code)), "role_mixture");
      expect(await store.findTwinOfSecondary(S2)).toBeUndefined();
    });

    it("HLF-TE-008 a code of a device that has since become a primary cannot make it a secondary: role_mixture", async () => {
      const { store } = h();
      const early = newCode();
      await issued(store, S1, early);
      await activated(store, S1, S2); // S1 is now a primary
      await expectTwinningError(store.redeemActivationCode(redeemInput(P1, early, { nowMs: T0 + SECOND })), "role_mixture");
      expect(await store.listTwinsOfPrimary(P1)).toEqual([]);
    });

    it("HLF-PD-006 a primary has many twins, up to maxTwinsPerPrimary: too_many_twins", async () => {
      const { store } = h();
      await activated(store, P1, S1, { maxTwinsPerPrimary: 2 });
      await activated(store, P1, S2, { maxTwinsPerPrimary: 2 });
      const code = newCode();
      const record = await issued(store, S3, code);
      await expectTwinningError(store.redeemActivationCode(redeemInput(P1, code, { maxTwinsPerPrimary: 2 })), "too_many_twins");
      expect((await store.getActivationCode(S3, record.codeId, T0))?.state).toBe("Pending");
      expect(await store.listTwinsOfPrimary(P1)).toHaveLength(2);
    });

    it("HLF-TE-007 default names are twin-1, twin-2, … skipping taken names; a duplicate name is invalid_input", async () => {
      const { store } = h();
      expect((await activated(store, P1, S1)).name).toBe("twin-1");
      expect((await activated(store, P1, S2, { name: "twin-2" })).name).toBe("twin-2");
      expect((await activated(store, P1, S3)).name).toBe("twin-3");
      expect((await activated(store, P2, "tel:+15550000199")).name).toBe("twin-1");
      const code = newCode();
      await issued(store, "tel:+15550000198", code);
      const error = await expectTwinningError(store.redeemActivationCode(redeemInput(P1, code, { name: "twin-2" })), "invalid_input");
      expect(error.variables).toEqual(["name"]);
    });
  });
}
