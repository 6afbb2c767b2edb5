import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CallbackReceiver } from "../helpers/callback-receiver.ts";
import { Federation, eventually, type FederatedOperator } from "../helpers/federation-fixture.ts";
import { SseClient } from "../helpers/sse-client.ts";
import { enc, messageId } from "../helpers/test-node.ts";

const fed = new Federation();
let A: FederatedOperator; // 001-01
let B: FederatedOperator; // 002-01
let C: FederatedOperator; // 003-01
let n = 0;
const addr = (op: FederatedOperator) => `tel:+1${op.operatorId.replace("-", "")}${String(++n).padStart(5, "0")}`;

beforeAll(async () => {
  await fed.start(["001-01", "002-01", "003-01"]);
  [A, B, C] = [fed.get("001-01"), fed.get("002-01"), fed.get("003-01")];
}, 60_000);
afterAll(async () => fed.stop());

type Party = { address: string; token: string };

/** The secondary at `sOp` asks for a code naming the primary's operator; the primary at `pOp` redeems it. */
async function twinAcross(pOp: FederatedOperator, p: Party, sOp: FederatedOperator, s: Party, via: "primary-operator" | "secondary-operator", name?: string) {
  const code = await sOp.api.call("POST", `/twinning/v1/secondary/${enc(s.address)}/activationCodes`, {
    token: s.token,
    body: via === "primary-operator" ? { primaryOperatorId: pOp.operatorId } : {},
  });
  expect(code.status, JSON.stringify(code.body)).toBe(201);
  const activation = await pOp.api.call("POST", `/twinning/v1/primary/${enc(p.address)}/twins`, {
    token: p.token,
    body: { activationCode: code.body.activationCode.code, operatorId: code.body.activationCode.operatorId, ...(name ? { name } : {}) },
  });
  expect(activation.status, JSON.stringify(activation.body)).toBe(201);
  return { code: code.body.activationCode, twin: activation.body.twin };
}

