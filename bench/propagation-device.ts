import { Pool } from "undici";

/**
 * Goal 3's primary device: sets a twin's status at A over one keep-alive connection, with
 * undici's `request` (as the mTLS baseline's client), stamping each request with
 * `performance.now()` just before handing it to undici. It runs in the bench's process, as the
 * secondary's event stream does, so their stamps share one clock. Each toggle waits for its
 * answer.
 */
export class PropagationDevice {
  readonly #pool: Pool;
  #stamps: number[] = [];

  constructor(
    origin: string,
    private readonly path: string,
    private readonly token: string,
  ) {
    this.#pool = new Pool(origin, { connections: 1 });
  }

  async toggle(status: "On" | "Off"): Promise<void> {
    this.#stamps.push(performance.now());
    const res = await this.#pool.request({ method: "PUT", path: this.path, headers: { authorization: `Bearer ${this.token}`, "content-type": "application/json" }, body: JSON.stringify({ status }) });
    await res.body.text();
    if (res.statusCode !== 200) throw new Error(`toggle answered ${res.statusCode}`);
  }

  /**
   * Runs `work` (the round trip's measurement, seconds long) while reading the twin once a
   * second on the same connection, so the connection is still the one the toggles used when they
   * resume. Left idle for longer than the keep-alive timeouts (undici's 4 s, the node's 5 s) it
   * was closed, and the next toggle opened a new one: A's HTTP path then deoptimised (V8's code
   * was specialised on one socket) and was compiled again during the measured toggles.
   */
  async keepConnectionWhile<T>(work: () => Promise<T>, twinPath: string): Promise<T> {
    let stopped = false;
    let wake = () => {};
    // A failed read is thrown once the work is done (not left unhandled while it runs).
    const reads = (async () => {
      while (!stopped) {
        await new Promise<void>((r) => {
          const timer = setTimeout(r, 1_000);
          wake = () => (clearTimeout(timer), r());
        });
        if (stopped) break;
        const res = await this.#pool.request({ method: "GET", path: twinPath, headers: { authorization: `Bearer ${this.token}` } });
        await res.body.text();
        if (res.statusCode !== 200) throw new Error(`reading the twin answered ${res.statusCode}`);
      }
    })().then(
      () => undefined,
      (error: unknown) => ({ error }),
    );
    try {
      return await work();
    } finally {
      stopped = true;
      wake();
      const failed = await reads;
      if (failed) throw failed.error;
    }
  }

  /** The stamps of the toggles since the last call, in order. */
  stamps(): number[] {
    return this.#stamps.splice(0);
  }

  close(): Promise<void> {
    return this.#pool.close();
  }
}
