import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ManualClock } from "../helpers/manual-clock.ts";
import { rawHttp } from "../helpers/raw-http.ts";
import { Api, enc, messageId, newAddress, startTestNode, type TestNode } from "../helpers/test-node.ts";
import { expectRefused, expectUnauthorized, foreignToken, postChunked, requestToken, tamperedToken, unsignedToken } from "./bad-input-helpers.ts";

/**
 * Bad input against a real node over HTTP: every refusal is checked for its status AND its
 * OMA messageId (DESIGN "Errors"), and for the absence of 5xx answers and stack traces.
 */
const MAX_BODY_BYTES = 2048;
const CLOCKED = { accessTokenTtlSeconds: 60, codeTtlSeconds: 10 };
const V1 = "/twinning/v1";

let t: TestNode;
let api: Api;
const clock = new ManualClock();
let clocked: TestNode;
let capi: Api;

beforeAll(async () => {
  t = await startTestNode({ limits: { maxBodyBytes: MAX_BODY_BYTES } });
  api = new Api(t.url);
  clocked = await startTestNode({ policy: CLOCKED }, { nowMs: clock.now });
  capi = new Api(clocked.url);
});
afterAll(async () => {
  await t?.cleanup();
  await clocked?.cleanup();
});

type Party = { address: string; token: string };
async function party(on: Api = api, node: TestNode = t): Promise<Party> {
  const address = newAddress();
  return { address, token: await on.subscriber(node.node.adminToken, address) };
}
const P = (p: Party) => `${V1}/primary/${enc(p.address)}`;
const S = (s: Party) => `${V1}/secondary/${enc(s.address)}`;
const requestCode = (s: Party, on: Api = api, body: object = {}) => on.call("POST", `${S(s)}/activationCodes`, { token: s.token, body });
const redeem = (p: Party, code: string, on: Api = api, extra: object = {}) =>
  on.call("POST", `${P(p)}/twins`, { token: p.token, body: { activationCode: code, operatorId: "001-01", ...extra } });
/** The secondary's twin-scoped token, read from its Used code resource (HLF-SD-005). */
async function secondaryTwinToken(s: Party, codeResourceUrl: string): Promise<string> {
  const res = await api.call("GET", new URL(codeResourceUrl).pathname, { token: s.token });
  expect(res.body.activationCode.status).toBe("Used");
  return res.body.activationCode.accessToken as string;
}

