import type { Context } from "hono";
import { isAddress } from "../domain/address.ts";
import { TwinningError } from "../errors/twinning-error.ts";
import { errorBody } from "../errors/error-response.ts";
import type { AppEnv } from "../http/app-env.ts";
import { assertNotRevoked, assertProvisioned, requireIntrospectionToken } from "../http/authenticate.ts";
import type { App } from "../http/route-helper.ts";
import type { NodeContext } from "../service/node-context.ts";
import { provisioningStamp, verifyCredential } from "../tokens/credentials.ts";
import type { SubscriberRecord } from "../store/store-port.ts";
import { LoginGuard } from "./login-guard.ts";

/**
 * RFC 6749 error answer. It carries the OMA body too, so clients of either convention can
 * read it (`error` for OAuth libraries, `requestError` for OMA test kits).
 */
function oauthError(c: Context<AppEnv>, status: 400 | 401 | 403 | 429 | 503, error: string, description: string, oma: TwinningError): Response {
  const headers: Record<string, string> = { "cache-control": "no-store" };
  if (status === 401) headers["www-authenticate"] = 'Basic realm="twinning"';
  if (oma.retryAfterSeconds !== undefined) headers["retry-after"] = String(oma.retryAfterSeconds);
  return c.json({ error, error_description: description, ...errorBody(oma) }, status, headers);
}

/** Client authentication: HTTP Basic (client id form-encoded per RFC 6749 §2.3.1, or a raw tel: URI) or the form body. */
function clientCredentials(c: Context<AppEnv>, form: URLSearchParams): { id: string; secret: string } | undefined {
  const header = c.req.header("authorization");
  if (header && /^basic /i.test(header)) { // RFC 7235: the scheme is case-insensitive
    let decoded: string;
    try {
      decoded = Buffer.from(header.slice(6).trim(), "base64").toString("utf8");
    } catch {
      return undefined;
    }
    const raw = /^(tel:\+\d+):(.*)$/s.exec(decoded);
    if (raw) return { id: raw[1]!, secret: raw[2]! };
    const colon = decoded.indexOf(":");
    if (colon < 0) return undefined;
    try {
      return { id: decodeURIComponent(decoded.slice(0, colon)), secret: decodeURIComponent(decoded.slice(colon + 1).replace(/\+/g, " ")) };
    } catch {
      return undefined;
    }
  }
  const id = form.get("client_id");
  const secret = form.get("client_secret");
  return id && secret ? { id, secret } : undefined;
}

/** RFC 6749 §3.1: a parameter sent more than once, or a required one missing, is an invalid request. */
function invalidRequest(c: Context<AppEnv>, parameter: string, what: string): Response {
  return oauthError(c, 400, "invalid_request", `${parameter} ${what}`, new TwinningError("invalid_input", { variables: [parameter] }));
}

const TOKEN_PARAMETERS = ["grant_type", "scope", "client_id", "client_secret"] as const;

async function readForm(c: Context<AppEnv>): Promise<URLSearchParams | undefined> {
  const type = (c.req.header("content-type") ?? "").split(";")[0]!.trim().toLowerCase();
  if (type !== "application/x-www-form-urlencoded") return undefined;
  return new URLSearchParams(await c.req.text());
}

/** A valid scrypt hash of a random secret: unknown clients are checked against it, in the same time. */
const DUMMY_HASH = "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA$LJbCmxBnOVJDgSyQVRnO-0X7UdTYpRDMeTKQN8rSjSI";

