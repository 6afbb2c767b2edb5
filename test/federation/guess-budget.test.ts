import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Federation, type FederatedOperator } from "../helpers/federation-fixture.ts";
import { enc, messageId } from "../helpers/test-node.ts";

/** B issues the codes; its total budget (4) is smaller than any one primary's or operator's. */
const fed = new Federation();
let A: FederatedOperator;
let B: FederatedOperator;
let n = 0;
const addr = (op: FederatedOperator) => `tel:+1${op.operatorId.replace("-", "")}8${String(++n).padStart(4, "0")}`;

beforeAll(async () => {
  await fed.start(["001-01", "002-01"], (op) =>
    op === "002-01" ? { policy: { maxFailedAttemptsPerPrimary: 3, maxFailedAttemptsPerOperator: 100, maxFailedAttemptsTotal: 4 } } : {},
  );
  [A, B] = [fed.get("001-01"), fed.get("002-01")];
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
});
