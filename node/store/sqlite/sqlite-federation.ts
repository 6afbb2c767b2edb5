import { effectsOfChange, isNewerStatus } from "../../domain/change-effects.ts";
import type { StoredNotification } from "../../domain/notification.ts";
import { defaultTwinName, type TwinRole } from "../../domain/twin.ts";
import { TwinningError } from "../../errors/twinning-error.ts";
import type { ChangeResult, FederatedTwinResult, InsertFederatedTwinInput, RemoteDeactivationInput, RemoteStatusInput } from "../store-port.ts";
import { findCorrelator, recordCorrelator } from "./sqlite-correlators.ts";
import type { SqliteDatabase } from "./sqlite-database.ts";
import { recordEffects } from "./sqlite-notifications.ts";
import { toTwin, type TwinRow } from "./sqlite-rows.ts";
import { activeTwinOfSecondary, assertCanBePrimary, assertStillProvisioned, assertCanBeSecondary, endTwin, keepPrimaryServiceEndpoints, twinRow } from "./sqlite-twins.ts";

/**
 * Store operations of the federation (HLF-IC-*): twins agreed with a peer, and changes the
 * peer made. Each node checks the rules of the side it serves, in the same transaction as
 * the write.
 */
/** A twin the peer already cancelled (see applyRemoteDeactivation) is never created. */
export function assertNotCancelled(d: SqliteDatabase, twinId: string): void {
  if (d.sql(`SELECT 1 FROM cancelled_twins WHERE twin_id = ?`).get(twinId)) {
    throw new TwinningError("update_not_allowed", { variables: ["the twin was cancelled"] });
  }
}

