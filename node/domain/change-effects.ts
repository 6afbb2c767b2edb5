import { randomUUID } from "node:crypto";
import { draftFor, type NotificationDraft, type NotificationType } from "./notification.ts";
import type { Twin, TwinRole } from "./twin.ts";

/** A federation message to write to the outbox with the change that causes it. */
export interface PeerMessageDraft {
  readonly operatorId: string;
  readonly method: "PUT" | "DELETE" | "POST";
  readonly path: string;
  readonly msgId: string;
  readonly body: unknown;
  /**
   * A lane of its own among the peer's (`peer:<operatorId>:<subLane>`), for a message that must
   * not wait behind the others; by default the peer's one lane (`peer:<operatorId>`), in which
   * order of effect holds. Every lane of a peer is named so: its backlog is counted by name.
   */
  readonly subLane?: string;
}

export interface ChangeEffects {
  readonly notifications: readonly NotificationDraft[];
  readonly peerMessages: readonly PeerMessageDraft[];
}

export type ChangeKind = "status" | "deactivation" | "activation";

const TYPE: Record<ChangeKind, NotificationType> = {
  status: "twinningStatusNotification",
  deactivation: "twinningDeactivatedNotification",
  activation: "twinningActivatedNotification",
};

/**
 * Who hears about a change (HLF-PD-007, HLF-SD-008, HLF-IC-005, HLF-IC-007): the other side
 * of the twin. If that side is served here, its subscribers are notified; if it is another
 * operator's subscriber, the change goes to that operator, whose node notifies it. Changes
 * made by the peer (`fromPeer`) are only ever notified locally, never sent back.
 */
export function effectsOfChange(kind: ChangeKind, twin: Twin, changedBy: TwinRole, ownOperatorId: string | undefined, nowMs: number, fromPeer = false): ChangeEffects {
  const draft = draftFor(TYPE[kind], twin, changedBy, nowMs);
  const recipientOperator = draft.recipientRole === "primary" ? twin.primaryOperatorId : twin.secondaryOperatorId;
  if (ownOperatorId === undefined || recipientOperator === ownOperatorId) return { notifications: [draft], peerMessages: [] };
  if (fromPeer || kind === "activation") return { notifications: [], peerMessages: [] };
  const message: PeerMessageDraft =
    kind === "status"
      ? { operatorId: recipientOperator, method: "PUT", path: `/twins/${twin.twinId}/status`, msgId: randomUUID(), body: { status: twin.status, version: twin.version, changedBy } }
      : { operatorId: recipientOperator, method: "DELETE", path: `/twins/${twin.twinId}`, msgId: randomUUID(), body: { changedBy } };
  return { notifications: [], peerMessages: [message] };
}

/** HLF-IC-005 convergence: the last-writer-wins order of (version, origin operator). */
export function isNewerStatus(incoming: { version: number; origin: string }, current: { version: number; origin: string }): boolean {
  return incoming.version > current.version || (incoming.version === current.version && incoming.origin > current.origin);
}
