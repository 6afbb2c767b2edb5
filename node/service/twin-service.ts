import { couldNameATwin, parseTwinRef, primaryServiceEndpointsIn, type Twin, type TwinRole, type TwinStatus } from "../domain/twin.ts";
import { TwinningError } from "../errors/twinning-error.ts";
import type { Principal } from "../tokens/scopes.ts";
import { provisioningStamp } from "../tokens/credentials.ts";
import type { NodeContext } from "./node-context.ts";
import { randomUUID } from "node:crypto";
import { requirePeer } from "../federation/federation.ts";
import { answeredOk, peerErrorToTwinningError } from "../../peers/peer-client.ts";
import { afterCallsOfThisTurn } from "../../peers/bounded-call.ts";

/** The longest lifetime a peer's primary-services token may claim (a year). */
const MAX_EXCHANGED_TOKEN_SECONDS = 366 * 86_400;

/** A twin-scoped token (`twinning:twin`) reaches only the twin named by its twin_id claim. */
function assertTokenCoversTwin(principal: Principal, twin: Twin): void {
  if (principal.scope === "twinning:twin" && principal.twinId !== twin.twinId) {
    throw new TwinningError("access_denied", { variables: ["the token is scoped to another twin"] });
  }
}

/**
 * HLF-PD-003: a primary names a twin by twinId, secondary address or name. `use`: a read of a
 * twin that is gone is a 404 like any unknown twin; a change of one named by id is POL1038.
 */
export async function resolvePrimaryTwin(ctx: NodeContext, primary: string, ref: string, principal: Principal, use: "read" | "change" = "change"): Promise<Twin> {
  const parsed = parseTwinRef(ref);
  // A reference no twin could have is not looked up (nor kept among the store's cached answers).
  const twin = couldNameATwin(parsed) ? await ctx.store.findTwinOfPrimary(primary, parsed) : undefined;
  if (!twin) {
    if (parsed.kind === "twinId" && use === "change") {
      const ended = await ctx.store.getTwin(parsed.twinId);
      // HLF-PD-004: a deactivated twin is gone for good; naming it by id says so (POL1038).
      if (ended && ended.primaryAddress === primary) throw new TwinningError("update_not_allowed", { variables: ["the twin is deactivated"] });
    }
    throw new TwinningError("not_found", { variables: ["twin"] });
  }
  assertTokenCoversTwin(principal, twin);
  return twin;
}

/** HLF-SD-006: the secondary's one twin (HLF-TE-009). */
export async function resolveSecondaryTwin(ctx: NodeContext, secondary: string, principal: Principal): Promise<Twin> {
  const twin = await ctx.store.findTwinOfSecondary(secondary);
  if (!twin) throw new TwinningError("not_found", { variables: ["twinning"] });
  assertTokenCoversTwin(principal, twin);
  return twin;
}

/**
 * HLF-PD-002: the primary toggles a twin it names. Named by twinId, with a token that covers
 * that twin, nothing is read first: the store checks, in the change's own transaction, that the
 * twin is this primary's and active (the same answers as resolvePrimaryTwin: SVC0002 404, POL1038).
 */
export async function togglePrimaryTwin(ctx: NodeContext, primary: string, ref: string, principal: Principal, status: TwinStatus): Promise<Twin> {
  const parsed = parseTwinRef(ref);
  if (parsed.kind === "twinId" && (principal.scope !== "twinning:twin" || principal.twinId === parsed.twinId)) {
    return changeStatus(ctx, { twinId: parsed.twinId, primaryAddress: primary }, status, "primary");
  }
  return toggleTwin(ctx, await resolvePrimaryTwin(ctx, primary, ref, principal), status, "primary");
}

/** HLF-PD-002, HLF-SD-004, HLF-TE-002/003: toggling persists and keeps the relationship. */
export async function toggleTwin(ctx: NodeContext, twin: Twin, status: TwinStatus, changedBy: TwinRole): Promise<Twin> {
  return changeStatus(ctx, { twinId: twin.twinId }, status, changedBy);
}

async function changeStatus(ctx: NodeContext, which: { twinId: string; primaryAddress?: string }, status: TwinStatus, changedBy: TwinRole): Promise<Twin> {
  const result = await ctx.store.changeTwinStatus({
    ...which,
    status,
    changedBy,
    origin: ctx.config.operatorId,
    nowMs: ctx.nowMs(),
    maxQueuedPerPeer: ctx.config.delivery.maxQueuedMessagesPerPeer,
  });
  if (!result.changed) return result.twin;
  ctx.committed(result.notifications, result.queued, result.laneHeads);
  await peerMessagesFirst(ctx, result.twin, result.queued);
  return result.twin;
}

/** HLF-PD-004, HLF-SD-007, HLF-TE-004: the relationship ends and its tokens die with it. */
export async function deactivateTwin(ctx: NodeContext, twin: Twin, changedBy: TwinRole): Promise<void> {
  const result = await ctx.store.deactivateTwin({ twinId: twin.twinId, changedBy, nowMs: ctx.nowMs(), ownOperatorId: ctx.config.operatorId });
  ctx.committed(result.notifications, result.queued, result.laneHeads);
  await peerMessagesFirst(ctx, twin, result.queued);
}

