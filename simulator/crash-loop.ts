import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { enc, messageId } from "./device-client.ts";
import { Sandbox } from "./sandbox.ts";
import { seededRandom } from "./scenario.ts";
import {
  copyCounts,
  emptyCounts,
  NOTIFICATION_TYPES,
  verifyFinalState,
  type AdminTwin,
  type ExpectedTwin,
  type NotificationCounts,
  type Role,
  type TwinState,
  type TwinStatus,
  type Verdict,
} from "./crash-verify.ts";

/**
 * Crash safety (issue 6, item 5): N mixed device operations across 3 operator processes, with a
 * node SIGKILLed at random points (sometimes in the middle of a burst of concurrent requests)
 * and restarted; then delivery drains and the final state of every node is checked against a
 * ledger of what the nodes acknowledged.
 *
 * The ledger. A 2xx answer is a commit: its effect must be in the final state. A request that
 * got no answer (the node died) or a 5xx is an unknown outcome: it may or may not have
 * committed. Like a real device, the loop retries it once the nodes are back (the same request,
 * with the same clientCorrelator for activations); toggles, deactivations and renames are
 * idempotent by value, so the retry's answer settles the outcome and the effect must then be
 * there exactly once (one version bump, one notification). What stays unknown after the
 * retries is checked loosely (before or after, nothing else).
 *
 * Cross-operator twins are a last-writer-wins register ordered by (version, origin). The loop
 * only writes at a side that already holds the latest acknowledged version (the side that made
 * the last change, or one whose node shows that version), so every acknowledged change is the
 * newest and the expected final status, version and notification counts are exact.
 */

export interface CrashLoopOptions {
  /** Mixed device operations to run (provisioning, activations, toggles, renames, deactivations). */
  readonly operations: number;
  readonly seed: number;
  /** Working directory for the sandbox (configs, databases); a fresh temp dir by default. */
  readonly dir?: string;
  readonly operators?: number;
  /** A node is killed every [min, max] operations (seeded). */
  readonly killEvery?: readonly [number, number];
  /** Bound on the waiting for the outboxes to drain at the end. */
  readonly drainTimeoutMs?: number;
  /** Bound on the whole operation phase: no new operation after it (the report says so). */
  readonly timeLimitMs?: number;
  /** Keep the sandbox directory. */
  readonly keep?: boolean;
  readonly log?: (line: string) => void;
}

export interface CrashLoopReport extends Verdict {
  readonly seed: number;
  readonly operators: number;
  /** Operations run (each a device action; an activation is a code request plus the redemption). */
  readonly operations: number;
  /** HTTP requests the loop made to the device and admin APIs. */
  readonly requests: number;
  readonly kills: number;
  /** Kills that hit while a burst of concurrent requests was in flight. */
  readonly killsDuringBurst: number;
  /** Federation messages whose delivery failed and was retried (`twinning_outbox_deliveries_total{kind="peer",result="retry"}`, summed over node lives). */
  readonly messagesRetried: number;
  /** Requests answered with no answer or a 5xx (outcome unknown to the device). */
  readonly unknownOutcomes: number;
  /** Unknown outcomes by operation. */
  readonly unknownByKind: Readonly<Record<string, number>>;
  /** Activations whose outcome was unknown and whose retry was refused: the node undid the peer's side (compensation). */
  readonly activationsUndone: number;
  /** Unknown outcomes settled by the device's retry. */
  readonly settledByRetry: number;
  /** Unknown outcomes still unknown at the end (checked loosely: before or after). */
  readonly unsettled: number;
  readonly twinsActivated: number;
  readonly crossOperatorTwins: number;
  readonly toggles: number;
  readonly deactivations: number;
  readonly renames: number;
  readonly provisioned: number;
  /** Definite refusals the rules allow (a secondary still twinned, a peer down, …). */
  readonly refused: number;
  /** Answers the ledger says cannot happen (a refusal of an operation on a twin the node must hold, a toggle answering another status): a sign of a lost commit. Must be 0. */
  readonly unexpectedAnswers: number;
  readonly drained: boolean;
  readonly deadLetters: number;
  readonly timedOut: boolean;
  readonly seconds: number;
}

// ---------------------------------------------------------------------------------------------
// The loop.

type Outcome =
  | { readonly kind: "ok"; readonly status: number; readonly body: any }
  | { readonly kind: "refused"; readonly status: number; readonly id: string | undefined }
  | { readonly kind: "unknown"; readonly why: string };

