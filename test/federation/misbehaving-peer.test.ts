import { randomUUID } from "node:crypto";
import { writeFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Federation, eventually, type FederatedOperator } from "../helpers/federation-fixture.ts";
import { ScriptedPeer, type Script } from "../helpers/scripted-peer.ts";
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
  const B = fed.get("002-01");
  await fed.stopNode("002-01");
  peer = await ScriptedPeer.start(B, fed.ca!.certPem, (request) => script(request));
  writeFileSync(A.peersFile, JSON.stringify({ peers: [{ operatorId: B.operatorId, federationUrl: peer.url, jwks: B.publicJwks }] }));
  await A.t.node.reloadFederation();
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
