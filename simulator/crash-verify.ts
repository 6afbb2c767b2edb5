import type { Twin } from "../node/domain/twin.ts";

/**
 * The crash loop's final-state check (see crash-loop.ts): a pure function of the ledger's
 * expectations and what the nodes show, so the check itself is unit-tested.
 */

export type TwinStatus = "On" | "Off";
export type Role = "primary" | "secondary";
export type NotificationType = "twinningStatusNotification" | "twinningActivatedNotification" | "twinningDeactivatedNotification";
export const NOTIFICATION_TYPES: readonly NotificationType[] = ["twinningStatusNotification", "twinningActivatedNotification", "twinningDeactivatedNotification"];

/** A twin as `GET /admin/v1/twins` shows it. */
export type AdminTwin = Pick<Twin, "twinId" | "primaryAddress" | "primaryOperatorId" | "secondaryAddress" | "secondaryOperatorId" | "name" | "status" | "version">;

export interface TwinState {
  readonly active: boolean;
  readonly status: TwinStatus;
  readonly version: number;
  readonly name: string;
}

export type NotificationCounts = Record<Role, Record<NotificationType, number>>;

export interface ExpectedTwin {
  readonly twinId: string;
  readonly primaryAddress: string;
  readonly primaryOperatorId: string;
  readonly secondaryAddress: string;
  readonly secondaryOperatorId: string;
  /** Acceptable final states: one when every outcome is known, two when one stayed unknown. */
  readonly states: readonly TwinState[];
  /** Notifications each side's subscriber must have in its feed for this twin, at least and at most. */
  readonly notificationsMin: NotificationCounts;
  readonly notificationsMax: NotificationCounts;
}

export interface VerifyInput {
  readonly expected: readonly ExpectedTwin[];
  /** Each node's active twins (undefined: unreadable). */
  readonly observed: ReadonlyMap<string, readonly AdminTwin[] | undefined>;
  /** Secondaries whose activation stayed unknown: one twin of theirs outside the ledger is allowed. */
  readonly uncertainSecondaries: ReadonlySet<string>;
  /** Notification feeds by `${role} ${address}`: the type and twinId of each committed notification (undefined: unreadable). */
  readonly feeds: ReadonlyMap<string, readonly { type: string; twinId: string }[] | undefined>;
  /** Acknowledged subscribers and whether their node still has them. */
  readonly subscribers: readonly { address: string; operatorId: string; present: boolean }[];
}

export interface Verdict {
  /** Cross-operator twins whose two nodes disagree (presence, status or version). Must be 0. */
  readonly divergences: number;
  /** Acknowledged effects missing from the final state. Must be 0. */
  readonly lostCommits: number;
  /** Effects present more than once (extra version bumps, notifications, twins). Must be 0. */
  readonly duplicateEffects: number;
  /** Checks that could not be made (a node's list or a feed unreadable). Must be 0. */
  readonly verificationErrors: number;
  /** Twins compared (ledger and observed), and feed notifications matched against the ledger. */
  readonly twinsChecked: number;
  readonly notificationsChecked: number;
  readonly problems: readonly string[];
}

export const emptyCounts = (): NotificationCounts => ({
  primary: { twinningStatusNotification: 0, twinningActivatedNotification: 0, twinningDeactivatedNotification: 0 },
  secondary: { twinningStatusNotification: 0, twinningActivatedNotification: 0, twinningDeactivatedNotification: 0 },
});

export const copyCounts = (c: NotificationCounts): NotificationCounts => ({ primary: { ...c.primary }, secondary: { ...c.secondary } });

