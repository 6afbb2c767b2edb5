import type { StoredNotification } from "../../domain/notification.ts";
import type { Twin, TwinRole, TwinStatus } from "../../domain/twin.ts";
import type { ActivationCodeRecord, OutboxEntry, SubscriberRecord, SubscriptionRecord } from "../store-port.ts";

/** Row shapes of the SQLite schema and their mapping to domain records. */
export interface TwinRow {
  twin_id: string;
  primary_address: string;
  primary_operator_id: string;
  secondary_address: string;
  secondary_operator_id: string;
  name: string;
  status: string;
  version: number;
  status_origin: string;
  active: number;
  created_at: number;
  updated_at: number;
}

export const toTwin = (r: TwinRow): Twin => ({
  twinId: r.twin_id,
  primaryAddress: r.primary_address,
  primaryOperatorId: r.primary_operator_id,
  secondaryAddress: r.secondary_address,
  secondaryOperatorId: r.secondary_operator_id,
  name: r.name,
  status: r.status as TwinStatus,
  version: r.version,
  statusOrigin: r.status_origin,
  active: r.active === 1,
  createdAtMs: r.created_at,
  updatedAtMs: r.updated_at,
});

export interface CodeRow {
  code_id: string;
  secondary_address: string;
  secondary_operator_id: string;
  issuer_operator_id: string;
  code_hash: string;
  state: string;
  created_at: number;
  expires_at: number;
  twin_id: string | null;
}

export const toCode = (r: CodeRow, nowMs: number): ActivationCodeRecord => ({
  codeId: r.code_id,
  secondaryAddress: r.secondary_address,
  secondaryOperatorId: r.secondary_operator_id,
  issuerOperatorId: r.issuer_operator_id,
  // A superseded or timed-out code reads as Expired (HLF-TE-005).
  state: r.state === "Used" ? "Used" : r.state === "Pending" && r.expires_at > nowMs ? "Pending" : "Expired",
  expiresAtMs: r.expires_at,
  createdAtMs: r.created_at,
  twinId: r.twin_id ?? undefined,
});

export interface SubscriberRow {
  address: string;
  twinning_enabled: number;
  credential_hash: string;
  updated_at: number;
}

export const toSubscriber = (r: SubscriberRow): SubscriberRecord => ({
  address: r.address,
  twinningEnabled: r.twinning_enabled === 1,
  credentialHash: r.credential_hash,
  updatedAtMs: r.updated_at,
});

export interface SubscriptionRow {
  subscription_id: string;
  address: string;
  role: string;
  notify_url: string;
  callback_data: string | null;
  created_at: number;
  expires_at: number | null;
}

export const toSubscription = (r: SubscriptionRow): SubscriptionRecord => ({
  subscriptionId: r.subscription_id,
  address: r.address,
  role: r.role as TwinRole,
  notifyUrl: r.notify_url,
  callbackData: r.callback_data ?? undefined,
  createdAtMs: r.created_at,
  expiresAtMs: r.expires_at ?? undefined,
});

export interface NotificationRow {
  id: number;
  address: string;
  role: string;
  type: string;
  content: string;
}

export const toNotification = (r: NotificationRow): StoredNotification => ({
  id: r.id,
  recipientAddress: r.address,
  recipientRole: r.role as TwinRole,
  type: r.type as StoredNotification["type"],
  content: JSON.parse(r.content) as StoredNotification["content"],
});

export interface OutboxRow {
  id: number;
  next_attempt_at: number;
  lane: string;
  kind: string;
  target: string;
  payload: string;
  attempts: number;
  created_at: number;
  last_error: string | null;
  /** A callback head's subscriber, where the query joins it (dueOutboxHeads). */
  owner?: string | null;
}

export const toOutboxEntry = (r: OutboxRow): OutboxEntry => ({
  id: r.id,
  lane: r.lane,
  kind: r.kind as OutboxEntry["kind"],
  target: r.target,
  payload: r.payload,
  attempts: r.attempts,
  createdAtMs: r.created_at,
  lastError: r.last_error ?? undefined,
  ...(r.owner ? { owner: r.owner } : {}),
});
