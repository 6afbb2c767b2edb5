import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { readFileSync } from "node:fs";
import { Writable } from "node:stream";
import { join } from "node:path";
import { SignJWT, exportJWK, generateKeyPair, createLocalJWKSet, importJWK, jwtVerify, type CryptoKey, type JWK } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Api, enc, messageId, newAddress, startTestNode, type TestNode } from "../helpers/test-node.ts";

let t: TestNode;
let api: Api;
let jwksServer: Server;
let externalKey: CryptoKey;
const EXTERNAL_ISSUER = "https://idp.operator.test";

beforeAll(async () => {
  const pair = await generateKeyPair("ES256");
  externalKey = pair.privateKey as CryptoKey;
  const jwk = { ...(await exportJWK(pair.publicKey)), kid: "idp-1", alg: "ES256" };
  jwksServer = createServer((_req, res) => {
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify({ keys: [jwk] }));
  });
  await new Promise<void>((r) => jwksServer.listen(0, "127.0.0.1", r));
  const jwksUrl = `http://127.0.0.1:${(jwksServer.address() as AddressInfo).port}/jwks`;
  t = await startTestNode({ externalIssuer: { issuer: EXTERNAL_ISSUER, jwksUrl, audience: "twinning" }, introspectionToken: INTROSPECTION_TOKEN });
  api = new Api(t.url);
});
afterAll(async () => {
  await t.cleanup();
  await new Promise<void>((r) => jwksServer.close(() => r()));
});

