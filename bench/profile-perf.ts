import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { modeArgument, startProfiledTarget } from "./profile-target.ts";

/**
 * `npx tsx bench/profile-perf.ts toggle|list|query|get`: Linux `perf` on one node (or the bare
 * GET baseline) during 2.5 s of a 5 s load, JavaScript frames named (`--perf-basic-prof`).
 * Prints where the process's CPU goes, kernel included: the shares docs/benchmark-history.md quotes (the TCP
 * send path, waking the reader, SQLite) and the top symbols. Needs `perf` and the right to use
 * it (root, or kernel.perf_event_paranoid ≤ 1).
 */
const mode = modeArgument();
const dir = mkdtempSync(join(tmpdir(), "twinning-perf-"));
const data = join(dir, "perf.data");
const target = await startProfiledTarget(mode, ["--perf-basic-prof"]);
try {
  const running = target.load(5);
  await new Promise((r) => setTimeout(r, 1_500)); // the load generator's start, and warm-up
  execFileSync("perf", ["record", "-F", "2999", "-g", "-o", data, "-p", String(target.pid), "--", "sleep", "2.5"], { stdio: "ignore" });
  console.log(JSON.stringify(await running));
} finally {
  await target.stop();
}
const report = (...args: string[]) =>
  execFileSync("perf", ["report", "-i", data, "--stdio", "-g", "none", ...args], { encoding: "utf8", maxBuffer: 256 << 20, stdio: ["ignore", "pipe", "ignore"] })
    .split("\n")
    .filter((l) => l.trim() && !l.startsWith("#"));
// With --children, each symbol's line gives the share of samples with it anywhere on the stack.
const inclusive = new Map<string, number>();
for (const line of report("--children", "--sort", "sym")) {
  const m = /^\s*([\d.]+)%\s+[\d.]+%\s+\[[.k]\]\s+(.*?)\s*$/.exec(line);
  if (m) inclusive.set(m[2]!, Number(m[1]));
}
const share = (symbol: string) => `${(inclusive.get(symbol) ?? 0).toFixed(1)}%`;
console.log(`\nshares of the process's CPU samples (inclusive)
  event loop (uv_run)                     ${share("uv_run")}
  system calls                            ${share("entry_SYSCALL_64_after_hwframe")}
  writing to sockets (do_writev)          ${share("do_writev")}
  waking the reader (sock_def_readable)   ${share("sock_def_readable")}
  SQLite (sqlite3_step)                   ${share("sqlite3_step")}
  V8 helper threads (JIT, GC)             ${share("node::(anonymous namespace)::PlatformWorkerThread")}
\nby library (self)\n${report("--no-children", "--sort", "dso").slice(0, 6).join("\n")}
\ntop symbols (self)\n${report("--no-children", "--sort", "sym").slice(0, 25).join("\n")}`);
rmSync(dir, { recursive: true, force: true });
