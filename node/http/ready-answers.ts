import type { IncomingMessage, RequestListener, ServerResponse } from "node:http";

/** One kept answer: its bytes, the route template it came from, and what it stays valid for. */
interface ReadyAnswer {
  readonly body: Buffer;
  readonly route: string;
  /** The store's read version the answer was built at (taken before its first read). */
  readonly version: number;
  /** The bearer token's expiry: the token still has to be valid when the answer is served again. */
  readonly expiresAtS: number;
  readonly bytes: number;
}

/** What the request envelope records for every answer, from the app or from here. */
export type AnswerRecorder = (answer: { requestId: string; method: string; route: string; status: number; seconds: number; ready?: boolean; direct?: boolean }) => void;

/**
 * Answers to the device API's hot reads (a primary's twin list, one twin, a secondary's
 * twinning), kept as bytes and sent again without running the app while nothing they were
 * built from can have changed. The key is the Host, the request target and the whole
 * Authorization header, so an answer only ever goes back to the same token asking the same
 * thing. An answer holds while:
 * - the store's read version is the one it was built at. The version moves with every write
 *   to subscribers or twins, so a toggle, a deactivation (which kills twin tokens) or a
 *   de-provisioning is seen by the next request, exactly as without this cache;
 * - the token has not expired (its signature, issuer and audience were checked when the answer
 *   was built; nothing else about a token changes).
 * Only 200 answers are kept; refusals always run the app. A version change empties the cache
 * (as the store's read caches do), and the total size is bounded (`maxBytes`, oldest first out).
 */
export class ReadyAnswers {
  readonly #version: () => number | undefined;
  readonly #nowMs: () => number;
  readonly #maxBytes: number;
  #seen: number | undefined;
  #bytes = 0;
  #entries = new Map<string, ReadyAnswer>();

  constructor(options: { version: () => number | undefined; nowMs: () => number; maxBytes: number }) {
    this.#version = options.version;
    this.#nowMs = options.nowMs;
    this.#maxBytes = options.maxBytes;
  }

  /**
   * The key of a request that may be answered from here: a bodiless GET with one Authorization
   * header. The Host header is part of it, as the app refuses a malformed one (400); a second
   * Authorization header is not, as Node's parsed headers keep only the first while the app sees
   * both (and refuses them, 401). A target with a query is not kept: the routes ignore queries,
   * so one client could otherwise fill the whole budget with one answer under many keys and push
   * everyone else's out.
   */
  static keyOf(req: IncomingMessage): string | undefined {
    if (req.method !== "GET" || req.url === undefined || req.url.includes("?")) return undefined;
    const h = req.headers;
    const authorization = h.authorization;
    if (authorization === undefined || h["transfer-encoding"] !== undefined || (h["content-length"] !== undefined && h["content-length"] !== "0")) return undefined;
    if (timesGiven(req.rawHeaders, "authorization") !== 1) return undefined;
    return `${h.host}\n${req.url}\n${authorization}`;
  }

  /** The store's version now, to be passed to `keep` (undefined: the store cannot tell, keep nothing). */
  version(): number | undefined {
    return this.#version();
  }

  take(key: string): ReadyAnswer | undefined {
    const version = this.#version();
    if (version === undefined) return undefined;
    if (version !== this.#seen) {
      this.#clear(version);
      return undefined;
    }
    const answer = this.#entries.get(key);
    if (answer === undefined) return undefined;
    if (answer.expiresAtS * 1000 <= this.#nowMs()) {
      this.#delete(key, answer);
      return undefined;
    }
    return answer;
  }

  /** Keeps a 200 answer built from reads taken at `version`; ignored when the store has moved on since. */
  keep(key: string, answer: { body: string; route: string; version: number; expiresAtS: number }): void {
    const version = this.#version();
    if (version === undefined || answer.version !== version) return;
    if (version !== this.#seen) this.#clear(version);
    const body = Buffer.from(answer.body);
    const bytes = body.length + key.length;
    if (bytes > this.#maxBytes) return;
    const old = this.#entries.get(key);
    if (old) this.#delete(key, old);
    while (this.#bytes + bytes > this.#maxBytes) {
      const [oldestKey, oldest] = this.#entries.entries().next().value as [string, ReadyAnswer];
      this.#delete(oldestKey, oldest);
    }
    this.#entries.set(key, { body, route: answer.route, version, expiresAtS: answer.expiresAtS, bytes });
    this.#bytes += bytes;
  }

  #delete(key: string, answer: ReadyAnswer): void {
    this.#entries.delete(key);
    this.#bytes -= answer.bytes;
  }

  #clear(version: number): void {
    this.#entries = new Map();
    this.#bytes = 0;
    this.#seen = version;
  }
}

/** How many times a request's raw headers name a header (`name` in lower case). */
export function timesGiven(raw: readonly string[], name: string): number {
  let seen = 0;
  for (let i = 0; i < raw.length; i += 2) if (raw[i]!.length === name.length && raw[i]!.toLowerCase() === name) seen += 1;
  return seen;
}

/**
 * The device listener: a request with a ready answer gets it here, with the same headers the
 * app sends (a fresh or echoed request id) and the same metrics and access log; every other
 * request goes to the app.
 */
export function answeringReady(
  answers: ReadyAnswers,
  requestIdOf: (given: string | undefined) => string,
  record: AnswerRecorder,
  app: RequestListener,
): RequestListener {
  return (req: IncomingMessage, res: ServerResponse) => {
    const key = ReadyAnswers.keyOf(req);
    const answer = key === undefined ? undefined : answers.take(key);
    if (answer === undefined) return app(req, res);
    const started = performance.now();
    const given = req.headers["x-request-id"];
    const requestId = requestIdOf(typeof given === "string" ? given : undefined);
    res.writeHead(200, ["content-type", "application/json", "x-request-id", requestId, "Content-Length", String(answer.body.length)]);
    res.end(answer.body);
    record({ requestId, method: "GET", route: answer.route, status: 200, seconds: (performance.now() - started) / 1000, ready: true });
  };
}
