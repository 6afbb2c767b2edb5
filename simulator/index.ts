/** The multi-operator simulator: sandbox of node processes, scenarios with faults, report. */
export { Sandbox, type FederationJson, type SandboxOperator } from "./sandbox.ts";
export { allScenarios, runConformance, runSimulation, sandboxDown, sandboxUp, type RunOptions, type RunOutcome } from "./simulation.ts";
export { renderReport } from "./report.ts";
export { Api, enc, messageId } from "./device-client.ts";
export type { Scenario, World } from "./scenario.ts";
