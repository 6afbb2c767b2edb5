import { createRoute, z } from "@hono/zod-openapi";
import pLimit from "p-limit";
import { parseAddress } from "../domain/address.ts";
import { TwinningError } from "../errors/twinning-error.ts";
import { requireAdmin } from "../http/authenticate.ts";
import { addRoute, json, validBody, type App } from "../http/route-helper.ts";
import { addressSchema, addrParam, errorResponses, operatorIdSchema, statusSchema } from "../http/schemas.ts";
import type { NodeContext } from "../service/node-context.ts";
import type { SubscriberChange } from "../store/store-port.ts";
import { hashCredential } from "../tokens/credentials.ts";

const tags = ["admin"];
const ADMIN_HASHES_AT_ONCE = 2;
const base = "/admin/v1/subscribers/{addr}";
const admin = [{ adminToken: [] }];

const subscriberRequest = z.object({
  subscriber: z.object({
    twinning: z.boolean(),
    credential: z.string().min(8).max(256).openapi({ description: "the device's client secret for /oauth/token" }),
  }),
});
const subscriberResponse = {
  content: {
    "application/json": {
      schema: z
        .object({ subscriber: z.object({ address: addressSchema.openapi({ description: "The subscriber's address, normalized" }), twinning: z.boolean() }) })
        .openapi("AdminSubscriber"),
    },
  },
};

/** A twin as the operator sees it (GET /admin/v1/twins): both sides and the register's version, no tokens. */
const adminTwinSchema = z
  .object({
    twinId: z.uuid(),
    primaryAddress: addressSchema,
    primaryOperatorId: operatorIdSchema,
    secondaryAddress: addressSchema,
    secondaryOperatorId: operatorIdSchema,
    name: z.string(),
    status: statusSchema,
    version: z.number().int().openapi({ description: "The twin's version: one more at each change" }),
  })
  .openapi("AdminTwin");
const twinPageSchema = z
  .object({
    next: z.uuid().optional().openapi({ description: "When the page is full: the `after` of the next page (the last twin's id)" }),
    twins: z.array(adminTwinSchema),
  })
  .openapi("AdminTwinPage");

/** An outbox entry given up on: where it went and why, never its payload. */
const deadLetterSchema = z
  .object({
    id: z.number().int(),
    lane: z.string().openapi({ description: "The delivery lane (entries of one lane go in order)" }),
    kind: z.enum(["callback", "peer"]),
    target: z.string().openapi({ description: "peer: the operator id; callback: the notifyURL without its userinfo, query or fragment (`(not a URL)` when it cannot be read)" }),
    attempts: z.number().int(),
    lastError: z.string().optional().openapi({ description: "Why the last attempt failed, when it was recorded" }),
    createdAt: z.iso.datetime(),
  })
  .openapi("DeadLetter");
const deadLettersSchema = z.object({ deadLetters: z.array(deadLetterSchema).openapi({ description: "Newest first" }) }).openapi("DeadLetterList");

const reloadSchema = z
  .object({
    peers: z.number().int().min(0).openapi({ description: "Peers in the peer list now" }),
    keys: z.number().int().min(0).openapi({ description: "This node's signing keys now" }),
  })
  .openapi("PeerReload");

