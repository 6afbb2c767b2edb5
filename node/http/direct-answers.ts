import type { IncomingMessage, RequestListener, ServerResponse } from "node:http";
import type { z } from "zod";
import { errorAnswer } from "../errors/error-response.ts";
import type { TwinningError } from "../errors/twinning-error.ts";
import type { NodeContext } from "../service/node-context.ts";
import type { Principal, Scope } from "../tokens/scopes.ts";
import { authenticate } from "./authenticate.ts";
import { readBody } from "./body-limit.ts";
import { timesGiven, type AnswerRecorder } from "./ready-answers.ts";
import { JSON_REQUEST, jsonText, parsed } from "./request-check.ts";

/** What a direct route's answer is made from: the same inputs its app route hands its handler. */
export interface DirectInput {
  readonly principal: Principal;
  /** Path parameters, decoded and validated by the route's schema. */
  readonly params: Record<string, string>;
  /** The JSON body, validated by the route's schema. */
  readonly body: unknown;
}

export interface DirectRouteSpec {
  readonly method: "put";
  /** The route's path as the OpenAPI document has it (`/a/{addr}/b`). */
  readonly path: string;
  /** The route template its answers are counted and logged under (as the app's). */
  readonly route: string;
  readonly scopes: readonly Scope[];
  readonly params: z.ZodType;
  readonly body: z.ZodType;
  /** The 200 answer's body; a thrown error is answered as the app answers it. */
  readonly answer: (input: DirectInput) => Promise<unknown>;
}

interface DirectRoute extends DirectRouteSpec {
  readonly pattern: RegExp;
  readonly names: readonly string[];
}

/**
 * A path segment taken here: unreserved characters, `:`, `+`, `@` and percent escapes. Anything
 * else (a query, a fragment, a dot segment, an escaped `.` or `%`) goes to the app, which
 * normalises such targets with a URL parser first.
 */
const SEGMENT = "([A-Za-z0-9._~:+@%-]+)";
const UNSAFE_ESCAPE = /%(2e|25)/i;
const DOT_SEGMENT = /^\.\.?$/;
/** A Host @hono/node-server takes as it is, without a URL parser (its `reValidHost`). */
const PLAIN_HOST = /^[a-z0-9._-]+(?::(?:[1-5]\d{3,4}|[6-9]\d{3}))?$/;
const DIGITS = /^\d+$/;

/**
 * The device API's hottest writes (toggling a twin, by the primary or the secondary), answered
 * on node:http before the app: @hono/node-server's Request and the app's chain of middleware
 * cost more than the whole toggle's store work (measured: ~25 µs of ~88 per toggle). Each direct
 * route is registered with its app route (addDirectRoute) and made of the same parts: the same
 * authentication, path and body schemas, answer function, error answers, request ids, metrics
 * and access log. It takes only requests that are plainly well formed on the wire:
 * - the route's method, and a target that is the route's path with plain segments, no query;
 * - a Host the app takes as it is, at most one Authorization header, one Content-Type, which is JSON,
 *   and a Content-Length within the body limit (no Transfer-Encoding).
 * Every other request goes to the app, unchanged. Once taken, every outcome, refusals
 * included, is answered as the app answers it: the tests send the same requests both ways and
 * compare the answers.
 */
export class DirectRoutes {
  readonly #routes: DirectRoute[] = [];

  add(spec: DirectRouteSpec): void {
    const names: string[] = [];
    const source = spec.path.replace(/[.*+?^$()|[\]\\]/g, "\\$&").replace(/{(\w+)}/g, (_, name: string) => {
      names.push(name);
      return SEGMENT;
    });
    this.#routes.push({ ...spec, pattern: new RegExp(`^${source}$`), names });
  }

  /** The route this request may be answered by here, with its decoded path parameters. */
  match(req: IncomingMessage, maxBodyBytes: number): { route: DirectRoute; params: Record<string, string> } | undefined {
    const target = req.url ?? "";
    if (this.#routes.length === 0 || UNSAFE_ESCAPE.test(target)) return undefined;
    const h = req.headers;
    const length = h["content-length"];
    if (length === undefined || !DIGITS.test(length) || Number(length) > maxBodyBytes || h["transfer-encoding"] !== undefined) return undefined;
    if (h.host === undefined || !PLAIN_HOST.test(h.host)) return undefined;
    const type = h["content-type"];
    if (type === undefined || !JSON_REQUEST.test(type)) return undefined;
    if (timesGiven(req.rawHeaders, "authorization") > 1 || timesGiven(req.rawHeaders, "content-type") !== 1) return undefined;
    const method = req.method?.toLowerCase();
    for (const route of this.#routes) {
      if (route.method !== method) continue;
      const m = route.pattern.exec(target);
      if (!m) continue;
      const params: Record<string, string> = {};
      for (const [i, name] of route.names.entries()) {
        const segment = m[i + 1]!;
        if (DOT_SEGMENT.test(segment)) return undefined;
        try {
          params[name] = decodeURIComponent(segment);
        } catch {
          return undefined; // a malformed escape: the app decodes what it can
        }
      }
      return { route, params };
    }
    return undefined;
  }
}

/**
 * The device listener's direct routes: a request one of them takes is answered here, every
 * other one goes to `app`.
 */
export function answeringDirect(
  routes: DirectRoutes,
  options: {
    ctx: NodeContext;
    maxBodyBytes: number;
    requestIdOf: (given: string | undefined) => string;
    record: AnswerRecorder;
    refusal: (requestId: string, error: unknown) => TwinningError;
  },
  app: RequestListener,
): RequestListener {
  return (req: IncomingMessage, res: ServerResponse) => {
    const found = routes.match(req, options.maxBodyBytes);
    if (found === undefined) return app(req, res);
    answer(found.route, found.params, req, res, options).catch((error: unknown) => {
      // Only the answer's own bookkeeping can fail here (a refusal is answered above).
      options.ctx.logger.error({ err: error }, "direct answer failed");
      res.destroy();
    });
  };
}

async function answer(
  route: DirectRoute,
  raw: Record<string, string>,
  req: IncomingMessage,
  res: ServerResponse,
  o: Parameters<typeof answeringDirect>[1],
): Promise<void> {
  const started = performance.now();
  const given = req.headers["x-request-id"];
  const requestId = o.requestIdOf(typeof given === "string" ? given : undefined);
  let status = 200;
  let text: string;
  let headers: Record<string, string> = { "content-type": "application/json" };
  // In the app's order: the body (read before authentication there too), the token, then the
  // path parameters and the body against their schemas.
  try {
    const body = await readBody(req, o.maxBodyBytes);
    const principal = await authenticate(o.ctx, req.headers.authorization, route.scopes);
    const params = parsed(route.params, raw) as Record<string, string>;
    text = JSON.stringify(await route.answer({ principal, params, body: parsed(route.body, jsonText(body)) }));
  } catch (error) {
    const refused = errorAnswer(o.refusal(requestId, error));
    ({ status, headers, body: text } = refused);
  }
  if (!res.headersSent && !res.destroyed) {
    res.writeHead(status, { ...headers, "x-request-id": requestId, "content-length": String(Buffer.byteLength(text)) });
    res.end(text);
  }
  o.record({ requestId, method: req.method!, route: route.route, status, seconds: (performance.now() - started) / 1000, direct: true });
}
