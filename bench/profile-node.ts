import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Api, enc } from "../simulator/device-client.ts";

/**
 * `npx tsx bench/profile-node.ts toggle|list`: one node under --cpu-prof, 50 connections of
 * load for 4 s, then the top self-time functions of the load window only (setup excluded).
 */
const mode = process.argv[2] ?? "toggle";
const dir = mkdtempSync(join(tmpdir(), "twinning-prof-"));
const port = 18000 + Math.floor(Math.random() * 1000);
writeFileSync(join(dir, "node.json"), JSON.stringify({ operatorId: "001-01", dataDir: join(dir, "data"), logLevel: "warn", device: { port } }));
const node = spawn(process.execPath, ["--cpu-prof", `--cpu-prof-dir=${dir}`, "--import", "tsx", "node/main.ts"], {
  env: { ...process.env, TWINNING_CONFIG: join(dir, "node.json") },
  stdio: ["ignore", "pipe", "inherit"],
});
await new Promise<void>((r) => node.stdout.on("data", (d) => String(d).includes("is running") && r()));
const api = new Api(`http://127.0.0.1:${port}`);
const admin = readFileSync(join(dir, "data/admin-token"), "utf8").trim();
const targets = [];
for (let i = 0; i < 50; i++) {
  const p = { address: `tel:+1700${String(i).padStart(6, "0")}`, token: await api.subscriber(admin, `tel:+1700${String(i).padStart(6, "0")}`) };
  const s = { address: `tel:+1800${String(i).padStart(6, "0")}`, token: await api.subscriber(admin, `tel:+1800${String(i).padStart(6, "0")}`) };
  const { twin } = await api.twin(p, s);
  targets.push({ path: mode === "list" ? `/twinning/v1/primary/${enc(p.address)}/twins` : `/twinning/v1/primary/${enc(p.address)}/twins/${twin.twinId}/status`, token: p.token });
}
const t0 = Date.now();
const load = spawn(process.execPath, ["--import", "tsx", "bench/load.ts", JSON.stringify({ url: `http://127.0.0.1:${port}`, connections: 50, durationS: 4, targets, toggle: mode !== "list" })], { stdio: ["ignore", "inherit", "ignore"] });
await new Promise((r) => load.on("exit", r));
const loadMs = Date.now() - t0;
node.kill("SIGTERM");
await new Promise((r) => node.on("exit", r));
const profile = JSON.parse(readFileSync(join(dir, readdirSync(dir).find((f) => f.endsWith(".001.cpuprofile"))!), "utf8"));
const byId = new Map<number, any>(profile.nodes.map((n: any) => [n.id, n]));
let t = profile.startTime;
const at = (profile.timeDeltas as number[]).map((d) => (t += d));
const end = at[at.length - 1]!;
const [from, to] = [end - loadMs * 1000 + 500_000, end - 700_000];
const parent = new Map<number, number>();
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const keyOf = (cf: any) => `${cf.functionName || "(anonymous)"} ${String(cf.url).replace(/.*node_modules\//, "").replace(/.*\/work\/main\//, "")}:${cf.lineNumber}`;
const self = new Map<string, number>();
const inclusive = new Map<string, number>();
let total = 0;
profile.samples.forEach((id: number, i: number) => {
  if (at[i]! < from || at[i]! > to) return;
  const dt = profile.timeDeltas[i] as number;
  const key = keyOf(byId.get(id).callFrame);
  self.set(key, (self.get(key) ?? 0) + dt);
  total += dt;
  // Inclusive time: each function once per sample, however deep the recursion.
  const seen = new Set<string>();
  for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
    const k = keyOf(byId.get(cur).callFrame);
    if (!seen.has(k)) inclusive.set(k, (inclusive.get(k) ?? 0) + dt);
    seen.add(k);
  }
});
const top = (m: Map<string, number>, n: number) => [...m].sort((a, b) => b[1] - a[1]).slice(0, n).map(([k, v]) => `${((100 * v) / total).toFixed(1).padStart(5)}%  ${k}`).join("\n");
console.log(`self time\n${top(self, 25)}\n\ninclusive time\n${top(inclusive, Number(process.env.PROFILE_INCLUSIVE ?? 40))}`);
rmSync(dir, { recursive: true, force: true });
