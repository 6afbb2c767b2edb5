import { execFile, spawn } from "node:child_process";
import { createServer } from "node:net";
import type { AddressInfo } from "node:net";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { processStart, sandboxDown } from "../../simulator/simulation.ts";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const run = promisify(execFile);
const root = join(import.meta.dirname, "../..");
// Made in beforeAll: a run whose -t filter skips every test must leave no directory behind.
let out = "";
beforeAll(() => {
  out = mkdtempSync(join(tmpdir(), "twinning-up-"));
});
const simulate = (...args: string[]) => run(process.execPath, ["--import", "tsx", "simulator/cli.ts", ...args], { cwd: root, timeout: 120_000 });
const simulateWith = (env: Record<string, string>, ...args: string[]) =>
  run(process.execPath, ["--import", "tsx", "simulator/cli.ts", ...args], { cwd: root, timeout: 120_000, env: { ...process.env, ...env } });

afterAll(async () => {
  if (!out) return;
  if (existsSync(join(out, "sandbox.json"))) await simulate("down", "--out", out).catch(() => undefined);
  rmSync(out, { recursive: true, force: true });
});

describe("the sandbox for app developers and outside test kits", () => {
  it("up writes federation.json exactly as DESIGN says, conformance mode passes against it, down stops it", async () => {
    const up = await simulate("up", "--operators", "2", "--out", out);
    expect(up.stdout).toContain("federation.json");
    const federation = JSON.parse(readFileSync(join(out, "federation.json"), "utf8"));
    // It holds the admin tokens: the user's only.
    expect(statSync(join(out, "federation.json")).mode & 0o077).toBe(0);
    expect(Object.keys(federation)).toEqual(["operators"]);
    expect(federation.operators.map((o: any) => Object.keys(o).sort())).toEqual(Array(2).fill(["adminToken", "caFile", "deviceUrl", "federationUrl", "operatorId"]));
    expect(federation.operators.map((o: any) => o.operatorId)).toEqual(["001-01", "002-01"]);
    for (const o of federation.operators) {
      expect((await fetch(`${o.deviceUrl}/healthz`)).status).toBe(200);
      expect(o.federationUrl).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
      expect(readFileSync(o.caFile, "utf8")).toContain("BEGIN CERTIFICATE");
    }

    const conformance = await simulate("--target", join(out, "federation.json"), "--filter", "cross-", "--seed", "3", "--report", join(out, "conformance.html"));
    // Fault scenarios whose titles match are skipped in conformance mode: they need our own nodes.
    expect(conformance.stdout).toMatch(/^2 passed, 0 failed, 1 skipped$/m);
    // The console says why, as the report does.
    expect(conformance.stdout).toMatch(/^ {2}\d+ \S+ skipped: needs the simulator's own nodes \(faults\)$/m);
    expect(conformance.stdout).toMatch(/HLF-IC-004\s+pass/);
    expect(readFileSync(join(out, "conformance.html"), "utf8")).toContain("Twinning conformance run");

    const down = await simulate("down", "--out", out);
    expect(down.stdout).toContain("stopped 2 operators");
    for (const o of federation.operators) await expect(fetch(`${o.deviceUrl}/healthz`)).rejects.toThrow();
    // Its tokens and URLs name stopped nodes: it goes with them.
    expect(existsSync(join(out, "federation.json"))).toBe(false);
  }, 150_000);

  it("a run ignores TWINNING_* variables of the user's shell, keeps each node's log with --keep, and a filter that matches nothing exits non-zero", async () => {
    // Both would have broken every node: a port already taken, and an admin token the sandbox does not know.
    const taken = createServer();
    await new Promise<void>((r) => taken.listen(0, "127.0.0.1", r));
    try {
      const env = { TWINNING_DEVICE_PORT: String((taken.address() as AddressInfo).port), TWINNING_ADMIN_TOKEN: "a-token-from-the-users-shell-0123456789" };
      const ran = await simulateWith(env, "--operators", "1", "--filter", "intra-operator", "--keep", "--seed", "1", "--report", join(out, "intra.html"));
      expect(ran.stdout).toMatch(/^1 passed, 0 failed$/m);
      const kept = /starting 1 operators in (\S+) /.exec(ran.stdout)![1]!;
      try {
        expect(readFileSync(join(kept, "001-01", "node.log"), "utf8")).toContain("is running");
      } finally {
        rmSync(kept, { recursive: true, force: true });
      }
    } finally {
      taken.close();
    }
    const none = await simulate("--operators", "1", "--filter", "no-such-scenario", "--report", join(out, "none.html")).catch((e) => e);
    expect(none.code).toBe(1);
    expect(none.stdout).toContain("no scenario matches --filter no-such-scenario");
    // Refused before anything starts: no node, no report.
    expect(none.stdout).not.toContain("starting");
    expect(existsSync(join(out, "none.html"))).toBe(false);
    // A report that could not be written is refused before the run, not after it.
    const nowhere = await simulate("--operators", "1", "--report", join(out, "no-such-dir", "r.html")).catch((e) => e);
    expect(nowhere.code).toBe(2);
    expect(nowhere.stderr).toContain("cannot write in");
    expect(nowhere.stdout).not.toContain("starting");
  }, 120_000);

  it("stopped with Ctrl-C, a run exits as interrupted and removes its directory (keys, tokens, databases)", async () => {
    const child = spawn(process.execPath, ["--import", "tsx", "simulator/cli.ts", "--operators", "1", "--report", join(out, "interrupted.html")], { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    const dir = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no scenario started: ${stdout}`)), 60_000);
      child.stdout.on("data", (d) => {
        stdout += String(d);
        const m = /starting 1 operators in (\S+) …/.exec(stdout);
        // Interrupted once a scenario has run: the nodes are up, the directory full.
        if (m && /^(PASS|FAIL|SKIP) /m.test(stdout)) {
          clearTimeout(timer);
          resolve(m[1]!);
        }
      });
    });
    expect(existsSync(join(dir, "ca.crt.pem")) || readdirSync(dir).length > 0).toBe(true);
    const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
    child.kill("SIGINT");
    expect(await exited).toBe(130);
    expect(existsSync(dir)).toBe(false);
  }, 120_000);

  it("conformance mode exits non-zero and names the failing labels when a node does not conform", async () => {
    // A "federation" whose only operator answers nothing: every device scenario fails or is skipped.
    const bogus = join(out, "bogus.json");
    writeFileSync(bogus, JSON.stringify({ operators: [{ operatorId: "009-01", deviceUrl: "http://127.0.0.1:9", federationUrl: "https://127.0.0.1:9", adminToken: "x".repeat(24), caFile: "none" }] }));
    const failed = await simulate("--target", bogus, "--filter", "intra", "--report", join(out, "bogus.html")).catch((e) => e);
    expect(failed.code).toBe(1);
    expect(failed.stdout).toMatch(/HLF-PD-001\s+fail/);
  }, 60_000);

  it("down stops only the processes up started: a recorded pid now given to another process is left alone", async () => {
    const dir = mkdtempSync(join(out, "down-"));
    const other = spawn(process.execPath, ["-e", "setTimeout(() => {}, 60_000)"], { stdio: "ignore" });
    const exited = new Promise((r) => other.once("exit", r));
    try {
      const pid = other.pid!;
      const started = processStart(pid);
      expect(started).toMatch(/^\d+$/);
      // The record says this pid belonged to a process started at another time.
      writeFileSync(join(dir, "sandbox.json"), JSON.stringify({ pids: [pid], starts: [String(Number(started) - 1)] }));
      expect(await sandboxDown(dir)).toBe(0);
      expect(other.exitCode).toBeNull();
      expect(() => process.kill(pid, 0)).not.toThrow();
      expect(existsSync(join(dir, "sandbox.json"))).toBe(false);
      // The same pid with its own start: stopped.
      writeFileSync(join(dir, "sandbox.json"), JSON.stringify({ pids: [pid], starts: [started] }));
      expect(await sandboxDown(dir)).toBe(1);
      await exited;
      expect(other.signalCode).toBe("SIGTERM");
    } finally {
      other.kill("SIGKILL");
    }
  });
});
