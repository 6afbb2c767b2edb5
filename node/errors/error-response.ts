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

/**
 * For requests Node's HTTP layer refuses before the app sees them (headers too large, a
 * request that does not arrive in time, a malformed request line): the raw HTTP answer, still
 * with the OMA body.
 */
export function rawErrorResponse(code: string | undefined): string {
  const [status, reason, part] = clientErrorOf(code);
  const body = JSON.stringify(errorBody(new TwinningError("invalid_input", { variables: [part], status })));
  return `HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`;
}

/** The status, reason phrase and part named of a request Node refused before the app (its parser's error code). */
export function clientErrorOf(code: string | undefined): [status: number, reason: string, part: string] {
  return code === "HPE_HEADER_OVERFLOW" ? [431, "Request Header Fields Too Large", "headers"] : code === "ERR_HTTP_REQUEST_TIMEOUT" ? [408, "Request Timeout", "request"] : [400, "Bad Request", "request"];
}

/** An error's answer: status, headers (lower-case names) and body, for any transport. */
export function errorAnswer(error: TwinningError): { status: number; headers: Record<string, string>; body: string } {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (error.retryAfterSeconds !== undefined) headers["retry-after"] = String(Math.max(1, Math.ceil(error.retryAfterSeconds)));
  if (error.status === 401) headers["www-authenticate"] = 'Bearer realm="twinning", error="invalid_token"';
  return { status: error.status, headers, body: JSON.stringify(errorBody(error)) };
}

export function errorResponse(error: TwinningError): Response {
  const { status, headers, body } = errorAnswer(error);
  return new Response(body, { status, headers });
}
