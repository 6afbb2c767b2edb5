import { effectsOfChange } from "../../domain/change-effects.ts";
import { defaultTwinName, MAX_TWIN_VERSION, type TwinRef } from "../../domain/twin.ts";
import { peerBacklogFull, TwinningError } from "../../errors/twinning-error.ts";
import type {
  ChangeResult,
  ChangeStatusInput,
  DeactivateInput,
  IssueCodeInput,
  ProvisionedParty,
  IssueCodeResult,
  RedeemCodeInput,
  RedeemCodeResult,
} from "../store-port.ts";
import type { PrimaryServiceEndpoints, Twin, TwinRole } from "../../domain/twin.ts";
import { findCorrelator, recordCorrelator } from "./sqlite-correlators.ts";
import type { SqliteDatabase } from "./sqlite-database.ts";
import { countQueuedForPeer, recordEffects } from "./sqlite-notifications.ts";
import { toCode, toSubscriber, toTwin, type CodeRow, type SubscriberRow, type TwinRow } from "./sqlite-rows.ts";
import { provisioningStamp } from "../../tokens/credentials.ts";

export const activeTwinOfSecondary = (d: SqliteDatabase, address: string) =>
  d.sql(`SELECT * FROM twins WHERE secondary_address = ? AND active = 1`).get(address) as TwinRow | undefined;
export const isActivePrimary = (d: SqliteDatabase, address: string) =>
  d.sql(`SELECT 1 FROM twins WHERE primary_address = ? AND active = 1 LIMIT 1`).get(address) !== undefined;
export const twinRow = (d: SqliteDatabase, twinId: string) => d.sql(`SELECT * FROM twins WHERE twin_id = ?`).get(twinId) as TwinRow | undefined;

/** HLF-TE-008/009 as seen from a device about to become a secondary. */
export function assertCanBeSecondary(d: SqliteDatabase, secondary: string): void {
  if (isActivePrimary(d, secondary)) throw new TwinningError("role_mixture", { variables: ["a primary cannot become a secondary"] });
  if (activeTwinOfSecondary(d, secondary)) throw new TwinningError("secondary_already_twinned");
}

/** Names are unique among a primary's active twins (also for a remote primary's twins held here). */
export function assertNameFree(d: SqliteDatabase, primary: string, name: string): void {
  if (d.sql(`SELECT 1 FROM twins WHERE primary_address = ? AND name = ? AND active = 1`).get(primary, name)) {
    throw new TwinningError("invalid_input", { variables: ["name"], detail: "name already used by another twin of this primary" });
  }
}

/** HLF-TE-008 and HLF-PD-006 for a device about to become a primary; returns its twins' names. */
export function assertCanBePrimary(d: SqliteDatabase, primary: string, maxTwinsPerPrimary: number): Set<string> {
  if (activeTwinOfSecondary(d, primary)) throw new TwinningError("role_mixture", { variables: ["a secondary cannot become a primary"] });
  const names = new Set((d.sql(`SELECT name FROM twins WHERE primary_address = ? AND active = 1`).all(primary) as { name: string }[]).map((r) => r.name));
  if (names.size >= maxTwinsPerPrimary) throw new TwinningError("too_many_twins", { variables: [String(maxTwinsPerPrimary)] });
  return names;
}

/** See ProvisionedParty: the request's subscriber is still provisioned as it was, in this transaction. */
export function assertStillProvisioned(d: SqliteDatabase, party: ProvisionedParty | undefined): void {
  if (party === undefined) return;
  const row = d.sql(`SELECT * FROM subscribers WHERE address = ?`).get(party.address) as SubscriberRow | undefined;
  const current = row && toSubscriber(row);
  if (!current?.twinningEnabled || (party.stamp !== undefined && provisioningStamp(current) !== party.stamp)) {
    throw new TwinningError("invalid_token", { detail: "the subscriber was de-provisioned or provisioned again during the request" });
  }
}

