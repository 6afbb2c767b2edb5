import { spawn } from "node:child_process";
import { existsSync, readFileSync, readdirSync } from "node:fs";
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

/** Server scripts started and not yet stopped: stopped by stopServers (the bench's Ctrl-C). */
const servers = new Set<() => Promise<void>>();

/** Starts a server script that prints `listening PORT`; returns its port and a stop function. */
export function startServer(script: string, args: string[], nodeFlags: string[] = [], startTimeoutMs = 30_000): Promise<{ port: number; pid: number; stop: () => Promise<void> }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...nodeFlags, "--import", "tsx", join(ROOT, script), ...args], { cwd: ROOT, stdio: ["ignore", "pipe", "inherit"] });
    // Stopped once it has exited (so a --cpu-prof profile has been written); killed if SIGTERM is not enough.
    const stop = () =>
      new Promise<void>((done) => {
        servers.delete(stop);
        if (child.exitCode !== null || child.signalCode !== null) return done();
        const kill = setTimeout(() => child.kill("SIGKILL"), 10_000);
        child.once("exit", () => (clearTimeout(kill), done()));
        child.kill("SIGTERM");
      });
    servers.add(stop);
    const late = setTimeout(() => void stop().then(() => reject(new Error(`${script} did not listen within ${startTimeoutMs} ms`))), startTimeoutMs);
    child.stdout.on("data", (d) => {
      const m = /listening (\d+)/.exec(String(d));
      if (m) (clearTimeout(late), resolve({ port: Number(m[1]), pid: child.pid!, stop }));
    });
    child.on("exit", (code) => (clearTimeout(late), servers.delete(stop), reject(new Error(`${script} exited ${code}`))));
  });
}

/** Runs `measure` against a server script started for it, stopped on every path. */
export async function withServer<T>(script: string, args: string[], measure: (server: { port: number; pid: number }) => Promise<T>): Promise<T> {
  const server = await startServer(script, args);
  try {
    return await measure(server);
  } finally {
    await server.stop();
  }
}

/** Stops every server script still running (Ctrl-C). */
export async function stopServers(): Promise<void> {
  await Promise.all([...servers].map((stop) => stop()));
}

export interface LoadResult {
  requestsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  total: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  /** Main-thread CPU of the server per request, µs (when its pid was given). */
  serverCpuUs?: number;
}

/**
 * CPU seconds the process's main thread (its event loop: JavaScript, SQLite, system calls) has
 * used, from /proc (Linux; clock ticks of 10 ms). Helper threads (JIT, GC) are left out.
 */
function mainThreadCpuS(pid: number): number {
  return threadCpuS(pid, pid);
}

/** CPU seconds (user and system) one thread has used, from /proc. */
function threadCpuS(pid: number, tid: number | string): number {
  const fields = readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/**
 * CPU seconds of a process's threads, from /proc: its main thread, and all the others together
 * (V8's compiler and GC helpers, libuv's thread pool). A thread that has ended is not counted.
 */
export function processCpuS(pid: number): { main: number; helpers: number } {
  let helpers = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) if (Number(tid) !== pid) helpers += threadCpuS(pid, tid);
  return { main: mainThreadCpuS(pid), helpers };
}

/**
 * Runs a load job; with `serverPid`, also what each request cost the server's main thread
 * (`serverCpuUs`): a server that is not saturated (idle while the load generator is the
 * limit) shows it here, where its req/s cannot.
 */
export async function load(job: object, serverPid?: number): Promise<LoadResult> {
  const before = serverPid && existsSync(`/proc/${serverPid}`) ? mainThreadCpuS(serverPid) : undefined;
  const result = await runScript<LoadResult>("bench/load.ts", [JSON.stringify(job)]);
  // A rate of error answers is not the rate of the route measured (the scale step once measured
  // 404s for a whole run, unnoticed): every answer must be a 2xx.
  if (result.non2xx > 0 || result.errors > 0 || result.timeouts > 0) throw new Error(`load run had ${result.non2xx} non-2xx answers, ${result.errors} errors and ${result.timeouts} timeouts in ${result.total} requests (figures: ${JSON.stringify(result)})`);
  if (before === undefined) return result;
  const serverCpuUs = Math.round(((mainThreadCpuS(serverPid!) - before) * 1e6) / Math.max(1, result.total));
  return { ...result, serverCpuUs };
}

export function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? Number.NaN;
}

/** A process's resident memory, now and at its peak (VmRSS, VmHWM in /proc), MB. */
export function residentMb(pid: number): { nowMb: number; peakMb: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? Number.NaN);
  return { nowMb: Math.round(kb("VmRSS") / 102.4) / 10, peakMb: Math.round(kb("VmHWM") / 102.4) / 10 };
}

/** One number out of a Prometheus text exposition. */
export async function metric(deviceUrl: string, name: string, labels = ""): Promise<number> {
  const text = await (await fetch(`${deviceUrl}/metrics`, { signal: AbortSignal.timeout(10_000) })).text();
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
