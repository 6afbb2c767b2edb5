import { readFileSync } from "node:fs";
import { ConfigError, mergeEnvironment, parseNodeConfig, type NodeConfig } from "./node-config.ts";

/**
 * Loads the node's configuration: the JSON file named by TWINNING_CONFIG (if any), then the
 * TWINNING_* environment variables on top, validated once.
 */
export function loadNodeConfig(env: NodeJS.ProcessEnv = process.env): NodeConfig {
  let fileInput: Record<string, unknown> = {};
  const file = env.TWINNING_CONFIG;
  if (file) {
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch (error) {
      throw new ConfigError(`Cannot read config file ${file}: ${(error as Error).message}`);
    }
    try {
      const parsed: unknown = JSON.parse(text);
      if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new Error("not a JSON object");
      fileInput = parsed as Record<string, unknown>;
    } catch (error) {
      throw new ConfigError(`Config file ${file} is not a JSON object: ${(error as Error).message}`);
    }
  }
  const { input, origins } = mergeEnvironment(fileInput, env);
  return parseNodeConfig(input, origins);
}
