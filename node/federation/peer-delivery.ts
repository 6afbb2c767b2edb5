import { DeliveryError } from "../notifications/callback-sender.ts";
import { randomUUID } from "node:crypto";
import type { BatchOutcome } from "../notifications/outbox-worker.ts";
import type { OutboxEntry } from "../store/store-port.ts";
import type { Federation, FederationMessage } from "./federation.ts";

/**
 * Delivers one outbox entry to a peer (toggles, deactivations, compensations): signed, over the
 * warm mTLS connection. 2xx: done. 5xx, 429 or no answer: retried by the outbox with backoff.
 * Any other signed refusal is final: retrying cannot change it, so it becomes a dead letter.
 */
/**
 * Only a refusal of the message itself is final (400 invalid, 404 unknown twin): retrying
 * cannot change it. Everything else (401 while a rotated key propagates, 403 while the peer
 * list is updated, 409, 429, 5xx) is retried until acknowledged, as DESIGN requires.
 */
export function isFinalRefusal(status: number): boolean {
  return status === 400 || status === 404;
}

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
    throw new DeliveryError(`peer ${entry.target} answered ${status}`, status, { permanent: isFinalRefusal(status) });
  };
}

const outcomeOf = (status: number, what: string): BatchOutcome =>
  status >= 200 && status < 300 ? { outcome: "delivered" } : { outcome: isFinalRefusal(status) ? "permanent" : "retry", error: `${what} answered ${status}` };

/**
 * Delivers consecutive entries of one peer lane: in one signed `POST /batch` when the peer
 * advertises the extension, else one request each (stopping at the first that must wait).
 */
export function createPeerBatchSender(federation: Federation) {
  const single = createPeerSender(federation);
  return async function sendBatchToPeer(entries: OutboxEntry[]): Promise<BatchOutcome[]> {
    const peer = entries[0]!.target;
    if (entries.length === 1 || !(await federation.supportsBatch(peer))) {
      const outcomes: BatchOutcome[] = [];
      for (const entry of entries) {
        try {
          await single(entry);
          outcomes.push({ outcome: "delivered" });
        } catch (error) {
          const e = error as DeliveryError;
          outcomes.push({ outcome: e.permanent ? "permanent" : "retry", error: e.message });
          if (!e.permanent) break;
        }
      }
      return outcomes;
    }
    const messages = entries.map((e) => JSON.parse(e.payload) as FederationMessage);
    let answer;
    try {
      answer = await federation.send(peer, { method: "POST", path: "/batch", msgId: randomUUID(), body: { messages } });
    } catch (error) {
      throw new DeliveryError(`peer ${peer}: ${(error as { detail?: string }).detail ?? "unreachable"}`.slice(0, 200), undefined, { cause: error });
    }
    if (answer.status !== 200 || !Array.isArray(answer.body?.results)) {
      throw new DeliveryError(`peer ${peer} answered the batch with ${answer.status}`, answer.status);
    }
    const results = answer.body.results as { msgId?: unknown; status?: unknown }[];
    return messages.map((m, i) => {
      const r = results[i];
      // Results come in order; a result for another message is a peer bug: retry that one.
      if (!r || r.msgId !== m.msgId || typeof r.status !== "number") return { outcome: "retry", error: "missing result in batch answer" };
      return outcomeOf(r.status, `peer ${peer}`);
    });
  };
}
