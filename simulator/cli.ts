import { accessSync, constants, statSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { parseArgs } from "node:util";
import { crashLoopFailures, formatCrashReport, runCrashLoop } from "./crash-loop.ts";
import { Sandbox } from "./sandbox.ts";
import { removeTempDirs } from "./temp-dirs.ts";
import { scenarioMatches } from "./run-scenarios.ts";
import { allScenarios, runConformance, runSimulation, sandboxDown, sandboxUp } from "./simulation.ts";

const usage = `Usage:
  npm run simulate [-- --operators N] [--filter TEXT] [--seed N] [--report FILE] [--keep]
      Starts N operators (default 3) as node processes on loopback with a fresh federation CA,
      runs every scenario (device flows and faults), prints a pass/fail table, writes an HTML
      report (default simulation-report.html) and exits non-zero on any failure.
  npm run simulate -- up --operators N --out DIR
      Keeps N operators running and writes DIR/federation.json for app developers and test kits.
  npm run simulate -- down --out DIR
      Stops the operators started by 'up'.
  npm run simulate -- crash [--operations N] [--seed N] [--operators N] [--out DIR | --keep]
      Crash safety: N mixed operations (default 500) across 3 operators (--operators 2..9), a node SIGKILLed at
      random points and restarted, delivery drained; prints the figures (operations, kills,
      messages retried, divergences, lost commits, duplicate effects) as JSON and a table, and
      exits non-zero unless nothing was lost, duplicated or divergent. --out keeps the sandbox there,
      --keep keeps it in its temporary directory.
  npm run simulate -- --target FEDERATION_JSON [--filter TEXT] [--seed N] [--report FILE]
      Conformance mode: runs the device-side scenarios against the nodes a federation.json
      describes (another implementation of DESIGN.md) and reports which labels pass.

  Each command takes only the options shown for it; --seed and counts are whole numbers.
`;

/** What is at a path, or undefined if nothing can be (missing, or under a file: ENOTDIR). */
const statOf = (path: string) => {
  try {
    return statSync(path);
  } catch {
    return undefined;
  }
};

/**
 * Checked before the run: a report that cannot be written would otherwise fail only after every
 * scenario ran. The name must be a file (new, or one we may replace) in a writable directory.
 */
function checkReportFile(reportFile: string): void {
  const path = resolve(reportFile);
  const dir = dirname(path);
  const existing = statOf(path);
  if (existing?.isDirectory()) throw new Error(`--report ${reportFile} is a directory: name a file`);
  if (!statOf(dir)?.isDirectory()) throw new Error(`--report ${reportFile}: cannot write in ${dir} (not a directory)`);
  try {
    accessSync(existing ? path : dir, constants.W_OK);
  } catch {
    throw new Error(existing ? `--report ${reportFile}: cannot write ${path}` : `--report ${reportFile}: cannot write in ${dir}`);
  }
}

type Command = "run" | "conformance" | "up" | "down" | "crash";
type OptionName = "operators" | "operations" | "filter" | "seed" | "report" | "out" | "target" | "keep";

/**
 * What each command reads. Any other option given is refused by name: silently dropping one
 * (a --keep that still deletes, a --report that writes nothing) would mislead.
 */
const ALLOWED: Record<Command, { readonly label: string; readonly options: readonly OptionName[] }> = {
  run: { label: "a run", options: ["operators", "filter", "seed", "report", "keep"] },
  conformance: { label: "a --target run (the target's nodes are used as they are)", options: ["target", "filter", "seed", "report"] },
  up: { label: "up", options: ["operators", "out"] },
  down: { label: "down", options: ["out"] },
  crash: { label: "crash", options: ["operators", "operations", "seed", "out", "keep"] },
};

function commandOf(positionals: readonly string[], target: string | undefined): Command {
  if (positionals.length > 1) throw new Error(`unexpected argument ${positionals[1]}`);
  const command = positionals[0] ?? "run";
  if (command === "up" || command === "down" || command === "crash") return command;
  if (command !== "run") throw new Error(`unknown command ${command}`);
  return target !== undefined ? "conformance" : "run";
}

function refuseOthers(command: Command, given: readonly string[]): void {
  const { label, options } = ALLOWED[command];
  const other = given.find((name) => name !== "help" && !(options as readonly string[]).includes(name));
  if (other) throw new Error(`--${other} does not apply to ${label}`);
}

/** A whole number in [min, max]: "", "1.5", "0x3" or "1e3" is refused, not read as some number. */
function integerOption(name: string, raw: string, min: number, max: number): number {
  const value = Number(raw);
  if (!/^\d+$/.test(raw) || value < min || value > max) throw new Error(`--${name} must be an integer ${min}..${max}, not ${JSON.stringify(raw)}`);
  return value;
}

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      operators: { type: "string" },
      operations: { type: "string" },
      filter: { type: "string" },
      seed: { type: "string" },
      report: { type: "string" },
      out: { type: "string" },
      target: { type: "string" },
      keep: { type: "boolean" },
      help: { type: "boolean" },
    },
  });
  if (values.help) {
    process.stdout.write(usage);
    return 0;
  }
  const command = commandOf(positionals, values.target);
  refuseOthers(command, Object.keys(values));
  const operators = values.operators === undefined ? 3 : integerOption("operators", values.operators, 1, 9);
  // A crash run is only proven by twins across operators: with one operator it could never pass.
  if (command === "crash" && operators < 2) throw new Error("crash needs --operators 2 or more: it must make twins across operators");
  // The seed is read as a 32-bit number (seededRandom): larger ones would repeat smaller ones.
  const seed = values.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : integerOption("seed", values.seed, 0, 2 ** 32 - 1);
  const log = (line: string) => process.stdout.write(`${line}\n`);
  // npm does not pass signals on: this is the process to stop.
  const announce = () => log(`process id ${process.pid} (kill -TERM ${process.pid} or Ctrl-C stops the run and its nodes)`);

  if (command === "up") {
    if (!values.out) throw new Error("up needs --out DIR");
    const federation = await sandboxUp(operators, values.out);
    for (const o of federation.operators) log(`${o.operatorId}  device ${o.deviceUrl}  federation ${o.federationUrl}`);
    log(`wrote ${values.out}/federation.json; stop with: npm run simulate -- down --out ${values.out}`);
    return 0;
  }
  if (command === "down") {
    if (!values.out) throw new Error("down needs --out DIR");
    log(`stopped ${await sandboxDown(values.out)} operators`);
    return 0;
  }
  if (command === "crash") {
    const operations = values.operations === undefined ? 500 : integerOption("operations", values.operations, 1, 100_000);
    announce();
    const report = await runCrashLoop({ operations, seed, operators, log, ...(values.out ? { dir: values.out, keep: true } : { keep: values.keep ?? false }) });
    log(JSON.stringify(report, null, 2));
    log("");
    log(formatCrashReport(report));
    const failures = crashLoopFailures(report, operations);
    for (const failure of failures) log(`FAIL ${failure}`);
    return failures.length === 0 ? 0 : 1;
  }

  // Checked before any node starts or any report is written: a filter that selects nothing is a typo.
  if (!allScenarios.some((scenario) => scenarioMatches(scenario, values.filter))) {
    log(`no scenario matches --filter ${values.filter}`);
    return 1;
  }
  const reportFile = values.report ?? (values.target ? "conformance-report.html" : "simulation-report.html");
  checkReportFile(reportFile);
  const common = { operators, seed, filter: values.filter, reportFile, keep: values.keep ?? false, log };
  announce();
  log(`seed ${seed}`);
  const outcome = values.target ? await runConformance(values.target, common) : await runSimulation(common);
  log("");
  log(outcome.table);
  if (values.target && "labels" in outcome) {
    log("");
    log("requirement labels:");
    for (const [label, verdict] of outcome.labels as Map<string, string>) log(`  ${label.padEnd(11)} ${verdict}`);
  }
  if (outcome.reportError) {
    // The results are printed above; only the file is missing.
    process.stderr.write(`simulate: ${outcome.reportError}\n`);
    return 1;
  }
  log(`report: ${outcome.reportFile}`);
  return outcome.ok ? 0 : 1;
}

// Stopped from outside (Ctrl-C, a CI timeout's SIGTERM): the nodes it started stop too, its
// directories are removed, and it exits as interrupted (the run, failing as its nodes stop,
// does not decide the exit code).
let interrupted = false;
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    interrupted = true;
    process.stderr.write(`simulate: ${signal}, stopping the nodes…\n`);
    void Sandbox.stopAll()
      .finally(removeTempDirs)
      .finally(() => process.exit(signal === "SIGINT" ? 130 : 143));
  });
}

main(process.argv.slice(2)).then(
  (code) => {
    if (!interrupted) process.exit(code);
  },
  (error: unknown) => {
    if (interrupted) return;
    process.stderr.write(`simulate: ${(error as Error).message}\n\n${usage}`);
    process.exit(2);
  },
);
