import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Federation, type FederatedOperator } from "../helpers/federation-fixture.ts";
import { enc, messageId } from "../helpers/test-node.ts";

/**
 * B issues codes under a total budget (4) smaller than any one primary's or operator's, and holds
 * at most 2 live codes for a peer's secondaries; C issues codes under a per-code limit (3)
 * smaller than its other budgets.
 */
const fed = new Federation();
let A: FederatedOperator;
let B: FederatedOperator;
let C: FederatedOperator;
let n = 0;
const addr = (op: FederatedOperator) => `tel:+1${op.operatorId.replace("-", "")}8${String(++n).padStart(4, "0")}`;

beforeAll(async () => {
  await fed.start(["001-01", "002-01", "003-01"], (op) =>
    op === "002-01"
      ? { policy: { maxFailedAttemptsPerPrimary: 3, maxFailedAttemptsPerOperator: 100, maxFailedAttemptsTotal: 4, maxPendingCodesPerPeer: 2 } }
      : op === "003-01"
        ? { policy: { maxFailedAttemptsPerPrimary: 3, maxFailedAttemptsPerOperator: 100, maxFailedAttemptsTotal: 100, maxFailedAttemptsPerCode: 3 } }
        : {},
  );
  [A, B, C] = [fed.get("001-01"), fed.get("002-01"), fed.get("003-01")];
}, 60_000);
afterAll(async () => fed.stop());

describe("the code-guessing budget", () => {
  it("HLF-CM-006 failed redemptions of an operator's codes are limited in total, whoever makes them (own primaries and every peer)", async () => {
    const s = await B.party(addr(B));
    const code = (await B.api.call("POST", `/twinning/v1/secondary/${enc(s.address)}/activationCodes`, { token: s.token, body: {} })).body.activationCode.code as string;
    const wrong = code === "000000" ? "111111" : "000000";
    const guessFromA = async () => {
      const p = await A.party(addr(A));
      return A.api.call("POST", `/twinning/v1/primary/${enc(p.address)}/twins`, { token: p.token, body: { activationCode: wrong, operatorId: "002-01" } });
    };
    const guessAtB = async () => {
      const p = await B.party(addr(B));
      return B.api.call("POST", `/twinning/v1/primary/${enc(p.address)}/twins`, { token: p.token, body: { activationCode: wrong, operatorId: "002-01" } });
    };
    // Four different primaries, two operators: none reaches its own limit, the total does.
    for (const guess of [guessFromA, guessAtB, guessFromA, guessAtB]) expect(messageId((await guess()).body)).toBe("SVC3001");
    const fifth = await guessFromA();
    expect([fifth.status, messageId(fifth.body)]).toEqual([429, "POL3004"]);
    const local = await B.party(addr(B));
    const rightCode = await B.api.call("POST", `/twinning/v1/primary/${enc(local.address)}/twins`, { token: local.token, body: { activationCode: code, operatorId: "002-01" } });
    expect([rightCode.status, messageId(rightCode.body)]).toEqual([429, "POL3004"]);
  });

  it("HLF-CM-006 a code is void after the per-code limit of failed guesses made while it was pending, from any operator", async () => {
    const codeFor = async () => {
      const s = await C.party(addr(C));
      const created = await C.api.call("POST", `/twinning/v1/secondary/${enc(s.address)}/activationCodes`, { token: s.token, body: {} });
      return { s, code: created.body.activationCode.code as string, id: created.body.activationCode.resourceURL.split("/").pop() as string };
    };
    const first = await codeFor();
    const wrongFor = (code: string) => (code === "000000" ? "111111" : "000000");
    const guess = async (op: FederatedOperator, code: string) => {
      const p = await op.party(addr(op));
      return op.api.call("POST", `/twinning/v1/primary/${enc(p.address)}/twins`, { token: p.token, body: { activationCode: code, operatorId: "003-01" } });
    };
    // Two failures, then a second code is issued, then a third failure (each from a fresh primary).
    for (const op of [A, C]) expect(messageId((await guess(op, wrongFor(first.code))).body)).toBe("SVC3001");
    const second = await codeFor();
    expect(messageId((await guess(A, wrongFor(second.code) === first.code ? "222222" : wrongFor(second.code))).body)).toBe("SVC3001");
    // The first code saw three failures: void, though right and unexpired; its secondary sees it so.
    const late = await guess(A, first.code);
    expect([late.status, messageId(late.body)]).toEqual([400, "SVC3001"]);
    const status = await C.api.call("GET", `/twinning/v1/secondary/${enc(first.s.address)}/activationCodes/${first.id}`, { token: first.s.token });
    expect(status.body.activationCode.status).toBe("Expired");
    // The second saw one failure and still works.
    const ok = await guess(A, second.code);
    expect(ok.status).toBe(201);
  });
});

describe("the codes a peer may hold", () => {
  it("HLF-IC-003 HLF-CM-006 a peer holds at most maxPendingCodesPerPeer live codes of ours: past it the code request is refused (POL0001 at the issuer, SVC3002 at the peer's device)", async () => {
    const askB = async (s: { address: string; token: string }) =>
      A.api.call("POST", `/twinning/v1/secondary/${enc(s.address)}/activationCodes`, { token: s.token, body: { primaryOperatorId: "002-01" } });
    const [s1, s2, s3] = [await A.party(addr(A)), await A.party(addr(A)), await A.party(addr(A))];
    expect((await askB(s1)).status).toBe(201);
    expect((await askB(s2)).status).toBe(201);
    const refused = await askB(s3);
    expect([refused.status, messageId(refused.body)]).toEqual([503, "SVC3002"]);
    // What B answered A, signed: a policy refusal naming the bound.
    const direct = await A.node().context.federation!.send("002-01", { method: "POST", path: "/activationCodes", msgId: crypto.randomUUID(), body: { secondaryAddress: s3.address, secondaryOperatorId: "001-01" } });
    expect([direct.status, messageId(direct.body)]).toEqual([403, "POL0001"]);
    expect(JSON.stringify(direct.body)).toContain("at most 2 pending activation codes");
    // A secondary that already holds one may ask again (its old code is superseded), and B's own
    // subscribers are not held back.
    expect((await askB(s1)).status).toBe(201);
    const own = await B.party(addr(B));
    expect((await B.api.call("POST", `/twinning/v1/secondary/${enc(own.address)}/activationCodes`, { token: own.token, body: {} })).status).toBe(201);
  });
});
