import { describe, expect, it } from "vitest";
import { enc, messageId, nodeForFile } from "../helpers/test-node.ts";

const file = nodeForFile();
const party = file.party;
const requestCode = (s: { address: string; token: string }) => file.api.call("POST", `/twinning/v1/secondary/${enc(s.address)}/activationCodes`, { token: s.token });
const redeem = (p: { address: string; token: string }, code: string) =>
  file.api.call("POST", `/twinning/v1/primary/${enc(p.address)}/twins`, { token: p.token, body: { activationCode: code, operatorId: "001-01" } });

describe("twinning roles", () => {
  it("HLF-TE-008 a secondary cannot become a primary of another secondary", async () => {
    const [p, s, other] = [await party(), await party(), await party()];
    await file.api.twin(p, s);
    const code = await requestCode(other);
    const res = await redeem(s, code.body.activationCode.code);
    expect([res.status, messageId(res.body)]).toEqual([403, "POL1037"]);
  });

  it("HLF-TE-008 a primary cannot become a secondary, neither at code request nor at activation", async () => {
    const [p, s, p2] = [await party(), await party(), await party()];
    await file.api.twin(p, s);
    const asSecondary = await requestCode(p);
    expect([asSecondary.status, messageId(asSecondary.body)]).toEqual([403, "POL1037"]);

    // A code requested before p2's device became a primary cannot be used to make it a secondary afterwards.
    const [x, y] = [await party(), await party()];
    const early = await requestCode(x);
    await file.api.twin(x, y);
    const late = await redeem(p2, early.body.activationCode.code);
    expect([late.status, messageId(late.body)]).toEqual([403, "POL1037"]);
  });

  it("HLF-TE-008 a device cannot twin with itself", async () => {
    const d = await party();
    const code = await requestCode(d);
    const res = await redeem(d, code.body.activationCode.code);
    expect([res.status, messageId(res.body)]).toEqual([403, "POL1037"]);
  });

  it("HLF-TE-009 a secondary is in one relationship at a time", async () => {
    const [p1, p2, s] = [await party(), await party(), await party()];
    const code = await requestCode(s);
    const second = await requestCode(s); // supersedes the first
    await redeem(p1, second.body.activationCode.code);
    const stale = await redeem(p2, code.body.activationCode.code);
    expect([stale.status, messageId(stale.body)]).toEqual([400, "SVC3001"]);
    const again = await requestCode(s);
    expect([again.status, messageId(again.body)]).toEqual([409, "POL3001"]);
  });

  it("HLF-TE-009 two primaries racing for the same secondary: exactly one wins", async () => {
    const [p1, p2, s] = [await party(), await party(), await party()];
    const code = await requestCode(s);
    const results = await Promise.all([redeem(p1, code.body.activationCode.code), redeem(p2, code.body.activationCode.code)]);
    expect(results.map((r) => r.status).sort()).toEqual([201, 400]);
    const status = await file.api.call("GET", `/twinning/v1/secondary/${enc(s.address)}/twinning`, { token: s.token });
    expect(status.status).toBe(200);
  });
});
