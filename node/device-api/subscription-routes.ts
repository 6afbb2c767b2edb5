import { randomUUID } from "node:crypto";
import { createRoute, z } from "@hono/zod-openapi";
import type { TwinRole } from "../domain/twin.ts";
import { TwinningError } from "../errors/twinning-error.ts";
import { pathSubject, requireToken } from "../http/authenticate.ts";
import { addRoute, json, validBody, type App } from "../http/route-helper.ts";
import { bearer, clientCorrelatorSchema, errorResponses } from "../http/schemas.ts";
import type { NodeContext } from "../service/node-context.ts";
import { encodeAddress } from "../domain/address.ts";
import { createHash } from "node:crypto";
import { subscriptionView } from "./resources.ts";
import { streamNotifications } from "./notification-stream.ts";
import { isInternalHostLiteral } from "../notifications/callback-target.ts";

const tags = ["notifications"];
const params = z.object({
  addr: z.string().openapi({ param: { name: "addr", in: "path" }, example: "tel:+15550001" }),
});

const subscriptionRequest = z.object({
  callbackReference: z.object({
    notifyURL: z.url({ protocol: /^https?$/ }).max(2048),
    callbackData: z.string().max(1024).optional(),
  }),
  duration: z.number().int().min(1).optional().openapi({ description: "seconds; capped by policy" }),
  clientCorrelator: clientCorrelatorSchema.optional(),
});
const ok = (description: string) => ({ description, content: { "application/json": { schema: z.object({}).passthrough() } } });

/** Callback subscriptions and the SSE stream (HLF-PD-007, HLF-SD-008, HLF-CM-005). */
export function registerSubscriptionRoutes(app: App, ctx: NodeContext): void {
  for (const role of ["primary", "secondary"] as const) registerRoleRoutes(app, ctx, role);
}

/** One role's routes: each role has its own paths, so hono's RegExpRouter can take them all. */
function registerRoleRoutes(app: App, ctx: NodeContext, role: TwinRole): void {
  const base = `/twinning/v1/${role}/{addr}`;
  // The full scope: a twin-scoped token covers one twin, not all of a subscriber's notifications.
  const auth = requireToken(ctx, ["twinning"]);
  const listUrl = (address: string) => `${ctx.deviceBaseUrl()}/twinning/v1/${role}/${encodeAddress(address)}/subscriptions`;

  addRoute(
    app,
    createRoute({
      method: "post",
      path: `${base}/subscriptions`,
      tags,
      summary: `${role}: subscribe a callback URL to twinning notifications (server-based clients)`,
      security: bearer,
      middleware: [auth] as const,
      request: { params, body: { content: { "application/json": { schema: subscriptionRequest } }, required: true } },
      responses: { 201: ok("The subscription"), ...errorResponses },
    }),
    async (c) => {
      const address = pathSubject(c);
      const body = validBody(c, subscriptionRequest);
      if (!ctx.config.limits.allowPrivateCallbackTargets && isInternalHostLiteral(body.callbackReference.notifyURL)) {
        throw new TwinningError("invalid_input", { variables: ["callbackReference.notifyURL"], detail: "internal callback address refused" });
      }
      const nowMs = ctx.nowMs();
      const durationS = Math.min(body.duration ?? ctx.config.limits.maxSubscriptionDurationSeconds, ctx.config.limits.maxSubscriptionDurationSeconds);
      const fingerprint = createHash("sha256").update(JSON.stringify([body.callbackReference, body.duration ?? null])).digest("base64url");
      const { subscription } = await ctx.store.createSubscription({
        subscription: {
          subscriptionId: randomUUID(),
          address,
          role,
          notifyUrl: body.callbackReference.notifyURL,
          callbackData: body.callbackReference.callbackData,
          createdAtMs: nowMs,
          expiresAtMs: nowMs + durationS * 1000,
        },
        maxPerSubscriber: ctx.config.limits.maxSubscriptionsPerSubscriber,
        ...(body.clientCorrelator ? { correlator: { subscriber: address, operation: `subscription:${role}`, key: body.clientCorrelator, fingerprint } } : {}),
      });
      return json(c, { subscription: { ...subscriptionView(ctx, subscription), ...(body.clientCorrelator ? { clientCorrelator: body.clientCorrelator } : {}) } }, 201);
    },
  );

  addRoute(
    app,
    createRoute({ method: "get", path: `${base}/subscriptions`, tags, summary: `${role}: list subscriptions`, security: bearer, middleware: [auth] as const, request: { params }, responses: { 200: ok("The subscriptions"), ...errorResponses } }),
    async (c) => {
      const address = pathSubject(c);
      const list = await ctx.store.listSubscriptions(address, role, ctx.nowMs());
      return json(c, { subscriptionList: { subscription: list.map((s) => subscriptionView(ctx, s)), resourceURL: listUrl(address) } });
    },
  );

  const one = params.extend({ id: z.string().openapi({ param: { name: "id", in: "path" } }) });
  addRoute(
    app,
    createRoute({ method: "get", path: `${base}/subscriptions/{id}`, tags, summary: `${role}: read a subscription`, security: bearer, middleware: [auth] as const, request: { params: one }, responses: { 200: ok("The subscription"), ...errorResponses } }),
    async (c) => {
      const s = await ctx.store.getSubscription(pathSubject(c), role, c.req.param("id") ?? "", ctx.nowMs());
      if (!s) throw new TwinningError("not_found", { variables: ["subscription"] });
      return json(c, { subscription: subscriptionView(ctx, s) });
    },
  );

  addRoute(
    app,
    createRoute({ method: "delete", path: `${base}/subscriptions/{id}`, tags, summary: `${role}: cancel a subscription`, security: bearer, middleware: [auth] as const, request: { params: one }, responses: { 204: { description: "Cancelled" }, ...errorResponses } }),
    async (c) => {
      if (!(await ctx.store.deleteSubscription(pathSubject(c), role, c.req.param("id") ?? "", ctx.nowMs()))) throw new TwinningError("not_found", { variables: ["subscription"] });
      return c.body(null, 204);
    },
  );

  addRoute(
    app,
    createRoute({
      method: "get",
      path: `${base}/notifications`,
      tags,
      summary: `${role}: Server-Sent Events stream of the same notifications (device-based clients); resumes from Last-Event-ID`,
      security: bearer,
      middleware: [auth] as const,
      request: { params },
      responses: { 200: { description: "text/event-stream", content: { "text/event-stream": { schema: z.string() } } }, ...errorResponses },
    }),
    async (c) => streamNotifications(ctx, c, pathSubject(c), role),
  );
}