export function issueActivationCode(d: SqliteDatabase, input: IssueCodeInput): IssueCodeResult {
  return d.write(() => {
    assertStillProvisioned(d, input.provisionedParty);
    const replay = findCorrelator(d, input.correlator);
    if (replay) {
      const row = d.sql(`SELECT * FROM activation_codes WHERE code_id = ?`).get(replay.resourceId) as CodeRow | undefined;
      if (row) return { kind: "replayed", code: toCode(row, input.nowMs), replay };
    }
    if (!input.secondaryServedByPeer) assertCanBeSecondary(d, input.secondaryAddress);
    if (input.maxPendingForOperator !== undefined) assertPendingRoom(d, input, input.maxPendingForOperator);
    const clash = d
      .sql(`SELECT 1 FROM activation_codes WHERE issuer_operator_id = ? AND code_hash = ? AND state = 'Pending' AND expires_at > ?`)
      .get(input.issuerOperatorId, input.codeHash, input.nowMs);
    if (clash) return { kind: "collision" };
    // A new code supersedes the secondary's earlier ones: one live code per secondary.
    d.sql(`UPDATE activation_codes SET state = 'Superseded' WHERE secondary_address = ? AND secondary_operator_id = ? AND state = 'Pending'`).run(
      input.secondaryAddress,
      input.secondaryOperatorId,
    );
    d.sql(
      `INSERT INTO activation_codes (code_id, secondary_address, secondary_operator_id, issuer_operator_id, code_hash, state, created_at, expires_at) VALUES (?, ?, ?, ?, ?, 'Pending', ?, ?)`,
    ).run(input.codeId, input.secondaryAddress, input.secondaryOperatorId, input.issuerOperatorId, input.codeHash, input.nowMs, input.expiresAtMs);
    recordCorrelator(d, input.correlator, input.codeId, input.nowMs);
    const row = d.sql(`SELECT * FROM activation_codes WHERE code_id = ?`).get(input.codeId) as CodeRow;
    return { kind: "issued", code: toCode(row, input.nowMs) };
  });
}

/** The live codes held for one operator's secondaries (the one asking now aside), counted up to the bound. */
function assertPendingRoom(d: SqliteDatabase, input: IssueCodeInput, limit: number): void {
  const { n } = d
    .sql(
      `SELECT COUNT(*) AS n FROM (SELECT 1 FROM activation_codes WHERE secondary_operator_id = ? AND state = 'Pending' AND expires_at > ? AND secondary_address <> ? LIMIT CAST(? AS INTEGER))`,
    )
    .get(input.secondaryOperatorId, input.nowMs, input.secondaryAddress, limit) as { n: number };
  if (n >= limit) throw new TwinningError("policy_error", { variables: [`at most ${limit} pending activation codes for operator ${input.secondaryOperatorId}'s secondaries`] });
}

export function redeemActivationCode(d: SqliteDatabase, input: RedeemCodeInput): RedeemCodeResult {
  return d.write(() => {
    assertStillProvisioned(d, input.provisionedParty);
    const replay = findCorrelator(d, input.correlator);
    if (replay) {
      const row = twinRow(d, replay.resourceId);
      if (row) return { kind: "replayed", twin: toTwin(row) };
    }
    const since = input.nowMs - input.attemptWindowMs;
    let retryAfterMs = 0;
    for (const budget of input.attemptBudgets) {
      const used = d
        .sql(`SELECT COUNT(*) AS n, MIN(at) AS oldest FROM failed_attempts WHERE budget_key = ? AND at > ?`)
        .get(budget.key, since) as { n: number; oldest: number | null };
      if (used.n >= budget.limit) retryAfterMs = Math.max(retryAfterMs, (used.oldest ?? input.nowMs) + input.attemptWindowMs - input.nowMs);
    }
    if (retryAfterMs > 0) return { kind: "rate-limited", retryAfterMs };

    const candidates = d
      .sql(`SELECT * FROM activation_codes WHERE issuer_operator_id = ? AND code_hash = ? AND state = 'Pending'`)
      .all(input.issuerOperatorId, input.codeHash) as CodeRow[];
    const code = candidates.find((c) => input.verify(c.code_hash) && c.expires_at > input.nowMs);
    if (!code) {
      for (const budget of input.attemptBudgets) d.sql(`INSERT INTO failed_attempts (budget_key, at) VALUES (?, ?)`).run(budget.key, input.nowMs);
      if (input.codeBudget) voidOverGuessedCodes(d, input.issuerOperatorId, input.codeBudget);
      return { kind: "invalid-code" };
    }

    const own = input.ownOperatorId ?? input.primaryOperatorId;
    if (twinRow(d, input.twinId)) throw new TwinningError("update_not_allowed", { variables: ["the twin id is already used"] });
    if (d.sql(`SELECT 1 FROM cancelled_twins WHERE twin_id = ?`).get(input.twinId)) throw new TwinningError("update_not_allowed", { variables: ["the twin was cancelled"] });
    const primary = input.primaryAddress;
    const secondary = code.secondary_address;
    if (primary === secondary && input.primaryOperatorId === code.secondary_operator_id) {
      throw new TwinningError("role_mixture", { variables: ["a device cannot twin with itself"] });
    }
    // Each node checks the rules of the side it serves (HLF-TE-008/009); the peer checks the other.
    const primaryLocal = input.primaryOperatorId === own;
    const names = primaryLocal ? assertCanBePrimary(d, primary, input.maxTwinsPerPrimary) : new Set<string>();
    if (code.secondary_operator_id !== own) {
      return { kind: "remote-secondary", codeId: code.code_id, secondaryAddress: secondary, secondaryOperatorId: code.secondary_operator_id };
    }
    assertCanBeSecondary(d, secondary);
    if (primaryLocal && input.name !== undefined) assertNameFree(d, primary, input.name);
    const name = input.name ?? defaultTwinName(names);

    d.sql(
      `INSERT INTO twins (twin_id, primary_address, primary_operator_id, secondary_address, secondary_operator_id, name, status, version, status_origin, active, created_at, updated_at)
       VALUES (?, ?, ?, ?, ?, ?, 'On', 1, ?, 1, ?, ?)`,
    ).run(input.twinId, primary, input.primaryOperatorId, secondary, code.secondary_operator_id, name, input.primaryOperatorId, input.nowMs, input.nowMs);
    d.sql(`UPDATE activation_codes SET state = 'Used', twin_id = ? WHERE code_id = ?`).run(input.twinId, code.code_id);
    if (!primaryLocal) keepPrimaryServiceEndpoints(d, input.twinId, input.primaryServiceEndpoints);
    recordCorrelator(d, input.correlator, input.twinId, input.nowMs);
    const twin = toTwin(twinRow(d, input.twinId)!);
    const { notifications, queued } = recordEffects(d, effectsOfChange("activation", twin, "primary", own, input.nowMs), input.nowMs);
    return { kind: "activated", twin, codeId: code.code_id, notifications, queued };
  });
}

