import { randomUUID } from "node:crypto";
import { MAX_CODE_TTL_SECONDS } from "../config/node-config.ts";
import { isAddress } from "../domain/address.ts";
import { defaultTwinName, type Twin } from "../domain/twin.ts";
import { peerBacklogFull, TwinningError } from "../errors/twinning-error.ts";
import { requirePeer } from "../federation/federation.ts";
import { answeredOk, peerErrorToTwinningError, refused } from "../../peers/peer-client.ts";
import type { ActivationCodeRecord, CorrelatorInput, ProvisionedParty } from "../store/store-port.ts";
import type { NodeContext } from "./node-context.ts";
import { primaryServiceEndpoints } from "./twin-service.ts";

/**
 * The synchronous cross-operator steps a device waits on (DESIGN "Invariants"): a code from
 * the primary's operator, an activation at the secondary's operator. A failure after the peer
 * may have committed is compensated by an outbox DELETE, so both sides end up agreeing.
 */

/** HLF-SD-002, HLF-TE-006, HLF-IC-002: the secondary named the primary's operator; ask it for the code. */
export async function codeFromPeer(
  ctx: NodeContext,
  party: ProvisionedParty,
  issuer: string,
  correlator: CorrelatorInput | undefined,
): Promise<{ record: ActivationCodeRecord; code: string }> {
  const secondary = party.address;
  const federation = requirePeer(ctx.federation, issuer);
  if (correlator) {
    const replay = await ctx.store.lookupCorrelator(correlator);
    const record = replay && (await ctx.store.getActivationCode(secondary, replay.resourceId, ctx.nowMs()));
    if (replay?.replayData && record) return { record, code: ctx.sealer.open(replay.replayData) };
  }
  await ctx.store.assertCanTwinAsSecondary(secondary);
  const codeId = randomUUID();
  const answer = await federation.send(issuer, {
    method: "POST",
    path: "/activationCodes",
    msgId: codeId,
    body: { secondaryAddress: secondary, secondaryOperatorId: ctx.config.operatorId },
  });
  if (!answeredOk(answer.status)) throw peerErrorToTwinningError(issuer, answer);
  const { code, operatorId, expiresAt } = (answer.body ?? {}) as { code?: unknown; operatorId?: unknown; expiresAt?: unknown };
  const expiresAtMs = typeof expiresAt === "string" ? Date.parse(expiresAt) : Number.NaN;
  if (typeof code !== "string" || !/^\d{4,12}$/.test(code) || operatorId !== issuer || !Number.isFinite(expiresAtMs)) {
    throw new TwinningError("peer_unreachable", { variables: [issuer], detail: "malformed activationCodes answer" });
  }
  // The copy is our subscriber's consent to be activated by this peer: it lasts no longer than
  // any code may, whatever expiry the peer's answer names.
  const nowMs = ctx.nowMs();
  // Checked again at the commit: the secondary may have been de-provisioned during the round trip.
  const result = await ctx.store.issueActivationCode({
    provisionedParty: party,
    codeId,
    secondaryAddress: secondary,
    secondaryOperatorId: ctx.config.operatorId,
    issuerOperatorId: issuer,
    // Kept only to show the secondary the code's state; never looked up, so bound to its id.
    codeHash: ctx.codes.hash(issuer, `${codeId}:${code}`),
    nowMs,
    expiresAtMs: Math.min(expiresAtMs, nowMs + MAX_CODE_TTL_SECONDS * 1000),
    ...(correlator ? { correlator: { ...correlator, replayData: ctx.sealer.seal(code) } } : {}),
  });
  if (result.kind === "collision") throw new TwinningError("service_error", { detail: "code id collision" });
  return { record: result.code, code };
}

/** The twin's name, checked free before the peer commits anything (HLF-TE-007). */
async function freeName(ctx: NodeContext, primary: string, name: string | undefined): Promise<string> {
  const taken = new Set((await ctx.store.listTwinsOfPrimary(primary)).map((t) => t.name));
  if (name === undefined) return defaultTwinName(taken);
  if (taken.has(name)) throw new TwinningError("invalid_input", { variables: ["name"], detail: "name already used by another twin of this primary" });
  return name;
}

const compensation = (peer: string, twinId: string) => ({
  operatorId: peer,
  method: "DELETE" as const,
  path: `/twins/${twinId}`,
  msgId: randomUUID(),
  body: { changedBy: "primary" },
  // Its own lane: a compensation waiting for its time must not hold back other messages to the peer.
  subLane: `activation:${twinId}`,
});

/**
 * A compensating DELETE armed before the call: due only after the call's deadline, and
 * withdrawn in the transaction that commits our side. If this process dies in between, the
 * outbox still undoes the peer's twin after a restart, so the two sides agree.
 */
