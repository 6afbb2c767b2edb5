import { TwinningError } from "../../errors/twinning-error.ts";
import type { CorrelatorInput, CorrelatorReplay } from "../store-port.ts";
import type { SqliteDatabase } from "./sqlite-database.ts";

/**
 * clientCorrelator idempotency inside the operation's transaction: a retry with the same
 * request gets the first resource back, a different request with the same key gets SVC0005.
 */
export function findCorrelator(d: SqliteDatabase, c: CorrelatorInput | undefined): CorrelatorReplay | undefined {
  if (!c) return undefined;
  const row = d
    .sql(`SELECT fingerprint, resource_id, replay_data FROM client_correlators WHERE subscriber = ? AND operation = ? AND correlator = ?`)
    .get(c.subscriber, c.operation, c.key) as { fingerprint: string; resource_id: string; replay_data: string | null } | undefined;
  if (!row) return undefined;
  if (row.fingerprint !== c.fingerprint) {
    throw new TwinningError("correlator_conflict", { variables: [c.key, "clientCorrelator"] });
  }
  return { resourceId: row.resource_id, replayData: row.replay_data ?? undefined };
}

/** Binds the correlator to its resource; a key whose resource is gone (deleted, expired) is re-bound. */
export function recordCorrelator(d: SqliteDatabase, c: CorrelatorInput | undefined, resourceId: string, nowMs: number): void {
  if (!c) return;
  d.sql(
    `INSERT INTO client_correlators (subscriber, operation, correlator, fingerprint, resource_id, replay_data, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)
     ON CONFLICT (subscriber, operation, correlator) DO UPDATE SET fingerprint = excluded.fingerprint, resource_id = excluded.resource_id, replay_data = excluded.replay_data, created_at = excluded.created_at`,
  ).run(c.subscriber, c.operation, c.key, c.fingerprint, resourceId, c.replayData ?? null, nowMs);
}