interface Sub {
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

interface TwinRec {
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

type Op =
  | { kind: "provision"; sub: Sub; attempts: number }
  | { kind: "pair"; phone: Sub; watch: Sub; withPrimaryOperator: boolean; name: string; correlator: string; code: { code: string; operatorId: string } | undefined; attempts: number }
  | { kind: "toggle"; twin: TwinRec; side: Role; status: TwinStatus; attempts: number }
  | { kind: "deactivate"; twin: TwinRec; side: Role; attempts: number }
  | { kind: "rename"; twin: TwinRec; name: string; attempts: number };

const REQUEST_TIMEOUT_MS = 15_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const other = (role: Role): Role => (role === "primary" ? "secondary" : "primary");

/** The effect of an acknowledged operation on the ledger's view of a twin. */
function applied(rec: TwinRec, op: Op): { state: TwinState; notes: NotificationCounts } {
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

class CrashLoop {
  readonly #o: Required<Omit<CrashLoopOptions, "dir" | "log">> & { log: (line: string) => void };
  readonly #random: () => number;
  #sandbox!: Sandbox;
  readonly #subs: Sub[] = [];
  readonly #twins = new Map<string, TwinRec>();
  readonly #pending: Op[] = [];
  readonly #down = new Set<string>();
  readonly #problems: string[] = [];
  #seq = 0;
  #retriedBefore = 0;
  readonly c = {
    operations: 0,
    requests: 0,
    kills: 0,
    killsDuringBurst: 0,
    unknownOutcomes: 0,
    settledByRetry: 0,
    twinsActivated: 0,
    crossOperatorTwins: 0,
    toggles: 0,
    deactivations: 0,
    renames: 0,
    provisioned: 0,
    refused: 0,
    unexpectedAnswers: 0,
    duplicateAnswers: 0,
    activationsUndone: 0,
  };
  readonly #unknownByKind: Record<string, number> = {};

  constructor(options: CrashLoopOptions) {
    this.#o = {
      operations: options.operations,
      seed: options.seed,
      operators: options.operators ?? 3,
      killEvery: options.killEvery ?? [20, 60],
      drainTimeoutMs: options.drainTimeoutMs ?? 60_000,
      timeLimitMs: options.timeLimitMs ?? 20 * 60_000,
      keep: options.keep ?? false,
      log: options.log ?? (() => undefined),
    };
    this.#random = seededRandom(options.seed);
  }

  #int(min: number, max: number): number {
    return min + Math.floor(this.#random() * (max - min + 1));
  }

  #pickOne<T>(items: readonly T[]): T | undefined {
    return items.length === 0 ? undefined : items[Math.floor(this.#random() * items.length)];
  }

  #unexpected(text: string): void {
    this.c.unexpectedAnswers++;
    this.#problem(text);
  }

  #problem(text: string): void {
    if (this.#problems.length < 100) this.#problems.push(text);
  }

  get #operatorIds(): string[] {
    return this.#sandbox.operators.map((o) => o.operatorId);
  }

  #up(operatorId: string): boolean {
    return !this.#down.has(operatorId);
  }

