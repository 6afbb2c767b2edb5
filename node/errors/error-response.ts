import { HTTPException } from "hono/http-exception";
import { TwinningError, isTwinningError } from "./twinning-error.ts";

export interface OmaErrorBody {
  requestError: Partial<
    Record<"serviceException" | "policyException", { messageId: string; text: string; variables: string[] }>
  >;
}

/**
 * Translates anything thrown by a handler into a TwinningError: library errors are mapped at
 * this edge and kept as `cause`; whatever is unknown becomes SVC0001 with no detail exposed.
 */
export function toTwinningError(error: unknown): TwinningError {
  if (isTwinningError(error)) return error;
  if (error instanceof HTTPException) {
    // hono's validator and media-type gate (malformed JSON, wrong Content-Type).
    if (error.status === 415) return new TwinningError("invalid_input", { variables: ["Content-Type"], cause: error });
    if (error.status === 413) return new TwinningError("body_too_large", { variables: ["body"], cause: error });
    if (error.status >= 400 && error.status < 500) {
      return new TwinningError("invalid_input", { variables: ["body"], detail: error.message, cause: error });
    }
  }
  return new TwinningError("service_error", { cause: error, detail: error instanceof Error ? error.message : String(error) });
}

/** The public text with %1, %2 … filled from the variables. */
function render(error: TwinningError): string {
  return error.message.replace(/%(\d)/g, (_, n: string) => error.variables[Number(n) - 1] ?? "");
}

/** The only place an error becomes a response body (DESIGN.md "Errors"). */
export function errorBody(error: TwinningError): OmaErrorBody {
  return {
    requestError: {
      [error.kind]: {
        messageId: error.messageId,
        text: error.internal ? "A service error occurred." : render(error),
        variables: error.internal ? [] : [...error.variables],
      },
    },
  };
}

export function errorResponse(error: TwinningError): Response {
  const headers = new Headers({ "content-type": "application/json" });
  if (error.retryAfterSeconds !== undefined) headers.set("retry-after", String(Math.max(1, Math.ceil(error.retryAfterSeconds))));
  if (error.status === 401) headers.set("www-authenticate", 'Bearer realm="twinning", error="invalid_token"');
  return new Response(JSON.stringify(errorBody(error)), { status: error.status, headers });
}
