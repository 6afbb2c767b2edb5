import type { PeerMessageDraft } from "../domain/change-effects.ts";
import type { NotificationDraft, StoredNotification } from "../domain/notification.ts";
import type { PrimaryServiceEndpoints, Twin, TwinRef, TwinRole, TwinStatus } from "../domain/twin.ts";

/**
 * The storage port: every method is one whole domain operation and one transaction, so a
 * PostgreSQL implementation can serve many replicas without touching callers. Rule
 * violations that must be decided atomically with the write (HLF-TE-008/009, policy caps)
 * are thrown as TwinningError by the implementation; `test/store/store-contract.ts` is the
 * shared suite every implementation must pass.
 */
export interface TwinningStore {
  // --- subscribers (admin API) ---
  /**
   * Creates or updates. Every put is a new provisioning (the device's tokens are revoked with
   * it): what the previous one opened ends, its pending activation codes (its own and copies of
   * a peer's), its callback subscriptions with their queued callbacks, its clientCorrelators. A
   * new subscriber's number is ours from then on: an active twin that names it ends, as another
   * operator's subscriber (that operator is sent a deactivation, our party is notified) or as ours
   * (left by a request authenticated before a de-provisioning; the other party is notified).
   * Switching twinning off keeps the subscriber's twins (the operator may switch it on again);
   * its device can use none of them meanwhile, as its tokens are refused.
   */
  putSubscriber(record: SubscriberRecord, ownOperatorId: string): Promise<SubscriberChange & { created: boolean }>;
  getSubscriber(address: string): Promise<SubscriberRecord | undefined>;
  /**
   * Removes the subscriber; its twins end (the other sides notified or sent a deactivation),
   * what its provisioning opened ends (see putSubscriber) and its notification feed is
   * deleted. `deleted` is false when there was none (then nothing changes).
   */
  deleteSubscriber(input: DeleteSubscriberInput): Promise<SubscriberChange & { deleted: boolean }>;

  // --- activation codes (HLF-SD-001..003, HLF-TE-005) ---
  /** Supersedes the secondary's pending codes and stores the new one; checks the secondary's role. */
  issueActivationCode(input: IssueCodeInput): Promise<IssueCodeResult>;
  getActivationCode(secondaryAddress: string, codeId: string, nowMs: number): Promise<ActivationCodeRecord | undefined>;
  /** Rate limit, code match, role rules, twin creation and code consumption, atomically. */
  redeemActivationCode(input: RedeemCodeInput): Promise<RedeemCodeResult>;

  // --- twins (HLF-PD-*, HLF-SD-004..007, HLF-TE-*) ---
  listTwinsOfPrimary(primaryAddress: string): Promise<Twin[]>;
  /** An active twin of this primary named by ref, or undefined. */
  findTwinOfPrimary(primaryAddress: string, ref: TwinRef): Promise<Twin | undefined>;
  /** The secondary's active twin, if any (it has at most one, HLF-TE-009). */
  findTwinOfSecondary(secondaryAddress: string): Promise<Twin | undefined>;
  /** Active twins of every subscriber, oldest first (operations, the simulator's final state). */
  /** Active twins in creation order, up to `limit`, after the twin `afterTwinId` (a cursor: the last of the previous page, active or not; one that names no twin is invalid_input). */
  listActiveTwins(limit: number, afterTwinId?: string): Promise<Twin[]>;
  /** A twin by id, active or deactivated. */
  getTwin(twinId: string): Promise<Twin | undefined>;
  renameTwin(input: { twinId: string; name: string; nowMs: number }): Promise<Twin>;
  /**
   * Sets the status if it differs; bumps the version; records the notifications. Committed when
   * the promise resolves (an implementation may commit concurrent ones together); writes still
   * take effect in the order they were asked, while a read asked before the answer may not see it.
   */
  changeTwinStatus(input: ChangeStatusInput): Promise<ChangeResult>;
  deactivateTwin(input: DeactivateInput): Promise<ChangeResult>;

