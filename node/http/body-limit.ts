import type { MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import { TwinningError } from "../errors/twinning-error.ts";

/**
 * Bodies over the limit are refused with 413 SVC0002 before they are read whole (both
 * listeners). A request without a body skips the check: hono's bodyLimit looks at
 * `c.req.raw`, which makes the Node adapter build a full Request, a cost GETs need not pay.
 */
export function limitBody(maxBytes: number): MiddlewareHandler {
  const limit = bodyLimit({
    maxSize: maxBytes,
    onError: () => {
      throw new TwinningError("body_too_large", { variables: ["body"] });
    },
  });
  return (c, next) => {
    const length = c.req.header("content-length");
    const chunked = c.req.header("transfer-encoding") !== undefined;
    if (!chunked && (length === undefined || length === "0")) return next();
    return limit(c, next);
  };
}
