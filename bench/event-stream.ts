import { Pool } from "undici";
import { monotonicMs } from "./clock.ts";

/**
 * The propagation bench's secondary: one SSE stream read with undici's `request` (a Node
 * stream body, as light as the mTLS baseline's client), stamping each event with the time its
 * bytes arrived, so the latency measured is the node's and not a WHATWG stream reader's.
 */
export class TimedEventStream {
  /** The arrival of each event, in order, in monotonic ms (`clock.ts`: comparable across processes). */
  readonly arrivals: number[] = [];
  #waiter: (() => void) | undefined;
  #buffer = "";

  private constructor(
    private readonly pool: Pool,
    private readonly body: NodeJS.ReadableStream & { destroy(): void },
  ) {
    body.on("data", (chunk: Buffer) => {
      const at = monotonicMs();
      this.#buffer += String(chunk);
      let cut: number;
      while ((cut = this.#buffer.indexOf("\n\n")) >= 0) {
        const frame = this.#buffer.slice(0, cut);
        this.#buffer = this.#buffer.slice(cut + 2);
        if (/^data:/m.test(frame)) this.arrivals.push(at);
      }
      this.#waiter?.();
    });
    body.on("error", () => this.#waiter?.());
  }

  static async open(origin: string, path: string, token: string): Promise<TimedEventStream> {
    const pool = new Pool(origin, { connections: 1 });
    const res = await pool.request({ method: "GET", path, headers: { authorization: `Bearer ${token}`, accept: "text/event-stream" } });
    if (res.statusCode !== 200) throw new Error(`event stream answered ${res.statusCode}`);
    return new TimedEventStream(pool, res.body);
  }

  /** Resolves once `n` events have arrived, or rejects after `timeoutMs`. */
  waitFor(n: number, timeoutMs = 10_000): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiter = undefined;
        reject(new Error(`expected ${n} events, got ${this.arrivals.length}`));
      }, timeoutMs);
      const check = () => {
        if (this.arrivals.length < n) return;
        clearTimeout(timer);
        this.#waiter = undefined;
        resolve();
      };
      this.#waiter = check;
      check();
    });
  }

  async close(): Promise<void> {
    this.body.destroy();
    await this.pool.destroy();
  }
}