/** DESIGN "Tokens": the operator provisions who subscribes to twinning (HLF-CM-006). */
export function registerAdminRoutes(app: App, ctx: NodeContext): void {
  const guard = requireAdmin(ctx);
  // At most two credentials hashed at once: scrypt runs on libuv's pool (four threads), which the
  // token endpoint's checks and callbacks' DNS lookups share; bulk provisioning waits its turn.
  const hashing = pLimit(ADMIN_HASHES_AT_ONCE);
  // Subscribers, twins and dead letters are for the operator's eyes: no cache keeps them.
  app.use("/admin/v1/*", async (c, next) => {
    await next();
    c.header("Cache-Control", "no-store");
  });
  const view = (address: string, twinning: boolean) => ({ subscriber: { address, twinning } });
  // Twins that (de-)provisioning ended: their notifications go out, and the operator can see why.
  const subscriberChanged = (change: SubscriberChange, why: string) => {
    if (change.endedTwins.length === 0) return;
    ctx.committed(change.notifications, change.queued);
    for (const twin of change.endedTwins) ctx.logger.warn({ twinId: twin.twinId, primaryOperatorId: twin.primaryOperatorId, secondaryOperatorId: twin.secondaryOperatorId }, `subscriber ${why}`);
  };

  addRoute(
    app,
    createRoute({
      method: "put",
      path: base,
      tags,
      summary: "Provision a subscriber for twinning and set its device credential",
      security: admin,
      middleware: [guard] as const,
      request: { params: addrParam, body: { content: { "application/json": { schema: subscriberRequest } }, required: true } },
      responses: { 200: { description: "Updated", ...subscriberResponse }, 201: { description: "Created", ...subscriberResponse }, ...errorResponses },
    }),
    async (c) => {
      const address = parseAddress(c.req.param("addr") ?? "", "address");
      const { subscriber } = validBody(c, subscriberRequest);
      const change = await ctx.store.putSubscriber(
        { address, twinningEnabled: subscriber.twinning, credentialHash: await hashing(() => hashCredential(subscriber.credential)), updatedAtMs: ctx.nowMs() },
        ctx.config.operatorId,
      );
      // A new credential: the tokens issued before no longer work, nor what they opened.
      ctx.hub.revoke(address);
      subscriberChanged(change, "provisioned here: another operator's twin naming it ended");
      const { created } = change;
      // The audit trail of provisioning (never the credential): who changed, and what ended with it.
      ctx.logger.info({ address, created, twinning: subscriber.twinning, twinsEnded: change.endedTwins.length }, "subscriber provisioned");
      return json(c, view(address, subscriber.twinning), created ? 201 : 200);
    },
  );

  addRoute(
    app,
    createRoute({ method: "get", path: base, tags, summary: "Read a subscriber", security: admin, middleware: [guard] as const, request: { params: addrParam }, responses: { 200: { description: "The subscriber", ...subscriberResponse }, ...errorResponses } }),
    async (c) => {
      const address = parseAddress(c.req.param("addr") ?? "", "address");
      const s = await ctx.store.getSubscriber(address);
      if (!s) throw new TwinningError("not_found", { variables: ["subscriber"] });
      return json(c, view(s.address, s.twinningEnabled));
    },
  );

  addRoute(
    app,
    createRoute({ method: "delete", path: base, tags, summary: "De-provision a subscriber: its twins, tokens, notification streams, callback subscriptions and notification history end at once", security: admin, middleware: [guard] as const, request: { params: addrParam }, responses: { 204: { description: "Deleted" }, ...errorResponses } }),
    async (c) => {
      const address = parseAddress(c.req.param("addr") ?? "", "address");
      const change = await ctx.store.deleteSubscriber({ address, ownOperatorId: ctx.config.operatorId, nowMs: ctx.nowMs() });
      if (!change.deleted) throw new TwinningError("not_found", { variables: ["subscriber"] });
      ctx.hub.revoke(address);
      subscriberChanged(change, "de-provisioned: its twin ended");
      ctx.logger.info({ address, twinsEnded: change.endedTwins.length }, "subscriber de-provisioned");
      return c.body(null, 204);
    },
  );

  addRoute(
    app,
    createRoute({
      method: "post",
      path: "/admin/v1/peers/reload",
      tags,
      summary: "Re-read the peer list and this node's signing keys, without a restart",
      security: admin,
      middleware: [guard] as const,
      responses: { 200: { description: "Reloaded", content: { "application/json": { schema: reloadSchema } } }, ...errorResponses },
    }),
    async (c) => {
      if (!ctx.federation) throw new TwinningError("policy_error", { variables: ["federation is not configured"] });
      try {
        const reloaded = await ctx.federation.reload();
        ctx.logger.info(reloaded, "peer list reloaded");
        return json(c, reloaded);
      } catch (error) {
        // The admin learns why (the peer list or a signing key file; their messages never quote a key).
        throw new TwinningError("invalid_peer_list", { variables: ["peers", (error as Error).message.slice(0, 300)], detail: (error as Error).message, cause: error });
      }
    },
  );

  addRoute(
    app,
    createRoute({
      method: "get",
      path: "/admin/v1/twins",
      tags,
      summary: "Active twins held by this node (both operators' view), oldest first, a page at a time: `next`, when there is more, is the `after` of the next page",
      security: admin,
      middleware: [guard] as const,
      request: { query: z.object({ limit: z.coerce.number().int().min(1).max(10_000).optional(), after: z.uuid().optional() }) },
      responses: { 200: { description: "Twins", content: { "application/json": { schema: twinPageSchema } } }, ...errorResponses },
    }),
    async (c) => {
      const limit = Number(c.req.query("limit") ?? 1000);
      const twins = await ctx.store.listActiveTwins(limit, c.req.query("after"));
      // A full page may have more behind it: its last twin is the next page's cursor.
      const next = twins.length === limit ? twins[twins.length - 1]!.twinId : undefined;
      return json(c, {
        ...(next ? { next } : {}),
        twins: twins.map((t) => ({
          twinId: t.twinId,
          primaryAddress: t.primaryAddress,
          primaryOperatorId: t.primaryOperatorId,
          secondaryAddress: t.secondaryAddress,
          secondaryOperatorId: t.secondaryOperatorId,
          name: t.name,
          status: t.status,
          version: t.version,
        })),
      });
    },
  );

  addRoute(
    app,
    createRoute({
      method: "get",
      path: "/admin/v1/deadLetters",
      tags,
      summary: "Outbox entries given up on, newest first",
      security: admin,
      middleware: [guard] as const,
      request: { query: z.object({ limit: z.coerce.number().int().min(1).max(1000).optional() }) },
      responses: { 200: { description: "Dead letters", content: { "application/json": { schema: deadLettersSchema } } }, ...errorResponses },
    }),
    async (c) => {
      const entries = await ctx.store.listDeadLetters(Number(c.req.query("limit") ?? 100));
      // The target and error are shown; the payload stays inside (it names subscribers), and so do
      // a callback URL's userinfo and query (a device's notifyURL may carry its own secret there).
      return json(c, {
        deadLetters: entries.map((e) => ({ id: e.id, lane: e.lane, kind: e.kind, target: e.kind === "callback" ? withoutSecrets(e.target) : e.target, attempts: e.attempts, lastError: e.lastError, createdAt: new Date(e.createdAtMs).toISOString() })),
      });
    },
  );
}

/** A callback URL without its userinfo, query or fragment: where it goes, not what it carries. */
function withoutSecrets(target: string): string {
  try {
    const url = new URL(target);
    return `${url.protocol}//${url.host}${url.pathname}`;
  } catch {
    return "(not a URL)";
  }
}
