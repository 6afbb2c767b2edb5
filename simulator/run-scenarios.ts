import { CallbackReceiver } from "./callback-receiver.ts";
import { Api } from "./device-client.ts";
import type { Sandbox } from "./sandbox.ts";
import { ScenarioSkipped, seededRandom, type DeviceKind, type Endpoint, type Party, type Scenario, type World } from "./scenario.ts";

export interface ScenarioResult {
  readonly id: string;
  readonly title: string;
  readonly labels: readonly string[];
  readonly status: "pass" | "fail" | "skip";
  readonly startedAt: number;
  readonly ms: number;
  readonly error?: string;
}

export interface Target {
  readonly operatorId: string;
  readonly deviceUrl: string;
  readonly federationUrl: string;
  readonly adminToken: string;
}

/** The world the scenarios act in: provisioning, seeded choices, loopback callback servers. */
function createWorld(targets: readonly Target[], sandbox: Sandbox | undefined, seed: number): World & { cleanups: (() => Promise<void>)[] } {
  const random = seededRandom(seed);
  // Addresses are fresh per run (a long-lived sandbox never sees one twice); choices follow the seed.
  const nonce = String(Date.now() % 100_000).padStart(5, "0");
  let counter = 0;
  const cleanups: (() => Promise<void>)[] = [];
  const operators: Endpoint[] = targets.map((t) => ({ ...t, api: new Api(t.deviceUrl) }));
  return {
    operators,
    sandbox,
    random,
    cleanups,
    async party(operator: Endpoint, _kind: DeviceKind): Promise<Party> {
      counter += 1;
      const address = `tel:+1${operator.operatorId.replace("-", "")}${nonce}${String(counter).padStart(3, "0")}`;
      const token = await operator.api.subscriber(operator.adminToken, address);
      return { address, token, operator };
    },
    async receiver() {
      const r = await new CallbackReceiver().start();
      cleanups.push(() => r.stop());
      return r;
    },
    defer(cleanup) {
      cleanups.push(cleanup);
    },
  };
}

/** Whether `--filter TEXT` selects the scenario: a part of its id, of its title (any case), or a label prefix. */
export function scenarioMatches(scenario: Scenario, filter: string | undefined): boolean {
  return !filter || scenario.id.includes(filter) || scenario.title.toLowerCase().includes(filter.toLowerCase()) || scenario.labels.some((label) => label.startsWith(filter));
}

/** Runs the scenarios one after the other; a failure is recorded, never thrown. */
export async function runScenarios(
  scenarios: readonly Scenario[],
  options: { targets: readonly Target[]; sandbox?: Sandbox | undefined; seed: number; filter?: string | undefined; log?: (line: string) => void },
): Promise<ScenarioResult[]> {
  const results: ScenarioResult[] = [];
  const world = createWorld(options.targets, options.sandbox, options.seed);
  for (const scenario of scenarios) {
    const base = { id: scenario.id, title: scenario.title, labels: scenario.labels, startedAt: Date.now() };
    if (!scenarioMatches(scenario, options.filter)) continue;
    const skip =
      scenario.needs === "sandbox" && !options.sandbox
        ? "needs the simulator's own nodes (faults)"
        : scenario.minOperators > options.targets.length
          ? `needs ${scenario.minOperators} operators`
          : undefined;
    if (skip) {
      results.push({ ...base, status: "skip", ms: 0, error: skip });
      continue;
    }
    const started = performance.now();
    try {
      await scenario.run(world);
      results.push({ ...base, status: "pass", ms: Math.round(performance.now() - started) });
    } catch (error) {
      // A scenario skips when a node's configuration does not allow it; the simulator's own nodes
      // are configured for every scenario, so there a skip means a node misbehaved.
      const status = error instanceof ScenarioSkipped && !options.sandbox ? "skip" : "fail";
      results.push({ ...base, status, ms: Math.round(performance.now() - started), error: (error as Error).message ?? String(error) });
    } finally {
      for (const cleanup of world.cleanups.splice(0)) await cleanup().catch(() => undefined);
    }
    const r = results[results.length - 1]!;
    options.log?.(`${r.status.toUpperCase()} ${r.id} (${r.ms} ms)${r.error ? ` — ${r.error}` : ""}`);
  }
  return results;
}

/** A label passes when every scenario that demonstrates it passed (and at least one ran). */
export function labelVerdicts(results: readonly ScenarioResult[]): Map<string, "pass" | "fail" | "skip"> {
  const verdicts = new Map<string, "pass" | "fail" | "skip">();
  for (const r of results) {
    for (const label of r.labels) {
      const before = verdicts.get(label);
      if (r.status === "fail" || before === "fail") verdicts.set(label, "fail");
      else if (r.status === "pass") verdicts.set(label, "pass");
      else if (!before) verdicts.set(label, "skip");
    }
  }
  return new Map([...verdicts].sort(([a], [b]) => a.localeCompare(b)));
}

/** The pass/fail table printed at the end of a run. */
export function formatTable(results: readonly ScenarioResult[]): string {
  const rows = results.map((r, i) => [String(i + 1), r.id, r.status.toUpperCase(), `${r.ms} ms`, r.labels.join(" ")]);
  const head = ["#", "scenario", "result", "time", "labels"];
  const widths = head.map((h, c) => Math.max(h.length, ...rows.map((row) => row[c]!.length)));
  const line = (cells: string[]) => cells.map((cell, c) => cell.padEnd(widths[c]!)).join("  ");
  const passed = results.filter((r) => r.status === "pass").length;
  const failed = results.filter((r) => r.status === "fail").length;
  const skipped = results.filter((r) => r.status === "skip").length;
  // Why each skipped scenario was (failures are logged as they happen; the HTML report has both).
  const reasons = results.flatMap((r, i) => (r.status === "skip" && r.error ? [`  ${i + 1} ${r.id} skipped: ${r.error}`] : []));
  return [line(head), line(widths.map((w) => "-".repeat(w))), ...rows.map(line), "", `${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ""}`, ...reasons].join("\n");
}
