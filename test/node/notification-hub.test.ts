import { describe, expect, it } from "vitest";
import { NotificationHub } from "../../node/notifications/notification-hub.ts";

/** The hub's long polls on an activation code (HLF-SD-005's `wait`), on real timers. */
describe("NotificationHub.waitForCode", () => {
  it("HLF-SD-005 a long poll whose signal has already aborted (the client left, the node is stopping) ends at once, not after its wait", async () => {
    const hub = new NotificationHub();
    const gone = AbortSignal.abort();
    // A wait far longer than the test's own timeout: only an immediate end passes.
    await expect(hub.waitForCode("code-1", 600_000, gone)).resolves.toBeUndefined();
  });

  it("HLF-SD-005 a long poll ends when its code is used, or when its signal aborts meanwhile", async () => {
    const hub = new NotificationHub();
    const used = hub.waitForCode("code-2", 600_000);
    hub.codeUsed("code-2");
    await expect(used).resolves.toBeUndefined();
    const controller = new AbortController();
    const left = hub.waitForCode("code-3", 600_000, controller.signal);
    controller.abort();
    await expect(left).resolves.toBeUndefined();
  });
});
