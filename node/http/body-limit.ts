import type { MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import { TwinningError } from "../errors/twinning-error.ts";

/** Bodies over the limit are refused with 413 SVC0002 before they are read whole (both listeners). */
export function limitBody(maxBytes: number): MiddlewareHandler {
  return bodyLimit({
    maxSize: maxBytes,
    onError: () => {
      throw new TwinningError("body_too_large", { variables: ["body"] });
    },
  });
}