  // --- federation (HLF-IC-*) ---
  /** Throws (POL1037/POL3003) unless the device may become the primary of one more twin. */
  assertCanTwinAsPrimary(primaryAddress: string, maxTwinsPerPrimary: number): Promise<void>;
  /** Throws (POL1037/POL3001) unless the device may become a secondary. */
  assertCanTwinAsSecondary(secondaryAddress: string): Promise<void>;
  /** A read of a correlator, before a call to a peer (SVC0005 on a different request). */
  lookupCorrelator(correlator: CorrelatorInput): Promise<CorrelatorReplay | undefined>;
  /**
   * Inserts a twin agreed with the peer, checking the rules of the side served here, and
   * consuming the code it came from; records the activation's effects.
   */
  insertFederatedTwin(input: InsertFederatedTwinInput): Promise<FederatedTwinResult>;
  /** The primary's service endpoints its operator named when it activated the twin here (HLF-IC-006), if it named them. */
  primaryServiceEndpoints(twinId: string): Promise<PrimaryServiceEndpoints | undefined>;
  /** A toggle made at the peer: applied if newer in (version, origin) order (HLF-IC-005/007). */
  applyRemoteStatus(input: RemoteStatusInput): Promise<ChangeResult>;
  /** A deactivation made at the peer (or a compensation): final, idempotent. */
  applyRemoteDeactivation(input: RemoteDeactivationInput): Promise<ChangeResult | undefined>;
  /**
   * Writes federation messages to the outbox on their own (compensations), due at `dueAtMs`
   * (default now); returns their outbox ids.
   */
  enqueuePeerMessages(messages: readonly PeerMessageDraft[], nowMs: number, dueAtMs?: number): Promise<number[]>;
  /** Messages waiting for one peer operator, in every lane, counted up to `limit` (the backlog bound). */
  countQueuedForPeer(operatorId: string, limit: number): Promise<number>;
  /**
   * The replay cache of federation `jti`s: false when already seen with this expiry (also when
   * seen and not yet committed). The expiry comes from the message's signed claims, so a replay
   * brings the same one. The jti must be committed no later than any effect of its message: in
   * the same transaction as the first write that follows, or before it.
   */
  rememberJti(jti: string, expiresAtMs: number, nowMs: number): Promise<boolean>;

  // --- subscriptions and notifications (HLF-PD-007, HLF-SD-008, HLF-CM-005) ---
  createSubscription(input: CreateSubscriptionInput): Promise<{ subscription: SubscriptionRecord; replayed: boolean }>;
  listSubscriptions(address: string, role: TwinRole, nowMs: number): Promise<SubscriptionRecord[]>;
  getSubscription(address: string, role: TwinRole, id: string, nowMs: number): Promise<SubscriptionRecord | undefined>;
  /** Removes the subscriber's subscription, expired or not; true only if it was still live at `nowMs` (as getSubscription would find it). */
  deleteSubscription(address: string, role: TwinRole, id: string, nowMs: number): Promise<boolean>;
  /** The subscriber's committed notifications after `afterId`, in id order, up to `limit` (SSE replay by Last-Event-ID). */
  notificationsAfter(address: string, role: TwinRole, afterId: number, limit: number): Promise<StoredNotification[]>;
  /** The highest notification id ever given (ids are never reused, also once pruned); 0 before the first. */
  latestNotificationId(): Promise<number>;
  /**
   * Calls `listener` after each commit that recorded notifications, synchronously and in commit
   * order (so in id order), with that commit's notifications: the live streams are fed from
   * here, as the operations' own continuations resume in no fixed order. Returns its removal.
   */
  onNotificationsCommitted(listener: (notifications: readonly StoredNotification[]) => void): () => void;