export function insertFederatedTwin(d: SqliteDatabase, input: InsertFederatedTwinInput): FederatedTwinResult {
  return d.write(() => {
    assertStillProvisioned(d, input.provisionedParty);
    const replay = findCorrelator(d, input.correlator);
    if (replay) {
      const row = twinRow(d, replay.resourceId);
      if (row) return { twin: toTwin(row), replayed: true, notifications: [], queued: false };
    }
    const t = input.twin;
    const existing = twinRow(d, t.twinId);
    if (existing) {
      // A retried activation message whose first attempt committed: same answer, no second effect.
      // Only to the twin's own operators: another that knows the id learns nothing of it.
      const same =
        existing.primary_address === t.primaryAddress &&
        existing.secondary_address === t.secondaryAddress &&
        existing.primary_operator_id === t.primaryOperatorId &&
        existing.secondary_operator_id === t.secondaryOperatorId;
      if (existing.active === 1 && same) {
        return { twin: toTwin(existing), replayed: true, notifications: [], queued: false };
      }
      throw new TwinningError("update_not_allowed", { variables: ["the twin id is already used"] });
    }
    assertNotCancelled(d, t.twinId);
    assertPeerSideNotOurs(d, input);
    let name = t.name;
    let ended: { notifications: StoredNotification[]; queued: boolean } | undefined;
    if (input.localSide === "primary") {
      ended = endStaleTwinOfRemoteSecondary(d, t.secondaryAddress, t.secondaryOperatorId, t.primaryOperatorId, input.nowMs);
      const names = assertCanBePrimary(d, t.primaryAddress, input.maxTwinsPerPrimary);
      if (names.has(name)) {
        // A default name taken meanwhile (two activations at once) is replaced by the next free
        // one: names belong to this side (HLF-TE-007). A name the user chose is refused.
        if (!input.nameIsDefault) throw new TwinningError("invalid_input", { variables: ["name"], detail: "name already used by another twin of this primary" });
        name = defaultTwinName(names);
      }
    } else {
      // Names belong to the primary's operator, which checked this one (HLF-TE-007): renames are
      // not sent to peers, so names held here may be stale and must not refuse a new twin.
      assertCanBeSecondary(d, t.secondaryAddress);
    }
    let consumedCodeId: string | undefined;
    if (input.consumeCodeId !== undefined) {
      const used = d.sql(`UPDATE activation_codes SET state = 'Used', twin_id = ? WHERE code_id = ? AND state = 'Pending' AND expires_at > ?`).run(t.twinId, input.consumeCodeId, input.nowMs);
      if (used.changes !== 1) throw new TwinningError("invalid_code");
      consumedCodeId = input.consumeCodeId;
    }
    if (input.consumeRemoteCodeFrom !== undefined) {
      // The user's consent: the secondary asked this operator for a code, and it is still live.
      const pending = d
        .sql(`SELECT code_id FROM activation_codes WHERE secondary_address = ? AND issuer_operator_id = ? AND state = 'Pending' AND expires_at > ? ORDER BY created_at DESC LIMIT 1`)
        .get(t.secondaryAddress, input.consumeRemoteCodeFrom, input.nowMs) as { code_id: string } | undefined;
      if (!pending) throw new TwinningError("invalid_code");
      d.sql(`UPDATE activation_codes SET state = 'Used', twin_id = ? WHERE code_id = ?`).run(t.twinId, pending.code_id);
      consumedCodeId = pending.code_id;
    }
    d.sql(
      `INSERT INTO twins (twin_id, primary_address, primary_operator_id, secondary_address, secondary_operator_id, name, status, version, status_origin, active, created_at, updated_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)`,
    ).run(t.twinId, t.primaryAddress, t.primaryOperatorId, t.secondaryAddress, t.secondaryOperatorId, name, t.status, t.version, t.statusOrigin, input.nowMs, input.nowMs);
    if (input.localSide === "secondary") keepPrimaryServiceEndpoints(d, t.twinId, input.primaryServiceEndpoints);
    recordCorrelator(d, input.correlator, t.twinId, input.nowMs);
    for (const id of input.disarmOutboxIds ?? []) {
      // Withdrawn only while the worker cannot have taken it (it takes entries due by the same
      // clock): once due, it may be on its way to the peer; and once tried (written back with a
      // later retry time), the peer may have applied it though its answer was lost.
      const withdrawn = d.sql(`DELETE FROM outbox WHERE id = ? AND state = 'pending' AND attempts = 0 AND next_attempt_at > ?`).run(id, input.nowMs);
      if (withdrawn.changes !== 1) {
        const peer = input.localSide === "primary" ? t.secondaryOperatorId : t.primaryOperatorId;
        throw new TwinningError("peer_unreachable", { variables: [peer], detail: "the activation's compensation fell due before it committed" });
      }
    }
    const twin = toTwin(twinRow(d, t.twinId)!);
    const own = input.localSide === "primary" ? t.primaryOperatorId : t.secondaryOperatorId;
    const { notifications, queued } = recordEffects(d, effectsOfChange("activation", twin, "primary", own, input.nowMs, true), input.nowMs);
    return { twin, replayed: false, notifications: [...(ended?.notifications ?? []), ...notifications], queued: queued || (ended?.queued ?? false), consumedCodeId };
  });
}

/**
 * The peer's side of a federated twin is the peer's subscriber: never one this node serves, nor
 * the other side's own address. Checked in the insert's transaction, whoever named it (a peer's
 * activation message, or a peer's answer to ours): a peer that named one of our subscribers
 * would otherwise hand it our primary's twin, and with it a primary-services token.
 */
function assertPeerSideNotOurs(d: SqliteDatabase, input: InsertFederatedTwinInput): void {
  const t = input.twin;
  const peerAddress = input.localSide === "primary" ? t.secondaryAddress : t.primaryAddress;
  const ours = t.secondaryAddress === t.primaryAddress || d.sql(`SELECT 1 FROM subscribers WHERE address = ?`).get(peerAddress) !== undefined;
  if (!ours) return;
  if (input.localSide === "primary") {
    // Named in the peer's answer to our activation: the peer misbehaved, the activation fails (and is compensated).
    throw new TwinningError("peer_unreachable", { variables: [t.secondaryOperatorId], detail: "the peer named an address of ours as its secondary" });
  }
  throw new TwinningError("access_denied", { variables: ["the address is not the caller's subscriber"] });
}

/**
 * HLF-TE-009 at the primary's node: the secondary's home operator has just committed the
 * secondary as free, so an active twin of it held here is a stale copy whose deactivation
 * message is still on its way (a peer outage, a backoff). It ends now, as that message would
 * end it; the message, when it comes, changes nothing.
 */
