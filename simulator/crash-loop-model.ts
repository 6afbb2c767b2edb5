import { copyCounts, type NotificationCounts, type Role, type TwinState, type TwinStatus } from "./crash-verify.ts";

/**
 * The crash loop's ledger (see crash-loop.ts): the records of what the nodes acknowledged
 * (subscribers, twins), the operations the loop runs, and the pure rule for what an
 * acknowledged operation does to a twin.
 */

/** One attempt's answer: a commit, a definite refusal, or an unknown outcome (no answer, a 5xx). */
export type Outcome =
  | { readonly kind: "ok"; readonly status: number; readonly body: any }
  | { readonly kind: "refused"; readonly status: number; readonly id: string | undefined }
  | { readonly kind: "unknown"; readonly why: string };

export interface Sub {
  readonly address: string;
  readonly operatorId: string;
  readonly kind: "phone" | "watch";
  readonly credential: string;
  /** The PUT was acknowledged: the subscriber must exist at the end. */
  acked: boolean;
  token: string | undefined;
  busy: boolean;
  /** A watch's active twin in the ledger. */
  twin: TwinRec | undefined;
  /** A watch whose activation outcome stayed unknown: never used again. */
  uncertain: boolean;
}

export interface TwinRec {
  readonly twinId: string;
  readonly phone: Sub;
  readonly watch: Sub;
  readonly cross: boolean;
  state: TwinState;
  notes: NotificationCounts;
  /** The version each side's node is known to hold (it only grows). */
  known: Record<Role, number>;
  busy: boolean;
  /** An operation on it stayed unknown: either state is acceptable, and nothing more is done to it. */
  alternative: { state: TwinState; notes: NotificationCounts } | undefined;
}

export type Op =
  | { kind: "provision"; sub: Sub; attempts: number }
  | { kind: "pair"; phone: Sub; watch: Sub; withPrimaryOperator: boolean; name: string; correlator: string; code: { code: string; operatorId: string } | undefined; attempts: number }
  | { kind: "toggle"; twin: TwinRec; side: Role; status: TwinStatus; attempts: number }
  | { kind: "deactivate"; twin: TwinRec; side: Role; attempts: number }
  | { kind: "rename"; twin: TwinRec; name: string; attempts: number };

export const other = (role: Role): Role => (role === "primary" ? "secondary" : "primary");

/** The effect of an acknowledged operation on the ledger's view of a twin. */
export function applied(rec: TwinRec, op: Op): { state: TwinState; notes: NotificationCounts } {
  const state = { ...rec.state };
  const notes = copyCounts(rec.notes);
  if (op.kind === "toggle" && op.status !== state.status) {
    state.status = op.status;
    state.version += 1;
    notes[other(op.side)].twinningStatusNotification += 1;
  } else if (op.kind === "deactivate") {
    state.active = false;
    notes[other(op.side)].twinningDeactivatedNotification += 1;
  } else if (op.kind === "rename") {
    state.name = op.name;
  }
  return { state, notes };
}

/** The nodes the device must reach (its home nodes); peers may be down. */
export function nodesOf(op: Op): string[] {
  switch (op.kind) {
    case "provision":
      return [op.sub.operatorId];
    case "pair":
      return [...new Set([op.watch.operatorId, op.phone.operatorId])];
    case "toggle":
    case "deactivate":
      return [(op.side === "primary" ? op.twin.phone : op.twin.watch).operatorId];
    case "rename":
      return [op.twin.phone.operatorId];
  }
}