describe("malformed and mistyped bodies", () => {
  let p: Party;
  let s: Party;
  let twinId: string;
  beforeAll(async () => {
    [p, s] = [await party(), await party()];
    twinId = (await api.twin(p, s)).twin.twinId;
  });

  type Case = { what: string; method: string; path: () => string; raw?: string; body?: unknown; type?: string; admin?: boolean; field?: string };
  const cases: Case[] = [
    { what: "malformed JSON on activation", method: "POST", path: () => `${P(p)}/twins`, raw: '{"activationCode": "123' },
    { what: "malformed JSON on a status toggle", method: "PUT", path: () => `${P(p)}/twins/${twinId}/status`, raw: "{status: On}" },
    { what: "malformed JSON on a code request", method: "POST", path: () => `${S(s)}/activationCodes`, raw: "{" },
    { what: "a JSON array where an object is expected", method: "POST", path: () => `${P(p)}/twins`, body: [{ activationCode: "123456", operatorId: "001-01" }] },
    { what: "a JSON string where an object is expected", method: "PUT", path: () => `${P(p)}/twins/${twinId}/status`, body: "On" },
    { what: "a JSON string as a code request", method: "POST", path: () => `${S(s)}/activationCodes`, body: "please" },
    { what: "JSON null as a code request", method: "POST", path: () => `${S(s)}/activationCodes`, raw: "null" },
    { what: "status: 1", method: "PUT", path: () => `${P(p)}/twins/${twinId}/status`, body: { status: 1 }, field: "status" },
    { what: 'status: "maybe" from the secondary', method: "PUT", path: () => `${S(s)}/twinning/status`, body: { status: "maybe" }, field: "status" },
    { what: 'status: "on" (wrong case)', method: "PUT", path: () => `${P(p)}/twins/${twinId}/status`, body: { status: "on" }, field: "status" },
    { what: "name: 42 on rename", method: "PATCH", path: () => `${P(p)}/twins/${twinId}`, body: { name: 42 }, field: "name" },
    { what: "activationCode: 123", method: "POST", path: () => `${P(p)}/twins`, body: { activationCode: 123, operatorId: "001-01" }, field: "activationCode" },
    { what: "an empty activationCode", method: "POST", path: () => `${P(p)}/twins`, body: { activationCode: "", operatorId: "001-01" }, field: "activationCode" },
    { what: "a malformed operatorId", method: "POST", path: () => `${P(p)}/twins`, body: { activationCode: "123456", operatorId: "ACME" }, field: "operatorId" },
    { what: "a malformed primaryOperatorId", method: "POST", path: () => `${S(s)}/activationCodes`, body: { primaryOperatorId: 1 }, field: "primaryOperatorId" },
    { what: "clientCorrelator: {}", method: "POST", path: () => `${S(s)}/activationCodes`, body: { clientCorrelator: {} }, field: "clientCorrelator" },
    { what: "missing activationCode", method: "POST", path: () => `${P(p)}/twins`, body: { operatorId: "001-01" }, field: "activationCode" },
    { what: "missing operatorId", method: "POST", path: () => `${P(p)}/twins`, body: { activationCode: "123456" }, field: "operatorId" },
    { what: "missing status", method: "PUT", path: () => `${S(s)}/twinning/status`, body: {}, field: "status" },
    { what: "missing name on rename", method: "PATCH", path: () => `${P(p)}/twins/${twinId}`, body: {}, field: "name" },
    { what: "a twin id as the new name (names must not look like a twinId)", method: "PATCH", path: () => `${P(p)}/twins/${twinId}`, body: { name: randomUUID() }, field: "name" },
    { what: "a twin id as the name on activation", method: "POST", path: () => `${P(p)}/twins`, body: { activationCode: "123456", operatorId: "001-01", name: randomUUID() }, field: "name" },
    { what: "missing callbackReference", method: "POST", path: () => `${P(p)}/subscriptions`, body: { duration: 60 }, field: "callbackReference" },
    { what: "a notifyURL that is not http(s)", method: "POST", path: () => `${P(p)}/subscriptions`, body: { callbackReference: { notifyURL: "file:///etc/passwd" } }, field: "callbackReference.notifyURL" },
    { what: "duration: -5", method: "POST", path: () => `${P(p)}/subscriptions`, body: { callbackReference: { notifyURL: "http://127.0.0.1:9/cb" }, duration: -5 }, field: "duration" },
    { what: "text/plain on activation", method: "POST", path: () => `${P(p)}/twins`, raw: '{"activationCode":"123456","operatorId":"001-01"}', type: "text/plain", field: "Content-Type" },
    { what: "text/plain on a status toggle", method: "PUT", path: () => `${S(s)}/twinning/status`, raw: "On", type: "text/plain", field: "Content-Type" },
    { what: "form data on a code request", method: "POST", path: () => `${S(s)}/activationCodes`, raw: "primaryOperatorId=001-01", type: "application/x-www-form-urlencoded", field: "Content-Type" },
    { what: "admin: twinning: \"yes\"", method: "PUT", path: () => `/admin/v1/subscribers/${enc(newAddress())}`, body: { subscriber: { twinning: "yes", credential: "long-enough-secret" } }, admin: true, field: "subscriber.twinning" },
    { what: "admin: missing credential", method: "PUT", path: () => `/admin/v1/subscribers/${enc(newAddress())}`, body: { subscriber: { twinning: true } }, admin: true, field: "subscriber.credential" },
    { what: "admin: text/plain", method: "PUT", path: () => `/admin/v1/subscribers/${enc(newAddress())}`, raw: "twinning", type: "text/plain", admin: true, field: "Content-Type" },
    { what: "an empty JSON body on a status toggle", method: "PUT", path: () => `${P(p)}/twins/${twinId}/status`, raw: "", field: "body" },
    { what: "?wait=soon on a code read", method: "GET", path: () => `${S(s)}/activationCodes/${randomUUID()}?wait=soon`, field: "wait" },
    { what: "?wait=99999 on a code read", method: "GET", path: () => `${S(s)}/activationCodes/${randomUUID()}?wait=99999`, field: "wait" },
    { what: "?wait given twice on a code read", method: "GET", path: () => `${S(s)}/activationCodes/${randomUUID()}?wait=1&wait=2`, field: "wait" },
  ];

  it.each(cases)("HLF-CM-001 $what → 400 SVC0002", async (c) => {
    const token = c.admin ? t.node.adminToken : c.path().startsWith(S(s)) ? s.token : p.token;
    const headers = { "content-type": c.type ?? "application/json" };
    const res = await api.call(c.method, c.path(), { token, headers, ...(c.raw !== undefined ? { rawBody: c.raw } : { body: c.body }) });
    expectRefused(res, 400, "SVC0002", c.field);
  });

  it.each(["application/json; charset=utf-8", "application/merge-patch+json", "APPLICATION/JSON", "application/json ; charset=utf-8", "application/json;", "application/json; charset=\"utf-8\""])("HLF-CM-001 a JSON body sent as %s is read as JSON", async (type) => {
    const res = await api.call("PUT", `${P(p)}/twins/${twinId}/status`, { token: p.token, headers: { "content-type": type }, rawBody: '{"status":"On"}' });
    expect(res.status).toBe(200);
    expect(res.body.twin.status).toBe("On");
  });

  it("HLF-SD-002 a code request may come with no body at all (primaryOperatorId is optional), whatever its Content-Type says", async () => {
    const own = await party();
    const ok = await api.call("POST", `${S(own)}/activationCodes`, { token: own.token });
    expect(ok.status).toBe(201);
    expect(ok.body.activationCode.operatorId).toBe("001-01");
    // Nor with a client that always says its body is JSON, and sends none.
    const typed = await party();
    const empty = await api.call("POST", `${S(typed)}/activationCodes`, { token: typed.token, headers: { "content-type": "application/json" }, rawBody: "" });
    expect([empty.status, empty.body.activationCode?.operatorId]).toEqual([201, "001-01"]);
  });

  it("HLF-CM-006 a body larger than limits.maxBodyBytes → 413 SVC0002, with or without Content-Length", async () => {
    const big = { activationCode: "123456", operatorId: "001-01", name: "x".repeat(MAX_BODY_BYTES + 100) };
    expectRefused(await api.call("POST", `${P(p)}/twins`, { token: p.token, body: big }), 413, "SVC0002");
    const admin = await api.call("PUT", `/admin/v1/subscribers/${enc(newAddress())}`, { token: t.node.adminToken, body: { subscriber: { twinning: true, credential: "c".repeat(4000) } } });
    expectRefused(admin, 413, "SVC0002");
    const chunked = await postChunked(`${t.url}${P(p)}/twins`, p.token, ['{"activationCode":"123456","operatorId":"001-01","name":"', "y".repeat(1500), "z".repeat(1500), '"}']);
    expectRefused(chunked, 413, "SVC0002");
    // Just under the limit is read and judged on its content (an unknown code), not on its size.
    const under = await api.call("POST", `${P(p)}/twins`, { token: p.token, body: { activationCode: "12x456", operatorId: "001-01", pad: "p".repeat(MAX_BODY_BYTES - 200) } });
    expectRefused(under, 400, "SVC3001");
  });

  it("HLF-CM-001 an HTTP/1.1 request without a Host header → 400 SVC0002 naming Host, with the OMA body; HTTP/1.0 needs none", async () => {
    const status = (answer: string) => answer.split("\r\n")[0];
    const body = (answer: string) => JSON.parse(answer.slice(answer.indexOf("\r\n\r\n") + 4));
    // A toggle (answered by the direct route), a read and an unknown path.
    for (const line of [`PUT ${P(p)}/twins/x/status`, `GET ${P(p)}/twins`, "GET /nothing"]) {
      const answer = await rawHttp(t.url, (write) => write(`${line} HTTP/1.1\r\nAuthorization: Bearer ${p.token}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}`));
      expect(status(answer), line).toBe("HTTP/1.1 400 Bad Request");
      expect(body(answer).requestError.serviceException).toMatchObject({ messageId: "SVC0002", variables: ["Host"] });
    }
    const old = await rawHttp(t.url, (write) => write(`GET ${P(p)}/twins HTTP/1.0\r\nAuthorization: Bearer ${p.token}\r\n\r\n`));
    expect(status(old)).toBe("HTTP/1.1 200 OK");
  });

  it("HLF-CM-006 a body that arrives in pieces after its headers is read whole, as one sent with them", async () => {
    const body = JSON.stringify({ activationCode: "12x456", operatorId: "001-01" });
    const whole = await api.call("POST", `${P(p)}/twins`, { token: p.token, rawBody: body, headers: { "content-type": "application/json" } });
    expectRefused(whole, 400, "SVC3001");
    const answer = await rawHttp(t.url, async (write) => {
      write(`POST ${P(p)}/twins HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${p.token}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n`);
      for (const piece of [body.slice(0, 10), body.slice(10, 30), body.slice(30)]) {
        await new Promise((r) => setTimeout(r, 30));
        write(piece);
      }
    });
    expect(answer.split("\r\n")[0]).toBe("HTTP/1.1 400 Bad Request");
    expect(messageId(JSON.parse(answer.slice(answer.indexOf("\r\n\r\n") + 4)))).toBe(messageId(whole.body));
  });
});

