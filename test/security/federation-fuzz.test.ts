import { generateKeyPairSync, randomUUID, sign as cryptoSign, type KeyObject } from "node:crypto";
import { readFileSync } from "node:fs";
import { connect as tlsConnect } from "node:tls";
import fc from "fast-check";
import { getPath } from "hono/utils/url";
import { compactVerify, importJWK, type JWK } from "jose";
import { Agent } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createFederationCa, issueNodeCertificate, type PemPair } from "../../certs/federation-pki.ts";
import { TOKEN_EXCHANGE_GRANT } from "../../node/service/twin-service.ts";
import { importSigningKey, type SigningKey } from "../../peers/message-codec.ts";
import { Federation, type FederatedOperator } from "../helpers/federation-fixture.ts";
import { enc } from "../helpers/test-node.ts";

/**
 * Fuzzing the federation listener (issue 6) with fast-check: a legitimate peer (its mTLS
 * certificate and signing key) sends hostile bodies, truncated and garbled JWS, hostile JWS
 * headers, and validly signed messages with hostile claims and hostile payloads (the case that
 * gets past authentication into validation); hostile paths and query strings; requests without
 * a certificate, with one of another CA, or of an operator that is no peer; malformed raw HTTP.
 * Whatever comes in, the node answers in time, never with a 5xx, with DESIGN's OMA error body
 * (signed by the node once the caller is known), and stays up.
 * Runs: FUZZ_RUNS (default 100 per property), seed FUZZ_SEED.
 */
const RUNS = Number(process.env.FUZZ_RUNS ?? 100);
const SEED = Number(process.env.FUZZ_SEED ?? 20261124);
/** Per property: generous, and growing with FUZZ_RUNS. */
const TIMEOUT = 60_000 + RUNS * 1_000;
const runs = (n = RUNS) => ({ numRuns: Math.max(1, Math.round(n)), seed: SEED });
const BASE = "/federation/v1";
const MAX_BODY = 262_144; // federation.maxBodyBytes default
const TYP = "twinning-fed+jwt";

const fed = new Federation();
let A: FederatedOperator; // the node under fuzz
let B: FederatedOperator; // the legitimate peer whose certificate and key the fuzzer uses
let fedUrl = "";
let bKey: SigningKey;
let aPublic: Awaited<ReturnType<typeof importJWK>>;
const attacker = generateKeyPairSync("ec", { namedCurve: "P-256" });
let legit: Agent;
let anonymous: Agent;
let rogue: Agent;
let stranger: Agent;
let rogueTls: PemPair;
let strangerTls: PemPair;
/** Twin with the primary at B and the secondary at A (B may toggle or deactivate it). */
let twinFromB = "";
/** Twin with the primary at A and the secondary at B (for token exchange; never touched otherwise). */
let twinToA = "";
let secondaryAtB = "";
/** A secondary at A with a pending code that A issued. */
let secondaryAtA = "";
let pendingCode = "";
let n = 0;
const addr = (op: string) => `tel:+1${op.replace("-", "")}8${String(++n).padStart(4, "0")}`;

function agentFor(tls: PemPair | undefined): Agent {
  return new Agent({ connect: { ca: fed.ca!.certPem, ...(tls ? { cert: tls.certPem, key: tls.keyPem } : {}), rejectUnauthorized: true }, headersTimeout: 8_000, bodyTimeout: 8_000 });
}

beforeAll(async () => {
  await fed.start(["001-01", "002-01"], (op) => (op === "001-01" ? { limits: { requestTimeoutMs: 2_000 } } : {}));
  [A, B] = [fed.get("001-01"), fed.get("002-01")];
  fedUrl = A.t.node.federationUrl!;
  bKey = await importSigningKey(JSON.parse(readFileSync(B.signingKeyFile, "utf8")) as JWK);
  aPublic = await importJWK(A.publicJwks.keys[0]!, "ES256");
  rogueTls = await issueNodeCertificate({ ca: await createFederationCa({ name: "Rogue CA" }), operatorId: "002-01" });
  strangerTls = await issueNodeCertificate({ ca: fed.ca!, operatorId: "009-09" });
  [legit, anonymous, rogue, stranger] = [agentFor(B.tls), agentFor(undefined), agentFor(rogueTls), agentFor(strangerTls)];

  // Real state, so that validly signed messages reach real rows.
  const [sA, pB] = [await A.party(addr("001-01")), await B.party(addr("002-01"))];
  const codeA = await A.api.call("POST", `/twinning/v1/secondary/${enc(sA.address)}/activationCodes`, { token: sA.token, body: {} });
  const t1 = await B.api.call("POST", `/twinning/v1/primary/${enc(pB.address)}/twins`, { token: pB.token, body: { activationCode: codeA.body.activationCode.code, operatorId: "001-01", name: "watch" } });
  expect(t1.status).toBe(201);
  twinFromB = t1.body.twin.twinId;
  const [pA, sB] = [await A.party(addr("001-01")), await B.party(addr("002-01"))];
  const codeB = await B.api.call("POST", `/twinning/v1/secondary/${enc(sB.address)}/activationCodes`, { token: sB.token, body: {} });
  const t2 = await A.api.call("POST", `/twinning/v1/primary/${enc(pA.address)}/twins`, { token: pA.token, body: { activationCode: codeB.body.activationCode.code, operatorId: "002-01", name: "car" } });
  expect(t2.status).toBe(201);
  twinToA = t2.body.twin.twinId;
  secondaryAtB = sB.address;
  const s2 = await A.party(addr("001-01"));
  secondaryAtA = s2.address;
  pendingCode = (await A.api.call("POST", `/twinning/v1/secondary/${enc(s2.address)}/activationCodes`, { token: s2.token, body: {} })).body.activationCode.code;
}, 60_000);

afterAll(async () => {
  await Promise.all([legit, anonymous, rogue, stranger].filter(Boolean).map((a) => a.close()));
  await fed.stop();
});

// ---------------------------------------------------------------------------------------------
// Building requests

const b64 = (s: string | Buffer) => Buffer.from(s).toString("base64url");

/** A compact JWS over exactly these header and payload texts (ES256, node:crypto). */
function jwsOf(header: unknown, payload: string, key: KeyObject = bKey.key): string {
  const input = `${b64(typeof header === "string" ? header : JSON.stringify(header))}.${b64(payload)}`;
  return `${input}.${cryptoSign("sha256", Buffer.from(input), { key, dsaEncoding: "ieee-p1363" }).toString("base64url")}`;
}
const goodHeader = () => ({ alg: "ES256", kid: bKey.kid, typ: TYP });

