import { randomUUID } from "node:crypto";
import { channel } from "node:diagnostics_channel";
import { readFileSync, writeFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createSigningKey } from "../../certs/federation-pki.ts";
import { CallbackReceiver } from "../helpers/callback-receiver.ts";
import { Federation, eventually, writePeerFiles, type FederatedOperator } from "../helpers/federation-fixture.ts";
import { enc } from "../helpers/test-node.ts";
import type { TwinningStore } from "../../node/store/store-port.ts";

const fed = new Federation();
let n = 0;
const addr = (op: FederatedOperator) => `tel:+1${op.operatorId.replace("-", "")}${String(++n).padStart(5, "0")}`;
const A = () => fed.get("001-01");
const B = () => fed.get("002-01");

beforeAll(async () => {
  // A short call deadline makes armed compensations due soon (twice the deadline).
  // A short shutdown grace: one test stops A while a request of its waits forever.
  await fed.start(["001-01", "002-01"], (op) => (op === "001-01" ? { policy: { maxTwinsPerPrimary: 1 }, federation: { callTimeoutMs: 400 } as never, limits: { shutdownGraceMs: 500 } } : {}));
}, 60_000);
afterAll(async () => fed.stop());

async function crossTwin() {
  const p = await A().party(addr(A()));
  const s = await B().party(addr(B()));
  const code = await B().api.call("POST", `/twinning/v1/secondary/${enc(s.address)}/activationCodes`, { token: s.token, body: {} });
  const act = await A().api.call("POST", `/twinning/v1/primary/${enc(p.address)}/twins`, { token: p.token, body: { activationCode: code.body.activationCode.code, operatorId: "002-01" } });
  expect(act.status, JSON.stringify(act.body)).toBe(201);
  return { p, s, twinId: act.body.twin.twinId as string };
}
const toggleAtA = (p: { address: string; token: string }, twinId: string, status: string) =>
  A().api.call("PUT", `/twinning/v1/primary/${enc(p.address)}/twins/${twinId}/status`, { token: p.token, body: { status } });
const drained = async () => (await A().node().context.store.outboxStats()).pending === 0 && (await B().node().context.store.outboxStats()).pending === 0;

