import { accessSync, constants } from "node:fs";
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
  npm run simulate -- crash [--operations N] [--seed N] [--out DIR]
      Crash safety: N mixed operations (default 500) across 3 operators, a node SIGKILLed at
      random points and restarted, delivery drained; prints the figures (operations, kills,
      messages retried, divergences, lost commits, duplicate effects) as JSON and a table, and
      exits non-zero unless nothing was lost, duplicated or divergent. --out keeps the sandbox there.
  npm run simulate -- --target FEDERATION_JSON [--filter TEXT] [--seed N] [--report FILE]
      Conformance mode: runs the device-side scenarios against the nodes a federation.json
      describes (another implementation of DESIGN.md) and reports which labels pass.
`;

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
  const operators = Number(values.operators ?? 3);
  if (!Number.isInteger(operators) || operators < 1 || operators > 9) throw new Error("--operators must be 1..9");
  const seed = Number(values.seed ?? Math.floor(Math.random() * 2 ** 31));
  if (!Number.isInteger(seed)) throw new Error("--seed must be an integer");
  const log = (line: string) => process.stdout.write(`${line}\n`);
  const command = positionals[0] ?? "run";

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
    const operations = Number(values.operations ?? 500);
    if (!Number.isInteger(operations) || operations < 1 || operations > 100_000) throw new Error("--operations must be 1..100000");
    const report = await runCrashLoop({ operations, seed, operators, log, ...(values.out ? { dir: values.out, keep: true } : {}) });
    log(JSON.stringify(report, null, 2));
    log("");
    log(formatCrashReport(report));
    const failures = crashLoopFailures(report, operations);
    for (const failure of failures) log(`FAIL ${failure}`);
    return failures.length === 0 ? 0 : 1;
  }
  if (command !== "run") throw new Error(`unknown command ${command}`);

  // Checked before any node starts or any report is written: a filter that selects nothing is a typo.
  if (!allScenarios.some((scenario) => scenarioMatches(scenario, values.filter))) {
    log(`no scenario matches --filter ${values.filter}`);
    return 1;
  }
  const reportFile = values.report ?? (values.target ? "conformance-report.html" : "simulation-report.html");
  // Checked before the run too: a report that cannot be written would lose the whole run's results.
  const reportDir = dirname(resolve(reportFile));
  try {
    accessSync(reportDir, constants.W_OK);
  } catch {
    throw new Error(`--report ${reportFile}: cannot write in ${reportDir}`);
  }
  const common = { operators, seed, filter: values.filter, reportFile, keep: values.keep ?? false, log };
  log(`seed ${seed}`);
  const outcome = values.target ? await runConformance(values.target, common) : await runSimulation(common);
  log("");
  log(outcome.table);
  if (values.target && "labels" in outcome) {
    log("");
    log("requirement labels:");
    for (const [label, verdict] of outcome.labels as Map<string, string>) log(`  ${label.padEnd(11)} ${verdict}`);
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