function endStaleTwinOfRemoteSecondary(d: SqliteDatabase, secondary: string, secondaryOperatorId: string, ownOperatorId: string, nowMs: number) {
  const stale = activeTwinOfSecondary(d, secondary);
  if (!stale) return undefined;
  if (stale.secondary_operator_id !== secondaryOperatorId) throw new TwinningError("secondary_already_twinned");
  return endTwin(d, stale.twin_id, "secondary", ownOperatorId, nowMs, true);
}

/** The peer must be the operator of the twin's other side; `peerSide` is that side. */
function twinOfPeer(d: SqliteDatabase, twinId: string, fromOperatorId: string, ownOperatorId: string): { row: TwinRow; peerSide: TwinRole } | undefined {
  const row = twinRow(d, twinId);
  if (!row) return undefined;
  const peerSide: TwinRole = row.primary_operator_id === ownOperatorId ? "secondary" : "primary";
  const peer = peerSide === "primary" ? row.primary_operator_id : row.secondary_operator_id;
  if (peer !== fromOperatorId || fromOperatorId === ownOperatorId) {
    throw new TwinningError("access_denied", { variables: ["the twin is not shared with this operator"] });
  }
  return { row, peerSide };
}

export function applyRemoteStatus(d: SqliteDatabase, input: RemoteStatusInput): ChangeResult {
  return d.write(() => {
    const found = twinOfPeer(d, input.twinId, input.fromOperatorId, input.ownOperatorId);
    if (!found) throw new TwinningError("not_found", { variables: ["twin"] });
    const { row, peerSide } = found;
    // Deactivation is final and wins over any status.
    if (row.active !== 1) return { twin: toTwin(row), changed: false, notifications: [], queued: false };
    const incoming = { version: input.version, origin: input.fromOperatorId };
    if (!isNewerStatus(incoming, { version: row.version, origin: row.status_origin })) return { twin: toTwin(row), changed: false, notifications: [], queued: false };
    d.sql(`UPDATE twins SET status = ?, version = ?, status_origin = ?, updated_at = ? WHERE twin_id = ?`).run(input.status, input.version, input.fromOperatorId, input.nowMs, input.twinId);
    const twin = toTwin(twinRow(d, input.twinId)!);
    // The device only hears of a real change of status.
    if (row.status === input.status) return { twin, changed: true, notifications: [], queued: false };
    const { notifications, queued } = recordEffects(d, effectsOfChange("status", twin, peerSide, input.ownOperatorId, input.nowMs, true), input.nowMs);
    return { twin, changed: true, notifications, queued };
  });
}

export function applyRemoteDeactivation(d: SqliteDatabase, input: RemoteDeactivationInput): ChangeResult | undefined {
  return d.write(() => {
    const found = twinOfPeer(d, input.twinId, input.fromOperatorId, input.ownOperatorId);
    if (!found) {
      // A compensation that overtook its activation: remember it, so the late activation is refused.
      d.sql(`INSERT INTO cancelled_twins (twin_id, from_operator_id, cancelled_at) VALUES (?, ?, ?) ON CONFLICT (twin_id) DO NOTHING`).run(input.twinId, input.fromOperatorId, input.nowMs);
      return undefined;
    }
    if (found.row.active !== 1) return { twin: toTwin(found.row), changed: false, notifications: [], queued: false };
    return endTwin(d, input.twinId, found.peerSide, input.ownOperatorId, input.nowMs, true);
  });
}

export function isKnownJti(d: SqliteDatabase, jti: string, expiresAtMs: number): boolean {
  return d.sql(`SELECT 1 FROM federation_jti WHERE expires_at = ? AND jti = ?`).get(expiresAtMs, jti) !== undefined;
}

export function rememberJti(d: SqliteDatabase, jti: string, expiresAtMs: number): boolean {
  return d.sql(`INSERT INTO federation_jti (expires_at, jti) VALUES (?, ?) ON CONFLICT DO NOTHING`).run(expiresAtMs, jti).changes === 1;
}
