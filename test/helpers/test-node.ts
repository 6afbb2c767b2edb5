import { mkdtempSync, rmSync } from "node:fs";
import { afterAll, beforeAll } from "vitest";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseNodeConfig, type NodeConfigInput } from "../../node/config/node-config.ts";
import { startNode, type RunningNode, type StartNodeOptions } from "../../node/server/start-node.ts";

export interface TestNode {
  readonly node: RunningNode;
  readonly url: string;
  readonly dataDir: string;
  /** Stops the node (the data directory stays until `cleanup`). */
  stop(): Promise<void>;
  /** Stops the node and removes its data directory. */
  cleanup(): Promise<void>;
}

/** A real node on 127.0.0.1, on a port the OS picks, on a temporary SQLite file. */
export async function startTestNode(
  overrides: NodeConfigInput = {},
  options: StartNodeOptions & { dataDir?: string } = {},
): Promise<TestNode> {
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), "twinning-test-"));
  const config = parseNodeConfig({
    logLevel: "silent",
    ...overrides,
    dataDir,
    device: { host: "127.0.0.1", port: 0, ...(overrides.device ?? {}) },
    delivery: { retryBaseDelayMs: 20, retryMaxDelayMs: 200, ...(overrides.delivery ?? {}) },
    // Test callback receivers listen on 127.0.0.1.
    limits: { allowPrivateCallbackTargets: true, ...(overrides.limits ?? {}) },
  });
  const node = await startNode(config, options);
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await node.stop();
  };
  return {
    node,
    url: node.deviceUrl,
    dataDir,
    stop,
    async cleanup() {
      await stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

import { Api } from "../../simulator/device-client.ts";
export { Api, enc, messageId, type ApiResponse } from "../../simulator/device-client.ts";

let counter = 0;
/** A fresh subscriber address per call, so tests never collide. */
export function newAddress(): string {
  counter += 1;
  return `tel:+1555${String(process.pid % 1000).padStart(3, "0")}${String(counter).padStart(5, "0")}`;
}

/**
 * One node for a whole test file: started before its tests and removed after them. `party()`
 * provisions a fresh subscriber on it and returns its address and token.
 */
export function nodeForFile(overrides: NodeConfigInput = {}, options: StartNodeOptions = {}) {
  let node: TestNode | undefined;
  let api: Api | undefined;
  beforeAll(async () => {
    node = await startTestNode(overrides, options);
    api = new Api(node.url);
  });
  afterAll(async () => node?.cleanup());
  const started = () => {
    if (!node || !api) throw new Error("the file's node has not started (use it inside a test)");
    return { node, api };
  };
  return {
    get t(): TestNode {
      return started().node;
    },
    get api(): Api {
      return started().api;
    },
    async party(): Promise<{ address: string; token: string }> {
      const address = newAddress();
      return { address, token: await started().api.subscriber(started().node.node.adminToken, address) };
    },
  };
}
