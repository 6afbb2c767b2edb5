import { randomUUID } from "node:crypto";
import { CompactSign, compactVerify, decodeProtectedHeader, errors, type CryptoKey, type JWK, importJWK } from "jose";
import { TwinningError } from "../node/errors/twinning-error.ts";

/**
 * The signed federation message (DESIGN "Federation API"): a compact JWS, header
 * `{alg: ES256|EdDSA, kid, typ: "twinning-fed+jwt"}`, payload
 * `{iss, aud, iat, exp, jti, htm, htu, msgId, body}`. Requests and responses alike.
 */
export const FEDERATION_TYP = "twinning-fed+jwt";
export const FEDERATION_CONTENT_TYPE = "application/jose";

export interface FederationClaims {
  readonly iss: string;
  readonly aud: string;
  readonly iat: number;
  readonly exp: number;
  readonly jti: string;
  readonly htm: string;
  readonly htu: string;
  readonly msgId: string;
  readonly body: unknown;
}

export interface SigningKey {
  readonly kid: string;
  readonly alg: "ES256" | "EdDSA";
  readonly key: CryptoKey;
}

export async function importSigningKey(privateJwk: JWK): Promise<SigningKey> {
  const alg = privateJwk.alg === "EdDSA" || privateJwk.crv === "Ed25519" ? "EdDSA" : "ES256";
  if (!privateJwk.kid) throw new Error("signing key has no kid");
  return { kid: privateJwk.kid, alg, key: (await importJWK(privateJwk, alg)) as CryptoKey };
}

export class MessageSigner {
  constructor(
    readonly operatorId: string,
    private readonly key: () => SigningKey,
    private readonly nowMs: () => number,
    private readonly lifetimeSeconds = 60,
  ) {}

  async sign(input: { aud: string; htm: string; htu: string; msgId: string; body: unknown }): Promise<string> {
    const iat = Math.floor(this.nowMs() / 1000);
    const claims: FederationClaims = { iss: this.operatorId, aud: input.aud, iat, exp: iat + this.lifetimeSeconds, jti: randomUUID(), htm: input.htm, htu: input.htu, msgId: input.msgId, body: input.body };
    const k = this.key();
    return new CompactSign(new TextEncoder().encode(JSON.stringify(claims))).setProtectedHeader({ alg: k.alg, kid: k.kid, typ: FEDERATION_TYP }).sign(k.key);
  }
}

export interface VerifyExpectations {
  readonly issuer: string;
  readonly audience: string;
  readonly htm: string;
  readonly htu: string;
  readonly getKey: (header: { alg: string; kid?: string }) => Promise<unknown> | unknown;
  readonly nowMs: number;
  readonly maxSkewSeconds: number;
  readonly maxLifetimeSeconds: number;
  /** For responses: the msgId of the request they answer. */
  readonly msgId?: string;
}

const reject = (reason: string, cause?: unknown) => new TwinningError("federation_rejected", { variables: [reason], detail: reason, cause });

/** Verifies a federation JWS against what the transport says; each failure names its reason. */
export async function verifyMessage(jws: string, expect: VerifyExpectations): Promise<FederationClaims> {
  let header: ReturnType<typeof decodeProtectedHeader>;
  try {
    header = decodeProtectedHeader(jws);
  } catch (error) {
    throw reject("not a compact JWS", error);
  }
  if (header.typ !== FEDERATION_TYP) throw reject("wrong typ");
  if (header.alg !== "ES256" && header.alg !== "EdDSA") throw reject("algorithm not allowed");
  let payload: Uint8Array;
  try {
    const key = await expect.getKey({ alg: header.alg, ...(header.kid ? { kid: header.kid } : {}) });
    ({ payload } = await compactVerify(jws, key as CryptoKey, { algorithms: ["ES256", "EdDSA"] }));
  } catch (error) {
    if (error instanceof errors.JWKSNoMatchingKey) throw reject("unknown kid", error);
    throw reject("bad signature", error);
  }
  let claims: FederationClaims;
  try {
    claims = JSON.parse(new TextDecoder().decode(payload)) as FederationClaims;
  } catch (error) {
    throw reject("payload is not JSON", error);
  }
  const now = Math.floor(expect.nowMs / 1000);
  if (typeof claims.iat !== "number" || typeof claims.exp !== "number" || typeof claims.jti !== "string" || typeof claims.msgId !== "string") {
    throw reject("missing claims");
  }
  if (claims.iss !== expect.issuer) throw reject("iss does not match the certificate's operator");
  if (claims.aud !== expect.audience) throw reject("wrong aud");
  if (claims.exp - claims.iat > expect.maxLifetimeSeconds || claims.exp <= claims.iat) throw reject("lifetime too long");
  if (claims.iat > now + expect.maxSkewSeconds) throw reject("issued in the future beyond clock skew tolerance");
  if (claims.exp < now - expect.maxSkewSeconds) throw reject("expired");
  if (claims.htm !== expect.htm || claims.htu !== expect.htu) throw reject("htm/htu do not match the request");
  if (expect.msgId !== undefined && claims.msgId !== expect.msgId) throw reject("response to another msgId");
  return claims;
}
