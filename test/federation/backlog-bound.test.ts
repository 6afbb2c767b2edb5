import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Federation, eventually, type FederatedOperator } from "../helpers/federation-fixture.ts";
import { enc, messageId } from "../helpers/test-node.ts";

/** A keeps at most 3 messages waiting for any one peer (delivery.maxQueuedMessagesPerPeer). */
const fed = new Federation();
let n = 0;
const addr = (op: FederatedOperator) => `tel:+1${op.operatorId.replace("-", "")}7${String(++n).padStart(4, "0")}`;
const A = () => fed.get("001-01");
const B = () => fed.get("002-01");

beforeAll(async () => {
  await fed.start(["001-01", "002-01"], (op) => (op === "001-01" ? { delivery: { maxQueuedMessagesPerPeer: 3 } } : {}));
}, 60_000);
afterAll(async () => fed.stop());

describe("HLF-CM-006 the outbox is bounded per peer", () => {
  it("HLF-IC-007 with a peer down, toggles beyond the backlog bound get 503 SVC3002 and Retry-After; nothing queued is lost and the twin works again once drained", async () => {
    const p = await A().party(addr(A()));
    const s = await B().party(addr(B()));
    const code = await B().api.call("POST", `/twinning/v1/secondary/${enc(s.address)}/activationCodes`, { token: s.token, body: {} });
    const act = await A().api.call("POST", `/twinning/v1/primary/${enc(p.address)}/twins`, { token: p.token, body: { activationCode: code.body.activationCode.code, operatorId: "002-01" } });
    expect(act.status).toBe(201);
    const twinId = act.body.twin.twinId as string;
    const toggle = (status: string) => A().api.call("PUT", `/twinning/v1/primary/${enc(p.address)}/twins/${twinId}/status`, { token: p.token, body: { status } });

    await fed.stopNode("002-01");
    for (const status of ["Off", "On", "Off"]) expect((await toggle(status)).status).toBe(200);
    const refused = await toggle("On");
    expect([refused.status, messageId(refused.body)]).toEqual([503, "SVC3002"]);
    expect(Number(refused.headers.get("retry-after"))).toBeGreaterThan(0);
    expect(JSON.stringify(refused.body)).toContain("002-01");
    // The refused change was not committed, and the queue did not grow.
    expect((await A().node().context.store.getTwin(twinId))?.status).toBe("Off");
    expect((await A().node().context.store.outboxStats()).pending).toBe(3);

    await fed.restartNode("002-01");
    await eventually(async () => (await A().node().context.store.outboxStats()).pending, (pending) => pending === 0);
    expect((await toggle("On")).status).toBe(200);
    const atB = await eventually(() => B().node().context.store.getTwin(twinId), (t) => t?.status === "On");
    const atA = await A().node().context.store.getTwin(twinId);
    expect([atB?.status, atB?.version]).toEqual([atA?.status, atA?.version]);
  });

  it("a deactivation is never refused by the bound (each twin has at most one)", async () => {
    const p = await A().party(addr(A()));
    const s = await B().party(addr(B()));
    const code = await B().api.call("POST", `/twinning/v1/secondary/${enc(s.address)}/activationCodes`, { token: s.token, body: {} });
    const act = await A().api.call("POST", `/twinning/v1/primary/${enc(p.address)}/twins`, { token: p.token, body: { activationCode: code.body.activationCode.code, operatorId: "002-01" } });
    const twinId = act.body.twin.twinId as string;
    await fed.stopNode("002-01");
    for (const status of ["Off", "On", "Off"]) await A().api.call("PUT", `/twinning/v1/primary/${enc(p.address)}/twins/${twinId}/status`, { token: p.token, body: { status } });
    const del = await A().api.call("DELETE", `/twinning/v1/primary/${enc(p.address)}/twins/${twinId}`, { token: p.token });
    expect(del.status).toBeLessThan(300);
    expect((await A().node().context.store.outboxStats()).pending).toBe(4);
    await fed.restartNode("002-01");
    const atB = await eventually(() => B().node().context.store.getTwin(twinId), (t) => t?.active === false);
    expect(atB?.active).toBe(false);
  });

  it("HLF-IC-004 activation attempts toward a peer that is down cannot grow the outbox past the bound (each may leave a compensation)", async () => {
    await eventually(async () => (await A().node().context.store.outboxStats()).pending, (pending) => pending === 0);
    await fed.stopNode("002-01");
    const answers = [];
    for (let i = 0; i < 6; i++) {
      const p = await A().party(addr(A()));
      const res = await A().api.call("POST", `/twinning/v1/primary/${enc(p.address)}/twins`, { token: p.token, body: { activationCode: "123456", operatorId: "002-01" } });
      answers.push([res.status, messageId(res.body)]);
      expect((await A().node().context.store.countQueuedForPeer("002-01", 100))).toBeLessThanOrEqual(3);
    }
    expect(answers.every(([status, id]) => status === 503 && id === "SVC3002")).toBe(true);
    expect(await A().node().context.store.countQueuedForPeer("002-01", 100)).toBe(3);
    await fed.restartNode("002-01");
    await eventually(async () => (await A().node().context.store.outboxStats()).pending, (pending) => pending === 0);
  });
});
