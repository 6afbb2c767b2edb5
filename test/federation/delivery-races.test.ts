import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { randomUUID } from "node:crypto";
import { createPeerBatchSender } from "../../node/federation/peer-delivery.ts";
import type { InsertFederatedTwinInput, OutboxEntry, TwinningStore } from "../../node/store/store-port.ts";
import { Federation, eventually, type FederatedOperator } from "../helpers/federation-fixture.ts";
import { enc } from "../helpers/test-node.ts";

/**
 * Races between an activation across operators and the messages around it, and a peer with the
 * smallest body limit a node may have. Slow commits are made by delaying the real store's
 * insertFederatedTwin (a busy event loop at the primary's node); everything else is real: two
 * nodes on loopback, mutual TLS, signed messages.
 */
const fed = new Federation();
let n = 0;
const addr = (op: FederatedOperator) => `tel:+1${op.operatorId.replace("-", "")}${String(++n).padStart(5, "0")}`;
const A = () => fed.get("001-01");
const B = () => fed.get("002-01");
const quickRetries = { retryBaseDelayMs: 50, retryMaxDelayMs: 300 };

beforeAll(async () => {
  // A: a short call deadline (its armed compensations fall due 800 ms after the call starts).
  // B: the smallest federation body limit allowed.
  await fed.start(["001-01", "002-01"], (op) =>
    op === "001-01"
      ? { federation: { callTimeoutMs: 400 } as never, delivery: quickRetries as never }
      : { federation: { maxBodyBytes: 65_536 } as never, delivery: quickRetries as never },
  );
}, 60_000);
afterAll(async () => fed.stop());

/** Runs `during` with A's insertFederatedTwin delayed by `delayMs`. */
async function withSlowCommitAtA<T>(delayMs: number, during: () => Promise<T>): Promise<T> {
  const store = A().node().context.store as TwinningStore;
  const original = store.insertFederatedTwin;
  store.insertFederatedTwin = async (input: InsertFederatedTwinInput) => {
    await new Promise((r) => setTimeout(r, delayMs));
    return original.call(store, input);
  };
  try {
    return await during();
  } finally {
    store.insertFederatedTwin = original;
  }
}

async function codeAtB() {
  const p = await A().party(addr(A()));
  const s = await B().party(addr(B()));
  const code = await B().api.call("POST", `/twinning/v1/secondary/${enc(s.address)}/activationCodes`, { token: s.token, body: {} });
  return { p, s, code: code.body.activationCode.code as string };
}

const activate = (p: { address: string; token: string }, code: string) =>
  A().api.call("POST", `/twinning/v1/primary/${enc(p.address)}/twins`, { token: p.token, body: { activationCode: code, operatorId: "002-01" } });

describe("one clientCorrelator, requests at once, across operators", () => {
  it("HLF-IC-002 concurrent code requests from the other operator with one clientCorrelator get one code, which works", async () => {
    const s = await B().party(addr(B()));
    const p = await A().party(addr(A()));
    const ask = () => B().api.call("POST", `/twinning/v1/secondary/${enc(s.address)}/activationCodes`, { token: s.token, body: { primaryOperatorId: "001-01", clientCorrelator: "c-1" } });
    const answers = [...(await Promise.all([ask(), ask()])), await ask()];
    expect(answers.map((a) => a.status)).toEqual([201, 201, 201]);
    expect(new Set(answers.map((a) => a.body.activationCode.code)).size).toBe(1);
    expect(new Set(answers.map((a) => a.body.activationCode.resourceURL)).size).toBe(1);
    const act = await A().api.call("POST", `/twinning/v1/primary/${enc(p.address)}/twins`, { token: p.token, body: { activationCode: answers[2]!.body.activationCode.code, operatorId: "001-01" } });
    expect(act.status).toBe(201);
  });

  it("HLF-IC-004 concurrent activations across with one clientCorrelator make one twin, and every answer is it", async () => {
    const { p, code } = await codeAtB();
    const body = { activationCode: code, operatorId: "002-01", clientCorrelator: "k-1" };
    const activateOnce = () => A().api.call("POST", `/twinning/v1/primary/${enc(p.address)}/twins`, { token: p.token, body });
    const answers = [...(await Promise.all([activateOnce(), activateOnce()])), await activateOnce()];
    expect(answers.map((a) => a.status)).toEqual([201, 201, 201]);
    expect(new Set(answers.map((a) => a.body.twin.twinId)).size).toBe(1);
    expect(await A().node().context.store.listTwinsOfPrimary(p.address)).toHaveLength(1);
  });
});

describe("a stale copy of a peer's twin", () => {
  it("HLF-TE-009 a secondary its home node has freed, whose deactivation has not reached the primary's node yet, is twinned again there: the stale twin ends, its primary notified", async () => {
    const { p, s, code } = await codeAtB();
    const first = await activate(p, code);
    expect(first.status).toBe(201);
    const staleId = first.body.twin.twinId as string;
    // The secondary ends its twin at B; B's DELETE to A is still on its way (applied at B only).
    await B().node().context.store.applyRemoteDeactivation({ twinId: staleId, fromOperatorId: "001-01", ownOperatorId: "002-01", nowMs: Date.now() });
    expect((await A().node().context.store.getTwin(staleId))?.active).toBe(true);
    const p2 = await A().party(addr(A()));
    const code2 = await B().api.call("POST", `/twinning/v1/secondary/${enc(s.address)}/activationCodes`, { token: s.token, body: {} });
    const second = await activate(p2, code2.body.activationCode.code);
    expect(second.status, JSON.stringify(second.body)).toBe(201);
    expect((await A().node().context.store.getTwin(staleId))?.active).toBe(false);
    expect((await A().node().context.store.findTwinOfSecondary(s.address))?.twinId).toBe(second.body.twin.twinId);
    const feed = await A().node().context.store.notificationsAfter(p.address, "primary", 0, 100);
    expect(feed.map((n) => n.type)).toContain("twinningDeactivatedNotification");
  });
});

