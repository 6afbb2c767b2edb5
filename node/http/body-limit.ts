import type { IncomingMessage } from "node:http";
import type { MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import { TwinningError } from "../errors/twinning-error.ts";

const tooLarge = () => new TwinningError("body_too_large", { variables: ["body"] });
const JSON_TYPE = /^application\/([\w.-]+\+)?json$/i;

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
    if ((method === "POST" || method === "PUT" || method === "PATCH") && jsonOnly(c.req.path)) {
      const type = (c.req.header("content-type") ?? "").split(";")[0]!.trim();
      if (!JSON_TYPE.test(type)) throw new TwinningError("invalid_input", { variables: ["Content-Type"] });
    }
    if (!incoming) return fallback(c, next); // not on Node (e.g. app.request in a test)
    const text = (await bufferedBody(incoming, maxBytes)) ?? (await streamedBody(incoming, maxBytes));
    const cache = (c.req as unknown as { bodyCache: Record<string, Promise<unknown>> }).bodyCache;
    cache.text = Promise.resolve(text);
    try {
      // Malformed JSON is left to the validator, which answers 400 SVC0002 from the text.
      cache.json = Promise.resolve(JSON.parse(text));
    } catch {
      /* not JSON */
    }
    return next();
  };
}

/**
 * The body when it came whole with its headers (the usual small request): Node's parser
 * finishes the packet once this turn's synchronous work is done, so after one await the whole
 * message may be buffered, and one read takes it without an async iterator's round per chunk.
 */
async function bufferedBody(incoming: IncomingMessage, maxBytes: number): Promise<string | undefined> {
  if (!incoming.complete) await undefined;
  if (!incoming.complete || incoming.readableFlowing || incoming.readableLength > maxBytes) return undefined;
  const data = incoming.read() as Buffer | null;
  return data === null ? "" : data.toString("utf8");
}

/** The body as it streams in, refused as soon as it passes the limit. */
async function streamedBody(incoming: IncomingMessage, maxBytes: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of incoming as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > maxBytes) throw tooLarge();
      chunks.push(chunk);
    }
  } catch (error) {
    if (error instanceof TwinningError) throw error;
    // The client went away or stalled (Node answers 408 itself): a refused request, not a fault.
    throw new TwinningError("invalid_input", { variables: ["body"], detail: "the request body was not received" });
  }
  return Buffer.concat(chunks).toString("utf8");
}
