import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Federation, eventually, writePeerFiles, type FederatedOperator } from "../helpers/federation-fixture.ts";
import { enc, messageId, startTestNode } from "../helpers/test-node.ts";

/** The PD/SD/TE rules where primary and secondary belong to different operators (A = 001-01, B = 002-01). */
const fed = new Federation();
let A: FederatedOperator;
let B: FederatedOperator;
let n = 0;
const addr = (op: FederatedOperator) => `tel:+1${op.operatorId.replace("-", "")}${String(++n).padStart(5, "0")}`;

beforeAll(async () => {
  // B signs with EdDSA, A with ES256: both algorithms DESIGN allows meet on the wire.
  fed.algFor = (op) => (op === "002-01" ? "EdDSA" : "ES256");
  // A's codes live 240 s, B's the default 300 s: a code from A must carry A's.
  await fed.start(["001-01", "002-01"], (op) => (op === "002-01" ? { policy: { maxFailedAttemptsPerPrimary: 3, maxFailedAttemptsPerOperator: 50 } } : { policy: { codeTtlSeconds: 240 } }));
  [A, B] = [fed.get("001-01"), fed.get("002-01")];
}, 60_000);
afterAll(async () => fed.stop());

async function pair() {
  return { p: await A.party(addr(A)), s: await B.party(addr(B)) };
}
const codeAtB = (s: { address: string; token: string }, body: object = {}) =>
  B.api.call("POST", `/twinning/v1/secondary/${enc(s.address)}/activationCodes`, { token: s.token, body });
const activateAtA = (p: { address: string; token: string }, code: string, operatorId: string, name?: string) =>
  A.api.call("POST", `/twinning/v1/primary/${enc(p.address)}/twins`, { token: p.token, body: { activationCode: code, operatorId, ...(name ? { name } : {}) } });

