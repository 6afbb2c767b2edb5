import { createRoute, z } from "@hono/zod-openapi";
import type { NodeContext } from "../service/node-context.ts";
import { readActivationCode, requestActivationCode } from "../service/activation-service.ts";
import { deactivateTwin, primaryServicesToken, resolveSecondaryTwin, toggleTwin } from "../service/twin-service.ts";
import { pathSubject, requireToken, subjectOf } from "../http/authenticate.ts";
import type { DirectRoutes } from "../http/direct-answers.ts";
import { addDirectRoute, addRoute, json, reusableJson, secretJson, validBody, type App } from "../http/route-helper.ts";
import {
  activationCodeSchema,
  addrParam,
  bearer,
  bodyTooLarge,
  clientCorrelatorSchema,
  conflict,
  errorResponses,
  issuedActivationCodeSchema,
  operatorIdSchema,
  peerUnavailable,
  primaryServicesSchema,
  statusSchema,
  twinningSchema,
} from "../http/schemas.ts";
import { activationCodeView, twinningView } from "./resources.ts";

const tags = ["secondary"];
const base = "/twinning/v1/secondary/{addr}";

const codeRequest = z.object({ primaryOperatorId: operatorIdSchema.optional(), clientCorrelator: clientCorrelatorSchema.optional() });
const statusRequest = z.object({ status: statusSchema });
/** A success answer's JSON body: documented, not checked (the handlers' views in resources.ts are what is sent). */
const ok = (description: string, schema: z.ZodType) => ({ description, content: { "application/json": { schema } } });
const codeAnswer = z.object({ activationCode: activationCodeSchema });
const twinningAnswer = z.object({ twinning: twinningSchema });

/** The secondary device's routes: HLF-SD-001..009 (DESIGN "Device API"). */
export function registerSecondaryRoutes(app: App, ctx: NodeContext, direct: DirectRoutes): void {
  const twinning = requireToken(ctx, ["twinning"]);
  const twinningOrTwin = requireToken(ctx, ["twinning", "twinning:twin"]);

  addRoute(
    app,
    createRoute({
      method: "post",
      path: `${base}/activationCodes`,
      tags,
      summary: "Request an activation code (HLF-SD-001..003, HLF-TE-005/006)",
      security: bearer,
      middleware: [twinning] as const,
      request: { params: addrParam, body: { content: { "application/json": { schema: codeRequest } }, required: false } },
      responses: {
        201: ok("The code, its issuing operator and expiry", z.object({ activationCode: issuedActivationCodeSchema })),
        ...errorResponses,
        ...bodyTooLarge,
        ...conflict("SVC0005 the same clientCorrelator with a different request; POL3001 the secondary is already in a twinning relationship"),
        ...peerUnavailable("the primary's operator (primaryOperatorId) is not an allowed peer, or did not answer the code request"),
      },
    }),
    async (c) => {
      const secondary = pathSubject(c);
      const body = validBody(c, codeRequest);
      const { record, code } = await requestActivationCode(ctx, secondary, body, c.get("principal").provisioning);
      return secretJson(c, activationCodeView(ctx, record, { code }), 201);
    },
  );

  addRoute(
    app,
    createRoute({
      method: "get",
      path: `${base}/activationCodes/{codeId}`,
      tags,
      summary: "Read a code's status; once Used, the twin and the twin-scoped token (HLF-SD-005)",
      security: bearer,
      middleware: [twinning] as const,
      request: {
        params: addrParam.extend({ codeId: z.string() }),
        query: z.object({ wait: z.coerce.number().int().min(0).max(3600).optional().openapi({ description: "long-poll up to N seconds" }) }),
      },
      responses: { 200: ok("The code's state; once Used, with the twin and the secondary's twin-scoped accessToken", codeAnswer), ...errorResponses },
    }),
    async (c) => {
      const secondary = pathSubject(c);
      const wait = Number(c.req.query("wait") ?? 0);
      const signal = AbortSignal.any([c.req.raw.signal, ctx.lifecycle]);
      const result = await readActivationCode(ctx, secondary, c.req.param("codeId") ?? "", wait, signal, c.get("principal").provisioning);
      return secretJson(c, activationCodeView(ctx, result.record, result));
    },
  );

  addRoute(
    app,
    createRoute({
      method: "get",
      path: `${base}/twinning`,
      tags,
      summary: "Query own twinning status and the primary's identity (HLF-SD-006)",
      security: bearer,
      middleware: [twinningOrTwin] as const,
      request: { params: addrParam },
      responses: { 200: ok("The secondary's twinning", twinningAnswer), ...errorResponses },
    }),
    async (c) => {
      const twin = await resolveSecondaryTwin(ctx, pathSubject(c), c.get("principal"));
      return reusableJson(c, twinningView(twin));
    },
  );

  // A hot write: also answered directly on node:http (DirectRoutes).
  addDirectRoute(
    app,
    direct,
    ctx,
    createRoute({
      method: "put",
      path: `${base}/twinning/status`,
      tags,
      summary: "Toggle twinning On/Off; notifies the primary (HLF-SD-004, HLF-PD-007)",
      security: bearer,
      request: { params: addrParam, body: { content: { "application/json": { schema: statusRequest } }, required: true } },
      responses: { 200: ok("The updated twinning", twinningAnswer), ...errorResponses, ...bodyTooLarge, ...peerUnavailable("the node's queue of messages for the primary's operator is full (with Retry-After)") },
    }),
    {
      scopes: ["twinning", "twinning:twin"],
      async answer({ principal, params, body }) {
        const twin = await resolveSecondaryTwin(ctx, subjectOf(principal, params.addr!), principal);
        return twinningView(await toggleTwin(ctx, twin, (body as z.infer<typeof statusRequest>).status, "secondary"));
      },
    },
  );

  addRoute(
    app,
    createRoute({
      method: "delete",
      path: `${base}/twinning`,
      tags,
      summary: "Deactivate: the relationship ends and its tokens die (HLF-SD-007, HLF-TE-004)",
      security: bearer,
      middleware: [twinningOrTwin] as const,
      request: { params: addrParam },
      responses: { 204: { description: "Deactivated" }, ...errorResponses },
    }),
    async (c) => {
      const twin = await resolveSecondaryTwin(ctx, pathSubject(c), c.get("principal"));
      await deactivateTwin(ctx, twin, "secondary");
      return c.body(null, 204);
    },
  );

  addRoute(
    app,
    createRoute({
      method: "post",
      path: `${base}/twinning/primaryServicesToken`,
      tags,
      summary: "A token for the primary's services, minted by the primary's operator (HLF-SD-009, HLF-IC-006)",
      security: bearer,
      middleware: [twinning] as const,
      request: { params: addrParam },
      responses: {
        200: ok("The primary-services token and endpoints", z.object({ primaryServices: primaryServicesSchema })),
        ...errorResponses,
        ...bodyTooLarge,
        ...peerUnavailable("the primary's operator did not answer the token exchange, or refused it"),
      },
    }),
    async (c) => {
      const principal = c.get("principal");
      const twin = await resolveSecondaryTwin(ctx, pathSubject(c), principal);
      return secretJson(c, { primaryServices: await primaryServicesToken(ctx, twin, principal.provisioning) });
    },
  );
}