describe("delivery around activations across operators", () => {
  it("HLF-IC-005 a secondary's toggle that reaches the primary's node before that node has committed the twin is retried, not dropped: both nodes converge", async () => {
    const { p, s, code } = await codeAtB();
    const act = await withSlowCommitAtA(300, async () => {
      const activation = activate(p, code);
      // B commits first and tells its device at once; the secondary toggles while A is still busy.
      await eventually(() => B().node().context.store.findTwinOfSecondary(s.address), (t) => t !== undefined, 5_000);
      const toggle = await B().api.call("PUT", `/twinning/v1/secondary/${enc(s.address)}/twinning/status`, { token: s.token, body: { status: "Off" } });
      expect(toggle.status).toBe(200);
      return activation;
    });
    expect(act.status, JSON.stringify(act.body)).toBe(201);
    const twinId = act.body.twin.twinId as string;
    const atA = await eventually(() => A().node().context.store.getTwin(twinId), (t) => t?.status === "Off", 10_000);
    const atB = await B().node().context.store.getTwin(twinId);
    expect([atA?.status, atA?.version]).toEqual([atB?.status, atB?.version]);
    expect(await B().node().context.store.listDeadLetters(10)).toEqual([]);
  });

  it("HLF-IC-004 a primary's node that commits only after its armed compensation fell due refuses the activation (SVC3002): the peer's twin is undone, neither side keeps it", async () => {
    const { p, s, code } = await codeAtB();
    // Longer than the compensation's due time (twice A's 400 ms call deadline); a commit at A
    // meanwhile wakes its outbox worker, which sends the due compensation.
    setTimeout(() => A().node().context.wakeOutbox(), 900);
    const act = await withSlowCommitAtA(1_200, () => activate(p, code));
    expect([act.status, act.body.requestError?.serviceException?.messageId]).toEqual([503, "SVC3002"]);
    const twinAtB = await eventually(() => B().node().context.store.findTwinOfSecondary(s.address), (t) => t === undefined, 10_000);
    expect(twinAtB).toBeUndefined();
    expect(await A().node().context.store.listTwinsOfPrimary(p.address)).toEqual([]);
  });

  it("HLF-IC-007 a backlog drains to a peer with the smallest allowed federation body limit: a full batch fits it", async () => {
    const { p, code } = await codeAtB();
    const act = await activate(p, code);
    expect(act.status).toBe(201);
    const twinId = act.body.twin.twinId as string;
    await fed.stopNode("002-01");
    // Two batches: 100 messages, then 20.
    for (let i = 0; i < 120; i++) {
      expect((await A().api.call("PUT", `/twinning/v1/primary/${enc(p.address)}/twins/${twinId}/status`, { token: p.token, body: { status: i % 2 ? "On" : "Off" } })).status).toBe(200);
    }
    await fed.restartNode("002-01");
    const atA = await A().node().context.store.getTwin(twinId);
    expect(atA?.version).toBe(121);
    await eventually(async () => (await A().node().context.store.outboxStats()).pending, (pending) => pending === 0, 15_000);
    const atB = await B().node().context.store.getTwin(twinId);
    expect([atB?.status, atB?.version]).toEqual([atA?.status, atA?.version]);
    expect(await A().node().context.store.listDeadLetters(10)).toEqual([]);
  });

  it("HLF-IC-007 a batch the peer refuses as a whole (here: over its body limit, as a peer with a lower limit would) is sent again one message per request, in order", async () => {
    const { p, code } = await codeAtB();
    const act = await activate(p, code);
    const twinId = act.body.twin.twinId as string;
    // 100 status messages, each padded with a field B ignores (~120 KiB of JWS in one batch, over
    // B's 64 KiB), built as A's outbox holds them and sent by the sender the worker uses.
    const entries: OutboxEntry[] = Array.from({ length: 100 }, (_, i) => ({
      id: i + 1,
      lane: "peer:002-01",
      kind: "peer",
      target: "002-01",
      payload: JSON.stringify({ method: "PUT", path: `/twins/${twinId}/status`, msgId: randomUUID(), body: { status: i % 2 ? "On" : "Off", version: i + 2, changedBy: "primary", padding: "x".repeat(800) } }),
      attempts: 0,
      createdAtMs: Date.now(),
      lastError: undefined,
    }));
    const send = createPeerBatchSender(A().node().context.federation!, { nowMs: Date.now, unknownTwinGraceMs: 60_000 });
    const outcomes = await send(entries);
    expect(outcomes).toEqual(entries.map(() => ({ outcome: "delivered" })));
    const atB = await B().node().context.store.getTwin(twinId);
    expect([atB?.status, atB?.version]).toEqual(["On", 101]);
  });
});
