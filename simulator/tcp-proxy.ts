import { createServer, connect, type Server, type Socket } from "node:net";

/** One relayed connection: the client's socket and ours to the node. */
interface Link {
  readonly client: Socket;
  readonly upstream: Socket;
}

/**
 * A TCP relay in front of a node's federation listener. TLS stays end to end (the proxy only
 * moves bytes). Two faults, each until `heal()`:
 * - `partition()`, a network partition as both sides see it: connections are still accepted,
 *   but no byte passes either way, on new or existing connections, and nothing is reset; a
 *   caller learns of it only from its own timeout. At heal, existing connections pass their
 *   held bytes on; connections made during the partition (never relayed) are closed.
 * - `down()`, the node's host gone: every connection is reset and new ones are refused at once.
 */
export class TcpProxy {
  #server: Server | undefined;
  readonly #links = new Set<Link>();
  /** Accepted during a partition: held open, never read, never relayed. */
  readonly #held = new Set<Socket>();
  #mode: "open" | "partitioned" | "down" = "open";
  port = 0;

  constructor(readonly targetPort: number) {}

  async listen(port = 0): Promise<number> {
    this.#server = createServer((client) => this.#accept(client));
    await new Promise<void>((resolve) => this.#server!.listen(port, "127.0.0.1", resolve));
    this.port = (this.#server.address() as { port: number }).port;
    return this.port;
  }

  #accept(client: Socket): void {
    client.on("error", () => undefined);
    if (this.#mode === "down") return void client.destroy();
    if (this.#mode === "partitioned") {
      client.pause();
      this.#held.add(client);
      client.on("close", () => this.#held.delete(client));
      return;
    }
    const link = { client, upstream: connect(this.targetPort, "127.0.0.1") };
    link.upstream.on("error", () => undefined);
    this.#links.add(link);
    client.on("close", () => {
      this.#links.delete(link);
      link.upstream.destroy();
    });
    link.upstream.on("close", () => client.destroy());
    relay(link);
  }

  /** No byte passes on any connection, new ones are accepted and held, nothing is reset. */
  partition(): void {
    this.#mode = "partitioned";
    for (const link of this.#links) hold(link);
  }

  /** Every connection is reset, new ones are refused. */
  down(): void {
    this.#mode = "down";
    for (const link of this.#links) link.client.destroy();
    for (const socket of this.#held) socket.destroy();
  }

  heal(): void {
    const wasPartitioned = this.#mode === "partitioned";
    this.#mode = "open";
    if (!wasPartitioned) return;
    for (const link of this.#links) relay(link);
    // Their first bytes were never relayed (their callers have timed out by now): closed, not replayed.
    for (const socket of this.#held) socket.destroy();
  }

  async close(): Promise<void> {
    this.down();
    await new Promise<void>((resolve) => (this.#server ? this.#server.close(() => resolve()) : resolve()));
  }
}

/** Bytes flow both ways (bytes held during a partition go on first). */
function relay({ client, upstream }: Link): void {
  client.pipe(upstream);
  upstream.pipe(client);
}

/** Bytes stop both ways and wait in the sockets' buffers; the connection stays open. */
function hold({ client, upstream }: Link): void {
  client.unpipe(upstream);
  upstream.unpipe(client);
  client.pause();
  upstream.pause();
}

/** A port the OS says is free now (for processes that must keep their port across restarts). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
