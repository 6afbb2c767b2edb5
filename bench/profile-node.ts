import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { modeArgument, startProfiledTarget } from "./profile-target.ts";

/**
 * `npx tsx bench/profile-node.ts toggle|list|query|get`: one node (or, with `get`, the bare GET
 * baseline) under --cpu-prof, 50 connections of load for 4 s, then the top self-time and
 * inclusive-time functions of the load window only (setup excluded; PROFILE_SELF and
 * PROFILE_INCLUSIVE set how many rows). JavaScript only: for the kernel's share, see
 * bench/profile-perf.ts.
 */
const mode = modeArgument();
const dir = mkdtempSync(join(tmpdir(), "twinning-cpuprof-"));
const target = await startProfiledTarget(mode, ["--cpu-prof", `--cpu-prof-dir=${dir}`]);
const t0 = Date.now();
console.log(JSON.stringify(await target.load(4)));
const loadMs = Date.now() - t0;
await target.stop();
const profile = JSON.parse(readFileSync(join(dir, readdirSync(dir).find((f) => f.endsWith(".cpuprofile"))!), "utf8"));
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
console.log(`self time\n${top(self, Number(process.env.PROFILE_SELF ?? 25))}\n\ninclusive time\n${top(inclusive, Number(process.env.PROFILE_INCLUSIVE ?? 40))}`);
rmSync(dir, { recursive: true, force: true });
