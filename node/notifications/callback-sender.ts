import { request, type Dispatcher } from "undici";
import type { OutboxEntry } from "../store/store-port.ts";
import { withDeadline } from "../../peers/deadline.ts";
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

/** POSTs one callback notification (OMA REST NetAPI callback style) with a deadline. */
export function createCallbackSender(options: { dispatcher: Dispatcher; timeoutMs: number; allowPrivateTargets: boolean }) {
  return async function sendCallback(entry: OutboxEntry): Promise<void> {
    // Again at send time: a name may resolve to an internal address now (DNS rebinding).
    if (!options.allowPrivateTargets && (await resolvesInternally(entry.target).catch(() => true))) {
      throw new DeliveryError("callback address is internal or does not resolve", undefined, { permanent: true });
    }
    const { statusCode, text } = await withDeadline(options.timeoutMs, async (signal) => {
      let response: Dispatcher.ResponseData;
      try {
        response = await request(entry.target, {
          method: "POST",
          dispatcher: options.dispatcher,
          headers: { "content-type": "application/json" },
          body: entry.payload,
          headersTimeout: options.timeoutMs,
          bodyTimeout: options.timeoutMs,
          signal,
        });
      } catch (error) {
        throw new DeliveryError(`callback unreachable: ${(error as Error).message ?? "error"}`.slice(0, 200), undefined, { cause: error });
      }
      return { statusCode: response.statusCode, text: await response.body.text().catch(() => "") };
    });
    if (statusCode < 200 || statusCode >= 300) {
      throw new DeliveryError(`callback answered ${statusCode}: ${text.slice(0, 120)}`, statusCode);
    }
  };
}
