import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { serve } from "@hono/node-server";
import Database from "better-sqlite3";
import { Hono } from "hono";

/**
 * The baselines the goals are ratios to, served by the same stack in its own process:
 * `get`: a bare Hono JSON GET; `insert`: a Hono POST that parses JSON and does one
 * better-sqlite3 INSERT (WAL, synchronous=NORMAL, as the node uses).
 */
const mode = process.argv[2];
const app = new Hono();
let cleanup = () => {};
if (mode === "get") {
  app.get("/", (c) => c.json({ hello: "world" }));
} else {
  const dir = mkdtempSync(join(tmpdir(), "twinning-bench-"));
  const db = new Database(join(dir, "b.sqlite"));
  db.pragma("journal_mode = WAL");
  db.pragma("synchronous = NORMAL");
  db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, status TEXT NOT NULL, at INTEGER NOT NULL)");
  const insert = db.prepare("INSERT INTO t (status, at) VALUES (?, ?)");
  app.post("/", async (c) => {
    const body = (await c.req.json()) as { status: string };
    insert.run(body.status, Date.now());
    return c.json({ ok: true });
  });
  cleanup = () => {
    db.close();
    rmSync(dir, { recursive: true, force: true });
  };
}
const server = serve({ fetch: app.fetch, hostname: "127.0.0.1", port: 0 }, (info) => process.stdout.write(`listening ${info.port}\n`));
process.on("SIGTERM", () => {
  server.close();
  cleanup();
  process.exit(0);
});