describe("federation between operators over mutual TLS", () => {
  it("HLF-IC-001 a primary of one operator twins with a secondary of another; both nodes hold the same twin", async () => {
    const p = await A.party(addr(A));
    const s = await B.party(addr(B));
    const { twin } = await twinAcross(A, p, B, s, "secondary-operator", "car");
    expect(twin).toMatchObject({ primaryAddress: p.address, secondaryAddress: s.address, secondaryOperatorId: "002-01", status: "On", name: "car" });
    const atB = await B.api.call("GET", `/twinning/v1/secondary/${enc(s.address)}/twinning`, { token: s.token });
    expect(atB.body.twinning).toEqual({ twinId: twin.twinId, primaryAddress: p.address, primaryOperatorId: "001-01", status: "On", name: "car" });
  });

  // The secondary's long poll must be woken by the activation: its 30 s wait would outlast the 10 s timeout.
  it("HLF-IC-002 HLF-IC-003 HLF-SD-002 HLF-TE-006 a code is obtained from the primary's operator when the secondary names it", { timeout: 10_000 }, async () => {
    const p = await A.party(addr(A));
    const s = await B.party(addr(B));
    const res = await B.api.call("POST", `/twinning/v1/secondary/${enc(s.address)}/activationCodes`, { token: s.token, body: { primaryOperatorId: "001-01" } });
    expect(res.status).toBe(201);
    // HLF-SD-003: the code and the identity of the operator that generated it.
    expect(res.body.activationCode).toMatchObject({ operatorId: "001-01", status: "Pending" });
    expect(res.body.activationCode.code).toMatch(/^\d{6}$/);
    const pending = B.api.call("GET", `${new URL(res.body.activationCode.resourceURL).pathname}?wait=30`, { token: s.token });
    const activation = await A.api.call("POST", `/twinning/v1/primary/${enc(p.address)}/twins`, { token: p.token, body: { activationCode: res.body.activationCode.code, operatorId: "001-01" } });
    expect(activation.status).toBe(201);
    expect(activation.body.twin.secondaryOperatorId).toBe("002-01");
    const used = await pending;
    expect(used.body.activationCode.status).toBe("Used");
    expect(used.body.activationCode.twin.twinId).toBe(activation.body.twin.twinId);
    // The secondary's twin-scoped token works at its home node.
    const q = await B.api.call("GET", `/twinning/v1/secondary/${enc(s.address)}/twinning`, { token: used.body.activationCode.accessToken });
    expect(q.body.twinning.primaryOperatorId).toBe("001-01");
  });

  it("HLF-IC-003 HLF-SD-003 the primary's operator answers a peer's code request with the code and its own identity, signed", async () => {
    const s = await B.party(addr(B));
    const answer = await B.node().context.federation!.send("001-01", {
      method: "POST",
      path: "/activationCodes",
      msgId: `ic3-${n}`,
      body: { secondaryAddress: s.address, secondaryOperatorId: "002-01" },
    });
    expect(answer.status).toBe(201);
    expect(answer.body.code).toMatch(/^\d{6}$/);
    expect(answer.body.operatorId).toBe("001-01");
    expect(Date.parse(answer.body.expiresAt)).toBeGreaterThan(Date.now());
  });

  it("HLF-IC-004 a code issued by the secondary's operator is redeemed across; the primary's address is exposed to that operator", async () => {
    const p = await A.party(addr(A));
    const s = await B.party(addr(B));
    const { code, twin } = await twinAcross(A, p, B, s, "secondary-operator");
    expect(code.operatorId).toBe("002-01");
    expect(twin.name).toBe("twin-1");
    const atB = await B.api.call("GET", `/twinning/v1/secondary/${enc(s.address)}/twinning`, { token: s.token });
    expect(atB.body.twinning.primaryAddress).toBe(p.address);
    const again = await A.api.call("POST", `/twinning/v1/primary/${enc(p.address)}/twins`, { token: p.token, body: { activationCode: code.code, operatorId: "002-01" } });
    expect([again.status, messageId(again.body)]).toEqual([400, "SVC3001"]);
  });

  it("HLF-IC-005 HLF-IC-007 HLF-PD-007 a toggle by the secondary at B reaches A and A's subscribed primary", async () => {
    const p = await A.party(addr(A));
    const s = await B.party(addr(B));
    const { twin } = await twinAcross(A, p, B, s, "primary-operator");
    const receiver = await new CallbackReceiver().start();
    try {
      await A.api.call("POST", `/twinning/v1/primary/${enc(p.address)}/subscriptions`, { token: p.token, body: { callbackReference: { notifyURL: receiver.url, callbackData: "phone" } } });
      const off = await B.api.call("PUT", `/twinning/v1/secondary/${enc(s.address)}/twinning/status`, { token: s.token, body: { status: "Off" } });
      expect(off.body.twinning.status).toBe("Off");
      const [n1] = await receiver.waitFor(1);
      expect(n1.twinningStatusNotification).toMatchObject({ twinId: twin.twinId, status: "Off", changedBy: "secondary", callbackData: "phone" });
      const atA = await A.api.call("GET", `/twinning/v1/primary/${enc(p.address)}/twins/${twin.twinId}`, { token: p.token });
      expect(atA.body.twin.status).toBe("Off");
    } finally {
      await receiver.stop();
    }
  });

  it("HLF-IC-005 HLF-SD-008 a toggle by the primary at A reaches the secondary's SSE stream at B", async () => {
    const p = await A.party(addr(A));
    const s = await B.party(addr(B));
    const { twin } = await twinAcross(A, p, B, s, "secondary-operator");
    const stream = await SseClient.open(`${B.t.url}/twinning/v1/secondary/${enc(s.address)}/notifications`, s.token);
    try {
      await A.api.call("PUT", `/twinning/v1/primary/${enc(p.address)}/twins/${twin.twinId}/status`, { token: p.token, body: { status: "Off" } });
      const [e] = await stream.waitFor(1);
      expect(e!.data.twinningStatusNotification).toMatchObject({ twinId: twin.twinId, status: "Off", changedBy: "primary" });
      // B counted the status message it answered at once (written before its events), as 200.
      const metrics = await (await fetch(`${B.t.url}/metrics`)).text();
      expect(metrics).toMatch(/twinning_http_requests_total\{method="(PUT|POST)",route="\/federation\/v1\/(twins\/:twinId\/status|batch)",status="200"\} [1-9]/);
      // A counted its calls to B by peer, route template and status: the activation, and the status message.
      // (A counts the status message once B's answer is in, which B writes before the event: eventually.)
      const statusCounted = /twinning_peer_requests_total\{peer="002-01",route="\/(twins\/:twinId\/status|batch)",status="200"\} [1-9]/;
      const sent = await eventually(async () => (await fetch(`${A.t.url}/metrics`)).text(), (text) => statusCounted.test(text), 5_000);
      expect(sent).toMatch(statusCounted);
      expect(sent).toMatch(/twinning_peer_requests_total\{peer="002-01",route="\/activations",status="201"\} [1-9]/);
      expect(sent).toMatch(/twinning_peer_request_duration_seconds_count\{peer="002-01",route="\/activations"\} [1-9]/);
      expect(sent).not.toMatch(/twinning_peer_requests_total\{[^}]*route="\/twins\/[0-9a-f]/);
    } finally {
      await stream.close();
    }
  });

  it("HLF-PD-004 HLF-TE-004 deactivation by the primary at A ends the twin at B and kills the secondary's twin token", async () => {
    const p = await A.party(addr(A));
    const s = await B.party(addr(B));
    const code = await B.api.call("POST", `/twinning/v1/secondary/${enc(s.address)}/activationCodes`, { token: s.token, body: {} });
    const act = await A.api.call("POST", `/twinning/v1/primary/${enc(p.address)}/twins`, { token: p.token, body: { activationCode: code.body.activationCode.code, operatorId: "002-01" } });
    const used = await B.api.call("GET", new URL(code.body.activationCode.resourceURL).pathname, { token: s.token });
    const secondaryTwinToken = used.body.activationCode.accessToken as string;
    expect((await A.api.call("DELETE", `/twinning/v1/primary/${enc(p.address)}/twins/${act.body.twin.twinId}`, { token: p.token })).status).toBe(204);
    const gone = await eventually(
      () => B.api.call("GET", `/twinning/v1/secondary/${enc(s.address)}/twinning`, { token: s.token }),
      (r) => r.status === 404,
    );
    expect(messageId(gone.body)).toBe("SVC0002");
    const dead = await B.api.call("GET", `/twinning/v1/secondary/${enc(s.address)}/twinning`, { token: secondaryTwinToken });
    expect([dead.status, messageId(dead.body)]).toEqual([401, "SVC2003"]);
  });

  it("HLF-SD-007 deactivation by the secondary at B removes it from the primary's list at A", async () => {
    const p = await A.party(addr(A));
    const s = await B.party(addr(B));
    await twinAcross(A, p, B, s, "primary-operator");
    expect((await B.api.call("DELETE", `/twinning/v1/secondary/${enc(s.address)}/twinning`, { token: s.token })).status).toBe(204);
    const list = await eventually(
      () => A.api.call("GET", `/twinning/v1/primary/${enc(p.address)}/twins`, { token: p.token }),
      (r) => r.body.twinList.twin.length === 0,
    );
    expect(list.status).toBe(200);
  });

  it("HLF-IC-006 HLF-SD-009 the secondary at B gets a primary-services token minted by A, with A's endpoints, introspectable at A, dead after deactivation", async () => {
    const p = await A.party(addr(A));
    const s = await B.party(addr(B));
    const { twin } = await twinAcross(A, p, B, s, "secondary-operator");
    const res = await B.api.call("POST", `/twinning/v1/secondary/${enc(s.address)}/twinning/primaryServicesToken`, { token: s.token });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    const ps = res.body.primaryServices;
    expect(ps.endpoints).toEqual({ messaging: `${A.t.url}/messaging/v1`, nms: `${A.t.url}/nms/v1` });
    const claims = JSON.parse(Buffer.from((ps.accessToken as string).split(".")[1]!, "base64url").toString());
    expect(claims).toMatchObject({ iss: "urn:twinning:operator:001-01", sub: p.address, act: { sub: s.address }, scope: "primary-services", twin_id: twin.twinId });
    const introspect = async () =>
      (await (
        await fetch(`${A.t.url}/oauth/introspect`, {
          method: "POST",
          headers: { authorization: `Bearer ${A.t.node.adminToken}`, "content-type": "application/x-www-form-urlencoded" },
          body: `token=${encodeURIComponent(ps.accessToken)}`,
        })
      ).json()) as any;
    expect(await introspect()).toMatchObject({ active: true, sub: p.address, act: { sub: s.address } });
    await B.api.call("DELETE", `/twinning/v1/secondary/${enc(s.address)}/twinning`, { token: s.token });
    await eventually(introspect, (r) => r.active === false);
    const refused = await B.api.call("POST", `/twinning/v1/secondary/${enc(s.address)}/twinning/primaryServicesToken`, { token: s.token });
    expect(refused.status).toBe(404);
  });

  it("HLF-PD-006 HLF-PD-003 one primary with secondaries at three operators, listed with their operators", async () => {
    const p = await A.party(addr(A));
    const [sa, sb, sc] = [await A.party(addr(A)), await B.party(addr(B)), await C.party(addr(C))];
    await twinAcross(A, p, A, sa, "secondary-operator", "watch");
    await twinAcross(A, p, B, sb, "primary-operator", "car");
    await twinAcross(A, p, C, sc, "secondary-operator", "tablet");
    const list = await A.api.call("GET", `/twinning/v1/primary/${enc(p.address)}/twins`, { token: p.token });
    expect(list.body.twinList.twin.map((t: any) => [t.name, t.secondaryOperatorId])).toEqual([
      ["watch", "001-01"],
      ["car", "002-01"],
      ["tablet", "003-01"],
    ]);
    const byAddress = await A.api.call("GET", `/twinning/v1/primary/${enc(p.address)}/twins/${enc(sc.address)}`, { token: p.token });
    expect(byAddress.body.twin.name).toBe("tablet");
  });

  it("HLF-TE-008 HLF-TE-009 role rules hold across operators", async () => {
    const p = await A.party(addr(A));
    const s = await B.party(addr(B));
    await twinAcross(A, p, B, s, "secondary-operator");
    // The secondary at B cannot get a second relationship through C.
    const second = await B.api.call("POST", `/twinning/v1/secondary/${enc(s.address)}/activationCodes`, { token: s.token, body: { primaryOperatorId: "003-01" } });
    expect([second.status, messageId(second.body)]).toEqual([409, "POL3001"]);
    // A primary at A cannot become a secondary: C's primary redeems a code of A's... the code request is refused at A.
    const asSecondary = await A.api.call("POST", `/twinning/v1/secondary/${enc(p.address)}/activationCodes`, { token: p.token, body: { primaryOperatorId: "003-01" } });
    expect([asSecondary.status, messageId(asSecondary.body)]).toEqual([403, "POL1037"]);
    // A secondary (at B) cannot become a primary of a secondary at C.
    const sc = await C.party(addr(C));
    const code = await C.api.call("POST", `/twinning/v1/secondary/${enc(sc.address)}/activationCodes`, { token: sc.token, body: {} });
    const asPrimary = await B.api.call("POST", `/twinning/v1/primary/${enc(s.address)}/twins`, { token: s.token, body: { activationCode: code.body.activationCode.code, operatorId: "003-01" } });
    expect([asPrimary.status, messageId(asPrimary.body)]).toEqual([403, "POL1037"]);
  });

  it("HLF-IC-005 concurrent opposite toggles converge to the same status on both nodes", async () => {
    const p = await A.party(addr(A));
    const s = await B.party(addr(B));
    const { twin } = await twinAcross(A, p, B, s, "primary-operator");
    for (let round = 0; round < 5; round++) {
      const answers = await Promise.all([
        A.api.call("PUT", `/twinning/v1/primary/${enc(p.address)}/twins/${twin.twinId}/status`, { token: p.token, body: { status: round % 2 ? "On" : "Off" } }),
        B.api.call("PUT", `/twinning/v1/secondary/${enc(s.address)}/twinning/status`, { token: s.token, body: { status: round % 2 ? "Off" : "On" } }),
      ]);
      // Each side takes its own toggle (the register then settles which one wins everywhere).
      expect(answers.map((r) => r.status), JSON.stringify(answers.map((r) => r.body))).toEqual([200, 200]);
    }
    const both = await eventually(
      async () => {
        const atA = await A.node().context.store.getTwin(twin.twinId);
        const atB = await B.node().context.store.getTwin(twin.twinId);
        const pending = (await A.node().context.store.outboxStats()).pending + (await B.node().context.store.outboxStats()).pending;
        return { a: [atA?.status, atA?.version, atA?.statusOrigin], b: [atB?.status, atB?.version, atB?.statusOrigin], pending };
      },
      (v) => v.pending === 0 && JSON.stringify(v.a) === JSON.stringify(v.b),
    );
    expect(both.a).toEqual(both.b);
    // The changes took effect and were agreed on: the version moved on from the activation's 1
    // (A's first toggle changes its status whatever B does).
    expect(both.a[1]).toBeGreaterThan(1);
  });

  it("HLF-IC-001 GET /operator answers who the operator is, signed", async () => {
    const answer = await A.node().context.federation!.send("002-01", { method: "GET", path: "/operator", msgId: "op-1" });
    expect(answer.status).toBe(200);
    expect(answer.body).toMatchObject({ operatorId: "002-01", apiVersions: ["v1"] });
    expect(answer.body.endpoints.federation).toBe(`${B.t.node.federationUrl}/federation/v1`);
  });

  it("HLF-IC-004 an activation naming a twin that two other operators share is refused to a third that knows its id: it learns nothing of the twin", async () => {
    const p = await A.party(addr(A));
    const s = await B.party(addr(B));
    const { twin } = await twinAcross(A, p, B, s, "secondary-operator");
    const answer = await C.node().context.federation!.send("002-01", {
      method: "POST",
      path: "/activations",
      msgId: randomUUID(),
      body: { twinId: twin.twinId, secondaryAddress: s.address, primaryAddress: p.address, primaryOperatorId: "003-01", name: "x" },
    });
    expect([answer.status, messageId(answer.body)]).toEqual([403, "POL1038"]);
    expect(JSON.stringify(answer.body)).not.toContain(s.address);
    expect((await B.node().context.store.getTwin(twin.twinId))?.primaryOperatorId).toBe("001-01");
  });
});
