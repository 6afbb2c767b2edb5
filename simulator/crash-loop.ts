import { existsSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { Sandbox } from "./sandbox.ts";
import { makeTempDir, releaseTempDir } from "./temp-dirs.ts";
import type { Verdict } from "./crash-verify.ts";
import type { Op } from "./crash-loop-model.ts";
import { newSub, pick } from "./crash-loop-picker.ts";
import { setTimeout as sleep } from "node:timers/promises";
import { execute, freezePending, resolvePending } from "./crash-loop-ops.ts";
import { drain, sumRetries, verify } from "./crash-loop-end.ts";
import { LoopState } from "./crash-loop-state.ts";

export { metricValue } from "./crash-loop-end.ts";

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

class CrashLoop {
  readonly #o: Required<Omit<CrashLoopOptions, "dir" | "log">> & { log: (line: string) => void };
  readonly #s: LoopState;
  #retriedBefore = 0;

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
    this.#s = new LoopState(options.seed);
  }

  async run(dir: string): Promise<CrashLoopReport> {
    const started = Date.now();
    const o = this.#o;
    const s = this.#s;
    o.log(`crash loop: ${o.operations} operations, seed ${o.seed}, ${o.operators} operators in ${dir}`);
    s.sandbox = await Sandbox.create({ operators: o.operators, dir, proxies: false, logLevel: "warn" });
    let timedOut = false;
    try {
      // A starting population: phones and watches at every operator (not counted as operations),
      // paired like any other device and checked at the end like any other subscriber.
      const initial: Op[] = [];
      for (const operatorId of s.operatorIds) {
        const subs = [...Array.from({ length: 3 }, () => newSub(s, operatorId, "phone")), ...Array.from({ length: 5 }, () => newSub(s, operatorId, "watch"))];
        s.subs.push(...subs);
        initial.push(...subs.map((sub): Op => ({ kind: "provision", sub, attempts: 0 })));
      }
      await Promise.all(initial.map((op) => execute(s, op)));

      let nextKill = s.int(o.killEvery[0], o.killEvery[1]);
      while (s.c.operations < o.operations) {
        if (Date.now() - started > o.timeLimitMs) {
          timedOut = true;
          o.log(`time limit reached after ${s.c.operations} operations`);
          break;
        }
        if (s.c.operations >= nextKill) {
          await this.#killAndRestart();
          nextKill = s.c.operations + s.int(o.killEvery[0], o.killEvery[1]);
          continue;
        }
        const op = await pick(s);
        if (!op) {
          s.c.operations++; // nothing possible right now: count it so the loop stays bounded
          continue;
        }
        s.c.operations++;
        await execute(s, op);
      }

      // Every node up, every unknown outcome retried, every outbox drained.
      for (const id of [...s.down]) await this.#restart(id);
      await resolvePending(s, 8);
      const unsettled = freezePending(s);
      const { drained, deadLetters } = await drain(s, o.drainTimeoutMs);
      const verdict = await verify(s);
      this.#retriedBefore += await sumRetries(s, s.operatorIds);
      for (const p of verdict.problems) s.problem(p);
      const report: CrashLoopReport = {
        seed: o.seed,
        operators: o.operators,
        operations: s.c.operations,
        requests: s.c.requests,
        kills: s.c.kills,
        killsDuringBurst: s.c.killsDuringBurst,
        messagesRetried: this.#retriedBefore,
        unknownOutcomes: s.c.unknownOutcomes,
        unknownByKind: s.unknownByKind,
        activationsUndone: s.c.activationsUndone,
        settledByRetry: s.c.settledByRetry,
        unsettled,
        twinsActivated: s.c.twinsActivated,
        crossOperatorTwins: s.c.crossOperatorTwins,
        toggles: s.c.toggles,
        deactivations: s.c.deactivations,
        renames: s.c.renames,
        provisioned: s.c.provisioned,
        refused: s.c.refused,
        unexpectedAnswers: s.c.unexpectedAnswers,
        drained,
        deadLetters,
        divergences: verdict.divergences,
        lostCommits: verdict.lostCommits,
        duplicateEffects: verdict.duplicateEffects + s.c.duplicateAnswers,
        verificationErrors: verdict.verificationErrors,
        twinsChecked: verdict.twinsChecked,
        notificationsChecked: verdict.notificationsChecked,
        timedOut,
        seconds: Math.round((Date.now() - started) / 100) / 10,
        problems: s.problems,
      };
      return report;
    } finally {
      await s.sandbox.stop();
    }
  }

  // --- kills -----------------------------------------------------------------------------------

  async #killAndRestart(): Promise<void> {
    const s = this.#s;
    const up = s.operatorIds.filter((id) => s.up(id));
    const victim = s.pickOne(up)!;
    // The node's retry counter dies with it: read it first.
    this.#retriedBefore += await sumRetries(s, [victim]);
    if (s.random() < 0.6) {
      // A burst of concurrent operations, most involving the victim, and the kill in the middle.
      const ops: Op[] = [];
      const size = s.int(4, 10);
      for (let i = 0; i < size && s.c.operations + ops.length < this.#o.operations; i++) {
        const op = await pick(s, s.random() < 0.75 ? victim : undefined);
        if (op) ops.push(op);
      }
      s.c.operations += ops.length;
      const delay = s.int(0, 25);
      const running = ops.map((op) => execute(s, op));
      await sleep(delay);
      await this.#kill(victim);
      s.c.killsDuringBurst++;
      this.#o.log(`op ${s.c.operations}: SIGKILL ${victim} ${delay} ms into a burst of ${ops.length}`);
      await Promise.all(running);
    } else {
      await this.#kill(victim);
      this.#o.log(`op ${s.c.operations}: SIGKILL ${victim}`);
    }
    // Sometimes the node stays down for a while: the others go on, their messages to it wait.
    if (s.random() < 0.4) {
      const n = s.int(1, 6);
      for (let i = 0; i < n && s.c.operations < this.#o.operations; i++) {
        const op = await pick(s);
        s.c.operations++;
        if (op) await execute(s, op);
      }
    }
    await this.#restart(victim);
    await resolvePending(s, 3);
  }

  async #kill(operatorId: string): Promise<void> {
    this.#s.down.add(operatorId);
    this.#s.c.kills++;
    await this.#s.sandbox.kill(operatorId, "SIGKILL");
  }

  async #restart(operatorId: string): Promise<void> {
    await this.#s.sandbox.restart(operatorId);
    this.#s.down.delete(operatorId);
  }
}

