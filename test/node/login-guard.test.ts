import { describe, expect, it } from "vitest";
import { LoginGuard } from "../../node/oauth/login-guard.ts";

const WINDOW_MS = 60_000;
const guard = (over: Partial<ConstructorParameters<typeof LoginGuard>[0]> = {}) => new LoginGuard({ maxFailures: 3, windowMs: WINDOW_MS, maxPendingChecks: 2, maxClients: 100, ...over });

describe("LoginGuard", () => {
  it("HLF-CM-006 refuses a client id after maxFailures failures in the window, until the oldest leaves it; others are not affected; a success clears the count", () => {
    const g = guard();
    g.failed("a", 1_000);
    g.failed("a", 2_000);
    expect(g.retryAfterMs("a", 2_000)).toBe(0);
    g.failed("a", 3_000);
    expect(g.retryAfterMs("a", 3_000)).toBe(1_000 + WINDOW_MS - 3_000);
    expect(g.retryAfterMs("b", 3_000)).toBe(0);
    // The oldest failure leaves the window: one more attempt is allowed, and a failure then refuses again.
    expect(g.retryAfterMs("a", 1_000 + WINDOW_MS)).toBe(0);
    g.failed("a", 1_000 + WINDOW_MS);
    expect(g.retryAfterMs("a", 1_000 + WINDOW_MS)).toBe(2_000 + WINDOW_MS - (1_000 + WINDOW_MS));
    g.succeeded("a");
    expect(g.retryAfterMs("a", 1_000 + WINDOW_MS)).toBe(0);
  });

  it("remembers at most maxClients ids, forgetting the oldest first", () => {
    const g = guard({ maxFailures: 1, maxClients: 2 });
    for (const id of ["a", "b", "c"]) g.failed(id, 1_000);
    expect(["a", "b", "c"].map((id) => g.retryAfterMs(id, 1_000) > 0)).toEqual([false, true, true]);
  });

  it("HLF-CM-006 runs at most maxPendingChecks checks at once and refuses the next at once", async () => {
    const g = guard();
    const release: (() => void)[] = [];
    const slow = () => g.check(() => new Promise<boolean>((resolve) => release.push(() => resolve(true))));
    const [first, second] = [slow(), slow()];
    expect(await g.check(async () => true)).toBeUndefined();
    for (const r of release) r();
    expect(await Promise.all([first, second])).toEqual([true, true]);
    expect(await g.check(async () => true)).toBe(true);
  });
});
