import { randomUUID } from "node:crypto";
import { SignJWT, createLocalJWKSet, createRemoteJWKSet, errors, jwtVerify, type CryptoKey, type JWK, type JWTPayload, type JWTVerifyGetKey } from "jose";
import { TwinningError } from "../errors/twinning-error.ts";
import { isScope, type Principal, type Scope } from "./scopes.ts";

/** RFC 9068 access tokens, signed by the node's own key and verified against its JWKS. */
export const TOKEN_TYPE = "at+jwt";

const audienceFor = (scope: Scope): string => (scope === "primary-services" ? "primary-services" : "twinning");

export interface MintInput {
  readonly subject: string;
  readonly scope: Scope;
  readonly ttlSeconds: number;
  readonly twinId?: string;
  readonly actor?: string;
  /** The actor's provisioning stamp (`act.prv`), when this node serves the actor: see Principal.actorProvisioning. */
  readonly actorProvisioning?: string;
  readonly clientId?: string;
  /**
   * The subject's provisioning stamp the request was authenticated under (a local principal's
   * `prv`, or the subscriber record whose credential was checked): minting is refused when the
   * subject has been provisioned again since, which revoked the request's own token meanwhile
   * (a long-poll that outlived it, a call to a peer, a credential check racing a change).
   */
  readonly underProvisioning?: string | undefined;
}

export interface ExternalIssuerOptions {
  readonly issuer: string;
  readonly jwksUrl: string;
  readonly audience?: string | undefined;
}

/** The verified-token cache's bound in token characters (~16 MB), beside its count of entries; a token over a thousandth of it is not kept. */
const MAX_CACHED_TOKEN_CHARS_TOTAL = 16_000_000;
/**
 * How long an external issuer's token is taken as verified before it is verified again; the
 * issuer's key set is refetched after as long (jose's cacheMaxAge), so a withdrawn key stops its
 * tokens within twice this.
 */
export const EXTERNAL_RECHECK_SECONDS = 300;

/**
 * Verified tokens, so a hot path does not pay an ES256 verification per request. Only the
 * signature and claims are cached: revocation (twin deactivated, subscriber de-provisioned) is
 * still checked against the store on every use by the caller, so it takes effect at once.
 */
class VerifiedTokenCache {
  readonly #entries = new Map<string, Principal>();
  /** The characters of the tokens kept (a token may be as long as a header allows: an external issuer's). */
  #chars = 0;

  constructor(private readonly maxEntries: number) {}

  get(token: string, nowS: number): Principal | undefined {
    const hit = this.#entries.get(token);
    if (!hit) return undefined;
    if (hit.verifiedUntilS <= nowS) {
      this.#forget(token);
      return undefined;
    }
    return hit;
  }

