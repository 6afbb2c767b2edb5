/**
 * One at a time per key, in this process: the requests that share a clientCorrelator and wait on
 * a peer (a code from another operator, an activation across) run one after the other, so the
 * second finds the first's recorded result instead of asking the peer again. (Requests that
 * only touch the store are idempotent inside its transaction already.)
 */
export class KeyedLock {
  readonly #tails = new Map<string, Promise<void>>();

  async run<T>(key: string, work: () => Promise<T>): Promise<T> {
    const before = this.#tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((resolve) => (release = resolve));
    const tail = before.then(() => mine);
    this.#tails.set(key, tail);
    try {
      await before;
      return await work();
    } finally {
      release();
      if (this.#tails.get(key) === tail) this.#tails.delete(key);
    }
  }
}
