import { describe, expect, it } from "vitest";
import { KeyedLock, LockWaitTimeout } from "../../node/service/keyed-lock.ts";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe("KeyedLock", () => {
  it("runs the holders of one key one after the other, and of other keys at once", async () => {
    const lock = new KeyedLock();
    const order: string[] = [];
    const job = (name: string, ms: number) => async () => {
      order.push(`${name} start`);
      await sleep(ms);
      order.push(`${name} end`);
      return name;
    };
    const results = await Promise.all([lock.run("a", job("a1", 40)), lock.run("a", job("a2", 5)), lock.run("b", job("b1", 5))]);
    expect(results).toEqual(["a1", "a2", "b1"]);
    expect(order.indexOf("a2 start")).toBeGreaterThan(order.indexOf("a1 end"));
    expect(order.indexOf("b1 start")).toBeLessThan(order.indexOf("a1 end"));
  });

  it("a caller with maxWaitMs gives up once it has waited that long, without running, and those after it still keep the order", async () => {
    const lock = new KeyedLock();
    const ran: string[] = [];
    let firstDone = false;
    const first = lock.run("k", async () => {
      await sleep(150);
      firstDone = true;
      ran.push("first");
    });
    const impatient = lock.run("k", async () => void ran.push("impatient"), 20);
    const patient = lock.run("k", async () => {
      // Only after the first, though the impatient one before it gave up.
      expect(firstDone).toBe(true);
      ran.push("patient");
    });
    await expect(impatient).rejects.toBeInstanceOf(LockWaitTimeout);
    expect(firstDone).toBe(false);
    await Promise.all([first, patient]);
    expect(ran).toEqual(["first", "patient"]);
    // The key is free again: a caller with a wait runs at once.
    await expect(lock.run("k", async () => "again", 20)).resolves.toBe("again");
  });
});
