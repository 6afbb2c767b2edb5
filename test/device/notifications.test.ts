import { once } from "node:events";
import { connect } from "node:net";
import { Pool } from "undici";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { CallbackReceiver } from "../helpers/callback-receiver.ts";
import { SseClient } from "../helpers/sse-client.ts";
import { rawHttp } from "../helpers/raw-http.ts";
import { ManualClock } from "../helpers/manual-clock.ts";
import { Api, enc, messageId, newAddress, startTestNode, type TestNode } from "../helpers/test-node.ts";
import { deactivateTwin, toggleTwin } from "../../node/service/twin-service.ts";

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

/**
 * A client that opens `who`'s secondary event stream on a raw socket and never reads it (after
 * `extraHeaders`); resolves once the node holds the stream.
 */
async function unreadStream(who: { address: string; token: string }, extraHeaders = "") {
  const path = `/twinning/v1/secondary/${enc(who.address)}/notifications`;
  const { hostname, port } = new URL(t.url);
  const socket = connect(Number(port), hostname);
  cleanups.push(async () => void socket.destroy());
  await once(socket, "connect");
  socket.pause();
  socket.write(`GET ${path} HTTP/1.1\r\nHost: ${hostname}\r\nAuthorization: Bearer ${who.token}\r\n${extraHeaders}\r\n`);
  const hub = t.node.context.hub;
  for (let i = 0; i < 100 && hub.connections(who.address, "secondary") === 0; i++) await new Promise((r) => setTimeout(r, 20));
  expect(hub.connections(who.address, "secondary")).toBe(1);
  return { socket, path };
}

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

  it("HLF-CM-005 HEAD of the event stream answers the stream's head and no stream; the connection goes on to the next request", async () => {
    const s = await party();
    const host = new URL(t.url).host;
    const request = (method: string, path: string, last = false) =>
      `${method} ${path} HTTP/1.1\r\nHost: ${host}\r\nAuthorization: Bearer ${s.token}\r\n${last ? "Connection: close\r\n" : ""}\r\n`;
    // Both on one connection, the second sent at once behind the first.
    const text = await rawHttp(t.url, (write) => write(request("HEAD", `/twinning/v1/secondary/${enc(s.address)}/notifications`) + request("GET", `/twinning/v1/secondary/${enc(s.address)}/subscriptions`, true)));
    const heads = text.split("\r\n").filter((line) => line.startsWith("HTTP/1.1 "));
    expect(heads).toEqual(["HTTP/1.1 200 OK", "HTTP/1.1 200 OK"]);
    expect(text.toLowerCase()).toContain("content-type: text/event-stream");
    expect(text).toContain('{"subscriptionList"');
  });

  it("HLF-CM-005 notifications committed in one turn by different operations reach a stream in commit order, none dropped", async () => {
    const p = await party();
    const seconds = [await party(), await party(), await party()];
    const twins = [];
    for (const s of seconds) twins.push((await api.twin(p, s)).twin);
    const ctx = t.node.context;
    const stream = await SseClient.open(`${t.url}/twinning/v1/primary/${enc(p.address)}/notifications`, p.token);
    cleanups.push(() => stream.close());
    for (let i = 0; i < 100 && ctx.hub.connections(p.address, "primary") === 0; i++) await new Promise((r) => setTimeout(r, 10));
    const [t1, t2, t3] = await Promise.all(twins.map(async (x) => (await ctx.store.getTwin(x.twinId))!));
    // Toggles share a group commit; a deactivation commits that group first, then its own
    // transaction, and resumes its caller sooner: commit order and resume order differ.
    await Promise.all([toggleTwin(ctx, t1!, "Off", "secondary"), deactivateTwin(ctx, t2!, "secondary"), toggleTwin(ctx, t3!, "Off", "secondary")]);
    const committed = await ctx.store.notificationsAfter(p.address, "primary", 0, 100);
    expect(committed.map((n) => n.type)).toEqual(["twinningStatusNotification", "twinningDeactivatedNotification", "twinningStatusNotification"]);
    await stream.waitFor(3).catch(() => undefined);
    expect(stream.events.map((e) => Number(e.id))).toEqual(committed.map((n) => n.id));
  });

  it("HLF-CM-005 a resume that missed more than a page of events (1,000) replays every one of them, then goes live", async () => {
    const [p, s] = [await party(), await party()];
    const { twin } = await api.twin(p, s);
    const ctx = t.node.context;
    const record = (await ctx.store.getTwin(twin.twinId))!;
    for (let i = 0; i < 1_100; i++) await toggleTwin(ctx, record, i % 2 ? "On" : "Off", "secondary");
    const missed = await ctx.store.notificationsAfter(p.address, "primary", 0, 10_000);
    expect(missed).toHaveLength(1_100);
    const stream = await SseClient.open(`${t.url}/twinning/v1/primary/${enc(p.address)}/notifications`, p.token, "0");
    cleanups.push(() => stream.close());
    await stream.waitFor(1_100, 10_000);
    await toggleTwin(ctx, record, "Off", "secondary");
    const live = (await ctx.store.notificationsAfter(p.address, "primary", missed[missed.length - 1]!.id, 10))[0]!;
    await stream.waitFor(1_101);
    expect(stream.events.map((e) => Number(e.id))).toEqual([...missed.map((n) => n.id), live.id]);
  });

  it("HLF-CM-005 a Last-Event-ID beyond any id given (made up, or from before a restore) still gets the live events", async () => {
    const [p, s] = [await party(), await party()];
    const { twin } = await api.twin(p, s);
    const stream = await SseClient.open(`${t.url}/twinning/v1/secondary/${enc(s.address)}/notifications`, s.token, "999999999999");
    cleanups.push(() => stream.close());
    expect(stream.status).toBe(200);
    for (let i = 0; i < 100 && t.node.context.hub.connections(s.address, "secondary") === 0; i++) await new Promise((r) => setTimeout(r, 10));
    await api.call("PUT", `/twinning/v1/primary/${enc(p.address)}/twins/${twin.twinId}/status`, { token: p.token, body: { status: "Off" } });
    const [event] = await stream.waitFor(1);
    expect(event!.data.twinningStatusNotification).toMatchObject({ twinId: twin.twinId, status: "Off" });
  });

  it("HLF-CM-005 an SSE client that stops reading is disconnected once 1 MiB is unsent, and resumes from Last-Event-ID without a gap", async () => {
    const [p, s] = [await party(), await party()];
    const { twin } = await api.twin(p, s);
    const hub = t.node.context.hub;
    // A client that opens the stream and never reads it.
    const { socket, path } = await unreadStream(s);

    // Toggles until the node gives up on the stream, bounded. The kernel's socket buffers fill
    // first (~4 MB here: about 20,000 toggles, 10 s).
    const pool = new Pool(t.url, { connections: 8 });
    cleanups.push(() => pool.close());
    const statusPath = `/twinning/v1/primary/${enc(p.address)}/twins/${twin.twinId}/status`;
    const toggle = async (status: string) => {
      const res = await pool.request({ method: "PUT", path: statusPath, headers: { authorization: `Bearer ${p.token}`, "content-type": "application/json" }, body: JSON.stringify({ status }) });
      await res.body.dump();
    };
    let rounds = 0;
    while (hub.connections(s.address, "secondary") > 0) {
      if (++rounds > 250) throw new Error("the stream was not closed after 50,000 toggles");
      await Promise.all(Array.from({ length: 8 }, async (_, k) => { for (let i = 0; i < 25; i++) await toggle((i + k) % 2 ? "On" : "Off"); }));
    }
    // Changes after the cut, whenever in its round the cut came: at least one of these two is one.
    await toggle("On");
    await toggle("Off");

    // What the node had queued still arrives, then the answer ends.
    let text = "";
    socket.on("data", (d) => (text += String(d)));
    socket.resume();
    await Promise.race([once(socket, "end"), new Promise((_, reject) => setTimeout(() => reject(new Error("the stream did not end")), 20_000))]);
    expect(text.endsWith("0\r\n\r\n")).toBe(true);
    const ids = [...text.matchAll(/^id: (\d+)$/gm)].map((m) => Number(m[1]));
    expect(text.length).toBeGreaterThan(1 << 20);
    expect(ids.every((id, i) => i === 0 || id > ids[i - 1]!)).toBe(true);

    // Resumed from the last id read: every later event, none lost, none twice.
    const committed = await t.node.context.store.notificationsAfter(s.address, "secondary", ids[ids.length - 1]!, 10_000);
    expect(committed.length).toBeGreaterThan(0);
    const resumed = await SseClient.open(`${t.url}${path}`, s.token, String(ids[ids.length - 1]));
    cleanups.push(() => resumed.close());
    const replay = await resumed.waitFor(committed.length);
    expect(replay.map((e) => Number(e.id))).toEqual(committed.map((n) => n.id));
  });

  it("HLF-CM-005 a client that stops reading during a long replay is disconnected once more than a page of live events waits behind it, and resumes without a gap", async () => {
    const [p, s] = [await party(), await party()];
    const { twin } = await api.twin(p, s);
    const ctx = t.node.context;
    const record = (await ctx.store.getTwin(twin.twinId))!;
    // A replay larger than the kernel's socket buffers (~4 MB here): ~20,000 events of ~300 bytes.
    const toggles = async (n: number) => {
      for (let i = 0; i < n; i++) await toggleTwin(ctx, record, (await ctx.store.getTwin(twin.twinId))!.status === "On" ? "Off" : "On", "primary");
    };
    await toggles(20_000);
    const { path } = await unreadStream(s, "Last-Event-ID: 0\r\n");
    // The replay now waits for a client that does not read; live events queue behind it, bounded.
    let rounds = 0;
    while (ctx.hub.connections(s.address, "secondary") > 0) {
      if (++rounds > 30) throw new Error("the stream was not closed after 3,000 live events");
      await toggles(100);
    }
    expect(rounds).toBeGreaterThan(1);
    const resumed = await SseClient.open(`${t.url}${path}`, s.token, "0");
    cleanups.push(() => resumed.close());
    const committed = await ctx.store.notificationsAfter(s.address, "secondary", 0, 100_000);
    const replay = await resumed.waitFor(committed.length, 30_000);
    expect(replay.map((e) => Number(e.id))).toEqual(committed.map((n) => n.id));
  }, 60_000);

  it("HLF-CM-005 the operator's dead-letter list shows where a callback went, without the userinfo or query its notifyURL carried", async () => {
    const [p, s] = [await party(), await party()];
    const { twin } = await api.twin(p, s);
    const created = await subscribe("primary", p, "http://user:pw@127.0.0.1:1/callbacks?token=s3cret-in-query");
    expect(created.status).toBe(201);
    await api.call("PUT", `/twinning/v1/secondary/${enc(s.address)}/twinning/status`, { token: s.token, body: { status: "Off" } });
    const store = t.node.context.store;
    const [entry] = (await store.dueOutboxHeads(Date.now() + 3_600_000, 100)).filter((e) => e.target.includes("s3cret-in-query"));
    expect(entry, `twin ${twin.twinId}`).toBeDefined();
    await store.failOutboxEntry({ id: entry!.id, attempts: 1, nextAttemptAtMs: undefined, lastError: "given up", nowMs: Date.now() });
    const dead = await api.call("GET", "/admin/v1/deadLetters", { token: t.node.adminToken });
    const listed = dead.body.deadLetters.find((d: { id: number }) => d.id === entry!.id);
    expect(listed).toMatchObject({ kind: "callback", target: "http://127.0.0.1:1/callbacks" });
    expect(JSON.stringify(dead.body)).not.toMatch(/s3cret-in-query|user:pw/);
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
    // Tried while down, and refused: nothing delivered yet.
    for (let i = 0; i < 100 && r.attempts === 0; i++) await new Promise((res) => setTimeout(res, 20));
    expect(r.attempts).toBeGreaterThan(0);
    expect(r.received).toHaveLength(0);
    r.status = 204;
    const got = await r.waitFor(3, 10_000);
    await new Promise((res) => setTimeout(res, 300));
    expect(r.received.map((n) => n.twinningStatusNotification.status)).toEqual(["Off", "On", "Off"]);
  });

  it("HLF-CM-005 a notification stream and the callback subscriptions end when their subscriber is de-provisioned or given a new credential", async () => {
    const [p, s] = [await party(), await party()];
    await api.twin(p, s, "watch");
    const streamOf = async (who: { address: string; token: string }, role: string) => {
      const stream = await SseClient.open(`${t.url}/twinning/v1/${role}/${enc(who.address)}/notifications`, who.token);
      cleanups.push(() => stream.close());
      expect(stream.status).toBe(200);
      return stream;
    };
    const [ofSecondary, ofPrimary] = [await streamOf(s, "secondary"), await streamOf(p, "primary")];
    const r = await receiver();
    expect((await subscribe("secondary", s, r.url)).status).toBe(201);
    expect((await api.call("DELETE", `/admin/v1/subscribers/${enc(s.address)}`, { token: t.node.adminToken })).status).toBe(204);
    await ofSecondary.ended();
    // Provisioned again: the old subscription is gone, and the toggle reaches no one at s.
    const again = await api.subscriber(t.node.adminToken, s.address);
    expect((await api.call("GET", `/twinning/v1/secondary/${enc(s.address)}/subscriptions`, { token: again })).body.subscriptionList.subscription ?? []).toEqual([]);
    // De-provisioning ended s's twin: the primary, whose stream is still open, hears it, and
    // the new holder of s's number has no twin and no history.
    await ofPrimary.waitFor(1);
    expect(ofPrimary.events.map((e) => [e.event, e.data.twinningDeactivatedNotification?.changedBy])).toEqual([["twinningDeactivatedNotification", "secondary"]]);
    expect((await api.call("GET", `/twinning/v1/primary/${enc(p.address)}/twins`, { token: p.token })).body.twinList.twin).toEqual([]);
    expect((await api.call("GET", `/twinning/v1/secondary/${enc(s.address)}/twinning`, { token: again })).status).toBe(404);
    const replay = await SseClient.open(`${t.url}/twinning/v1/secondary/${enc(s.address)}/notifications`, again, "0");
    cleanups.push(() => replay.close());
    await new Promise((resolve) => setTimeout(resolve, 200)); // a callback or a replayed event, were one left, would be out by now
    expect(replay.events).toEqual([]);
    expect(ofSecondary.events).toEqual([]);
    expect(r.received).toEqual([]);
    // A new credential for the primary ends the stream its old token opened.
    await api.provision(t.node.adminToken, p.address, "a-new-credential-for-p");
    await ofPrimary.ended();
  });

  it("HLF-CM-005 a notification stream ends when the token it was opened with expires", async () => {
    const clock = new ManualClock();
    const node = await startTestNode({}, { nowMs: clock.now });
    const nodeApi = new Api(node.url);
    try {
      const [p, s] = [newAddress(), newAddress()];
      const [pToken, sToken] = [await nodeApi.subscriber(node.node.adminToken, p), await nodeApi.subscriber(node.node.adminToken, s)];
      await nodeApi.twin({ address: p, token: pToken }, { address: s, token: sToken }, "watch");
      const stream = await SseClient.open(`${node.url}/twinning/v1/secondary/${enc(s)}/notifications`, sToken);
      cleanups.push(() => stream.close());
      const toggle = async (token: string, status: string) =>
        expect((await nodeApi.call("PUT", `/twinning/v1/primary/${enc(p)}/twins/watch/status`, { token, body: { status } })).status).toBe(200);
      await toggle(pToken, "Off");
      await stream.waitFor(1);
      clock.advance(3_600_000); // past the access token's lifetime (3600 s)
      await toggle(await nodeApi.token(p, `secret-${p.slice(-6)}`), "On");
      await stream.ended();
      expect(stream.events.length).toBe(1);
    } finally {
      await node.cleanup();
    }
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
