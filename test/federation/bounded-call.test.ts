import { createServer, type Server, type ServerResponse } from "node:http";
import { Agent } from "undici";
import { onLoopback } from "../helpers/loopback-server.ts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { channel } from "node:diagnostics_channel";
import { afterCallsOfThisTurn, boundedCall } from "../../peers/bounded-call.ts";

/**
 * One outgoing call under one deadline and one size bound, against a real server on loopback
 * whose answers come whole, in pieces, too slowly, too big, or not at all.
 */
let server: Server;
let base = "";
let stop: () => Promise<void>;
const agent = new Agent({ keepAliveTimeout: 1_000 });
/** Told when the connection that asked for a path closes. */
const socketClosed = new Map<string, () => void>();
/** What the server managed to write of the answer it was asked for, by path. */
const written = new Map<string, number>();

const writeSlowly = (res: ServerResponse, path: string, piece: string, times: number) => {
  let n = 0;
  const next = () => {
    if (res.destroyed || n === times) return void res.end();
    n += 1;
    written.set(path, (written.get(path) ?? 0) + piece.length);
    res.write(piece, () => setTimeout(next, 1));
  };
  next();
};

beforeAll(async () => {
  server = createServer((req, res) => {
    let body = "";
    req.on("data", (chunk: Buffer) => (body += String(chunk)));
    req.on("end", () => {
      const path = req.url ?? "";
      if (path === "/echo") {
        res.writeHead(201, { "content-type": "application/json", "x-seen": req.headers["x-tag"] ?? "" });
        return void res.end(JSON.stringify({ method: req.method, body }));
      }
      if (path === "/pieces") {
        res.writeHead(200, { "content-type": "text/plain" });
        return writeSlowly(res, path, "é-part;", 20);
      }
      if (path.startsWith("/huge")) {
        res.writeHead(200, { "content-type": "text/plain" });
        return writeSlowly(res, path, "x".repeat(16_384), 400);
      }
      if (path === "/reset-body") {
        res.writeHead(502, { "content-type": "text/plain", "content-length": "1000" });
        res.write("partial", () => setTimeout(() => res.socket?.destroy(), 20));
        return;
      }
      if (path === "/reset-early") return void req.socket.destroy();
      if (path === "/stall-body" || path === "/stall-body-500") {
        req.socket.once("close", () => socketClosed.get(path)?.());
        res.writeHead(path === "/stall-body" ? 200 : 500, { "content-type": "text/plain" });
        return void res.write("started");
      }
      // "/silent": headers never come.
    });
  });
  ({ base, stop } = await onLoopback(server));
});

afterAll(async () => {
  await agent.destroy();
  await stop();
});

