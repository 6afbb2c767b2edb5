import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { foreignToken } from "../device/bad-input-helpers.ts";
import { Federation, type FederatedOperator } from "../helpers/federation-fixture.ts";
import { ManualClock } from "../helpers/manual-clock.ts";
import { enc, messageId, type ApiResponse } from "../helpers/test-node.ts";

/**
 * OAU-001/002: docs/authorization-matrix.md is the authorization matrix; this file reads its one
 * table and makes one real request per cell against node 001-01, with 002-01 as the other
 * operator whose tokens must not be accepted here. Each cell builds its own subject and twins.
 */

const DOC = new URL("../../docs/authorization-matrix.md", import.meta.url);
const CALLERS = ["none", "own", "other", "twin", "otherTwin", "expired", "forged", "deactivated", "admin", "device", "foreign"] as const;
type Caller = (typeof CALLERS)[number];
type Expected = { status: number; messageId: string | undefined };
type Row = { endpoint: string; method: string; path: string; cells: Map<Caller, Expected> };

/** The first markdown table whose header starts with `endpoint`: one Row per line. */
function parseMatrix(markdown: string): { header: string[]; rows: Row[] } {
  const lines = markdown.split("\n");
  const start = lines.findIndex((l) => /^\|\s*endpoint\s*\|/.test(l));
  if (start < 0) throw new Error("no table with an `endpoint` column");
  const split = (l: string) => l.trim().replace(/^\|/, "").replace(/\|$/, "").split("|").map((c) => c.trim());
  const header = split(lines[start]!);
  const rows: Row[] = [];
  for (const line of lines.slice(start + 2)) {
    if (!line.trim().startsWith("|")) break;
    const cells = split(line);
    if (cells.length !== header.length) throw new Error(`row has ${cells.length} cells, header ${header.length}: ${line}`);
    const endpoint = cells[0]!.replace(/`/g, "");
    const [method, path] = endpoint.split(/\s+/);
    const map = new Map<Caller, Expected>();
    header.slice(1).forEach((name, i) => {
      const cell = cells[i + 1]!;
      if (cell === "-") return;
      const m = /^(\d{3})(?:\s+([A-Z]{3}\d{4}))?$/.exec(cell);
      if (!m) throw new Error(`bad cell "${cell}" in ${endpoint}`);
      map.set(name as Caller, { status: Number(m[1]), messageId: m[2] });
    });
    rows.push({ endpoint, method: method!, path: path!, cells: map });
  }
  return { header, rows };
}

const matrix = parseMatrix(readFileSync(DOC, "utf8"));

const clock = new ManualClock();
const fed = new Federation();
let A: FederatedOperator;
let B: FederatedOperator;
let kid: string;
const TTL = 60;
let n = 0;
const newAddr = () => `tel:+1777${String(process.pid % 1000).padStart(3, "0")}${String(++n).padStart(5, "0")}`;

type Party = { address: string; token: string; credential: string };
async function party(address = newAddr()): Promise<Party> {
  const credential = await A.api.provision(A.node().adminToken, address);
  return { address, credential, token: await A.api.token(address, credential) };
}
/** Subjects whose `twinning` token was minted before the clock moved past its lifetime, one per row. */
const expiredTokens = new Map<string, { subject: Party; expiredToken: string }>();

beforeAll(async () => {
  await fed.start(["001-01", "002-01"], () => ({ policy: { accessTokenTtlSeconds: TTL } }), () => ({ nowMs: clock.now }));
  [A, B] = [fed.get("001-01"), fed.get("002-01")];
  const jwks = await A.api.call("GET", "/.well-known/jwks.json");
  kid = jwks.body.keys[0].kid;
  for (const row of matrix.rows) {
    if (!row.cells.has("expired")) continue;
    const subject = await party();
    expiredTokens.set(row.endpoint, { subject, expiredToken: subject.token });
  }
  clock.advance((TTL + 60) * 1000);
  // Every token used from here on is minted after the move.
  for (const e of expiredTokens.values()) e.subject.token = await A.api.token(e.subject.address, e.subject.credential);
}, 120_000);
afterAll(async () => fed.stop());

const V1 = "/twinning/v1";
const P = (a: string) => `${V1}/primary/${enc(a)}`;
const S = (a: string) => `${V1}/secondary/${enc(a)}`;

async function ok(res: ApiResponse, status: number, what: string): Promise<ApiResponse> {
  if (res.status !== status) throw new Error(`setup: ${what} answered ${res.status} ${JSON.stringify(res.body)}`);
  return res;
}

/** Twins p with s on node A: the twin, the primary's and the secondary's twin-scoped tokens, the code's id. */
async function twin(p: Party, s: Party) {
  const { twin, primaryTwinToken, codeResource } = await A.api.twin(p, s);
  const used = await ok(await A.api.call("GET", new URL(codeResource.resourceURL).pathname, { token: s.token }), 200, "read used code");
  expect(used.body.activationCode.status).toBe("Used");
  const codeId = new URL(codeResource.resourceURL).pathname.split("/").pop()!;
  return { twinId: twin.twinId as string, primaryTwinToken, secondaryTwinToken: used.body.activationCode.accessToken as string, codeId };
}
const deactivate = async (p: Party, twinId: string) => ok(await A.api.call("DELETE", `${P(p.address)}/twins/${twinId}`, { token: p.token }), 204, "deactivate");

type Target = { path: string; body?: unknown; token: string | undefined };

/**
 * Builds a fresh world for one cell: the subject (in the row's role), what the row needs to
 * succeed for `own`, and the token the caller presents.
 */
async function prepare(row: Row, caller: Caller): Promise<Target> {
  const admin = row.path.startsWith("/admin/");
  const role = row.path.includes("/primary/") ? "primary" : "secondary";
  const subject = caller === "expired" ? expiredTokens.get(row.endpoint)!.subject : admin && caller === "admin" && row.method === "PUT" ? undefined : await party();
  const address = subject?.address ?? newAddr();

  // Twin-scoped tokens of the subject, made only when the caller needs them.
  let ref: string | undefined;
  let codeId: string | undefined;
  let twinToken: string | undefined;
  let otherTwinToken: string | undefined;
  let deactivatedToken: string | undefined;
  const needsOwnTwin = /\{addr\}\/twinning|\/activationCodes\/\{id\}|\/twins\/\{ref\}/.test(row.path);
  const twinCaller = caller === "twin" || caller === "otherTwin" || caller === "deactivated";
  if (subject && (needsOwnTwin || twinCaller)) {
    if (role === "secondary") {
      if (caller === "otherTwin" || caller === "deactivated") {
        const p0 = await party();
        const earlier = await twin(p0, subject);
        await deactivate(p0, earlier.twinId);
        otherTwinToken = deactivatedToken = earlier.secondaryTwinToken;
        codeId = earlier.codeId;
      }
      // `deactivated`: the secondary's only twin is gone; `otherTwin`: it has a new one.
      if (caller !== "deactivated") {
        const current = await twin(await party(), subject);
        twinToken = current.secondaryTwinToken;
        ref = current.twinId;
        codeId = current.codeId;
      }
    } else {
      const current = await twin(subject, await party());
      twinToken = current.primaryTwinToken;
      ref = current.twinId;
      if (caller === "otherTwin") otherTwinToken = (await twin(subject, await party())).primaryTwinToken;
      if (caller === "deactivated") {
        const ended = await twin(subject, await party());
        await deactivate(subject, ended.twinId);
        deactivatedToken = ended.primaryTwinToken;
      }
    }
  }

  let id: string | undefined = codeId;
  if (row.path.endsWith("/subscriptions/{id}") && subject) {
    const created = await A.api.call("POST", `${V1}/${role}/${enc(address)}/subscriptions`, { token: subject.token, body: { callbackReference: { notifyURL: "http://127.0.0.1:9/cb" } } });
    id = (await ok(created, 201, "subscribe")).body.subscription.resourceURL.split("/").pop();
  }

  let body: unknown;
  if (row.method === "POST" && row.path.endsWith("/twins")) {
    const s = await party();
    const code = await ok(await A.api.call("POST", `${S(s.address)}/activationCodes`, { token: s.token, body: {} }), 201, "code for activation");
    body = { activationCode: code.body.activationCode.code, operatorId: code.body.activationCode.operatorId };
  } else if (row.method === "POST" && row.path.endsWith("/activationCodes")) body = {};
  else if (row.method === "POST" && row.path.endsWith("/subscriptions")) body = { callbackReference: { notifyURL: "http://127.0.0.1:9/cb", callbackData: "matrix" } };
  else if (row.method === "PUT" && row.path.endsWith("/status")) body = { status: "Off" };
  else if (row.method === "PATCH") body = { name: `renamed-${n}` };
  else if (admin && row.method === "PUT") body = { subscriber: { twinning: true, credential: "credential-matrix" } };

  const path = row.path
    .replace("{addr}", enc(address))
    .replace("{ref}", ref ?? "no-twin")
    .replace("{id}", id ?? "no-id");

  const tokens: Record<Caller, () => Promise<string | undefined>> = {
    none: async () => undefined,
    own: async () => subject!.token,
    other: async () => (await party()).token,
    twin: async () => twinToken,
    otherTwin: async () => otherTwinToken,
    expired: async () => expiredTokens.get(row.endpoint)!.expiredToken,
    forged: async () => foreignToken(address, kid),
    deactivated: async () => deactivatedToken,
    admin: async () => A.node().adminToken,
    device: async () => subject!.token,
    foreign: async () => B.api.token(address, await B.api.provision(B.node().adminToken, address)),
  };
  const token = await tokens[caller]();
  if (caller !== "none" && !token) throw new Error(`setup: no ${caller} token for ${row.endpoint}`);
  return { path, body, token };
}

/** One request; an SSE stream is closed as soon as its headers arrive. */
async function send(method: string, target: Target): Promise<ApiResponse> {
  if (!target.path.endsWith("/notifications")) return A.api.call(method, target.path, { token: target.token, ...(target.body !== undefined ? { body: target.body } : {}) });
  const abort = new AbortController();
  const res = await fetch(`${A.api.baseUrl}${target.path}`, { method, signal: abort.signal, headers: target.token ? { authorization: `Bearer ${target.token}` } : {} });
  if (res.status === 200) {
    expect(res.headers.get("content-type") ?? "").toMatch(/^text\/event-stream/);
    abort.abort();
    return { status: 200, body: undefined, headers: res.headers };
  }
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : undefined, headers: res.headers };
}

describe("docs/authorization-matrix.md", () => {
  it("has one table with the documented callers as columns, and a row for every route of the node's OpenAPI document (the device and admin APIs)", async () => {
    expect(matrix.header).toEqual(["endpoint", ...CALLERS]);
    // Path parameters compared by place, not name (`{id}` here, `{codeId}` there).
    const shape = (endpoint: string) => endpoint.replaceAll(/\{[^}]+\}/g, "{}");
    const endpoints = matrix.rows.map((r) => shape(r.endpoint));
    const document = await ok(await A.api.call("GET", `${V1}/openapi.json`), 200, "OpenAPI document");
    const routes = Object.entries(document.body.paths as Record<string, Record<string, unknown>>).flatMap(([path, methods]) =>
      Object.keys(methods).map((method) => shape(`${method.toUpperCase()} ${path}`)),
    );
    expect(routes.length).toBeGreaterThanOrEqual(28);
    expect([...endpoints].sort()).toEqual([...new Set(routes)].sort());
  });

  for (const row of matrix.rows) {
    describe(row.endpoint, () => {
      for (const [caller, expected] of row.cells) {
        const label = expected.status === 401 ? "OAU-001" : "OAU-002";
        const shown = `${expected.status}${expected.messageId ? ` ${expected.messageId}` : ""}`;
        it(`${label} ${row.endpoint} as ${caller} → ${shown}`, async () => {
          const target = await prepare(row, caller);
          const res = await send(row.method, target);
          const where = `${res.status} ${JSON.stringify(res.body)?.slice(0, 300)}`;
          expect({ status: res.status, messageId: expected.messageId === undefined ? undefined : messageId(res.body) }, where).toEqual(expected);
        });
      }
    });
  }
});
