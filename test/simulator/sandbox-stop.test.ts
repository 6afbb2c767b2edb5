import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { Sandbox } from "../../simulator/sandbox.ts";

const dir = mkdtempSync(join(tmpdir(), "twinning-sandbox-stop-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("a stopped sandbox", () => {
  it("starts no node again: a crash loop's restart that comes after a Ctrl-C's stop is refused, and the node stays down", async () => {
    const sandbox = await Sandbox.create({ operators: 1, dir, proxies: false, logLevel: "warn" });
    const [node] = sandbox.operators;
    expect((await fetch(`${node!.deviceUrl}/healthz`)).status).toBe(200);
    await sandbox.kill(node!.operatorId);
    await sandbox.stop();
    await expect(sandbox.restart(node!.operatorId)).rejects.toThrow(/stopped/);
    await expect(fetch(`${node!.deviceUrl}/healthz`)).rejects.toThrow();
  }, 60_000);
});
