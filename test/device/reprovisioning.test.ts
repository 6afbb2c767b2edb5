import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { CallbackReceiver } from "../helpers/callback-receiver.ts";
import { Api, enc, messageId, newAddress, startTestNode, type TestNode } from "../helpers/test-node.ts";

/**
 * HLF-CM-006: a number's provisioning is the operator's control over who uses twinning. What a
 * provisioning opened (codes, subscriptions, clientCorrelators) ends with it, and whoever gets
 * the number next inherits nothing.
 */
let t: TestNode;
let api: Api;
const cleanups: (() => Promise<void>)[] = [];
beforeAll(async () => {
  t = await startTestNode({});
  api = new Api(t.url);
});
afterEach(async () => {
  for (const cleanup of cleanups.splice(0)) await cleanup();
});
afterAll(async () => t.cleanup());

const V1 = "/twinning/v1";
const party = async (address = newAddress()) => ({ address, token: await api.subscriber(t.node.adminToken, address) });
const requestCode = (s: { address: string; token: string }, body: object = {}) =>
  api.call("POST", `${V1}/secondary/${enc(s.address)}/activationCodes`, { token: s.token, body });
const redeem = (p: { address: string; token: string }, code: string) =>
  api.call("POST", `${V1}/primary/${enc(p.address)}/twins`, { token: p.token, body: { activationCode: code, operatorId: "001-01" } });
/** Resolves "delivered" when the receiver gets a callback within `ms`, else "none". */
const deliveredWithin = (r: CallbackReceiver, ms: number) =>
  Promise.race([r.waitFor(1).then(() => "delivered"), new Promise((resolve) => setTimeout(() => resolve("none"), ms))]);

describe("re-provisioning", () => {
  it("HLF-CM-006 a code shown to a secondary that is then de-provisioned is void: the primary cannot redeem it, and the number's next holder inherits no twin and no code", async () => {
    const [p, s] = [await party(), await party()];
    const code = await requestCode(s, { clientCorrelator: "first" });
    expect(code.status).toBe(201);
    expect((await api.call("DELETE", `/admin/v1/subscribers/${enc(s.address)}`, { token: t.node.adminToken })).status).toBe(204);
    const refused = await redeem(p, code.body.activationCode.code);
    expect([refused.status, messageId(refused.body)]).toEqual([400, "SVC3001"]);

    const next = await party(s.address);
    expect((await api.call("GET", `${V1}/secondary/${enc(s.address)}/twinning`, { token: next.token })).status).toBe(404);
    // The previous holder's clientCorrelator replays nothing: a fresh code.
    const fresh = await requestCode(next, { clientCorrelator: "first" });
    expect(fresh.status).toBe(201);
    expect(fresh.body.activationCode.resourceURL).not.toBe(code.body.activationCode.resourceURL);
    expect(fresh.body.activationCode.code).not.toBe(code.body.activationCode.code);
  });

  it("HLF-CM-006 a credential change voids the subscriber's pending code along with its tokens", async () => {
    const [p, s] = [await party(), await party()];
    const code = await requestCode(s);
    await api.provision(t.node.adminToken, s.address, "a-brand-new-credential");
    expect((await requestCode(s)).status).toBe(401);
    expect(messageId((await redeem(p, code.body.activationCode.code)).body)).toBe("SVC3001");
  });

  for (const [change, provisioning] of [
    ["a credential change", { twinning: true, credential: "a-brand-new-credential" }],
    ["twinning switched off", { twinning: false, credential: "a-brand-new-credential" }],
  ] as const) {
    it(`HLF-CM-006 after ${change}, the subscriptions opened with the old tokens receive nothing more`, async () => {
      const [p, s] = [await party(), await party()];
      await api.twin(p, s);
      const receiver = await new CallbackReceiver().start();
      cleanups.push(() => receiver.stop());
      const subscribed = await api.call("POST", `${V1}/primary/${enc(p.address)}/subscriptions`, { token: p.token, body: { callbackReference: { notifyURL: receiver.url } } });
      expect(subscribed.status).toBe(201);
      expect((await api.call("PUT", `/admin/v1/subscribers/${enc(p.address)}`, { token: t.node.adminToken, body: { subscriber: provisioning } })).status).toBe(200);
      // The old token is refused: 401 (another provisioning) or 403 POL2001 (not provisioned for twinning).
      expect([401, 403]).toContain((await api.call("GET", `${V1}/primary/${enc(p.address)}/twins`, { token: p.token })).status);
      // The other side's toggle still goes through; only the revoked subscription stays silent.
      expect((await api.call("PUT", `${V1}/secondary/${enc(s.address)}/twinning/status`, { token: s.token, body: { status: "Off" } })).status).toBe(200);
      // Callbacks are delivered meanwhile: another primary's subscription hears its secondary's toggle.
      const [p2, s2] = [await party(), await party()];
      await api.twin(p2, s2);
      const control = await new CallbackReceiver().start();
      cleanups.push(() => control.stop());
      expect((await api.call("POST", `${V1}/primary/${enc(p2.address)}/subscriptions`, { token: p2.token, body: { callbackReference: { notifyURL: control.url } } })).status).toBe(201);
      expect((await api.call("PUT", `${V1}/secondary/${enc(s2.address)}/twinning/status`, { token: s2.token, body: { status: "Off" } })).status).toBe(200);
      await control.waitFor(1);
      expect(await deliveredWithin(receiver, 1_000)).toBe("none");
    });
  }
});
