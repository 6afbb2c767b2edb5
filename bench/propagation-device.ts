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

  /** The stamps of the toggles since the last call, in order. */
  stamps(): number[] {
    return this.#stamps.splice(0);
  }

  close(): Promise<void> {
    return this.#pool.close();
  }
}