describe("durable delivery between operators", () => {
  it("HLF-IC-007 a peer down during toggles gets every change once it is back: in order, exactly once, nothing lost", async () => {
    const { p, s, twinId } = await crossTwin();
    const receiver = await new CallbackReceiver().start();
    try {
      await B().api.call("POST", `/twinning/v1/secondary/${enc(s.address)}/subscriptions`, { token: s.token, body: { callbackReference: { notifyURL: receiver.url } } });
      await fed.stopNode("002-01");
      for (const status of ["Off", "On", "Off"]) expect((await toggleAtA(p, twinId, status)).status).toBe(200);
      expect((await A().node().context.store.outboxStats()).pending).toBeGreaterThan(0);
      await fed.restartNode("002-01");
      await eventually(drained, (v) => v);
      await receiver.waitFor(3);
      await new Promise((r) => setTimeout(r, 300));
      expect(receiver.received.map((x) => x.twinningStatusNotification.status)).toEqual(["Off", "On", "Off"]);
      expect((await B().node().context.store.getTwin(twinId))?.status).toBe("Off");
    } finally {
      await receiver.stop();
    }
  });

  it("a node restarted with queued messages delivers them after the restart", async () => {
    const { p, twinId } = await crossTwin();
    await fed.stopNode("002-01");
    await toggleAtA(p, twinId, "Off");
    await fed.stopNode("001-01"); // the message waits in A's database
    await fed.restartNode("002-01");
    await fed.restartNode("001-01");
    const atB = await eventually(() => B().node().context.store.getTwin(twinId), (t) => t?.status === "Off");
    expect(atB?.version).toBe(2);
  });

  it("a toggle's message to the peer is written before the device's answer leaves (the device's wake-up does not hold the send back)", async () => {
    const { p, twinId } = await crossTwin();
    await toggleAtA(p, twinId, "Off");
    await eventually(drained, (v) => v);
    const events: string[] = [];
    const peerWrite = channel("undici:client:sendHeaders");
    const answered = channel("http.server.response.finish");
    const onPeerWrite = (m: unknown) => {
      const { request } = m as { request: { path: string; method: string } };
      if (request.method === "PUT" && request.path.startsWith(`/federation/v1/twins/${twinId}/status`)) events.push("peer message written");
    };
    const onAnswered = (m: unknown) => {
      const { request } = m as { request: { url?: string; method?: string } };
      if (request.method === "PUT" && request.url?.endsWith(`/twins/${twinId}/status`)) events.push("device answered");
    };
    peerWrite.subscribe(onPeerWrite);
    answered.subscribe(onAnswered);
    try {
      for (let i = 0; i < 5; i++) {
        events.length = 0;
        expect((await toggleAtA(p, twinId, i % 2 ? "Off" : "On")).status).toBe(200);
        expect(events).toEqual(["peer message written", "device answered"]);
        // The next toggle finds the lane free again, as a device's next toggle usually does.
        await eventually(drained, (v) => v);
      }
    } finally {
      peerWrite.unsubscribe(onPeerWrite);
      answered.unsubscribe(onAnswered);
    }
  });

  it("no new TLS handshake per message once the connection is warm", async () => {
    const { p, twinId } = await crossTwin();
    await toggleAtA(p, twinId, "Off");
    await eventually(drained, (v) => v);
    const client = A().node().context.federation!.client;
    const before = client.handshakes;
    // And counted where the peer's connections arrive (the bench counts both).
    const accepted = async () => (await B().node().context.metrics.registry.getSingleMetricAsString("twinning_federation_inbound_tls_connections_total")).match(/ (\d+)$/m)![1];
    const acceptedBefore = await accepted();
    expect(Number(acceptedBefore)).toBeGreaterThan(0);
    for (let i = 0; i < 20; i++) {
      await toggleAtA(p, twinId, i % 2 ? "Off" : "On");
      await eventually(drained, (v) => v);
    }
    expect(client.handshakes - before).toBe(0);
    expect(await accepted()).toBe(acceptedBefore);
    expect((await B().node().context.store.getTwin(twinId))?.version).toBe(22);
  });

  it("signing key rotation mid-traffic loses nothing: old and new kid are both valid during the overlap", async () => {
    const { p, twinId } = await crossTwin();
    const a = A();
    const next = await createSigningKey({ operatorId: "001-01", kid: "001-01-rotated" });
    // 1. Peers learn the new key next to the old one.
    writePeerFiles(fed.operators.map((o) => ({ ...o, federationUrl: o.t.node.federationUrl!, ...(o.operatorId === "001-01" ? { extraKeys: next.jwks.keys } : {}) })));
    await B().t.node.reloadFederation();
    let status = "Off";
    const traffic = (async () => {
      for (let i = 0; i < 30; i++) {
        status = i % 2 ? "On" : "Off";
        expect((await toggleAtA(p, twinId, status)).status).toBe(200);
      }
    })();
    // 2. A switches to the new key while toggles flow.
    const old = readFileSync(a.signingKeyFile, "utf8");
    writeFileSync(a.signingKeyFile, JSON.stringify(next.privateJwk));
    await a.t.node.reloadFederation();
    await traffic;
    await eventually(drained, (v) => v);
    const atB = await B().node().context.store.getTwin(twinId);
    expect([atB?.status, atB?.version]).toEqual([status, 31]);
    expect((await A().node().context.store.outboxStats()).dead).toBe(0);
    expect(A().node().context.federation!.jwks().keys.map((k) => k.kid)).toEqual(["001-01-rotated"]);
    // Leave the federation as the other tests expect it: back to the key the fixture knows.
    writeFileSync(a.signingKeyFile, old);
    await a.t.node.reloadFederation();
  });

  it("HLF-IC-005 a retried status message (same msgId) gets the first answer and changes and notifies once", async () => {
    const { s, twinId } = await crossTwin();
    const twin = (await A().node().context.store.getTwin(twinId))!;
    const message = { method: "PUT" as const, path: `/twins/${twinId}/status`, msgId: randomUUID(), body: { status: "Off", version: twin.version + 1, changedBy: "primary" } };
    const federation = A().node().context.federation!;
    const first = await federation.send("002-01", message);
    const retry = await federation.send("002-01", message);
    expect(first).toEqual({ status: 200, body: { twinId, status: "Off", version: twin.version + 1 } });
    expect(retry).toEqual(first);
    const feed = await B().node().context.store.notificationsAfter(s.address, "secondary", 0, 100);
    expect(feed.filter((x) => x.type === "twinningStatusNotification" && x.content.twinId === twinId)).toHaveLength(1);
  });

  it("a crash after the peer committed an activation and before our side did: the armed compensation undoes it after restart", async () => {
    const p = await A().party(addr(A()));
    const s = await B().party(addr(B()));
    const code = await B().api.call("POST", `/twinning/v1/secondary/${enc(s.address)}/activationCodes`, { token: s.token, body: {} });
    // A real activation, whose commit at A never comes: the process is stopped while it waits.
    const store = A().node().context.store as TwinningStore;
    let reachedCommit!: () => void;
    const atCommit = new Promise<void>((resolve) => (reachedCommit = resolve));
    store.insertFederatedTwin = () => (reachedCommit(), new Promise<never>(() => undefined));
    const activation = A()
      .api.call("POST", `/twinning/v1/primary/${enc(p.address)}/twins`, { token: p.token, body: { activationCode: code.body.activationCode.code, operatorId: "002-01" } })
      .catch((error: unknown) => error);
    await atCommit;
    const twin = await B().node().context.store.findTwinOfSecondary(s.address);
    expect(twin?.active).toBe(true);
    await fed.stopNode("001-01");
    await activation;
    await fed.restartNode("001-01");
    // The compensation armed before the call is due after twice the call deadline, and ends the twin at B.
    const atB = await eventually(() => B().node().context.store.getTwin(twin!.twinId), (t) => t?.active === false);
    expect(atB?.active).toBe(false);
    expect(await A().node().context.store.getTwin(twin!.twinId)).toBeUndefined();
  });

  it("a successful activation withdraws its armed compensation in the same transaction", async () => {
    const { twinId } = await crossTwin();
    // Withdrawn as the twin committed: nothing is left queued for the peer.
    expect(await A().node().context.store.countQueuedForPeer("002-01", 100)).toBe(0);
    await new Promise((r) => setTimeout(r, 1_000)); // longer than the armed delay
    // Had it been left armed, the worker's next look would send it now and end the twin at B.
    A().node().context.wakeOutbox();
    await eventually(drained, (v) => v);
    expect((await A().node().context.store.getTwin(twinId))?.active).toBe(true);
    expect((await B().node().context.store.getTwin(twinId))?.active).toBe(true);
  });

  it("HLF-IC-007 batch extension: queued messages go in one signed request, applied in order, one result each", async () => {
    const { s, twinId } = await crossTwin();
    const federation = A().node().context.federation!;
    const operator = await federation.send("002-01", { method: "GET", path: "/operator", msgId: randomUUID() });
    expect(operator.body.extensions).toEqual(["batch"]);
    expect(await federation.supportsBatch("002-01")).toBe(true);
    const twin = (await A().node().context.store.getTwin(twinId))!;
    const messages = [
      { method: "PUT", path: `/twins/${twinId}/status`, msgId: randomUUID(), body: { status: "Off", version: twin.version + 1, changedBy: "primary" } },
      { method: "PUT", path: `/twins/${randomUUID()}/status`, msgId: randomUUID(), body: { status: "Off", version: 2, changedBy: "primary" } },
      { method: "PUT", path: "/activations", msgId: randomUUID(), body: {} },
      { method: "PUT", path: `/twins/${twinId}/status`, msgId: randomUUID(), body: { status: "On", version: twin.version + 2, changedBy: "primary" } },
    ];
    const answer = await federation.send("002-01", { method: "POST", path: "/batch", msgId: randomUUID(), body: { messages } });
    expect(answer.status).toBe(200);
    expect(answer.body.results.map((r: any) => [r.msgId, r.status])).toEqual([
      [messages[0]!.msgId, 200],
      [messages[1]!.msgId, 404],
      [messages[2]!.msgId, 400],
      [messages[3]!.msgId, 200],
    ]);
    const atB = await B().node().context.store.getTwin(twinId);
    expect([atB?.status, atB?.version]).toEqual(["On", twin.version + 2]);
    const feed = await B().node().context.store.notificationsAfter(s.address, "secondary", 0, 100);
    expect(feed.filter((x) => x.content.twinId === twinId && x.type === "twinningStatusNotification").map((x) => x.content.status)).toEqual(["Off", "On"]);
  });

  it("a message the peer refuses for good becomes a dead letter, visible in the admin API and the metrics", async () => {
    const a = A();
    await a.node().context.store.enqueuePeerMessages(
      [{ operatorId: "002-01", method: "PUT", path: `/twins/${randomUUID()}/status`, msgId: randomUUID(), body: { status: "On", version: 9, changedBy: "primary" } }],
      Date.now(),
    );
    a.node().context.wakeOutbox();
    const dead = await eventually(
      () => a.api.call("GET", "/admin/v1/deadLetters", { token: a.t.node.adminToken }),
      (r) => r.body.deadLetters?.length > 0,
    );
    expect(dead.body.deadLetters[0]).toMatchObject({ kind: "peer", target: "002-01", lastError: expect.stringContaining("404") });
    const metrics = await (await fetch(`${a.t.url}/metrics`)).text();
    expect(metrics).toMatch(/twinning_outbox_dead_letters [1-9]/);
  });

  it("an activation that fails at the primary's operator after the peer committed is compensated: both sides agree", async () => {
    // A's policy allows one twin per primary: two racing activations both pass the first check,
    // both are committed at B, one fails at A and is undone at B.
    const p = await A().party(addr(A()));
    const [s1, s2] = [await B().party(addr(B())), await B().party(addr(B()))];
    const codes = await Promise.all(
      [s1, s2].map((s) => B().api.call("POST", `/twinning/v1/secondary/${enc(s.address)}/activationCodes`, { token: s.token, body: {} })),
    );
    const results = await Promise.all(
      codes.map((c, i) =>
        A().api.call("POST", `/twinning/v1/primary/${enc(p.address)}/twins`, {
          token: p.token,
          body: { activationCode: c.body.activationCode.code, operatorId: "002-01", name: `device-${i}` },
        }),
      ),
    );
    expect(results.map((r) => r.status).sort(), JSON.stringify(results.map((r) => r.body))).toEqual([201, 403]);
    const winner = results.find((r) => r.status === 201)!.body.twin;
    await eventually(drained, (v) => v);
    const atA = await A().node().context.store.listTwinsOfPrimary(p.address);
    const atB = await Promise.all([s1, s2].map((s) => B().node().context.store.findTwinOfSecondary(s.address)));
    expect(atA.map((t) => t.twinId)).toEqual([winner.twinId]);
    expect(atB.filter(Boolean).map((t) => t!.twinId)).toEqual([winner.twinId]);
  });
});
