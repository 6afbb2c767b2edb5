import type Database from "better-sqlite3";

/**
 * Versioned schema migrations, applied in order inside one transaction each. Never edit a
 * released migration: append a new one.
 */
const migrations: readonly { version: number; name: string; sql: string }[] = [
  {
    version: 1,
    name: "initial schema",
    sql: `
      CREATE TABLE subscribers (
        address TEXT PRIMARY KEY,
        twinning_enabled INTEGER NOT NULL,
        credential_hash TEXT NOT NULL,
        updated_at INTEGER NOT NULL
      ) STRICT;

      CREATE TABLE activation_codes (
        code_id TEXT PRIMARY KEY,
        secondary_address TEXT NOT NULL,
        secondary_operator_id TEXT NOT NULL,
        issuer_operator_id TEXT NOT NULL,
        code_hash TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('Pending', 'Used', 'Superseded')),
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        twin_id TEXT
      ) STRICT;
      CREATE INDEX activation_codes_pending_hash ON activation_codes (issuer_operator_id, code_hash) WHERE state = 'Pending';
      CREATE INDEX activation_codes_secondary ON activation_codes (secondary_address, state);

      CREATE TABLE twins (
        twin_id TEXT PRIMARY KEY,
        primary_address TEXT NOT NULL,
        primary_operator_id TEXT NOT NULL,
        secondary_address TEXT NOT NULL,
        secondary_operator_id TEXT NOT NULL,
        name TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('On', 'Off')),
        version INTEGER NOT NULL,
        status_origin TEXT NOT NULL,
        active INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
      ) STRICT;
      -- HLF-TE-009: a secondary is in at most one relationship at a time.
      CREATE UNIQUE INDEX twins_active_secondary ON twins (secondary_address) WHERE active = 1;
      CREATE UNIQUE INDEX twins_active_name ON twins (primary_address, name) WHERE active = 1;
      CREATE INDEX twins_active_primary ON twins (primary_address, created_at) WHERE active = 1;

      CREATE TABLE failed_attempts (
        id INTEGER PRIMARY KEY,
        budget_key TEXT NOT NULL,
        at INTEGER NOT NULL
      ) STRICT;
      CREATE INDEX failed_attempts_key ON failed_attempts (budget_key, at);

      CREATE TABLE client_correlators (
        subscriber TEXT NOT NULL,
        operation TEXT NOT NULL,
        correlator TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        resource_id TEXT NOT NULL,
        replay_data TEXT,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (subscriber, operation, correlator)
      ) STRICT;

      CREATE TABLE subscriptions (
        subscription_id TEXT PRIMARY KEY,
        address TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('primary', 'secondary')),
        notify_url TEXT NOT NULL,
        callback_data TEXT,
        created_at INTEGER NOT NULL,
        expires_at INTEGER
      ) STRICT;
      CREATE INDEX subscriptions_address ON subscriptions (address, role);

      CREATE TABLE notifications (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        address TEXT NOT NULL,
        role TEXT NOT NULL,
        type TEXT NOT NULL,
        content TEXT NOT NULL,
        created_at INTEGER NOT NULL
      ) STRICT;
      CREATE INDEX notifications_address ON notifications (address, role, id);

      CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        lane TEXT NOT NULL,
        kind TEXT NOT NULL,
        target TEXT NOT NULL,
        payload TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'dead')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL,
        last_error TEXT,
        created_at INTEGER NOT NULL
      ) STRICT;
      CREATE INDEX outbox_pending_lane ON outbox (lane, id) WHERE state = 'pending';
      CREATE INDEX outbox_pending_due ON outbox (next_attempt_at) WHERE state = 'pending';
    `,
  },
  {
    version: 2,
    name: "federation replay cache",
    sql: `
      CREATE TABLE federation_jti (
        jti TEXT PRIMARY KEY,
        expires_at INTEGER NOT NULL
      ) STRICT;
      CREATE INDEX federation_jti_expiry ON federation_jti (expires_at);
    `,
  },
  {
    version: 3,
    name: "cancelled federated twins",
    sql: `
      -- A peer's DELETE (a compensation) for a twin not created here yet: the late activation
      -- carrying that twinId must be refused, so both sides agree.
      CREATE TABLE cancelled_twins (
        twin_id TEXT PRIMARY KEY,
        from_operator_id TEXT NOT NULL,
        cancelled_at INTEGER NOT NULL
      ) STRICT;
    `,
  },
  {
    version: 4,
    name: "twin names are unique at the primary's operator only",
    sql: `
      -- The primary's node checks a name's uniqueness in the write transaction. A secondary's node
      -- holds copies of a remote primary's twins whose names may be stale (renames stay at the
      -- primary's operator), so a unique index here would refuse valid activations.
      DROP INDEX twins_active_name;
      CREATE INDEX twins_active_name ON twins (primary_address, name) WHERE active = 1;
    `,
  },
  {
    version: 5,
    name: "pending peer messages by peer",
    sql: `
      -- The backlog bound counts a peer's pending messages in all its lanes.
      CREATE INDEX outbox_pending_peer ON outbox (target, id) WHERE state = 'pending' AND kind = 'peer';
    `,
  },
  {
    version: 6,
    name: "pending codes by the secondary's operator",
    sql: `
      -- The bound on the codes a peer holds counts its live codes, at most the bound.
      CREATE INDEX activation_codes_pending_operator ON activation_codes (secondary_operator_id, expires_at) WHERE state = 'Pending';
    `,
  },
  {
    version: 7,
    name: "dead letters by age",
    sql: `
      -- Dead letters are counted for the metrics and pruned after their retention.
      CREATE INDEX outbox_dead ON outbox (created_at) WHERE state = 'dead';
    `,
  },
  {
    version: 8,
    name: "one index fewer on the outbox",
    sql: `
      -- No query reads pending entries by due time (the lane heads come from outbox_pending_lane,
      -- which also counts them), and each outbox write paid for this index: one page more per commit.
      DROP INDEX outbox_pending_due;
    `,
  },
  {
    version: 9,
    name: "replay cache without rowid",
    sql: `
      -- Keyed by jti alone: one b-tree fewer (the rowid table beside the key's index), so a
      -- federation message's commit writes one page less.
      CREATE TABLE federation_jti_by_key (
        jti TEXT PRIMARY KEY,
        expires_at INTEGER NOT NULL
      ) STRICT, WITHOUT ROWID;
      INSERT INTO federation_jti_by_key (jti, expires_at) SELECT jti, expires_at FROM federation_jti;
      DROP TABLE federation_jti;
      ALTER TABLE federation_jti_by_key RENAME TO federation_jti;
      CREATE INDEX federation_jti_expiry ON federation_jti (expires_at);
    `,
  },
  {
    version: 10,
    name: "notification feed written in batches",
    sql: `
      -- A subscriber's notifications by (address, role, id), written in batches up to the mark
      -- (sqlite-feed.ts) instead of an index entry per notification in every commit: one page
      -- per notified subscriber per commit was the largest single cost of a toggle.
      CREATE TABLE notification_feed (
        address TEXT NOT NULL,
        role TEXT NOT NULL,
        id INTEGER NOT NULL,
        PRIMARY KEY (address, role, id)
      ) STRICT, WITHOUT ROWID;
      CREATE TABLE notification_feed_mark (
        singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
        indexed_through INTEGER NOT NULL
      ) STRICT;
      INSERT INTO notification_feed (address, role, id) SELECT address, role, id FROM notifications ORDER BY address, role, id;
      INSERT INTO notification_feed_mark (singleton, indexed_through) SELECT 1, COALESCE(MAX(id), 0) FROM notifications;
      DROP INDEX notifications_address;
    `,
  },
  {
    version: 11,
    name: "no index of pending messages by peer",
    sql: `
      -- A peer's backlog is counted on outbox_pending_lane, by its lanes' names (peer:<op> and
      -- peer:<op>:<sub-lane>): every commit that queues or completes a peer message writes one
      -- page less.
      DROP INDEX outbox_pending_peer;
    `,
  },
  {
    version: 12,
    name: "replay cache keyed by expiry",
    sql: `
      -- Keyed by (expires_at, jti): the key's prefix serves the pruning, so the expiry index goes
      -- and a federation message's commit writes one page less. A replay carries the same signed
      -- claims, hence the same expiry, and still meets its row.
      CREATE TABLE federation_jti_by_expiry (
        expires_at INTEGER NOT NULL,
        jti TEXT NOT NULL,
        PRIMARY KEY (expires_at, jti)
      ) STRICT, WITHOUT ROWID;
      INSERT INTO federation_jti_by_expiry (expires_at, jti) SELECT expires_at, jti FROM federation_jti;
      DROP TABLE federation_jti;
      ALTER TABLE federation_jti_by_expiry RENAME TO federation_jti;
    `,
  },
  {
    version: 13,
    name: "primary service endpoints of remote primaries",
    sql: `
      -- Named by the primary's operator in its activation message (HLF-IC-006), for the
      -- secondary's primary-services token: a token exchange answer need not repeat them.
      CREATE TABLE twin_primary_services (
        twin_id TEXT PRIMARY KEY,
        messaging TEXT NOT NULL,
        nms TEXT NOT NULL
      ) STRICT, WITHOUT ROWID;
    `,
  },
  {
    version: 14,
    name: "active twins in creation order",
    sql: `
      -- The admin listing pages through active twins in creation order (from a cursor): it read
      -- and sorted every twin for each page (~150 ms at a million, the node's loop held). A
      -- toggle changes none of these columns, so its commit writes no page of this index.
      CREATE INDEX twins_active_created ON twins (created_at, twin_id) WHERE active = 1;
    `,
  },
];

export const latestSchemaVersion = migrations[migrations.length - 1]!.version;

export function migrate(db: Database.Database, nowMs: number): void {
  db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL) STRICT`);
  const applied = new Set(
    (db.prepare(`SELECT version FROM schema_migrations`).all() as { version: number }[]).map((r) => r.version),
  );
  // A database migrated by a newer release (a rollback of the code): this code does not know its
  // schema, and running on it could misread or damage it.
  const newest = Math.max(0, ...applied);
  if (newest > latestSchemaVersion) {
    throw new Error(`the database's schema (version ${newest}) is newer than this release knows (${latestSchemaVersion}): run the release that migrated it, or a newer one`);
  }
  for (const m of migrations) {
    if (applied.has(m.version)) continue;
    // IMMEDIATE: a second process starting at once (without the exclusive lock) waits, then
    // finds the migration applied instead of failing on it.
    db.transaction(() => {
      if (db.prepare(`SELECT 1 FROM schema_migrations WHERE version = ?`).get(m.version)) return;
      db.exec(m.sql);
      db.prepare(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`).run(m.version, m.name, nowMs);
    }).immediate();
  }
}
