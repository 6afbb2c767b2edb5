/**
 * One at a time per key, in this process: the requests that share a clientCorrelator and wait on
 * a peer (a code from another operator, an activation across) run one after the other, so the
 * second finds the first's recorded result instead of asking the peer again. (Requests that
 * only touch the store are idempotent inside its transaction already.)
 */
export class KeyedLock {
  readonly #tails = new Map<string, Promise<void>>();

  /**
   * Runs `work` once every earlier holder of `key` has finished. With `maxWaitMs`, a caller that
   * would wait longer gives up with LockWaitTimeout (and takes its place in no one's way).
   */
  async run<T>(key: string, work: () => Promise<T>, maxWaitMs?: number): Promise<T> {
    const before = this.#tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((resolve) => (release = resolve));
    const tail = before.then(() => mine);
    this.#tails.set(key, tail);
    try {
      if (maxWaitMs === undefined) await before;
      else await withinWait(before, maxWaitMs);
      return await work();
    } finally {
      release();
      if (this.#tails.get(key) === tail) this.#tails.delete(key);
    }
  }
}

/** A caller that waited its `maxWaitMs` for the key and gave up. */
export class LockWaitTimeout extends Error {
  override readonly name = "LockWaitTimeout";
}

function withinWait(before: Promise<void>, maxWaitMs: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new LockWaitTimeout(`waited ${maxWaitMs} ms for an earlier holder`)), maxWaitMs);
  });
  return Promise.race([before, late]).finally(() => clearTimeout(timer));
}
