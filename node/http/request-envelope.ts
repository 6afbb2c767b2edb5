import type { MiddlewareHandler } from "hono";
import { matchedRoutes } from "hono/route";
import type { NodeContext } from "../service/node-context.ts";
import type { AppEnv } from "./app-env.ts";

const REQUEST_ID = /^[\w\-=]{1,64}$/;

/**
 * The outermost layer of every device-listener request, in one middleware (each layer of
 * hono's chain costs an async hop per request): the request id (the caller's `X-Request-Id`
 * when it is 1–64 word characters, else a fresh UUID; echoed back), then, once answered, the
 * request counter and latency histogram by route template (never the path: paths carry
 * subscriber addresses) and the info-level access log.
 */
export function requestEnvelope(ctx: NodeContext): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const started = performance.now();
    const given = c.req.header("x-request-id");
    const requestId = given !== undefined && REQUEST_ID.test(given) ? given : crypto.randomUUID();
    c.set("requestId", requestId);
    c.header("X-Request-Id", requestId);
    await next();
    const route = matchedRoutes(c).findLast((r) => r.method !== "ALL")?.path ?? "unmatched";
    const seconds = (performance.now() - started) / 1000;
    const method = c.req.method;
    const status = c.res.status;
    ctx.metrics.requests.inc({ method, route, status: String(status) });
    ctx.metrics.latency.observe({ method, route }, seconds);
    if (ctx.logger.isLevelEnabled("info")) {
      ctx.logger.info({ requestId, method, route, status, ms: Math.round(seconds * 1e4) / 10 }, "request");
    }
  };
}