/**
 * The per-code limit: the limit-th most recent failure under the key is the time T after which
 * that many guesses were made; every pending code issued at or before T has seen them all.
 */
function voidOverGuessedCodes(d: SqliteDatabase, issuerOperatorId: string, budget: { key: string; limit: number }): void {
  const kth = d.sql(`SELECT at FROM failed_attempts WHERE budget_key = ? ORDER BY at DESC LIMIT 1 OFFSET ?`).get(budget.key, budget.limit - 1) as { at: number } | undefined;
  if (!kth) return;
  d.sql(`UPDATE activation_codes SET state = 'Superseded' WHERE issuer_operator_id = ? AND state = 'Pending' AND created_at <= ?`).run(issuerOperatorId, kth.at);
}

export function findTwinOfPrimary(d: SqliteDatabase, primary: string, ref: TwinRef): Twin | undefined {
  const row =
    ref.kind === "twinId"
      ? (d.sql(`SELECT * FROM twins WHERE twin_id = ? AND primary_address = ? AND active = 1`).get(ref.twinId, primary) as TwinRow | undefined)
      : ref.kind === "secondary"
        ? (d.sql(`SELECT * FROM twins WHERE secondary_address = ? AND primary_address = ? AND active = 1`).get(ref.address, primary) as TwinRow | undefined)
        : (d.sql(`SELECT * FROM twins WHERE name = ? AND primary_address = ? AND active = 1`).get(ref.name, primary) as TwinRow | undefined);
  return row ? toTwin(row) : undefined;
}

export function findTwinOfSecondary(d: SqliteDatabase, secondary: string): Twin | undefined {
  const row = activeTwinOfSecondary(d, secondary);
  return row ? toTwin(row) : undefined;
}

export function getTwin(d: SqliteDatabase, twinId: string): Twin | undefined {
  const row = twinRow(d, twinId);
  return row ? toTwin(row) : undefined;
}

export function listTwinsOfPrimary(d: SqliteDatabase, primary: string): Twin[] {
  return (d.sql(`SELECT * FROM twins WHERE primary_address = ? AND active = 1 ORDER BY created_at, twin_id`).all(primary) as TwinRow[]).map(toTwin);
}

/** The active twin, or POL1038 (a deactivated twin cannot change); with `primaryAddress`, another primary's twin is not found. */
function activeTwin(d: SqliteDatabase, twinId: string, primaryAddress?: string): TwinRow {
  const row = twinRow(d, twinId);
  if (!row || (primaryAddress !== undefined && row.primary_address !== primaryAddress)) throw new TwinningError("not_found", { variables: ["twin"] });
  if (row.active !== 1) throw new TwinningError("update_not_allowed", { variables: ["the twin is deactivated"] });
  return row;
}

