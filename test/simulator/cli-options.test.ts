import { execFile, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const run = promisify(execFile);
const root = join(import.meta.dirname, "../..");
let out = "";
beforeAll(() => {
  out = mkdtempSync(join(tmpdir(), "twinning-cli-"));
});
afterAll(() => {
  if (out) rmSync(out, { recursive: true, force: true });
});

interface Exit {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The simulator CLI to its end, failed or not. */
const simulate = (...args: string[]): Promise<Exit> =>
  run(process.execPath, ["--import", "tsx", "simulator/cli.ts", ...args], { cwd: root, timeout: 120_000 }).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (e: { code: number | null; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
  );

/** A refusal: exit 2, the message as the first line of stderr (no stack), nothing started. */
function expectRefused(exit: Exit, message: string): void {
  expect(exit.code).toBe(2);
  expect(exit.stderr.split("\n")[0]).toBe(`simulate: ${message}`);
  expect(exit.stderr).not.toMatch(/^\s+at /m);
  expect(exit.stdout).not.toContain("starting");
}

describe("simulate --report", () => {
  it("refuses a directory before any node starts", async () => {
    const dir = join(out, "a-directory");
    mkdirSync(dir);
    expectRefused(await simulate("--operators", "1", "--filter", "intra-operator", "--report", dir), `--report ${dir} is a directory: name a file`);
  });

  it("prints the results table even when the report cannot be written at the end, and exits non-zero", async () => {
    // The name is free when checked, and a directory by the time the run writes its report.
    const report = join(out, "taken-later.html");
    const child = spawn(process.execPath, ["--import", "tsx", "simulator/cli.ts", "--operators", "1", "--filter", "intra-operator", "--seed", "1", "--report", report], {
      cwd: root,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => {
      stdout += String(d);
      if (stdout.includes("starting") && !existsSync(report)) mkdirSync(report);
    });
    child.stderr.on("data", (d) => (stderr += String(d)));
    const code = await new Promise<number | null>((r) => child.once("exit", r));
    expect(stdout).toMatch(/^PASS\s+intra-operator/m);
    expect(stdout).toMatch(/^1 passed, 0 failed$/m);
    expect(stderr).toBe(`simulate: cannot write the report ${report} (EISDIR)\n`);
    expect(code).toBe(1);
  }, 90_000);
});

describe("simulate --target", () => {
  const target = (name: string, text: string): string => {
    const file = join(out, name);
    writeFileSync(file, text);
    return file;
  };

  it("names the missing or bad field of a federation.json, not a property of undefined", async () => {
    const missing = target("missing.json", JSON.stringify({ operators: [{ operatorId: "001-01" }] }));
    const exit = await simulate("--target", missing, "--report", join(out, "c.html"));
    expectRefused(exit, `--target ${missing}: operators[0].deviceUrl: missing; operators[0].federationUrl: missing; operators[0].adminToken: missing`);
    expect(exit.stderr).not.toContain("Cannot read properties");

    const nullFile = target("null.json", "null");
    expectRefused(await simulate("--target", nullFile, "--report", join(out, "c.html")), `--target ${nullFile}: the file: Invalid input: expected object, received null`);

    const badUrl = target("bad-url.json", JSON.stringify({ operators: [{ operatorId: "001-01", deviceUrl: "127.0.0.1:8081", federationUrl: "https://127.0.0.1:9441", adminToken: "t" }] }));
    expectRefused(await simulate("--target", badUrl, "--report", join(out, "c.html")), `--target ${badUrl}: operators[0].deviceUrl: expected an http or https URL`);

    const none = target("none.json", JSON.stringify({ operators: [] }));
    expectRefused(await simulate("--target", none, "--report", join(out, "c.html")), `--target ${none}: operators: expected at least one operator`);

    const notJson = target("not.json", "{operators:");
    expectRefused(await simulate("--target", notJson, "--report", join(out, "c.html")), `--target ${notJson}: not JSON`);
    expect(existsSync(join(out, "c.html"))).toBe(false);
  }, 60_000);
});

describe("each simulate command takes only its own options", () => {
  it("refuses an option the command would ignore, naming it", async () => {
    const report = join(out, "never.html");
    const cases: [args: string[], message: string][] = [
      [["crash", "--report", report], "--report does not apply to crash"],
      [["crash", "--filter", "fault-"], "--filter does not apply to crash"],
      [["up", "--out", join(out, "up"), "--seed", "4"], "--seed does not apply to up"],
      [["up", "--out", join(out, "up"), "--keep"], "--keep does not apply to up"],
      [["down", "--out", join(out, "up"), "--operators", "2"], "--operators does not apply to down"],
      [["--target", join(out, "t.json"), "--operators", "2"], "--operators does not apply to a --target run (the target's nodes are used as they are)"],
      [["--target", join(out, "t.json"), "--keep"], "--keep does not apply to a --target run (the target's nodes are used as they are)"],
      [["--operators", "1", "--out", join(out, "x")], "--out does not apply to a run"],
      [["--operations", "5"], "--operations does not apply to a run"],
      [["crash", "extra"], "unexpected argument extra"],
    ];
    for (const [args, message] of cases) expectRefused(await simulate(...args), message);
    expect(existsSync(join(out, "up"))).toBe(false);
    expect(existsSync(report)).toBe(false);
  }, 60_000);

  it("refuses crash with one operator, and a seed or count that is empty or not a whole number", async () => {
    expectRefused(await simulate("crash", "--operators", "1"), "crash needs --operators 2 or more: it must make twins across operators");
    expectRefused(await simulate("--operators", "1", "--seed", ""), '--seed must be an integer 0..4294967295, not ""');
    expectRefused(await simulate("--operators", "1", "--seed", "1.5"), '--seed must be an integer 0..4294967295, not "1.5"');
    expectRefused(await simulate("crash", "--seed", "0x10"), '--seed must be an integer 0..4294967295, not "0x10"');
    expectRefused(await simulate("crash", "--operations", "1e3"), '--operations must be an integer 1..100000, not "1e3"');
    expectRefused(await simulate("--operators", ""), '--operators must be an integer 1..9, not ""');
  }, 60_000);

  it("crash --keep keeps its sandbox directory", async () => {
    const exit = await simulate("crash", "--operations", "10", "--operators", "2", "--seed", "3", "--keep");
    const dir = /operators in (\S+)$/m.exec(exit.stdout)?.[1];
    expect(dir, exit.stdout + exit.stderr).toBeDefined();
    try {
      expect(existsSync(join(dir!, "001-01", "node.json"))).toBe(true);
    } finally {
      rmSync(dir!, { recursive: true, force: true });
    }
  }, 120_000);
});
