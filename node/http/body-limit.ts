import type { IncomingMessage } from "node:http";
import type { MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import { TwinningError } from "../errors/twinning-error.ts";

const tooLarge = () => new TwinningError("body_too_large", { variables: ["body"] });
/** A JSON media type, with or without a structured suffix (`application/merge-patch+json`). */
export const JSON_MEDIA_TYPE = /^application\/([\w.-]+\+)?json$/i;

/**
 * Reads a request body once, refusing it with 413 SVC0002 as soon as it passes the limit
 * (both listeners). On Node it reads the IncomingMessage directly and primes hono's body
 * cache (text, and JSON when it parses), so neither validators nor handlers make the adapter
 * build a WHATWG Request and stream for it. Bodiless requests pass straight through.
 * `jsonOnly(path)`: JSON APIs take JSON; any other body there is SVC0002 naming Content-Type.
 */
export function limitBody(maxBytes: number, jsonOnly: (path: string) => boolean = () => false): MiddlewareHandler {
  const fallback = bodyLimit({
    maxSize: maxBytes,
    onError: () => {
      throw tooLarge();
    },
  });
  return async (c, next) => {
    const length = c.req.header("content-length");
    const chunked = c.req.header("transfer-encoding") !== undefined;
    if (!chunked && (length === undefined || length === "0")) return next();
    if (length !== undefined && Number(length) > maxBytes) throw tooLarge();
    const incoming = (c.env as { incoming?: IncomingMessage } | undefined)?.incoming;
    const method = c.req.method;
    const isJson = JSON_MEDIA_TYPE.test((c.req.header("content-type") ?? "").split(";")[0]!.trim());
    if (!isJson && (method === "POST" || method === "PUT" || method === "PATCH") && jsonOnly(c.req.path)) {
      throw new TwinningError("invalid_input", { variables: ["Content-Type"] });
    }
    if (!incoming) return fallback(c, next); // not on Node (e.g. app.request in a test)
    const text = await readBody(incoming, maxBytes);
    const cache = (c.req as unknown as { bodyCache: Record<string, Promise<unknown>> }).bodyCache;
    cache.text = Promise.resolve(text);
    // Parsed only when declared JSON (a federation message is a JWS: trying it would cost a
    // thrown SyntaxError per message). Malformed JSON is left to the validator, which answers
    // 400 SVC0002 from the text.
    if (isJson) {
      try {
        cache.json = Promise.resolve(JSON.parse(text));
      } catch {
        /* not JSON */
      }
    }
    return next();
  };
}

/**
 * The body, refused as soon as it passes the limit. Node parses a request's body only after
 * the callback that announced its headers (where this runs) has returned, so the body is
 * awaited through the stream's events (cheaper per request than an async iterator); it is
 * read at once when already complete and buffered. The listeners are module functions that
 * find their read on the request, so a request creates no closures for them.
 */
export function readBody(incoming: IncomingMessage, maxBytes: number): Promise<string> {
  if (incoming.complete && !incoming.readableFlowing && incoming.readableLength <= maxBytes) {
    const data = incoming.read() as Buffer | null;
    return Promise.resolve(data === null ? "" : data.toString("utf8"));
  }
  if (incoming.readableEnded) return Promise.resolve("");
  return new Promise((resolve, reject) => {
    (incoming as Reading)[READ] = { chunks: [], size: 0, maxBytes, resolve, reject };
    incoming.on("data", onBodyData).on("end", onBodyEnd).on("error", onBodyFailure).on("close", onBodyFailure);
  });
}

const READ = Symbol("body read");
type Reading = IncomingMessage & {
  [READ]?: { chunks: Buffer[]; size: number; readonly maxBytes: number; resolve(text: string): void; reject(error: unknown): void } | undefined;
};

function onBodyData(this: Reading, chunk: Buffer): void {
  const read = this[READ]!;
  read.size += chunk.length;
  if (read.size > read.maxBytes) settleBody(this, tooLarge());
  else read.chunks.push(chunk);
}

function onBodyEnd(this: Reading): void {
  settleBody(this);
}

/** The client went away or stalled (Node answers 408 itself): a refused request, not a fault. */
function onBodyFailure(this: Reading): void {
  settleBody(this, new TwinningError("invalid_input", { variables: ["body"], detail: "the request body was not received" }));
}

function settleBody(incoming: Reading, error?: TwinningError): void {
  const read = incoming[READ];
  if (read === undefined) return;
  incoming[READ] = undefined;
  incoming.off("data", onBodyData).off("end", onBodyEnd).off("error", onBodyFailure).off("close", onBodyFailure);
  if (error !== undefined) {
    incoming.pause();
    return read.reject(error);
  }
  read.resolve(read.chunks.length === 1 ? read.chunks[0]!.toString("utf8") : Buffer.concat(read.chunks).toString("utf8"));
}