  async run(dir: string): Promise<CrashLoopReport> {
    const started = Date.now();
    const o = this.#o;
    o.log(`crash loop: ${o.operations} operations, seed ${o.seed}, ${o.operators} operators in ${dir}`);
    this.#sandbox = await Sandbox.create({ operators: o.operators, dir, proxies: false, logLevel: "warn" });
    let timedOut = false;
    try {
      // A starting population: phones and watches at every operator (not counted as operations),
      // paired like any other device and checked at the end like any other subscriber.
      const initial: Op[] = [];
      for (const operatorId of this.#operatorIds) {
        const subs = [...Array.from({ length: 3 }, () => this.#newSub(operatorId, "phone")), ...Array.from({ length: 5 }, () => this.#newSub(operatorId, "watch"))];
        this.#subs.push(...subs);
        initial.push(...subs.map((sub): Op => ({ kind: "provision", sub, attempts: 0 })));
      }
      await Promise.all(initial.map((op) => this.#execute(op)));

      let nextKill = this.#int(o.killEvery[0], o.killEvery[1]);
      while (this.c.operations < o.operations) {
        if (Date.now() - started > o.timeLimitMs) {
          timedOut = true;
          o.log(`time limit reached after ${this.c.operations} operations`);
          break;
        }
        if (this.c.operations >= nextKill) {
          await this.#killAndRestart();
          nextKill = this.c.operations + this.#int(o.killEvery[0], o.killEvery[1]);
          continue;
        }
        const op = await this.#pick();
        if (!op) {
          this.c.operations++; // nothing possible right now: count it so the loop stays bounded
          continue;
        }
        this.c.operations++;
        await this.#execute(op);
      }

      // Every node up, every unknown outcome retried, every outbox drained.
      for (const id of [...this.#down]) await this.#restart(id);
      await this.#resolvePending(8);
      const unsettled = this.#freezePending();
      const { drained, deadLetters } = await this.#drain();
      const verdict = await this.#verify();
      this.#retriedBefore += await this.#sumRetries(this.#operatorIds);
      for (const p of verdict.problems) this.#problem(p);
      const report: CrashLoopReport = {
        seed: o.seed,
        operators: o.operators,
        operations: this.c.operations,
        requests: this.c.requests,
        kills: this.c.kills,
        killsDuringBurst: this.c.killsDuringBurst,
        messagesRetried: this.#retriedBefore,
        unknownOutcomes: this.c.unknownOutcomes,
        unknownByKind: this.#unknownByKind,
        activationsUndone: this.c.activationsUndone,
        settledByRetry: this.c.settledByRetry,
        unsettled,
        twinsActivated: this.c.twinsActivated,
        crossOperatorTwins: this.c.crossOperatorTwins,
        toggles: this.c.toggles,
        deactivations: this.c.deactivations,
        renames: this.c.renames,
        provisioned: this.c.provisioned,
        refused: this.c.refused,
        unexpectedAnswers: this.c.unexpectedAnswers,
        drained,
        deadLetters,
        divergences: verdict.divergences,
        lostCommits: verdict.lostCommits,
        duplicateEffects: verdict.duplicateEffects + this.c.duplicateAnswers,
        verificationErrors: verdict.verificationErrors,
        twinsChecked: verdict.twinsChecked,
        notificationsChecked: verdict.notificationsChecked,
        timedOut,
        seconds: Math.round((Date.now() - started) / 100) / 10,
        problems: this.#problems,
      };
      return report;
    } finally {
      await this.#sandbox.stop();
    }
  }

  // --- kills -----------------------------------------------------------------------------------

  async #killAndRestart(): Promise<void> {
    const up = this.#operatorIds.filter((id) => this.#up(id));
    const victim = this.#pickOne(up)!;
    // The node's retry counter dies with it: read it first.
    this.#retriedBefore += await this.#sumRetries([victim]);
    if (this.#random() < 0.6) {
      // A burst of concurrent operations, most involving the victim, and the kill in the middle.
      const ops: Op[] = [];
      const size = this.#int(4, 10);
      for (let i = 0; i < size && this.c.operations + ops.length < this.#o.operations; i++) {
        const op = await this.#pick(this.#random() < 0.75 ? victim : undefined);
        if (op) ops.push(op);
      }
      this.c.operations += ops.length;
      const delay = this.#int(0, 25);
      const running = ops.map((op) => this.#execute(op));
      await sleep(delay);
      await this.#kill(victim);
      this.c.killsDuringBurst++;
      this.#o.log(`op ${this.c.operations}: SIGKILL ${victim} ${delay} ms into a burst of ${ops.length}`);
      await Promise.all(running);
    } else {
      await this.#kill(victim);
      this.#o.log(`op ${this.c.operations}: SIGKILL ${victim}`);
    }
    // Sometimes the node stays down for a while: the others go on, their messages to it wait.
    if (this.#random() < 0.4) {
      const n = this.#int(1, 6);
      for (let i = 0; i < n && this.c.operations < this.#o.operations; i++) {
        const op = await this.#pick();
        this.c.operations++;
        if (op) await this.#execute(op);
      }
    }
    await this.#restart(victim);
    await this.#resolvePending(3);
  }

  async #kill(operatorId: string): Promise<void> {
    this.#down.add(operatorId);
    this.c.kills++;
    await this.#sandbox.kill(operatorId, "SIGKILL");
  }

  async #restart(operatorId: string): Promise<void> {
    await this.#sandbox.restart(operatorId);
    this.#down.delete(operatorId);
  }

  // --- HTTP ------------------------------------------------------------------------------------

  async #call(operatorId: string, method: string, path: string, options: { token?: string | undefined; json?: unknown; form?: string; basic?: string } = {}): Promise<Outcome> {
    this.c.requests++;
    const node = this.#sandbox.get(operatorId);
    const headers: Record<string, string> = {};
    if (options.token) headers.authorization = `Bearer ${options.token}`;
    if (options.basic) headers.authorization = `Basic ${options.basic}`;
    let body: string | undefined;
    if (options.json !== undefined) {
      body = JSON.stringify(options.json);
      headers["content-type"] = "application/json";
    }
    if (options.form !== undefined) {
      body = options.form;
      headers["content-type"] = "application/x-www-form-urlencoded";
    }
    try {
      const res = await fetch(`${node.deviceUrl}${path}`, { method, headers, ...(body !== undefined ? { body } : {}), signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
      const text = await res.text();
      let parsed: any = text;
      try {
        parsed = text ? JSON.parse(text) : undefined;
      } catch {
        /* not JSON */
      }
      if (res.status >= 200 && res.status < 300) return { kind: "ok", status: res.status, body: parsed };
      if (res.status >= 500 || res.status === 408) return { kind: "unknown", why: `${res.status} ${messageId(parsed) ?? ""}` };
      return { kind: "refused", status: res.status, id: messageId(parsed) };
    } catch (error) {
      const e = error as Error & { cause?: { code?: string } };
      return { kind: "unknown", why: e.cause?.code ?? e.name };
    }
  }

  // --- choosing operations ----------------------------------------------------------------------

  #newSub(operatorId: string, kind: "phone" | "watch"): Sub {
    const n = ++this.#seq;
    const opDigit = String(this.#operatorIds.indexOf(operatorId) + 1);
    const address = `tel:+1${opDigit}${kind === "phone" ? "55" : "77"}${String(n).padStart(6, "0")}`;
    return { address, operatorId, kind, credential: `crash-${n}-${Math.floor(this.#random() * 1e9)}`, acked: false, token: undefined, busy: true, twin: undefined, uncertain: false };
  }

  /** The nodes the device must reach (its home nodes); peers may be down. */
  #nodesOf(op: Op): string[] {
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

  /** A random operation that can run now (its home nodes up, its twin or watch not in use), locked. */
  async #pick(prefer?: string): Promise<Op | undefined> {
    for (let attempt = 0; attempt < 12; attempt++) {
      const r = this.#random();
      const activeTwins = [...this.#twins.values()].filter((t) => t.state.active).length;
      let op: Op | undefined;
      if (r < 0.07) op = this.#pickProvision(prefer);
      else if (r < 0.32 || activeTwins < 4) op = this.#pickPair(prefer);
      else if (r < 0.78) op = await this.#pickTwinOp("toggle", prefer);
      else if (r < 0.87) op = this.#pickRename(prefer);
      else op = await this.#pickTwinOp("deactivate", prefer);
      if (!op) continue;
      if (op.kind === "provision") op.sub.busy = true;
      else if (op.kind === "pair") op.watch.busy = true;
      else op.twin.busy = true;
      return op;
    }
    return undefined;
  }

  #pickProvision(prefer?: string): Op | undefined {
    const operatorId = prefer && this.#up(prefer) ? prefer : this.#pickOne(this.#operatorIds.filter((id) => this.#up(id)));
    if (!operatorId) return undefined;
    const sub = this.#newSub(operatorId, this.#random() < 0.7 ? "watch" : "phone");
    this.#subs.push(sub);
    return { kind: "provision", sub, attempts: 0 };
  }

  #pickPair(prefer?: string): Op | undefined {
    const ready = (s: Sub) => s.acked && s.token !== undefined && !s.busy && this.#up(s.operatorId);
    const watches = this.#subs.filter((s) => s.kind === "watch" && ready(s) && !s.twin && !s.uncertain);
    const phones = this.#subs.filter((s) => s.kind === "phone" && ready(s) && [...this.#twins.values()].filter((t) => t.phone === s && (t.state.active || t.alternative)).length < 6);
    if (watches.length === 0 || phones.length === 0) {
      // Run short of free devices: provision one.
      return this.#pickProvision(prefer);
    }
    const preferred = prefer ? watches.filter((w) => w.operatorId === prefer) : [];
    const watch = this.#pickOne(preferred.length > 0 && this.#random() < 0.5 ? preferred : watches)!;
    const local = phones.filter((p) => p.operatorId === watch.operatorId);
    const remote = phones.filter((p) => p.operatorId !== watch.operatorId);
    const remotePreferred = prefer && prefer !== watch.operatorId ? remote.filter((p) => p.operatorId === prefer) : [];
    const phone = this.#random() < 0.35 && local.length > 0 ? this.#pickOne(local)! : this.#pickOne(remotePreferred.length > 0 ? remotePreferred : remote.length > 0 ? remote : local)!;
    const n = ++this.#seq;
    return {
      kind: "pair",
      phone,
      watch,
      withPrimaryOperator: phone.operatorId !== watch.operatorId && this.#random() < 0.5,
      name: `t${n}`,
      correlator: `crash-activation-${n}`,
      code: undefined,
      attempts: 0,
    };
  }

  #pickRename(prefer?: string): Op | undefined {
    const candidates = [...this.#twins.values()].filter((t) => t.state.active && !t.busy && !t.alternative && this.#up(t.phone.operatorId));
    const preferred = prefer ? candidates.filter((t) => t.phone.operatorId === prefer) : [];
    const twin = this.#pickOne(preferred.length > 0 ? preferred : candidates);
    return twin ? { kind: "rename", twin, name: `n${++this.#seq}`, attempts: 0 } : undefined;
  }

  async #pickTwinOp(kind: "toggle" | "deactivate", prefer?: string): Promise<Op | undefined> {
    const candidates = [...this.#twins.values()].filter((t) => t.state.active && !t.busy && !t.alternative && (this.#up(t.phone.operatorId) || this.#up(t.watch.operatorId)));
    const preferred = prefer ? candidates.filter((t) => t.phone.operatorId === prefer || t.watch.operatorId === prefer) : [];
    const twin = this.#pickOne(preferred.length > 0 ? preferred : candidates);
    if (!twin) return undefined;
    const first: Role = this.#random() < 0.55 ? "primary" : "secondary";
    for (const side of [first, other(first)]) {
      if (!(await this.#holdsLatest(twin, side))) continue;
      if (kind === "deactivate") return { kind, twin, side, attempts: 0 };
      const status: TwinStatus = this.#random() < 0.85 ? (twin.state.status === "On" ? "Off" : "On") : twin.state.status;
      return { kind, twin, side, status, attempts: 0 };
    }
    return undefined;
  }

  /** Whether the side's node is up and holds the twin's latest acknowledged version (it may write then). */
  async #holdsLatest(twin: TwinRec, side: Role): Promise<boolean> {
    const operatorId = (side === "primary" ? twin.phone : twin.watch).operatorId;
    if (!this.#up(operatorId)) return false;
    if (!twin.cross || twin.known[side] === twin.state.version) return true;
    // Has the last change reached it? One admin read refreshes what this node is known to hold.
    const res = await this.#call(operatorId, "GET", "/admin/v1/twins?limit=10000", { token: this.#sandbox.get(operatorId).adminToken });
    if (res.kind !== "ok") return false;
    for (const row of res.body.twins as AdminTwin[]) {
      const t = this.#twins.get(row.twinId);
      if (!t || !t.cross || t.busy || t.alternative) continue;
      const s: Role = t.phone.operatorId === operatorId ? "primary" : "secondary";
      if (row.version === t.state.version && row.status === t.state.status) t.known[s] = t.state.version;
    }
    return twin.known[side] === twin.state.version;
  }

  // --- running operations ----------------------------------------------------------------------

  /** Runs (or retries) an operation: its answer updates the ledger; an unknown outcome is kept for a retry. */
  async #execute(op: Op): Promise<void> {
    const retry = op.attempts > 0;
    op.attempts++;
    const outcome = await this.#send(op, retry);
    if (outcome === "unknown") {
      if (!retry) {
        this.c.unknownOutcomes++;
        this.#unknownByKind[op.kind] = (this.#unknownByKind[op.kind] ?? 0) + 1;
      }
      this.#pending.push(op);
      return;
    }
    if (retry) this.c.settledByRetry++;
  }

  /** One attempt; "unknown" when it got no definite answer. */
  async #send(op: Op, retry: boolean): Promise<"done" | "unknown"> {
    switch (op.kind) {
      case "provision":
        return this.#sendProvision(op);
      case "pair":
        return this.#sendPair(op, retry);
      default:
        return this.#sendTwinOp(op, retry);
    }
  }

  async #sendProvision(op: Extract<Op, { kind: "provision" }>): Promise<"done" | "unknown"> {
    const { sub } = op;
    const node = this.#sandbox.get(sub.operatorId);
    if (!sub.acked) {
      const put = await this.#call(sub.operatorId, "PUT", `/admin/v1/subscribers/${enc(sub.address)}`, {
        token: node.adminToken,
        json: { subscriber: { twinning: true, credential: sub.credential } },
      });
      if (put.kind === "unknown") return "unknown";
      if (put.kind === "refused") {
        this.#unexpected(`provisioning ${sub.address} refused: ${put.status} ${put.id}`);
        return "done";
      }
      sub.acked = true;
      this.c.provisioned++;
    }
    const basic = Buffer.from(`${encodeURIComponent(sub.address)}:${encodeURIComponent(sub.credential)}`).toString("base64");
    const token = await this.#call(sub.operatorId, "POST", "/oauth/token", { basic, form: "grant_type=client_credentials&scope=twinning" });
    if (token.kind === "unknown") return "unknown";
    if (token.kind === "refused" || typeof token.body?.access_token !== "string") {
      // The node acknowledged the subscriber, then does not know its credential: a lost commit shows here first.
      this.#unexpected(`token for ${sub.address} refused after provisioning`);
      return "done";
    }
    sub.token = token.body.access_token;
    sub.busy = false;
    return "done";
  }

