import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Api, enc } from "../simulator/device-client.ts";
import { load, ROOT, startServer, type LoadResult } from "./harness.ts";

/**
 * What the profilers put under load: one node (`toggle`, `list`, `query`: 50 twins, one per
 * connection) or the bare Hono GET baseline (`get`), started with extra Node flags
 * (`--cpu-prof …`, `--perf-basic-prof`), so a profile of the node can be set beside one of
 * the baseline.
 */
export const MODES = ["toggle", "list", "query", "get"] as const;
export type Mode = (typeof MODES)[number];

export interface ProfiledTarget {
  readonly pid: number;
  /** Runs 50 connections of the mode's requests for `durationS`. */
  load(durationS: number): Promise<LoadResult>;
  stop(): Promise<void>;
}

const exited = (child: ChildProcess) => new Promise<void>((r) => (child.exitCode !== null ? r() : child.on("exit", () => r())));

export async function startProfiledTarget(mode: Mode, nodeFlags: string[]): Promise<ProfiledTarget> {
  if (mode === "get") {
    const server = await startServer("bench/baseline-server.ts", ["get"], nodeFlags);
    return {
      pid: server.pid,
      load: (durationS) => load({ url: `http://127.0.0.1:${server.port}/`, connections: 50, durationS }, server.pid),
      stop: async () => server.stop(),
    };
  }
  const dir = mkdtempSync(join(tmpdir(), "twinning-prof-"));
  const port = 18000 + Math.floor(Math.random() * 1000);
  writeFileSync(join(dir, "node.json"), JSON.stringify({ operatorId: "001-01", dataDir: join(dir, "data"), logLevel: "warn", databaseSynchronous: "normal", device: { port } }));
  const node = spawn(process.execPath, [...nodeFlags, "--import", "tsx", "node/main.ts"], {
    cwd: ROOT,
    env: { ...process.env, TWINNING_CONFIG: join(dir, "node.json") },
    stdio: ["ignore", "pipe", "inherit"],
  });
  await new Promise<void>((r) => node.stdout!.on("data", (d) => String(d).includes("is running") && r()));
  const api = new Api(`http://127.0.0.1:${port}`);
  const admin = readFileSync(join(dir, "data/admin-token"), "utf8").trim();
  const targets: { path: string; token: string }[] = [];
  for (let i = 0; i < 50; i++) {
    const p = { address: `tel:+1700${String(i).padStart(6, "0")}`, token: await api.subscriber(admin, `tel:+1700${String(i).padStart(6, "0")}`) };
    const s = { address: `tel:+1800${String(i).padStart(6, "0")}`, token: await api.subscriber(admin, `tel:+1800${String(i).padStart(6, "0")}`) };
    const { twin } = await api.twin(p, s);
    const primary = `/twinning/v1/primary/${enc(p.address)}/twins`;
    targets.push(
      mode === "list"
        ? { path: primary, token: p.token }
        : mode === "query"
          ? { path: `/twinning/v1/secondary/${enc(s.address)}/twinning`, token: s.token }
          : { path: `${primary}/${twin.twinId}/status`, token: p.token },
    );
  }
  return {
    pid: node.pid!,
    load: (durationS) => load({ url: `http://127.0.0.1:${port}`, connections: 50, durationS, targets, toggle: mode === "toggle" }, node.pid),
    async stop() {
      node.kill("SIGTERM");
      await exited(node);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export function modeArgument(): Mode {
  const mode = (process.argv[2] ?? "toggle") as Mode;
  if (!MODES.includes(mode)) throw new Error(`mode must be one of ${MODES.join(", ")}`);
  return mode;
}
