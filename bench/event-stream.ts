import { Pool } from "undici";

/**
 * The propagation bench's secondary: one SSE stream read with undici's `request` (a Node
 * stream body, as light as the mTLS baseline's client), stamping each event with the time its
 * bytes arrived, so the latency measured is the node's and not a WHATWG stream reader's.
 */
export class TimedEventStream {
  /** `performance.now()` at the arrival of each event, in order. */
  readonly arrivals: number[] = [];
  /** The twin status each event reports (its data's `"status"`), in the same order. */
  readonly statuses: (string | undefined)[] = [];
  #waiter: (() => void) | undefined;
  #failure: Error | undefined;
  #buffer = "";

  private constructor(
    private readonly pool: Pool,
    private readonly body: NodeJS.ReadableStream & { destroy(): void },
  ) {
    body.on("data", (chunk: Buffer) => {
      const at = performance.now();
      this.#buffer += String(chunk);
      let cut: number;
      while ((cut = this.#buffer.indexOf("\n\n")) >= 0) {
        const frame = this.#buffer.slice(0, cut);
        this.#buffer = this.#buffer.slice(cut + 2);
        if (!/^data:/m.test(frame)) continue;
        this.arrivals.push(at);
        this.statuses.push(/"status":"(\w+)"/.exec(frame)?.[1]);
      }
      this.#waiter?.();
    });
    body.on("error", (err: Error) => this.fail(err));
  }

  static async open(origin: string, path: string, token: string): Promise<TimedEventStream> {
    const pool = new Pool(origin, { connections: 1 });
    const res = await pool.request({ method: "GET", path, headers: { authorization: `Bearer ${token}`, accept: "text/event-stream" } });
    if (res.statusCode !== 200) throw new Error(`event stream answered ${res.statusCode}`);
    return new TimedEventStream(pool, res.body);
  }

  /** Resolves once `n` events have arrived; rejects after `timeoutMs`, or at once after `fail`. */
  waitFor(n: number, timeoutMs = 10_000): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiter = undefined;
        reject(new Error(`expected ${n} events, got ${this.arrivals.length}`));
      }, timeoutMs);
      const check = () => {
        if (this.#failure === undefined && this.arrivals.length < n) return;
        clearTimeout(timer);
        this.#waiter = undefined;
        if (this.#failure) reject(this.#failure);
        else resolve();
      };
      this.#waiter = check;
      check();
    });
  }

  /** Ends the current wait and every later one with `err` (the stream broke). */
  fail(err: Error): void {
    this.#failure ??= err;
    this.#waiter?.();
  }

  async close(): Promise<void> {
    this.body.destroy();
    await this.pool.destroy();
  }
}
