import type { Sandbox } from "./sandbox.ts";
import { seededRandom } from "./scenario.ts";
import type { Op, Sub, TwinRec } from "./crash-loop-model.ts";

/**
 * The crash loop's shared state (see crash-loop.ts): the one seeded random sequence, the
 * sandbox and which of its nodes are down, the ledger's records, and the counters and problems
 * the report shows. One object, passed to the picker (crash-loop-picker.ts), the sender
 * (crash-loop-ops.ts) and the end of the run (crash-loop-end.ts).
 */
export class LoopState {
  /** Every random choice of the run draws from this, in a fixed order: same seed, same run. */
  readonly random: () => number;
  sandbox!: Sandbox;
  readonly subs: Sub[] = [];
  readonly twins = new Map<string, TwinRec>();
  /** Operations whose outcome is unknown, kept for a retry. */
  readonly pending: Op[] = [];
  readonly down = new Set<string>();
  readonly problems: string[] = [];
  seq = 0;
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
  readonly unknownByKind: Record<string, number> = {};

  constructor(seed: number) {
    this.random = seededRandom(seed);
  }

  int(min: number, max: number): number {
    return min + Math.floor(this.random() * (max - min + 1));
  }

  pickOne<T>(items: readonly T[]): T | undefined {
    return items.length === 0 ? undefined : items[Math.floor(this.random() * items.length)];
  }

  unexpected(text: string): void {
    this.c.unexpectedAnswers++;
    this.problem(text);
  }

  problem(text: string): void {
    if (this.problems.length < 100) this.problems.push(text);
  }

  get operatorIds(): string[] {
    return this.sandbox.operators.map((o) => o.operatorId);
  }

  up(operatorId: string): boolean {
    return !this.down.has(operatorId);
  }
}
