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
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      // Not JSON.parse's message: it quotes the text near the fault, which may be a secret.
      throw new ConfigError(`Config file ${file} is not valid JSON`);
    }
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new ConfigError(`Config file ${file} is not a JSON object`);
    fileInput = parsed as Record<string, unknown>;
  }
  const { input, origins } = mergeEnvironment(fileInput, env);
  // Fields set in the file and not overridden by the environment come from the file.
  const fromFile = new Map<string, string>();
  if (file) for (const path of valuePaths(fileInput)) if (!origins.has(path)) fromFile.set(path, file);
  return parseNodeConfig(input, new Map([...fromFile, ...origins]));
}

/** Dotted paths of every value in a parsed JSON object (objects are walked, arrays are values). */
function valuePaths(value: Record<string, unknown>, prefix = ""): string[] {
  return Object.entries(value).flatMap(([key, v]) => {
    const path = prefix ? `${prefix}.${key}` : key;
    return v !== null && typeof v === "object" && !Array.isArray(v) ? [path, ...valuePaths(v as Record<string, unknown>, path)] : [path];
  });
}