describe("addresses and subjects", () => {
  const invalid = ["tel:12345", "mailto:x", "tel:+abc", " ", "tel:+", "tel:", "+15550001"];
  it.each(invalid)("HLF-CM-006 invalid address %j in the path, with a valid token → 400 SVC0004", async (addr) => {
    const p = await party();
    for (const path of [`${V1}/primary/${enc(addr)}/twins`, `${V1}/secondary/${enc(addr)}/twinning`, `${V1}/primary/${enc(addr)}/subscriptions`]) {
      expectRefused(await api.call("GET", path, { token: p.token }), 400, "SVC0004");
    }
  });

  it("HLF-CM-006 a path address that is not the token's subject → 403 POL2003", async () => {
    const [p, q] = [await party(), await party()];
    const calls: [string, string, object?][] = [
      ["GET", `${P(q)}/twins`],
      ["POST", `${S(q)}/activationCodes`, {}],
      ["GET", `${S(q)}/twinning`],
      ["GET", `${P(q)}/subscriptions`],
      ["POST", `${P(q)}/subscriptions`, { callbackReference: { notifyURL: "http://127.0.0.1:9/cb" } }],
    ];
    for (const [method, path, body] of calls) expectRefused(await api.call(method, path, { token: p.token, body }), 403, "POL2003");
    const own = await api.call("GET", `${P(q)}/twins`, { token: q.token });
    expect(own.status).toBe(200);
  });

  it("HLF-CM-006 acr:Authorization stands for the token's subject", async () => {
    const p = await party();
    for (const alias of ["acr%3AAuthorization", "acr:Authorization"]) {
      const res = await api.call("GET", `${V1}/primary/${alias}/twins`, { token: p.token });
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      expect(res.body.twinList.resourceURL).toBe(`${t.url}${P(p)}/twins`);
    }
  });
});

