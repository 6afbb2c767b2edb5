import { Agent, type Dispatcher } from "undici";
import type { OutboxEntry } from "../store/store-port.ts";
import { boundedCall } from "../../peers/bounded-call.ts";
import { INTERNAL_TARGET, internalRefusingLookup, isInternalHostLiteral } from "./callback-target.ts";

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

/**
 * The callbacks' dispatcher: keep-alive connections, which go only to addresses checked when
 * they are made (internalRefusingLookup) unless private targets are allowed.
 */
export function callbackDispatcher(options: { allowPrivateTargets: boolean }): Agent {
  return new Agent({ keepAliveTimeout: 30_000, connections: 32, ...(options.allowPrivateTargets ? {} : { connect: { lookup: internalRefusingLookup } }) });
}

/** POSTs one callback notification (OMA REST NetAPI callback style) with a deadline; `dispatcher`: a callbackDispatcher. */
export function createCallbackSender(options: { dispatcher: Dispatcher; timeoutMs: number; allowPrivateTargets: boolean }) {
  return async function sendCallback(entry: OutboxEntry): Promise<void> {
    // An internal address is final: a literal one is refused here, a name that resolves to one
    // by the dispatcher's lookup when it connects (callbackDispatcher). A name that does not
    // resolve now (a DNS outage, a receiver being moved) fails the call and is tried again later.
    if (!options.allowPrivateTargets && isInternalHostLiteral(entry.target)) {
      throw new DeliveryError("callback address is internal", undefined, { permanent: true });
    }
    const { status, text } = await boundedCall(options.dispatcher, {
      url: entry.target,
      method: "POST",
      // Delivery is at least once (a lost answer, a crash before the completion commits): the
      // id is the same on every attempt of this notification to this subscription, so the
      // receiver can drop a repeat. The JSON body stays DESIGN's.
      headers: { "content-type": "application/json", "x-notification-delivery-id": String(entry.id) },
      body: entry.payload,
      timeoutMs: options.timeoutMs,
      maxBytes: MAX_CALLBACK_ANSWER_BYTES,
      // A receiver that has sent its status has answered: a body that then fails or stalls does
      // not make a delivered callback a failed one (it would be sent again).
      statusIsEnough: true,
    }).catch((error: unknown) => {
      if ((error as NodeJS.ErrnoException).code === INTERNAL_TARGET) throw new DeliveryError("callback address is internal", undefined, { cause: error, permanent: true });
      throw new DeliveryError(`callback unreachable: ${(error as Error).message ?? "error"}`.slice(0, 200), undefined, { cause: error });
    });
    if (status < 200 || status >= 300) {
      throw new DeliveryError(`callback answered ${status}: ${text.slice(0, 120)}`, status);
    }
  };
}
