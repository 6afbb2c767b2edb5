import type { RouteConfig } from "@hono/zod-openapi";
import type { OpenAPIHono } from "@hono/zod-openapi";
import type { Context } from "hono";
import type { z } from "zod";
import { TwinningError } from "../errors/twinning-error.ts";
import type { AppEnv } from "./app-env.ts";

export type App = OpenAPIHono<AppEnv>;

/**
 * Registers a documented route. Handlers return plain Responses: the route's schemas drive
 * validation and the OpenAPI document, while the one error mapping shapes every failure.
 */
export function addRoute(app: App, route: RouteConfig, handler: (c: Context<AppEnv>) => Promise<Response>): void {
  app.openapi(route, handler as never);
}

/** The validated JSON body (validated by the route's schema before the handler runs). */
export function validBody<S extends z.ZodType>(c: Context<AppEnv>, _schema: S): z.infer<S> {
  return (c.req as unknown as { valid(target: "json"): z.infer<S> }).valid("json");
}

/** Validation failures become SVC0002 naming the first bad field (DESIGN "Errors"). */
export function validationHook(result: { success: boolean; error?: { issues: { path: PropertyKey[]; message: string }[] } }): void {
  if (result.success) return;
  const issue = result.error?.issues[0];
  const field = issue && issue.path.length > 0 ? issue.path.map(String).join(".") : "body";
  throw new TwinningError("invalid_input", { variables: [field], detail: issue?.message });
}

export const json = (c: Context<AppEnv>, body: unknown, status: 200 | 201 = 200): Response => c.json(body as object, status);

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
