import { existsSync, readFileSync, rmSync, writeFileSync, unlinkSync } from "node:fs";
import { join, resolve } from "node:path";
import { z } from "zod";
import { Api } from "./device-client.ts";
import { renderReport } from "./report.ts";
import { formatTable, labelVerdicts, runScenarios, type ScenarioResult, type Target } from "./run-scenarios.ts";
import { Sandbox, type FederationJson } from "./sandbox.ts";
import { makeTempDir, releaseTempDir } from "./temp-dirs.ts";
import { deviceScenarios } from "./scenarios/device-scenarios.ts";
import { faultScenarios } from "./scenarios/fault-scenarios.ts";

export const allScenarios = [...deviceScenarios, ...faultScenarios];

export interface RunOptions {
  readonly operators: number;
  readonly seed: number;
  readonly filter?: string | undefined;
  readonly reportFile: string;
  /** Keep the sandbox directory (configs, databases, logs) for inspection. */
  readonly keep?: boolean;
  readonly log?: (line: string) => void;
}

export interface RunOutcome {
  readonly results: ScenarioResult[];
  readonly reportFile: string;
  readonly ok: boolean;
  readonly table: string;
  /** Why the report could not be written (the results above are still complete); undefined once written. */
  readonly reportError?: string;
}

async function finalState(targets: readonly Target[]): Promise<Map<string, any[] | undefined>> {
  const state = new Map<string, any[] | undefined>();
  for (const t of targets) {
    const res = await new Api(t.deviceUrl).call("GET", "/admin/v1/twins?limit=10000", { token: t.adminToken }).catch(() => undefined);
    state.set(t.operatorId, res?.status === 200 ? res.body.twins : undefined);
  }
  return state;
}

/** Writes the report; a failure is returned, not thrown, so the run's results are never lost with it. */
function writeReport(reportFile: string, html: string): string | undefined {
  try {
    writeFileSync(reportFile, html);
    return undefined;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    return `cannot write the report ${reportFile}${code ? ` (${code})` : ""}`;
  }
}

function finish(title: string, options: RunOptions, startedAt: number, targets: readonly Target[], results: ScenarioResult[], messages: any[], state: Map<string, any[] | undefined>): RunOutcome {
  const labels = labelVerdicts(results);
  const html = renderReport({ title, startedAt, seed: options.seed, operators: targets, results, messages, finalState: state, labels });
  const reportFile = resolve(options.reportFile);
  const reportError = writeReport(reportFile, html);
  const table = formatTable(results);
  return { results, reportFile, ok: results.every((r) => r.status !== "fail"), table, ...(reportError ? { reportError } : {}) };
}

/** `npm run simulate`: N operators as processes, every scenario, a report. */
export async function runSimulation(options: RunOptions): Promise<RunOutcome> {
  const dir = makeTempDir("twinning-sim-");
  const startedAt = Date.now();
  options.log?.(`starting ${options.operators} operators in ${dir} …`);
  let sandbox: Sandbox | undefined;
  try {
    sandbox = await Sandbox.create({ operators: options.operators, dir, proxies: true });
    const targets = sandbox.federationJson().operators;
    const results = await runScenarios(allScenarios, { targets, sandbox, seed: options.seed, filter: options.filter, ...(options.log ? { log: options.log } : {}) });
    const state = await finalState(targets);
    const messages = sandbox.operators.flatMap((o) => o.process.messages);
    return finish("Twinning federation simulation", options, startedAt, targets, results, messages, state);
  } finally {
    await sandbox?.stop();
    releaseTempDir(dir, options.keep);
  }
}

const httpUrl = (scheme: "http" | "https" | "http or https") =>
  z.string().refine((value) => {
    try {
      const protocol = new URL(value).protocol;
      return scheme === "http or https" ? protocol === "http:" || protocol === "https:" : protocol === `${scheme}:`;
    } catch {
      return false;
    }
  }, `expected an ${scheme} URL`);

/** DESIGN's federation.json, as conformance mode needs it (caFile is not used here). */
const federationJsonSchema = z.object({
  operators: z
    .array(
      z.object({
        operatorId: z.string().regex(/^\d{3}-\d{2,3}$/, "expected MCC-MNC, e.g. 001-01"),
        deviceUrl: httpUrl("http or https"),
        federationUrl: httpUrl("https"),
        adminToken: z.string().min(1, "expected a non-empty string"),
        caFile: z.string().optional(),
      }),
    )
    .min(1, "expected at least one operator"),
});

/** Where in the file an issue is, as a reader writes it: operators[0].deviceUrl. */
const fieldPath = (path: readonly PropertyKey[]): string =>
  path.length === 0 ? "the file" : path.map((p, i) => (typeof p === "number" ? `[${p}]` : `${i > 0 ? "." : ""}${String(p)}`)).join("");