describe("OAU-002 scopes", () => {
  let p: Party;
  let s: Party;
  let a: { twin: any; primaryTwinToken: string; codeResource: any };
  let b: { twin: any; primaryTwinToken: string; codeResource: any };
  beforeAll(async () => {
    [p, s] = [await party(), await party()];
    a = await api.twin(p, s, "watch-a");
    b = await api.twin(p, await party(), "watch-b");
  });

  it("OAU-002 wrong scope: a twin-scoped token on routes that need the full twinning scope → 403 POL2003", async () => {
    const s2 = await party();
    const freshCode = (await requestCode(s2)).body.activationCode.code as string;
    const st = await secondaryTwinToken(s, a.codeResource.resourceURL);
    const calls: [string, string, string, object?][] = [
      ["list twins", "GET", `${P(p)}/twins`],
      ["activation", "POST", `${P(p)}/twins`, { activationCode: freshCode, operatorId: "001-01" }],
      ["rename", "PATCH", `${P(p)}/twins/${a.twin.twinId}`, { name: "renamed" }],
    ];
    for (const [what, method, path, body] of calls) {
      const res = await api.call(method, path, { token: a.primaryTwinToken, body });
      expect(messageId(res.body), what).toBe("POL2003");
      expectRefused(res, 403, "POL2003");
    }
    expectRefused(await api.call("POST", `${S(s)}/twinning/primaryServicesToken`, { token: st }), 403, "POL2003");
    expectRefused(await api.call("POST", `${S(s)}/activationCodes`, { token: st, body: {} }), 403, "POL2003");
    // The same tokens are good for what their scope allows (so the refusals above are about scope).
    expect((await api.call("GET", `${P(p)}/twins/${a.twin.twinId}`, { token: a.primaryTwinToken })).status).toBe(200);
    expect((await api.call("GET", `${S(s)}/twinning`, { token: st })).status).toBe(200);
    const list = await api.call("GET", `${P(p)}/twins`, { token: p.token });
    expect(list.body.twinList.twin.map((x: any) => x.name)).toEqual(["watch-a", "watch-b"]);
  });

  it("OAU-002 a twin-scoped token of twin A used on twin B → 403 POL2003", async () => {
    for (const ref of [b.twin.twinId, "watch-b", enc(b.twin.secondaryAddress)]) {
      expectRefused(await api.call("GET", `${P(p)}/twins/${ref}`, { token: a.primaryTwinToken }), 403, "POL2003");
    }
    expectRefused(await api.call("PUT", `${P(p)}/twins/${b.twin.twinId}/status`, { token: a.primaryTwinToken, body: { status: "Off" } }), 403, "POL2003");
    expectRefused(await api.call("DELETE", `${P(p)}/twins/${b.twin.twinId}`, { token: a.primaryTwinToken }), 403, "POL2003");
    const still = await api.call("GET", `${P(p)}/twins/${b.twin.twinId}`, { token: p.token });
    expect(still.body.twin.status).toBe("On");
  });
});