const form = (body: string, headers: Record<string, string> = {}) =>
  fetch(`${t.url}/oauth/token`, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded", ...headers }, body });
const basic = (id: string, secret: string) => ({ authorization: `Basic ${Buffer.from(`${id}:${secret}`).toString("base64")}` });
/** The operator's messaging services introspect with their own token, not the admin token. */
const INTROSPECTION_TOKEN = "messaging-services-introspection-0123456789";
const introspectAs = (bearer: string, token: string) =>
  fetch(`${t.url}/oauth/introspect`, {
    method: "POST",
    headers: { authorization: `Bearer ${bearer}`, "content-type": "application/x-www-form-urlencoded" },
    body: `token=${encodeURIComponent(token)}`,
  });
const introspect = (token: string) => introspectAs(INTROSPECTION_TOKEN, token).then((r) => r.json() as Promise<any>);

describe("tokens", () => {
  it("OAU-001 client_credentials with the provisioned credential gives an RFC 6749 answer and a JWT verifiable with the node's JWKS", async () => {
    const a = newAddress();
    await api.provision(t.node.adminToken, a, "device-secret-1");
    const res = await form("grant_type=client_credentials&scope=twinning", basic(a, "device-secret-1"));
    expect(res.status).toBe(200);
    expect(res.headers.get("cache-control")).toBe("no-store");
    const body = (await res.json()) as any;
    expect(body).toMatchObject({ token_type: "Bearer", expires_in: 3600, scope: "twinning" });
    const jwks = (await (await fetch(`${t.url}/.well-known/jwks.json`)).json()) as any;
    expect(jwks.keys[0]).not.toHaveProperty("d");
    const { payload, protectedHeader } = await jwtVerify(body.access_token, createLocalJWKSet(jwks), { issuer: "urn:twinning:operator:001-01" });
    expect(protectedHeader.typ).toBe("at+jwt");
    expect(payload).toMatchObject({ sub: a, scope: "twinning", client_id: a });
  });

  it("HLF-CM-006 OAU-001 a client id that failed policy.maxFailedTokenRequestsPerClient times in the window is refused with 429 and Retry-After, even with its right secret", async () => {
    const a = newAddress();
    await api.provision(t.node.adminToken, a, "device-secret-guess");
    for (let i = 0; i < 10; i++) expect((await form("grant_type=client_credentials", basic(a, `wrong-${i}`))).status).toBe(401);
    const refused = await form("grant_type=client_credentials", basic(a, "device-secret-guess"));
    expect(refused.status).toBe(429);
    expect(Number(refused.headers.get("retry-after"))).toBeGreaterThan(0);
    const body = (await refused.json()) as any;
    expect([body.error, messageId(body)]).toEqual(["invalid_client", "POL3004"]);
    // Another client is not affected.
    const b = newAddress();
    await api.provision(t.node.adminToken, b, "device-secret-other");
    expect((await form("grant_type=client_credentials", basic(b, "device-secret-other"))).status).toBe(200);
  });

  it("HLF-CM-006 OAU-001 guesses sent at once count from their start: no more than policy.maxFailedTokenRequestsPerClient of them are checked", async () => {
    const a = newAddress();
    await api.provision(t.node.adminToken, a, "device-secret-burst");
    const statuses = (await Promise.all(Array.from({ length: 25 }, (_, i) => form("grant_type=client_credentials", basic(a, `wrong-${i}`))))).map((r) => r.status);
    expect(statuses.filter((s) => s === 401)).toHaveLength(10);
    expect(statuses.filter((s) => s === 429)).toHaveLength(15);
    expect((await form("grant_type=client_credentials", basic(a, "device-secret-burst"))).status).toBe(429);
  });

  it("OAU-001 a parameter sent twice, a missing grant_type, or the client authenticated two ways → 400 invalid_request naming it", async () => {
    const a = newAddress();
    await api.provision(t.node.adminToken, a, "device-secret-dup");
    const cases: [string, Record<string, string>, string][] = [
      ["grant_type=client_credentials&grant_type=password", basic(a, "device-secret-dup"), "grant_type"],
      ["grant_type=client_credentials&scope=twinning&scope=x", basic(a, "device-secret-dup"), "scope"],
      [`grant_type=client_credentials&client_id=${enc(a)}&client_id=${enc(a)}&client_secret=device-secret-dup`, {}, "client_id"],
      ["scope=twinning", basic(a, "device-secret-dup"), "grant_type"],
      [`grant_type=client_credentials&client_secret=device-secret-dup`, basic(a, "device-secret-dup"), "client_secret"],
    ];
    for (const [body, headers, field] of cases) {
      const res = await form(body, headers);
      const json = (await res.json()) as any;
      expect([res.status, json.error, json.access_token, messageId(json), json.requestError.serviceException.variables]).toEqual([400, "invalid_request", undefined, "SVC0002", [field]]);
    }
    const other = await form(`grant_type=client_credentials&client_id=${enc(newAddress())}`, basic(a, "device-secret-dup"));
    expect([other.status, ((await other.json()) as any).error]).toEqual([400, "invalid_request"]);
    // Sent once each, the same parameters give a token; a client_id beside HTTP Basic that names the same client too.
    expect((await form(`grant_type=client_credentials&client_id=${enc(a)}&client_secret=device-secret-dup`)).status).toBe(200);
    expect((await form(`grant_type=client_credentials&client_id=${enc(a)}`, basic(a, "device-secret-dup"))).status).toBe(200);
  });

  it("OAU-001 a token is minted only under the provisioning its request was authenticated under: after a credential change meanwhile (a long-poll that outlived it), minting is refused", async () => {
    const a = newAddress();
    await api.provision(t.node.adminToken, a, "device-secret-old");
    const before = await t.node.context.tokens.verify(await api.token(a, "device-secret-old"));
    await api.provision(t.node.adminToken, a, "device-secret-new");
    const mint = (underProvisioning: string | undefined) => t.node.context.tokens.mint({ subject: a, scope: "twinning", ttlSeconds: 60, underProvisioning });
    await expect(mint(before.provisioning)).rejects.toMatchObject({ code: "invalid_token" });
    const now = await t.node.context.tokens.verify(await api.token(a, "device-secret-new"));
    expect(now.provisioning).not.toBe(before.provisioning);
    const { token } = await mint(now.provisioning);
    expect((await t.node.context.tokens.verify(token)).provisioning).toBe(now.provisioning);
  });

  it("OAU-001 wrong credential, unknown client, wrong grant and unknown scope are refused in RFC 6749 form with the OMA body", async () => {
    const a = newAddress();
    await api.provision(t.node.adminToken, a, "device-secret-2");
    const wrong = await form("grant_type=client_credentials", basic(a, "nope"));
    expect(wrong.status).toBe(401);
    const wrongBody = (await wrong.json()) as any;
    expect(wrongBody.error).toBe("invalid_client");
    expect(messageId(wrongBody)).toBe("SVC2003");
    expect(JSON.stringify(wrongBody)).not.toContain("nope");
    expect((await form("grant_type=client_credentials", basic(newAddress(), "x"))).status).toBe(401);
    const grant = await form("grant_type=password", basic(a, "device-secret-2"));
    expect([grant.status, ((await grant.json()) as any).error]).toEqual([400, "unsupported_grant_type"]);
    const scope = await form("grant_type=client_credentials&scope=primary-services", basic(a, "device-secret-2"));
    expect([scope.status, ((await scope.json()) as any).error]).toEqual([400, "invalid_scope"]);
  });

  it("OAU-002 scopes: twinning for the subscriber's own paths, twinning:twin bound to one twin, primary-services for the primary's services", async () => {
    const [pa, sa] = [newAddress(), newAddress()];
    const p = { address: pa, token: await api.subscriber(t.node.adminToken, pa) };
    const s = { address: sa, token: await api.subscriber(t.node.adminToken, sa) };
    const { twin, primaryTwinToken } = await api.twin(p, s);
    const claims = JSON.parse(Buffer.from(primaryTwinToken.split(".")[1]!, "base64url").toString());
    expect(claims).toMatchObject({ scope: "twinning:twin", twin_id: twin.twinId, sub: pa });
    const twinScopedList = await api.call("GET", `/twinning/v1/primary/${enc(pa)}/twins`, { token: primaryTwinToken });
    expect([twinScopedList.status, messageId(twinScopedList.body)]).toEqual([403, "POL2003"]);
  });

  it("RFC 7662 introspection: active with claims while the twin lives, inactive once deactivated; the introspection token (or the admin token) required", async () => {
    const [pa, sa] = [newAddress(), newAddress()];
    const p = { address: pa, token: await api.subscriber(t.node.adminToken, pa) };
    const s = { address: sa, token: await api.subscriber(t.node.adminToken, sa) };
    const { twin } = await api.twin(p, s);
    const ps = await api.call("POST", `/twinning/v1/secondary/${enc(sa)}/twinning/primaryServicesToken`, { token: s.token });
    const live = await introspect(ps.body.primaryServices.accessToken);
    expect(live).toMatchObject({ active: true, sub: pa, scope: "primary-services", act: { sub: sa }, twin_id: twin.twinId });
    await api.call("DELETE", `/twinning/v1/primary/${enc(pa)}/twins/${twin.twinId}`, { token: p.token });
    expect(await introspect(ps.body.primaryServices.accessToken)).toEqual({ active: false });
    expect(await introspect("not-a-token")).toEqual({ active: false });
    const anonymous = await fetch(`${t.url}/oauth/introspect`, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: "token=x" });
    expect(anonymous.status).toBe(401);
    // The admin token is accepted too; the introspection token opens nothing else.
    expect((await introspectAs(t.node.adminToken, "x")).status).toBe(200);
    expect((await introspectAs(`${INTROSPECTION_TOKEN}x`, "x")).status).toBe(401);
    const admin = await api.call("GET", `/admin/v1/subscribers/${enc(pa)}`, { token: INTROSPECTION_TOKEN });
    expect([admin.status, messageId(admin.body)]).toEqual([401, "SVC2003"]);
  });

  it("OAU-001 HTTP Basic client authentication takes the scheme in any case (RFC 7235)", async () => {
    const a = newAddress();
    await api.provision(t.node.adminToken, a, "device-secret-2");
    const header = basic(a, "device-secret-2").authorization.replace("Basic", "basic");
    expect((await form("grant_type=client_credentials", { authorization: header })).status).toBe(200);
  });

  it("HLF-CM-006 a token dies with the provisioning it was issued under: de-provisioning then provisioning again, or a new credential, does not revive it", async () => {
    const [p, s] = [newAddress(), newAddress()];
    const pToken = await api.subscriber(t.node.adminToken, p);
    const sToken = await api.subscriber(t.node.adminToken, s);
    const { primaryTwinToken } = await api.twin({ address: p, token: pToken }, { address: s, token: sToken }, "watch");
    const query = (token: string) => api.call("GET", `/twinning/v1/secondary/${enc(s)}/twinning`, { token });
    expect((await query(sToken)).status).toBe(200);
    expect((await api.call("DELETE", `/admin/v1/subscribers/${enc(s)}`, { token: t.node.adminToken })).status).toBe(204);
    expect([(await query(sToken)).status, messageId((await query(sToken)).body)]).toEqual([403, "POL2001"]);
    await api.provision(t.node.adminToken, s, "a-completely-new-credential");
    const old = await query(sToken);
    expect([old.status, messageId(old.body)]).toEqual([401, "SVC2003"]);
    expect((await introspect(sToken)).active).toBe(false);
    // A token minted under the new provisioning works (the twin itself ended with the de-provisioning).
    const fresh = await query(await api.token(s, "a-completely-new-credential"));
    expect([fresh.status, messageId(fresh.body)]).toEqual([404, "SVC0002"]);
    // A new credential for the primary ends its tokens too, twin-scoped ones included.
    const s2 = newAddress();
    const { primaryTwinToken: twinToken } = await api.twin({ address: p, token: pToken }, { address: s2, token: await api.subscriber(t.node.adminToken, s2) }, "watch");
    const list = (token: string) => api.call("GET", `/twinning/v1/primary/${enc(p)}/twins/watch`, { token });
    expect([(await list(twinToken)).status, (await list(primaryTwinToken)).status]).toEqual([200, 401]);
    await api.provision(t.node.adminToken, p, "rotated-credential-1");
    expect([(await list(pToken)).status, (await list(twinToken)).status]).toEqual([401, 401]);
    expect((await list(await api.token(p, "rotated-credential-1"))).status).toBe(200);
  });

  it("HLF-SD-009 a primary-services token stops working while twinning is Off and once the secondary is de-provisioned", async () => {
    const [p, s] = [newAddress(), newAddress()];
    const pToken = await api.subscriber(t.node.adminToken, p);
    const sToken = await api.subscriber(t.node.adminToken, s);
    await api.twin({ address: p, token: pToken }, { address: s, token: sToken }, "watch");
    const mint = await api.call("POST", `/twinning/v1/secondary/${enc(s)}/twinning/primaryServicesToken`, { token: sToken });
    expect(mint.status).toBe(200);
    const token = mint.body.primaryServices.accessToken as string;
    expect((await introspect(token)).active).toBe(true);
    const toggle = (status: string) => api.call("PUT", `/twinning/v1/primary/${enc(p)}/twins/watch/status`, { token: pToken, body: { status } });
    expect((await toggle("Off")).status).toBe(200);
    expect((await introspect(token)).active).toBe(false);
    expect((await toggle("On")).status).toBe(200);
    expect((await introspect(token)).active).toBe(true);
    expect((await api.call("DELETE", `/admin/v1/subscribers/${enc(s)}`, { token: t.node.adminToken })).status).toBe(204);
    expect((await introspect(token)).active).toBe(false);
  });

  it("HLF-SD-009 a primary-services token is minted only under the provisioning the secondary's request was authenticated under (a credential changed meanwhile: 401)", async () => {
    const { primaryServicesToken } = await import("../../node/service/twin-service.ts");
    const { provisioningStamp } = await import("../../node/tokens/credentials.ts");
    const [p, s] = [newAddress(), newAddress()];
    const pToken = await api.subscriber(t.node.adminToken, p);
    const sToken = await api.subscriber(t.node.adminToken, s);
    const { twin } = await api.twin({ address: p, token: pToken }, { address: s, token: sToken }, "watch");
    const ctx = t.node.context;
    const stored = (await ctx.store.getTwin(twin.twinId))!;
    const authenticatedUnder = provisioningStamp((await ctx.store.getSubscriber(s))!);
    expect((await primaryServicesToken(ctx, stored, authenticatedUnder)).accessToken).toEqual(expect.any(String));
    // The operator gives the secondary a new credential while the request runs.
    await api.provision(t.node.adminToken, s, "rotated-credential-3");
    await expect(primaryServicesToken(ctx, stored, authenticatedUnder)).rejects.toMatchObject({ code: "invalid_token" });
  });

  it("HLF-SD-009 a primary-services token dies with the secondary's credential that opened it: a new credential for the secondary ends it, as it ends the secondary's own tokens", async () => {
    const [p, s] = [newAddress(), newAddress()];
    const pToken = await api.subscriber(t.node.adminToken, p);
    const sToken = await api.subscriber(t.node.adminToken, s);
    await api.twin({ address: p, token: pToken }, { address: s, token: sToken }, "watch");
    const mint = async (token: string) => (await api.call("POST", `/twinning/v1/secondary/${enc(s)}/twinning/primaryServicesToken`, { token })).body.primaryServices.accessToken as string;
    const before = await mint(sToken);
    expect((await introspect(before)).active).toBe(true);
    // The watch was lost: the operator gives the secondary a new credential.
    await api.provision(t.node.adminToken, s, "rotated-credential-2");
    expect((await introspect(before)).active).toBe(false);
    // What the new credential opens works.
    const after = await mint(await api.token(s, "rotated-credential-2"));
    expect((await introspect(after)).active).toBe(true);
  });

  it("OAU-001 bearer JWTs of the operator's own authorization server are accepted when configured", async () => {
    const a = newAddress();
    await api.provision(t.node.adminToken, a);
    const mint = (claims: Record<string, unknown>, iss = EXTERNAL_ISSUER) =>
      new SignJWT(claims).setProtectedHeader({ alg: "ES256", kid: "idp-1" }).setIssuer(iss).setSubject(a).setAudience("twinning").setIssuedAt().setExpirationTime("5m").sign(externalKey);
    const ok = await api.call("GET", `/twinning/v1/primary/${enc(a)}/twins`, { token: await mint({ scope: "twinning openid" }) });
    expect(ok.status).toBe(200);
    const narrow = await api.call("GET", `/twinning/v1/primary/${enc(a)}/twins`, { token: await mint({ scope: "twinning:twin", twin_id: "x" }) });
    expect([narrow.status, messageId(narrow.body)]).toEqual([401, "SVC2003"]);
    const otherIssuer = await api.call("GET", `/twinning/v1/primary/${enc(a)}/twins`, { token: await mint({ scope: "twinning" }, "https://evil.test") });
    expect([otherIssuer.status, messageId(otherIssuer.body)]).toEqual([401, "SVC2003"]);
  });

  it("OAU-001 a node taking an external issuer's tokens without an audience to check says so at start", async () => {
    const lines: string[] = [];
    const sink = new Writable({ write: (chunk, _e, done) => (lines.push(String(chunk)), done()) });
    const issuer = { issuer: EXTERNAL_ISSUER, jwksUrl: "http://127.0.0.1:9/jwks" };
    const warned = async (externalIssuer: { issuer: string; jwksUrl: string; audience?: string }) => {
      lines.length = 0;
      const node = await startTestNode({ externalIssuer, logLevel: "warn" }, { logDestination: sink });
      await node.cleanup();
      return lines.some((l) => l.includes("externalIssuer.audience is not set"));
    };
    expect(await warned(issuer)).toBe(true);
    expect(await warned({ ...issuer, audience: "twinning" })).toBe(false);
  });

  it("OAU-002 a token signed with the node's own key whose audience is not its scope's is refused (RFC 9068 §4)", async () => {
    const a = newAddress();
    await api.provision(t.node.adminToken, a, "device-secret-aud");
    const jwk = JSON.parse(readFileSync(join(t.dataDir, "signing-key.jwk.json"), "utf8")) as JWK;
    const key = await importJWK(jwk, "ES256");
    // The claims of a token the node minted, signed again with another audience.
    const claims = JSON.parse(Buffer.from((await api.token(a, "device-secret-aud")).split(".")[1]!, "base64url").toString()) as Record<string, unknown>;
    const resign = (aud: string) => new SignJWT({ ...claims, aud }).setProtectedHeader({ alg: "ES256", kid: jwk.kid!, typ: "at+jwt" }).sign(key);
    const list = (token: string) => api.call("GET", `/twinning/v1/primary/${enc(a)}/twins`, { token });
    expect((await list(await resign("twinning"))).status).toBe(200);
    for (const audience of ["primary-services", "someone-else"]) {
      const res = await list(await resign(audience));
      expect([res.status, messageId(res.body)]).toEqual([401, "SVC2003"]);
    }
  });
});
