import { describe, expect, it } from "vitest";
import { labelVerdicts, runScenarios } from "../../simulator/run-scenarios.ts";
import { check, skipUnless, type Scenario } from "../../simulator/scenario.ts";

/** The scenario runner's verdicts, with scenarios that need no node (no target is ever called). */
const scenario = (id: string, labels: string[], run: Scenario["run"]): Scenario => ({ id, title: id, labels, needs: "device", minOperators: 1, run });
const target = { operatorId: "001-01", deviceUrl: "http://127.0.0.1:9", federationUrl: "https://127.0.0.1:9", adminToken: "x".repeat(24) };

describe("the scenario runner", () => {
  it("a scenario whose precondition the target does not meet is skipped with the reason, not failed; its labels stay unjudged", async () => {
    const results = await runScenarios(
      [
        scenario("needs-short-codes", ["HLF-TE-005"], async () => skipUnless(false, "the code lives 300 s")),
        scenario("passes", ["HLF-SD-001"], async () => check(true, "")),
        scenario("fails", ["HLF-SD-002"], async () => check(false, "wrong answer")),
      ],
      { targets: [target], seed: 1 },
    );
    expect(results.map((r) => [r.id, r.status, r.error])).toEqual([
      ["needs-short-codes", "skip", "the code lives 300 s"],
      ["passes", "pass", undefined],
      ["fails", "fail", "wrong answer"],
    ]);
    expect(Object.fromEntries(labelVerdicts(results))).toEqual({ "HLF-TE-005": "skip", "HLF-SD-001": "pass", "HLF-SD-002": "fail" });
  });

  it("on the simulator's own nodes, which are configured for every scenario, a scenario that skips fails (a node misbehaved)", async () => {
    const sandbox = {} as never; // not called by these scenarios: only its presence matters
    const results = await runScenarios([scenario("needs-short-codes", ["HLF-TE-005"], async () => skipUnless(false, "the code lives NaN s"))], { targets: [target], sandbox, seed: 1 });
    expect(results.map((r) => [r.status, r.error])).toEqual([["fail", "the code lives NaN s"]]);
    expect(Object.fromEntries(labelVerdicts(results))).toEqual({ "HLF-TE-005": "fail" });
  });

  it("--filter matches an id, a title or a label prefix", async () => {
    const all = [scenario("intra", ["HLF-PD-001"], async () => undefined), scenario("across", ["HLF-IC-004"], async () => undefined)];
    const ids = async (filter: string) => (await runScenarios(all, { targets: [target], seed: 1, filter })).map((r) => r.id);
    expect(await ids("HLF-IC")).toEqual(["across"]);
    expect(await ids("HLF-")).toEqual(["intra", "across"]);
    expect(await ids("intra")).toEqual(["intra"]);
    expect(await ids("nothing")).toEqual([]);
  });
});