describe("HLF-CM-006 authentication → 401 SVC2003", () => {
  let p: Party;
  const tokens: Record<string, () => Promise<string | undefined>> = {};
  beforeAll(async () => {
    p = await party();
    const jwks = (await (await fetch(`${t.url}/.well-known/jwks.json`)).json()) as { keys: { kid?: string }[] };
    Object.assign(tokens, {
      "missing Authorization": async () => undefined,
      "a non-Bearer scheme (Basic)": async () => `Basic ${Buffer.from(`${p.address}:secret`).toString("base64")}`,
      "Bearer with no token": async () => "Bearer ",
      "a garbage token": async () => "Bearer garbage",
      "a token signed by a different key": async () => `Bearer ${await foreignToken(p.address, jwks.keys[0]?.kid)}`,
      "an unsigned (alg none) token": async () => `Bearer ${unsignedToken(p.address)}`,
      "a tampered token (one signature character changed)": async () => `Bearer ${tamperedToken(p.token)}`,
      "the admin token on a device route": async () => `Bearer ${t.node.adminToken}`,
    });
  });

  it.each([
    "missing Authorization",
    "a non-Bearer scheme (Basic)",
    "Bearer with no token",
    "a garbage token",
    "a token signed by a different key",
    "an unsigned (alg none) token",
    "a tampered token (one signature character changed)",
    "the admin token on a device route",
  ])("HLF-CM-006 %s → 401 SVC2003 with WWW-Authenticate", async (what) => {
    const authorization = await tokens[what]!();
    const res = await api.call("GET", `${P(p)}/twins`, { headers: authorization === undefined ? {} : { authorization } });
    expectUnauthorized(res);
    // The same route with the real token works, so the 401 is about the credential.
    expect((await api.call("GET", `${P(p)}/twins`, { token: p.token })).status).toBe(200);
  });

  it("HLF-CM-006 an expired token → 401 SVC2003 (clock moved past accessTokenTtlSeconds)", async () => {
    const p2 = await party(capi, clocked);
    expect((await capi.call("GET", `${P(p2)}/twins`, { token: p2.token })).status).toBe(200);
    clock.advance((CLOCKED.accessTokenTtlSeconds + 1) * 1000);
    expectUnauthorized(await capi.call("GET", `${P(p2)}/twins`, { token: p2.token }));
  });

  it("HLF-CM-006 a device token on /admin/v1 routes → 401 SVC2003", async () => {
    const calls: [string, string, object?][] = [
      ["GET", `/admin/v1/subscribers/${enc(p.address)}`],
      ["PUT", `/admin/v1/subscribers/${enc(newAddress())}`, { subscriber: { twinning: true, credential: "long-enough-secret" } }],
      ["DELETE", `/admin/v1/subscribers/${enc(p.address)}`],
      ["GET", "/admin/v1/deadLetters"],
    ];
    for (const [method, path, body] of calls) expectUnauthorized(await api.call(method, path, { token: p.token, body }));
    expect((await api.call("GET", `${P(p)}/twins`, { token: p.token })).status).toBe(200);
  });
});