  // --- durable outbox ---
  /**
   * The oldest pending entry of each lane that is due, so order per lane holds: at most `limit`
   * peer lanes and at most `limit` callback lanes (so a crowd of one kind never hides the other),
   * each kind by due time, then id; of one subscriber's callback lanes at most `perOwner` (the
   * first by that order), so one subscriber's backlog cannot fill the list. Callback heads carry
   * their subscriber as `owner`.
   */
  dueOutboxHeads(nowMs: number, limit: number, perOwner?: number): Promise<OutboxEntry[]>;
  /** Up to `limit` pending entries of a lane after `afterId`, in order, stopping at the first not yet due (an index range read). */
  nextOutboxEntriesInLane(lane: string, afterId: number, nowMs: number, limit: number): Promise<OutboxEntry[]>;
  /** Removes delivered entries, in one transaction. */
  completeOutboxEntries(ids: readonly number[]): Promise<void>;
  /** When the next pending entry becomes due, if any. */
  nextOutboxDueAtMs(): Promise<number | undefined>;
  completeOutboxEntry(id: number): Promise<void>;
  failOutboxEntry(input: { id: number; attempts: number; nextAttemptAtMs: number | undefined; lastError: string; nowMs: number }): Promise<void>;
  outboxStats(): Promise<{ pending: number; dead: number }>;
  listDeadLetters(limit: number): Promise<OutboxEntry[]>;

  /** Deletes expired codes, old attempts, old notifications and expired subscriptions. */
  prune(input: PruneInput): Promise<void>;

  /**
   * A number that changes whenever anything the device API's reads return (subscribers, twins)
   * may have changed, or undefined when this store cannot tell (another writer may exist, as
   * with many replicas). An answer built from reads taken at one version may be served again
   * while the version holds (ReadyAnswers); it must move before a write can be read.
   */
  readVersion(): number | undefined;

  /** Resolves when the store can serve: reads, and writes again after a write failed for the storage's sake (/readyz). */
  ping(): Promise<void>;
  close(): Promise<void>;
}

/** What prune drops: each kind of record once its own retention has passed. */
export interface PruneInput {
  readonly nowMs: number;
  /** Notifications, used codes, correlators and cancellations older than this. */
  readonly notificationRetentionMs: number;
  /** Failed redemptions older than this. */
  readonly attemptWindowMs: number;
  /** Dead letters created longer ago than this. */
  readonly deadLetterRetentionMs: number;
}

export interface SubscriberRecord {
  readonly address: string;
  readonly twinningEnabled: boolean;
  /** scrypt hash of the device credential (never the credential). */
  readonly credentialHash: string;
  readonly updatedAtMs: number;
}

export interface DeleteSubscriberInput {
  readonly address: string;
  readonly ownOperatorId: string;
  readonly nowMs: number;
}

/** What provisioning or de-provisioning a subscriber ended, with what that caused. */
export interface SubscriberChange {
  readonly endedTwins: readonly Twin[];
  readonly notifications: StoredNotification[];
  /** Whether outbox entries (peer deactivations, callbacks) were written. */
  readonly queued: boolean;
}

/** `clientCorrelator` idempotency (DESIGN "Device API"): same key + same request → first result. */
export interface CorrelatorInput {
  readonly subscriber: string;
  readonly operation: string;
  readonly key: string;
  /** A digest of the request, to tell a retry from a different request (SVC0005). */
  readonly fingerprint: string;
  /** Opaque data the caller needs to rebuild the first answer (sealed by the caller). */
  readonly replayData?: string;
}

export interface CorrelatorReplay {
  readonly resourceId: string;
  readonly replayData: string | undefined;
}

export type ActivationCodeState = "Pending" | "Used" | "Expired";

export interface ActivationCodeRecord {
  readonly codeId: string;
  readonly secondaryAddress: string;
  readonly secondaryOperatorId: string;
  /** The operator that generated the code (HLF-SD-003). */
  readonly issuerOperatorId: string;
  readonly state: ActivationCodeState;
  readonly expiresAtMs: number;
  readonly createdAtMs: number;
  readonly twinId: string | undefined;
}

/**
 * The local subscriber a request acts for, checked again in the write's transaction: still
 * provisioned for twinning and, when `stamp` is given, under the provisioning the request was
 * authenticated with (provisioningStamp). A de-provisioning (or a new credential) during the
 * request, a peer's round trip say, then leaves nothing behind: invalid_token.
 */
export interface ProvisionedParty {
  readonly address: string;
  readonly stamp?: string | undefined;
}

