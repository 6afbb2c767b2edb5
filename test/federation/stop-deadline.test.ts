import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Federation, eventually, type FederatedOperator } from "../helpers/federation-fixture.ts";
import { ScriptedPeer } from "../helpers/scripted-peer.ts";
import { enc } from "../helpers/test-node.ts";

/**
 * Node A (001-01, limits.shutdownGraceMs 300) federated with a peer 002-01 that takes status
 * messages and never answers them: A's stop has one deadline, its grace, whatever its deliveries
 * under way are waiting for, and those deliveries stay queued.
 */
const fed = new Federation();
let A: FederatedOperator;
let peer: ScriptedPeer;

beforeAll(async () => {
  await fed.start(["001-01", "002-01"], (op) => (op === "001-01" ? { limits: { shutdownGraceMs: 300 } } : {}));
  A = fed.get("001-01");
  peer = await ScriptedPeer.replacing(fed, "002-01", "001-01", ({ path }) => (path.startsWith("/twins/") || path === "/batch" ? new Promise<never>(() => {}) : { status: 500, body: {} }));
}, 60_000);
afterAll(async () => {
  await peer?.close();
  await fed.stop();
});

describe("the node's stop", () => {
  it("HLF-IC-007 ends within its grace while a delivery waits on a peer that never answers (not the call's 5 s deadline), and the message stays queued for the next start", async () => {
    const p = await A.party("tel:+15550777001");
    const twinId = "6f1c1a52-8d7e-4c1e-9d43-2f0c1b7a9e01";
    await A.t.node.context.store.insertFederatedTwin({
      twin: { twinId, primaryAddress: p.address, primaryOperatorId: "001-01", secondaryAddress: "tel:+15550777002", secondaryOperatorId: "002-01", name: "watch", status: "On", version: 1, statusOrigin: "001-01" },
      localSide: "primary",
      nowMs: Date.now(),
      maxTwinsPerPrimary: 10,
    });
    const toggled = await A.api.call("PUT", `/twinning/v1/primary/${enc(p.address)}/twins/${twinId}/status`, { token: p.token, body: { status: "Off" } });
    expect(toggled.status).toBe(200);
    // The message is on its way: the peer has it and holds its answer.
    await eventually(async () => peer.received.some((r) => r.path === `/twins/${twinId}/status` || r.path === "/batch"), (seen) => seen);
    const started = performance.now();
    await A.t.node.stop();
    // Without the deadline the stop waited for the call's own (federation.callTimeoutMs, 5 s).
    expect(performance.now() - started).toBeLessThan(3_000);
    const db = new Database(A.t.node.databaseFile, { readonly: true, fileMustExist: true });
    try {
      const { n } = db.prepare(`SELECT COUNT(*) AS n FROM outbox WHERE kind = 'peer' AND state = 'pending'`).get() as { n: number };
      expect(n).toBe(1);
    } finally {
      db.close();
    }
  });
});