async function armCompensation(ctx: NodeContext, peer: string, twinId: string): Promise<number> {
  const nowMs = ctx.nowMs();
  const dueAtMs = nowMs + 2 * (ctx.config.federation?.callTimeoutMs ?? 5_000);
  const [id] = await ctx.store.enqueuePeerMessages([compensation(peer, twinId)], nowMs, dueAtMs);
  return id!;
}

/** The activation failed where the peer may have committed: undo there now (DESIGN "Invariants"). */
async function compensate(ctx: NodeContext, peer: string, twinId: string, armedId: number): Promise<void> {
  // The immediate DELETE is written before the armed one is withdrawn: a crash in between leaves
  // two (idempotent) DELETEs, never none.
  await ctx.store.enqueuePeerMessages([compensation(peer, twinId)], ctx.nowMs());
  await ctx.store.completeOutboxEntry(armedId);
  ctx.wakeOutbox();
  ctx.logger.warn({ peer, twinId }, "activation compensated at peer");
}

/**
 * HLF-IC-004: activate at the secondary's operator, exposing the primary's address and
 * service endpoints (HLF-IC-006), then commit the primary's side here.
 */
export async function activateAcross(
  ctx: NodeContext,
  input: {
    primary: string;
    /** The primary, checked again at the commit (see ProvisionedParty). */
    party: ProvisionedParty;
    peer: string;
    name: string | undefined;
    /** A code the peer issued (the primary typed its code and operator). */
    activationCode?: string;
    /** Or: our own code, whose secondary the peer serves. */
    ownCode?: { codeId: string; secondaryAddress: string };
    correlator: CorrelatorInput | undefined;
  },
): Promise<Twin> {
  const federation = requirePeer(ctx.federation, input.peer);
  const own = ctx.config.operatorId;
  if (!input.ownCode) await ctx.store.assertCanTwinAsPrimary(input.primary, ctx.config.policy.maxTwinsPerPrimary);
  const name = await freeName(ctx, input.primary, input.name);
  // An activation may leave a compensation queued: refused while the peer's backlog is full.
  const maxQueued = ctx.config.delivery.maxQueuedMessagesPerPeer;
  if ((await ctx.store.countQueuedForPeer(input.peer, maxQueued)) >= maxQueued) throw peerBacklogFull(input.peer, maxQueued);
  const twinId = randomUUID();
  const armed = await armCompensation(ctx, input.peer, twinId);
  let answer;
  try {
    answer = await federation.send(input.peer, {
      method: "POST",
      path: "/activations",
      msgId: twinId,
      body: {
        twinId,
        ...(input.activationCode !== undefined ? { activationCode: input.activationCode } : { secondaryAddress: input.ownCode!.secondaryAddress }),
        primaryAddress: input.primary,
        primaryOperatorId: own,
        name,
        primaryServices: { endpoints: primaryServiceEndpoints(ctx) },
      },
    });
  } catch (error) {
    // No answer: the peer may have committed. Undo there. The device may retry; if the peer had
    // consumed its code, that code stays used (a compensated twin is ended, not undone), and the
    // secondary asks for a new one.
    await compensate(ctx, input.peer, twinId, armed);
    throw error;
  }
  if (refused(answer.status)) {
    // A definite refusal: the peer created nothing, there is nothing to undo.
    await ctx.store.completeOutboxEntry(armed);
    throw peerErrorToTwinningError(input.peer, answer);
  }
  if (!answeredOk(answer.status)) {
    // The peer failed somewhere (5xx), or answered what no peer should: it may have committed. Undo there.
    await compensate(ctx, input.peer, twinId, armed);
    throw peerErrorToTwinningError(input.peer, answer);
  }
  const remote = (answer.body?.twin ?? {}) as { secondaryAddress?: unknown; twinId?: unknown };
  const secondaryAddress = input.ownCode?.secondaryAddress ?? remote.secondaryAddress;
  if (remote.twinId !== twinId || typeof secondaryAddress !== "string" || !isAddress(secondaryAddress)) {
    await compensate(ctx, input.peer, twinId, armed);
    throw new TwinningError("peer_unreachable", { variables: [input.peer], detail: "malformed activations answer" });
  }
  try {
    const { twin, notifications, queued } = await ctx.store.insertFederatedTwin({
      provisionedParty: input.party,
      twin: { twinId, primaryAddress: input.primary, primaryOperatorId: own, secondaryAddress, secondaryOperatorId: input.peer, name, status: "On", version: 1, statusOrigin: own },
      localSide: "primary",
      nameIsDefault: input.name === undefined,
      nowMs: ctx.nowMs(),
      maxTwinsPerPrimary: ctx.config.policy.maxTwinsPerPrimary,
      ...(input.ownCode ? { consumeCodeId: input.ownCode.codeId } : {}),
      ...(input.correlator ? { correlator: input.correlator } : {}),
      disarmOutboxIds: [armed],
    });
    ctx.committed(notifications, queued);
    return twin;
  } catch (error) {
    await compensate(ctx, input.peer, twinId, armed);
    throw error;
  }
}
