import { createLocalJWKSet, errors, type JSONWebKeySet, type JWTVerifyGetKey } from "jose";
import { getGlobalDispatcher, type Dispatcher } from "undici";
import { boundedCall } from "./bounded-call.ts";

export interface RemoteJwksOptions {
  /** The peer's JWKS URL (from our own peer list). */
  readonly url: string;
  /** Keys older than this are refreshed in the background; until then, and if that fails, the last ones serve. */
  readonly maxAgeMs?: number;
  /** After a fetch (failed or not), no other fetch for an unknown kid before this. */
  readonly cooldownMs?: number;
  readonly timeoutMs?: number;
  /** A bigger answer is refused (and the last keys kept). */
  readonly maxBytes?: number;
  readonly maxKeys?: number;
  /** The connection to fetch over (the federation's mutual TLS); default undici's global dispatcher. */
  readonly dispatcher?: () => Dispatcher;
}

/**
 * A peer's signing keys from its JWKS URL. Unlike jose's remote set, the last good keys keep
 * serving while the endpoint is down (a refresh that fails changes nothing), a refresh never
 * holds a message up once keys are known, and the answer is bounded in time, bytes and keys.
 * An unknown kid (a rotation) fetches again, at most once per cooldown.
 */
export class RemoteJwks {
  readonly #o: Required<RemoteJwksOptions>;
  #keys: JWTVerifyGetKey | undefined;
  #fetchedAtMs = Number.NEGATIVE_INFINITY;
  #attemptedAtMs = Number.NEGATIVE_INFINITY;
  #pending: Promise<void> | undefined;

  constructor(options: RemoteJwksOptions) {
    this.#o = { maxAgeMs: 600_000, cooldownMs: 30_000, timeoutMs: 5_000, maxBytes: 65_536, maxKeys: 20, dispatcher: getGlobalDispatcher, ...options };
  }

  get url(): string {
    return this.#o.url;
  }

  readonly getKey: JWTVerifyGetKey = async (header, token) => {
    const now = Date.now();
    if (!this.#keys) await this.#refresh();
    else if (now - this.#fetchedAtMs > this.#o.maxAgeMs && now - this.#attemptedAtMs > this.#o.cooldownMs) void this.#refresh().catch(() => undefined);
    try {
      return await this.#keys!(header, token);
    } catch (error) {
      if (!(error instanceof errors.JWKSNoMatchingKey)) throw error;
      // A fetch under way (another message's unknown kid, or the background refresh) may bring
      // this kid: wait for it rather than refuse within its cooldown.
      if (this.#pending) await this.#pending.catch(() => undefined);
      else if (Date.now() - this.#attemptedAtMs < this.#o.cooldownMs) throw error;
      else await this.#refresh().catch(() => undefined);
      return this.#keys!(header, token);
    }
  };

  /** One fetch at a time; on failure the keys stay as they were (and the error is thrown). */
  #refresh(): Promise<void> {
    if (this.#pending) return this.#pending;
    if (this.#keys === undefined && Date.now() - this.#attemptedAtMs < this.#o.cooldownMs) {
      return Promise.reject(new Error("peer JWKS unavailable (cooling down after a failed fetch)"));
    }
    this.#attemptedAtMs = Date.now();
    this.#pending = this.#fetch()
      .then((jwks) => {
        this.#keys = createLocalJWKSet(jwks);
        this.#fetchedAtMs = Date.now();
      })
      .finally(() => (this.#pending = undefined));
    return this.#pending;
  }

  async #fetch(): Promise<JSONWebKeySet> {
    const o = this.#o;
    const { status, text } = await boundedCall(o.dispatcher(), {
      url: o.url,
      method: "GET",
      timeoutMs: o.timeoutMs,
      maxBytes: o.maxBytes,
      // A refusal is named by its status, whatever its size.
      tooLarge: (status) => new Error(status === 200 ? `peer JWKS larger than ${o.maxBytes} bytes` : `peer JWKS answered ${status}`),
    });
    if (status !== 200) throw new Error(`peer JWKS answered ${status}`);
    const jwks = JSON.parse(text) as { keys?: unknown };
    if (!Array.isArray(jwks?.keys) || jwks.keys.length === 0 || jwks.keys.length > o.maxKeys) throw new Error(`peer JWKS must hold 1 to ${o.maxKeys} keys`);
    return jwks as JSONWebKeySet;
  }
}