  set(token: string, principal: Principal): void {
    if (token.length > MAX_CACHED_TOKEN_CHARS_TOTAL / 1_000 || this.#entries.has(token)) return;
    while (this.#entries.size >= this.maxEntries || this.#chars + token.length > MAX_CACHED_TOKEN_CHARS_TOTAL) this.#forget(this.#entries.keys().next().value!);
    this.#entries.set(token, principal);
    this.#chars += token.length;
  }

  #forget(token: string): void {
    if (this.#entries.delete(token)) this.#chars -= token.length;
  }
}

export class AccessTokens {
  readonly #cache = new VerifiedTokenCache(50_000);
  readonly #key: CryptoKey;
  readonly #kid: string;
  readonly #localKeys: JWTVerifyGetKey;
  readonly #external: (ExternalIssuerOptions & { keys: JWTVerifyGetKey }) | undefined;
  readonly issuer: string;
  readonly #nowMs: () => number;
  readonly #provisioningOf: (subject: string) => Promise<string | undefined>;

  constructor(options: {
    issuer: string;
    privateKey: CryptoKey;
    publicJwks: JWK[];
    kid: string;
    external?: ExternalIssuerOptions | undefined;
    /** The external issuer's keys; default its JWKS URL's (jose's remote key set). Given in tests. */
    externalKeys?: JWTVerifyGetKey;
    nowMs: () => number;
    /** The subject's current provisioning stamp (`prv` claim), if it is provisioned here. */
    provisioningOf: (subject: string) => Promise<string | undefined>;
  }) {
    this.issuer = options.issuer;
    this.#key = options.privateKey;
    this.#kid = options.kid;
    this.#localKeys = createLocalJWKSet({ keys: options.publicJwks });
    this.#external = options.external && { ...options.external, keys: options.externalKeys ?? createRemoteJWKSet(new URL(options.external.jwksUrl), { cacheMaxAge: EXTERNAL_RECHECK_SECONDS * 1000 }) };
    this.#nowMs = options.nowMs;
    this.#provisioningOf = options.provisioningOf;
  }

  async mint(input: MintInput): Promise<{ token: string; expiresAtS: number }> {
    const iat = Math.floor(this.#nowMs() / 1000);
    const exp = iat + input.ttlSeconds;
    const claims: JWTPayload = { scope: input.scope };
    if (input.twinId) claims.twin_id = input.twinId;
    if (input.actor) claims.act = input.actorProvisioning ? { sub: input.actor, prv: input.actorProvisioning } : { sub: input.actor };
    if (input.clientId) claims.client_id = input.clientId;
    const provisioning = await this.#provisioningOf(input.subject);
    if (input.underProvisioning !== undefined && input.underProvisioning !== provisioning) {
      throw new TwinningError("invalid_token", { detail: "the subscriber was provisioned again during the request" });
    }
    if (provisioning) claims.prv = provisioning;
    const token = await new SignJWT(claims)
      .setProtectedHeader({ alg: "ES256", kid: this.#kid, typ: TOKEN_TYPE })
      .setIssuer(this.issuer)
      .setSubject(input.subject)
      .setAudience(audienceFor(input.scope))
      .setIssuedAt(iat)
      .setExpirationTime(exp)
      .setJti(randomUUID())
      .sign(this.#key);
    return { token, expiresAtS: exp };
  }

  /**
   * Verifies signature, type, issuer, audience and lifetime; revocation (twin deactivated,
   * subscriber de-provisioned) is checked by the caller against the store on every use.
   * jose failures become SVC2003 here, with the original kept as `cause` (never the token).
   */
  async verify(token: string): Promise<Principal> {
    const cached = this.#cache.get(token, Math.floor(this.#nowMs() / 1000));
    if (cached) return cached;
    const principal = await this.#verifyUncached(token);
    this.#cache.set(token, principal);
    return principal;
  }

  async #verifyUncached(token: string): Promise<Principal> {
    const currentDate = new Date(this.#nowMs());
    try {
      const { payload } = await jwtVerify(token, this.#localKeys, { issuer: this.issuer, typ: TOKEN_TYPE, currentDate, algorithms: ["ES256"] });
      const principal = toPrincipal(payload, "local");
      // RFC 9068 §4: the audience is checked too; ours names what the token's scope is for.
      if (payload.aud !== audienceFor(principal.scope)) throw new TwinningError("invalid_token", { detail: "audience does not match the scope" });
      return principal;
    } catch (error) {
      const external = this.#external;
      const fromExternal = external && unverifiedIssuer(token) === external.issuer;
      if (!fromExternal) throw asInvalidToken(error);
      try {
        const { payload } = await jwtVerify(token, external.keys, {
          issuer: external.issuer,
          currentDate,
          algorithms: EXTERNAL_ALGORITHMS,
          ...(external.audience ? { audience: external.audience } : {}),
        });
        const principal = toPrincipal(payload, "external", Math.floor(currentDate.getTime() / 1000) + EXTERNAL_RECHECK_SECONDS);
        // Only the node itself mints twin-scoped and primary-services tokens.
        if (principal.scope !== "twinning") throw new TwinningError("invalid_token", { detail: "external token with a node-only scope" });
        return principal;
      } catch (externalError) {
        throw asInvalidToken(externalError);
      }
    }
  }
}

/** Signatures an operator's authorization server may use (asymmetric only; RFC 8725 §3.1). */
const EXTERNAL_ALGORITHMS = ["ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "RS256", "RS384", "RS512", "EdDSA"];

function unverifiedIssuer(token: string): string | undefined {
  try {
    const part = token.split(".")[1];
    if (!part) return undefined;
    const payload = JSON.parse(Buffer.from(part, "base64url").toString("utf8")) as { iss?: unknown };
    return typeof payload.iss === "string" ? payload.iss : undefined;
  } catch {
    return undefined;
  }
}

function asInvalidToken(error: unknown): TwinningError {
  if (error instanceof TwinningError) return error;
  const detail = error instanceof errors.JOSEError ? error.code : "token verification failed";
  return new TwinningError("invalid_token", { detail, cause: error });
}

/** `recheckAtS`: when an external token's verification is to be redone (see Principal.verifiedUntilS). */
function toPrincipal(payload: JWTPayload, source: Principal["source"], recheckAtS = Number.POSITIVE_INFINITY): Principal {
  const scopes = typeof payload.scope === "string" ? payload.scope.split(" ").filter(isScope) : [];
  // Exactly one of our scopes: a token must say plainly what it is for.
  const scope = scopes.includes("twinning") ? "twinning" : scopes[0];
  if (!scope || typeof payload.sub !== "string" || typeof payload.exp !== "number" || typeof payload.iss !== "string") {
    throw new TwinningError("invalid_token", { detail: "token lacks sub, exp or a twinning scope" });
  }
  const act = payload.act as { sub?: unknown; prv?: unknown } | undefined;
  return {
    subject: payload.sub,
    scope,
    twinId: typeof payload.twin_id === "string" ? payload.twin_id : undefined,
    actor: typeof act?.sub === "string" ? act.sub : undefined,
    actorProvisioning: typeof act?.prv === "string" ? act.prv : undefined,
    tokenId: typeof payload.jti === "string" ? payload.jti : "",
    issuer: payload.iss,
    issuedAtS: typeof payload.iat === "number" ? payload.iat : 0,
    expiresAtS: payload.exp,
    verifiedUntilS: Math.min(payload.exp, recheckAtS),
    clientId: typeof payload.client_id === "string" ? payload.client_id : undefined,
    provisioning: typeof payload.prv === "string" ? payload.prv : undefined,
    audience: Array.isArray(payload.aud) ? (payload.aud[0] ?? "") : (payload.aud ?? ""),
    source,
  };
}