/** Runs the crash loop in a fresh sandbox and returns its figures. */
export async function runCrashLoop(options: CrashLoopOptions): Promise<CrashLoopReport> {
  // The ledger starts empty: databases left by an earlier run would read as effects it never asked for.
  if (options.dir && existsSync(options.dir) && readdirSync(options.dir).length > 0) throw new Error(`${options.dir} is not empty: give a new directory to --out`);
  const dir = options.dir ?? makeTempDir("twinning-crash-");
  try {
    return await new CrashLoop(options).run(dir);
  } finally {
    if (options.dir === undefined) releaseTempDir(dir, options.keep);
    else if (!options.keep) rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * What a crash run must show to pass (the CLI's exit code; the crash-safety test asks the same):
 * no loss, duplicate, divergence or unexplained answer, everything delivered, and enough real
 * work that the checks proved something (twins made, across operators, outcomes settled).
 */
export function crashLoopFailures(r: CrashLoopReport, requestedOperations: number): string[] {
  const failures: string[] = [];
  const must = (ok: boolean, what: string) => {
    if (!ok) failures.push(what);
  };
  must(!r.timedOut, "the run hit its time limit");
  must(r.operations === requestedOperations, `${r.operations} of ${requestedOperations} operations ran`);
  must(r.divergences + r.lostCommits + r.duplicateEffects + r.unexpectedAnswers + r.verificationErrors === 0, "divergences, lost commits, duplicate effects, unexpected answers or verification errors");
  must(r.drained && r.deadLetters === 0, "delivery not drained, or dead letters");
  must(r.twinsActivated > 0 && r.crossOperatorTwins > 0, "no twins activated (or none across operators): nothing was checked");
  must(r.twinsChecked >= r.twinsActivated, "not every twin activated was checked");
  // Unknown outcomes the device's retries could not settle are checked loosely: kept rare.
  must(r.unsettled <= Math.max(2, Math.floor(requestedOperations / 100)), `${r.unsettled} unsettled outcomes`);
  return failures;
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