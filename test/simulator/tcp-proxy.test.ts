import { connect, createServer, type AddressInfo, type Server, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TcpProxy } from "../../simulator/tcp-proxy.ts";

// An echo server stands for the node behind the proxy.
let echo: Server;
const sockets = new Set<Socket>();
beforeAll(async () => {
  echo = createServer((s) => {
    sockets.add(s);
    s.on("error", () => undefined);
    s.pipe(s);
  });
  await new Promise<void>((r) => echo.listen(0, "127.0.0.1", r));
});
afterAll(async () => {
  for (const s of sockets) s.destroy();
  await new Promise((r) => echo.close(r));
});

/** A client of the proxy that records what comes back and whether the connection ended. */
async function client(port: number) {
  const socket = connect(port, "127.0.0.1");
  const seen = { data: "", closed: false };
  socket.on("data", (d) => (seen.data += String(d)));
  socket.on("error", () => undefined);
  socket.on("close", () => (seen.closed = true));
  await new Promise<void>((r) => socket.once("connect", () => r()));
  return { socket, seen };
}

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("the partition proxy", () => {
  it("a partition accepts connections but passes no byte either way and resets nothing; heal lets held bytes through", async () => {
    const proxy = new TcpProxy((echo.address() as AddressInfo).port);
    const port = await proxy.listen();
    try {
      const before = await client(port);
      before.socket.write("a");
      await pause(100);
      expect(before.seen.data).toBe("a");

      proxy.partition();
      before.socket.write("b");
      const during = await client(port); // accepted: a partition is silence, not a refusal
      during.socket.write("c");
      await pause(300);
      expect([before.seen, during.seen]).toEqual([
        { data: "a", closed: false },
        { data: "", closed: false },
      ]);

      proxy.heal();
      await pause(200);
      // The existing connection goes on where it stopped; the one made during the partition was never relayed.
      expect(before.seen).toEqual({ data: "ab", closed: false });
      expect(during.seen).toEqual({ data: "", closed: true });
      before.socket.destroy();
    } finally {
      await proxy.close();
    }
  });

  it("down resets every connection and refuses new ones at once, until heal", async () => {
    const proxy = new TcpProxy((echo.address() as AddressInfo).port);
    const port = await proxy.listen();
    try {
      const open = await client(port);
      proxy.down();
      await pause(100);
      expect(open.seen.closed).toBe(true);
      const refused = await client(port);
      await pause(100);
      expect(refused.seen.closed).toBe(true);
      proxy.heal();
      const after = await client(port);
      after.socket.write("d");
      await pause(100);
      expect(after.seen).toEqual({ data: "d", closed: false });
      after.socket.destroy();
    } finally {
      await proxy.close();
    }
  });
});
