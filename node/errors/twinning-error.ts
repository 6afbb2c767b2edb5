/**
 * The one error type of the node. Every failure a caller can see is a TwinningError with a
 * stable `code` from {@link ErrorCode}; the OMA messageId, HTTP status and public text come
 * from the catalogue below, so no handler builds an error body by hand (STYLE habit 3).
 */

export type ExceptionKind = "serviceException" | "policyException";

interface ErrorSpec {
  readonly messageId: string;
  readonly status: number;
  readonly kind: ExceptionKind;
  readonly text: string;
}

/** DESIGN.md "Errors": the OMA messageIds we answer with, and when. */
const catalogue = {
  service_error: { messageId: "SVC0001", status: 500, kind: "serviceException", text: "A service error occurred." },
  invalid_input: { messageId: "SVC0002", status: 400, kind: "serviceException", text: "Invalid input value for message part %1" },
  /** For the operator's admin token only: the reason is the operator's own file, never a secret. */
  invalid_peer_list: { messageId: "SVC0002", status: 400, kind: "serviceException", text: "Invalid input value for message part %1: %2" },
  internal_callback_target: {
    messageId: "SVC0002",
    status: 400,
    kind: "serviceException",
    text: "Invalid input value for message part %1: an internal address (loopback, private or reserved), which this node does not call back (its operator may allow them: limits.allowPrivateCallbackTargets)",
  },
  body_too_large: { messageId: "SVC0002", status: 413, kind: "serviceException", text: "Invalid input value for message part %1: the request body is larger than allowed" },
  not_found: { messageId: "SVC0002", status: 404, kind: "serviceException", text: "Unknown resource %1" },
  invalid_address: { messageId: "SVC0004", status: 400, kind: "serviceException", text: "No valid addresses provided in message part %1" },
  correlator_conflict: { messageId: "SVC0005", status: 409, kind: "serviceException", text: "Correlator %1 specified in message part %2 is a duplicate" },
  undefined_role: { messageId: "SVC1014", status: 400, kind: "serviceException", text: "Undefined twinning role %1" },
  invalid_token: { messageId: "SVC2003", status: 401, kind: "serviceException", text: "Missing, invalid, expired or revoked access token" },
  invalid_code: { messageId: "SVC3001", status: 400, kind: "serviceException", text: "Activation code invalid, used or expired" },
  peer_unreachable: { messageId: "SVC3002", status: 503, kind: "serviceException", text: "Peer operator %1 is unreachable or refused the request" },
  federation_rejected: { messageId: "SVC2003", status: 401, kind: "serviceException", text: "Signed federation message rejected: %1" },
  peer_not_allowed: { messageId: "POL0001", status: 403, kind: "policyException", text: "A policy error occurred: %1" },
  policy_error: { messageId: "POL0001", status: 403, kind: "policyException", text: "A policy error occurred: %1" },
  role_mixture: { messageId: "POL1037", status: 403, kind: "policyException", text: "Twinning role mixture not allowed: %1" },
  update_not_allowed: { messageId: "POL1038", status: 403, kind: "policyException", text: "Twinning data update not allowed: %1" },
  not_provisioned: { messageId: "POL2001", status: 403, kind: "policyException", text: "Subscriber is not provisioned for twinning" },
  access_denied: { messageId: "POL2003", status: 403, kind: "policyException", text: "Access denied: %1" },
  secondary_already_twinned: { messageId: "POL3001", status: 409, kind: "policyException", text: "The secondary device is already in a twinning relationship" },
  too_many_twins: { messageId: "POL3003", status: 403, kind: "policyException", text: "Too many twins for this primary (limit %1)" },
  too_many_attempts: { messageId: "POL3004", status: 429, kind: "policyException", text: "Too many failed activation attempts; retry after %1 seconds" },
  too_many_token_requests: { messageId: "POL3004", status: 429, kind: "policyException", text: "Too many failed token requests; retry after %1 seconds" },
  overloaded: { messageId: "SVC0001", status: 503, kind: "serviceException", text: "A service error occurred: too many requests at once; retry after %1 seconds" },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof catalogue;

export interface TwinningErrorOptions {
  /** Values for %1, %2 … in the public text (never secrets). */
  readonly variables?: readonly string[];
  /** Private detail for logs only; never sent to the caller. */
  readonly detail?: string;
  readonly cause?: unknown;
  /** Seconds for the Retry-After header (POL3004). */
  readonly retryAfterSeconds?: number;
  /** Overrides the catalogue status where the code allows a range (SVC0001 500/502). */
  readonly status?: number;
}

export class TwinningError extends Error {
  override readonly name = "TwinningError";
  readonly code: ErrorCode;
  readonly messageId: string;
  readonly status: number;
  readonly kind: ExceptionKind;
  readonly variables: readonly string[];
  readonly detail: string | undefined;
  readonly retryAfterSeconds: number | undefined;

  constructor(code: ErrorCode, options: TwinningErrorOptions = {}) {
    const spec: ErrorSpec = catalogue[code];
    super(spec.text, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.messageId = spec.messageId;
    this.status = options.status ?? spec.status;
    this.kind = spec.kind;
    this.variables = options.variables ?? [];
    this.detail = options.detail;
    this.retryAfterSeconds = options.retryAfterSeconds;
  }

  /** True for failures of ours (5xx), whose text and detail are never exposed. */
  get internal(): boolean {
    return this.status >= 500 && this.code === "service_error";
  }
}

export function isTwinningError(value: unknown): value is TwinningError {
  return value instanceof TwinningError;
}

/** 503 SVC3002 with Retry-After: the peer's outbox backlog is full (it has been unreachable a while). */
export function peerBacklogFull(operatorId: string, limit: number): TwinningError {
  return new TwinningError("peer_unreachable", { variables: [operatorId], detail: `${limit} messages already queued for this peer`, retryAfterSeconds: 60 });
}
