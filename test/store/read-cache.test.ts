import { describe, expect, it } from "vitest";
import { ReadCache } from "../../node/store/sqlite/read-cache.ts";

/** The cache alone, driven by a generation and a bypass the test controls. */
function harness(maxEntries = 100) {
  const state = { generation: 0, bypass: false, loads: 0 };
  const cache = new ReadCache({ generation: () => state.generation, bypass: () => state.bypass, maxEntries });
  const read = (key: string, value: unknown = { key, at: state.generation }) =>
    cache.get(key, () => {
      state.loads += 1;
      return value;
    });
  return { state, cache, read };
}

describe("ReadCache", () => {
  it("serves a key from memory until its table's generation moves, then reads again", () => {
    const { state, read } = harness();
    expect(read("a")).toEqual({ key: "a", at: 0 });
    expect(read("a")).toEqual({ key: "a", at: 0 });
    expect(state.loads).toBe(1);
    state.generation += 1;
    expect(read("a")).toEqual({ key: "a", at: 1 });
    expect(state.loads).toBe(2);
  });

  it("reads a key longer than 256 characters through, never keeping it (the bound counts entries, not bytes)", () => {
    const { state, read } = harness();
    const long = "k".repeat(257);
    read(long);
    read(long);
    expect(state.loads).toBe(2);
    read("k".repeat(256));
    read("k".repeat(256));
    expect(state.loads).toBe(3);
  });

  it("caches a miss (undefined) as well as a hit", () => {
    const { cache } = harness();
    let loads = 0;
    const miss = () => {
      loads += 1;
      return loads === 1 ? undefined : "late";
    };
    expect(cache.get("none", miss)).toBeUndefined();
    expect(cache.get("none", miss)).toBeUndefined();
    expect(loads).toBe(1);
  });

  it("with keepMisses false, keeps hits but never a miss (keys unauthenticated callers choose cannot fill it)", () => {
    const cache = new ReadCache({ generation: () => 0, bypass: () => false, maxEntries: 2, keepMisses: false });
    let loads = 0;
    const miss = () => ((loads += 1), undefined);
    for (let i = 0; i < 5; i++) expect(cache.get(`none-${i % 2}`, miss)).toBeUndefined();
    expect(loads).toBe(5);
    let hits = 0;
    const hit = () => ((hits += 1), "found");
    expect([cache.get("a", hit), cache.get("a", hit), cache.get("none-0", miss)]).toEqual(["found", "found", undefined]);
    expect(hits).toBe(1);
    expect(cache.get("a", hit)).toBe("found");
    expect(hits).toBe(1);
  });

  it("keeps nothing read while bypassed (inside a transaction), nor what a write overtook during the load", () => {
    const { state, cache, read } = harness();
    state.bypass = true;
    read("a");
    state.bypass = false;
    read("a");
    expect(state.loads).toBe(2);
    // A load during which the generation moves is returned but not kept.
    cache.get("b", () => {
      state.loads += 1;
      state.generation += 1;
      return "stale";
    });
    expect(read("b", "fresh")).toBe("fresh");
  });

  it("hands out frozen values, nested ones included, so no caller can change what others read", () => {
    const { read } = harness();
    const value = read("list", [{ twinId: "t1", status: "On" }]) as { status: string }[];
    expect(Object.isFrozen(value) && Object.isFrozen(value[0])).toBe(true);
    expect(() => {
      value[0]!.status = "Off";
    }).toThrow(TypeError);
  });

  it("holds at most maxEntries, dropping the oldest first", () => {
    const { state, read } = harness(2);
    read("a");
    read("b");
    read("c");
    expect(state.loads).toBe(3);
    read("c");
    read("b");
    expect(state.loads).toBe(3);
    read("a");
    expect(state.loads).toBe(4);
  });
});

describe("SqliteDatabase generations (what empties which cache)", () => {
  it("a write moves only its table's generation; a statement that may write anything moves all; queries move none", async () => {
    const { SqliteDatabase } = await import("../../node/store/sqlite/sqlite-database.ts");
    const d = new SqliteDatabase(":memory:", Date.UTC(2030, 0, 1));
    try {
      const both = () => [d.generationOf("subscribers"), d.generationOf("twins")];
      const start = both();
      d.sql(`SELECT * FROM subscribers WHERE address = ?`).get("tel:+1");
      d.sql(`SELECT * FROM twins WHERE twin_id = ?`).get("t");
      expect(both()).toEqual(start);
      d.sql(`UPDATE twins SET status = ? WHERE twin_id = ?`).run("Off", "t");
      expect(both()).toEqual([start[0], start[1]! + 1]);
      d.sql(`DELETE FROM subscribers WHERE address = ?`).run("tel:+1");
      expect(both()).toEqual([start[0]! + 1, start[1]! + 1]);
      // RETURNING makes an INSERT a reader, still a writer of its table.
      d.sql(`INSERT INTO subscribers (address, twinning_enabled, credential_hash, updated_at) VALUES (?, 1, 'scrypt:x', 0) RETURNING address`).get("tel:+2");
      expect(both()).toEqual([start[0]! + 2, start[1]! + 1]);
      // Not a plain INSERT/UPDATE/DELETE: every table counts as written.
      d.sql(`WITH x AS (SELECT 1) DELETE FROM notifications WHERE id IN (SELECT * FROM x)`).run();
      expect(both()).toEqual([start[0]! + 3, start[1]! + 2]);
      expect(d.inTransaction).toBe(false);
      d.write(() => expect(d.inTransaction).toBe(true));
    } finally {
      d.close();
    }
  });
});