/**
 * A change of a twin shared with another operator (which queues its message to the peer)
 * answers its device once that message's send has been written: the answer wakes the device,
 * which would otherwise take the CPU that the send, and then the peer, are waiting for. In the
 * propagation trace the peer's message left ~80 µs earlier, and the device's answer ~80 µs later
 * (docs/benchmark-history.md). A change between this operator's own subscribers answers at once.
 */
async function peerMessagesFirst(ctx: NodeContext, twin: Twin, queued: boolean): Promise<void> {
  const own = ctx.config.operatorId;
  if (queued && (twin.primaryOperatorId !== own || twin.secondaryOperatorId !== own)) await afterCallsOfThisTurn();
}

export async function renameTwin(ctx: NodeContext, twin: Twin, name: string): Promise<Twin> {
  return ctx.store.renameTwin({ twinId: twin.twinId, name, nowMs: ctx.nowMs() });
}

/**
 * HLF-SD-009, HLF-IC-006: a token for the primary's services (sub = primary, act.sub =
 * secondary), minted by the primary's operator, with that operator's service endpoints.
 */
export async function primaryServicesToken(
  ctx: NodeContext,
  twin: Twin,
  /** The provisioning the secondary's request was authenticated under (Principal.provisioning), when it names one. */
  underProvisioning?: string,
): Promise<{ accessToken: string; expiresAt: string; endpoints: { messaging: string; nms: string } }> {
  if (twin.status !== "On") throw new TwinningError("policy_error", { variables: ["twinning is Off"] });
  if (twin.primaryOperatorId !== ctx.config.operatorId) return exchangeAtPrimaryOperator(ctx, twin);
  const secondary = await ctx.store.getSubscriber(twin.secondaryAddress);
  // Minted only under the provisioning the request was authenticated under: a credential
  // changed (or a de-provisioning) while it ran gets 401, as every other token does.
  if (underProvisioning !== undefined && (!secondary || provisioningStamp(secondary) !== underProvisioning)) {
    throw new TwinningError("invalid_token", { detail: "the secondary was provisioned again during the request" });
  }
  const { token, expiresAtS } = await ctx.tokens.mint({
    subject: twin.primaryAddress,
    scope: "primary-services",
    twinId: twin.twinId,
    actor: twin.secondaryAddress,
    ...(secondary ? { actorProvisioning: provisioningStamp(secondary) } : {}),
    ttlSeconds: ctx.config.policy.primaryServicesTokenTtlSeconds,
  });
  return { accessToken: token, expiresAt: new Date(expiresAtS * 1000).toISOString(), endpoints: primaryServiceEndpoints(ctx) };
}

export function primaryServiceEndpoints(ctx: NodeContext): { messaging: string; nms: string } {
  const base = ctx.deviceBaseUrl();
  return {
    messaging: ctx.config.primaryServices.messagingUrl ?? `${base}/messaging/v1`,
    nms: ctx.config.primaryServices.nmsUrl ?? `${base}/nms/v1`,
  };
}

export const TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange";

/**
 * HLF-SD-009, HLF-IC-006 across operators: RFC 8693 token exchange at the primary's operator,
 * with our signed assertion of the secondary as subject token; that operator mints the token
 * and names its own service endpoints.
 */
async function exchangeAtPrimaryOperator(ctx: NodeContext, twin: Twin): Promise<{ accessToken: string; expiresAt: string; endpoints: { messaging: string; nms: string } }> {
  const peer = twin.primaryOperatorId;
  const federation = requirePeer(ctx.federation, peer);
  const subjectToken = await federation.subjectToken({ secondaryAddress: twin.secondaryAddress, twinId: twin.twinId, audienceOperatorId: peer });
  const answer = await federation.send(peer, {
    method: "POST",
    path: "/token",
    msgId: randomUUID(),
    body: {
      grant_type: TOKEN_EXCHANGE_GRANT,
      subject_token: subjectToken,
      subject_token_type: "urn:ietf:params:oauth:token-type:jwt",
      requested_token_type: "urn:ietf:params:oauth:token-type:access_token",
      scope: "primary-services",
    },
  });
  if (!answeredOk(answer.status)) throw peerErrorToTwinningError(peer, answer);
  const b = (answer.body ?? {}) as { access_token?: unknown; expires_in?: unknown; endpoints?: unknown };
  // expires_in: whole seconds (RFC 6749 §5.1), at most a year: any other is the peer's fault, not ours.
  const expiresIn = b.expires_in;
  const lifetimeOk = typeof expiresIn === "number" && Number.isSafeInteger(expiresIn) && expiresIn > 0 && expiresIn <= MAX_EXCHANGED_TOKEN_SECONDS;
  // RFC 8693's answer has no endpoints: those the peer named at activation, unless it names others now.
  const endpoints = primaryServiceEndpointsIn(b.endpoints) ?? (await ctx.store.primaryServiceEndpoints(twin.twinId));
  if (typeof b.access_token !== "string" || !lifetimeOk || !endpoints) {
    throw new TwinningError("peer_unreachable", { variables: [peer], detail: "malformed token exchange answer" });
  }
  return { accessToken: b.access_token, expiresAt: new Date(ctx.nowMs() + expiresIn * 1000).toISOString(), endpoints: { messaging: endpoints.messaging, nms: endpoints.nms } };
}
