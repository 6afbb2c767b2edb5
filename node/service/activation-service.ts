import { createHash, randomUUID } from "node:crypto";
import { generateCode, isWellFormedCode, localPrimaryBudgetKey } from "../domain/activation-code.ts";
import type { Twin } from "../domain/twin.ts";
import { TwinningError } from "../errors/twinning-error.ts";
import type { ActivationCodeRecord, CorrelatorInput, ProvisionedParty } from "../store/store-port.ts";
import type { NodeContext } from "./node-context.ts";
import { activateAcross, codeFromPeer } from "./federated-activation.ts";
import { LockWaitTimeout } from "./keyed-lock.ts";

const fingerprint = (value: unknown): string => createHash("sha256").update(JSON.stringify(value)).digest("base64url");
const lockKey = (c: { subscriber: string; operation: string; key: string }) => JSON.stringify([c.subscriber, c.operation, c.key]);

/** HLF-SD-001..003, HLF-TE-005/006: issue a one-use, expiring code for a secondary. */
/** `underProvisioning`: the secondary's provisioning stamp the request was authenticated under (see ProvisionedParty). */
export async function requestActivationCode(
  ctx: NodeContext,
  secondary: string,
  body: { primaryOperatorId?: string | undefined; clientCorrelator?: string | undefined },
  underProvisioning?: string,
): Promise<{ record: ActivationCodeRecord; code: string }> {
  const issuer = body.primaryOperatorId ?? ctx.config.operatorId;
  const party: ProvisionedParty = { address: secondary, stamp: underProvisioning };
  if (issuer !== ctx.config.operatorId) {
    const correlator = body.clientCorrelator
      ? { subscriber: secondary, operation: "activationCode", key: body.clientCorrelator, fingerprint: fingerprint({ issuer }) }
      : undefined;
    // One request to a peer at a time per secondary (a clientCorrelator's replay included): the
    // peer's newest code supersedes its earlier ones, and our copies must follow in that order.
    // A request waits for the one before it at most a call's deadline, then gets SVC3002.
    const waitMs = ctx.config.federation?.callTimeoutMs ?? 5_000;
    return ctx.correlated.run(lockKey({ subscriber: secondary, operation: "activationCodeFromPeer", key: "" }), () => codeFromPeer(ctx, party, issuer, correlator), waitMs).catch((error: unknown) => {
      if (!(error instanceof LockWaitTimeout)) throw error;
      throw new TwinningError("peer_unreachable", { variables: [issuer], detail: "an earlier code request of this secondary to the peer is still under way", retryAfterSeconds: 1 });
    });
  }
  const nowMs = ctx.nowMs();
  for (let attempt = 0; attempt < 8; attempt++) {
    const code = generateCode(ctx.config.policy.codeLength);
    const correlator: CorrelatorInput | undefined = body.clientCorrelator
      ? { subscriber: secondary, operation: "activationCode", key: body.clientCorrelator, fingerprint: fingerprint({ issuer }), replayData: ctx.sealer.seal(code) }
      : undefined;
    const result = await ctx.store.issueActivationCode({
      provisionedParty: party,
      codeId: randomUUID(),
      secondaryAddress: secondary,
      secondaryOperatorId: ctx.config.operatorId,
      issuerOperatorId: issuer,
      codeHash: ctx.codes.hash(issuer, code),
      nowMs,
      expiresAtMs: nowMs + ctx.config.policy.codeTtlSeconds * 1000,
      ...(correlator ? { correlator } : {}),
    });
    if (result.kind === "issued") return { record: result.code, code };
    if (result.kind === "replayed") {
      if (!result.replay.replayData) throw new TwinningError("service_error", { detail: "correlator replay without data" });
      return { record: result.code, code: ctx.sealer.open(result.replay.replayData) };
    }
    // collision with another pending code: draw again
  }
  throw new TwinningError("service_error", { detail: "could not draw a unique activation code" });
}

/** HLF-SD-005: the code's state; once Used, the twin and the secondary's twin-scoped token. */
export async function readActivationCode(
  ctx: NodeContext,
  secondary: string,
  codeId: string,
  waitSeconds: number,
  signal: AbortSignal | undefined,
  underProvisioning?: string,
): Promise<{ record: ActivationCodeRecord; twin?: Twin; accessToken?: string }> {
  let record = await ctx.store.getActivationCode(secondary, codeId, ctx.nowMs());
  if (!record) throw new TwinningError("not_found", { variables: ["activationCode"] });
  const waitMs = Math.min(waitSeconds, ctx.config.limits.maxLongPollSeconds) * 1000;
  if (record.state === "Pending" && waitMs > 0) {
    await ctx.hub.waitForCode(codeId, Math.min(waitMs, Math.max(0, record.expiresAtMs - ctx.nowMs())), signal);
    record = (await ctx.store.getActivationCode(secondary, codeId, ctx.nowMs())) ?? record;
  }
  if (record.state !== "Used" || !record.twinId) return { record };
  const twin = await ctx.store.getTwin(record.twinId);
  if (!twin?.active) return { record };
  const { token } = await ctx.tokens.mint({
    subject: secondary,
    scope: "twinning:twin",
    twinId: twin.twinId,
    ttlSeconds: ctx.config.policy.twinTokenTtlSeconds,
    underProvisioning,
  });
  return { record, twin, accessToken: token };
}

