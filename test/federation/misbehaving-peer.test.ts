import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import type { JWK } from "jose";
import { Agent, request } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Federation, eventually, type FederatedOperator } from "../helpers/federation-fixture.ts";
import { ScriptedPeer, type Script } from "../helpers/scripted-peer.ts";
import { importSigningKey, MessageSigner } from "../../peers/message-codec.ts";
import { enc, messageId } from "../helpers/test-node.ts";

/**
 * Node A (001-01) federated with a peer 002-01 that answers as each test scripts: real mutual
 * TLS and real signatures, with contents our own nodes never send. A checks what a peer's
 * answer names, not only that the peer signed it.
 */
const fed = new Federation();
let A: FederatedOperator;
let peer: ScriptedPeer;
let script: Script = () => ({ status: 500, body: {} });
let n = 0;
const addr = () => `tel:+1555${String(++n).padStart(7, "0")}`;

beforeAll(async () => {
  await fed.start(["001-01", "002-01"]);
  A = fed.get("001-01");
  peer = await ScriptedPeer.replacing(fed, "002-01", "001-01", (request) => script(request));
}, 60_000);
afterAll(async () => {
  await peer?.close();
  await fed.stop();
});

describe("a peer whose answers name what is not its own", () => {
  for (const which of ["another subscriber of ours", "our primary itself"] as const) {
    it(`HLF-IC-004 an activation answer naming ${which} as the peer's secondary: SVC3002, no twin here, and the peer's twin is compensated`, async () => {
      const p = await A.party(addr());
      const ours = which === "our primary itself" ? p : await A.party(addr());
      script = ({ method, path, claims }) => {
        if (method === "POST" && path === "/activations") {
          const body = claims.body as { twinId: string };
          return { status: 201, body: { twin: { twinId: body.twinId, secondaryAddress: ours.address } } };
        }
        return { status: 200, body: {} };
      };
      const res = await A.api.call("POST", `/twinning/v1/primary/${enc(p.address)}/twins`, { token: p.token, body: { activationCode: "123456", operatorId: "002-01" } });
      expect(res.status, JSON.stringify(res.body)).toBe(503);
      expect(messageId(res.body)).toBe("SVC3002");
      const list = await A.api.call("GET", `/twinning/v1/primary/${enc(p.address)}/twins`, { token: p.token });
      expect(list.body.twinList.twin).toEqual([]);
      if (ours !== p) {
        const asSecondary = await A.api.call("GET", `/twinning/v1/secondary/${enc(ours.address)}/twinning`, { token: ours.token });
        expect(asSecondary.status).toBe(404);
      }
      const activation = peer.received.findLast((r) => r.path === "/activations")!;
      const twinId = (activation.claims.body as { twinId: string }).twinId;
      await eventually(
        async () => peer.received.some((r) => r.method === "DELETE" && r.path === `/twins/${twinId}`),
        (sent) => sent,
      );
    });
  }

  for (const status of [502, 302]) {
    it(`HLF-IC-004 an activation answered ${status} (the peer may have committed): SVC3002 to the device, no twin here, and the peer's twin is compensated`, async () => {
      const p = await A.party(addr());
      script = ({ method, path, claims }) =>
        method === "POST" && path === "/activations" ? { status, body: { twin: { twinId: (claims.body as { twinId: string }).twinId, secondaryAddress: addr() } } } : { status: 200, body: {} };
      const res = await A.api.call("POST", `/twinning/v1/primary/${enc(p.address)}/twins`, { token: p.token, body: { activationCode: "123456", operatorId: "002-01" } });
      expect([res.status, messageId(res.body)]).toEqual([503, "SVC3002"]);
      expect((await A.api.call("GET", `/twinning/v1/primary/${enc(p.address)}/twins`, { token: p.token })).body.twinList.twin).toEqual([]);
      const twinId = (peer.received.findLast((r) => r.path === "/activations")!.claims.body as { twinId: string }).twinId;
      await eventually(
        async () => peer.received.some((r) => r.method === "DELETE" && r.path === `/twins/${twinId}`),
        (sent) => sent,
      );
    });
  }

  it("HLF-TE-004 a primary de-provisioned while the peer's activation answer is on its way: no twin here (401 to the revoked device), and the peer's twin is compensated", async () => {
    const p = await A.party(addr());
    let answer!: () => void;
    const answered = new Promise<void>((resolve) => (answer = resolve));
    script = async ({ method, path, claims }) => {
      if (method === "POST" && path === "/activations") {
        await answered;
        return { status: 201, body: { twin: { twinId: (claims.body as { twinId: string }).twinId, secondaryAddress: addr() } } };
      }
      return { status: 200, body: {} };
    };
    const activation = A.api.call("POST", `/twinning/v1/primary/${enc(p.address)}/twins`, { token: p.token, body: { activationCode: "123456", operatorId: "002-01" } });
    await eventually(async () => peer.received.some((r) => r.path === "/activations" && (r.claims.body as { primaryAddress: string }).primaryAddress === p.address), (sent) => sent);
    const removed = await A.api.call("DELETE", `/admin/v1/subscribers/${enc(p.address)}`, { token: A.t.node.adminToken });
    expect(removed.status).toBe(204);
    answer();
    const res = await activation;
    expect([res.status, messageId(res.body)], JSON.stringify(res.body)).toEqual([401, "SVC2003"]);
    expect(await A.t.node.context.store.listTwinsOfPrimary(p.address)).toEqual([]);
    const sent = peer.received.findLast((r) => r.path === "/activations")!;
    const twinId = (sent.claims.body as { twinId: string }).twinId;
    await eventually(async () => peer.received.some((r) => r.method === "DELETE" && r.path === `/twins/${twinId}`), (deleted) => deleted);
  });

  it("HLF-SD-009 a token exchange answer with an expires_in that is not whole seconds within a year: SVC3002, not a 500", async () => {
    const [primary, s] = [addr(), await A.party(addr())];
    const twinId = randomUUID();
    await A.t.node.context.store.insertFederatedTwin({
      twin: { twinId, primaryAddress: primary, primaryOperatorId: "002-01", secondaryAddress: s.address, secondaryOperatorId: "001-01", name: "watch", status: "On", version: 1, statusOrigin: "002-01" },
      localSide: "secondary",
      nowMs: Date.now(),
      maxTwinsPerPrimary: 10,
    });
    const exchange = () => A.api.call("POST", `/twinning/v1/secondary/${enc(s.address)}/twinning/primaryServicesToken`, { token: s.token });
    const answer = (expires_in: unknown) => () => ({ status: 200, body: { access_token: "peer-token", token_type: "Bearer", expires_in, endpoints: { messaging: "https://m.example", nms: "https://n.example" } } });
    for (const expiresIn of [1e13, 0, -5, 1.5, "3600"]) {
      script = answer(expiresIn);
      const res = await exchange();
      expect([res.status, messageId(res.body)], `expires_in ${expiresIn}`).toEqual([503, "SVC3002"]);
    }
    script = answer(3600);
    const ok = await exchange();
    expect([ok.status, ok.body.primaryServices?.accessToken]).toEqual([200, "peer-token"]);
  });

  it("HLF-IC-002 a code answer whose expiry is beyond any code's lifetime: our subscriber's copy lasts at most a day", async () => {
    const s = await A.party(addr());
    script = () => ({ status: 201, body: { code: "123456", operatorId: "002-01", expiresAt: "2099-01-01T00:00:00.000Z" } });
    const before = Date.now();
    const res = await A.api.call("POST", `/twinning/v1/secondary/${enc(s.address)}/activationCodes`, { token: s.token, body: { primaryOperatorId: "002-01" } });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    const expiresAtMs = Date.parse(res.body.activationCode.expiresAt);
    expect(expiresAtMs).toBeGreaterThan(before);
    expect(expiresAtMs).toBeLessThanOrEqual(Date.now() + 86_400_000);
  });
});

