import { randomUUID } from "node:crypto";
import Database from "better-sqlite3";

export const primaryOf = (k: number) => `tel:+15${String(k).padStart(9, "0")}`;
export const secondaryOf = (k: number, j: number) => `tel:+16${String(k * 5 + j).padStart(9, "0")}`;

/**
 * Seeds twins straight into a node's SQLite file (the node is stopped): five secondaries per
 * primary (`primaryOf(k)` and its `secondaryOf(k, 0..4)`), in one transaction per 50,000 rows.
 * Returns the seeding rate.
 */
export function seedTwins(file: string, twins: number) {
  const db = new Database(file);
  db.pragma("journal_mode = WAL");
  db.pragma("synchronous = NORMAL");
  const insert = db.prepare(
    `INSERT INTO twins (twin_id, primary_address, primary_operator_id, secondary_address, secondary_operator_id, name, status, version, status_origin, active, created_at, updated_at)
     VALUES (?, ?, '001-01', ?, '001-01', ?, 'On', 1, '001-01', 1, ?, ?)`,
  );
  const started = performance.now();
  const now = Date.now();
  const batch = db.transaction((from: number, to: number) => {
    for (let i = from; i < to; i++) {
      const k = Math.floor(i / 5);
      insert.run(randomUUID(), primaryOf(k), secondaryOf(k, i % 5), `twin-${(i % 5) + 1}`, now + i, now + i);
    }
  });
  for (let i = 0; i < twins; i += 50_000) batch(i, Math.min(twins, i + 50_000));
  const seconds = (performance.now() - started) / 1000;
  db.close();
  return { perSecond: twins / seconds, seconds };
}
