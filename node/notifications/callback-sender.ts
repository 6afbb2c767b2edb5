import type { Dispatcher } from "undici";
import type { OutboxEntry } from "../store/store-port.ts";
import { boundedCall } from "../../peers/bounded-call.ts";
import { resolvesInternally } from "./callback-target.ts";

/** A failed delivery: the receiver's status and a shortened body, never our payload. */
export class DeliveryError extends Error {
  override readonly name = "DeliveryError";
  /** True when retrying cannot succeed (a definite refusal): the entry becomes a dead letter. */
  readonly permanent: boolean;
  constructor(
    message: string,
    readonly status: number | undefined,
    options: { cause?: unknown; permanent?: boolean } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.permanent = options.permanent ?? false;
  }
}

/** A callback receiver's answer is read up to this many bytes: only its start is kept, for an error. */
const MAX_CALLBACK_ANSWER_BYTES = 4_096;

/** POSTs one callback notification (OMA REST NetAPI callback style) with a deadline. */
export function createCallbackSender(options: { dispatcher: Dispatcher; timeoutMs: number; allowPrivateTargets: boolean }) {
  return async function sendCallback(entry: OutboxEntry): Promise<void> {
    // Again at send time: a name may resolve to an internal address now. That is final; a name
    // that does not resolve now (a DNS outage, a receiver being moved) is tried again later. The
    // connection itself goes only to addresses checked once more (internalRefusingLookup).
    if (!options.allowPrivateTargets) {
      const internal = await resolvesInternally(entry.target).catch((error: unknown) => {
        throw new DeliveryError(`callback host does not resolve: ${(error as NodeJS.ErrnoException).code ?? "error"}`, undefined, { cause: error });
      });
      if (internal) throw new DeliveryError("callback address is internal", undefined, { permanent: true });
    }
    const { status, text } = await boundedCall(options.dispatcher, {
      url: entry.target,
      method: "POST",
      headers: { "content-type": "application/json" },
      body: entry.payload,
      timeoutMs: options.timeoutMs,
      maxBytes: MAX_CALLBACK_ANSWER_BYTES,
      // A receiver that has sent its status has answered: a body that then fails or stalls does
      // not make a delivered callback a failed one (it would be sent again).
      statusIsEnough: true,
    }).catch((error: unknown) => {
      throw new DeliveryError(`callback unreachable: ${(error as Error).message ?? "error"}`.slice(0, 200), undefined, { cause: error });
    });
    if (status < 200 || status >= 300) {
      throw new DeliveryError(`callback answered ${status}: ${text.slice(0, 120)}`, status);
    }
  };
}
