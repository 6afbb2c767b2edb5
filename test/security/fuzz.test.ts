import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Api, enc, messageId, newAddress, startTestNode, type TestNode } from "../helpers/test-node.ts";

/**
 * Fuzzing the device, admin and OAuth endpoints with fast-check: whatever the method, path,
 * headers or body, the node answers within its deadline, never with a 5xx (SVC3002, a peer's
 * failure, is not possible here: no peers), and every error carries the OMA error body (or the
 * RFC 6749 one on /oauth/token). Runs: FUZZ_RUNS (default 150 per property).
 */
const RUNS = Number(process.env.FUZZ_RUNS ?? 150);
let t: TestNode;
let api: Api;
let token = "";
let twinToken = "";
let address = "";
let twinId = "";

beforeAll(async () => {
  t = await startTestNode({ limits: { maxBodyBytes: 8_192, requestTimeoutMs: 2_000 } });
  api = new Api(t.url);
  address = newAddress();
  token = await api.subscriber(t.node.adminToken, address);
  const s = { address: newAddress(), token: "" };
  s.token = await api.subscriber(t.node.adminToken, s.address);
  const twin = await api.twin({ address, token }, s);
  twinToken = twin.primaryTwinToken;
  twinId = twin.twin.twinId;
});
afterAll(async () => t.cleanup());

const nasty = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.string({ maxLength: 40, unit: "binary" }),
  fc.constantFrom("../../etc/passwd", "%2e%2e%2f", "' OR 1=1 --", "\u0000", "tel:+1' ;DROP TABLE twins;--", "%00", "acr:Authorization", "tel%3A%2B1", "😀", "a".repeat(3_000)),
);
const jsonish = fc.oneof(
  fc.jsonValue({ maxDepth: 4 }).map((v) => JSON.stringify(v)),
  fc.string({ maxLength: 200 }),
  fc.constantFrom("{", "[", '{"status":', '{"status":"On"', "null", '{"a":'.repeat(2_000), '"' + "x".repeat(10_000) + '"'),
  fc.record({ status: fc.oneof(fc.constantFrom("On", "Off"), nasty), name: nasty, activationCode: nasty, operatorId: nasty }).map((v) => JSON.stringify(v)),
);
/** Real routes with their methods (most runs), so requests get past authentication to validation. */
const ROUTES: [string, string][] = [
  ["POST", "/twinning/v1/primary/{a}/twins"],
  ["GET", "/twinning/v1/primary/{a}/twins"],
  ["GET", "/twinning/v1/primary/{a}/twins/{t}"],
  ["PATCH", "/twinning/v1/primary/{a}/twins/{t}"],
  ["PUT", "/twinning/v1/primary/{a}/twins/{t}/status"],
  ["POST", "/twinning/v1/secondary/{a}/activationCodes"],
  ["GET", "/twinning/v1/secondary/{a}/activationCodes/{t}"],
  ["GET", "/twinning/v1/secondary/{a}/twinning"],
  ["PUT", "/twinning/v1/secondary/{a}/twinning/status"],
  ["POST", "/twinning/v1/secondary/{a}/twinning/primaryServicesToken"],
  ["POST", "/twinning/v1/{r}/{a}/subscriptions"],
  ["GET", "/twinning/v1/{r}/{a}/subscriptions/{t}"],
  ["PUT", "/admin/v1/subscribers/{a}"],
  ["GET", "/admin/v1/twins"],
  ["POST", "/oauth/token"],
  ["POST", "/oauth/introspect"],
];
const routes = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom(...ROUTES) },
  { weight: 1, arbitrary: fc.tuple(fc.constantFrom("GET", "POST", "PUT", "PATCH", "DELETE"), fc.constantFrom(...ROUTES.map((r) => r[1]))) },
  { weight: 1, arbitrary: fc.tuple(fc.constantFrom("GET", "POST", "DELETE"), nasty.map((x) => `/${encodeURIComponent(x)}`)) },
);

