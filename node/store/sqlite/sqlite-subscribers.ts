import { localPrimaryBudgetKey } from "../../domain/activation-code.ts";
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
 * What a provisioning opened ends with it: every PUT of a subscriber renews its credential's
 * salt, so the tokens issued before stop working (provisioningStamp), and so do its callback
 * subscriptions (with the callbacks queued for them), its pending activation codes (its own and
 * the copies of codes a peer issued to it), its clientCorrelators and its failed redemptions as
 * a primary (a new holder of the number is not rate-limited for the last one's guesses). A stolen token's
 * subscription, a code shown to the previous holder of the number, or a correlator's replay of
 * that code would otherwise outlive the tokens that made them.
 */
function endWhatItOpened(d: SqliteDatabase, address: string, ownOperatorId: string): void {
  for (const { subscription_id } of d.sql(`SELECT subscription_id FROM subscriptions WHERE address = ?`).all(address) as { subscription_id: string }[]) {
    d.sql(`DELETE FROM outbox WHERE lane = ? AND state = 'pending'`).run(`callback:${subscription_id}`);
  }
  d.sql(`DELETE FROM subscriptions WHERE address = ?`).run(address);
  d.sql(`UPDATE activation_codes SET state = 'Superseded' WHERE secondary_address = ? AND secondary_operator_id = ? AND state = 'Pending'`).run(address, ownOperatorId);
  d.sql(`DELETE FROM client_correlators WHERE subscriber = ?`).run(address);
  d.sql(`DELETE FROM failed_attempts WHERE budget_key = ?`).run(localPrimaryBudgetKey(address));
}

/** Ends the twins in which the address is this node's party, each as that party's deactivation (the other side notified, here or at the peer). */
const endOurPartysTwins = (d: SqliteDatabase, address: string, ownOperatorId: string, nowMs: number): ChangeResult[] =>
  twinsNaming(d, address, ownOperatorId, "=").map(({ row, role }) => endTwin(d, row.twin_id, role, ownOperatorId, nowMs));

/**
 * Creates or updates the record, ending what the previous provisioning opened (endWhatItOpened).
 * A new subscriber's number is ours from now on, and its previous holder's twins end:
 * - an active twin held here that names it as another operator's subscriber (a peer's claim
 *   made before we provisioned it, or one left from before the number moved here): that
 *   operator is told (a queued DELETE), and our party of the twin is notified;
 * - a twin naming it as ours, left by a request that was authenticated before the number was
 *   de-provisioned and committed after.
 */
export function putSubscriber(d: SqliteDatabase, r: SubscriberRecord, ownOperatorId: string): SubscriberChange & { created: boolean } {
  return d.write(() => {
    const existed = d.sql(`SELECT 1 FROM subscribers WHERE address = ?`).get(r.address) !== undefined;
    d.sql(
      `INSERT INTO subscribers (address, twinning_enabled, credential_hash, updated_at) VALUES (?, ?, ?, ?)
       ON CONFLICT (address) DO UPDATE SET twinning_enabled = excluded.twinning_enabled, credential_hash = excluded.credential_hash, updated_at = excluded.updated_at`,
    ).run(r.address, r.twinningEnabled ? 1 : 0, r.credentialHash, r.updatedAtMs);
    endWhatItOpened(d, r.address, ownOperatorId);
    const change = existed
      ? { endedTwins: [], notifications: [], queued: false }
      : gathered([
          ...twinsNaming(d, r.address, ownOperatorId, "<>").map(({ row, role: claimedRole }) => {
            // To the claiming operator, as our party's deactivation…
            const ended = endTwin(d, row.twin_id, otherRole(claimedRole), ownOperatorId, r.updatedAtMs);
            // …and to our party, as the other side's (notified here, nothing sent).
            const heard = recordEffects(d, effectsOfChange("deactivation", ended.twin, claimedRole, ownOperatorId, r.updatedAtMs, true), r.updatedAtMs);
            return { ...ended, notifications: [...ended.notifications, ...heard.notifications], queued: ended.queued || heard.queued };
          }),
          ...endOurPartysTwins(d, r.address, ownOperatorId, r.updatedAtMs),
        ]);
    return { created: !existed, ...change };
  });
}

/**
 * De-provisions: the subscriber's twins end (their other sides notified, here or at the peer),
 * what its provisioning opened ends (endWhatItOpened) and its notification feed is deleted, so
 * whoever gets the number next inherits nothing.
 */
export function deleteSubscriber(d: SqliteDatabase, input: DeleteSubscriberInput): SubscriberChange & { deleted: boolean } {
  return d.write(() => {
    if (d.sql(`DELETE FROM subscribers WHERE address = ?`).run(input.address).changes === 0) {
      return { deleted: false, endedTwins: [], notifications: [], queued: false };
    }
    const change = gathered(endOurPartysTwins(d, input.address, input.ownOperatorId, input.nowMs));
    endWhatItOpened(d, input.address, input.ownOperatorId);
    deleteNotificationsTo(d, input.address);
    return { deleted: true, ...change };
  });
}