describe("HLF-CM-006 provisioning", () => {
  it("HLF-CM-006 a de-provisioned subscriber's old token → 403 POL2001", async () => {
    const p = await party();
    expect((await api.call("GET", `${P(p)}/twins`, { token: p.token })).status).toBe(200);
    expect((await api.call("DELETE", `/admin/v1/subscribers/${enc(p.address)}`, { token: t.node.adminToken })).status).toBe(204);
    expectRefused(await api.call("GET", `${P(p)}/twins`, { token: p.token }), 403, "POL2001");
    expectRefused(await requestCode(p), 403, "POL2001");
  });

  it("HLF-CM-006 a subscriber switched to twinning:false: old token → 403 POL2001, new token request → OAuth error", async () => {
    const p = await party();
    const credential = "switched-off-secret";
    await api.call("PUT", `/admin/v1/subscribers/${enc(p.address)}`, { token: t.node.adminToken, body: { subscriber: { twinning: false, credential } } });
    expectRefused(await api.call("GET", `${P(p)}/twins`, { token: p.token }), 403, "POL2001");
    const res = await requestToken(t.url, p.address, credential);
    expect([res.status, res.body.error]).toEqual([403, "unauthorized_client"]);
    expect(res.body.access_token).toBeUndefined();
    expectRefused(res, 403, "POL2001");
  });

  it("HLF-CM-006 a subscriber provisioned with twinning:false gets an OAuth error, not a token", async () => {
    const address = newAddress();
    const credential = "never-enabled-secret";
    const put = await api.call("PUT", `/admin/v1/subscribers/${enc(address)}`, { token: t.node.adminToken, body: { subscriber: { twinning: false, credential } } });
    expect(put.status).toBe(201);
    const res = await requestToken(t.url, address, credential);
    expect(res.body.access_token).toBeUndefined();
    expect([res.status, res.body.error]).toEqual([403, "unauthorized_client"]);
    expect(res.headers.get("cache-control")).toBe("no-store");
    expectRefused(res, 403, "POL2001");
  });
});

describe("HLF-TE-005 activation codes → 400 SVC3001", () => {
  it("HLF-TE-005 a reused code (redeemed twice) → 400 SVC3001, and no second twin", async () => {
    const [p, p2, s] = [await party(), await party(), await party()];
    const code = (await requestCode(s)).body.activationCode.code as string;
    expect((await redeem(p, code)).status).toBe(201);
    expectRefused(await redeem(p2, code), 400, "SVC3001");
    expectRefused(await redeem(p, code), 400, "SVC3001");
    expect((await api.call("GET", `${P(p2)}/twins`, { token: p2.token })).body.twinList.twin).toEqual([]);
  });

  it("HLF-TE-005 a wrong code → 400 SVC3001; the right one still works", async () => {
    const [p, s] = [await party(), await party()];
    const code = (await requestCode(s)).body.activationCode.code as string;
    const wrong = String((Number(code) + 1) % 10 ** code.length).padStart(code.length, "0");
    expectRefused(await redeem(p, wrong), 400, "SVC3001");
    expect((await redeem(p, code)).status).toBe(201);
  });

  it.each(["abcdef", "12a456", "12345", "1234567", " 12345", "１２３４５６"])("HLF-TE-005 a non-numeric or mis-sized code %j → 400 SVC3001", async (bad) => {
    const p = await party();
    expectRefused(await redeem(p, bad), 400, "SVC3001");
  });

  it("HLF-TE-005 an expired code (clock moved past codeTtlSeconds) → 400 SVC3001, and reads Expired", async () => {
    const [p, s] = [await party(capi, clocked), await party(capi, clocked)];
    const issued = (await requestCode(s, capi)).body.activationCode;
    clock.advance((CLOCKED.codeTtlSeconds + 1) * 1000);
    expectRefused(await redeem(p, issued.code, capi), 400, "SVC3001");
    const read = await capi.call("GET", new URL(issued.resourceURL).pathname, { token: s.token });
    expect(read.body.activationCode.status).toBe("Expired");
  });
});

