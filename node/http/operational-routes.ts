import { OpenAPIHono, z, type RouteConfig } from "@hono/zod-openapi";
import type { NodeContext } from "../service/node-context.ts";
import { requireMetricsToken } from "./authenticate.ts";
import { errorSchema } from "./schemas.ts";
import type { App } from "./route-helper.ts";
import { referencePage } from "./reference-page.ts";

/**
 * The routes around the device API that a device, a peer (or the operator) uses: OAuth, JWKS
 * (the tokens' and the federation's), health, readiness and metrics. They are plain hono routes, documented here only: described on a
 * registry of their own that serves nothing, and placed in the document as OpenAPI 3.1
 * `components.pathItems` (each with `x-path`, its path from the server URL), as the document's
 * `paths` holds the versioned device and admin APIs alone.
 */
function aroundTheApi() {
  const docs = new OpenAPIHono();
  const json = (schema: z.ZodType) => ({ "application/json": { schema } });
  const noStore = { "Cache-Control": { description: "no-store", schema: { type: "string" as const } } };
  const retryAfter = { "Retry-After": { description: "Seconds to wait before trying again", schema: { type: "integer" as const, minimum: 1 } } };
  const omaError = (description: string) => ({ description, content: json(errorSchema) });
  const exception = z.object({ messageId: z.string(), text: z.string(), variables: z.array(z.string()) });
  const oauthError = z
    .object({
      error: z.enum(["invalid_request", "unsupported_grant_type", "invalid_scope", "invalid_client", "unauthorized_client", "temporarily_unavailable"]),
      error_description: z.string(),
      requestError: z.object({ serviceException: exception.optional(), policyException: exception.optional() }).openapi({ description: "The same error in the OMA form (DESIGN \"Errors\")" }),
    })
    .openapi("OAuthError", { description: "RFC 6749 §5.2 error, with the OMA requestError beside it" });
  const tokenRequest = z
    .object({
      grant_type: z.literal("client_credentials"),
      scope: z.literal("twinning").optional().openapi({ description: "Default twinning (the only scope granted here)" }),
      client_id: z.string().optional().openapi({ description: "With client_secret instead of HTTP Basic (RFC 6749 §2.3.1), or beside it naming the same client" }),
      client_secret: z.string().optional(),
    })
    .openapi("TokenRequest");
  const tokenAnswer = z
    .object({
      access_token: z.string().openapi({ description: "A JWT (RFC 9068, typ at+jwt) signed with a key from /.well-known/jwks.json" }),
      token_type: z.literal("Bearer"),
      expires_in: z.number().int().openapi({ description: "Seconds" }),
      scope: z.literal("twinning"),
    })
    .openapi("TokenResponse");
  const introspection = z
    .object({
      active: z.boolean(),
      sub: z.string().optional(),
      scope: z.enum(["twinning", "twinning:twin", "primary-services"]).optional(),
      iss: z.string().optional(),
      aud: z.string().optional(),
      exp: z.number().int().optional(),
      iat: z.number().int().optional(),
      jti: z.string().optional(),
      token_type: z.literal("Bearer").optional(),
      client_id: z.string().optional(),
      twin_id: z.uuid().optional(),
      act: z.object({ sub: z.string() }).optional().openapi({ description: "primary-services: the secondary acting for the primary (sub)" }),
    })
    .openapi("Introspection", { description: "RFC 7662: `{active: false}` alone for a token that does not work here" });
  const jwks = z
    .object({ keys: z.array(z.object({ kty: z.string(), kid: z.string(), alg: z.string().optional(), use: z.string().optional() }).openapi({ description: "A public JWK" })) })
    .openapi("JWKSet");
  const publicJwk = z
    .object({
      kty: z.string().optional(),
      crv: z.string().optional(),
      x: z.string().optional(),
      y: z.string().optional(),
      kid: z.string().optional(),
      alg: z.string().optional(),
      use: z.string().optional(),
    })
    .openapi("FederationJWK", { description: "A public JWK (RFC 7517) of one of this node's federation signing keys: never the private member d" });
  const federationJwks = z
    .object({ keys: z.array(publicJwk).openapi({ description: "Empty when federation is not configured on this node" }) })
    .openapi("FederationJWKSet");
  const health = (status: z.ZodType) => z.object({ status });

  const routes: RouteConfig[] = [
    {
      method: "post",
      path: "/oauth/token",
      tags: ["oauth"],
      summary: "OAuth 2.0 token endpoint: client_credentials for a provisioned subscriber (HTTP Basic: client id = its tel: address, secret = its credential)",
      security: [{ clientBasic: [] }, {}],
      request: { body: { required: true, content: { "application/x-www-form-urlencoded": { schema: tokenRequest } } } },
      responses: {
        200: { description: "RFC 6749 §5.1 access token answer", headers: noStore, content: json(tokenAnswer) },
        400: { description: "invalid_request (no form body, a parameter missing or repeated), unsupported_grant_type or invalid_scope (SVC0002)", content: json(oauthError) },
        401: {
          description: "invalid_client: client authentication failed (SVC2003)",
          headers: { "WWW-Authenticate": { description: 'Basic realm="twinning"', schema: { type: "string" } } },
          content: json(oauthError),
        },
        403: { description: "unauthorized_client: subscriber not provisioned for twinning (POL2001)", content: json(oauthError) },
        429: { description: "invalid_client: too many failed attempts for this client (POL3004)", headers: retryAfter, content: json(oauthError) },
        500: omaError("Service error (SVC0001; OMA body only)"),
        503: { description: "temporarily_unavailable: too many token requests at once (SVC0001)", headers: retryAfter, content: json(oauthError) },
      },
    },
    {
      method: "post",
      path: "/oauth/introspect",
      tags: ["oauth"],
      summary: "RFC 7662 token introspection, for the operator's own services (messaging, NMS)",
      security: [{ introspectionToken: [] }],
      request: { body: { required: true, content: { "application/x-www-form-urlencoded": { schema: z.object({ token: z.string() }) } } } },
      responses: {
        200: { description: "The token's claims, or `{active: false}`", headers: noStore, content: json(introspection) },
        400: { description: "invalid_request: the token parameter missing or repeated (SVC0002)", content: json(oauthError) },
        401: omaError("Not the introspection token (nor the admin token) (SVC2003; OMA body only)"),
        500: omaError("Service error (SVC0001; OMA body only)"),
      },
    },
    {
      method: "get",
      path: "/.well-known/jwks.json",
      tags: ["operations"],
      summary: "The node's public keys for its access tokens",
      responses: { 200: { description: "JWK set (cacheable for 5 minutes)", content: json(jwks) } },
    },
    {
      method: "get",
      path: "/.well-known/federation-jwks.json",
      tags: ["operations"],
      summary: "The node's public federation signing keys, for peers that configure a jwksUrl instead of keys in their peer list",
      responses: {
        200: {
          description: "JWK set (cacheable for a minute); `{keys: []}` when federation is not configured",
          content: json(federationJwks),
        },
      },
    },
    {
      method: "get",
      path: "/healthz",
      tags: ["operations"],
      summary: "Liveness: the process answers",
      responses: { 200: { description: "Alive", content: json(health(z.literal("ok"))) } },
    },
    {
      method: "get",
      path: "/readyz",
      tags: ["operations"],
      summary: "Readiness: storage reachable and not shutting down",
      responses: {
        200: { description: "Ready", content: json(health(z.literal("ready"))) },
        503: { description: "Not ready: shutting down (draining) or storage unavailable", content: json(health(z.enum(["shutting down", "storage unavailable"]))) },
      },
    },
    {
      method: "get",
      path: "/metrics",
      tags: ["operations"],
      summary: "Prometheus metrics (requests, latencies, outbox depth, peer delivery failures); the metrics token when one is configured",
      security: [{ metricsToken: [] }, {}],
      responses: {
        200: { description: "Prometheus text exposition format", content: { "text/plain": { schema: z.string() } } },
        401: omaError("Not the metrics token, when one is configured (SVC2003)"),
      },
    },
  ];
  for (const route of routes) docs.openAPIRegistry.registerPath(route);
  const generated = docs.getOpenAPI31Document({ openapi: "3.1.0", info: { title: "around", version: "1" } });
  const pathItems: Record<string, object> = {};
  for (const [path, item] of Object.entries(generated.paths ?? {})) pathItems[pathItemName(path)] = { ...item, "x-path": path };
  return { pathItems, schemas: generated.components?.schemas ?? {} };
}