describe("cross-operator forms of the device rules", () => {
  it("HLF-SD-001 HLF-SD-003 a secondary at B requests a code; the answer names the operator that generated it", async () => {
    const { s } = await pair();
    const own = await codeAtB(s);
    expect(own.body.activationCode.operatorId).toBe("002-01");
    const fromA = await codeAtB(s, { primaryOperatorId: "001-01" });
    expect(fromA.body.activationCode.operatorId).toBe("001-01");
    expect(fromA.body.activationCode.code).toMatch(/^\d{6}$/);
  });

  it("HLF-TE-007 names belong to the primary's operator: after a rename there, the old name is free again for a twin with another secondary at B", async () => {
    const { p, s } = await pair();
    const first = await activateAtA(p, (await codeAtB(s)).body.activationCode.code, "002-01", "watch");
    expect(first.status).toBe(201);
    const renamed = await A.api.call("PATCH", `/twinning/v1/primary/${enc(p.address)}/twins/${first.body.twin.twinId}`, { token: p.token, body: { name: "car" } });
    expect(renamed.status, JSON.stringify(renamed.body)).toBe(200);
    // B still holds the first twin as "watch" (renames are not sent to peers); that must not
    // refuse a second twin of the same primary named "watch".
    const s2 = await B.party(addr(B));
    const second = await activateAtA(p, (await codeAtB(s2)).body.activationCode.code, "002-01", "watch");
    expect(second.status, JSON.stringify(second.body)).toBe(201);
    const listed = await A.api.call("GET", `/twinning/v1/primary/${enc(p.address)}/twins`, { token: p.token });
    expect(listed.body.twinList.twin.map((t: { name: string }) => t.name).sort()).toEqual(["car", "watch"]);
  });

  it("HLF-PD-001 HLF-TE-007 the primary at A activates a secondary at B with a chosen name; the name is the same on both nodes", async () => {
    const { p, s } = await pair();
    const code = await codeAtB(s);
    const res = await activateAtA(p, code.body.activationCode.code, "002-01", "my-blue-car");
    expect(res.status).toBe(201);
    expect(res.body.twin.accessToken).toEqual(expect.any(String));
    const atB = await B.api.call("GET", `/twinning/v1/secondary/${enc(s.address)}/twinning`, { token: s.token });
    expect(atB.body.twinning.name).toBe("my-blue-car");
  });

  it("HLF-TE-005 a code obtained from A is single-use across operators and expires by A's policy", async () => {
    const { p, s } = await pair();
    const code = await codeAtB(s, { primaryOperatorId: "001-01" });
    expect((await activateAtA(p, code.body.activationCode.code, "001-01")).status).toBe(201);
    const again = await activateAtA((await pair()).p, code.body.activationCode.code, "001-01");
    expect([again.status, messageId(again.body)]).toEqual([400, "SVC3001"]);
    // A's lifetime (240 s), not B's (300 s), to the second of the answer.
    const lifetimeMs = Date.parse(code.body.activationCode.expiresAt) - Date.now();
    expect(lifetimeMs).toBeGreaterThan(230_000);
    expect(lifetimeMs).toBeLessThanOrEqual(240_000);
  });

  it("HLF-TE-009 HLF-IC-003 a secondary its home node has freed gets a code from A while A's copy of its ended twin still waits for B's deactivation; activating with it ends that copy", async () => {
    const { p, s } = await pair();
    const first = await activateAtA(p, (await codeAtB(s)).body.activationCode.code, "002-01");
    expect(first.status).toBe(201);
    const staleId = first.body.twin.twinId as string;
    // B ends the twin (as its secondary's DELETE does); its message to A has not arrived.
    await B.t.node.context.store.applyRemoteDeactivation({ twinId: staleId, fromOperatorId: "001-01", ownOperatorId: "002-01", nowMs: Date.now() });
    expect((await A.t.node.context.store.getTwin(staleId))?.active).toBe(true);
    const code = await codeAtB(s, { primaryOperatorId: "001-01" });
    expect(code.status, JSON.stringify(code.body)).toBe(201);
    const p2 = await A.party(addr(A));
    const second = await A.api.call("POST", `/twinning/v1/primary/${enc(p2.address)}/twins`, { token: p2.token, body: { activationCode: code.body.activationCode.code, operatorId: "001-01" } });
    expect(second.status, JSON.stringify(second.body)).toBe(201);
    expect((await A.t.node.context.store.getTwin(staleId))?.active).toBe(false);
    const atB = await B.api.call("GET", `/twinning/v1/secondary/${enc(s.address)}/twinning`, { token: s.token });
    expect(atB.body.twinning).toMatchObject({ twinId: second.body.twin.twinId, primaryAddress: p2.address });
  });

  it("HLF-CM-006 guessing B's codes from A is limited per primary by B, and the device at A sees 429 POL3004", async () => {
    const { p, s } = await pair();
    const real = (await codeAtB(s)).body.activationCode.code as string;
    const wrong = real === "000000" ? "111111" : "000000";
    for (let i = 0; i < 3; i++) expect(messageId((await activateAtA(p, wrong, "002-01")).body)).toBe("SVC3001");
    const limited = await activateAtA(p, real, "002-01");
    expect([limited.status, messageId(limited.body)]).toEqual([429, "POL3004"]);
    expect(Number(limited.headers.get("retry-after"))).toBeGreaterThan(0);
  });

  it("HLF-PD-002 HLF-PD-005 HLF-TE-002 HLF-TE-003 toggle, query and deactivate from the primary at A, each seen at B", async () => {
    const { p, s } = await pair();
    const code = await codeAtB(s);
    const { body } = await activateAtA(p, code.body.activationCode.code, "002-01");
    const path = `/twinning/v1/primary/acr%3AAuthorization/twins/${body.twin.twinId}`;
    expect((await A.api.call("PUT", `${path}/status`, { token: body.twin.accessToken, body: { status: "Off" } })).body.twin.status).toBe("Off");
    const atB = await eventually(
      () => B.api.call("GET", `/twinning/v1/secondary/${enc(s.address)}/twinning`, { token: s.token }),
      (r) => r.body.twinning?.status === "Off",
    );
    expect(atB.status).toBe(200); // HLF-TE-003: Off keeps the relationship
    expect((await A.api.call("GET", path, { token: body.twin.accessToken })).body.twin.status).toBe("Off");
    expect((await A.api.call("DELETE", path, { token: body.twin.accessToken })).status).toBe(204);
    await eventually(() => B.api.call("GET", `/twinning/v1/secondary/${enc(s.address)}/twinning`, { token: s.token }), (r) => r.status === 404);
  });

  it("HLF-SD-004 HLF-SD-005 HLF-SD-006 the secondary at B toggles and queries with the twin-scoped token from its code", async () => {
    const { p, s } = await pair();
    const code = await codeAtB(s, { primaryOperatorId: "001-01" });
    const { body } = await activateAtA(p, code.body.activationCode.code, "001-01");
    const used = await B.api.call("GET", `${new URL(code.body.activationCode.resourceURL).pathname}?wait=5`, { token: s.token });
    const twinToken = used.body.activationCode.accessToken as string;
    const path = `/twinning/v1/secondary/${enc(s.address)}/twinning`;
    expect((await B.api.call("PUT", `${path}/status`, { token: twinToken, body: { status: "Off" } })).body.twinning.status).toBe("Off");
    const q = await B.api.call("GET", path, { token: twinToken });
    expect(q.body.twinning).toMatchObject({ primaryAddress: p.address, primaryOperatorId: "001-01", status: "Off" });
    await eventually(() => A.node().context.store.getTwin(body.twin.twinId), (t) => t?.status === "Off");
  });

  it("HLF-TE-004 a number provisioned at B that A's twin names as A's subscriber: the twin ends at both nodes, and B's new subscriber inherits nothing", async () => {
    const { p, s } = await pair();
    const made = await activateAtA(p, (await codeAtB(s)).body.activationCode.code, "002-01");
    expect(made.status).toBe(201);
    const secondaryView = () => B.api.call("GET", `/twinning/v1/secondary/${enc(s.address)}/twinning`, { token: s.token });
    expect((await secondaryView()).status).toBe(200);
    // The number is now B's (it moved, or A's claim was wrong).
    const moved = await B.party(p.address);
    expect((await B.api.call("GET", `/twinning/v1/primary/${enc(p.address)}/twins`, { token: moved.token })).body.twinList.twin).toEqual([]);
    expect((await secondaryView()).status).toBe(404);
    // A was sent the deactivation.
    const atA = await eventually(
      () => A.api.call("GET", `/twinning/v1/primary/${enc(p.address)}/twins`, { token: p.token }),
      (r) => r.status === 200 && r.body.twinList.twin.length === 0,
    );
    expect(atA.body.twinList.twin).toEqual([]);
    // B's new subscriber can be a secondary: no twin of A's holds it as a primary here.
    expect((await B.api.call("POST", `/twinning/v1/secondary/${enc(p.address)}/activationCodes`, { token: moved.token, body: {} })).status).toBe(201);
  });

  it("HLF-TE-004 de-provisioning the primary at A ends its twin with B's secondary at both nodes", async () => {
    const { p, s } = await pair();
    expect((await activateAtA(p, (await codeAtB(s)).body.activationCode.code, "002-01")).status).toBe(201);
    const removed = await fetch(`${A.api.baseUrl}/admin/v1/subscribers/${enc(p.address)}`, { method: "DELETE", headers: { authorization: `Bearer ${A.node().adminToken}` } });
    expect(removed.status).toBe(204);
    const atB = await eventually(
      () => B.api.call("GET", `/twinning/v1/secondary/${enc(s.address)}/twinning`, { token: s.token }),
      (r) => r.status === 404,
    );
    expect(messageId(atB.body)).toBe("SVC0002");
  });

  it("the caller verifies signed answers: an answer signed with a key not registered for the peer is refused (SVC3002)", async () => {
    const { s } = await pair();
    // A's registry gets a wrong key for B; B still accepts A's request, but A must reject B's answer.
    writePeerFiles([
      { ...A, federationUrl: A.t.node.federationUrl! },
      { ...B, federationUrl: B.t.node.federationUrl!, publicJwks: A.publicJwks },
    ]);
    await A.t.node.reloadFederation();
    try {
      const p = await A.party(addr(A));
      const viaB = await A.api.call("POST", `/twinning/v1/secondary/${enc(p.address)}/activationCodes`, { token: p.token, body: { primaryOperatorId: "002-01" } });
      expect([viaB.status, messageId(viaB.body)]).toEqual([503, "SVC3002"]);
    } finally {
      await fed.connect();
    }
    expect((await codeAtB(s, { primaryOperatorId: "001-01" })).status).toBe(201);
  });

  it("the peer list reloads without a restart, and a bad list keeps the previous one", async () => {
    const reload = () => A.api.call("POST", "/admin/v1/peers/reload", { token: A.t.node.adminToken });
    expect((await reload()).body).toEqual({ peers: 1, keys: 1 });
    const { writeFileSync, readFileSync } = await import("node:fs");
    const good = readFileSync(A.peersFile, "utf8");
    writeFileSync(A.peersFile, JSON.stringify({ peers: [{ operatorId: "bad" }] }));
    const bad = await reload();
    expect([bad.status, messageId(bad.body)]).toEqual([400, "SVC0002"]);
    // The operator, who sent the admin token, is told why.
    expect(bad.body.requestError.serviceException.variables[0]).toBe("peers");
    expect(bad.body.requestError.serviceException.text).toMatch(/^Invalid input value for message part peers: .*operatorId/);
    const { s } = await pair();
    expect((await codeAtB(s, { primaryOperatorId: "001-01" })).status).toBe(201);
    writeFileSync(A.peersFile, good);
  });

  it("a reload with a good peer list but a bad signing key file changes neither", async () => {
    const reload = () => A.api.call("POST", "/admin/v1/peers/reload", { token: A.t.node.adminToken });
    const { writeFileSync, readFileSync } = await import("node:fs");
    const [goodPeers, goodKey] = [readFileSync(A.peersFile, "utf8"), readFileSync(A.signingKeyFile, "utf8")];
    try {
      writeFileSync(A.peersFile, JSON.stringify({ peers: [] }));
      // Not JSON; and a public key alone (it would import, then fail every signature).
      const { d: _d, ...publicOnly } = JSON.parse(goodKey) as Record<string, unknown>;
      for (const bad of ["{ not a key", JSON.stringify(publicOnly)]) {
        writeFileSync(A.signingKeyFile, bad);
        const answer = await reload();
        expect([answer.status, messageId(answer.body)]).toEqual([400, "SVC0002"]);
        // B is still a peer of A, and A still signs: a code from A for B's secondary still works.
        const { s } = await pair();
        expect((await codeAtB(s, { primaryOperatorId: "001-01" })).status).toBe(201);
      }
    } finally {
      writeFileSync(A.peersFile, goodPeers);
      writeFileSync(A.signingKeyFile, goodKey);
    }
    expect((await reload()).body).toEqual({ peers: 1, keys: 1 });
  });

  it("a peer's keys from a JWKS URL on its federation origin are fetched over the federation's mutual TLS (no system trust, our client certificate)", async () => {
    const { writeFileSync, readFileSync } = await import("node:fs");
    const good = readFileSync(A.peersFile, "utf8");
    const federationUrl = B.t.node.federationUrl!;
    try {
      writeFileSync(A.peersFile, JSON.stringify({ peers: [{ operatorId: B.operatorId, federationUrl, jwksUrl: `${federationUrl}/federation/v1/jwks.json` }] }));
      await A.t.node.reloadFederation();
      // A asks B for a code and verifies B's signed answer with the keys it fetched from B.
      const p = await A.party(addr(A));
      const res = await A.api.call("POST", `/twinning/v1/secondary/${enc(p.address)}/activationCodes`, { token: p.token, body: { primaryOperatorId: "002-01" } });
      expect(res.status, JSON.stringify(res.body)).toBe(201);
      // An http federation URL is refused: the federation listener speaks TLS only.
      writeFileSync(A.peersFile, JSON.stringify({ peers: [{ operatorId: B.operatorId, federationUrl: federationUrl.replace("https:", "http:"), jwks: B.publicJwks }] }));
      await expect(A.t.node.reloadFederation()).rejects.toThrow(/federationUrl/);
    } finally {
      writeFileSync(A.peersFile, good);
      await A.t.node.reloadFederation();
    }
  });

  it("a node whose federation certificate names another operator, or does not match its key, does not start", async () => {
    const federation = (certFile: string, keyFile: string) => ({
      operatorId: "001-01",
      federation: { host: "127.0.0.1", port: 0, caFile: fed.caFile, certFile, keyFile, signingKeyFiles: [A.signingKeyFile], peersFile: A.peersFile },
    });
    await expect(startTestNode(federation(B.certFile, B.keyFile))).rejects.toThrow(/names operator 002-01, not 001-01/);
    await expect(startTestNode(federation(A.certFile, B.keyFile))).rejects.toThrow(/does not hold the private key/);
    const good = await startTestNode(federation(A.certFile, A.keyFile));
    await good.stop();
  });
});