export function renameTwin(d: SqliteDatabase, input: { twinId: string; name: string; nowMs: number }): Twin {
  return d.write(() => {
    const row = activeTwin(d, input.twinId);
    if (row.name !== input.name) {
      const taken = d.sql(`SELECT 1 FROM twins WHERE primary_address = ? AND name = ? AND active = 1`).get(row.primary_address, input.name);
      if (taken) throw new TwinningError("invalid_input", { variables: ["name"], detail: "name already used by another twin of this primary" });
      d.sql(`UPDATE twins SET name = ?, updated_at = ? WHERE twin_id = ?`).run(input.name, input.nowMs, input.twinId);
    }
    return toTwin(twinRow(d, input.twinId)!);
  });
}

/**
 * Runs in the caller's transaction, which must give it a savepoint of its own: group commit does
 * (one savepoint per change; a second one here measured ~3 µs more per toggle).
 */
export function changeTwinStatus(d: SqliteDatabase, input: ChangeStatusInput): ChangeResult {
  if (!d.inTransaction) throw new Error("changeTwinStatus runs inside a transaction (GroupCommit gives it its savepoint)");
  // One statement in the usual case (an active twin whose status changes); only when it
  // changes nothing is the twin read, to say why: unknown, deactivated, or already so.
  const updated = d
    .sql(
      `UPDATE twins SET status = ?, version = version + 1, status_origin = ?, updated_at = ?
       WHERE twin_id = ? AND active = 1 AND status <> ? AND primary_address = coalesce(?, primary_address) RETURNING *`,
    )
    .get(input.status, input.origin, input.nowMs, input.twinId, input.status, input.primaryAddress ?? null) as TwinRow | undefined;
  if (!updated) return { twin: toTwin(activeTwin(d, input.twinId, input.primaryAddress)), changed: false, notifications: [], queued: false };
  const twin = toTwin(updated);
  // Only a peer can have brought a twin this far (its last version at the wire's bound): a version
  // past it would be refused by every peer for good. Refused here instead (the savepoint undoes it).
  if (twin.version > MAX_TWIN_VERSION) throw new TwinningError("update_not_allowed", { variables: ["the twin's status has used up its versions: deactivate it and twin again"] });
  const effects = effectsOfChange("status", twin, input.changedBy, input.origin, input.nowMs);
  if (input.maxQueuedPerPeer !== undefined) for (const m of effects.peerMessages) assertPeerBacklogRoom(d, m.operatorId, input.maxQueuedPerPeer);
  const { notifications, queued, laneHeads } = recordEffects(d, effects, input.nowMs);
  return { twin, changed: true, notifications, queued, laneHeads };
}

/** The outbox bound per peer: counting stops at the limit, so a check costs at most that. */
function assertPeerBacklogRoom(d: SqliteDatabase, operatorId: string, limit: number): void {
  if (countQueuedForPeer(d, operatorId, limit) >= limit) throw peerBacklogFull(operatorId, limit);
}

export function deactivateTwin(d: SqliteDatabase, input: DeactivateInput): ChangeResult {
  return d.write(() => {
    activeTwin(d, input.twinId);
    return endTwin(d, input.twinId, input.changedBy, input.ownOperatorId, input.nowMs);
  });
}

/**
 * Deactivates a twin, in the caller's transaction, and records what that causes: the other side
 * of `changedBy` is notified here or sent the deactivation; `fromPeer` (the peer ended it): only
 * our side hears, nothing is sent back.
 */
export function endTwin(d: SqliteDatabase, twinId: string, changedBy: TwinRole, ownOperatorId: string | undefined, nowMs: number, fromPeer = false): ChangeResult {
  d.sql(`UPDATE twins SET active = 0, updated_at = ? WHERE twin_id = ?`).run(nowMs, twinId);
  const twin = toTwin(twinRow(d, twinId)!);
  const { notifications, queued, laneHeads } = recordEffects(d, effectsOfChange("deactivation", twin, changedBy, ownOperatorId, nowMs, fromPeer), nowMs);
  return { twin, changed: true, notifications, queued, laneHeads };
}

/** See TwinningStore.primaryServiceEndpoints. */
export function keepPrimaryServiceEndpoints(d: SqliteDatabase, twinId: string, endpoints: PrimaryServiceEndpoints | undefined): void {
  if (endpoints) d.sql(`INSERT INTO twin_primary_services (twin_id, messaging, nms) VALUES (?, ?, ?)`).run(twinId, endpoints.messaging, endpoints.nms);
}

export function primaryServiceEndpoints(d: SqliteDatabase, twinId: string): PrimaryServiceEndpoints | undefined {
  return d.sql(`SELECT messaging, nms FROM twin_primary_services WHERE twin_id = ?`).get(twinId) as PrimaryServiceEndpoints | undefined;
}
