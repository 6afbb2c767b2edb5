import { effectsOfChange } from "../../domain/change-effects.ts";
import { otherRole } from "../../domain/notification.ts";
import type { TwinRole } from "../../domain/twin.ts";
import type { ChangeResult, DeleteSubscriberInput, SubscriberChange, SubscriberRecord } from "../store-port.ts";
import type { SqliteDatabase } from "./sqlite-database.ts";
import { deleteNotificationsTo } from "./sqlite-feed.ts";
import { recordEffects } from "./sqlite-notifications.ts";
import type { TwinRow } from "./sqlite-rows.ts";
import { endTwin } from "./sqlite-twins.ts";

/**
 * A subscriber's provisioning is where a number becomes ours or stops being ours, so it is
 * also where the twins that say otherwise end, in the same transaction.
 */

/** Active twins naming the address on a side held by `operator` (`=`) or by anyone else (`<>`). */
function twinsNaming(d: SqliteDatabase, address: string, operatorId: string, held: "=" | "<>"): { row: TwinRow; role: TwinRole }[] {
  const of = (role: TwinRole) =>
    (d.sql(`SELECT * FROM twins WHERE ${role}_address = ? AND ${role}_operator_id ${held} ? AND active = 1 ORDER BY created_at, twin_id`).all(address, operatorId) as TwinRow[]).map(
      (row) => ({ row, role }),
    );
  return [...of("primary"), ...of("secondary")];
}

/** What ending these twins caused, gathered. */
function gathered(results: readonly ChangeResult[]): SubscriberChange {
  return { endedTwins: results.map((r) => r.twin), notifications: results.flatMap((r) => r.notifications), queued: results.some((r) => r.queued) };
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
      : gathered(
          twinsNaming(d, r.address, ownOperatorId, "<>").map(({ row, role: claimedRole }) => {
            // To the claiming operator, as our party's deactivation…
            const ended = endTwin(d, row.twin_id, otherRole(claimedRole), ownOperatorId, r.updatedAtMs);
            // …and to our party, as the other side's (notified here, nothing sent).
            const heard = recordEffects(d, effectsOfChange("deactivation", ended.twin, claimedRole, ownOperatorId, r.updatedAtMs, true), r.updatedAtMs);
            return { ...ended, notifications: [...ended.notifications, ...heard.notifications], queued: ended.queued || heard.queued };
          }),
        );
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
    const change = gathered(twinsNaming(d, input.address, input.ownOperatorId, "=").map(({ row, role }) => endTwin(d, row.twin_id, role, input.ownOperatorId, input.nowMs)));
    for (const { subscription_id } of d.sql(`SELECT subscription_id FROM subscriptions WHERE address = ?`).all(input.address) as { subscription_id: string }[]) {
      d.sql(`DELETE FROM outbox WHERE lane = ? AND state = 'pending'`).run(`callback:${subscription_id}`);
    }
    d.sql(`DELETE FROM subscriptions WHERE address = ?`).run(input.address);
    deleteNotificationsTo(d, input.address);
    return { deleted: true, ...change };
  });
}
