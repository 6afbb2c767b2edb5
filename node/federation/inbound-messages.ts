import { createHash, randomUUID } from "node:crypto";
import type { Hono } from "hono";
import { jwtVerify } from "jose";
import { z } from "zod";
import { FEDERATION_BASE } from "../../peers/peer-client.ts";
import { generateCode } from "../domain/activation-code.ts";
import { isAddress } from "../domain/address.ts";
import { isTwinId, isValidTwinName, MAX_TWIN_VERSION, primaryServiceEndpointsIn } from "../domain/twin.ts";
import { TwinningError } from "../errors/twinning-error.ts";
import { errorBody, toTwinningError } from "../errors/error-response.ts";
import { twinView } from "../device-api/resources.ts";
import type { NodeContext } from "../service/node-context.ts";
import { primaryServiceEndpoints, TOKEN_EXCHANGE_GRANT } from "../service/twin-service.ts";
import type { FederationContext, FederationEnv, SignedAnswers } from "./federation-app.ts";
import type { Federation } from "./federation.ts";

const address = z.string().refine(isAddress, "tel: address");
const operatorId = z.string().regex(/^\d{3}-\d{2,3}$/);
const codeRequest = z.object({ secondaryAddress: address, secondaryOperatorId: operatorId });
const activation = z.object({
  twinId: z.uuid(),
  activationCode: z.string().regex(/^\d{4,12}$/).optional(),
  secondaryAddress: address.optional(),
  primaryAddress: address,
  primaryOperatorId: operatorId,
  name: z.string().refine(isValidTwinName, "twin name"),
  primaryServices: z.object({ endpoints: z.record(z.string(), z.string()) }).optional(),
});
// `changedBy` is checked for form only: the change is the side's that the peer serves (RemoteStatusInput).
const statusChange = z.object({ status: z.enum(["On", "Off"]), version: z.number().int().min(1).max(MAX_TWIN_VERSION), changedBy: z.enum(["primary", "secondary"]) });
const deactivation = z.object({ changedBy: z.enum(["primary", "secondary"]).optional() });
const tokenExchange = z.object({
  grant_type: z.literal(TOKEN_EXCHANGE_GRANT),
  subject_token: z.string().min(1).max(4096),
  subject_token_type: z.literal("urn:ietf:params:oauth:token-type:jwt"),
});

const batch = z.object({
  messages: z
    .array(z.object({ method: z.enum(["PUT", "DELETE"]), path: z.string().max(200), msgId: z.string().min(1).max(100), body: z.unknown().optional() }))
    .min(1)
    .max(200),
});
// Any segment: the id is checked as the single routes check theirs (a UUID, in either case).
const STATUS_PATH = /^\/twins\/([^/]+)\/status$/;
const TWIN_PATH = /^\/twins\/([^/]+)$/;

/** Extensions beyond DESIGN's messages that this node understands, advertised in GET /operator. */
export const FEDERATION_EXTENSIONS = ["batch"] as const;

function parse<S extends z.ZodType>(schema: S, c: FederationContext): z.infer<S> {
  return parseBody(schema, c.get("claims")?.body ?? {});
}

function parseBody<S extends z.ZodType>(schema: S, value: unknown): z.infer<S> {
  const result = schema.safeParse(value);
  if (!result.success) throw new TwinningError("invalid_input", { variables: [result.error.issues[0]?.path.join(".") || "body"] });
  return result.data;
}

const digest = (value: unknown) => createHash("sha256").update(JSON.stringify(value)).digest("base64url");

