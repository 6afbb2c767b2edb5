import type { Twin, TwinRole, TwinStatus } from "./twin.ts";

/** DESIGN "Notifications": the three notification types a subscriber can receive. */
export type NotificationType =
  | "twinningStatusNotification"
  | "twinningActivatedNotification"
  | "twinningDeactivatedNotification";

export interface NotificationContent {
  readonly twinId: string;
  readonly primaryAddress: string;
  readonly secondaryAddress: string;
  /** The twin's status at the change; a deactivation keeps the last one (the type says it ended). */
  readonly status: TwinStatus;
  readonly changedBy: TwinRole;
  readonly timestamp: string;
}

/** A notification to record with a change, in the same transaction (sent only once committed). */
export interface NotificationDraft {
  readonly recipientAddress: string;
  readonly recipientRole: TwinRole;
  readonly type: NotificationType;
  readonly content: NotificationContent;
}

/** One committed notification in a subscriber's feed; `id` is the SSE event id. */
export interface StoredNotification extends NotificationDraft {
  readonly id: number;
}

export const otherRole = (role: TwinRole): TwinRole => (role === "primary" ? "secondary" : "primary");

/** The counterpart of `changedBy` hears about the change (HLF-PD-007, HLF-SD-008). */
export function draftFor(type: NotificationType, twin: Twin, changedBy: TwinRole, nowMs: number): NotificationDraft {
  const recipientRole = otherRole(changedBy);
  return {
    recipientAddress: recipientRole === "primary" ? twin.primaryAddress : twin.secondaryAddress,
    recipientRole,
    type,
    content: {
      twinId: twin.twinId,
      primaryAddress: twin.primaryAddress,
      secondaryAddress: twin.secondaryAddress,
      status: twin.status,
      changedBy,
      timestamp: new Date(nowMs).toISOString(),
    },
  };
}

/** The wire form `{<type>: {..., callbackData}}` sent to callbacks and SSE streams. */
export function notificationBody(n: NotificationDraft, callbackData?: string): Record<string, unknown> {
  return { [n.type]: { ...n.content, ...(callbackData === undefined ? {} : { callbackData }) } };
}
