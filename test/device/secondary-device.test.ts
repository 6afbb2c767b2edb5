import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ManualClock } from "../helpers/manual-clock.ts";
import { Api, enc, messageId, newAddress, startTestNode, type TestNode } from "../helpers/test-node.ts";

let t: TestNode;
let api: Api;
const clock = new ManualClock();

beforeAll(async () => {
  t = await startTestNode({ policy: { codeTtlSeconds: 120, allowedPeerOperators: ["002-01"] } }, { nowMs: clock.now });
  api = new Api(t.url);
});
afterAll(async () => t.cleanup());

async function party() {
  const address = newAddress();
  return { address, token: await api.subscriber(t.node.adminToken, address) };
}
const codes = (s: { address: string }) => `/twinning/v1/secondary/${enc(s.address)}/activationCodes`;

describe("secondary device: activation codes", () => {
  it("HLF-SD-001 a secondary requests an activation code", async () => {
    const s = await party();
    const res = await api.call("POST", codes(s), { token: s.token, body: {} });
    expect(res.status).toBe(201);
    expect(res.body.activationCode.status).toBe("Pending");
    expect(res.body.activationCode.resourceURL).toMatch(new RegExp(`^${t.url}/twinning/v1/secondary/${enc(s.address)}/activationCodes/[0-9a-f-]{36}$`.replace(/[+]/g, "\\+")));
  });

  it("HLF-SD-003 the answer carries the code (6 digits by default) and the issuing operator's identity, separately", async () => {
    const s = await party();
    const res = await api.call("POST", codes(s), { token: s.token });
    expect(res.body.activationCode.code).toMatch(/^\d{6}$/);
    expect(res.body.activationCode.operatorId).toBe("001-01");
    expect(Date.parse(res.body.activationCode.expiresAt) - clock.now()).toBe(120_000);
  });

  it("HLF-SD-002 the request may name the primary's operator; naming this operator issues the code here", async () => {
    const s = await party();
    const res = await api.call("POST", codes(s), { token: s.token, body: { primaryOperatorId: "001-01" } });
    expect(res.status).toBe(201);
    expect(res.body.activationCode.operatorId).toBe("001-01");
  });

  it("HLF-TE-006 without the primary's operator the secondary's operator generates the code; with another one it must ask that operator", async () => {
    const s = await party();
    const own = await api.call("POST", codes(s), { token: s.token, body: {} });
    expect(own.body.activationCode.operatorId).toBe("001-01");
    // 002-01 is an allowed peer, but no peer node answers here: the device is told the peer is unreachable.
    const peer = await api.call("POST", codes(s), { token: s.token, body: { primaryOperatorId: "002-01" } });
    expect([peer.status, messageId(peer.body)]).toEqual([503, "SVC3002"]);
  });

  it("HLF-TE-005 a code is single-use and expires by policy", async () => {
    const [p, s] = [await party(), await party()];
    const first = await api.call("POST", codes(s), { token: s.token });
    const redeem = (code: string) =>
      api.call("POST", `/twinning/v1/primary/${enc(p.address)}/twins`, { token: p.token, body: { activationCode: code, operatorId: "001-01" } });
    expect((await redeem(first.body.activationCode.code)).status).toBe(201);
    const reuse = await redeem(first.body.activationCode.code);
    expect([reuse.status, messageId(reuse.body)]).toEqual([400, "SVC3001"]);

    const s2 = await party();
    const second = await api.call("POST", codes(s2), { token: s2.token });
    clock.advance(121_000);
    const late = await redeem(second.body.activationCode.code);
    expect([late.status, messageId(late.body)]).toEqual([400, "SVC3001"]);
    const read = await api.call("GET", new URL(second.body.activationCode.resourceURL).pathname, { token: s2.token });
    expect(read.body.activationCode.status).toBe("Expired");
  });

  // A poll that is not woken answers only when its 30 s wait ends: the 10 s timeout fails it then.
  it("HLF-SD-005 once the code is used, the secondary receives the twin and a twin-scoped token (long poll wakes at once)", { timeout: 10_000 }, async () => {
    const [p, s] = [await party(), await party()];
    const code = await api.call("POST", codes(s), { token: s.token });
    const path = new URL(code.body.activationCode.resourceURL).pathname;
    const pending = await api.call("GET", path, { token: s.token });
    expect(pending.body.activationCode.status).toBe("Pending");
    expect(pending.body.activationCode.code).toBeUndefined();
    const waiting = api.call("GET", `${path}?wait=30`, { token: s.token });
    const activation = await api.call("POST", `/twinning/v1/primary/${enc(p.address)}/twins`, {
      token: p.token,
      body: { activationCode: code.body.activationCode.code, operatorId: "001-01" },
    });
    const used = await waiting;
    expect(used.body.activationCode.status).toBe("Used");
    expect(used.body.activationCode.twin.twinId).toBe(activation.body.twin.twinId);
    const twinToken = used.body.activationCode.accessToken as string;
    // The twin-scoped token works for toggle, query and deactivation of that twin only.
    const path2 = `/twinning/v1/secondary/${enc(s.address)}/twinning`;
    // The twin as the secondary sees it names the secondary's own resource (the primary's is not its to read).
    expect(used.body.activationCode.twin.resourceURL).toBe(`${t.url}${path2}`);
    expect((await api.call("GET", path2, { token: twinToken })).status).toBe(200);
    expect((await api.call("PUT", `${path2}/status`, { token: twinToken, body: { status: "Off" } })).body.twinning.status).toBe("Off");
    const codeWithTwinToken = await api.call("POST", codes(s), { token: twinToken });
    expect([codeWithTwinToken.status, messageId(codeWithTwinToken.body)]).toEqual([403, "POL2003"]);
    expect((await api.call("DELETE", path2, { token: twinToken })).status).toBe(204);
  });
});

