import { effectsOfChange } from "../../domain/change-effects.ts";
import type { StoredNotification } from "../../domain/notification.ts";
import type { Twin, TwinRole } from "../../domain/twin.ts";
import type { DeleteSubscriberInput, SubscriberChange, SubscriberRecord } from "../store-port.ts";
import type { SqliteDatabase } from "./sqlite-database.ts";
import { recordEffects } from "./sqlite-notifications.ts";
import { toTwin, type TwinRow } from "./sqlite-rows.ts";

/**
 * A subscriber's provisioning is where a number becomes ours or stops being ours, so it is
 * also where the twins that say otherwise end, in the same transaction.
 */

const other = (role: TwinRole): TwinRole => (role === "primary" ? "secondary" : "primary");

/** Active twins naming the address on a side held by `operator` (`=`) or by anyone else (`<>`). */
function twinsNaming(d: SqliteDatabase, address: string, operatorId: string, held: "=" | "<>"): { row: TwinRow; role: TwinRole }[] {
  const of = (role: TwinRole) =>
    (d.sql(`SELECT * FROM twins WHERE ${role}_address = ? AND ${role}_operator_id ${held} ? AND active = 1 ORDER BY created_at, twin_id`).all(address, operatorId) as TwinRow[]).map(
      (row) => ({ row, role }),
    );
  return [...of("primary"), ...of("secondary")];
}

/** Deactivates each twin and records what that causes; `causes(twin, role)` says how. */
function endTwins(
  d: SqliteDatabase,
  found: { row: TwinRow; role: TwinRole }[],
  nowMs: number,
  causes: (twin: Twin, role: TwinRole) => ReturnType<typeof effectsOfChange>[],
): SubscriberChange {
  const endedTwins: Twin[] = [];
  const notifications: StoredNotification[] = [];
  let queued = false;
  for (const { row, role } of found) {
    d.sql(`UPDATE twins SET active = 0, updated_at = ? WHERE twin_id = ?`).run(nowMs, row.twin_id);
    const twin = toTwin({ ...row, active: 0, updated_at: nowMs });
    for (const effects of causes(twin, role)) {
      const recorded = recordEffects(d, effects, nowMs);
      notifications.push(...recorded.notifications);
      queued ||= recorded.queued;
    }
    endedTwins.push(twin);
  }
  return { endedTwins, notifications, queued };
}

/**
 * Creates or updates the record. A new subscriber's number is ours from now on: an active twin
 * held here that names it as another operator's subscriber (a peer's claim made before we
 * provisioned it, or one left from before the number moved here) ends. That operator is told
 * (a queued DELETE), and our party of the twin is notified.
 */
export function putSubscriber(d: SqliteDatabase, r: SubscriberRecord, ownOperatorId: string): SubscriberChange & { created: boolean } {
  return d.write(() => {
    const existed = d.sql(`SELECT 1 FROM subscribers WHERE address = ?`).get(r.address) !== undefined;
    d.sql(
      `INSERT INTO subscribers (address, twinning_enabled, credential_hash, updated_at) VALUES (?, ?, ?, ?)
       ON CONFLICT (address) DO UPDATE SET twinning_enabled = excluded.twinning_enabled, credential_hash = excluded.credential_hash, updated_at = excluded.updated_at`,
    ).run(r.address, r.twinningEnabled ? 1 : 0, r.credentialHash, r.updatedAtMs);
    const change = existed
      ? { endedTwins: [], notifications: [], queued: false }
      : endTwins(d, twinsNaming(d, r.address, ownOperatorId, "<>"), r.updatedAtMs, (twin, claimedRole) => [
          // To the claiming operator, as our party's deactivation…
          effectsOfChange("deactivation", twin, other(claimedRole), ownOperatorId, r.updatedAtMs),
          // …and to our party, as the other side's (notified here, nothing sent).
          effectsOfChange("deactivation", twin, claimedRole, ownOperatorId, r.updatedAtMs, true),
        ]);
    return { created: !existed, ...change };
  });
}

/**
 * De-provisions: the subscriber's twins end (their other sides notified, here or at the peer),
 * and its subscriptions, the callbacks queued for them and its notification feed are deleted,
 * so whoever gets the number next inherits nothing.
 */
export function deleteSubscriber(d: SqliteDatabase, input: DeleteSubscriberInput): SubscriberChange & { deleted: boolean } {
  return d.write(() => {
    if (d.sql(`DELETE FROM subscribers WHERE address = ?`).run(input.address).changes === 0) {
      return { deleted: false, endedTwins: [], notifications: [], queued: false };
    }
    const change = endTwins(d, twinsNaming(d, input.address, input.ownOperatorId, "="), input.nowMs, (twin, role) => [
      effectsOfChange("deactivation", twin, role, input.ownOperatorId, input.nowMs),
    ]);
    for (const { subscription_id } of d.sql(`SELECT subscription_id FROM subscriptions WHERE address = ?`).all(input.address) as { subscription_id: string }[]) {
      d.sql(`DELETE FROM outbox WHERE lane = ? AND state = 'pending'`).run(`callback:${subscription_id}`);
    }
    d.sql(`DELETE FROM subscriptions WHERE address = ?`).run(input.address);
    d.sql(`DELETE FROM notifications WHERE address = ?`).run(input.address);
    return { deleted: true, ...change };
  });
}