// @hono/node-server builds the request URL from the raw target (normalising it with the URL
// parser only when it has to), and hono decodes the path: the node signs and checks `htu`
// against that path, so the fuzzer computes it the same way to get past authentication.
const RAW_OK = /^\/[!#$&-;=?-[\]_a-z~]*$/;
const DOT_SEGMENT = /\/\.\.?(?:[/?#]|$)/;
function seenPath(raw: string): string {
  const url = RAW_OK.test(raw) && !DOT_SEGMENT.test(raw) ? `${fedUrl}${raw}` : new URL(`${fedUrl}${raw}`).href;
  return getPath({ url } as Request);
}

function servedPath(raw: string): string {
  try {
    return seenPath(raw);
  } catch {
    return raw.split(/[?#]/)[0]!;
  }
}

/** Deeply nested JSON is spliced into the payload text (JSON.stringify would overflow the stack building it). */
const deep = (kind: "a" | "o", depth: number) => `@@DEEP:${kind}:${depth}@@`;
const expandDeep = (text: string) =>
  text.replace(/"@@DEEP:([ao]):(\d+)@@"/g, (_, kind: string, d: string) => (kind === "a" ? "[".repeat(Number(d)) + "]".repeat(Number(d)) : '{"a":'.repeat(Number(d)) + "1" + "}".repeat(Number(d))));

function claimsFor(method: string, path: string, body: unknown, over: Record<string, unknown> = {}): Record<string, unknown> {
  const now = Math.floor(Date.now() / 1000);
  return { iss: "002-01", aud: "001-01", iat: now, exp: now + 60, jti: randomUUID(), htm: method, htu: `${fedUrl}${seenPath(path)}`, msgId: randomUUID(), body, ...over };
}
const signedMessage = (method: string, path: string, body: unknown, over: Record<string, unknown> = {}) => jwsOf(goodHeader(), expandDeep(JSON.stringify(claimsFor(method, path, body, over))));

interface Answer {
  readonly method: string;
  readonly path: string;
  readonly status: number;
  readonly type: string;
  readonly text: string;
}

async function send(agent: Agent, method: string, path: string, body?: string, headers: Record<string, string> = { "content-type": "application/jose" }): Promise<Answer> {
  const res = await agent.request({
    origin: fedUrl,
    path,
    method: method as "POST",
    headers,
    body: method === "GET" || method === "HEAD" ? null : (body ?? null),
    headersTimeout: 8_000,
    bodyTimeout: 8_000,
  });
  const text = await res.body.text();
  return { method, path, status: res.statusCode, type: String(res.headers["content-type"] ?? ""), text };
}

// ---------------------------------------------------------------------------------------------
// What every answer must look like

const LEAK = /\n\s+at .+:\d+:\d+|TypeError|ReferenceError|RangeError|SyntaxError|SqliteError|ZodError|call stack|node_modules/;
/** DESIGN "Errors": the statuses each messageId may come with (SVC0001/SVC3002 never here: no 5xx). */
const STATUS_OF: Record<string, readonly number[]> = {
  SVC0002: [400, 404, 408, 413, 431],
  SVC0004: [400],
  SVC0005: [409],
  SVC1014: [400],
  SVC2003: [401],
  SVC3001: [400],
  POL0001: [403],
  POL1037: [403],
  POL1038: [403],
  POL2001: [403],
  POL2003: [403],
  POL3001: [409],
  POL3003: [403],
  POL3004: [429],
};

interface OmaException {
  readonly messageId: string;
  readonly text: string;
  readonly variables: string[];
}

/** DESIGN's error body, exactly: one exception, messageId/text/variables, a status the table allows. */
function oma(body: any, status: number, at: string): OmaException {
  expect(body !== null && typeof body === "object" && !Array.isArray(body), at).toBe(true);
  expect(Object.keys(body), at).toEqual(["requestError"]);
  const kinds = Object.keys(body.requestError ?? {});
  expect(kinds.length === 1 && (kinds[0] === "serviceException" || kinds[0] === "policyException"), at).toBe(true);
  const ex = body.requestError[kinds[0]!] as OmaException;
  expect(ex.messageId, at).toMatch(kinds[0] === "serviceException" ? /^SVC\d{4}$/ : /^POL\d{4}$/);
  expect(typeof ex.text === "string" && ex.text.length > 0, at).toBe(true);
  expect(Array.isArray(ex.variables) && ex.variables.every((v) => typeof v === "string"), at).toBe(true);
  expect(STATUS_OF[ex.messageId] ?? [], at).toContain(status);
  return ex;
}

interface Checked {
  readonly status: number;
  readonly body: any;
  readonly claims: any;
  readonly ex: OmaException | undefined;
}

/**
 * Never a 5xx nor a leaked stack; 2xx answers under /federation/v1 are signed by A for B;
 * errors carry the OMA body (signed by A once the caller is known, plain JSON before).
 */
async function check(r: Answer, where = ""): Promise<Checked> {
  const at = `${where} ${r.method} ${r.path.slice(0, 200)} → ${r.status} ${r.type} ${r.text.slice(0, 300)}`;
  expect(r.status, at).toBeLessThan(500);
  expect(r.status, at).toBeGreaterThanOrEqual(200);
  if (r.method === "HEAD") return { status: r.status, body: undefined, claims: undefined, ex: undefined };
  let body: any;
  let claims: any;
  if (r.type.startsWith("application/jose")) {
    const { payload } = await compactVerify(r.text, aPublic);
    claims = JSON.parse(new TextDecoder().decode(payload));
    expect([claims.iss, claims.aud], at).toEqual(["001-01", "002-01"]);
    body = claims.body;
  } else if (r.type.startsWith("application/json")) {
    body = JSON.parse(r.text);
    if (r.status < 300) expect(servedPath(r.path), `unsigned success: ${at}`).toBe(`${BASE}/jwks.json`);
  } else {
    throw new Error(`answer is neither signed nor JSON: ${at}`);
  }
  expect(JSON.stringify(body) ?? "", at).not.toMatch(LEAK);
  const ex = r.status >= 400 ? oma(body, r.status, at) : undefined;
  return { status: r.status, body, claims, ex };
}

const FED_REJECTED = "Signed federation message rejected";
const isFedRejection = (c: Checked) => c.ex?.messageId === "SVC2003" && c.ex.text.startsWith(FED_REJECTED);
function expectFedRejection(c: Checked, at: string): void {
  expect([c.status, c.ex?.messageId, c.ex?.text.startsWith(FED_REJECTED)], at).toEqual([401, "SVC2003", true]);
}

async function expectAlive(): Promise<void> {
  expect((await fetch(`${A.t.url}/healthz`, { signal: AbortSignal.timeout(5_000) })).status).toBe(200);
  const op = await check(await send(legit, "GET", `${BASE}/operator`), "health");
  expect([op.status, op.body.operatorId]).toEqual([200, "001-01"]);
}

// ---------------------------------------------------------------------------------------------
// Arbitraries

const HOSTILE = [
  "../../etc/passwd",
  "..%2f..%2fetc%2fpasswd",
  "%2e%2e%2f",
  "....//....//",
  "' OR 1=1 --",
  "'; DROP TABLE twins; --",
  "tel:+1' OR '1'='1",
  "tel:+15550001\u0000",
  "tel:+1%00",
  "tel:+15550001\n",
  " tel:+15550001",
  "tel:+１５５５０００１",
  "tel:+0000",
  "TEL:+15550001",
  "acr:Authorization",
  "\u0000",
  "%00",
  "\u202e\u0041",
  "\ud800",
  "😀",
  "a".repeat(5_000),
  "9".repeat(5_000),
  "__proto__",
  "constructor",
  "null",
  "{}",
  "${7*7}",
  "<script>alert(1)</script>",
  "001-01",
  "002-01 ",
];
const nasty: fc.Arbitrary<string> = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.string({ maxLength: 40, unit: "binary" }),
  fc.string({ maxLength: 20, unit: fc.constantFrom("\u0000", "\u001f", "\u007f", "\u202e", "\ufeff", "\ud800", '"', "\\", "'", "%", "/", ".", ":", "+") }),
  fc.constantFrom(...HOSTILE),
);
const wrongTypeThan = (kind: "string" | "number" | "object" | "array"): fc.Arbitrary<unknown> =>
  fc.oneof(
    fc.constant(null),
    fc.boolean(),
    ...(kind === "number" ? [fc.constantFrom("1", "On", "")] : [fc.integer(), fc.double({ noNaN: true, noDefaultInfinity: true })]),
    ...(kind === "array" ? [] : [fc.array(fc.jsonValue({ maxDepth: 1 }), { maxLength: 3 })]),
    ...(kind === "object" ? [] : [fc.dictionary(fc.string({ maxLength: 6 }), fc.jsonValue({ maxDepth: 1 }), { maxKeys: 3 })]),
    ...(kind === "string" ? [] : [nasty]),
    fc.constantFrom(deep("a", 20_000), deep("o", 3_000)),
  );

/** A field: a valid value, a value of the wrong type (surely invalid), a hostile value of the right type (maybe), or missing. */
interface Field {
  readonly v: unknown;
  readonly bad: boolean | "maybe";
}
const MISSING = Symbol("missing");
function field(valid: fc.Arbitrary<unknown>, kind: "string" | "number" | "object" | "array", required: boolean, hostile: fc.Arbitrary<unknown> = nasty): fc.Arbitrary<Field> {
  return fc.oneof(
    { weight: 6, arbitrary: valid.map((v) => ({ v, bad: false as const })) },
    { weight: 1, arbitrary: wrongTypeThan(kind).map((v) => ({ v, bad: true as const })) },
    { weight: 1, arbitrary: hostile.map((v) => ({ v, bad: "maybe" as const })) },
    { weight: 1, arbitrary: fc.constant({ v: MISSING, bad: required }) },
  );
}
/** Extra members (allowed and ignored), some with prototype-ish names. */
const extras = fc.option(fc.dictionary(fc.oneof(fc.string({ maxLength: 8 }), fc.constantFrom("__proto__", "constructor", "prototype", "$where")), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 4 }), { nil: {} });

function objectOf(fields: Record<string, Field>, extra: Record<string, unknown> = {}): { value: Record<string, unknown>; bad: boolean; maybe: boolean } {
  const value: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(extra)) if (!(k in fields)) Object.defineProperty(value, k, { value: v, enumerable: true, writable: true, configurable: true });
  for (const [k, f] of Object.entries(fields)) if (f.v !== MISSING) value[k] = f.v;
  const all = Object.values(fields);
  return { value, bad: all.some((f) => f.bad === true), maybe: all.some((f) => f.bad === "maybe") };
}

const addressOfB = fc.integer({ min: 0, max: 9_999 }).map((i) => `tel:+1200201${String(i).padStart(4, "0")}`);
const operatorIdLike = fc.constantFrom("003-01", "001-01", "999-999", "1-1", "002-01\n");
/** encodeURIComponent, with lone surrogates (which it refuses) replaced. */
const encodeSegment = (s: string) => encodeURIComponent(s.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, "\ufffd"));
const twinRef = () => fc.oneof({ weight: 3, arbitrary: fc.constant(twinFromB) }, { weight: 3, arbitrary: fc.uuid({ version: 4 }) }, { weight: 2, arbitrary: nasty.map(encodeSegment) });

/** The write routes with a valid body for each; the `{t}` slot takes a twin id. */
const WRITE_ROUTES = [
  ["POST", `${BASE}/activationCodes`],
  ["POST", `${BASE}/activations`],
  ["PUT", `${BASE}/twins/{t}/status`],
  ["DELETE", `${BASE}/twins/{t}`],
  ["POST", `${BASE}/token`],
  ["POST", `${BASE}/batch`],
] as const;
const READ_ROUTES = [
  ["GET", `${BASE}/operator`],
  ["GET", `${BASE}/jwks.json`],
] as const;
function validBodyFor(path: string): unknown {
  if (path.endsWith("/activationCodes")) return { secondaryAddress: `tel:+12002019${String(++n).padStart(4, "0")}`, secondaryOperatorId: "002-01" };
  if (path.endsWith("/status")) return { status: "On", version: 1, changedBy: "primary" };
  return {};
}
const CONTENT_TYPES = [
  "application/jose",
  "application/json",
  "text/plain",
  "",
  "application/x-www-form-urlencoded",
  "multipart/form-data; boundary=x",
  "application/jose; charset=utf-16",
  "application/jose, application/json",
  "application/jwt",
  "*/*",
  "a".repeat(2_000),
];
const contentType = fc.oneof({ weight: 3, arbitrary: fc.constant("application/jose") }, { weight: 2, arbitrary: fc.constantFrom(...CONTENT_TYPES) });
const headersFor = (type: string): Record<string, string> => (type === "" ? {} : { "content-type": type });

// ---------------------------------------------------------------------------------------------

describe("fuzzing the federation API (issue 6)", () => {
  it("HLF-CM-006 a known peer's hostile bodies (non-JWS, truncated or garbled JWS, any content type) are refused with 401 SVC2003, never a 5xx", async () => {
    /** Each mutation of a valid JWS for the route; `reject` says the node must refuse it. */
    const mutation = fc.oneof(
      nasty.map((s) => ({ label: "string", reject: true, make: (_v: string) => s })),
      fc.jsonValue({ maxDepth: 4 }).map((j) => ({ label: "json", reject: true, make: (_v: string) => JSON.stringify(j) })),
      fc.nat().map((i) => ({ label: `truncated@${i}`, reject: true, make: (v: string) => v.slice(0, i % v.length) })),
      fc.tuple(fc.nat(), fc.constantFrom(".", "-", "_", "A", "a", "0", "=", "\u0000", " ", "é")).map(([i, ch]) => ({
        label: `garbled@${i}:${JSON.stringify(ch)}`,
        reject: true,
        // Header and payload only: they are the signing input byte for byte (in the signature
        // segment some characters are equivalent encodings of the same bits).
        make: (v: string) => {
          const at = i % v.lastIndexOf(".");
          return v.slice(0, at) + (v[at] === ch ? (ch === "A" ? "B" : "A") : ch) + v.slice(at + 1);
        },
      })),
      fc.constantFrom("", ".", "..", "a.b", "a.b.c", "a.b.c.d", "e30.e30.", "e30.e30.AAAA", "bnVsbA.e30.AA", "W10.W10.AA", "NQ.NQ.NQ", "IngI.e30.AA", "eyJhbGciOiJub25lIn0.e30.").map((s) => ({ label: s, reject: true, make: (_v: string) => s })),
      fc.constantFrom(".x", ".", "..x").map((s) => ({ label: `suffix ${s}`, reject: true, make: (v: string) => v + s })),
      fc.constant({ label: "JWS JSON serialization", reject: true, make: (v: string) => JSON.stringify(Object.fromEntries(["protected", "payload", "signature"].map((k, i) => [k, v.split(".")[i]]))) }),
      fc.constant({ label: "huge", reject: true, make: (_v: string) => "A".repeat(MAX_BODY + 10) }),
      fc.constant({ label: "valid (control)", reject: false, make: (v: string) => v }),
    );
    await fc.assert(
      fc.asyncProperty(
        fc.oneof({ weight: 5, arbitrary: fc.constantFrom(...WRITE_ROUTES) }, { weight: 1, arbitrary: fc.tuple(fc.constantFrom("PATCH", "OPTIONS", "POST", "DELETE"), fc.constantFrom(...WRITE_ROUTES, ...READ_ROUTES).map((r) => r[1])) }),
        twinRef(),
        mutation,
        contentType,
        async ([method, template], ref, m, type) => {
          const path = template.replace("{t}", ref);
          const body = m.make(signedMessage(method, path, validBodyFor(path)));
          const r = await check(await send(legit, method, path, body, headersFor(type)), m.label);
          if (Buffer.byteLength(body) > MAX_BODY) expect([r.status, r.ex?.messageId]).toEqual([413, "SVC0002"]);
          else if (m.reject) expectFedRejection(r, m.label);
          else expect(isFedRejection(r), m.label).toBe(false);
        },
      ),
      runs(),
    );
    await expectAlive();
  }, TIMEOUT);

  it("HLF-CM-006 JWS headers: only {alg: ES256|EdDSA, kid of the peer, typ} passes; alg none, unknown or huge kid, wrong typ, crit, b64, embedded keys are refused", async () => {
    const choice = <T,>(ok: fc.Arbitrary<T>, ...bad: fc.Arbitrary<unknown>[]) =>
      fc.oneof({ weight: 4, arbitrary: ok.map((v) => ({ v: v as unknown, bad: false })) }, ...bad.map((b) => ({ weight: 1, arbitrary: b.map((v) => ({ v, bad: true })) })));
    const header = fc.record({
      alg: choice(fc.constant("ES256"), fc.constantFrom("none", "None", "HS256", "RS256", "ES384", "ES512", "es256", "EdDSA", "PS256", ""), wrongTypeThan("string"), fc.constant(MISSING)),
      kid: choice(
        fc.constant(bKey.kid),
        nasty.filter((s) => s !== bKey.kid),
        fc.constantFrom("k".repeat(20_000), `${bKey.kid} `, `${bKey.kid}\u0000`, bKey.kid.toUpperCase() === bKey.kid ? "x" : bKey.kid.toUpperCase()),
        wrongTypeThan("string"),
        fc.constant(MISSING),
      ),
      typ: choice(fc.constant(TYP), fc.constantFrom("JWT", "at+jwt", "TWINNING-FED+JWT", "application/twinning-fed+jwt", `${TYP} `, ""), wrongTypeThan("string"), fc.constant(MISSING)),
      crit: choice(fc.constant(MISSING), fc.constantFrom(["b64"], ["exp"], [], "b64", null, ["crit"])),
      b64: choice(fc.constant(MISSING), fc.constantFrom(false, true, "false")),
      embedded: choice(fc.constant(false), fc.constant(true)),
    });
    const ignoredExtras = fc.option(fc.constantFrom({ jku: "https://evil.example/jwks.json" }, { x5u: "https://evil.example/cert.pem" }, { cty: "JWT" }, { zip: "DEF" }, { "x-anything": [1, { a: null }] }), { nil: {} });
    await fc.assert(
      fc.asyncProperty(header, ignoredExtras, fc.constantFrom("object", "null", "array", "number", "string"), async (h, extra, shape) => {
        const path = `${BASE}/activationCodes`;
        const payload = JSON.stringify(claimsFor("POST", path, validBodyFor(path)));
        const fields = Object.fromEntries(Object.entries(h).filter(([k, f]) => k !== "embedded" && f.v !== MISSING).map(([k, f]) => [k, f.v]));
        // An attacker's key named in the header itself (jwk) must not be trusted.
        const embedded = h.embedded.v === true;
        const jwk = embedded ? { jwk: attacker.publicKey.export({ format: "jwk" }) } : {};
        const hdr = shape === "object" ? { ...extra, ...fields, ...jwk } : { null: null, array: [fields], number: 5, string: "ES256" }[shape];
        const rejectByHeader = Object.values(h).some((f) => f.bad) || shape !== "object";
        const body = jwsOf(expandDeep(JSON.stringify(hdr)), payload, embedded ? attacker.privateKey : bKey.key);
        const label = `${shape} ${JSON.stringify(hdr).slice(0, 300)}`;
        const r = await check(await send(legit, "POST", path, body), label);
        if (rejectByHeader) expectFedRejection(r, label);
        else expect(r.status, label).toBe(201);
      }),
      runs(),
    );
    await expectAlive();
  }, TIMEOUT);

  it("HLF-CM-006 validly signed messages with hostile claims (iss, aud, iat/exp, jti, htm, htu, msgId of any type or shape) are refused with 401 SVC2003, the good ones pass", async () => {
    const now = () => Math.floor(Date.now() / 1000);
    const claim = <T,>(ok: fc.Arbitrary<T>, ...bad: fc.Arbitrary<unknown>[]) =>
      fc.oneof({ weight: 5, arbitrary: ok.map((v) => ({ v: v as unknown, bad: false })) }, ...bad.map((b) => ({ weight: 1, arbitrary: b.map((v) => ({ v, bad: true })) })), { weight: 1, arbitrary: fc.constant({ v: MISSING as unknown, bad: true }) });
    // [iat, exp] relative to now; 30 s skew, 60 s lifetime.
    const times = fc.oneof(
      { weight: 5, arbitrary: fc.constantFrom([0, 60], [-25, 5], [25, 85], [0, 1]).map((t) => ({ t, bad: false })) },
      { weight: 1, arbitrary: fc.constantFrom([-200, -140], [120, 180], [0, 3_600], [0, 0], [10, 5], [-1e9, 1e9], [1e18, 1e18 + 30]).map((t) => ({ t, bad: true })) },
      { weight: 1, arbitrary: fc.tuple(wrongTypeThan("number"), wrongTypeThan("number")).map((t) => ({ t, bad: true })) },
      { weight: 1, arbitrary: fc.constantFrom("1e400", "-1e400").map((lit) => ({ t: [lit, lit], bad: true })) },
    );
    const hostileString = (not: string) => nasty.filter((s) => s !== not);
    const claims = fc.record({
      iss: claim(fc.constant("002-01"), hostileString("002-01"), fc.constantFrom("001-01", "003-01", "urn:twinning:operator:002-01", "002-01\u0000"), wrongTypeThan("string")),
      aud: claim(fc.constant("001-01"), hostileString("001-01"), fc.constantFrom("002-01", "urn:twinning:operator:001-01", ["001-01"]), wrongTypeThan("string")),
      jti: claim(nasty, wrongTypeThan("string")),
      msgId: claim(fc.oneof(fc.uuid(), nasty, fc.constant("m".repeat(50_000))), wrongTypeThan("string")),
      htm: claim(fc.constant("=method"), fc.constantFrom("GET", "post", "PATCH", "", "POST "), wrongTypeThan("string")),
      htu: claim(fc.constant("=htu"), fc.constantFrom("/", "http", "slash", "query", "other-port", "path"), wrongTypeThan("string")),
    });
    const SHAPES = { http: (u: string) => u.replace("https:", "http:"), slash: (u: string) => `${u}/`, query: (u: string) => `${u}?x=1`, "other-port": (u: string) => u.replace(/:\d+/, ":1"), path: (u: string) => u.replace(BASE, "/federation/v2"), "/": () => "/" } as Record<string, (u: string) => string>;
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...WRITE_ROUTES), twinRef(), claims, times, extras, fc.constantFrom("object", "object", "object", "object", "array", "null", "string", "number"), async ([method, template], ref, c, time, extra, shape) => {
        const path = template.replace("{t}", ref);
        const base = claimsFor(method, path, validBodyFor(path));
        const fields: Record<string, Field> = {};
        for (const [k, f] of Object.entries(c)) {
          let v = f.v;
          if (v === "=method") v = method;
          else if (v === "=htu") v = base.htu;
          else if (k === "htu" && typeof v === "string" && SHAPES[v]) v = SHAPES[v]!(String(base.htu));
          else if (k === "jti" && !f.bad) v = `${String(v)}#${randomUUID()}`; // fresh, so never a replay
          fields[k] = { v, bad: f.bad };
        }
        const t0 = now();
        const [iat, exp] = time.t.map((x) => (typeof x === "number" ? t0 + x : x));
        fields.iat = { v: iat, bad: time.bad };
        fields.exp = { v: exp, bad: time.bad };
        fields.body = { v: base.body, bad: false };
        const o = objectOf(fields, extra);
        let text = JSON.stringify(shape === "object" ? o.value : { array: [o.value], null: null, string: "claims", number: 42 }[shape]);
        if (typeof iat === "string") text = text.replace(/"iat":"(-?1e400)"/, '"iat":$1').replace(/"exp":"(-?1e400)"/, '"exp":$1');
        const label = text.slice(0, 400);
        const r = await check(await send(legit, method, path, jwsOf(goodHeader(), expandDeep(text))), label);
        if (o.bad || shape !== "object") expectFedRejection(r, label);
        else {
          expect(isFedRejection(r), label).toBe(false);
          if (r.claims) expect(r.claims.msgId, label).toBe(fields.msgId!.v);
        }
      }),
      runs(),
    );
    await expectAlive();
  }, TIMEOUT);

  it("HLF-IC-003 HLF-IC-004 HLF-IC-005 HLF-IC-007 validly signed messages with hostile payloads (wrong types, missing, SQL, traversal, unicode, huge, deep) get 400 SVC0002 or another documented answer", async () => {
    const str = (valid: fc.Arbitrary<string>, required = true) => field(valid, "string", required);
    const bodies = fc.oneof(
      fc.record({ secondaryAddress: str(fc.oneof(addressOfB, fc.constant(secondaryAtA))), secondaryOperatorId: str(fc.oneof({ weight: 4, arbitrary: fc.constant("002-01") }, { weight: 1, arbitrary: operatorIdLike })) }).map((f) => ({ route: 0, f })),
      fc
        .record({
          twinId: str(fc.oneof(fc.uuid({ version: 4 }), fc.constant(twinFromB))),
          activationCode: str(fc.oneof(fc.constant(pendingCode), fc.stringMatching(/^\d{6}$/)), false),
          secondaryAddress: str(fc.oneof(fc.constant(secondaryAtA), fc.constant(addr("001-01"))), false),
          primaryAddress: str(addressOfB),
          primaryOperatorId: str(fc.oneof({ weight: 4, arbitrary: fc.constant("002-01") }, { weight: 1, arbitrary: operatorIdLike })),
          name: str(fc.oneof(fc.constant("watch"), fc.stringMatching(/^[a-z][a-z0-9-]{0,15}$/))),
          primaryServices: field(fc.record({ endpoints: fc.dictionary(fc.constantFrom("messaging", "nms", "x"), fc.webUrl(), { maxKeys: 2 }) }), "object", false, fc.record({ endpoints: fc.oneof(fc.jsonValue({ maxDepth: 2 }), fc.dictionary(nasty, nasty, { maxKeys: 3 })) })),
        })
        .map((f) => ({ route: 1, f })),
      fc
        .record({
          status: str(fc.constantFrom("On", "Off")),
          version: field(fc.integer({ min: 1, max: 2 ** 31 }), "number", true, fc.constantFrom(0, -1, 1.5, 1e308, 2 ** 53 + 2, Number.MAX_SAFE_INTEGER, -0)),
          changedBy: str(fc.constantFrom("primary", "secondary")),
        })
        .map((f) => ({ route: 2, f })),
      fc.record({ changedBy: str(fc.constantFrom("primary", "secondary"), false) }).map((f) => ({ route: 3, f })),
      fc
        .record({
          grant_type: str(fc.constant(TOKEN_EXCHANGE_GRANT)),
          subject_token: str(fc.oneof(fc.constant("x.y.z"), fc.constant("a".repeat(4_097)))),
          subject_token_type: str(fc.constant("urn:ietf:params:oauth:token-type:jwt")),
        })
        .map((f) => ({ route: 4, f })),
    );
    const notAnObject = fc.oneof(fc.constant(null), fc.constant([]), fc.string({ maxLength: 10 }), fc.integer(), fc.constant(deep("a", 20_000)), fc.constant(deep("o", 3_000)), fc.constant("x".repeat(150_000)));
    await fc.assert(
      fc.asyncProperty(fc.oneof({ weight: 9, arbitrary: bodies }, { weight: 1, arbitrary: fc.tuple(fc.integer({ min: 0, max: 4 }), notAnObject) }), extras, twinRef(), contentType, async (b, extra, ref, type) => {
        const isRecord = !Array.isArray(b);
        const route = isRecord ? b.route : b[0];
        const [method, template] = WRITE_ROUTES[route]!;
        const path = template.replace("{t}", ref);
        const o = isRecord ? objectOf(b.f as Record<string, Field>, extra) : { value: b[1], bad: !(route === 3 && b[1] === deep("o", 3_000)), maybe: false }; // {a:{a:…}} is a valid deactivation body
        const message = signedMessage(method, path, o.value);
        const label = `${method} ${path} ${JSON.stringify(o.value)?.slice(0, 400)}`;
        const r = await check(await send(legit, method, path, message, headersFor(type)), label);
        expect(isFedRejection(r), label).toBe(false);
        const routed = route === 2 ? /^\/federation\/v1\/twins\/[^/]+\/status$/.test(seenPath(path)) : route === 3 ? /^\/federation\/v1\/twins\/[^/]+$/.test(seenPath(path)) : true;
        if (Buffer.byteLength(message) > MAX_BODY) expect([r.status, r.ex?.messageId], label).toEqual([413, "SVC0002"]);
        else if (!routed) expect([r.status, r.ex?.messageId], label).toEqual([404, "SVC0002"]);
        else if (o.bad) {
          // Validation comes first in every handler: a surely invalid field is 400 SVC0002, naming one part.
          expect([r.status, r.ex?.messageId], label).toEqual([400, "SVC0002"]);
          expect(r.ex!.variables.length, label).toBe(1);
        }
      }),
      runs(RUNS * 2),
    );
    await expectAlive();
  }, TIMEOUT);

  it("HLF-IC-005 HLF-IC-007 batch: hostile message lists are refused whole (400 SVC0002); each result of a valid list has its msgId and a documented answer", async () => {
    const message = fc.record({
      method: field(fc.constantFrom("PUT", "DELETE"), "string", true, fc.constantFrom("GET", "put", "POST", "")),
      path: field(
        fc.oneof(fc.uuid({ version: 4 }).map((id) => `/twins/${id}/status`), fc.constant(`/twins/${twinFromB}/status`), fc.uuid({ version: 4 }).map((id) => `/twins/${id}`)),
        "string",
        true,
        fc.oneof(nasty.map((s) => `/twins/${s}`), fc.constantFrom(`/twins/${twinFromB}/../../activations`, `/twins/${twinFromB}/status/`, `/../twins/${twinFromB}`, `/twins/${twinFromB.toUpperCase()}/status`)),
      ),
      msgId: field(fc.oneof(fc.uuid(), fc.string({ minLength: 1, maxLength: 100 })), "string", true, fc.constantFrom("", "m".repeat(101))),
      body: fc.oneof(fc.constant({ v: { status: "Off", version: 2, changedBy: "primary" }, bad: false }), fc.jsonValue({ maxDepth: 3 }).map((v) => ({ v, bad: false })), fc.constantFrom(deep("a", 20_000), deep("o", 2_000)).map((v) => ({ v, bad: false }))),
    });
    const list = fc.oneof(
      { weight: 8, arbitrary: fc.array(message, { minLength: 1, maxLength: 12 }).map((ms) => ({ ms, bad: false })) },
      { weight: 1, arbitrary: fc.constantFrom(0, 201).map((k) => ({ ms: Array.from({ length: k }, () => ({ method: { v: "PUT", bad: false }, path: { v: `/twins/${randomUUID()}/status`, bad: false }, msgId: { v: "m", bad: false }, body: { v: {}, bad: false } })), bad: true })) },
    );
    await fc.assert(
      fc.asyncProperty(list, fc.oneof({ weight: 9, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: wrongTypeThan("array") }), async (l, notArray) => {
        const messages = l.ms.map((m) => objectOf(m as Record<string, Field>));
        const bad = l.bad || notArray !== undefined || messages.some((m) => m.bad);
        const path = `${BASE}/batch`;
        const value = { messages: notArray !== undefined ? notArray : messages.map((m) => m.value) };
        const label = JSON.stringify(value).slice(0, 400);
        const signed = signedMessage("POST", path, value);
        const r = await check(await send(legit, "POST", path, signed), label);
        if (Buffer.byteLength(signed) > MAX_BODY) return void expect([r.status, r.ex?.messageId], label).toEqual([413, "SVC0002"]);
        if (bad) return void expect([r.status, r.ex?.messageId], label).toEqual([400, "SVC0002"]);
        if (messages.some((m) => m.maybe)) {
          if (r.status >= 400) return void expect([r.status, r.ex?.messageId], label).toEqual([400, "SVC0002"]);
        }
        expect(r.status, label).toBe(200);
        const results = r.body.results as { msgId: string; status: number; body: unknown }[];
        expect(results.map((x) => x.msgId), label).toEqual(messages.map((m) => m.value.msgId));
        for (const x of results) {
          expect(x.status, label).toBeLessThan(500);
          if (x.status >= 400) oma(x.body, x.status, label);
        }
      }),
      runs(),
    );
    await expectAlive();
  }, TIMEOUT);

  it("HLF-IC-006 token exchange: subject tokens with hostile claims, algorithms or keys get 401 SVC2003 (or 400 SVC0002), only the peer's valid assertion for its twinned secondary gets a token", async () => {
    const part = <T,>(ok: T, ...bad: fc.Arbitrary<unknown>[]) =>
      fc.oneof({ weight: 6, arbitrary: fc.constant({ v: ok as unknown, bad: false }) }, ...bad.map((b) => ({ weight: 1, arbitrary: b.map((v) => ({ v, bad: true })) })));
    const subject = fc.record({
      iss: part("urn:twinning:operator:002-01", fc.constantFrom("002-01", "urn:twinning:operator:001-01", "urn:twinning:operator:003-01"), wrongTypeThan("string"), fc.constant(MISSING)),
      aud: part("urn:twinning:operator:001-01", fc.constantFrom("001-01", "urn:twinning:operator:002-01", "twinning"), fc.constant(MISSING)),
      sub: part("=secondary", nasty, fc.constant("=primary"), fc.constantFrom(1, null, ["x"]), fc.constant(MISSING)),
      twin_id: part("=twin", fc.uuid(), nasty, fc.constant(twinFromB), wrongTypeThan("string"), fc.constant(MISSING)),
      exp: part("=soon", fc.constantFrom(-100, "x", null, -1e400)),
      nbf: part(MISSING, fc.constant(10_000)),
      alg: part("ES256", fc.constantFrom("none", "HS256", "EdDSA")),
      kid: part(bKey.kid, fc.constantFrom("other", "k".repeat(5_000))),
      key: part("peer", fc.constant("attacker")),
    });
    await fc.assert(
      fc.asyncProperty(fc.oneof({ weight: 8, arbitrary: subject }, { weight: 1, arbitrary: nasty.map((s) => ({ raw: s })) }), async (s) => {
        let token: string;
        let bad: boolean;
        if ("raw" in s) {
          token = s.raw;
          bad = true;
        } else {
          const now = Math.floor(Date.now() / 1000);
          const subs: Record<string, unknown> = { "=secondary": secondaryAtB, "=primary": "tel:+10010180001", "=twin": twinToA, "=soon": now + 60 };
          const claims: Record<string, unknown> = { iat: now };
          for (const k of ["iss", "aud", "sub", "twin_id", "exp", "nbf"] as const) {
            const v = s[k].v;
            if (v === MISSING) continue;
            claims[k] = k === "nbf" ? now + Number(v) : typeof v === "string" && v in subs ? subs[v] : v;
          }
          const header = { alg: s.alg.v, kid: s.kid.v, typ: "JWT" };
          const input = `${b64(JSON.stringify(header))}.${b64(JSON.stringify(claims))}`;
          const sig = s.alg.v === "none" ? "" : cryptoSign("sha256", Buffer.from(input), { key: s.key.v === "attacker" ? attacker.privateKey : bKey.key, dsaEncoding: "ieee-p1363" }).toString("base64url");
          token = `${input}.${sig}`;
          bad = Object.values(s).some((f) => f.bad);
        }
        const path = `${BASE}/token`;
        const value = { grant_type: TOKEN_EXCHANGE_GRANT, subject_token: token, subject_token_type: "urn:ietf:params:oauth:token-type:jwt" };
        const label = token.slice(0, 300);
        const r = await check(await send(legit, "POST", path, signedMessage("POST", path, value)), label);
        if (bad) {
          if (token.length === 0 || token.length > 4096) expect([r.status, r.ex?.messageId], label).toEqual([400, "SVC0002"]);
          else expect([r.status, r.ex?.messageId, isFedRejection(r)], label).toEqual([401, "SVC2003", false]);
        } else {
          expect(r.status, label).toBe(200);
          expect(r.body).toMatchObject({ token_type: "Bearer", scope: "primary-services" });
        }
      }),
      runs(),
    );
    await expectAlive();
  }, TIMEOUT);

  it("HLF-IC-003 any msgId shape is an idempotency key: a retry gets the first answer, a different body under it 409 SVC0005, a replayed jti 401", async () => {
    const msgIds = fc.oneof(fc.uuid(), nasty, fc.constant(""), fc.constant("m".repeat(20_000)), fc.string({ maxLength: 30, unit: "binary" }));
    await fc.assert(
      fc.asyncProperty(msgIds, async (msgId) => {
        const path = `${BASE}/activationCodes`;
        const body = validBodyFor(path);
        const first = signedMessage("POST", path, body, { msgId });
        const a = await check(await send(legit, "POST", path, first));
        // msgId was maybe used before by another run with another body: then 409 throughout.
        expect([201, 409], JSON.stringify(msgId)).toContain(a.status);
        if (a.status === 409) expect(a.ex?.messageId).toBe("SVC0005");
        const replay = await check(await send(legit, "POST", path, first));
        expectFedRejection(replay, "replay");
        expect(replay.ex!.variables).toEqual(["replayed jti"]);
        const retry = await check(await send(legit, "POST", path, signedMessage("POST", path, body, { msgId })));
        expect([retry.status, retry.body]).toEqual([a.status, a.body]);
        if (msgId !== "") expect(retry.claims?.msgId).toBe(msgId);
        const other = await check(await send(legit, "POST", path, signedMessage("POST", path, validBodyFor(path), { msgId })));
        expect([other.status, other.ex?.messageId]).toEqual([409, "SVC0005"]);
      }),
      runs(RUNS / 2),
    );
    await expectAlive();
  }, TIMEOUT);

  it("HLF-IC-001 hostile paths and query strings under /federation/v1 (traversal, encoded slashes, unicode, very long) get a documented answer, never a 5xx", async () => {
    const segment = fc.oneof(
      fc.constantFrom("..", ".", "%2e%2e", "%2E%2E", ".%2e", "%2f", "%2F", "%5c", "%00", "%", "%zz", "%c0%af", "%e2%80%ae", "%ff", "~", ";", "activationCodes;x=1", "activationCodes%00", "ACTIVATIONCODES", "operator", "twins", "status", "jwks.json", "", "%252e%252e", "%3f", "%23", "@", "!", "$", "'"),
      fc.constantFrom(...WRITE_ROUTES, ...READ_ROUTES).map((r) => r[1].slice(BASE.length + 1).replace("{t}", twinFromB)),
      nasty.map(encodeSegment),
      fc.string({ maxLength: 12, unit: fc.constantFrom("a", "/", ".", "%", "2", "e", "f", ":", "é", "\u00ff", "[", "]", "|", "^", "`", "{") }),
      fc.constantFrom(1_000, 9_000, 20_000).map((k) => "a".repeat(k)),
    );
    const query = fc.oneof(
      { weight: 3, arbitrary: fc.constant("") },
      { weight: 2, arbitrary: fc.dictionary(fc.string({ maxLength: 8 }), nasty, { maxKeys: 3 }).map((q) => `?${new URLSearchParams(q as Record<string, string>).toString()}`) },
      { weight: 1, arbitrary: fc.constantFrom("?", "?a=%", "?__proto__[x]=1", "?a=1&a=2", `?${"x=1&".repeat(3_000)}`, "?%00=%00", "?wait=99999", "#frag", "?a=é") },
    );
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom("GET", "POST", "PUT", "DELETE", "HEAD"),
        fc.array(segment, { minLength: 1, maxLength: 4 }),
        query,
        fc.boolean(),
        fc.string({ maxLength: 120, unit: fc.constantFrom("a", " ", "%", "\t", "é", "-", "'", "\\") }),
        async (method, segments, q, validJws, msgIdHeader) => {
          const path = `${BASE}/${segments.join("/")}${q}`;
          let body: string | undefined;
          try {
            body = validJws ? signedMessage(method, path, validBodyFor(path)) : "not a jws";
          } catch {
            body = "not a jws"; // the URL parser refuses this target: the node must still answer
          }
          const headers = { "content-type": "application/jose", "x-twinning-msgid": msgIdHeader };
          let answer: Answer;
          try {
            answer = await send(legit, method, path, body, headers);
          } catch (error) {
            // A request the HTTP parser refuses is answered (400/431, OMA body) and the connection
            // closed at once; undici, still writing the body, may report the close instead of
            // the answer. The same bytes written raw show what the node answered.
            const code = (error as { code?: string }).code;
            if (code !== "UND_ERR_SOCKET" && code !== "ECONNRESET" && code !== "EPIPE") throw error;
            const sent = method === "GET" || method === "HEAD" ? "" : body;
            const head = [`${method} ${path} HTTP/1.1`, `host: 127.0.0.1:${new URL(fedUrl).port}`, ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`), `content-length: ${Buffer.byteLength(sent)}`, "connection: close", "", ""].join("\r\n");
            const raw = await rawExchange(Buffer.concat([Buffer.from(head, "latin1"), Buffer.from(sent)]), B.tls);
            if (raw.status === 0 && path.length > 12_000) return; // beyond maxHeaderBytes: the close may overtake the 431
            expect([400, 431], `${code} on ${path.slice(0, 200)}, raw answer ${raw.status}`).toContain(raw.status);
            answer = { method, path, status: raw.status, type: raw.type, text: raw.body };
          }
          const r = await check(answer, path.slice(0, 100));
          if (r.status >= 400) expect([400, 401, 404, 413, 431], path.slice(0, 200)).toContain(r.status);
        },
      ),
      runs(),
    );
    await expectAlive();
  }, TIMEOUT);

  it("HLF-CM-006 without a client certificate, with one of another CA or of an operator that is no peer: 401 SVC2003 / 403 POL0001, unsigned, whatever the request", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom("none", "rogue", "stranger"),
        fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...WRITE_ROUTES, ...READ_ROUTES) }, { weight: 1, arbitrary: fc.tuple(fc.constantFrom("GET", "POST", "PATCH"), nasty.map((s) => `${BASE}/${encodeSegment(s)}`)) }),
        twinRef(),
        fc.oneof(fc.constant("valid"), nasty, fc.jsonValue().map((j) => JSON.stringify(j))),
        contentType,
        async (who, [method, template], ref, b, type) => {
          const path = template.replace("{t}", ref);
          const body = b === "valid" ? signedMessage(method, path, validBodyFor(path)) : b;
          const agent = { none: anonymous, rogue, stranger }[who];
          const r = await check(await send(agent, method, path, body, headersFor(type)), who);
          expect(r.claims, `${who}: an unknown caller gets no signed answer`).toBeUndefined();
          if (seenPath(path).startsWith(`${BASE}/`)) {
            if (who === "stranger") expect([r.status, r.ex?.messageId, r.ex?.text], path).toEqual([403, "POL0001", "A policy error occurred: operator 009-09 is not a known peer"]);
            else expect([r.status, r.ex?.messageId, r.ex?.variables], path).toEqual([401, "SVC2003", ["client certificate not issued by the federation CA"]]);
          } else {
            expect([401, 403, 404], path).toContain(r.status);
          }
        },
      ),
      runs(),
    );
    await expectAlive();
  }, TIMEOUT);

  it("HLF-CM-001 malformed raw HTTP on the mTLS listener (request lines, control characters in headers, huge headers, bad lengths) is answered with the OMA body, never a 5xx or a hang", async () => {
    const headerValue = fc.string({ maxLength: 60, unit: fc.constantFrom("a", " ", "\t", "\u0000", "\u0001", "\u007f", "\r", "\n", "é", ":", ";", "\u00ff") });
    const request = fc.record({
      line: fc.oneof(
        { weight: 4, arbitrary: fc.constantFrom(...WRITE_ROUTES, ...READ_ROUTES).map(([m, p]) => `${m} ${p.replace("{t}", randomUUID())} HTTP/1.1`) },
        { weight: 2, arbitrary: fc.tuple(fc.constantFrom("GET", "POST", "G\u0000ET", "get", "BREW", "POST ", "", "X".repeat(200)), fc.string({ maxLength: 30, unit: fc.constantFrom("/", "a", " ", "\u0000", "\u007f", "%", "é", "\t", "?", "#", "\\") }), fc.constantFrom("HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/9.9", "", "http/1.1")).map(([m, p, v]) => `${m} ${BASE}/${p} ${v}`) },
      ),
      headers: fc.array(fc.tuple(fc.constantFrom("x-twinning-msgid", "content-type", "x-a", "content-length", "transfer-encoding", "host", "x\u0000y", "", "bad header"), headerValue), { maxLength: 4 }),
      huge: fc.oneof({ weight: 5, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.constant(40_000) }),
      body: fc.string({ maxLength: 100 }),
    });
    await fc.assert(
      fc.asyncProperty(request, async (req) => {
        const lines = [req.line, `host: 127.0.0.1:${new URL(fedUrl).port}`, ...req.headers.map(([k, v]) => `${k}: ${v}`)];
        if (req.huge) lines.push(`x-huge: ${"h".repeat(req.huge)}`);
        if (!req.headers.some(([k]) => k === "content-length" || k === "transfer-encoding")) lines.push(`content-length: ${Buffer.byteLength(req.body)}`);
        const raw = `${lines.join("\r\n")}\r\nconnection: close\r\n\r\n${req.body}`;
        const answer = await rawExchange(raw, B.tls);
        const at = JSON.stringify(raw.slice(0, 300));
        expect(answer.status, `no answer (or a hang) to ${at}`).toBeGreaterThan(0);
        await check({ method: "RAW", path: req.line.split(" ")[1] ?? BASE, status: answer.status, type: answer.type, text: answer.body }, at);
      }),
      runs(RUNS / 2),
    );
    await expectAlive();
  }, TIMEOUT);

  it("HLF-CM-006 regression: a JWS header with crit or b64, or without kid, is refused (was accepted)", async () => {
    const path = `${BASE}/activationCodes`;
    const cases: [Record<string, unknown>, string][] = [
      [{ ...goodHeader(), crit: ["b64"], b64: true }, "unsupported header parameter"],
      [{ ...goodHeader(), crit: ["exp"] }, "unsupported header parameter"],
      [{ ...goodHeader(), b64: false }, "unsupported header parameter"],
      [{ alg: "ES256", typ: TYP }, "missing kid"],
      [{ alg: "ES256", kid: 7, typ: TYP }, "missing kid"],
    ];
    for (const [header, reason] of cases) {
      const r = await check(await send(legit, "POST", path, jwsOf(header, JSON.stringify(claimsFor("POST", path, validBodyFor(path))))), reason);
      expectFedRejection(r, JSON.stringify(header));
      expect(r.ex!.variables).toEqual([reason]);
    }
  });

  it("HLF-CM-006 regression: a resumed TLS session that never presented a certificate is refused as such (Node reports it authorized)", async () => {
    const agent = agentFor(undefined);
    try {
      for (let i = 0; i < 4; i++) {
        // reset: a new connection each time, which resumes the previous TLS session.
        const res = await agent.request({ origin: fedUrl, path: `${BASE}/operator`, method: "GET", reset: true, headersTimeout: 8_000, bodyTimeout: 8_000 });
        const r = await check({ method: "GET", path: `${BASE}/operator`, status: res.statusCode, type: String(res.headers["content-type"] ?? ""), text: await res.body.text() }, `connection ${i}`);
        expect([r.status, r.ex?.variables], `connection ${i}`).toEqual([401, ["client certificate not issued by the federation CA"]]);
      }
    } finally {
      await agent.close();
    }
    // The same on a connection that demonstrably resumed a session (raw TLS, so the test cannot
    // pass without resumption happening).
    const { hostname: host, port } = new URL(fedUrl);
    const ask = (session: Buffer | undefined) =>
      new Promise<{ reused: boolean; session: Buffer | undefined; answer: string }>((resolve, reject) => {
        let latest = session;
        let answer = "";
        let reused = false;
        const socket = tlsConnect({ host, port: Number(port), ca: fed.ca!.certPem, ...(session ? { session } : {}) }, () => {
          reused = socket.isSessionReused();
          socket.write(`GET ${BASE}/operator HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
        });
        socket.on("session", (s: Buffer) => (latest = s));
        socket.on("data", (d) => (answer += String(d)));
        socket.on("error", reject);
        socket.on("close", () => resolve({ reused, session: latest, answer }));
      });
    const first = await ask(undefined);
    const resumed = await ask(first.session);
    expect(resumed.reused).toBe(true);
    expect(resumed.answer).toMatch(/^HTTP\/1\.1 401/);
    expect(resumed.answer).toContain("client certificate not issued by the federation CA");
  });

  it("HLF-CM-001 a malformed Host header on the mTLS listener is answered 400 SVC0002 with the OMA body (node-server's own answer was a bare 400)", async () => {
    for (const host of ["a b", "x/y", "[::1"]) {
      const answer = await rawExchange(`GET ${BASE}/operator HTTP/1.1\r\nhost: ${host}\r\nconnection: close\r\n\r\n`, B.tls);
      expect(answer.status, host).toBe(400);
      expect(JSON.parse(answer.body).requestError.serviceException.messageId, host).toBe("SVC0002");
      await check({ method: "RAW", path: `${BASE}/operator`, status: answer.status, type: answer.type, text: answer.body }, `host ${host}`);
    }
    await expectAlive();
  });

  it("HLF-CM-001 a body that stops short of its Content-Length is answered 408 with the OMA body once the request deadline passes", async () => {
    const path = `${BASE}/activationCodes`;
    const jws = signedMessage("POST", path, validBodyFor(path));
    const raw = `POST ${path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/jose\r\ncontent-length: ${jws.length + 100}\r\n\r\n${jws}`;
    const started = Date.now();
    const answer = await rawExchange(raw, B.tls, 8_000);
    expect(answer.status).toBe(408);
    expect(Date.now() - started).toBeLessThan(6_000);
    await check({ method: "RAW", path, status: answer.status, type: answer.type, text: answer.body }, "stalled body");
    await expectAlive();
  }, 20_000);
});

