import { describe, expect, it } from "vitest";
import { LoginGuard } from "../../node/oauth/login-guard.ts";

const WINDOW_MS = 60_000;
const guard = (over: Partial<ConstructorParameters<typeof LoginGuard>[0]> = {}) => new LoginGuard({ maxFailures: 3, windowMs: WINDOW_MS, maxPendingChecks: 2, maxClients: 100, ...over });
const wrong = async () => false;
const right = async () => true;

/** A check that answers once `release` is called with its answer. */
function heldCheck() {
  let release!: (valid: boolean) => void;
  const check = () => new Promise<boolean>((resolve) => (release = resolve));
  return { check, release: (valid: boolean) => release(valid) };
}

describe("LoginGuard", () => {
  it("HLF-CM-006 refuses a client id after maxFailures failures in the window, until the oldest leaves it; others are not affected; a success clears the count", async () => {
    const g = guard();
    await g.attempt("a", 1_000, wrong);
    await g.attempt("a", 2_000, wrong);
    expect(g.retryAfterMs("a", 2_000)).toBe(0);
    expect(await g.attempt("a", 3_000, wrong)).toEqual({ outcome: "invalid" });
    expect(await g.attempt("a", 3_000, right)).toEqual({ outcome: "locked", retryAfterMs: 1_000 + WINDOW_MS - 3_000 });
    expect(g.retryAfterMs("b", 3_000)).toBe(0);
    // The oldest failure leaves the window: one more attempt is allowed, and a failure then refuses again.
    expect(g.retryAfterMs("a", 1_000 + WINDOW_MS)).toBe(0);
    await g.attempt("a", 1_000 + WINDOW_MS, wrong);
    expect(g.retryAfterMs("a", 1_000 + WINDOW_MS)).toBe(2_000 + WINDOW_MS - (1_000 + WINDOW_MS));
    // A success (once let through) clears the count.
    expect(await g.attempt("a", 2_000 + WINDOW_MS, right)).toEqual({ outcome: "valid" });
    expect(g.retryAfterMs("a", 2_000 + WINDOW_MS)).toBe(0);
  });

  it("HLF-CM-006 checks under way at once count as failures from their start: no more than maxFailures of them get through together", async () => {
    const g = guard({ maxPendingChecks: 10 });
    const held = Array.from({ length: 5 }, () => heldCheck());
    const attempts = held.map((h) => g.attempt("a", 1_000, h.check));
    const outcomes = await Promise.all(attempts.slice(3));
    expect(outcomes.every((o) => o.outcome === "locked")).toBe(true);
    for (const h of held.slice(0, 3)) h.release(false);
    expect(await Promise.all(attempts.slice(0, 3))).toEqual(Array(3).fill({ outcome: "invalid" }));
    expect(g.retryAfterMs("a", 1_000)).toBeGreaterThan(0);
  });

  it("HLF-CM-006 a success clears the failures that ended before it, not the marks of attempts still under way", async () => {
    const g = guard({ maxPendingChecks: 10 });
    await g.attempt("a", 1_000, wrong);
    const guess = heldCheck();
    const guessing = g.attempt("a", 1_000, guess.check);
    expect(await g.attempt("a", 1_000, right)).toEqual({ outcome: "valid" });
    guess.release(false);
    await guessing;
    // The guess under way still counts: two more failures lock the id.
    await g.attempt("a", 1_000, wrong);
    expect(g.retryAfterMs("a", 1_000)).toBe(0);
    await g.attempt("a", 1_000, wrong);
    expect(g.retryAfterMs("a", 1_000)).toBeGreaterThan(0);
  });

  it("HLF-CM-006 a locked-out id outlives any number of fresh ids, however many locked ids were failed after it", async () => {
    const g = guard({ maxFailures: 2, maxClients: 100 });
    const lock = async (id: string) => {
      await g.attempt(id, 1_000, wrong);
      await g.attempt(id, 1_000, wrong);
    };
    await lock("victim");
    for (let i = 0; i < 80; i++) await lock(`locked-${i}`);
    for (let i = 0; i < 500; i++) await g.attempt(`fresh-${i}`, 1_000, wrong);
    expect(g.retryAfterMs("victim", 1_000)).toBeGreaterThan(0);
    // Only when nothing but locked ids is left does the least recently failed of them go.
    for (let i = 0; i < 20; i++) await lock(`late-${i}`);
    expect(g.retryAfterMs("victim", 1_000)).toBe(0);
    expect(g.retryAfterMs("late-19", 1_000)).toBeGreaterThan(0);
  });

  it("HLF-CM-006 an id not counted (one that cannot be a subscriber) is never locked out", async () => {
    const g = guard();
    for (let i = 0; i < 5; i++) expect(await g.attempt(undefined, 1_000, wrong)).toEqual({ outcome: "invalid" });
  });

  it("remembers at most maxClients ids, forgetting ids that are not locked out before those that are", async () => {
    const g = guard({ maxFailures: 2, maxClients: 3 });
    // "locked" is the least recently failed id, and locked out.
    for (const id of ["locked", "locked", "b", "c", "d", "e"]) await g.attempt(id, 1_000, wrong);
    expect(g.retryAfterMs("locked", 1_000)).toBeGreaterThan(0);
    // Every id but the locked one failed once; the overflow forgot the oldest of those.
    for (const id of ["d", "e"]) await g.attempt(id, 1_000, wrong);
    expect(["d", "e"].map((id) => g.retryAfterMs(id, 1_000) > 0)).toEqual([true, true]);
    expect(g.retryAfterMs("locked", 1_000)).toBeGreaterThan(0);
    // All of them locked out: the least recently failed goes.
    await g.attempt("f", 1_000, wrong);
    await g.attempt("f", 1_000, wrong);
    expect(["locked", "d", "e", "f"].map((id) => g.retryAfterMs(id, 1_000) > 0)).toEqual([false, true, true, true]);
  });

  it("HLF-CM-006 runs at most maxPendingChecks checks at once and refuses the next at once, without counting it", async () => {
    const g = guard({ maxFailures: 1 });
    const held = [heldCheck(), heldCheck()];
    const [first, second] = held.map((h, i) => g.attempt(`held-${i}`, 1_000, h.check));
    expect(await g.attempt("other", 1_000, right)).toEqual({ outcome: "busy" });
    expect(g.retryAfterMs("other", 1_000)).toBe(0);
    for (const h of held) h.release(true);
    expect(await Promise.all([first, second])).toEqual([{ outcome: "valid" }, { outcome: "valid" }]);
    expect(await g.attempt("other", 1_000, right)).toEqual({ outcome: "valid" });
  });
});
