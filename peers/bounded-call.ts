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
  /** The error a body over `maxBytes` fails with (given the answer's status); without it, the answer's text stops at `maxBytes`. */
  readonly tooLarge?: (status: number) => Error;
  /**
   * For callbacks, whose receiver has answered once it has sent its status. A 2xx status ends
   * the call at once (the answer's text is empty): the rest of the body is read only so the
   * connection can be used again, for at most `bodyGraceMs`, then the connection is dropped; a
   * receiver that stalls its body cannot hold a delivery slot for the deadline. Another status
   * waits for its body (its text names the failure), and a body that then fails or does not
   * come in time does not fail the call: the answer carries the text read so far.
   */
  readonly statusIsEnough?: boolean;
  /** With statusIsEnough: how long the body after a 2xx status may take (default 1,000 ms, never past the deadline). */
  readonly bodyGraceMs?: number;
}

export interface BoundedAnswer {
  readonly status: number;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  readonly text: string;
}

/** See BoundedCall.bodyGraceMs. */
const STATUS_ONLY_BODY_GRACE_MS = 1_000;

const timedOut = () => new DOMException("The operation timed out.", "TimeoutError");

/**
 * An outgoing HTTP call (federation messages, peer JWKS, callbacks) with one deadline for the
 * whole of it and a bound on the answer's size. It dispatches on undici's handler API rather
 * than `request()`: the answer's chunks are gathered as they arrive, with no body stream, abort
 * signal or async resource per call, which took ~35–40 µs off each federation round trip here
 * (see docs/benchmark-history.md). The deadline's timer is cleared when the call ends.
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
    const answer = (): BoundedAnswer => ({ status, headers, text: chunks.length === 1 ? chunks[0]!.toString("utf8") : Buffer.concat(chunks).toString("utf8") });
    /**
     * Ends the call once. `stop`: the request is aborted here (from outside undici's parser:
     * the deadline, an error); from inside `onResponseData` the handler throws instead, so that
     * undici aborts the request and its parser stops at once.
     */
    const settle = (error: Error | undefined, stop: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (stop && error) controller?.abort(error);
      if (error === undefined || (call.statusIsEnough && status >= 200)) resolve(answer());
      else reject(error);
    };
    let grace: NodeJS.Timeout | undefined;
    const timer = setTimeout(() => settle(timedOut(), true), call.timeoutMs);
    timer.unref();
    const handler: Dispatcher.DispatchHandler = {
      onRequestStart(c) {
        controller = c;
        if (settled) c.abort(timedOut());
      },
      onResponseStart(c, statusCode, responseHeaders) {
        status = statusCode;
        headers = responseHeaders;
        if (call.statusIsEnough && statusCode >= 200 && statusCode < 300) {
          settle(undefined, false);
          // The deadline's timer is cleared: the rest of the body gets its own, shorter one.
          grace = setTimeout(() => c.abort(timedOut()), Math.min(call.bodyGraceMs ?? STATUS_ONLY_BODY_GRACE_MS, call.timeoutMs));
          grace.unref();
        }
      },
      onResponseData(_c, chunk) {
        if (settled) return;
        const room = call.maxBytes - bytes;
        bytes += chunk.length;
        if (bytes <= call.maxBytes) return void chunks.push(chunk);
        // Past the bound: the rest is never read (undici aborts the request on the throw).
        if (call.tooLarge) {
          const error = call.tooLarge(status);
          settle(error, false);
          throw error;
        }
        chunks.push(chunk.subarray(0, room));
        settle(undefined, false);
        throw new Error("answer cut at its size bound");
      },
      onResponseEnd() {
        clearTimeout(grace);
        settle(undefined, false);
      },
      onResponseError(_c, error) {
        clearTimeout(grace);
        settle(error, false);
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
      settle(error as Error, false);
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
