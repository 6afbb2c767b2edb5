import { KeyObject, randomUUID, sign as cryptoSign, verify as cryptoVerify } from "node:crypto";
import { errors, importJWK, type JWK } from "jose";
import { TwinningError } from "../node/errors/twinning-error.ts";

/**
 * The signed federation message (DESIGN "Federation API"): a compact JWS, header
 * `{alg: ES256|EdDSA, kid, typ: "twinning-fed+jwt"}`, payload
 * `{iss, aud, iat, exp, jti, htm, htu, msgId, body}`. Requests and responses alike.
 *
 * Keys are imported and resolved with jose (JWK, JWKS); the compact serialization itself
 * (RFC 7515 §7.1) is signed and verified with node:crypto's synchronous sign/verify on
 * KeyObjects: four signatures per message made jose's asynchronous WebCrypto path the largest
 * cost of a federation round trip (see docs/benchmark-history.md). ES256 signatures use the JWS
 * (IEEE P1363) encoding, so any JOSE implementation verifies them.
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
  readonly key: KeyObject;
}

export async function importSigningKey(privateJwk: JWK): Promise<SigningKey> {
  const alg = privateJwk.alg === "EdDSA" || privateJwk.crv === "Ed25519" ? "EdDSA" : "ES256";
  if (!privateJwk.kid) throw new Error("signing key has no kid");
  // A public key alone would import, then fail every signature: refused here, at start or reload.
  if (typeof privateJwk.d !== "string") throw new Error(`signing key ${privateJwk.kid} has no private part`);
  const key = asKeyObject(await importJWK(privateJwk, alg));
  if (key.type !== "private") throw new Error(`signing key ${privateJwk.kid} is not a private key`);
  return { kid: privateJwk.kid, alg, key };
}

const keyObjects = new WeakMap<object, KeyObject>();

/** A KeyObject for a key jose resolved (a CryptoKey), converted once per key. */
export function asKeyObject(key: unknown): KeyObject {
  if (key instanceof KeyObject) return key;
  let k = keyObjects.get(key as object);
  if (!k) {
    k = KeyObject.from(key as Parameters<typeof KeyObject.from>[0]);
    keyObjects.set(key as object, k);
  }
  return k;
}

const digestOf = (alg: string) => (alg === "ES256" ? "sha256" : null);
const b64u = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");

/** RFC 7515 compact serialization, signed with node:crypto. */
export function signCompact(header: { alg: "ES256" | "EdDSA"; kid: string; typ: string }, payload: unknown, key: KeyObject): string {
  const input = `${b64u(header)}.${b64u(payload)}`;
  const signature = cryptoSign(digestOf(header.alg), Buffer.from(input), { key, dsaEncoding: "ieee-p1363" });
  return `${input}.${signature.toString("base64url")}`;
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
    return signCompact({ alg: k.alg, kid: k.kid, typ: FEDERATION_TYP }, claims, k.key);
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
  /**
   * Verify the signature on libuv's thread pool rather than the event loop. For answers: the
   * caller's lane waits on the verification, but other work (a device's request) need not wait
   * behind it. A request is verified inline: the caller has nothing else to do first.
   */
  readonly onThreadPool?: boolean;
}

/** Whether `signature` (base64url) signs `input`; a malformed signature or key is just invalid. */
function signatureValid(alg: "ES256" | "EdDSA", input: string, key: KeyObject, signature: string, onThreadPool: boolean): boolean | Promise<boolean> {
  const args = [digestOf(alg), Buffer.from(input), { key, dsaEncoding: "ieee-p1363" as const }, Buffer.from(signature, "base64url")] as const;
  if (!onThreadPool) {
    try {
      return cryptoVerify(...args);
    } catch {
      return false;
    }
  }
  return new Promise((resolve) => {
    try {
      cryptoVerify(...args, (error, valid) => resolve(!error && valid));
    } catch {
      resolve(false);
    }
  });
}

const reject = (reason: string, cause?: unknown) => new TwinningError("federation_rejected", { variables: [reason], detail: reason, cause });

/** Verifies a federation JWS against what the transport says; each failure names its reason. */
export async function verifyMessage(jws: string, expect: VerifyExpectations): Promise<FederationClaims> {
  const parts = jws.split(".");
  let header: { alg?: unknown; kid?: unknown; typ?: unknown };
  try {
    if (parts.length !== 3) throw new Error("not three parts");
    header = JSON.parse(Buffer.from(parts[0]!, "base64url").toString("utf8")) as typeof header;
    if (typeof header !== "object" || header === null) throw new Error("header is not an object");
  } catch (error) {
    throw reject("not a compact JWS", error);
  }
  if (header.typ !== FEDERATION_TYP) throw reject("wrong typ");
  if (header.alg !== "ES256" && header.alg !== "EdDSA") throw reject("algorithm not allowed");
  // DESIGN: kid must be one of iss's keys; and no JWS extension is understood (RFC 7515 §4.1.11 crit, RFC 7797 b64).
  if (typeof header.kid !== "string" || header.kid === "") throw reject("missing kid");
  if ("crit" in header || "b64" in header) throw reject("unsupported header parameter");
  let key: KeyObject;
  try {
    key = asKeyObject(await expect.getKey({ alg: header.alg, ...(typeof header.kid === "string" ? { kid: header.kid } : {}) }));
  } catch (error) {
    if (error instanceof errors.JWKSNoMatchingKey) throw reject("unknown kid", error);
    // Not the signature's fault: the peer's keys could not be had (its JWKS URL down, slow or bad).
    throw reject("signing keys unavailable", error);
  }
  const valid = await signatureValid(header.alg, `${parts[0]}.${parts[1]}`, key, parts[2]!, expect.onThreadPool === true);
  if (!valid) throw reject("bad signature");
  let claims: FederationClaims;
  try {
    claims = JSON.parse(Buffer.from(parts[1]!, "base64url").toString("utf8")) as FederationClaims;
    if (typeof claims !== "object" || claims === null) throw new Error("payload is not an object");
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
