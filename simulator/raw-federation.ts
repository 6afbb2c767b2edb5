import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { CompactSign, importJWK, type CryptoKey, type JWK } from "jose";
import { Agent, request } from "undici";
import type { PemPair } from "../certs/federation-pki.ts";
import { DEFAULT_CALL_TIMEOUT_MS } from "./device-client.ts";
import type { Sandbox } from "./sandbox.ts";

export interface RawCall {
  readonly path?: string;
  readonly claims?: Record<string, unknown>;
  /** Sign with this key instead of the sender's (a forgery). */
  readonly signWith?: { key: CryptoKey | Uint8Array; kid: string; alg: string };
  /** Present this certificate instead of the sender's. */
  readonly tls?: PemPair;
  /** Send exactly this JWS (a replay). */
  readonly jws?: string;
}

export interface RawAnswer {
  readonly status: number;
  /** The error text of the OMA body (signed or not), for the report. */
  readonly reason: string;
  readonly jws: string;
}

/**
 * A hand-made federation message from one simulated operator to another, with the sandbox's
 * own certificates and keys: the way the fault scenarios forge, replay and skew messages.
 */
export async function rawFederationCall(sandbox: Sandbox, fromId: string, toId: string, call: RawCall = {}): Promise<RawAnswer> {
  const from = sandbox.get(fromId);
  const to = sandbox.get(toId);
  const path = call.path ?? "/federation/v1/activationCodes";
  const now = Math.floor(Date.now() / 1000);
  const jwk = JSON.parse(readFileSync(from.signingKeyFile, "utf8")) as JWK;
  const key = call.signWith ?? { key: (await importJWK(jwk, jwk.alg ?? "ES256")) as CryptoKey, kid: jwk.kid!, alg: jwk.alg ?? "ES256" };
  const claims = {
    iss: fromId,
    aud: toId,
    iat: now,
    exp: now + 60,
    jti: randomUUID(),
    htm: "POST",
    htu: `${to.federationUrl}${path}`,
    msgId: randomUUID(),
    body: { secondaryAddress: "tel:+19990000001", secondaryOperatorId: fromId },
    ...(call.claims ?? {}),
  };
  const jws =
    call.jws ??
    (await new CompactSign(new TextEncoder().encode(JSON.stringify(claims))).setProtectedHeader({ alg: key.alg, kid: key.kid, typ: "twinning-fed+jwt" }).sign(key.key as CryptoKey));
  const tls = call.tls ?? from.tls;
  const agent = new Agent({ connect: { ca: sandbox.ca.certPem, cert: tls.certPem, key: tls.keyPem, rejectUnauthorized: true } });
  try {
    const res = await request(`${to.federationUrl}${path}`, {
      method: "POST",
      dispatcher: agent,
      headers: { "content-type": "application/jose" },
      body: jws,
      // The simulator's one deadline for a call (README: a call a node never answers fails after 30 s).
      signal: AbortSignal.timeout(DEFAULT_CALL_TIMEOUT_MS),
    });
    const text = await res.body.text();
    let body: any;
    try {
      body = String(res.headers["content-type"]).startsWith("application/jose") ? JSON.parse(Buffer.from(text.split(".")[1]!, "base64url").toString()).body : JSON.parse(text);
    } catch {
      body = undefined;
    }
    const ex = body?.requestError?.serviceException ?? body?.requestError?.policyException;
    return { status: res.statusCode, reason: ex ? `${ex.messageId} ${ex.text}` : "", jws };
  } finally {
    await agent.close();
  }
}