/**
 * A peer that follows DESIGN.md but none of this project's own conventions: it answers with
 * other 2xx statuses than ours, reads no X-Twinning-MsgId header, and answers a token exchange
 * with RFC 8693's fields alone.
 */
describe("a peer that follows DESIGN.md, not our conventions", () => {
  const B = () => fed.get("002-01");

  it("HLF-IC-004 an activation answered 200 (DESIGN names no status) is a success: the twin is ours, and no compensation waits for the peer", async () => {
    const p = await A.party(addr());
    const secondaryAddress = addr();
    script = ({ method, path, claims }) =>
      method === "POST" && path === "/activations" ? { status: 200, body: { twin: { twinId: (claims.body as { twinId: string }).twinId, secondaryAddress } } } : { status: 500, body: {} };
    const res = await A.api.call("POST", `/twinning/v1/primary/${enc(p.address)}/twins`, { token: p.token, body: { activationCode: "123456", operatorId: "002-01" } });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    expect(res.body.twin).toMatchObject({ secondaryAddress, secondaryOperatorId: "002-01", status: "On" });
    // The armed compensation was withdrawn with the commit: nothing is queued for the peer.
    expect(await A.t.node.context.store.countQueuedForPeer("002-01", 10)).toBe(0);
  });

  it("HLF-SD-009 HLF-IC-006 a code answered 200, and a token exchange answered with RFC 8693's fields alone: the endpoints are the ones the peer named in its activation", async () => {
    const s = await A.party(addr());
    const expiresAt = new Date(Date.now() + 600_000).toISOString();
    script = ({ method, path }) => {
      if (method === "POST" && path === "/activationCodes") return { status: 200, body: { code: "246810", operatorId: "002-01", expiresAt } };
      if (method === "POST" && path === "/token") return { status: 200, body: { access_token: "design-token", issued_token_type: "urn:ietf:params:oauth:token-type:access_token", token_type: "Bearer", expires_in: 900 } };
      return { status: 500, body: {} };
    };
    const code = await A.api.call("POST", `/twinning/v1/secondary/${enc(s.address)}/activationCodes`, { token: s.token, body: { primaryOperatorId: "002-01" } });
    expect(code.status, JSON.stringify(code.body)).toBe(201);
    expect(code.body.activationCode.code).toBe("246810");
    // The peer's primary activates our secondary, naming its service endpoints (DESIGN's POST /activations).
    const endpoints = { messaging: "https://messaging.op2.example/v1", nms: "https://nms.op2.example/v1" };
    const key = await importSigningKey(JSON.parse(readFileSync(B().signingKeyFile, "utf8")) as JWK);
    const signer = new MessageSigner("002-01", () => key, Date.now);
    const twinId = randomUUID();
    const htu = `${A.t.node.federationUrl}/federation/v1/activations`;
    const body = { twinId, secondaryAddress: s.address, primaryAddress: addr(), primaryOperatorId: "002-01", name: "watch", primaryServices: { endpoints } };
    const agent = new Agent({ connect: { ca: fed.ca!.certPem, cert: B().tls.certPem, key: B().tls.keyPem } });
    try {
      const sent = await request(htu, { method: "POST", dispatcher: agent, headers: { "content-type": "application/jose" }, body: await signer.sign({ aud: "001-01", htm: "POST", htu, msgId: twinId, body }) });
      await sent.body.text();
      expect(sent.statusCode).toBe(201);
    } finally {
      await agent.close();
    }
    const token = await A.api.call("POST", `/twinning/v1/secondary/${enc(s.address)}/twinning/primaryServicesToken`, { token: s.token });
    expect(token.status, JSON.stringify(token.body)).toBe(200);
    expect(token.body.primaryServices).toMatchObject({ accessToken: "design-token", endpoints });
  });

  it("HLF-IC-001 GET /operator answered without our msgId (a GET carries no JWS to name one): taken, and the batch extension read from it", async () => {
    script = ({ method, path }) => (method === "GET" && path === "/operator" ? { status: 200, body: { operatorId: "002-01", name: "Peer", endpoints: {}, apiVersions: ["v1"], extensions: ["batch"] } } : { status: 500, body: {} });
    const federation = A.t.node.context.federation!;
    const answer = await federation.send("002-01", { method: "GET", path: "/operator", msgId: `probe-${randomUUID()}` });
    expect([answer.status, answer.body.operatorId]).toEqual([200, "002-01"]);
    expect(await federation.supportsBatch("002-01")).toBe(true);
  });
});

