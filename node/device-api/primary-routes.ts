import { createRoute, z } from "@hono/zod-openapi";
import { encodeAddress } from "../domain/address.ts";
import { pathSubject, requireToken, subjectOf } from "../http/authenticate.ts";
import type { DirectRoutes } from "../http/direct-answers.ts";
import { addDirectRoute, addRoute, json, reusableJson, secretJson, validBody, type App } from "../http/route-helper.ts";
import {
  addrParam,
  bearer,
  bodyTooLarge,
  clientCorrelatorSchema,
  conflict,
  errorResponses,
  nameSchema,
  operatorIdSchema,
  peerUnavailable,
  statusSchema,
  tooManyAttempts,
  twinSchema,
} from "../http/schemas.ts";
import { activateTwin } from "../service/activation-service.ts";
import type { NodeContext } from "../service/node-context.ts";
import { deactivateTwin, renameTwin, resolvePrimaryTwin, togglePrimaryTwin } from "../service/twin-service.ts";
import { twinView } from "./resources.ts";

const tags = ["primary"];
const base = "/twinning/v1/primary/{addr}/twins";

const activationRequest = z.object({
  activationCode: z.string().min(1).max(32),
  operatorId: operatorIdSchema,
  name: nameSchema.optional(),
  clientCorrelator: clientCorrelatorSchema.optional(),
});
const renameRequest = z.object({ name: nameSchema });
const statusRequest = z.object({ status: statusSchema });
const twinResponse = (description: string) => ({ description, content: { "application/json": { schema: z.object({ twin: twinSchema }) } } });
const refParams = addrParam.extend({ ref: z.string().openapi({ description: "twinId, secondary address or name (HLF-PD-003)" }) });

/** The primary device's routes: HLF-PD-001..007, HLF-TE-007 (DESIGN "Device API"). */
export function registerPrimaryRoutes(app: App, ctx: NodeContext, direct: DirectRoutes): void {
  const twinning = requireToken(ctx, ["twinning"]);
  const twinningOrTwin = requireToken(ctx, ["twinning", "twinning:twin"]);
  const twinRef = (c: Parameters<typeof pathSubject>[0], use: "read" | "change" = "change") => resolvePrimaryTwin(ctx, pathSubject(c), c.req.param("ref") ?? "", c.get("principal"), use);

  addRoute(
    app,
    createRoute({
      method: "post",
      path: base,
      tags,
      summary: "Activate a twin with a code (HLF-PD-001, HLF-TE-007/008/009)",
      security: bearer,
      middleware: [twinning] as const,
      request: { params: addrParam, body: { content: { "application/json": { schema: activationRequest } }, required: true } },
      responses: {
        201: twinResponse("The twin, status On, with the primary's twin-scoped accessToken"),
        ...errorResponses,
        ...bodyTooLarge,
        ...conflict("SVC0005 the same clientCorrelator with a different request; POL3001 the secondary is already in a twinning relationship"),
        ...tooManyAttempts,
        ...peerUnavailable("the secondary's operator did not take the activation, or the node's queue of messages for it is full (then with Retry-After)"),
      },
    }),
    async (c) => {
      const primary = pathSubject(c);
      const { twin, accessToken } = await activateTwin(ctx, primary, validBody(c, activationRequest), c.get("principal").provisioning);
      return secretJson(c, { twin: twinView(ctx, twin, accessToken) }, 201);
    },
  );

  addRoute(
    app,
    createRoute({
      method: "get",
      path: base,
      tags,
      summary: "List twinned secondaries with their status (HLF-PD-003, HLF-PD-006)",
      security: bearer,
      middleware: [twinning] as const,
      request: { params: addrParam },
      responses: { 200: { description: "The twin list", content: { "application/json": { schema: z.object({ twinList: z.object({ twin: z.array(twinSchema), resourceURL: z.url() }) }) } } }, ...errorResponses },
    }),
    async (c) => {
      const primary = pathSubject(c);
      const twins = await ctx.store.listTwinsOfPrimary(primary);
      return reusableJson(c, {
        twinList: { twin: twins.map((t) => twinView(ctx, t)), resourceURL: `${ctx.deviceBaseUrl()}/twinning/v1/primary/${encodeAddress(primary)}/twins` },
      });
    },
  );

  addRoute(
    app,
    createRoute({
      method: "get",
      path: `${base}/{ref}`,
      tags,
      summary: "Query one twin by twinId, secondary address or name (HLF-PD-003, HLF-PD-005)",
      security: bearer,
      middleware: [twinningOrTwin] as const,
      request: { params: refParams },
      responses: { 200: twinResponse("The twin"), ...errorResponses },
    }),
    async (c) => reusableJson(c, { twin: twinView(ctx, await twinRef(c, "read")) }),
  );

  addRoute(
    app,
    createRoute({
      method: "patch",
      path: `${base}/{ref}`,
      tags,
      summary: "Rename a twin (HLF-TE-007)",
      security: bearer,
      middleware: [twinning] as const,
      request: { params: refParams, body: { content: { "application/json": { schema: renameRequest } }, required: true } },
      responses: { 200: twinResponse("The renamed twin"), ...errorResponses, ...bodyTooLarge },
    }),
    async (c) => {
      const twin = await twinRef(c);
      return json(c, { twin: twinView(ctx, await renameTwin(ctx, twin, validBody(c, renameRequest).name)) });
    },
  );

  addRoute(
    app,
    createRoute({
      method: "delete",
      path: `${base}/{ref}`,
      tags,
      summary: "Deactivate a twin (HLF-PD-004, HLF-TE-004)",
      security: bearer,
      middleware: [twinningOrTwin] as const,
      request: { params: refParams },
      responses: { 204: { description: "Deactivated" }, ...errorResponses },
    }),
    async (c) => {
      await deactivateTwin(ctx, await twinRef(c), "primary");
      return c.body(null, 204);
    },
  );

  // The hottest write: also answered directly on node:http (DirectRoutes).
  addDirectRoute(
    app,
    direct,
    ctx,
    createRoute({
      method: "put",
      path: `${base}/{ref}/status`,
      tags,
      summary: "Toggle a twin On/Off; notifies the secondary (HLF-PD-002, HLF-SD-008, HLF-TE-002/003)",
      security: bearer,
      request: { params: refParams, body: { content: { "application/json": { schema: statusRequest } }, required: true } },
      responses: { 200: twinResponse("The updated twin"), ...errorResponses, ...bodyTooLarge, ...peerUnavailable("the node's queue of messages for the secondary's operator is full (with Retry-After)") },
    }),
    {
      scopes: ["twinning", "twinning:twin"],
      async answer({ principal, params, body }) {
        const twin = await togglePrimaryTwin(ctx, subjectOf(principal, params.addr!), params.ref!, principal, (body as z.infer<typeof statusRequest>).status);
        return { twin: twinView(ctx, twin) };
      },
    },
  );
}
