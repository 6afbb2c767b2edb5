import { CallbackReceiver } from "./callback-receiver.ts";
import { Api } from "./device-client.ts";
import type { Sandbox } from "./sandbox.ts";

/** One operator as a scenario sees it: only what federation.json gives (DESIGN "Simulator sandbox"). */
export interface Endpoint {
  readonly operatorId: string;
  readonly deviceUrl: string;
  readonly federationUrl: string;
  readonly adminToken: string;
  readonly api: Api;
}

export interface Party {
  readonly address: string;
  readonly token: string;
  readonly operator: Endpoint;
}

export type DeviceKind = "phone" | "watch" | "car";

export interface World {
  readonly operators: readonly Endpoint[];
  /** Present when the simulator started the nodes itself (fault scenarios need it). */
  readonly sandbox: Sandbox | undefined;
  /** Seeded: the same seed makes the same choices. */
  readonly random: () => number;
  /** A provisioned subscriber with a `twinning` token at that operator. */
  party(operator: Endpoint, kind: DeviceKind): Promise<Party>;
  /** A callback server on loopback, closed after the scenario. */
  receiver(): Promise<CallbackReceiver>;
  /** Runs after the scenario, pass or fail. */
  defer(cleanup: () => Promise<void>): void;
}

export interface Scenario {
  readonly id: string;
  readonly title: string;
  /** The requirement labels this scenario demonstrates. */
  readonly labels: readonly string[];
  /** `device`: only the public APIs (runs in conformance mode); `sandbox`: needs our processes. */
  readonly needs: "device" | "sandbox";
  readonly minOperators: number;
  run(world: World): Promise<void>;
}

export class ScenarioFailure extends Error {
  override readonly name = "ScenarioFailure";
}

/** The target cannot show what the scenario demonstrates (a precondition of its setup): skipped, not failed. */
export class ScenarioSkipped extends Error {
  override readonly name = "ScenarioSkipped";
}

/** Skips the scenario, with the reason, unless the target meets its precondition. */
export function skipUnless(condition: unknown, reason: string): asserts condition {
  if (!condition) throw new ScenarioSkipped(reason);
}

/** Fails the scenario with a message a person can read. */
export function check(condition: unknown, message: string): asserts condition {
  if (!condition) throw new ScenarioFailure(message);
}

export function expectEqual<T>(actual: T, expected: T, what: string): void {
  const [a, e] = [JSON.stringify(actual), JSON.stringify(expected)];
  check(a === e, `${what}: expected ${e}, got ${a}`);
}

/** Polls (bounded) until ok(value); for effects that travel between operators. */
export async function eventually<T>(probe: () => Promise<T>, ok: (value: T) => boolean, what: string, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (ok(value)) return value;
    if (Date.now() > deadline) throw new ScenarioFailure(`${what} did not happen within ${timeoutMs} ms (last: ${JSON.stringify(value).slice(0, 200)})`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** mulberry32: a small seeded PRNG, enough for reproducible choices. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