export function verifyFinalState(input: VerifyInput): Verdict {
  let divergences = 0;
  let lostCommits = 0;
  let duplicateEffects = 0;
  let verificationErrors = 0;
  let notificationsChecked = 0;
  const problems: string[] = [];
  const byNode = new Map<string, Map<string, AdminTwin>>();
  for (const [operatorId, twins] of input.observed) {
    if (!twins) {
      verificationErrors++;
      problems.push(`${operatorId}: twin list unreadable`);
      continue;
    }
    const index = new Map<string, AdminTwin>();
    for (const t of twins) {
      if (index.has(t.twinId)) {
        duplicateEffects++;
        problems.push(`${operatorId}: twin ${t.twinId} listed twice`);
      }
      index.set(t.twinId, t);
    }
    byNode.set(operatorId, index);
  }
  const expected = new Map(input.expected.map((e) => [e.twinId, e]));
  const ids = new Set([...expected.keys(), ...[...byNode.values()].flatMap((m) => [...m.keys()])]);

  for (const twinId of ids) {
    const e = expected.get(twinId);
    const seen = [...byNode.values()].map((m) => m.get(twinId)).find((t) => t !== undefined);
    const sides = e ?? seen!;
    const nodes = [...new Set([sides.primaryOperatorId, sides.secondaryOperatorId])];
    if (nodes.some((n) => !byNode.has(n))) continue; // an unreadable node is already counted
    const views = nodes.map((n) => byNode.get(n)!.get(twinId));
    // (c) both sides agree.
    if (nodes.length === 2) {
      const [a, b] = views;
      const agree = (!a && !b) || (a !== undefined && b !== undefined && a.status === b.status && a.version === b.version);
      if (!agree) {
        divergences++;
        problems.push(`divergence ${twinId}: ${nodes[0]} ${show(a)} vs ${nodes[1]} ${show(b)}`);
      }
    }
    if (!e) {
      // A twin no acknowledged activation created: allowed only for a secondary whose activation stayed unknown.
      if (views.some((v) => v !== undefined) && !input.uncertainSecondaries.has(sides.secondaryAddress)) {
        duplicateEffects++;
        problems.push(`unexpected twin ${twinId} (${sides.primaryAddress} → ${sides.secondaryAddress}) at ${nodes.filter((_, i) => views[i]).join(", ")}`);
      }
      continue;
    }
    // (a) nothing committed lost, (b) nothing applied twice: each node's view is one acceptable state.
    let lost = false;
    let duplicate = false;
    for (const [i, node] of nodes.entries()) {
      const v = views[i];
      const checkName = node === e.primaryOperatorId;
      const ok = e.states.some((s) =>
        s.active ? v !== undefined && v.status === s.status && v.version === s.version && (!checkName || v.name === s.name) : v === undefined,
      );
      if (ok) continue;
      // Present where it should be gone, or an older version: lost; a newer version than any acknowledged: applied twice.
      const actives = e.states.filter((s) => s.active);
      if (v && actives.length > 0 && v.version > Math.max(...actives.map((s) => s.version))) duplicate = true;
      else lost = true;
      problems.push(`${lost ? "lost" : "duplicate"} at ${node} ${twinId}: expected ${e.states.map((s) => show(s.active ? s : undefined)).join(" or ")}, found ${show(v)}`);
    }
    // Notifications: each acknowledged change notified the other side exactly once.
    for (const role of ["primary", "secondary"] as const) {
      const address = role === "primary" ? e.primaryAddress : e.secondaryAddress;
      const feed = input.feeds.get(`${role} ${address}`);
      if (!feed) continue; // unreadable feeds are counted once below
      for (const type of NOTIFICATION_TYPES) {
        const n = feed.filter((x) => x.twinId === twinId && x.type === type).length;
        notificationsChecked += n;
        const [min, max] = [e.notificationsMin[role][type], e.notificationsMax[role][type]];
        if (n < min) lost = true;
        if (n > max) duplicate = true;
        if (n < min || n > max) problems.push(`${role} ${address}: ${n} × ${type} for ${twinId}, expected ${min === max ? min : `${min}..${max}`}`);
      }
    }
    if (lost) lostCommits++;
    if (duplicate) duplicateEffects++;
  }

  // (b) a secondary is in at most one active twin, whichever nodes hold it.
  const ofSecondary = new Map<string, Set<string>>();
  for (const m of byNode.values()) for (const t of m.values()) ofSecondary.set(t.secondaryAddress, (ofSecondary.get(t.secondaryAddress) ?? new Set()).add(t.twinId));
  for (const [secondary, twins] of ofSecondary) {
    if (twins.size > 1) {
      duplicateEffects++;
      problems.push(`secondary ${secondary} is in ${twins.size} active twins: ${[...twins].join(", ")}`);
    }
  }
  for (const [key, feed] of input.feeds) {
    if (!feed) {
      verificationErrors++;
      problems.push(`notification feed of ${key} unreadable`);
    }
  }
  for (const s of input.subscribers) {
    if (!s.present) {
      lostCommits++;
      problems.push(`subscriber ${s.address} provisioned at ${s.operatorId} is gone`);
    }
  }
  return { divergences, lostCommits, duplicateEffects, verificationErrors, twinsChecked: ids.size, notificationsChecked, problems };
}

function show(t: { status: string; version: number; name?: string } | undefined): string {
  return t ? `${t.status}/v${t.version}${t.name ? `/${t.name}` : ""}` : "absent";
}