export interface IssueCodeInput {
  /** The local secondary the code is for (see ProvisionedParty); absent when it is a peer's. */
  readonly provisionedParty?: ProvisionedParty;
  readonly codeId: string;
  readonly secondaryAddress: string;
  readonly secondaryOperatorId: string;
  readonly issuerOperatorId: string;
  readonly codeHash: string;
  readonly nowMs: number;
  readonly expiresAtMs: number;
  readonly correlator?: CorrelatorInput;
  /**
   * A bound on the live codes held for the secondary's operator (a peer asking for its
   * secondaries): once that many are pending and unexpired, not counting this secondary's own,
   * the code is refused (policy_error).
   */
  readonly maxPendingForOperator?: number;
  /**
   * The secondary is a peer's subscriber (the peer asked for its code): its roles were checked
   * by its home node, and the twins held here that name it may be ones that node has already
   * ended (its deactivation still on its way), so they are not checked again. The activation
   * that follows ends such a stale twin (insertFederatedTwin).
   */
  readonly secondaryServedByPeer?: boolean;
}

export type IssueCodeResult =
  | { readonly kind: "issued"; readonly code: ActivationCodeRecord }
  | { readonly kind: "replayed"; readonly code: ActivationCodeRecord; readonly replay: CorrelatorReplay }
  /** Another pending code has the same hash: draw a new code and try again. */
  | { readonly kind: "collision" };

export interface RedeemCodeInput {
  /** The local primary redeeming (see ProvisionedParty); absent when it is a peer's. */
  readonly provisionedParty?: ProvisionedParty;
  readonly issuerOperatorId: string;
  readonly codeHash: string;
  /** Constant-time check of the stored hash against the presented code. */
  readonly verify: (storedHash: string) => boolean;
  readonly twinId: string;
  readonly primaryAddress: string;
  readonly primaryOperatorId: string;
  /** undefined: the store picks a default name (HLF-TE-007). */
  readonly name: string | undefined;
  readonly nowMs: number;
  readonly maxTwinsPerPrimary: number;
  /** This node's operator; default: the primary's (both sides local). */
  readonly ownOperatorId?: string;
  /** Failed-attempt budgets (HLF-CM-006): keys such as `primary:tel:+1…` with their limits. */
  readonly attemptBudgets: readonly { key: string; limit: number }[];
  readonly attemptWindowMs: number;
  /**
   * The per-code limit: once `limit` failures have been recorded under `key` (one of the
   * attemptBudgets) since a pending code was issued, that code is void (a guess names no code,
   * so each failure counts against every code it could have hit).
   */
  readonly codeBudget?: { readonly key: string; readonly limit: number };
  readonly correlator?: CorrelatorInput;
  /** The remote primary's service endpoints, kept with the twin (primaryServiceEndpoints). */
  readonly primaryServiceEndpoints?: PrimaryServiceEndpoints;
}

export type RedeemCodeResult =
  | { readonly kind: "activated"; readonly twin: Twin; readonly codeId: string; readonly notifications: StoredNotification[]; readonly queued: boolean }
  | { readonly kind: "replayed"; readonly twin: Twin }
  /** The code is right but its secondary is another operator's: activate there, then insertFederatedTwin. */
  | { readonly kind: "remote-secondary"; readonly codeId: string; readonly secondaryAddress: string; readonly secondaryOperatorId: string }
  | { readonly kind: "invalid-code" }
  | { readonly kind: "rate-limited"; readonly retryAfterMs: number };

export interface ChangeStatusInput {
  readonly twinId: string;
  /** When set, the twin must be this primary's: another's is not found (SVC0002 404), whatever its state. */
  readonly primaryAddress?: string;
  readonly status: TwinStatus;
  readonly changedBy: TwinRole;
  /** The operator where the change is made: this node. A recipient of another operator gets a peer message. */
  readonly origin: string;
  readonly nowMs: number;
  /** Refuses (SVC3002) a change that would queue a peer message behind this many for that peer (all its lanes). */
  readonly maxQueuedPerPeer?: number;
}

export interface DeactivateInput {
  readonly twinId: string;
  readonly changedBy: TwinRole;
  readonly nowMs: number;
  /** This node's operator, to route the notification to a peer; default: both sides local. */
  readonly ownOperatorId?: string;
}