/** OAU-001/002: the token endpoint (client_credentials) and RFC 7662 introspection. */
export function registerOAuthRoutes(app: App, ctx: NodeContext): void {
  const policy = ctx.config.policy;
  const guard = new LoginGuard({
    maxFailures: policy.maxFailedTokenRequestsPerClient,
    windowMs: policy.failedAttemptWindowSeconds * 1000,
    maxPendingChecks: ctx.config.limits.maxPendingCredentialChecks,
    maxClients: 50_000,
  });
  app.post("/oauth/token", async (c) => {
    const form = await readForm(c);
    if (!form) return oauthError(c, 400, "invalid_request", "form body required", new TwinningError("invalid_input", { variables: ["Content-Type"] }));
    const repeated = TOKEN_PARAMETERS.find((name) => form.getAll(name).length > 1);
    if (repeated) return invalidRequest(c, repeated, "given more than once");
    const grantType = form.get("grant_type");
    if (grantType === null) return invalidRequest(c, "grant_type", "required");
    if (grantType !== "client_credentials") {
      return oauthError(c, 400, "unsupported_grant_type", "only client_credentials", new TwinningError("invalid_input", { variables: ["grant_type"] }));
    }
    const scope = form.get("scope") ?? "twinning";
    if (scope !== "twinning") return oauthError(c, 400, "invalid_scope", "only the twinning scope is granted here", new TwinningError("invalid_input", { variables: ["scope"] }));
    const client = clientCredentials(c, form);
    // RFC 6749 §2.3: one way of authenticating the client per request (a client_id beside HTTP
    // Basic only names the client, and must name the same one).
    if (/^basic /i.test(c.req.header("authorization") ?? "")) {
      if (form.has("client_secret")) return invalidRequest(c, "client_secret", "given with HTTP Basic authentication too");
      if (form.has("client_id") && form.get("client_id") !== client?.id) return invalidRequest(c, "client_id", "names another client than HTTP Basic authentication");
    }
    // Only an id that can be a subscriber is counted (any other fails every check).
    const counted = client && isAddress(client.id) ? client.id : undefined;
    let subscriber: SubscriberRecord | undefined;
    // The subscriber is read once the id is let through: a locked id's answer costs the same whoever it is.
    const attempt = await guard.attempt(counted, ctx.nowMs(), async () => {
      subscriber = counted ? await ctx.store.getSubscriber(counted) : undefined;
      return (await verifyCredential(client?.secret ?? "", subscriber?.credentialHash ?? DUMMY_HASH)) && subscriber !== undefined;
    });
    if (attempt.outcome === "locked") {
      const seconds = Math.ceil(attempt.retryAfterMs / 1000);
      return oauthError(c, 429, "invalid_client", "too many failed attempts", new TwinningError("too_many_token_requests", { variables: [String(seconds)], retryAfterSeconds: seconds }));
    }
    if (attempt.outcome === "busy") {
      return oauthError(c, 503, "temporarily_unavailable", "too many token requests at once", new TwinningError("overloaded", { variables: ["1"], retryAfterSeconds: 1 }));
    }
    if (attempt.outcome === "invalid" || !subscriber || !client) {
      return oauthError(c, 401, "invalid_client", "client authentication failed", new TwinningError("invalid_token"));
    }
    // DESIGN's status for POL2001 (RFC 6749 §5.2 allows another than 400 where one is specified).
    if (!subscriber.twinningEnabled) return oauthError(c, 403, "unauthorized_client", "subscriber not provisioned for twinning", new TwinningError("not_provisioned"));
    const ttl = ctx.config.policy.accessTokenTtlSeconds;
    // Under the provisioning whose credential was checked: a change meanwhile refuses it.
    const minted = await ctx.tokens
      .mint({ subject: subscriber.address, scope: "twinning", ttlSeconds: ttl, clientId: subscriber.address, underProvisioning: provisioningStamp(subscriber) })
      .catch((error: unknown) => {
        if (error instanceof TwinningError && error.code === "invalid_token") return undefined;
        throw error;
      });
    if (!minted) return oauthError(c, 401, "invalid_client", "client authentication failed", new TwinningError("invalid_token"));
    const { token } = minted;
    return c.json({ access_token: token, token_type: "Bearer", expires_in: ttl, scope: "twinning" }, 200, { "cache-control": "no-store", pragma: "no-cache" });
  });

  // RFC 7662: for the operator's own services (messaging, NMS), authenticated with the introspection token (or the admin token).
  app.post("/oauth/introspect", requireIntrospectionToken(ctx), async (c) => {
    const form = await readForm(c);
    if (form && form.getAll("token").length > 1) return invalidRequest(c, "token", "given more than once");
    const token = form?.get("token");
    if (!token) return oauthError(c, 400, "invalid_request", "token parameter required", new TwinningError("invalid_input", { variables: ["token"] }));
    try {
      const p = await ctx.tokens.verify(token);
      await assertNotRevoked(ctx, p);
      await assertProvisioned(ctx, p);
      return c.json(
        {
          active: true,
          sub: p.subject,
          scope: p.scope,
          iss: p.issuer,
          aud: p.audience,
          exp: p.expiresAtS,
          iat: p.issuedAtS,
          jti: p.tokenId,
          token_type: "Bearer",
          ...(p.clientId ? { client_id: p.clientId } : {}),
          ...(p.twinId ? { twin_id: p.twinId } : {}),
          ...(p.actor ? { act: { sub: p.actor } } : {}),
        },
        200,
        { "cache-control": "no-store" },
      );
    } catch (error) {
      // RFC 7662: a token that does not work here is simply inactive.
      if (error instanceof TwinningError && (error.code === "invalid_token" || error.code === "not_provisioned")) return c.json({ active: false }, 200, { "cache-control": "no-store" });
      throw error;
    }
  });
}