/** A component name for a path (`/.well-known/jwks.json` → `well-known.jwks.json`): names allow letters, digits, `.`, `-` and `_`. */
const pathItemName = (path: string): string => path.replace(/^\/+/, "").replace(/^\./, "").replaceAll("/", ".");

/** Health, readiness, metrics, JWKS and the OpenAPI document with its reference page. */
export function registerOperationalRoutes(app: App, ctx: NodeContext): void {
  app.openAPIRegistry.registerComponent("securitySchemes", "bearer", { type: "http", scheme: "bearer", bearerFormat: "JWT" });
  app.openAPIRegistry.registerComponent("securitySchemes", "adminToken", { type: "http", scheme: "bearer", description: "the operator's admin token" });
  app.openAPIRegistry.registerComponent("securitySchemes", "clientBasic", {
    type: "http",
    scheme: "basic",
    description: "POST /oauth/token: client id = the subscriber's tel: address, secret = the credential the admin API provisioned (form-encoded per RFC 6749 §2.3.1, or raw)",
  });
  app.openAPIRegistry.registerComponent("securitySchemes", "introspectionToken", { type: "http", scheme: "bearer", description: "the operator's introspection token (or its admin token)" });
  app.openAPIRegistry.registerComponent("securitySchemes", "metricsToken", { type: "http", scheme: "bearer", description: "the metrics token, when one is configured" });
  const document = () => {
    const generated = app.getOpenAPI31Document({
      openapi: "3.1.0",
      info: {
        title: "Twinning Devices API",
        version: "1.0.0",
        description:
          `OMA RESTful Network API for Twinning Devices, node of operator ${ctx.config.operatorId}. Errors use the OMA requestError body. ` +
          "Devices get their tokens from POST /oauth/token; it and the node's other routes outside the versioned API (/oauth/introspect, /.well-known/jwks.json, /.well-known/federation-jwks.json, /healthz, /readyz, /metrics) " +
          "are described under components.pathItems, each with its path in x-path. Notifications: webhooks.twinningNotification (callbacks) and the notifications event streams.",
      },
      servers: [{ url: ctx.deviceBaseUrl() }],
    });
    const around = aroundTheApi();
    return {
      ...generated,
      components: {
        ...generated.components,
        schemas: { ...generated.components?.schemas, ...around.schemas },
        pathItems: { ...generated.components?.pathItems, ...around.pathItems },
      },
    };
  };
  let cached: ReturnType<typeof document> | undefined;
  app.get("/twinning/v1/openapi.json", (c) => c.json((cached ??= document())));
  app.get("/twinning/v1/docs", (c) => c.html(referencePage((cached ??= document()))));

  app.get("/.well-known/jwks.json", (c) => c.json(ctx.jwks(), 200, { "cache-control": "public, max-age=300" }));
  // Our federation signing keys, for peers that configure a jwksUrl (public keys only).
  app.get("/.well-known/federation-jwks.json", (c) => (ctx.federation ? c.json(ctx.federation.jwks(), 200, { "cache-control": "public, max-age=60" }) : c.json({ keys: [] })));
  app.get("/healthz", (c) => c.json({ status: "ok" }));
  app.get("/readyz", async (c) => {
    if (ctx.draining.aborted) return c.json({ status: "shutting down" }, 503);
    try {
      await ctx.store.ping();
      return c.json({ status: "ready" });
    } catch {
      return c.json({ status: "storage unavailable" }, 503);
    }
  });
  app.get("/metrics", requireMetricsToken(ctx), async (c) => c.text(await ctx.metrics.registry.metrics(), 200, { "content-type": ctx.metrics.registry.contentType }));
}