describe("requests to a peer that answers at its own pace", () => {
  it("HLF-TE-006 two codes asked of the peer at once for one secondary: our live copy is the code the peer issued last, whatever order the answers come in", async () => {
    const s = await A.party(addr());
    let calls = 0;
    const expiresAt = new Date(Date.now() + 600_000).toISOString();
    script = async ({ method, path }) => {
      if (method !== "POST" || path !== "/activationCodes") return { status: 500, body: {} };
      calls++;
      // The first code is answered late: sent at once, the second's answer would overtake it.
      if (calls === 1) await new Promise((resolve) => setTimeout(resolve, 300));
      return { status: 201, body: { code: calls === 1 ? "111111" : "222222", operatorId: "002-01", expiresAt } };
    };
    const ask = () => A.api.call("POST", `/twinning/v1/secondary/${enc(s.address)}/activationCodes`, { token: s.token, body: { primaryOperatorId: "002-01" } });
    const answers = await Promise.all([ask(), ask()]);
    expect(answers.map((a) => a.status)).toEqual([201, 201]);
    const state = async (code: string) => {
      const resource = answers.find((a) => a.body.activationCode.code === code)!.body.activationCode.resourceURL as string;
      return (await A.api.call("GET", new URL(resource).pathname, { token: s.token })).body.activationCode.status;
    };
    // The peer issued 222222 last, superseding 111111 there: so here too.
    expect([await state("222222"), await state("111111")]).toEqual(["Pending", "Expired"]);
  });
});
