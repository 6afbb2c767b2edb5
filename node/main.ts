import { join } from "node:path";
import { loadNodeConfig } from "./config/load-config.ts";
import { ConfigError, unknownEnvironmentVariables } from "./config/node-config.ts";
import { startNode } from "./server/start-node.ts";

/**
 * `npm start`: one node on the embedded default (operator 001-01, SQLite under ./data,
 * development keys made on first start). Configuration: TWINNING_CONFIG=file.json and
 * TWINNING_* environment variables (see README).
 */
async function main(): Promise<void> {
  let config;
  try {
    config = loadNodeConfig();
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`${error.message}\n`);
      process.exit(2);
    }
    throw error;
  }
  const unknown = unknownEnvironmentVariables(process.env);
  if (unknown.length > 0) process.stderr.write(`Ignoring ${unknown.join(", ")}: no such setting (see the README's configuration table)\n`);
  let node;
  try {
    node = await startNode(config, { defaultMetrics: true });
  } catch (error) {
    process.stderr.write(`Cannot start the node: ${(error as Error).message}\n`);
    process.exit(1);
  }
  // Where the admin token is, never the token: this banner shares stdout with the JSON logs,
  // which an operator's log collection reads (no tokens in logs).
  const adminToken = node.adminTokenCreated
    ? `generated now in ${join(config.dataDir, "admin-token")} (mode 0600)`
    : config.adminToken
      ? "as configured (adminToken)"
      : `in ${join(config.dataDir, "admin-token")}`;
  process.stdout.write(
    [
      "",
      `Twinning node ${node.operatorId} is running.`,
      `  Device API:  ${node.deviceUrl}/twinning/v1   (reference: ${node.deviceUrl}/twinning/v1/docs)`,
      ...(node.federationUrl ? [`  Federation:  ${node.federationUrl}/federation/v1   (mutual TLS)`] : []),
      `  Admin token: ${adminToken}`,
      `  Database:    ${node.databaseFile}`,
      `  Process id:  ${process.pid}   (SIGTERM stops it gracefully, SIGHUP reloads the peer list)`,
      "",
    ].join("\n") + "\n",
  );
  let signals = 0;
  const shutdown = (signal: string) => {
    if (signals++ > 0) process.exit(1);
    process.stdout.write(`${signal}: finishing in-flight requests…\n`);
    node.stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on("SIGTERM", () => shutdown("SIGTERM"));
  process.on("SIGINT", () => shutdown("SIGINT"));
  process.on("SIGHUP", () => {
    node.reloadFederation().then(
      (r) => process.stdout.write(`SIGHUP: reloaded ${r.peers} peers and ${r.keys} signing keys\n`),
      (error: unknown) => process.stderr.write(`SIGHUP: reload failed, keeping the previous peers: ${(error as Error).message}\n`),
    );
  });
}

await main();
