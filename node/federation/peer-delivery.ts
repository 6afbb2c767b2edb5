import { DeliveryError } from "../notifications/callback-sender.ts";
import { randomUUID } from "node:crypto";
import type { BatchOutcome } from "../notifications/outbox-worker.ts";
import type { OutboxEntry } from "../store/store-port.ts";
import { answeredOk } from "../../peers/peer-client.ts";
import type { Federation, FederationMessage } from "./federation.ts";

/**
 * Delivers outbox entries to a peer (toggles, deactivations, compensations): signed, over the
 * warm mTLS connection. 2xx: done. 5xx, 429 or no answer: retried by the outbox with backoff.
 * Only a refusal of the message itself is final (400 invalid, 404 unknown twin): retrying
 * cannot change it. Everything else (401 while a rotated key propagates, 403 while the peer
 * list is updated, 409, 429, 5xx) is retried until acknowledged, as DESIGN requires.
 */
export function isFinalRefusal(status: number): boolean {
  return status === 400 || status === 404;
}

export interface PeerDeliveryOptions {
  readonly nowMs: () => number;
  /**
   * How long a 404 to a status message is retried rather than final. In an activation across
   * operators the secondary's node commits first and the primary's node only once it has the
   * answer, so the secondary's first toggles can reach the primary's node before its twin does.
   * That node commits its side, or has undone the peer's, within twice its call timeout.
   */
  readonly unknownTwinGraceMs: number;
}

const STATUS_MESSAGE = /^\/twins\/[^/]+\/status$/;

/** Final for this message, now: a status for a twin the peer may not have committed yet waits out the grace. */
function refusalIsFinal(status: number, message: FederationMessage, entry: OutboxEntry, o: PeerDeliveryOptions): boolean {
  if (status === 404 && message.method === "PUT" && STATUS_MESSAGE.test(message.path) && o.nowMs() - entry.createdAtMs < o.unknownTwinGraceMs) return false;
  return isFinalRefusal(status);
}

export function createPeerSender(federation: Federation, o: PeerDeliveryOptions) {
  return async function sendToPeer(entry: OutboxEntry): Promise<void> {
    const message = JSON.parse(entry.payload) as FederationMessage;
    let status: number;
    try {
      status = (await federation.send(entry.target, message)).status;
    } catch (error) {
      throw new DeliveryError(`peer ${entry.target}: ${(error as { detail?: string }).detail ?? "unreachable"}`.slice(0, 200), undefined, { cause: error });
    }
    if (answeredOk(status)) return;
    throw new DeliveryError(`peer ${entry.target} answered ${status}`, status, { permanent: refusalIsFinal(status, message, entry, o) });
  };
}

/**
 * Delivers consecutive entries of one peer lane: in one signed `POST /batch` when the peer
 * advertises the extension, else one request each (stopping at the first that must wait). A
 * batch the peer does not accept as a whole (no answer, an unsigned or refused answer: a body
 * limit, a cap on messages) is sent again one message per request, so the lane still moves.
 */
export function createPeerBatchSender(federation: Federation, o: PeerDeliveryOptions) {
  const single = createPeerSender(federation, o);
  const oneByOne = async (entries: OutboxEntry[]): Promise<BatchOutcome[]> => {
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
  };
  return async function sendBatchToPeer(entries: OutboxEntry[]): Promise<BatchOutcome[]> {
    const peer = entries[0]!.target;
    if (entries.length === 1 || !(await federation.supportsBatch(peer))) return oneByOne(entries);
    const messages = entries.map((e) => JSON.parse(e.payload) as FederationMessage);
    let answer;
    try {
      answer = await federation.send(peer, { method: "POST", path: "/batch", msgId: randomUUID(), body: { messages } });
    } catch {
      return oneByOne(entries);
    }
    if (answer.status !== 200 || !Array.isArray(answer.body?.results)) return oneByOne(entries);
    const results = answer.body.results as { msgId?: unknown; status?: unknown }[];
    return messages.map((m, i): BatchOutcome => {
      const r = results[i];
      // Results come in order; a result for another message is a peer bug: retry that one.
      if (!r || r.msgId !== m.msgId || typeof r.status !== "number") return { outcome: "retry", error: "missing result in batch answer" };
      if (answeredOk(r.status)) return { outcome: "delivered" };
      return { outcome: refusalIsFinal(r.status, m, entries[i]!, o) ? "permanent" : "retry", error: `peer ${peer} answered ${r.status}` };
    });
  };
}