describe("unknown resources → 404 SVC0002", () => {
  let p: Party;
  let s: Party;
  beforeAll(async () => {
    [p, s] = [await party(), await party()];
    await api.twin(p, await party(), "known-one");
  });

  it.each([
    ["a random twinId", () => randomUUID()],
    ["an unknown name", () => "no-such-twin"],
    ["an unknown secondary address", () => enc(newAddress())],
  ])("HLF-PD-003 %s as twin reference → 404 SVC0002 on GET, PATCH, PUT status and DELETE", async (_what, ref) => {
    const r = ref();
    expectRefused(await api.call("GET", `${P(p)}/twins/${r}`, { token: p.token }), 404, "SVC0002");
    expectRefused(await api.call("PATCH", `${P(p)}/twins/${r}`, { token: p.token, body: { name: "renamed" } }), 404, "SVC0002");
    expectRefused(await api.call("PUT", `${P(p)}/twins/${r}/status`, { token: p.token, body: { status: "Off" } }), 404, "SVC0002");
    expectRefused(await api.call("DELETE", `${P(p)}/twins/${r}`, { token: p.token }), 404, "SVC0002");
  });

  it("HLF-SD-006 a secondary with no twin → 404 SVC0002", async () => {
    expectRefused(await api.call("GET", `${S(s)}/twinning`, { token: s.token }), 404, "SVC0002");
    expectRefused(await api.call("PUT", `${S(s)}/twinning/status`, { token: s.token, body: { status: "On" } }), 404, "SVC0002");
  });

  it("HLF-SD-005 an unknown activation code id → 404 SVC0002", async () => {
    for (const id of [randomUUID(), "not-a-code-id"]) expectRefused(await api.call("GET", `${S(s)}/activationCodes/${id}`, { token: s.token }), 404, "SVC0002");
  });

  it("HLF-SD-005 another secondary's activation code id → 404 SVC0002", async () => {
    const other = await party();
    const url = (await requestCode(other)).body.activationCode.resourceURL as string;
    const id = url.slice(url.lastIndexOf("/") + 1);
    expectRefused(await api.call("GET", `${S(s)}/activationCodes/${id}`, { token: s.token }), 404, "SVC0002");
  });

  it("HLF-CM-005 an unknown subscription id → 404 SVC0002 on GET and DELETE", async () => {
    const id = randomUUID();
    expectRefused(await api.call("GET", `${P(p)}/subscriptions/${id}`, { token: p.token }), 404, "SVC0002");
    expectRefused(await api.call("DELETE", `${S(s)}/subscriptions/${id}`, { token: s.token }), 404, "SVC0002");
  });

  it.each(["/twinning/v1/nothing", "/twinning/v2/primary/x/twins", "/nothing", `${V1}/primary/acr%3AAuthorization/twins/x/y/z`])("HLF-CM-002 unknown path %s → 404 SVC0002", async (path) => {
    expectRefused(await api.call("GET", path, { token: p.token }), 404, "SVC0002");
  });
});