/** The federation messages a peer may send us (DESIGN "Federation API"), each applied once per msgId. */
export function registerInboundMessages(
  app: Hono<FederationEnv>,
  ctx: NodeContext,
  federation: Federation,
  answers: SignedAnswers,
): void {
  const sign = answers.response;
  const own = ctx.config.operatorId;
  const peerCorrelator = (c: FederationContext, operation: string, body: unknown) => ({
    subscriber: `peer:${c.get("peer")}`,
    operation,
    key: c.get("msgId"),
    fingerprint: digest(body),
  });

  // A peer speaks for its own subscribers only: an address we serve is not the peer's.
  const assertNotOurSubscriber = async (address: string) => {
    if (await ctx.store.getSubscriber(address)) throw new TwinningError("access_denied", { variables: ["the address is not the caller's subscriber"] });
  };

  // The queued messages (toggles, deactivations): the same handling whether they come one by
  // one or in a batch.
  // DESIGN: a twin id is a UUID; anything else names no twin (and is not remembered as cancelled).
  const assertTwinId = (twinId: string) => {
    if (!isTwinId(twinId)) throw new TwinningError("not_found", { variables: ["twin"] });
  };
  // A status message, asked of the store; its answer is an acknowledgement of the message
  // itself, known before the commit, so a retry of the msgId gets the same answer (the effect
  // happens once because an equal (version, origin) is never newer).
  const statusMessage = (peer: string, twinId: string, raw: unknown) => {
    const body = parseBody(statusChange, raw);
    assertTwinId(twinId);
    const applied = ctx.store.applyRemoteStatus({ twinId, status: body.status, version: body.version, fromOperatorId: peer, ownOperatorId: own, nowMs: ctx.nowMs() });
    return { applied, answer: { status: 200, body: { twinId, status: body.status, version: body.version } } };
  };
  const applyStatus = async (peer: string, twinId: string, raw: unknown) => {
    const { applied, answer } = statusMessage(peer, twinId, raw);
    const result = await applied;
    ctx.committed(result.notifications, result.queued);
    return answer;
  };
  const applyDeactivation = async (peer: string, twinId: string, raw: unknown) => {
    // DESIGN's DELETE carries no body: a payload without one (or with null) is the empty one.
    parseBody(deactivation, raw ?? {});
    assertTwinId(twinId);
    const result = await ctx.store.applyRemoteDeactivation({ twinId, fromOperatorId: peer, ownOperatorId: own, nowMs: ctx.nowMs() });
    if (result) ctx.committed(result.notifications, result.queued);
    return { status: 200, body: { twinId, active: false } };
  };

  // HLF-IC-001: who we are.
  app.get(`${FEDERATION_BASE}/operator`, (c) =>
    sign(c, 200, {
      operatorId: own,
      name: ctx.config.operatorName ?? `Operator ${own}`,
      endpoints: { federation: `${federation.publicUrl}${FEDERATION_BASE}`, device: `${ctx.deviceBaseUrl()}/twinning/v1`, ...primaryServiceEndpoints(ctx) },
      apiVersions: ["v1"],
      extensions: [...FEDERATION_EXTENSIONS],
    }),
  );

  // HLF-IC-003, HLF-SD-003: a peer asks a code for its secondary; we, the primary's operator, issue it.
  app.post(`${FEDERATION_BASE}/activationCodes`, async (c) => {
    const body = parse(codeRequest, c);
    if (body.secondaryOperatorId !== c.get("peer")) throw new TwinningError("access_denied", { variables: ["secondaryOperatorId is not the caller"] });
    await assertNotOurSubscriber(body.secondaryAddress);
    for (let attempt = 0; attempt < 8; attempt++) {
      const code = generateCode(ctx.config.policy.codeLength);
      const nowMs = ctx.nowMs();
      const result = await ctx.store.issueActivationCode({
        codeId: randomUUID(),
        secondaryAddress: body.secondaryAddress,
        secondaryOperatorId: body.secondaryOperatorId,
        issuerOperatorId: own,
        codeHash: ctx.codes.hash(own, code),
        nowMs,
        expiresAtMs: nowMs + ctx.config.policy.codeTtlSeconds * 1000,
        correlator: { ...peerCorrelator(c, "fed:activationCodes", body), replayData: ctx.sealer.seal(code) },
        maxPendingForOperator: ctx.config.policy.maxPendingCodesPerPeer,
        secondaryServedByPeer: true,
      });
      if (result.kind === "collision") continue;
      const shown = result.kind === "replayed" ? ctx.sealer.open(result.replay.replayData!) : code;
      return sign(c, 201, { code: shown, operatorId: own, expiresAt: new Date(result.code.expiresAtMs).toISOString() });
    }
    throw new TwinningError("service_error", { detail: "could not draw a unique code" });
  });

  // HLF-IC-004: the primary's operator activates our secondary, with our code or with its own.
  app.post(`${FEDERATION_BASE}/activations`, async (c) => {
    const body = parse(activation, c);
    const peer = c.get("peer");
    if (body.primaryOperatorId !== peer) throw new TwinningError("access_denied", { variables: ["primaryOperatorId is not the caller"] });
    await assertNotOurSubscriber(body.primaryAddress);
    const correlator = peerCorrelator(c, "fed:activations", body);
    const policy = ctx.config.policy;
    // Kept for our secondary's primary-services token (HLF-IC-006), whose exchange answer need not repeat them.
    const named = primaryServiceEndpointsIn(body.primaryServices?.endpoints);
    const endpoints = named ? { primaryServiceEndpoints: named } : {};
    if (body.activationCode !== undefined) {
      const code = body.activationCode;
      const result = await ctx.store.redeemActivationCode({
        issuerOperatorId: own,
        codeHash: ctx.codes.hash(own, code),
        verify: (stored) => ctx.codes.matches(stored, own, code),
        twinId: body.twinId,
        primaryAddress: body.primaryAddress,
        primaryOperatorId: peer,
        ownOperatorId: own,
        name: body.name,
        nowMs: ctx.nowMs(),
        maxTwinsPerPrimary: policy.maxTwinsPerPrimary,
        // Guessing is limited per remote primary and per peer operator (HLF-CM-006).
        attemptBudgets: [
          { key: `primary:${peer}:${body.primaryAddress}`, limit: policy.maxFailedAttemptsPerPrimary },
          { key: `operator:${peer}`, limit: policy.maxFailedAttemptsPerOperator },
          { key: `codes:${own}`, limit: policy.maxFailedAttemptsTotal },
        ],
        attemptWindowMs: policy.failedAttemptWindowSeconds * 1000,
        codeBudget: { key: `codes:${own}`, limit: policy.maxFailedAttemptsPerCode },
        correlator,
        ...endpoints,
      });
      if (result.kind === "invalid-code" || result.kind === "remote-secondary") throw new TwinningError("invalid_code");
      if (result.kind === "rate-limited") {
        const seconds = Math.ceil(result.retryAfterMs / 1000);
        throw new TwinningError("too_many_attempts", { variables: [String(seconds)], retryAfterSeconds: seconds });
      }
      if (result.kind === "activated") {
        ctx.hub.codeUsed(result.codeId);
        ctx.committed(result.notifications, result.queued);
      }
      return sign(c, 201, { twin: twinView(ctx, result.twin, undefined, "secondary") });
    }
    if (!body.secondaryAddress) throw new TwinningError("invalid_input", { variables: ["secondaryAddress"] });
    // Only a secondary that asked this peer for a code can be twinned by it (consumeRemoteCodeFrom).
    const { twin, notifications, queued, consumedCodeId } = await ctx.store.insertFederatedTwin({
      twin: { twinId: body.twinId, primaryAddress: body.primaryAddress, primaryOperatorId: peer, secondaryAddress: body.secondaryAddress, secondaryOperatorId: own, name: body.name, status: "On", version: 1, statusOrigin: peer },
      localSide: "secondary",
      nowMs: ctx.nowMs(),
      maxTwinsPerPrimary: policy.maxTwinsPerPrimary,
      consumeRemoteCodeFrom: peer,
      correlator,
      ...endpoints,
    });
    ctx.committed(notifications, queued);
    if (consumedCodeId) ctx.hub.codeUsed(consumedCodeId);
    return sign(c, 201, { twin: twinView(ctx, twin, undefined, "secondary") });
  });

  // HLF-IC-005, HLF-IC-007: a toggle made at the peer.
  app.put(`${FEDERATION_BASE}/twins/:twinId/status`, async (c) => {
    const { applied, answer } = statusMessage(c.get("peer"), c.req.param("twinId"), c.get("claims")?.body);
    // The acknowledgement says only that the message was applied, so it is signed while the
    // commit waits for its group, and leaves once the commit has.
    const [text, result] = await Promise.all([answers.text(c, answer.body), applied]);
    // Answered before the events go to the streams: by the time a secondary hears of this
    // change, the peer's lane is free for the next one (see docs/benchmark-history.md).
    const sent = answers.sendNow(c, answer.status, text);
    ctx.committed(result.notifications, result.queued);
    return sent;
  });

  // HLF-PD-004, HLF-SD-007 across operators; also compensations.
  app.delete(`${FEDERATION_BASE}/twins/:twinId`, async (c) => {
    const r = await applyDeactivation(c.get("peer"), c.req.param("twinId"), c.get("claims")?.body);
    return sign(c, r.status, r.body);
  });

  // Extension "batch": queued messages in one signed request, applied in order, one result each
  // (like Matrix transactions). Only sent to peers that advertise it; each result is what the
  // message alone would have answered. All are asked of the store at once, in order, so they
  // share one group commit (each in its own savepoint: a refused one undoes only itself).
  app.post(`${FEDERATION_BASE}/batch`, async (c) => {
    const { messages } = parse(batch, c);
    const peer = c.get("peer");
    const apply = async (m: (typeof messages)[number]) => {
      const statusMatch = m.method === "PUT" ? STATUS_PATH.exec(m.path) : null;
      const twinMatch = m.method === "DELETE" ? TWIN_PATH.exec(m.path) : null;
      if (!statusMatch && !twinMatch) throw new TwinningError("invalid_input", { variables: ["path"] });
      return statusMatch ? applyStatus(peer, statusMatch[1]!, m.body) : applyDeactivation(peer, twinMatch![1]!, m.body);
    };
    const results = await Promise.all(
      messages.map((m) =>
        apply(m).then(
          (r) => ({ msgId: m.msgId, ...r }),
          (error: unknown) => {
            const e = toTwinningError(error);
            return { msgId: m.msgId, status: e.status, body: errorBody(e) };
          },
        ),
      ),
    );
    return sign(c, 200, { results });
  });

  // HLF-SD-009, HLF-IC-006: RFC 8693 token exchange for the twinned secondary.
  app.post(`${FEDERATION_BASE}/token`, async (c) => {
    const body = parse(tokenExchange, c);
    const peer = c.get("peer");
    let claims;
    try {
      // As the peer's subject tokens are made (Federation.subjectToken): a JWT in one of DESIGN's
      // algorithms, short-lived, naming its subject and twin.
      ({ payload: claims } = await jwtVerify(body.subject_token, federation.registry.get(peer)!.keys, {
        issuer: `urn:twinning:operator:${peer}`,
        audience: `urn:twinning:operator:${own}`,
        algorithms: ["ES256", "EdDSA"],
        typ: "JWT",
        requiredClaims: ["iat", "exp", "sub", "twin_id"],
        maxTokenAge: federation.options.maxMessageLifetimeSeconds,
        clockTolerance: federation.options.maxClockSkewSeconds,
        currentDate: new Date(ctx.nowMs()),
      }));
    } catch (error) {
      throw new TwinningError("invalid_token", { detail: "subject_token rejected", cause: error });
    }
    const twin = typeof claims.twin_id === "string" ? await ctx.store.getTwin(claims.twin_id) : undefined;
    if (!twin?.active || twin.secondaryAddress !== claims.sub || twin.secondaryOperatorId !== peer || twin.primaryOperatorId !== own) {
      throw new TwinningError("invalid_token", { detail: "no active twin of this secondary here" });
    }
    if (twin.status !== "On") throw new TwinningError("policy_error", { variables: ["twinning is Off"] });
    const ttl = ctx.config.policy.primaryServicesTokenTtlSeconds;
    const { token } = await ctx.tokens.mint({ subject: twin.primaryAddress, scope: "primary-services", twinId: twin.twinId, actor: twin.secondaryAddress, ttlSeconds: ttl });
    return sign(c, 200, {
      access_token: token,
      issued_token_type: "urn:ietf:params:oauth:token-type:access_token",
      token_type: "Bearer",
      expires_in: ttl,
      scope: "primary-services",
      endpoints: primaryServiceEndpoints(ctx),
    });
  });
}