describe("boundedCall: one deadline and one size bound for a whole outgoing call", () => {
  it("gives the status, headers and whole text of an answer; method, headers and body go out as asked", async () => {
    const answer = await boundedCall(agent, { url: `${base}/echo`, method: "PUT", headers: { "x-tag": "t1" }, body: "hello", timeoutMs: 2_000, maxBytes: 1_000 });
    expect(answer.status).toBe(201);
    expect(answer.headers["x-seen"]).toBe("t1");
    expect(JSON.parse(answer.text)).toEqual({ method: "PUT", body: "hello" });
  });

  it("joins an answer that comes in many pieces (a character split across two stays whole)", async () => {
    const answer = await boundedCall(agent, { url: `${base}/pieces`, method: "GET", timeoutMs: 5_000, maxBytes: 10_000 });
    expect(answer.text).toBe("é-part;".repeat(20));
  });

  it("fails with tooLarge's error past maxBytes, and the rest is never read", async () => {
    const call = boundedCall(agent, { url: `${base}/huge-fail`, method: "GET", timeoutMs: 5_000, maxBytes: 50_000, tooLarge: () => new Error("answer over 50000 bytes") });
    await expect(call).rejects.toThrow("answer over 50000 bytes");
    await new Promise((r) => setTimeout(r, 100));
    expect(written.get("/huge-fail")).toBeLessThan(400 * 16_384);
  });

  it("without tooLarge, the text stops at maxBytes and the rest is never read", async () => {
    const answer = await boundedCall(agent, { url: `${base}/huge-cut`, method: "GET", timeoutMs: 5_000, maxBytes: 50_000 });
    expect(answer.status).toBe(200);
    expect(answer.text).toBe("x".repeat(50_000));
    await new Promise((r) => setTimeout(r, 100));
    expect(written.get("/huge-cut")).toBeLessThan(400 * 16_384);
  });

  it("tooLarge is given the answer's status, so a refusal can be named by it", async () => {
    const call = boundedCall(agent, { url: `${base}/huge-status`, method: "GET", timeoutMs: 5_000, maxBytes: 1_000, tooLarge: (status) => new Error(`status ${status}, too large`) });
    await expect(call).rejects.toThrow("status 200, too large");
  });

  it("statusIsEnough: a 2xx status ends the call at once, not at the deadline; a body that then stalls has its connection dropped after bodyGraceMs", async () => {
    const closed = new Promise<void>((resolve) => socketClosed.set("/stall-body", resolve));
    // A deadline far beyond the test's own timeout: the call must end on the status alone.
    const answer = await boundedCall(agent, { url: `${base}/stall-body`, method: "GET", timeoutMs: 600_000, maxBytes: 1_000, statusIsEnough: true, bodyGraceMs: 50 });
    expect(answer).toMatchObject({ status: 200, text: "" });
    await closed;
  });

  it("statusIsEnough: another status waits for its body (it names the failure); one that stalls ends the call at the deadline with what was read, not an error", async () => {
    const answer = await boundedCall(agent, { url: `${base}/stall-body-500`, method: "GET", timeoutMs: 150, maxBytes: 1_000, statusIsEnough: true, bodyGraceMs: 10 });
    expect(answer).toMatchObject({ status: 500, text: "started" });
  });

  it("statusIsEnough: a connection reset after the status gives the status; before it, the error", async () => {
    const answer = await boundedCall(agent, { url: `${base}/reset-body`, method: "GET", timeoutMs: 2_000, maxBytes: 1_000, statusIsEnough: true });
    expect(answer).toMatchObject({ status: 502, text: "partial" });
    await expect(boundedCall(agent, { url: `${base}/reset-early`, method: "GET", timeoutMs: 2_000, maxBytes: 1_000, statusIsEnough: true })).rejects.toThrow();
  });

  it("one deadline covers the wait for the answer's headers (a TimeoutError)", async () => {
    const started = Date.now();
    await expect(boundedCall(agent, { url: `${base}/silent`, method: "POST", body: "x", timeoutMs: 150, maxBytes: 1_000 })).rejects.toMatchObject({ name: "TimeoutError" });
    expect(Date.now() - started).toBeLessThan(2_000);
  });

  it("and the wait for the rest of the body", async () => {
    await expect(boundedCall(agent, { url: `${base}/stall-body`, method: "GET", timeoutMs: 150, maxBytes: 1_000 })).rejects.toMatchObject({ name: "TimeoutError" });
  });

  it("a refused connection fails the call at once, not at the deadline", async () => {
    const closed = await onLoopback(createServer());
    await closed.stop();
    const started = Date.now();
    await expect(boundedCall(agent, { url: `${closed.base}/`, method: "GET", timeoutMs: 10_000, maxBytes: 1_000 })).rejects.toMatchObject({ code: "ECONNREFUSED" });
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it("a finished call leaves its connection open for the next: no new connection once warm", async () => {
    let connections = 0;
    const counted = createServer((req, res) => res.end("ok"));
    counted.on("connection", () => (connections += 1));
    const listening = await onLoopback(counted);
    const url = `${listening.base}/`;
    try {
      const call = async () => expect((await boundedCall(agent, { url, method: "GET", timeoutMs: 2_000, maxBytes: 100 })).text).toBe("ok");
      // undici's pool opens a second connection for a call made as the previous answer ends
      // (the first is checked for a close for one turn of the event loop), then alternates.
      for (let i = 0; i < 3; i++) await call();
      const warm = connections;
      for (let i = 0; i < 20; i++) await call();
      expect(warm).toBeLessThanOrEqual(2);
      expect(connections).toBe(warm);
    } finally {
      await listening.stop();
    }
  });

  it("afterCallsOfThisTurn resolves once a call dispatched in the same turn on a warm connection has been written (undici writes it a turn later)", async () => {
    const url = `${base}/echo`;
    await boundedCall(agent, { url, method: "GET", timeoutMs: 2_000, maxBytes: 1_000 });
    const writes: string[] = [];
    const onWrite = () => writes.push("written");
    const sent = channel("undici:client:sendHeaders");
    sent.subscribe(onWrite);
    try {
      await new Promise((r) => setTimeout(r, 5));
      // Asked for before the call is made, as a change's answer is before its lane sends.
      const after = afterCallsOfThisTurn();
      const call = boundedCall(agent, { url, method: "GET", timeoutMs: 2_000, maxBytes: 1_000 });
      await Promise.resolve();
      // Not yet after a microtask: the write waits for the check phase.
      expect(writes).toEqual([]);
      await after;
      expect(writes).toEqual(["written"]);
      await call;
    } finally {
      sent.unsubscribe(onWrite);
    }
  });
});
