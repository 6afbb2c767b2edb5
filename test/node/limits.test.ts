import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { rawHttp } from "../helpers/raw-http.ts";
import { startTestNode, type TestNode } from "../helpers/test-node.ts";

let t: TestNode;
beforeAll(async () => {
  t = await startTestNode({ limits: { maxHeaderBytes: 4_096, requestTimeoutMs: 1_000 } });
});
afterAll(async () => t.cleanup());

const raw = (send: (write: (s: string) => void) => void, timeoutMs?: number) => rawHttp(t.url, send, timeoutMs);

describe("HLF-CM-006 resource limits are bounded by configuration", () => {
  it("request headers over limits.maxHeaderBytes are refused with 431 before the app sees them", async () => {
    const answer = await raw((w) => w(`GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(6_000)}\r\n\r\n`));
    expect(answer).toMatch(/^HTTP\/1\.1 431 /);
    expect(JSON.parse(answer.slice(answer.indexOf("\r\n\r\n") + 4))).toEqual({
      requestError: { serviceException: { messageId: "SVC0002", text: "Invalid input value for message part headers", variables: ["headers"] } },
    });
  });

  it("requests answered before routing (431 by Node's parser, 400 without a Host) are counted in the request metric", async () => {
    const counted = async (status: number) => {
      const line = (await (await fetch(`${t.url}/metrics`)).text()).split("\n").find((l) => l.startsWith(`twinning_http_requests_total{method="-",route="(refused before routing)",status="${status}"}`));
      return line ? Number(line.split(" ").pop()) : 0;
    };
    const before = [await counted(431), await counted(400)];
    expect(await raw((w) => w(`GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(6_000)}\r\n\r\n`))).toMatch(/^HTTP\/1\.1 431 /);
    expect(await raw((w) => w(`GET /healthz HTTP/1.1\r\n\r\n`))).toMatch(/^HTTP\/1\.1 400 /);
    expect([(await counted(431)) - before[0]!, (await counted(400)) - before[1]!]).toEqual([1, 1]);
  });

  it("a client that does not finish its request within limits.requestTimeoutMs gets 408, and the node stays healthy", async () => {
    const answer = await raw((w) => w(`POST /twinning/v1/primary/acr%3AAuthorization/twins HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"a":`));
    expect(answer).toMatch(/^HTTP\/1\.1 408 /);
    expect(answer).toContain('"messageId":"SVC0002"');
    expect((await fetch(`${t.url}/healthz`)).status).toBe(200);
  });

  it("a keep-alive connection that already served requests still gets the 431 and the 408", async () => {
    const afterOne = (next: string) => (w: (s: string) => void) =>
      new Promise<void>((done) => {
        w(`GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n`);
        setTimeout(() => (w(next), done()), 200);
      });
    const headers = await raw(afterOne(`GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(6_000)}\r\n\r\n`));
    expect(headers.match(/HTTP\/1\.1 \d{3}/g)).toEqual(["HTTP/1.1 200", "HTTP/1.1 431"]);
    const late = await raw(afterOne(`POST /twinning/v1/primary/acr%3AAuthorization/twins HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"a":`));
    expect(late.match(/HTTP\/1\.1 \d{3}/g)).toEqual(["HTTP/1.1 200", "HTTP/1.1 408"]);
  });
});
