import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isInternalHostLiteral, resolvesInternally } from "../../node/notifications/callback-target.ts";
import { Api, enc, messageId, newAddress, startTestNode, type TestNode } from "../helpers/test-node.ts";

let t: TestNode;
let api: Api;
beforeAll(async () => {
  // The production default: internal callback targets refused.
  t = await startTestNode({ limits: { allowPrivateCallbackTargets: false } });
  api = new Api(t.url);
});
afterAll(async () => t.cleanup());

describe("callback targets (SSRF)", () => {
  it("HLF-CM-005 a subscription to an internal address is refused with SVC0002 naming notifyURL", async () => {
    const a = newAddress();
    const token = await api.subscriber(t.node.adminToken, a);
    for (const notifyURL of ["http://127.0.0.1:8080/admin", "http://169.254.169.254/latest/meta-data", "http://10.0.0.7/hook", "http://[::1]/x", "http://localhost/x", "http://192.168.1.1/"]) {
      const res = await api.call("POST", `/twinning/v1/primary/${enc(a)}/subscriptions`, { token, body: { callbackReference: { notifyURL } } });
      expect([res.status, messageId(res.body), res.body.requestError.serviceException.variables], notifyURL).toEqual([400, "SVC0002", ["callbackReference.notifyURL"]]);
    }
  });

  it("classifies addresses: loopback, link-local, private and unique-local are internal; public ones are not", async () => {
    expect(["http://8.8.8.8/x", "https://93.184.216.34/", "http://[2001:db8::1]/"].map(isInternalHostLiteral)).toEqual([false, false, false]);
    expect(["http://100.64.0.1/", "http://172.20.0.1/", "http://[fe80::1]/", "http://[fd00::1]/", "http://0.0.0.0/"].map(isInternalHostLiteral)).toEqual([true, true, true, true, true]);
    expect(await resolvesInternally("http://127.0.0.1:9/")).toBe(true);
    expect(await resolvesInternally("http://8.8.8.8/")).toBe(false);
    expect(await resolvesInternally("http://[::ffff:127.0.0.1]/")).toBe(true);
    expect(await resolvesInternally("http://[::ffff:8.8.8.8]/")).toBe(false);
  });
});