/** zod's words, except that a field left out is called missing. */
const issueText = (issue: z.core.$ZodIssue): string => (issue.code === "invalid_type" && /received undefined$/.test(issue.message) ? "missing" : issue.message);

/** Reads and checks a --target file; a bad one is refused naming the field, before any scenario runs. */
export function readFederationJson(file: string): FederationJson["operators"] {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (error) {
    throw new Error(`--target ${file}: cannot read it (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new Error(`--target ${file}: not JSON`);
  }
  const parsed = federationJsonSchema.safeParse(json);
  if (!parsed.success) {
    const issues = parsed.error.issues.slice(0, 3).map((issue) => `${fieldPath(issue.path)}: ${issueText(issue)}`);
    const more = parsed.error.issues.length > 3 ? ` (and ${parsed.error.issues.length - 3} more)` : "";
    throw new Error(`--target ${file}: ${issues.join("; ")}${more}`);
  }
  return parsed.data.operators.map((o) => ({ ...o, caFile: o.caFile ?? "" }));
}

/** Conformance mode: the device-side scenarios against nodes someone else started (DESIGN's federation.json). */
export async function runConformance(federationJsonFile: string, options: RunOptions): Promise<RunOutcome & { labels: Map<string, string> }> {
  const operators = readFederationJson(federationJsonFile);
  const targets: Target[] = operators.map((o) => ({ operatorId: o.operatorId, deviceUrl: o.deviceUrl.replace(/\/$/, ""), federationUrl: o.federationUrl, adminToken: o.adminToken }));
  const startedAt = Date.now();
  const results = await runScenarios(allScenarios, { targets, seed: options.seed, filter: options.filter, ...(options.log ? { log: options.log } : {}) });
  const outcome = finish("Twinning conformance run", options, startedAt, targets, results, [], await finalState(targets));
  return { ...outcome, labels: labelVerdicts(results) };
}

interface SandboxRecord {
  pids: number[];
  /** Each process's start (processStart), recorded at `up`; null where it could not be read. */
  starts?: (string | null)[];
}

/**
 * When a process started (clock ticks after boot, field 22 of /proc/PID/stat), or undefined
 * without /proc: with the pid it names one process, not a later one that was given the same pid.
 */
export function processStart(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
  } catch {
    return undefined;
  }
}

/** `up`: the operators keep running; DIR/federation.json describes them. */
export async function sandboxUp(operators: number, out: string): Promise<FederationJson> {
  const dir = resolve(out);
  if (existsSync(join(dir, "sandbox.json"))) throw new Error(`a sandbox is already up in ${dir}: run 'npm run simulate -- down --out ${out}' first`);
  const sandbox = await Sandbox.create({ operators, dir, proxies: false, detached: true, logLevel: "info" });
  const federation = sandbox.federationJson();
  // It holds every operator's admin token: for this user's eyes only, as the nodes' own token files.
  writeFileSync(join(dir, "federation.json"), JSON.stringify(federation, null, 2) + "\n", { mode: 0o600 });
  const pids = sandbox.operators.map((o) => o.process.child!.pid!);
  const record: SandboxRecord = { pids, starts: pids.map((pid) => processStart(pid) ?? null) };
  writeFileSync(join(dir, "sandbox.json"), JSON.stringify(record) + "\n");
  return federation;
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/**
 * `down`: SIGTERM (graceful), then SIGKILL after 10 s for any that hang. Only the processes `up`
 * started: a pid that now names a process started at another time (the node ended and its pid
 * was given to another) is left alone. Returns how many were running and were stopped.
 * federation.json goes with them; the operators' directories stay (an `up` in the same
 * directory starts with the same databases, under new federation keys and certificates).
 */
export async function sandboxDown(out: string): Promise<number> {
  const file = join(resolve(out), "sandbox.json");
  if (!existsSync(file)) throw new Error(`no sandbox is up in ${out}`);
  const record = JSON.parse(readFileSync(file, "utf8")) as SandboxRecord;
  const ours = (pid: number, i: number) => {
    const started = record.starts?.[i];
    return alive(pid) && (started == null || processStart(pid) === started);
  };
  const pids = record.pids.filter(ours);
  const stillOurs = (pid: number) => ours(pid, record.pids.indexOf(pid));
  for (const pid of pids) process.kill(pid, "SIGTERM");
  const deadline = Date.now() + 10_000;
  while (pids.some(stillOurs) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  for (const pid of pids) if (stillOurs(pid)) process.kill(pid, "SIGKILL");
  // Its admin tokens and URLs name nodes that are gone: a test kit must not take it for a sandbox.
  rmSync(join(resolve(out), "federation.json"), { force: true });
  unlinkSync(file);
  return pids.length;
}