type ActivationBody = { activationCode: string; operatorId: string; name?: string | undefined; clientCorrelator?: string | undefined };

/** HLF-PD-001, HLF-TE-007/008/009: the primary redeems a code and the twin starts On. */
/** `underProvisioning`: the primary's provisioning stamp the request was authenticated under (see MintInput). */
export async function activateTwin(ctx: NodeContext, primary: string, body: ActivationBody, underProvisioning?: string): Promise<{ twin: Twin; accessToken: string }> {
  if (body.clientCorrelator === undefined) return activateOnce(ctx, primary, body, underProvisioning);
  return ctx.correlated.run(lockKey({ subscriber: primary, operation: "activation", key: body.clientCorrelator }), () => activateOnce(ctx, primary, body, underProvisioning));
}

async function activateOnce(ctx: NodeContext, primary: string, body: ActivationBody, underProvisioning: string | undefined): Promise<{ twin: Twin; accessToken: string }> {
  const own = ctx.config.operatorId;
  if (!/^\d{4,12}$/.test(body.activationCode)) throw new TwinningError("invalid_code");
  const policy = ctx.config.policy;
  const party: ProvisionedParty = { address: primary, stamp: underProvisioning };
  const correlator = body.clientCorrelator
    ? {
        subscriber: primary,
        operation: "activation",
        key: body.clientCorrelator,
        // The code itself is a secret: only its keyed hash enters the fingerprint.
        fingerprint: fingerprint({ code: ctx.codes.hash(body.operatorId, body.activationCode), operatorId: body.operatorId, name: body.name ?? null }),
      }
    : undefined;
  const withToken = async (twin: Twin) => {
    const { token } = await ctx.tokens.mint({ subject: primary, scope: "twinning:twin", twinId: twin.twinId, ttlSeconds: policy.twinTokenTtlSeconds, underProvisioning });
    return { twin, accessToken: token };
  };
  if (body.operatorId !== own) {
    // HLF-IC-004: the code was issued by the secondary's operator; redeem it there.
    if (correlator) {
      const replay = await ctx.store.lookupCorrelator(correlator);
      const twin = replay && (await ctx.store.getTwin(replay.resourceId));
      if (twin?.active) return withToken(twin);
      if (twin) throw new TwinningError("update_not_allowed", { variables: ["the twin is deactivated"] });
    }
    return withToken(await activateAcross(ctx, { primary, party, peer: body.operatorId, name: body.name, activationCode: body.activationCode, correlator }));
  }
  if (!isWellFormedCode(body.activationCode, policy.codeLength)) throw new TwinningError("invalid_code");
  const nowMs = ctx.nowMs();
  const result = await ctx.store.redeemActivationCode({
    provisionedParty: party,
    issuerOperatorId: body.operatorId,
    codeHash: ctx.codes.hash(body.operatorId, body.activationCode),
    verify: (stored) => ctx.codes.matches(stored, body.operatorId, body.activationCode),
    twinId: randomUUID(),
    primaryAddress: primary,
    primaryOperatorId: own,
    ownOperatorId: own,
    name: body.name,
    nowMs,
    maxTwinsPerPrimary: policy.maxTwinsPerPrimary,
    attemptBudgets: [
      { key: localPrimaryBudgetKey(primary), limit: policy.maxFailedAttemptsPerPrimary },
      { key: `operator:${own}`, limit: policy.maxFailedAttemptsPerOperator },
      { key: `codes:${own}`, limit: policy.maxFailedAttemptsTotal },
    ],
    attemptWindowMs: policy.failedAttemptWindowSeconds * 1000,
    codeBudget: { key: `codes:${own}`, limit: policy.maxFailedAttemptsPerCode },
    ...(correlator ? { correlator } : {}),
  });
  switch (result.kind) {
    case "invalid-code":
      throw new TwinningError("invalid_code");
    case "rate-limited": {
      const seconds = Math.ceil(result.retryAfterMs / 1000);
      throw new TwinningError("too_many_attempts", { variables: [String(seconds)], retryAfterSeconds: seconds });
    }
    case "activated":
      ctx.hub.codeUsed(result.codeId);
      ctx.committed(result.notifications, result.queued);
      break;
    case "replayed":
      if (!result.twin.active) throw new TwinningError("update_not_allowed", { variables: ["the twin is deactivated"] });
      break;
    case "remote-secondary":
      // Our code, but the secondary is another operator's subscriber: activate it there (HLF-IC-004).
      return withToken(
        await activateAcross(ctx, { primary, party, peer: result.secondaryOperatorId, name: body.name, ownCode: { codeId: result.codeId, secondaryAddress: result.secondaryAddress }, correlator }),
      );
  }
  return withToken(result.twin);
}