  async #sendPair(op: Extract<Op, { kind: "pair" }>, retry: boolean): Promise<"done" | "unknown"> {
    const { phone, watch } = op;
    if (!op.code) {
      // Step 1 (never retried: a code on its own creates nothing).
      const code = await this.#call(watch.operatorId, "POST", `/twinning/v1/secondary/${enc(watch.address)}/activationCodes`, {
        token: watch.token,
        json: op.withPrimaryOperator ? { primaryOperatorId: phone.operatorId } : {},
      });
      if (code.kind !== "ok") {
        if (code.kind === "refused") this.c.refused++;
        watch.busy = false;
        return "done";
      }
      op.code = { code: code.body.activationCode.code, operatorId: code.body.activationCode.operatorId };
    }
    const res = await this.#call(phone.operatorId, "POST", `/twinning/v1/primary/${enc(phone.address)}/twins`, {
      token: phone.token,
      json: { activationCode: op.code.code, operatorId: op.code.operatorId, name: op.name, clientCorrelator: op.correlator },
    });
    if (res.kind === "unknown") return "unknown";
    watch.busy = false;
    if (res.kind === "refused") {
      // A definite refusal: no twin (a peer that committed is undone by the node's compensation).
      this.c.refused++;
      if (retry) this.c.activationsUndone++;
      return "done";
    }
    const t = res.body?.twin ?? {};
    if (typeof t.twinId !== "string") {
      this.#unexpected(`activation answer without a twinId: ${JSON.stringify(res.body).slice(0, 200)}`);
      return "done";
    }
    if (this.#twins.has(t.twinId)) {
      this.c.duplicateAnswers++;
      this.#problem(`activation ${op.correlator} answered with twin ${t.twinId}, already created by another activation`);
      return "done";
    }
    if (t.status !== "On" || t.name !== op.name) this.#unexpected(`activation ${t.twinId}: answered ${t.status} ${t.name}, expected On ${op.name}${retry ? " (retry)" : ""}`);
    const notes = emptyCounts();
    notes.secondary.twinningActivatedNotification = 1;
    const rec: TwinRec = {
      twinId: t.twinId,
      phone,
      watch,
      cross: phone.operatorId !== watch.operatorId,
      state: { active: true, status: "On", version: 1, name: op.name },
      notes,
      known: { primary: 1, secondary: 1 },
      busy: false,
      alternative: undefined,
    };
    this.#twins.set(rec.twinId, rec);
    watch.twin = rec;
    this.c.twinsActivated++;
    if (rec.cross) this.c.crossOperatorTwins++;
    return "done";
  }

  async #sendTwinOp(op: Extract<Op, { kind: "toggle" | "deactivate" | "rename" }>, retry: boolean): Promise<"done" | "unknown"> {
    const rec = op.twin;
    const p = `/twinning/v1/primary/${enc(rec.phone.address)}/twins/${rec.twinId}`;
    const s = `/twinning/v1/secondary/${enc(rec.watch.address)}/twinning`;
    let res: Outcome;
    if (op.kind === "rename") {
      res = await this.#call(rec.phone.operatorId, "PATCH", p, { token: rec.phone.token, json: { name: op.name } });
    } else if (op.kind === "toggle") {
      res =
        op.side === "primary"
          ? await this.#call(rec.phone.operatorId, "PUT", `${p}/status`, { token: rec.phone.token, json: { status: op.status } })
          : await this.#call(rec.watch.operatorId, "PUT", `${s}/status`, { token: rec.watch.token, json: { status: op.status } });
    } else {
      res = op.side === "primary" ? await this.#call(rec.phone.operatorId, "DELETE", p, { token: rec.phone.token }) : await this.#call(rec.watch.operatorId, "DELETE", s, { token: rec.watch.token });
    }
    if (res.kind === "unknown") return "unknown";
    // A retried deactivation whose first attempt committed: the twin is gone (404, or POL1038 by twinId).
    const alreadyGone = op.kind === "deactivate" && retry && res.kind === "refused" && (res.status === 404 || res.id === "POL1038");
    if (res.kind === "refused" && !alreadyGone) {
      this.#unexpected(`${op.kind} of ${rec.twinId} at the ${op.kind === "rename" ? "primary" : op.side} side refused: ${res.status} ${res.id}${retry ? " (retry)" : ""}`);
      rec.busy = false;
      return "done";
    }
    if (op.kind === "toggle") {
      const answered = op.side === "primary" ? (res as any).body?.twin?.status : (res as any).body?.twinning?.status;
      if (answered !== op.status) this.#unexpected(`toggle of ${rec.twinId} to ${op.status} answered ${answered}`);
      this.c.toggles++;
    }
    if (op.kind === "deactivate") this.c.deactivations++;
    if (op.kind === "rename") this.c.renames++;
    const next = applied(rec, op);
    rec.state = next.state;
    rec.notes = next.notes;
    if (op.kind === "toggle") rec.known[op.side] = rec.state.version;
    if (op.kind === "deactivate") rec.watch.twin = undefined;
    rec.busy = false;
    return "done";
  }

  /** Retries unknown outcomes whose home nodes are up, a few rounds with a pause between. */
  async #resolvePending(rounds: number): Promise<void> {
    for (let round = 0; round < rounds && this.#pending.length > 0; round++) {
      if (round > 0) await sleep(250 * round);
      for (const op of this.#pending.splice(0)) {
        if (this.#nodesOf(op).every((id) => this.#up(id))) await this.#execute(op);
        else this.#pending.push(op);
      }
    }
  }

  /** What stays unknown is checked loosely: either outcome, and its watch or twin is not used again. */
  #freezePending(): number {
    const n = this.#pending.length;
    for (const op of this.#pending.splice(0)) {
      this.#problem(`unsettled: ${op.kind} after ${op.attempts} attempts`);
      if (op.kind === "pair") op.watch.uncertain = true;
      else if (op.kind !== "provision") op.twin.alternative = applied(op.twin, op);
    }
    return n;
  }

  // --- the end ---------------------------------------------------------------------------------

  async #metrics(operatorId: string): Promise<string | undefined> {
    try {
      const res = await fetch(`${this.#sandbox.get(operatorId).deviceUrl}/metrics`, { signal: AbortSignal.timeout(5_000) });
      return res.ok ? await res.text() : undefined;
    } catch {
      return undefined;
    }
  }

  async #sumRetries(operatorIds: readonly string[]): Promise<number> {
    let sum = 0;
    for (const id of operatorIds) sum += metricValue((await this.#metrics(id)) ?? "", "twinning_outbox_deliveries_total", { kind: "peer", result: "retry" });
    return sum;
  }

  /** Polls every node until all outboxes are empty (twice in a row), bounded. */
  async #drain(): Promise<{ drained: boolean; deadLetters: number }> {
    const deadline = Date.now() + this.#o.drainTimeoutMs;
    let quiet = 0;
    for (;;) {
      const texts = await Promise.all(this.#operatorIds.map((id) => this.#metrics(id)));
      const depth = texts.reduce((sum, t) => sum + (t === undefined ? Number.POSITIVE_INFINITY : metricValue(t, "twinning_outbox_depth")), 0);
      const deadLetters = texts.reduce((sum, t) => sum + (t === undefined ? 0 : metricValue(t, "twinning_outbox_dead_letters")), 0);
      quiet = depth === 0 ? quiet + 1 : 0;
      if (quiet >= 2) return { drained: true, deadLetters };
      if (Date.now() > deadline) {
        this.#problem(`outboxes not drained within ${this.#o.drainTimeoutMs} ms (depth ${depth})`);
        return { drained: false, deadLetters };
      }
      await sleep(200);
    }
  }

  async #verify(): Promise<Verdict> {
    const observed = new Map<string, AdminTwin[] | undefined>();
    for (const id of this.#operatorIds) {
      const res = await this.#call(id, "GET", "/admin/v1/twins?limit=10000", { token: this.#sandbox.get(id).adminToken });
      observed.set(id, res.kind === "ok" ? (res.body.twins as AdminTwin[]) : undefined);
    }
    const expected: ExpectedTwin[] = [...this.#twins.values()].map((t) => {
      const alt = t.alternative;
      const min = copyCounts(t.notes);
      const max = copyCounts(t.notes);
      if (alt) {
        for (const role of ["primary", "secondary"] as const) {
          for (const type of NOTIFICATION_TYPES) {
            min[role][type] = Math.min(t.notes[role][type], alt.notes[role][type]);
            max[role][type] = Math.max(t.notes[role][type], alt.notes[role][type]);
          }
        }
      }
      return {
        twinId: t.twinId,
        primaryAddress: t.phone.address,
        primaryOperatorId: t.phone.operatorId,
        secondaryAddress: t.watch.address,
        secondaryOperatorId: t.watch.operatorId,
        states: alt ? [t.state, alt.state] : [t.state],
        notificationsMin: min,
        notificationsMax: max,
      };
    });
    const subscribers: { address: string; operatorId: string; present: boolean }[] = [];
    const feeds = new Map<string, { type: string; twinId: string }[] | undefined>();
    for (const sub of this.#subs) {
      if (!sub.acked) continue;
      const res = await this.#call(sub.operatorId, "GET", `/admin/v1/subscribers/${enc(sub.address)}`, { token: this.#sandbox.get(sub.operatorId).adminToken });
      subscribers.push({ address: sub.address, operatorId: sub.operatorId, present: res.kind === "ok" });
      if (!sub.token) continue;
      const role: Role = sub.kind === "phone" ? "primary" : "secondary";
      feeds.set(`${role} ${sub.address}`, await this.#feed(sub, role));
    }
    return verifyFinalState({
      expected,
      observed,
      uncertainSecondaries: new Set(this.#subs.filter((s) => s.uncertain).map((s) => s.address)),
      feeds,
      subscribers,
    });
  }

  /** The subscriber's committed notifications: the SSE replay from the start (Last-Event-ID 0), up to the `: connected` mark. */
  async #feed(sub: Sub, role: Role): Promise<{ type: string; twinId: string }[] | undefined> {
    this.c.requests++;
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), 10_000);
    try {
      const res = await fetch(`${this.#sandbox.get(sub.operatorId).deviceUrl}/twinning/v1/${role}/${enc(sub.address)}/notifications`, {
        headers: { authorization: `Bearer ${sub.token}`, accept: "text/event-stream", "last-event-id": "0" },
        signal: controller.signal,
      });
      if (!res.ok || !res.body) return undefined;
      const decoder = new TextDecoder();
      let text = "";
      for await (const chunk of res.body) {
        text += decoder.decode(chunk, { stream: true });
        if (text.includes(": connected\n\n")) break;
      }
      controller.abort();
      const events: { type: string; twinId: string }[] = [];
      for (const frame of text.slice(0, text.indexOf(": connected\n\n")).split("\n\n")) {
        const data = frame.split("\n").find((l) => l.startsWith("data:"));
        if (!data) continue;
        const body = JSON.parse(data.slice(5)) as Record<string, { twinId: string }>;
        for (const [type, content] of Object.entries(body)) events.push({ type, twinId: content.twinId });
      }
      return events;
    } catch {
      return undefined;
    } finally {
      clearTimeout(timer);
      controller.abort();
    }
  }
}

