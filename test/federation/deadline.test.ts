import { describe, expect, it } from "vitest";
import { withDeadline } from "../../peers/deadline.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("withDeadline: one deadline for a whole outgoing call", () => {
  it("aborts a call that outlives it, with a TimeoutError", async () => {
    let seen: AbortSignal | undefined;
    const call = withDeadline(20, (signal) => {
      seen = signal;
      return new Promise((_resolve, reject) => signal.addEventListener("abort", () => reject(signal.reason)));
    });
    await expect(call).rejects.toMatchObject({ name: "TimeoutError" });
    expect(seen?.aborted).toBe(true);
  });

  it("leaves a finished call's signal alone: its timer is cleared when the call ends", async () => {
    let seen: AbortSignal | undefined;
    expect(await withDeadline(20, async (signal) => ((seen = signal), "answer"))).toBe("answer");
    await sleep(60);
    expect(seen?.aborted).toBe(false);
  });

  it("clears its timer when the call fails too", async () => {
    let seen: AbortSignal | undefined;
    await expect(withDeadline(20, async (signal) => ((seen = signal), Promise.reject(new Error("refused"))))).rejects.toThrow("refused");
    await sleep(60);
    expect(seen?.aborted).toBe(false);
  });
});