async function send(method: string, path: string, headers: Record<string, string>, body: string | undefined) {
  const res = await fetch(`${t.url}${path}`, {
    method,
    headers,
    ...(body !== undefined && method !== "GET" && method !== "HEAD" ? { body } : {}),
    signal: AbortSignal.timeout(5_000),
  });
  const text = await res.text();
  return { status: res.status, text, type: res.headers.get("content-type") ?? "" };
}

function expectDocumented(r: { status: number; text: string; type: string }, path: string): void {
  expect(r.status, `${path} → ${r.status} ${r.text.slice(0, 200)}`).toBeLessThan(500);
  expect(r.text).not.toMatch(/\n\s+at .+\(.+:\d+:\d+\)|TypeError|ReferenceError|SqliteError/);
  if (r.status >= 400 && r.status !== 431 && r.status !== 408) {
    const body = JSON.parse(r.text);
    const oma = messageId(body);
    if (path.startsWith("/oauth/token")) expect(typeof body.error === "string" || oma !== undefined).toBe(true);
    else expect(oma, `${path} → ${r.status} ${r.text.slice(0, 200)}`).toMatch(/^(SVC|POL)\d{4}$/);
  }
}

describe("fuzzing (issue 6)", () => {
  it("HLF-CM-006 any method, path, address, token and body gets a documented answer, never a 5xx or a stack trace", async () => {
    await fc.assert(
      fc.asyncProperty(
        routes,
        fc.oneof({ weight: 6, arbitrary: fc.constant(address) }, { weight: 1, arbitrary: nasty }, { weight: 1, arbitrary: fc.constant("acr:Authorization") }),
        fc.oneof({ weight: 3, arbitrary: fc.constant(twinId) }, { weight: 1, arbitrary: nasty }),
        fc.constantFrom("primary", "secondary", "tertiary", ""),
        fc.oneof(
          { weight: 6, arbitrary: fc.constant("own") },
          { weight: 2, arbitrary: fc.constantFrom("twin", "admin") },
          { weight: 1, arbitrary: fc.constantFrom("none", "garbage", "truncated") },
        ),
        fc.oneof(
          { weight: 6, arbitrary: fc.constant("application/json") },
          { weight: 1, arbitrary: fc.constantFrom("text/plain", "application/x-www-form-urlencoded", "application/json; charset=utf-8", "") },
        ),
        jsonish,
        async ([method, template], a, ref, role, who, type, body) => {
          const path = template.replace("{a}", enc(a)).replace("{t}", encodeURIComponent(ref)).replace("{r}", role);
          const bearer = { own: token, twin: twinToken, admin: t.node.adminToken, none: "", garbage: "x.y.z", truncated: token.slice(0, -7) }[who];
          const headers: Record<string, string> = { ...(bearer ? { authorization: `Bearer ${bearer}` } : {}), ...(type ? { "content-type": type } : {}) };
          expectDocumented(await send(method, path, headers, body), path);
        },
      ),
      { numRuns: RUNS, seed: Number(process.env.FUZZ_SEED ?? 20261124) },
    );
  }, 120_000);

  it("HLF-CM-006 hostile headers (huge, control characters, odd schemes) are answered, never crash the node", async () => {
    await fc.assert(
      fc.asyncProperty(fc.string({ maxLength: 300 }), fc.constantFrom("Bearer ", "bearer ", "Basic ", "", "Bearer  "), async (value, scheme) => {
        const safe = value.replace(/[^\t\x20-\x7e]/g, "");
        const r = await send("GET", `/twinning/v1/primary/${enc(address)}/twins`, { authorization: `${scheme}${safe}`, "x-request-id": safe.slice(0, 200) }, undefined);
        expectDocumented(r, "/twinning/v1/primary/{a}/twins");
        expect(r.status === 200 || r.status === 401 || r.status === 403).toBe(true);
      }),
      { numRuns: RUNS, seed: Number(process.env.FUZZ_SEED ?? 20261124) },
    );
    expect((await fetch(`${t.url}/healthz`)).status).toBe(200);
  }, 120_000);
});
