import { createServer, connect, type Server, type Socket } from "node:net";

/**
 * A TCP relay in front of a node's federation listener. TLS stays end to end (the proxy only
 * moves bytes); `partition()` cuts every connection and refuses new ones until `heal()`,
 * which is what a network partition looks like to both sides.
 */
export class TcpProxy {
  #server: Server | undefined;
  readonly #sockets = new Set<Socket>();
  #partitioned = false;
  port = 0;

  constructor(readonly targetPort: number) {}

  async listen(port = 0): Promise<number> {
    this.#server = createServer((client) => {
      if (this.#partitioned) return client.destroy();
      const upstream = connect(this.targetPort, "127.0.0.1");
      for (const s of [client, upstream]) {
        this.#sockets.add(s);
        s.on("close", () => this.#sockets.delete(s));
        s.on("error", () => undefined);
      }
      client.pipe(upstream).pipe(client);
      client.on("close", () => upstream.destroy());
      upstream.on("close", () => client.destroy());
    });
    await new Promise<void>((resolve) => this.#server!.listen(port, "127.0.0.1", resolve));
    this.port = (this.#server.address() as { port: number }).port;
    return this.port;
  }

  partition(): void {
    this.#partitioned = true;
    for (const s of this.#sockets) s.destroy();
  }

  heal(): void {
    this.#partitioned = false;
  }

  async close(): Promise<void> {
    this.partition();
    await new Promise<void>((resolve) => (this.#server ? this.#server.close(() => resolve()) : resolve()));
  }
}

/** A port the OS says is free now (for processes that must keep their port across restarts). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