describe("secondary device: twinning", () => {
  it("HLF-SD-006 the secondary queries its status, with the primary's identity", async () => {
    const [p, s] = [await party(), await party()];
    const { twin } = await api.twin(p, s, "wrist");
    const res = await api.call("GET", `/twinning/v1/secondary/acr%3AAuthorization/twinning`, { token: s.token });
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ twinning: { twinId: twin.twinId, primaryAddress: p.address, primaryOperatorId: "001-01", status: "On", name: "wrist" } });
  });

  it("HLF-SD-004 the secondary toggles On/Off, and the primary sees it", async () => {
    const [p, s] = [await party(), await party()];
    const { twin } = await api.twin(p, s);
    const off = await api.call("PUT", `/twinning/v1/secondary/${enc(s.address)}/twinning/status`, { token: s.token, body: { status: "Off" } });
    expect([off.status, off.body.twinning.status]).toEqual([200, "Off"]);
    const seen = await api.call("GET", `/twinning/v1/primary/${enc(p.address)}/twins/${twin.twinId}`, { token: p.token });
    expect(seen.body.twin.status).toBe("Off");
  });

  it("HLF-TE-002 a status change persists in the enabler: the store holds it, with its version", async () => {
    const [p, s] = [await party(), await party()];
    const { twin } = await api.twin(p, s);
    await api.call("PUT", `/twinning/v1/secondary/${enc(s.address)}/twinning/status`, { token: s.token, body: { status: "Off" } });
    const stored = await t.node.context.store.getTwin(twin.twinId);
    expect([stored?.status, stored?.version, stored?.active]).toEqual(["Off", 2, true]);
  });

  it("HLF-TE-003 toggling Off does not end the relationship", async () => {
    const [p, s] = [await party(), await party()];
    await api.twin(p, s);
    await api.call("PUT", `/twinning/v1/secondary/${enc(s.address)}/twinning/status`, { token: s.token, body: { status: "Off" } });
    const list = await api.call("GET", `/twinning/v1/primary/${enc(p.address)}/twins`, { token: p.token });
    expect(list.body.twinList.twin).toHaveLength(1);
    expect(list.body.twinList.twin[0].status).toBe("Off");
  });

  it("HLF-SD-007 deactivation from the secondary ends the twin on both sides and expires its twin token", async () => {
    const [p, s] = [await party(), await party()];
    const { twin, primaryTwinToken } = await api.twin(p, s);
    const del = await api.call("DELETE", `/twinning/v1/secondary/${enc(s.address)}/twinning`, { token: s.token });
    expect(del.status).toBe(204);
    const status = await api.call("GET", `/twinning/v1/secondary/${enc(s.address)}/twinning`, { token: s.token });
    expect([status.status, messageId(status.body)]).toEqual([404, "SVC0002"]);
    const list = await api.call("GET", `/twinning/v1/primary/${enc(p.address)}/twins`, { token: p.token });
    expect(list.body.twinList.twin).toEqual([]);
    const dead = await api.call("GET", `/twinning/v1/primary/${enc(p.address)}/twins/${twin.twinId}`, { token: primaryTwinToken });
    expect([dead.status, messageId(dead.body)]).toEqual([401, "SVC2003"]);
  });

  it("HLF-TE-004 after deactivation the secondary may twin again, and the old twin's tokens stay dead", async () => {
    const [p, s] = [await party(), await party()];
    const first = await api.call("POST", codes(s), { token: s.token });
    const activation = await api.call("POST", `/twinning/v1/primary/${enc(p.address)}/twins`, { token: p.token, body: { activationCode: first.body.activationCode.code, operatorId: "001-01" } });
    const used = await api.call("GET", new URL(first.body.activationCode.resourceURL).pathname, { token: s.token });
    const oldSecondaryToken = used.body.activationCode.accessToken as string;
    await api.call("DELETE", `/twinning/v1/primary/${enc(p.address)}/twins/${activation.body.twin.twinId}`, { token: p.token });
    const again = await api.twin(p, s);
    expect(again.twin.twinId).not.toBe(activation.body.twin.twinId);
    const stale = await api.call("GET", `/twinning/v1/secondary/${enc(s.address)}/twinning`, { token: oldSecondaryToken });
    expect([stale.status, messageId(stale.body)]).toEqual([401, "SVC2003"]);
  });

  it("HLF-SD-009 the secondary gets a primary-services token minted by the primary's operator, with its endpoints", async () => {
    const [p, s] = [await party(), await party()];
    await api.twin(p, s);
    const res = await api.call("POST", `/twinning/v1/secondary/${enc(s.address)}/twinning/primaryServicesToken`, { token: s.token });
    expect(res.status).toBe(200);
    const ps = res.body.primaryServices;
    expect(ps.endpoints).toEqual({ messaging: `${t.url}/messaging/v1`, nms: `${t.url}/nms/v1` });
    const [, payload] = (ps.accessToken as string).split(".");
    const claims = JSON.parse(Buffer.from(payload!, "base64url").toString());
    expect(claims).toMatchObject({ iss: "urn:twinning:operator:001-01", sub: p.address, act: { sub: s.address }, scope: "primary-services" });
    expect(Date.parse(ps.expiresAt)).toBe(claims.exp * 1000);
    // Not usable on the twinning API: it is for the primary's services.
    const misuse = await api.call("GET", `/twinning/v1/primary/${enc(p.address)}/twins`, { token: ps.accessToken });
    expect([misuse.status, messageId(misuse.body)]).toEqual([403, "POL2003"]);
  });

  it("HLF-CM-006 answers that carry an activation code or a token are marked Cache-Control: no-store (as /oauth/token's), so no cache on the way keeps them", async () => {
    const [p, s] = [await party(), await party()];
    const code = await api.call("POST", codes(s), { token: s.token, body: {} });
    const activation = await api.call("POST", `/twinning/v1/primary/${enc(p.address)}/twins`, { token: p.token, body: { activationCode: code.body.activationCode.code, operatorId: "001-01" } });
    const used = await api.call("GET", new URL(code.body.activationCode.resourceURL).pathname, { token: s.token });
    const services = await api.call("POST", `/twinning/v1/secondary/${enc(s.address)}/twinning/primaryServicesToken`, { token: s.token });
    expect([code.status, activation.status, used.status, services.status]).toEqual([201, 201, 200, 200]);
    expect([code, activation, used, services].map((r) => r.headers.get("cache-control"))).toEqual(["no-store", "no-store", "no-store", "no-store"]);
    // A list, which carries neither, may be kept.
    expect((await api.call("GET", `/twinning/v1/primary/${enc(p.address)}/twins`, { token: p.token })).headers.get("cache-control")).toBeNull();
  });
});

