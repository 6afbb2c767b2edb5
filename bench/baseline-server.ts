import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { serve } from "@hono/node-server";
import Database from "better-sqlite3";
import { Hono } from "hono";

/**
 * The baselines the goals are ratios to, served by the same stack in its own process:
 * `get`: a bare Hono JSON GET; `insert`: a Hono POST that parses JSON and does one
 * better-sqlite3 INSERT; `reads`: a reference, the list route's two reads and nothing else.
 * Both databases are set up as the node's (WAL, synchronous=NORMAL, the file's lock held:
 * locking_mode=EXCLUSIVE).
 */
const mode = process.argv[2];
const app = new Hono();
let cleanup = () => {};

/** A database in a temporary directory, set up as the node's; removed at exit. */
function openLikeTheNode(): Database.Database {
  const dir = mkdtempSync(join(tmpdir(), "twinning-bench-"));
  const db = new Database(join(dir, "b.sqlite"));
  db.pragma("locking_mode = EXCLUSIVE");
  db.pragma("journal_mode = WAL");
  db.pragma("synchronous = NORMAL");
  cleanup = () => {
    db.close();
    rmSync(dir, { recursive: true, force: true });
  };
  return db;
}
if (mode === "get") {
  app.get("/", (c) => c.json({ hello: "world" }));
} else if (mode === "reads") {
  // Not a goal's baseline: a reference for what the reads goal costs at the floor, the list
  // route's two SQLite reads (subscriber, then its twins) with no authentication, validation,
  // metrics or request ids.
  const db = openLikeTheNode();
  db.exec("CREATE TABLE subscribers (address TEXT PRIMARY KEY, twinning_enabled INTEGER NOT NULL) STRICT");
  db.exec("CREATE TABLE twins (twin_id TEXT PRIMARY KEY, primary_address TEXT NOT NULL, secondary_address TEXT NOT NULL, name TEXT NOT NULL, status TEXT NOT NULL, active INTEGER NOT NULL, created_at INTEGER NOT NULL) STRICT");
  db.exec("CREATE INDEX twins_active_primary ON twins (primary_address, created_at) WHERE active = 1");
  const seed = db.transaction(() => {
    for (let i = 0; i < 1000; i++) {
      db.prepare("INSERT INTO subscribers VALUES (?, 1)").run(`tel:+1${i}`);
      db.prepare("INSERT INTO twins VALUES (?, ?, ?, 'twin-1', 'On', 1, ?)").run(`t${i}`, `tel:+1${i}`, `tel:+2${i}`, i);
    }
  });
  seed();
  const subscriber = db.prepare("SELECT * FROM subscribers WHERE address = ?");
  const twins = db.prepare("SELECT * FROM twins WHERE primary_address = ? AND active = 1 ORDER BY created_at, twin_id");
  app.get("/primary/:addr/twins", (c) => {
    const address = c.req.param("addr");
    if (!subscriber.get(address)) return c.json({ error: "not provisioned" }, 403);
    const rows = twins.all(address) as { twin_id: string; primary_address: string; secondary_address: string; name: string; status: string }[];
    return c.json({ twinList: { twin: rows.map((r) => ({ twinId: r.twin_id, primaryAddress: r.primary_address, secondaryAddress: r.secondary_address, name: r.name, status: r.status })) } });
  });
} else {
  const db = openLikeTheNode();
  db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, status TEXT NOT NULL, at INTEGER NOT NULL)");
  const insert = db.prepare("INSERT INTO t (status, at) VALUES (?, ?)");
  app.post("/", async (c) => {
    const body = (await c.req.json()) as { status: string };
    insert.run(body.status, Date.now());
    return c.json({ ok: true });
  });
}
const server = serve({ fetch: app.fetch, hostname: "127.0.0.1", port: 0 }, (info) => process.stdout.write(`listening ${info.port}\n`));
process.on("SIGTERM", () => {
  server.close();
  cleanup();
  process.exit(0);
});
