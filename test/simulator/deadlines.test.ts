import { createServer as createHttpServer, type Server as HttpServer } from "node:http";
import { createServer, type AddressInfo, type Server, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Api } from "../../simulator/device-client.ts";
import { waitUntilReady } from "../../simulator/sandbox.ts";
import { SseClient } from "../../simulator/sse-client.ts";

// A "node" that accepts connections and never answers: the case the simulator's deadline is for.
let silent: Server;
const held = new Set<Socket>();
let silentUrl = "";
// A node whose token endpoint answers 200 with an HTML page.
let html: HttpServer;
let htmlUrl = "";

beforeAll(async () => {
  silent = createServer((socket) => {
    held.add(socket);
    socket.on("error", () => undefined);
  });
  await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
  silentUrl = `http://127.0.0.1:${(silent.address() as AddressInfo).port}`;
  html = createHttpServer((_req, res) => res.writeHead(200, { "content-type": "text/html" }).end("<html>proxy login</html>"));
  await new Promise<void>((r) => html.listen(0, "127.0.0.1", r));
  htmlUrl = `http://127.0.0.1:${(html.address() as AddressInfo).port}`;
});
afterAll(async () => {
  for (const s of held) s.destroy();
  await new Promise((r) => silent.close(r));
  await new Promise((r) => html.close(r));
});

/** Settles within `ms`, or fails the test saying the call had no deadline. */
const within = <T>(ms: number, promise: Promise<T>): Promise<T> =>
  Promise.race([promise, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`still pending after ${ms} ms: no deadline`)), ms))]);

describe("every simulator call has a deadline", () => {
  it("token() fails after the call's deadline, naming the call", async () => {
    await expect(within(5_000, new Api(silentUrl, 300).token("tel:+15550001", "secret-0001"))).rejects.toThrow(`POST ${silentUrl}/oauth/token: no answer within 300 ms`);
  });

  it("token() says clearly when the answer is not JSON, not with a bare SyntaxError", async () => {
    await expect(new Api(htmlUrl).token("tel:+15550001", "secret-0001")).rejects.toThrow("token failed: 200 answer is not JSON with an access_token (content-type text/html)");
  });

  it("waiting for /readyz ends by its deadline even when the node never answers a probe", async () => {
    const started = Date.now();
    expect(await within(5_000, waitUntilReady(new Api(silentUrl), 500))).toBe(false);
    expect(Date.now() - started).toBeLessThan(2_000);
  });

  it("opening an event stream fails when the node sends no headers within the deadline", async () => {
    await expect(within(5_000, SseClient.open(`${silentUrl}/notifications`, "token", undefined, 300))).rejects.toThrow(`event stream ${silentUrl}/notifications: no answer within 300 ms`);
  });
});
