import { spawn } from "node:child_process";
import { join } from "node:path";

export const ROOT = join(import.meta.dirname, "..");

/** Runs a TypeScript script in its own process and returns the last JSON line it printed. */
export function runScript<T>(script: string, args: string[], timeoutMs = 180_000): Promise<T> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", join(ROOT, script), ...args], { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => (out += String(d)));
    child.stderr.on("data", (d) => (err += String(d)));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("exit", (code) => {
      clearTimeout(timer);
      const last = out.trim().split("\n").filter((l) => l.startsWith("{")).pop();
      if (code !== 0 || !last) return reject(new Error(`${script} failed (${code}): ${err.slice(-500)}`));
      resolve(JSON.parse(last) as T);
    });
  });
}

/** Starts a server script that prints `listening PORT`; returns its port and a stop function. */
export function startServer(script: string, args: string[]): Promise<{ port: number; stop: () => void }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", join(ROOT, script), ...args], { cwd: ROOT, stdio: ["ignore", "pipe", "inherit"] });
    child.stdout.on("data", (d) => {
      const m = /listening (\d+)/.exec(String(d));
      if (m) resolve({ port: Number(m[1]), stop: () => child.kill("SIGTERM") });
    });
    child.on("exit", (code) => reject(new Error(`${script} exited ${code}`)));
  });
}

export interface LoadResult {
  requestsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  total: number;
  non2xx: number;
  errors: number;
  timeouts: number;
}

export const load = (job: object) => runScript<LoadResult>("bench/load.ts", [JSON.stringify(job)]);

export function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? Number.NaN;
}

/** One number out of a Prometheus text exposition. */
export async function metric(deviceUrl: string, name: string, labels = ""): Promise<number> {
  const text = await (await fetch(`${deviceUrl}/metrics`)).text();
  let sum = 0;
  let found = false;
  for (const line of text.split("\n")) {
    if (line.startsWith(name) && (line[name.length] === " " || line[name.length] === "{") && line.includes(labels)) {
      sum += Number(line.slice(line.lastIndexOf(" ") + 1));
      found = true;
    }
  }
  return found ? sum : Number.NaN;
}
