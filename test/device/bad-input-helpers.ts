import { SignJWT, generateKeyPair } from "jose";
import { expect } from "vitest";
import { messageId, type ApiResponse } from "../helpers/test-node.ts";

/**
 * Helpers for test/device/bad-input.test.ts: one assertion for every refused request (status,
 * OMA messageId, no stack trace, no 5xx), and the hand-made tokens the 401 cases need.
 */

/** What a leaked stack trace or exception looks like in a body: "at fn (file:1:2)", "TypeError:", paths. */
const LEAK = /\bat [\w$.<>[\] ]+ \(|\bat (?:file|node):|\(?[\w./-]+\.(?:ts|js|mjs|cjs):\d+(?::\d+)?\)?|\b\w*Error:|node_modules|\n\s+at /;

export function bodyText(res: ApiResponse): string {
  return typeof res.body === "string" ? res.body : JSON.stringify(res.body ?? "");
}

/** The OMA `variables` of an error body, whichever exception kind carries them. */
export function omaVariables(body: any): string[] {
  const e = body?.requestError;
  return (e?.serviceException?.variables ?? e?.policyException?.variables ?? []) as string[];
}

/**
 * DESIGN "Errors": the status and messageId are both part of the contract. No response may be
 * a 5xx (the documented SVC3002 503 aside) or carry a stack trace. With `field`, the OMA
 * `variables` must name it (SVC0002 "variables names the field").
 */
export function expectRefused(res: ApiResponse, status: number, id: string, field?: string): void {
  const text = bodyText(res);
  const where = `${res.status} ${text.slice(0, 400)}`;
  expect(LEAK.test(text), `stack trace or exception text leaked: ${where}`).toBe(false);
  if (id !== "SVC3002") expect(res.status, `5xx: ${where}`).toBeLessThan(500);
  expect(res.headers.get("content-type") ?? "", where).toMatch(/^application\/json/);
  expect({ status: res.status, messageId: messageId(res.body) }, where).toEqual({ status, messageId: id });
  if (field !== undefined) expect(omaVariables(res.body), where).toContain(field);
}

/** 401 SVC2003 with a Bearer challenge (RFC 6750 §3). */
export function expectUnauthorized(res: ApiResponse): void {
  expectRefused(res, 401, "SVC2003");
  expect(res.headers.get("www-authenticate") ?? "", bodyText(res)).toMatch(/^Bearer\b/);
}

/** A well-formed RFC 9068 token that claims the node's issuer but is signed by another key. */
export async function foreignToken(subject: string, kid: string | undefined): Promise<string> {
  const { privateKey } = await generateKeyPair("ES256");
  return new SignJWT({ scope: "twinning", client_id: subject })
    .setProtectedHeader({ alg: "ES256", typ: "at+jwt", ...(kid ? { kid } : {}) })
    .setIssuer("urn:twinning:operator:001-01")
    .setSubject(subject)
    .setAudience("twinning")
    .setIssuedAt()
    .setExpirationTime("10m")
    .sign(privateKey);
}

/** The same claims with `alg: none` and no signature. */
export function unsignedToken(subject: string): string {
  const part = (o: object) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const now = Math.floor(Date.now() / 1000);
  return `${part({ alg: "none", typ: "at+jwt" })}.${part({ iss: "urn:twinning:operator:001-01", sub: subject, aud: "twinning", scope: "twinning", iat: now, exp: now + 600 })}.`;
}

/**
 * Changes one character in the middle of the signature. (The last base64url character of a
 * 64-byte ES256 signature carries padding bits, so flipping it may leave the bytes unchanged.)
 */
export function tamperedToken(token: string): string {
  const dot = token.lastIndexOf(".");
  const i = dot + 1 + Math.floor((token.length - dot - 1) / 2);
  const flipped = token[i] === "A" ? "B" : "A";
  return `${token.slice(0, i)}${flipped}${token.slice(i + 1)}`;
}

/** POST /oauth/token as a device would, answering status and parsed body (never throws on refusal). */
export async function requestToken(baseUrl: string, address: string, credential: string): Promise<ApiResponse> {
  const res = await fetch(`${baseUrl}/oauth/token`, {
    method: "POST",
    headers: {
      authorization: `Basic ${Buffer.from(`${encodeURIComponent(address)}:${encodeURIComponent(credential)}`).toString("base64")}`,
      "content-type": "application/x-www-form-urlencoded",
    },
    body: "grant_type=client_credentials&scope=twinning",
  });
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  return { status: res.status, body, headers: res.headers };
}

/** A body sent chunked (no Content-Length), so a size limit must count bytes as they arrive. */
export async function postChunked(url: string, token: string, chunks: string[]): Promise<ApiResponse> {
  const stream = new ReadableStream<Uint8Array>({
    start(controller) {
      for (const c of chunks) controller.enqueue(new TextEncoder().encode(c));
      controller.close();
    },
  });
  const init = { method: "POST", headers: { authorization: `Bearer ${token}`, "content-type": "application/json" }, body: stream, duplex: "half" };
  const res = await fetch(url, init as RequestInit);
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  return { status: res.status, body, headers: res.headers };
}
