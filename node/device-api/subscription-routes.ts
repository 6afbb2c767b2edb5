import { randomUUID } from "node:crypto";
import { createRoute, z } from "@hono/zod-openapi";
import type { TwinRole } from "../domain/twin.ts";
import { TwinningError } from "../errors/twinning-error.ts";
import { pathSubject, requireToken } from "../http/authenticate.ts";
import { addRoute, json, validBody, type App } from "../http/route-helper.ts";
import { bearer, bodyTooLarge, clientCorrelatorSchema, conflict, errorResponses, notificationBodySchema, subscriptionListSchema, subscriptionSchema } from "../http/schemas.ts";
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
/** A success answer's JSON body: documented, not checked (subscriptionView in resources.ts is what is sent). */
const ok = (description: string, schema: z.ZodType) => ({ description, content: { "application/json": { schema } } });
const subscriptionAnswer = z.object({ subscription: subscriptionSchema });

const NOTIFICATION_BODY_REF = { $ref: "#/components/schemas/TwinningNotificationBody" };
const DELIVERY_ID = "X-Notification-Delivery-Id";
const DELIVERY_ID_TEXT = "The same on every attempt of one notification to one subscription (delivery is at least once): drop a repeat";
const CALLBACK_ANSWERS = {
  "2XX": { description: "Acknowledged: the notification is delivered" },
  default: { description: "Not acknowledged (or no answer in time): sent again later with exponential backoff, until acknowledged or too old" },
};

/**
 * The callback the node POSTs to a subscription's notifyURL, as an OpenAPI 3.1 webhook (and as
 * the subscription POST's callback): one notification per request, after its change committed.
 */
function registerNotificationDocs(app: App): void {
  app.openAPIRegistry.registerWebhook({
    method: "post",
    path: "twinningNotification",
    summary: "A notification POSTed to a subscription's callbackReference.notifyURL (HLF-PD-007, HLF-SD-008, HLF-CM-005)",
    description: "Sent after the change is committed. The body carries the subscription's callbackData when it gave one.",
    request: {
      headers: z.object({ [DELIVERY_ID]: z.string().openapi({ description: DELIVERY_ID_TEXT, example: "42" }) }),
      body: { content: { "application/json": { schema: notificationBodySchema } }, required: true },
    },
    responses: CALLBACK_ANSWERS,
  });
}

/** The same callback, on the subscription POST (the notifyURL it gave). */
const notificationCallbacks = {
  twinningNotification: {
    "{$request.body#/callbackReference/notifyURL}": {
      post: {
        summary: "A notification POSTed to the subscription's notifyURL (see webhooks.twinningNotification)",
        parameters: [{ name: DELIVERY_ID, in: "header" as const, required: true, description: DELIVERY_ID_TEXT, schema: { type: "string" as const } }],
        requestBody: { required: true, content: { "application/json": { schema: NOTIFICATION_BODY_REF } } },
        responses: CALLBACK_ANSWERS,
      },
    },
  },
};

/** One event of the stream, in the form of OpenAPI 3.2's itemSchema for text/event-stream (3.1 has no such field: hence the x- name). */
const eventSchema = {
  type: "object" as const,
  properties: {
    id: { type: "string" as const, description: "The notification's id: send it as Last-Event-ID to resume after it" },
    event: { type: "string" as const, enum: ["twinningStatusNotification", "twinningActivatedNotification", "twinningDeactivatedNotification"] },
    data: { type: "string" as const, contentMediaType: "application/json", contentSchema: NOTIFICATION_BODY_REF, description: "One line of JSON: the notification (without callbackData)" },
  },
  required: ["id", "event", "data"],
};
const EVENT_EXAMPLE =
  'id: 7\nevent: twinningStatusNotification\ndata: {"twinningStatusNotification":{"twinId":"0b6f3c6e-2f4c-4d43-9d0e-2a8f5c1b7e11","primaryAddress":"tel:+15550001","secondaryAddress":"tel:+15550002","status":"Off","changedBy":"primary","timestamp":"2030-01-01T12:00:00.000Z"}}\n\n';

/** Callback subscriptions and the SSE stream (HLF-PD-007, HLF-SD-008, HLF-CM-005). */
export function registerSubscriptionRoutes(app: App, ctx: NodeContext): void {
  for (const role of ["primary", "secondary"] as const) registerRoleRoutes(app, ctx, role);
  registerNotificationDocs(app);
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
      callbacks: notificationCallbacks,
      responses: {
        201: ok("The subscription (with the clientCorrelator when one was given)", subscriptionAnswer),
        ...errorResponses,
        ...bodyTooLarge,
        ...conflict("SVC0005 the same clientCorrelator with a different request"),
      },
    }),
    async (c) => {
      const address = pathSubject(c);
      const body = validBody(c, subscriptionRequest);
      if (!ctx.config.limits.allowPrivateCallbackTargets && isInternalHostLiteral(body.callbackReference.notifyURL)) {
        throw new TwinningError("internal_callback_target", { variables: ["callbackReference.notifyURL"] });
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
    createRoute({ method: "get", path: `${base}/subscriptions`, tags, summary: `${role}: list subscriptions`, security: bearer, middleware: [auth] as const, request: { params }, responses: { 200: ok("The live subscriptions", z.object({ subscriptionList: subscriptionListSchema })), ...errorResponses } }),
    async (c) => {
      const address = pathSubject(c);
      const list = await ctx.store.listSubscriptions(address, role, ctx.nowMs());
      return json(c, { subscriptionList: { subscription: list.map((s) => subscriptionView(ctx, s)), resourceURL: listUrl(address) } });
    },
  );

  const one = params.extend({ id: z.string().openapi({ param: { name: "id", in: "path" } }) });
  addRoute(
    app,
    createRoute({ method: "get", path: `${base}/subscriptions/{id}`, tags, summary: `${role}: read a subscription`, security: bearer, middleware: [auth] as const, request: { params: one }, responses: { 200: ok("The subscription", subscriptionAnswer), ...errorResponses } }),
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
      request: {
        params,
        headers: z.object({
          "Last-Event-ID": z.string().optional().openapi({ description: "Resume: the events committed after this id are sent first, with no gap" }),
        }),
      },
      responses: {
        200: {
          description:
            "A Server-Sent Events stream (text/event-stream). Each event: `id:` (resume with the Last-Event-ID header), `event:` the notification type, and one `data:` line: " +
            "the notification as JSON, a TwinningNotificationBody (#/components/schemas/TwinningNotificationBody; the same bodies as the callbacks, without callbackData). " +
            "Comment lines: `: connected` once any replay is written, `: heartbeat` every 15 s. The stream ends when the token expires or is revoked.",
          content: {
            "text/event-stream": {
              schema: z.string().openapi({ description: "The event stream" }),
              example: EVENT_EXAMPLE,
              "x-itemSchema": eventSchema,
            },
          },
        },
        ...errorResponses,
      },
    }),
    async (c) => streamNotifications(ctx, c, pathSubject(c), role),
  );
}
