import type { RouteConfig } from "@hono/zod-openapi";
import type { OpenAPIHono } from "@hono/zod-openapi";
import type { Context, MiddlewareHandler } from "hono";
import type { z } from "zod";
import { TwinningError } from "../errors/twinning-error.ts";
import type { AppEnv } from "./app-env.ts";
import { requestCheck } from "./request-check.ts";
import { requireToken } from "./authenticate.ts";
import type { DirectInput, DirectRoutes } from "./direct-answers.ts";
import type { NodeContext } from "../service/node-context.ts";
import type { Scope } from "../tokens/scopes.ts";

export type App = OpenAPIHono<AppEnv>;

/**
 * Registers a documented route. The route's schemas drive the OpenAPI document and are checked
 * in one step before the handler (requestCheck); handlers return plain Responses, and the one
 * error mapping shapes every failure. Route middleware (authentication) runs first, as with
 * `app.openapi`.
 */
export function addRoute(app: App, route: RouteConfig, handler: (c: Context<AppEnv>) => Promise<Response>): void {
  const { middleware, hide, ...spec } = route;
  if (!hide) app.openAPIRegistry.registerPath(spec);
  const check = requestCheck(spec.request);
  const before = (middleware === undefined ? [] : Array.isArray(middleware) ? middleware : [middleware]) as MiddlewareHandler<AppEnv>[];
  const run = check ? async (c: Context<AppEnv>) => (await check(c), handler(c)) : handler;
  app.on([spec.method.toUpperCase()], [appPath(spec.path)], ...before, run);
}

/** The app's route template for an OpenAPI path (`/a/{addr}` → `/a/:addr`): what metrics and logs name. */
const appPath = (path: string): string => path.replaceAll(/\/{(.+?)}/g, "/:$1");

/**
 * Registers a route that is also answered directly on node:http (DirectRoutes): one definition
 * and one answer function, two ways in. The app's route authenticates with `scopes`, checks the
 * route's path and body schemas, and answers 200 with what `answer` returns; the direct route
 * does the same without the app.
 */
export function addDirectRoute(
  app: App,
  direct: DirectRoutes,
  ctx: NodeContext,
  route: RouteConfig & { method: "put"; request: { params: z.ZodType; body: { content: { "application/json": { schema: z.ZodType } }; required: true } } },
  spec: { scopes: readonly Scope[]; answer: (input: DirectInput) => Promise<unknown> },
): void {
  const body = route.request.body.content["application/json"].schema;
  addRoute(app, { ...route, middleware: [requireToken(ctx, spec.scopes)] }, async (c) =>
    json(c, await spec.answer({ principal: c.get("principal"), params: validParams(c), body: validBody(c, body) })),
  );
  direct.add({ method: route.method, path: route.path, route: appPath(route.path), scopes: spec.scopes, params: route.request.params, body, answer: spec.answer });
}

/** The validated JSON body (validated by the route's schema before the handler runs). */
export function validBody<S extends z.ZodType>(c: Context<AppEnv>, _schema: S): z.infer<S> {
  return (c.req as unknown as { valid(target: "json"): z.infer<S> }).valid("json");
}

/** The validated path parameters (validated by the route's schema before the handler runs). */
function validParams(c: Context<AppEnv>): Record<string, string> {
  return (c.req as unknown as { valid(target: "param"): Record<string, string> }).valid("param");
}

export const json = (c: Context<AppEnv>, body: unknown, status: 200 | 201 = 200): Response => c.json(body as object, status);

/** An answer that carries a bearer token or an activation code: no cache on the way may keep it (as /oauth/token's). */
export const secretJson = (c: Context<AppEnv>, body: unknown, status: 200 | 201 = 200): Response =>
  c.json(body as object, status, { "cache-control": "no-store", pragma: "no-cache" });

/**
 * A 200 JSON answer that ReadyAnswers may send again while the store's read version holds. Only
 * for a GET whose answer is made of nothing but its target, its bearer token and reads of
 * subscribers and twins (no clock, no other table, no other header).
 */
export function reusableJson(c: Context<AppEnv>, body: unknown): Response {
  const text = JSON.stringify(body);
  c.set("reusableBody", text);
  return c.body(text, 200, { "content-type": "application/json" });
}
