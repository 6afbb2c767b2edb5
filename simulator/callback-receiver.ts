import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";

/** A real HTTP callback endpoint on 127.0.0.1 that records what it receives; can be told to fail. */
export class CallbackReceiver {
  readonly received: any[] = [];
  /** Every request that arrived, answered 2xx or not (a delivery tried while the receiver fails counts here only). */
  attempts = 0;
  /** Status to answer with; 204 when healthy. */
  status = 204;
  #server: Server | undefined;
  #waiters: (() => void)[] = [];
  url = "";

  async start(): Promise<this> {
    this.#server = createServer((req, res) => {
      let data = "";
      req.on("data", (chunk) => (data += chunk));
      req.on("end", () => {
        this.attempts += 1;
        if (this.status < 300) {
          // A body that is not JSON is recorded as it came: the scenario that reads it fails, not the simulator.
          let body: unknown;
          try {
            body = JSON.parse(data);
          } catch {
            body = { notJson: data.slice(0, 1_000) };
          }
          this.received.push(body);
          for (const w of this.#waiters.splice(0)) w();
        }
        res.statusCode = this.status;
        res.end();
      });
    });
    await new Promise<void>((r) => this.#server!.listen(0, "127.0.0.1", r));
    this.url = `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}/notify`;
    return this;
  }

  /** Waits (bounded) until at least n notifications have arrived. */
  async waitFor(n: number, timeoutMs = 5_000): Promise<any[]> {
    const deadline = Date.now() + timeoutMs;
    while (this.received.length < n) {
      if (Date.now() > deadline) throw new Error(`expected ${n} callbacks, got ${this.received.length}`);
      await new Promise<void>((r) => {
        this.#waiters.push(r);
        setTimeout(r, 50);
      });
    }
    return this.received;
  }

  async stop(): Promise<void> {
    this.#server?.closeAllConnections();
    await new Promise<void>((r) => (this.#server ? this.#server.close(() => r()) : r()));
  }
}
