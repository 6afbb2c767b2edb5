import { DeliveryError } from "../notifications/callback-sender.ts";
import type { OutboxEntry } from "../store/store-port.ts";
import type { Federation, FederationMessage } from "./federation.ts";

/**
 * Delivers one outbox entry to a peer (toggles, deactivations, compensations): signed, over the
 * warm mTLS connection. 2xx: done. 5xx, 429 or no answer: retried by the outbox with backoff.
 * Any other signed refusal is final: retrying cannot change it, so it becomes a dead letter.
 */
export function createPeerSender(federation: Federation) {
  return async function sendToPeer(entry: OutboxEntry): Promise<void> {
    const message = JSON.parse(entry.payload) as FederationMessage;
    let status: number;
    try {
      status = (await federation.send(entry.target, message)).status;
    } catch (error) {
      throw new DeliveryError(`peer ${entry.target}: ${(error as { detail?: string }).detail ?? "unreachable"}`.slice(0, 200), undefined, { cause: error });
    }
    if (status >= 200 && status < 300) return;
    throw new DeliveryError(`peer ${entry.target} answered ${status}`, status, { permanent: status < 500 && status !== 429 });
  };
}
