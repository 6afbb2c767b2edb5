import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { importJWK, SignJWT, type JWK } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isFinalRefusal } from "../../node/federation/peer-delivery.ts";
import { Federation, type FederatedOperator } from "../helpers/federation-fixture.ts";
import { enc, messageId } from "../helpers/test-node.ts";

const fed = new Federation();
let A: FederatedOperator;
let B: FederatedOperator;
let n = 0;
const addr = (op: FederatedOperator) => `tel:+1${op.operatorId.replace("-", "")}7${String(++n).padStart(4, "0")}`;

beforeAll(async () => {
  await fed.start(["001-01", "002-01"]);
  [A, B] = [fed.get("001-01"), fed.get("002-01")];
}, 60_000);
afterAll(async () => fed.stop());

const codeAtB = (s: { address: string; token: string }) => B.api.call("POST", `/twinning/v1/secondary/${enc(s.address)}/activationCodes`, { token: s.token, body: {} });

describe("federation hardening", () => {
  it("a compensation that overtakes its activation cancels it: the late activation is refused and nothing is created", async () => {
    const [p, s] = [await A.party(addr(A)), await B.party(addr(B))];
    const code = await codeAtB(s);
    const federation = A.node().context.federation!;
    const twinId = randomUUID();
    const del = await federation.send("002-01", { method: "DELETE", path: `/twins/${twinId}`, msgId: randomUUID(), body: { changedBy: "primary" } });
    expect(del.status).toBe(200);
    const late = await federation.send("002-01", {
      method: "POST",
      path: "/activations",
      msgId: randomUUID(),
      body: { twinId, activationCode: code.body.activationCode.code, primaryAddress: p.address, primaryOperatorId: "001-01", name: "late" },
    });
    expect([late.status, messageId(late.body)]).toEqual([403, "POL1038"]);
    expect(await B.node().context.store.findTwinOfSecondary(s.address)).toBeUndefined();
  });

  it("HLF-TE-007 a name already used is refused before the peer commits: the secondary's code stays usable", async () => {
    const [p, s1, s2] = [await A.party(addr(A)), await B.party(addr(B)), await B.party(addr(B))];
    const first = await codeAtB(s1);
    expect((await A.api.call("POST", `/twinning/v1/primary/${enc(p.address)}/twins`, { token: p.token, body: { activationCode: first.body.activationCode.code, operatorId: "002-01", name: "watch" } })).status).toBe(201);
    const second = await codeAtB(s2);
    const clash = await A.api.call("POST", `/twinning/v1/primary/${enc(p.address)}/twins`, { token: p.token, body: { activationCode: second.body.activationCode.code, operatorId: "002-01", name: "watch" } });
    expect([clash.status, messageId(clash.body)]).toEqual([400, "SVC0002"]);
    const state = await B.api.call("GET", new URL(second.body.activationCode.resourceURL).pathname, { token: s2.token });
    expect(state.body.activationCode.status).toBe("Pending");
  });

  it("a clientCorrelator replayed after its cross-operator twin was deactivated is refused (POL1038), with no new twin at the peer", async () => {
    const [p, s] = [await A.party(addr(A)), await B.party(addr(B))];
    const code = await codeAtB(s);
    const body = { activationCode: code.body.activationCode.code, operatorId: "002-01", clientCorrelator: "c-1" };
    const first = await A.api.call("POST", `/twinning/v1/primary/${enc(p.address)}/twins`, { token: p.token, body });
    expect(first.status).toBe(201);
    await A.api.call("DELETE", `/twinning/v1/primary/${enc(p.address)}/twins/${first.body.twin.twinId}`, { token: p.token });
    const replay = await A.api.call("POST", `/twinning/v1/primary/${enc(p.address)}/twins`, { token: p.token, body });
    expect([replay.status, messageId(replay.body)]).toEqual([403, "POL1038"]);
    expect((await B.node().context.store.listActiveTwins(1000)).filter((t) => t.secondaryAddress === s.address)).toEqual([]);
  });

  it("a peer cannot claim one of our subscribers as its own (codes, activations)", async () => {
    const ours = await A.party(addr(A));
    const federation = B.node().context.federation!;
    const code = await federation.send("001-01", { method: "POST", path: "/activationCodes", msgId: randomUUID(), body: { secondaryAddress: ours.address, secondaryOperatorId: "002-01" } });
    expect([code.status, messageId(code.body)]).toEqual([403, "POL2003"]);
    const s = await B.party(addr(B));
    const twinId = randomUUID();
    const act = await federation.send("001-01", {
      method: "POST",
      path: "/activations",
      msgId: randomUUID(),
      body: { twinId, secondaryAddress: s.address, primaryAddress: ours.address, primaryOperatorId: "002-01", name: "x" },
    });
    expect(act.status).toBe(403);
    // Nothing of either was kept: no code for our subscriber, no twin naming it.
    const store = A.node().context.store;
    expect(await store.getTwin(twinId)).toBeUndefined();
    expect(await store.listTwinsOfPrimary(ours.address)).toEqual([]);
    expect(await store.findTwinOfSecondary(ours.address)).toBeUndefined();
  });

  it("OAU-001 introspection reports a de-provisioned subscriber's token inactive", async () => {
    const p = await A.party(addr(A));
    const introspect = async () =>
      (await (
        await fetch(`${A.t.url}/oauth/introspect`, {
          method: "POST",
          headers: { authorization: `Bearer ${A.t.node.adminToken}`, "content-type": "application/x-www-form-urlencoded" },
          body: `token=${encodeURIComponent(p.token)}`,
        })
      ).json()) as any;
    expect((await introspect()).active).toBe(true);
    await A.api.call("DELETE", `/admin/v1/subscribers/${enc(p.address)}`, { token: A.t.node.adminToken });
    expect(await introspect()).toEqual({ active: false });
  });

  it("OAU-002 a twin-scoped token cannot read or change the subscriber's notifications", async () => {
    const [p, s] = [await A.party(addr(A)), await A.party(addr(A))];
    const { primaryTwinToken } = await A.api.twin(p, s);
    const sub = await A.api.call("GET", `/twinning/v1/primary/${enc(p.address)}/subscriptions`, { token: primaryTwinToken });
    expect([sub.status, messageId(sub.body)]).toEqual([403, "POL2003"]);
  });

  it("only a refusal of the message itself ends a peer delivery; 401, 403, 409, 429 and 5xx are retried", () => {
    expect([400, 404].map(isFinalRefusal)).toEqual([true, true]);
    expect([401, 403, 409, 429, 500, 503].map(isFinalRefusal)).toEqual([false, false, false, false, false, false]);
  });

  /** Twins A's primary with B's secondary; returns both parties and the twin's id. */
  async function twinned() {
    const [p, s] = [await A.party(addr(A)), await B.party(addr(B))];
    const code = await codeAtB(s);
    const activation = await A.api.call("POST", `/twinning/v1/primary/${enc(p.address)}/twins`, { token: p.token, body: { activationCode: code.body.activationCode.code, operatorId: "002-01" } });
    expect(activation.status, JSON.stringify(activation.body)).toBe(201);
    return { p, s, twinId: activation.body.twin.twinId as string };
  }
  const notificationsOf = (address: string) => A.node().context.store.notificationsAfter(address, "primary", 0, 100);

  it("HLF-PD-007 HLF-IC-005 a change is the side's that the peer serves, whatever the message's changedBy says: our primary hears of its secondary's deactivation sent without one, and of a toggle that claims to be its own", async () => {
    const federation = B.node().context.federation!;
    const first = await twinned();
    const before = (await notificationsOf(first.p.address)).length;
    // DESIGN's DELETE carries no body fields: B serves the secondary, so the secondary ended it.
    expect((await federation.send("001-01", { method: "DELETE", path: `/twins/${first.twinId}`, msgId: randomUUID(), body: {} })).status).toBe(200);
    expect((await A.node().context.store.getTwin(first.twinId))?.active).toBe(false);
    expect((await notificationsOf(first.p.address)).slice(before).map((x) => [x.type, x.content.changedBy])).toEqual([["twinningDeactivatedNotification", "secondary"]]);

    const second = await twinned();
    const at = (await notificationsOf(second.p.address)).length;
    const toggle = await federation.send("001-01", { method: "PUT", path: `/twins/${second.twinId}/status`, msgId: randomUUID(), body: { status: "Off", version: 2, changedBy: "primary" } });
    expect(toggle.status).toBe(200);
    expect((await A.node().context.store.getTwin(second.twinId))?.status).toBe("Off");
    expect((await notificationsOf(second.p.address)).slice(at).map((x) => [x.type, x.content.changedBy])).toEqual([["twinningStatusNotification", "secondary"]]);
  });

  it("HLF-CM-006 a code shown to a secondary that B then de-provisions is void: A's primary cannot redeem it, and the number's next holder at B inherits nothing", async () => {
    const p = await A.party(addr(A));
    const s = await B.party(addr(B));
    const code = await codeAtB(s);
    expect(code.status).toBe(201);
    expect((await B.api.call("DELETE", `/admin/v1/subscribers/${enc(s.address)}`, { token: B.node().adminToken })).status).toBe(204);
    const next = await B.party(s.address);
    const activation = await A.api.call("POST", `/twinning/v1/primary/${enc(p.address)}/twins`, { token: p.token, body: { activationCode: code.body.activationCode.code, operatorId: "002-01" } });
    expect([activation.status, messageId(activation.body)]).toEqual([400, "SVC3001"]);
    const view = await B.api.call("GET", `/twinning/v1/secondary/${enc(s.address)}/twinning`, { token: next.token });
    expect(view.status).toBe(404);
  });

  it("HLF-IC-006 the token exchange takes only a subject token made as DESIGN's peers make it: a JWT in ES256 or EdDSA with iat and exp, no older than a message may be", async () => {
    const { s, twinId } = await twinned();
    const jwk = JSON.parse(readFileSync(B.signingKeyFile, "utf8")) as JWK;
    const key = await importJWK(jwk, "ES256");
    const nowS = Math.floor(Date.now() / 1000);
    const subjectToken = (typ: string, times: { iat?: number; exp?: number }) => {
      const jwt = new SignJWT({ twin_id: twinId }).setProtectedHeader({ alg: "ES256", kid: jwk.kid!, typ }).setIssuer("urn:twinning:operator:002-01").setAudience("urn:twinning:operator:001-01").setSubject(s.address);
      if (times.iat !== undefined) jwt.setIssuedAt(times.iat);
      if (times.exp !== undefined) jwt.setExpirationTime(times.exp);
      return jwt.sign(key);
    };
    const exchange = async (token: string) =>
      (
        await B.node().context.federation!.send("001-01", {
          method: "POST",
          path: "/token",
          msgId: randomUUID(),
          body: { grant_type: "urn:ietf:params:oauth:grant-type:token-exchange", subject_token: token, subject_token_type: "urn:ietf:params:oauth:token-type:jwt" },
        })
      ).status;
    expect(await exchange(await subjectToken("JWT", { iat: nowS, exp: nowS + 60 }))).toBe(200);
    expect(await exchange(await subjectToken("JWT", {}))).toBe(401);
    expect(await exchange(await subjectToken("JWT", { exp: nowS + 60 }))).toBe(401);
    expect(await exchange(await subjectToken("anything", { iat: nowS, exp: nowS + 60 }))).toBe(401);
    expect(await exchange(await subjectToken("JWT", { iat: nowS - 3_600, exp: nowS + 60 }))).toBe(401);
  });
});

