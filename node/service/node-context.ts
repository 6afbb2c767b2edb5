import type { Logger } from "pino";
import type { NodeConfig } from "../config/node-config.ts";
import type { CodeHasher } from "../domain/activation-code.ts";
import type { StoredNotification } from "../domain/notification.ts";
import type { NotificationHub } from "../notifications/notification-hub.ts";
import type { NodeMetrics } from "../observability/metrics.ts";
import type { OutboxEntry, TwinningStore } from "../store/store-port.ts";
import type { AccessTokens } from "../tokens/access-tokens.ts";
import type { ReplaySealer } from "./replay-sealer.ts";
import type { Federation } from "../federation/federation.ts";
import type { ReadyAnswers } from "../http/ready-answers.ts";
import type { KeyedLock } from "./keyed-lock.ts";

/** Everything a request handler may use; built once in start-node and injected. */
export interface NodeContext {
  readonly config: NodeConfig;
  readonly store: TwinningStore;
  readonly tokens: AccessTokens;
  readonly codes: CodeHasher;
  readonly sealer: ReplaySealer;
  readonly hub: NotificationHub;
  readonly metrics: NodeMetrics;
  readonly logger: Logger;
  readonly adminToken: string;
  /** Present when this node federates with other operators (HLF-IC-*). */
  readonly federation: Federation | undefined;
  /** Wakes the outbox after a commit that wrote entries without notifications (compensations). */
  readonly wakeOutbox: () => void;
  /** Answers to repeated reads kept between writes; absent when off or the store cannot tell when to drop them. */
  readonly answers: ReadyAnswers | undefined;
  /** Requests with the same clientCorrelator that wait on a peer run one at a time. */
  readonly correlated: KeyedLock;
  /** Injected clock (ms since epoch); tests move it by hand. */
  readonly nowMs: () => number;
  /** The base devices use: `/twinning/v1`, `/oauth` and `/admin/v1` hang off it. */
  readonly deviceBaseUrl: () => string;
  /** The node's public signing keys (JWKS), for /.well-known/jwks.json. */
  readonly jwks: () => { keys: object[] };
  /** Aborted when the node is asked to stop: /readyz answers 503 from then on (limits.shutdownDrainMs). */
  readonly draining: AbortSignal;
  /** Aborted when the node starts shutting down, after the drain: long polls and SSE streams end. */
  readonly lifecycle: AbortSignal;
  /**
   * Called after a commit: notifications go to live streams; `queued` wakes the outbox worker,
   * which starts `laneHeads` (ChangeResult) at once when their lanes are idle.
   */
  readonly committed: (notifications: readonly StoredNotification[], queued: boolean, laneHeads?: readonly OutboxEntry[]) => void;
}
