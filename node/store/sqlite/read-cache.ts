/**
 * Reads of the request path (subscriber, twins of a primary, twin of a secondary, twin by id)
 * kept in memory between writes. Coherent by construction rather than by invalidating keys:
 * every entry belongs to the generation of its table it was read in, and any write to that
 * table starts a new generation (SqliteDatabase.generationOf), which empties the cache on the
 * next read. A deprovisioned subscriber or a deactivated twin is therefore never served from
 * the cache. Nothing read inside a transaction is kept (it could still be rolled back). Only
 * sound while this connection is the file's only writer: the store enables it with the
 * exclusive lock. Cached values are frozen, as they are shared between requests.
 */
export class ReadCache {
  readonly #generation: () => number;
  readonly #maxEntries: number;
  #seen = -1;
  #entries = new Map<string, unknown>();

  readonly #bypass: () => boolean;
  readonly #keepMisses: boolean;

  /**
   * `generation`: changes whenever the cached table may have been written; `bypass`: read
   * through, keep nothing; `keepMisses` (default true): keep `undefined` results too. Off where
   * unauthenticated callers choose the keys (they could fill the cache with misses).
   */
  constructor(options: { generation: () => number; bypass: () => boolean; maxEntries: number; keepMisses?: boolean }) {
    this.#generation = options.generation;
    this.#bypass = options.bypass;
    this.#maxEntries = options.maxEntries;
    this.#keepMisses = options.keepMisses ?? true;
  }

  /** The cached value of `key`, or `load()` (cached when the generation did not move meanwhile). */
  get<T>(key: string, load: () => T): T {
    if (this.#bypass()) return load();
    const generation = this.#generation();
    if (generation !== this.#seen) {
      this.#entries = new Map();
      this.#seen = generation;
    }
    if (this.#entries.has(key)) return this.#entries.get(key) as T;
    const value = deepFreeze(load());
    if (this.#generation() !== generation || (value === undefined && !this.#keepMisses) || key.length > MAX_KEY_LENGTH) return value;
    if (this.#entries.size >= this.#maxEntries) this.#entries.delete(this.#entries.keys().next().value as string);
    this.#entries.set(key, value);
    return value;
  }
}

/**
 * Longer keys are read through: the bound is on entries, so keys of any length (a long reference
 * in a request path) could otherwise hold far more memory than the bound suggests.
 */
const MAX_KEY_LENGTH = 256;

function deepFreeze<T>(value: T): T {
  if (value && typeof value === "object" && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const inner of Object.values(value)) deepFreeze(inner);
  }
  return value;
}