export interface InsertFederatedTwinInput {
  /** The local party that asked for the twin (see ProvisionedParty), when one did. */
  readonly provisionedParty?: ProvisionedParty;
  readonly twin: Omit<Twin, "active" | "createdAtMs" | "updatedAtMs">;
  /**
   * Which side of the twin this node serves; that side's rules are checked here. The other side
   * is the peer's: an address this node provisions, or the same address on both sides, is refused
   * (SVC3002 at the primary's side, where a peer's answer named it; POL2003 at the secondary's).
   */
  readonly localSide: TwinRole;
  /** The name was a default, not the user's choice: if taken meanwhile, the next free default is used. */
  readonly nameIsDefault?: boolean;
  readonly nowMs: number;
  readonly maxTwinsPerPrimary: number;
  /** A code of ours consumed by this activation (it must still be Pending). */
  readonly consumeCodeId?: string;
  /** The secondary must hold a pending code obtained from this operator; it is marked Used (else SVC3001). */
  readonly consumeRemoteCodeFrom?: string;
  readonly correlator?: CorrelatorInput;
  /**
   * Outbox entries to withdraw in the same transaction (a compensation armed before the call).
   * Each must still be pending, never tried and not yet due (else it may already be on its way,
   * or have been applied by the peer with its answer lost): otherwise nothing is committed, and
   * the insert fails with SVC3002.
   */
  readonly disarmOutboxIds?: readonly number[];
  /** The remote primary's service endpoints, kept with the twin when it is served here as the secondary. */
  readonly primaryServiceEndpoints?: PrimaryServiceEndpoints;
}

export interface FederatedTwinResult {
  readonly twin: Twin;
  readonly replayed: boolean;
  readonly notifications: StoredNotification[];
  readonly queued: boolean;
  /** The activation code this activation used up, if any (wakes its long polls). */
  readonly consumedCodeId?: string | undefined;
}

/**
 * A change made at the peer. Who made it is the side of the twin that the peer serves, whatever
 * the message claims: a peer acts for its own subscribers only, and a message that named our
 * side would change our party's twin without a word to it.
 */
export interface RemoteStatusInput {
  readonly twinId: string;
  readonly status: TwinStatus;
  readonly version: number;
  /** The peer that sent it (the JWS iss); it must be the twin's other operator. */
  readonly fromOperatorId: string;
  readonly ownOperatorId: string;
  readonly nowMs: number;
}

/** As RemoteStatusInput: the deactivation is the peer's side's. */
export interface RemoteDeactivationInput {
  readonly twinId: string;
  readonly fromOperatorId: string;
  readonly ownOperatorId: string;
  readonly nowMs: number;
}

export interface ChangeResult {
  readonly twin: Twin;
  readonly changed: boolean;
  readonly notifications: StoredNotification[];
  /** Whether the change wrote outbox entries (callbacks, peer messages) to deliver. */
  readonly queued: boolean;
  /**
   * Optional: peer messages of the change that were first in their lane when it committed, due
   * now, which the delivery worker may start without looking for them (OutboxWorker.wake).
   */
  readonly laneHeads?: readonly OutboxEntry[];
}

export interface SubscriptionRecord {
  readonly subscriptionId: string;
  readonly address: string;
  readonly role: TwinRole;
  readonly notifyUrl: string;
  readonly callbackData: string | undefined;
  readonly createdAtMs: number;
  readonly expiresAtMs: number | undefined;
}

export interface CreateSubscriptionInput {
  readonly subscription: SubscriptionRecord;
  readonly maxPerSubscriber: number;
  readonly correlator?: CorrelatorInput;
}

export interface OutboxEntry {
  readonly id: number;
  /** Entries of one lane are delivered in order, one at a time. */
  readonly lane: string;
  readonly kind: "callback" | "peer";
  readonly target: string;
  readonly payload: string;
  readonly attempts: number;
  readonly createdAtMs: number;
  readonly lastError: string | undefined;
  /** A callback's subscriber, on the heads dueOutboxHeads gives (a share of the slots is theirs at most). */
  readonly owner?: string;
}

export type { NotificationDraft, PeerMessageDraft };
