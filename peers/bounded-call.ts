import type { Dispatcher } from "undici";

export interface BoundedCall {
  readonly url: string;
  readonly method: "GET" | "POST" | "PUT" | "DELETE";
  readonly headers?: Record<string, string>;
  readonly body?: string;
  /** One deadline for the whole call: connection, answer and body. */
  readonly timeoutMs: number;
  /** The answer's body is read up to this many bytes, and the rest never is (the connection is closed). */
  readonly maxBytes: number;
  /** The error a body over `maxBytes` fails with; without it, the answer's text stops at `maxBytes`. */
  readonly tooLarge?: () => Error;
}

export interface BoundedAnswer {
  readonly status: number;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  readonly text: string;
}

/**
 * An outgoing HTTP call (federation messages, peer JWKS, callbacks) with one deadline for the
 * whole of it and a bound on the answer's size. It dispatches on undici's handler API rather
 * than `request()`: the answer's chunks are gathered as they arrive, with no body stream, abort
 * signal or async resource per call, which took ~35–40 µs off each federation round trip here
 * (see README, Benchmarks). The deadline's timer is cleared when the call ends.
 */
export function boundedCall(dispatcher: Dispatcher, call: BoundedCall): Promise<BoundedAnswer> {
  return new Promise<BoundedAnswer>((resolve, reject) => {
    const { origin, pathname, search } = new URL(call.url);
    let controller: Dispatcher.DispatchController | undefined;
    let settled = false;
    let status = 0;
    let headers: BoundedAnswer["headers"] = {};
    const chunks: Buffer[] = [];
    let bytes = 0;
    const text = () => (chunks.length === 1 ? chunks[0]!.toString("utf8") : Buffer.concat(chunks).toString("utf8"));
    const settle = (error: Error | undefined) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (error === undefined) return resolve({ status, headers, text: text() });
      // Aborting mid-answer closes the connection: what is left of it is never read.
      controller?.abort(error);
      reject(error);
    };
    const timer = setTimeout(() => settle(new DOMException("The operation timed out.", "TimeoutError")), call.timeoutMs);
    timer.unref();
    const handler: Dispatcher.DispatchHandler = {
      onRequestStart(c) {
        controller = c;
        if (settled) c.abort(new DOMException("The operation timed out.", "TimeoutError"));
      },
      onResponseStart(_c, statusCode, responseHeaders) {
        status = statusCode;
        headers = responseHeaders;
      },
      onResponseData(_c, chunk) {
        if (settled) return;
        const room = call.maxBytes - bytes;
        bytes += chunk.length;
        if (bytes <= call.maxBytes) return void chunks.push(chunk);
        if (call.tooLarge) return settle(call.tooLarge());
        chunks.push(chunk.subarray(0, room));
        settle(undefined);
        controller?.abort(new Error("answer cut at its size bound"));
      },
      onResponseEnd() {
        settle(undefined);
      },
      onResponseError(_c, error) {
        settle(error);
      },
    };
    try {
      dispatcher.dispatch(
        {
          origin,
          path: `${pathname}${search}`,
          method: call.method,
          headers: call.headers ?? {},
          body: call.body ?? null,
          headersTimeout: call.timeoutMs,
          bodyTimeout: call.timeoutMs,
        },
        handler,
      );
    } catch (error) {
      settle(error as Error);
    }
  });
}

/**
 * Resolves once the calls dispatched in this turn of the event loop have been written to their
 * connections. undici writes a request on a reused keep-alive connection only in the turn's
 * check phase (setImmediate), once it has looked for a close from the server; this resolves in
 * the next turn's check phase, after those writes. For an answer that should leave after a
 * peer message started in the same turn.
 */
export function afterCallsOfThisTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(() => setImmediate(resolve)));
}