describe("roles, correlators and peers", () => {
  it.each(["tertiary", "owner"])("SVC1014 role segment %j on every role route's path → 400 SVC1014", async (role) => {
    const p = await party();
    const base = `${V1}/${role}/${enc(p.address)}`;
    const id = randomUUID();
    for (const [method, rest, body] of [
      ["POST", "activationCodes", {}],
      ["GET", `activationCodes/${id}`],
      ["GET", "twinning"],
      ["DELETE", "twinning"],
      ["PUT", "twinning/status", { status: "Off" }],
      ["POST", "twinning/primaryServicesToken", {}],
      ["POST", "twins", { activationCode: "123456", operatorId: "001-01" }],
      ["GET", "twins"],
      ["GET", `twins/${id}`],
      ["PATCH", `twins/${id}`, { name: "x" }],
      ["DELETE", `twins/${id}`],
      ["PUT", `twins/${id}/status`, { status: "Off" }],
    ] as const) {
      expectRefused(await api.call(method, `${base}/${rest}`, { token: p.token, ...(body ? { body } : {}) }), 400, "SVC1014");
    }
    // Not a role route's shape: 404.
    expectRefused(await api.call("GET", `${base}/twinning/nothing`, { token: p.token }), 404, "SVC0002");
    expectRefused(await api.call("PATCH", `${base}/twins`, { token: p.token, body: {} }), 404, "SVC0002");
  });

  it.each(["tertiary", "owner"])("SVC1014 role segment %j in subscriptions and notifications → 400 SVC1014", async (role) => {
    const p = await party();
    const base = `${V1}/${role}/${enc(p.address)}`;
    const body = { callbackReference: { notifyURL: "http://127.0.0.1:9/cb" } };
    expectRefused(await api.call("POST", `${base}/subscriptions`, { token: p.token, body }), 400, "SVC1014");
    expectRefused(await api.call("GET", `${base}/subscriptions`, { token: p.token }), 400, "SVC1014");
    expectRefused(await api.call("GET", `${base}/subscriptions/${randomUUID()}`, { token: p.token }), 400, "SVC1014");
    expectRefused(await api.call("GET", `${base}/notifications`, { token: p.token }), 400, "SVC1014");
    expectRefused(await api.call("DELETE", `${base}/subscriptions/${randomUUID()}`, { token: p.token }), 400, "SVC1014");
    // Authentication comes first, as on the routes themselves; a method those routes lack is a 404.
    expectUnauthorized(await api.call("GET", `${base}/subscriptions`));
    // Its address is checked against the token's subject first, as every path address is.
    expectRefused(await api.call("GET", `${V1}/${role}/${enc(newAddress())}/subscriptions`, { token: p.token }), 403, "POL2003");
    expectRefused(await api.call("GET", `${V1}/${role}/not-an-address/subscriptions`, { token: p.token }), 400, "SVC0004");
    expectRefused(await api.call("GET", `${V1}/${role}/acr%3AAuthorization/subscriptions`, { token: p.token }), 400, "SVC1014");
    expectRefused(await api.call("PUT", `${base}/subscriptions`, { token: p.token, body }), 404, "SVC0002");
    expectRefused(await api.call("POST", `${base}/subscriptions/${randomUUID()}`, { token: p.token, body }), 404, "SVC0002");
  });

  it("HLF-PD-001 the same clientCorrelator with the same activation returns the first twin; with a different request → 409 SVC0005", async () => {
    const [p, s] = [await party(), await party()];
    const code = (await requestCode(s)).body.activationCode.code as string;
    const first = await redeem(p, code, api, { clientCorrelator: "act-1", name: "car" });
    expect(first.status).toBe(201);
    const again = await redeem(p, code, api, { clientCorrelator: "act-1", name: "car" });
    expect(again.status, JSON.stringify(again.body)).toBe(201);
    expect(again.body.twin.twinId).toBe(first.body.twin.twinId);
    expectRefused(await redeem(p, code, api, { clientCorrelator: "act-1", name: "boat" }), 409, "SVC0005");
    const list = await api.call("GET", `${P(p)}/twins`, { token: p.token });
    expect(list.body.twinList.twin.map((x: any) => x.twinId)).toEqual([first.body.twin.twinId]);
  });

  it("HLF-SD-001 the same clientCorrelator on a code request returns the first code, not a second one", async () => {
    const s = await party();
    const first = await requestCode(s, api, { clientCorrelator: "code-1" });
    const again = await requestCode(s, api, { clientCorrelator: "code-1" });
    expect(first.status).toBe(201);
    expect(again.status).toBe(201);
    expect(again.body.activationCode.code).toBe(first.body.activationCode.code);
    expect(again.body.activationCode.resourceURL).toBe(first.body.activationCode.resourceURL);
    const other = await requestCode(s, api, { clientCorrelator: "code-2" });
    expect(other.body.activationCode.resourceURL).not.toBe(first.body.activationCode.resourceURL);
  });

  it("HLF-CM-005 the same clientCorrelator on a subscription: same request → first subscription; different → 409 SVC0005", async () => {
    const p = await party();
    const sub = (notifyURL: string) => api.call("POST", `${P(p)}/subscriptions`, { token: p.token, body: { callbackReference: { notifyURL }, clientCorrelator: "sub-1" } });
    const first = await sub("http://127.0.0.1:9/a");
    expect(first.status).toBe(201);
    const again = await sub("http://127.0.0.1:9/a");
    expect(again.body.subscription.resourceURL).toBe(first.body.subscription.resourceURL);
    expectRefused(await sub("http://127.0.0.1:9/b"), 409, "SVC0005");
    const list = await api.call("GET", `${P(p)}/subscriptions`, { token: p.token });
    expect(list.body.subscriptionList.subscription).toHaveLength(1);
  });

  it("HLF-TE-006 a primaryOperatorId (or activation operatorId) of an operator that is not a peer → 503 SVC3002", async () => {
    const [p, s] = [await party(), await party()];
    expectRefused(await requestCode(s, api, { primaryOperatorId: "999-99" }), 503, "SVC3002");
    expectRefused(await redeem(p, "123456", api, { operatorId: "999-99" }), 503, "SVC3002");
    expect((await requestCode(s, api, { primaryOperatorId: "001-01" })).status).toBe(201);
  });
});