/** One request written raw over TLS (with the peer's certificate); the parsed answer, or status 0 if none came in time. */
function rawExchange(raw: string | Buffer, tls: PemPair, timeoutMs = 5_000): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve) => {
    const socket = tlsConnect({ host: "127.0.0.1", port: Number(new URL(fedUrl).port), cert: tls.certPem, key: tls.keyPem, ca: fed.ca!.certPem, rejectUnauthorized: false });
    let data = Buffer.alloc(0);
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      const text = data.toString("latin1");
      const end = text.indexOf("\r\n\r\n");
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(text)?.[1] ?? 0);
      const head = end >= 0 ? text.slice(0, end) : text;
      const type = /\r\ncontent-type: *([^\r\n]*)/i.exec(head)?.[1] ?? "";
      let body = end >= 0 ? data.subarray(Buffer.byteLength(text.slice(0, end + 4), "latin1")).toString("utf8") : "";
      if (/\r\ntransfer-encoding: *chunked/i.test(head)) body = dechunk(body);
      resolve({ status, type, body });
    };
    const timer = setTimeout(finish, timeoutMs);
    socket.on("secureConnect", () => socket.write(typeof raw === "string" ? Buffer.from(raw, "utf8") : raw));
    socket.on("data", (chunk: Buffer) => {
      data = Buffer.concat([data, chunk]);
      const text = data.toString("latin1");
      const end = text.indexOf("\r\n\r\n");
      if (end < 0) return;
      const length = /\r\ncontent-length: *(\d+)/i.exec(text.slice(0, end))?.[1];
      if (length !== undefined && data.length >= end + 4 + Number(length)) finish();
      if (/\r\ntransfer-encoding: *chunked/i.test(text.slice(0, end)) && text.endsWith("0\r\n\r\n")) finish();
    });
    socket.on("error", finish);
    socket.on("close", finish);
  });
}

function dechunk(text: string): string {
  let out = "";
  let rest = text;
  for (;;) {
    const eol = rest.indexOf("\r\n");
    if (eol < 0) return out;
    const size = parseInt(rest.slice(0, eol), 16);
    if (!size) return out;
    out += rest.slice(eol + 2, eol + 2 + size);
    rest = rest.slice(eol + 4 + size);
  }
}
