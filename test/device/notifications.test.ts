import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { CallbackReceiver } from "../helpers/callback-receiver.ts";
import { SseClient } from "../helpers/sse-client.ts";
import { Api, enc, messageId, newAddress, startTestNode, type TestNode } from "../helpers/test-node.ts";

let t: TestNode;
let api: Api;
const cleanups: (() => Promise<void>)[] = [];

beforeAll(async () => {
  t = await startTestNode({ limits: { maxSseConnectionsPerSubscriber: 2, maxSubscriptionsPerSubscriber: 2 } });
  api = new Api(t.url);
});
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});
afterAll(async () => t.cleanup());

async function party() {
  const address = newAddress();
  return { address, token: await api.subscriber(t.node.adminToken, address) };
}
async function receiver() {
  const r = await new CallbackReceiver().start();
  cleanups.push(() => r.stop());
  return r;
}
const subscribe = (role: string, who: { address: string; token: string }, notifyURL: string, callbackData?: string, extra: object = {}) =>
  api.call("POST", `/twinning/v1/${role}/${enc(who.address)}/subscriptions`, {
    token: who.token,
    body: { callbackReference: { notifyURL, ...(callbackData ? { callbackData } : {}) }, duration: 3600, ...extra },
  });

describe("notifications", () => {
  it("HLF-PD-007 a toggle by the secondary notifies the primary's callback once it has taken effect", async () => {
    const [p, s] = [await party(), await party()];
    const { twin } = await api.twin(p, s);
    const r = await receiver();
    const sub = await subscribe("primary", p, r.url, "phone-app-1");
    expect(sub.status).toBe(201);
    expect(sub.body.subscription.callbackReference).toEqual({ notifyURL: r.url, callbackData: "phone-app-1" });
    await api.call("PUT", `/twinning/v1/secondary/${enc(s.address)}/twinning/status`, { token: s.token, body: { status: "Off" } });
    const [n] = await r.waitFor(1);
    expect(n.twinningStatusNotification).toMatchObject({
      twinId: twin.twinId,
      primaryAddress: p.address,
      secondaryAddress: s.address,
      status: "Off",
      changedBy: "secondary",
      callbackData: "phone-app-1",
    });
    expect(Date.parse(n.twinningStatusNotification.timestamp)).not.toBeNaN();
  });

  it("HLF-SD-008 a toggle by the primary notifies the secondary's callback; a deactivation too", async () => {
    const [p, s] = [await party(), await party()];
    const { twin } = await api.twin(p, s);
    const r = await receiver();
    await subscribe("secondary", s, r.url);
    await api.call("PUT", `/twinning/v1/primary/${enc(p.address)}/twins/${twin.twinId}/status`, { token: p.token, body: { status: "Off" } });
    await api.call("DELETE", `/twinning/v1/primary/${enc(p.address)}/twins/${twin.twinId}`, { token: p.token });
    const got = await r.waitFor(2);
    expect(got[0].twinningStatusNotification).toMatchObject({ status: "Off", changedBy: "primary" });
    expect(got[1].twinningDeactivatedNotification).toMatchObject({ twinId: twin.twinId, changedBy: "primary" });
  });

  it("HLF-CM-005 device-based clients get the same notifications over Server-Sent Events, and resume from Last-Event-ID", async () => {
    const [p, s] = [await party(), await party()];
    const { twin } = await api.twin(p, s);
    const url = `${t.url}/twinning/v1/secondary/${enc(s.address)}/notifications`;
    const stream = await SseClient.open(url, s.token);
    cleanups.push(() => stream.close());
    expect(stream.status).toBe(200);
    const toggle = (status: string) => api.call("PUT", `/twinning/v1/primary/${enc(p.address)}/twins/${twin.twinId}/status`, { token: p.token, body: { status } });
    await toggle("Off");
    const [first] = await stream.waitFor(1);
    expect(first!.event).toBe("twinningStatusNotification");
    expect(first!.data.twinningStatusNotification).toMatchObject({ twinId: twin.twinId, status: "Off", changedBy: "primary" });
    await stream.close();
    // Missed while disconnected: replayed in order on reconnect.
    await toggle("On");
    await toggle("Off");
    const resumed = await SseClient.open(url, s.token, first!.id);
    cleanups.push(() => resumed.close());
    const replay = await resumed.waitFor(2);
    expect(replay.map((e) => e.data.twinningStatusNotification.status)).toEqual(["On", "Off"]);
    expect(Number(replay[1]!.id)).toBeGreaterThan(Number(replay[0]!.id));
  });

  it("HLF-CM-005 server-based clients: subscriptions can be listed, read and cancelled", async () => {
    const p = await party();
    const r = await receiver();
    const created = await subscribe("primary", p, r.url, "x");
    const path = new URL(created.body.subscription.resourceURL).pathname;
    const list = await api.call("GET", `/twinning/v1/primary/${enc(p.address)}/subscriptions`, { token: p.token });
    expect(list.body.subscriptionList.subscription.map((x: any) => x.resourceURL)).toEqual([created.body.subscription.resourceURL]);
    expect((await api.call("GET", path, { token: p.token })).body.subscription.duration).toBe(3600);
    expect((await api.call("DELETE", path, { token: p.token })).status).toBe(204);
    const gone = await api.call("GET", path, { token: p.token });
    expect([gone.status, messageId(gone.body)]).toEqual([404, "SVC0002"]);
  });

  it("a callback that is down gets the notifications later, in order, each once", async () => {
    const [p, s] = [await party(), await party()];
    const { twin } = await api.twin(p, s);
    const r = await receiver();
    r.status = 503;
    await subscribe("secondary", s, r.url);
    for (const status of ["Off", "On", "Off"]) {
      await api.call("PUT", `/twinning/v1/primary/${enc(p.address)}/twins/${twin.twinId}/status`, { token: p.token, body: { status } });
    }
    await new Promise((res) => setTimeout(res, 150));
    expect(r.received).toHaveLength(0);
    r.status = 204;
    const got = await r.waitFor(3, 10_000);
    await new Promise((res) => setTimeout(res, 300));
    expect(r.received.map((n) => n.twinningStatusNotification.status)).toEqual(["Off", "On", "Off"]);
  });

  it("subscriptions and SSE streams per subscriber are bounded by configuration", async () => {
    const p = await party();
    const r = await receiver();
    expect((await subscribe("primary", p, r.url)).status).toBe(201);
    expect((await subscribe("primary", p, r.url)).status).toBe(201);
    const third = await subscribe("primary", p, r.url);
    expect([third.status, messageId(third.body)]).toEqual([403, "POL0001"]);
    const url = `${t.url}/twinning/v1/primary/${enc(p.address)}/notifications`;
    const streams = [await SseClient.open(url, p.token), await SseClient.open(url, p.token)];
    cleanups.push(async () => Promise.all(streams.map((x) => x.close())).then(() => undefined));
    const over = await SseClient.open(url, p.token);
    expect(over.status).toBe(403);
  });

  it("the same clientCorrelator creates one subscription", async () => {
    const p = await party();
    const r = await receiver();
    const a = await subscribe("primary", p, r.url, undefined, { clientCorrelator: "sub-1" });
    const b = await subscribe("primary", p, r.url, undefined, { clientCorrelator: "sub-1" });
    expect(b.body.subscription.resourceURL).toBe(a.body.subscription.resourceURL);
    const list = await api.call("GET", `/twinning/v1/primary/${enc(p.address)}/subscriptions`, { token: p.token });
    expect(list.body.subscriptionList.subscription).toHaveLength(1);
  });
});
