/** The twinning node: what other folders (simulator, tests, tools) may use. */
export { loadNodeConfig } from "./config/load-config.ts";
export { ConfigError, configEnvironmentVariables, parseNodeConfig, type NodeConfig, type NodeConfigInput } from "./config/node-config.ts";
export { startNode, type RunningNode, type StartNodeOptions } from "./server/start-node.ts";
export { SqliteStore } from "./store/sqlite/sqlite-store.ts";
export type * from "./store/store-port.ts";
export { TwinningError, type ErrorCode } from "./errors/twinning-error.ts";
export type { Twin, TwinRole, TwinStatus } from "./domain/twin.ts";
