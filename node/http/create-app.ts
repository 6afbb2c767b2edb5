import { limitBody } from "./body-limit.ts";
import { OpenAPIHono } from "@hono/zod-openapi";
import { requestId } from "hono/request-id";
import { matchedRoutes } from "hono/route";
import { registerAdminRoutes } from "../admin-api/subscriber-routes.ts";
import { registerPrimaryRoutes } from "../device-api/primary-routes.ts";
import { registerSecondaryRoutes } from "../device-api/secondary-routes.ts";
import { registerSubscriptionRoutes } from "../device-api/subscription-routes.ts";
import { errorResponse, toTwinningError } from "../errors/error-response.ts";
import { TwinningError } from "../errors/twinning-error.ts";
import { registerOAuthRoutes } from "../oauth/oauth-routes.ts";
import type { NodeContext } from "../service/node-context.ts";
import type { AppEnv } from "./app-env.ts";
import { registerOperationalRoutes } from "./operational-routes.ts";
import { validationHook } from "./route-helper.ts";

const JSON_TYPE = /^application\/([\w.-]+\+)?json$/i;

/** The device listener's app: device API, OAuth, admin API, docs and operations endpoints. */
export function createDeviceApp(ctx: NodeContext): OpenAPIHono<AppEnv> {
  const app = new OpenAPIHono<AppEnv>({ defaultHook: validationHook });

  app.use("*", requestId({ limitLength: 64 }));
  app.use("*", async (c, next) => {
    const started = performance.now();
    await next();
    // Route templates, not paths: paths carry subscriber addresses.
    const route = matchedRoutes(c).findLast((r) => r.method !== "ALL")?.path ?? "unmatched";
    const seconds = (performance.now() - started) / 1000;
    ctx.metrics.requests.inc({ method: c.req.method, route, status: String(c.res.status) });
    ctx.metrics.latency.observe({ method: c.req.method, route }, seconds);
    if (ctx.logger.isLevelEnabled("info")) {
      ctx.logger.info({ requestId: c.get("requestId"), method: c.req.method, route, status: c.res.status, ms: Math.round(seconds * 1e4) / 10 }, "request");
    }
  });
  app.use("*", limitBody(ctx.config.limits.maxBodyBytes));
  // JSON APIs take JSON: anything else with a body is SVC0002 naming Content-Type.
  app.use("/twinning/*", requireJsonBody);
  app.use("/admin/*", requireJsonBody);

  registerSecondaryRoutes(app, ctx);
  registerPrimaryRoutes(app, ctx);
  registerSubscriptionRoutes(app, ctx);
  registerAdminRoutes(app, ctx);
  registerOAuthRoutes(app, ctx);
  registerOperationalRoutes(app, ctx);

  app.notFound(() => errorResponse(new TwinningError("not_found", { variables: ["path"] })));
  app.onError((error, c) => {
    const e = toTwinningError(error);
    // Messages of our own errors never hold secrets; causes are logged by class only.
    const log = { requestId: c.get("requestId"), code: e.code, messageId: e.messageId, status: e.status, detail: e.detail, cause: (e.cause as Error | undefined)?.name };
    if (e.status >= 500) ctx.logger.error({ ...log, err: e.cause ?? e }, "request failed");
    else ctx.logger.info(log, "request refused");
    return errorResponse(e);
  });
  return app;
}

async function requireJsonBody(c: import("hono").Context<AppEnv>, next: () => Promise<void>): Promise<void> {
  const method = c.req.method;
  if (method === "POST" || method === "PUT" || method === "PATCH") {
    const length = c.req.header("content-length");
    const hasBody = (length !== undefined && length !== "0") || c.req.header("transfer-encoding") !== undefined;
    const type = (c.req.header("content-type") ?? "").split(";")[0]!.trim();
    if (hasBody && !JSON_TYPE.test(type)) throw new TwinningError("invalid_input", { variables: ["Content-Type"] });
  }
  await next();
}