/** The sum of a Prometheus metric's samples whose labels include `labels`. */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(name) || (line[name.length] !== " " && line[name.length] !== "{")) continue;
    const labelText = line[name.length] === "{" ? line.slice(name.length + 1, line.indexOf("}")) : "";
    const have = new Map([...labelText.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1]!, m[2]!]));
    if (Object.entries(labels).every(([k, v]) => have.get(k) === v)) sum += Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return sum;
}

/** Runs the crash loop in a fresh sandbox and returns its figures. */
export async function runCrashLoop(options: CrashLoopOptions): Promise<CrashLoopReport> {
  // The ledger starts empty: databases left by an earlier run would read as effects it never asked for.
  if (options.dir && existsSync(options.dir) && readdirSync(options.dir).length > 0) throw new Error(`${options.dir} is not empty: give a new directory to --out`);
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), "twinning-crash-"));
  try {
    return await new CrashLoop(options).run(dir);
  } finally {
    if (!options.keep) rmSync(dir, { recursive: true, force: true });
  }
}

/** A short table of the figures that matter. */
export function formatCrashReport(r: CrashLoopReport): string {
  const rows: [string, string | number][] = [
    ["operations run", r.operations],
    ["kills (SIGKILL)", `${r.kills} (${r.killsDuringBurst} during a burst of requests)`],
    ["messages retried", r.messagesRetried],
    ["unknown outcomes", `${r.unknownOutcomes} (${r.settledByRetry} settled by the device's retry, ${r.unsettled} unsettled)`],
    ["  by operation", Object.entries(r.unknownByKind).map(([k, n]) => `${k} ${n}`).join(", ") || "-"],
    ["twins activated", `${r.twinsActivated} (${r.crossOperatorTwins} cross-operator)`],
    ["toggles / renames / deactivations", `${r.toggles} / ${r.renames} / ${r.deactivations}`],
    ["refused by the rules", r.refused],
    ["divergences", r.divergences],
    ["lost commits", r.lostCommits],
    ["duplicate effects", r.duplicateEffects],
    ["unexpected answers", r.unexpectedAnswers],
    ["dead letters", r.deadLetters],
    ["checked", `${r.twinsChecked} twins on both nodes, ${r.notificationsChecked} notifications`],
    ["drained", r.drained ? "yes" : "no"],
    ["seconds", r.seconds],
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join("\n");
}
