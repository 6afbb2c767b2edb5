import type { NodeContext } from "../service/node-context.ts";
import { requireMetricsToken } from "./authenticate.ts";
import type { App } from "./route-helper.ts";
import { referencePage } from "./reference-page.ts";

/** Health, readiness, metrics, JWKS and the OpenAPI document with its reference page. */
export function registerOperationalRoutes(app: App, ctx: NodeContext): void {
  app.openAPIRegistry.registerComponent("securitySchemes", "bearer", { type: "http", scheme: "bearer", bearerFormat: "JWT" });
  app.openAPIRegistry.registerComponent("securitySchemes", "adminToken", { type: "http", scheme: "bearer", description: "the operator's admin token" });
  const document = () =>
    app.getOpenAPI31Document({
      openapi: "3.1.0",
      info: {
        title: "Twinning Devices API",
        version: "1.0.0",
        description: `OMA RESTful Network API for Twinning Devices, node of operator ${ctx.config.operatorId}. Errors use the OMA requestError body.`,
      },
      servers: [{ url: ctx.deviceBaseUrl() }],
    });
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
