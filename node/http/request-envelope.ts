import type { Context, MiddlewareHandler } from "hono";
import { matchedRoutes } from "hono/route";
import { toTwinningError } from "../errors/error-response.ts";
import type { TwinningError } from "../errors/twinning-error.ts";
import type { NodeContext } from "../service/node-context.ts";
import type { AppEnv } from "./app-env.ts";
import { ReadyAnswers, type AnswerRecorder } from "./ready-answers.ts";

const REQUEST_ID = /^[\w\-=]{1,64}$/;

/** The caller's `X-Request-Id` when it is 1–64 word characters, else a fresh UUID. */
export function requestIdOf(given: string | undefined): string {
  return given !== undefined && REQUEST_ID.test(given) ? given : crypto.randomUUID();
}

/**
 * What a refused or failed request leaves behind: the error the answer is made from, and its
 * log line (info for a refusal, error with its cause for a failure). Messages of our own errors
 * never hold secrets; causes are logged by class only.
 */
export function refusalRecorder(ctx: NodeContext): (requestId: string | undefined, error: unknown) => TwinningError {
  return (requestId, error) => {
    const e = toTwinningError(error);
    const log = { requestId, code: e.code, messageId: e.messageId, status: e.status, detail: e.detail, cause: (e.cause as Error | undefined)?.name };
    if (e.status >= 500) ctx.logger.error({ ...log, err: e.cause ?? e }, "request failed");
    else ctx.logger.info(log, "request refused");
    return e;
  };
}

/**
 * What every answer leaves behind: the request counter and latency histogram by route
 * template (never the path: paths carry subscriber addresses), the count of ready answers, and
 * the info-level access log.
 */
export function answerRecorder(ctx: NodeContext): AnswerRecorder {
  return ({ requestId, method, route, status, seconds, ready, direct }) => {
    ctx.metrics.requests.inc({ method, route, status: String(status) });
    if (ready) ctx.metrics.readyAnswers.inc({ route });
    if (direct) ctx.metrics.directAnswers.inc({ route });
    ctx.metrics.latency.observe({ method, route }, seconds);
    if (ctx.logger.isLevelEnabled("info")) {
      ctx.logger.info({ requestId, method, route, status, ms: Math.round(seconds * 1e4) / 10, ...(ready ? { ready } : {}), ...(direct ? { direct } : {}) }, "request");
    }
  };
}

/** The route template a request matched (never its path: paths carry addresses and twin ids), or "unmatched". */
export const routeTemplateOf = (c: Context): string => matchedRoutes(c).findLast((r) => r.method !== "ALL")?.path ?? "unmatched";

/**
 * The outermost layer of every device-listener request, in one middleware (each layer of
 * hono's chain costs an async hop per request): the request id (echoed back), then, once
 * answered, the answer's record and, for a reusable answer (reusableJson), keeping it in
 * ReadyAnswers at the store's read version taken here, before any read the answer is built from.
 */
export function requestEnvelope(ctx: NodeContext): MiddlewareHandler<AppEnv> {
  const record = answerRecorder(ctx);
  const answers = ctx.answers;
  return async (c, next) => {
    const started = performance.now();
    const requestId = requestIdOf(c.req.header("x-request-id"));
    c.set("requestId", requestId);
    c.header("X-Request-Id", requestId);
    const incoming = c.env?.incoming; // absent when the app is called without Node (app.request)
    const readyKey = answers && incoming ? ReadyAnswers.keyOf(incoming) : undefined;
    const version = readyKey === undefined ? undefined : answers!.version();
    await next();
    const route = routeTemplateOf(c);
    const status = c.res.status;
    if (version !== undefined && status === 200) {
      const body = c.get("reusableBody");
      if (body !== undefined) answers!.keep(readyKey!, { body, route, version, expiresAtS: c.get("principal").verifiedUntilS });
    }
    record({ requestId, method: c.req.method, route, status, seconds: (performance.now() - started) / 1000 });
  };
}
