import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { GroupCommit } from "../../node/store/sqlite/group-commit.ts";
import { SqliteDatabase } from "../../node/store/sqlite/sqlite-database.ts";

/** GroupCommit on a real (in-memory) database, with operations that write, refuse or break the transaction. */
describe("GroupCommit", () => {
  let d: SqliteDatabase;
  let group: GroupCommit;
  const insert = (address: string) => () => {
    d.write(() => d.sql(`INSERT INTO subscribers (address, twinning_enabled, credential_hash, updated_at) VALUES (?, 1, 'scrypt:x', 0)`).run(address));
    return address;
  };
  const stored = () => (d.sql(`SELECT address FROM subscribers ORDER BY address`).all() as { address: string }[]).map((r) => r.address);

  beforeEach(() => {
    d = new SqliteDatabase(":memory:", Date.UTC(2030, 0, 1));
    group = new GroupCommit(d);
  });
  afterEach(() => d.close());

  it("answers each operation of a turn after their one commit; a refused one undoes only its own writes", async () => {
    const refused = () => {
      d.write(() => {
        d.sql(`INSERT INTO subscribers (address, twinning_enabled, credential_hash, updated_at) VALUES ('tel:+9', 1, 'scrypt:x', 0)`).run();
        throw new Error("refused after writing");
      });
    };
    const seenAtAnswer: boolean[] = [];
    const answers = [group.run(insert("tel:+1")), group.run(refused), group.run(insert("tel:+2"))].map((p) => p.finally(() => seenAtAnswer.push(d.inTransaction)));
    const results = await Promise.allSettled(answers);
    expect(results.map((r) => r.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
    expect(seenAtAnswer).toEqual([false, false, false]);
    expect(stored()).toEqual(["tel:+1", "tel:+2"]);
  });

  it("fails the whole group, and commits none of it, when the transaction itself is lost", async () => {
    const breaksTheTransaction = () => {
      d.sql("ROLLBACK").run(); // as SQLite does on an I/O error or a full disk
      throw new Error("disk I/O error");
    };
    const results = await Promise.allSettled([group.run(insert("tel:+1")), group.run(breaksTheTransaction), group.run(insert("tel:+2"))]);
    expect(results.map((r) => r.status)).toEqual(["rejected", "rejected", "rejected"]);
    expect(stored()).toEqual([]);
    // The next group is unaffected.
    await expect(group.run(insert("tel:+3"))).resolves.toBe("tel:+3");
    expect(stored()).toEqual(["tel:+3"]);
  });

  it("undoes all of a refused operation, also what it wrote outside a write of its own or after a promise", async () => {
    const writesThenThrows = () => {
      d.sql(`INSERT INTO subscribers (address, twinning_enabled, credential_hash, updated_at) VALUES ('tel:+8', 1, 'scrypt:x', 0)`).run();
      throw new Error("refused");
    };
    const returnsAPromise = () => {
      d.sql(`INSERT INTO subscribers (address, twinning_enabled, credential_hash, updated_at) VALUES ('tel:+7', 1, 'scrypt:x', 0)`).run();
      return Promise.resolve("too late");
    };
    const results = await Promise.allSettled([group.run(writesThenThrows), group.run(returnsAPromise), group.run(insert("tel:+1"))]);
    expect(results.map((r) => r.status)).toEqual(["rejected", "rejected", "fulfilled"]);
    expect(stored()).toEqual(["tel:+1"]);
  });

  it("flush commits what is queued at once (before another write, or a close)", async () => {
    const queued = group.run(insert("tel:+1"));
    group.flush();
    expect(d.inTransaction).toBe(false);
    expect(stored()).toEqual(["tel:+1"]);
    await expect(queued).resolves.toBe("tel:+1");
  });

  it("a write that follows a group whose transaction is lost does not commit: the group's failure is thrown to it as well (a replay-cache row must not be lost while its message's effect commits)", async () => {
    d.beforeWrite = () => group.flush();
    const breaksTheTransaction = () => {
      d.sql("ROLLBACK").run(); // as SQLite does on an I/O error or a full disk
      throw new Error("disk I/O error");
    };
    const queued = Promise.allSettled([group.run(insert("tel:+1")), group.run(breaksTheTransaction)]);
    // Asked in the same turn, outside the group (as the store's other writes are).
    expect(() => d.write(insert("tel:+2"))).toThrow("disk I/O error");
    expect((await queued).map((r) => r.status)).toEqual(["rejected", "rejected"]);
    expect(stored()).toEqual([]);
    // The next write is unaffected.
    expect(d.write(insert("tel:+3"))).toBe("tel:+3");
    expect(stored()).toEqual(["tel:+3"]);
  });

  it("a group whose transaction is lost in its own turn rejects its operations and throws nowhere else", async () => {
    const results = await Promise.allSettled([
      group.run(() => {
        d.sql("ROLLBACK").run();
        throw new Error("disk I/O error");
      }),
    ]);
    expect(results.map((r) => r.status)).toEqual(["rejected"]);
    // An uncaught exception would fail the run; wait a turn for one to surface.
    await new Promise((r) => setImmediate(r));
  });

  it("runs operations asked in different turns in different transactions, in order", async () => {
    const first = group.run(insert("tel:+1"));
    await new Promise((r) => setImmediate(r));
    const second = group.run(() => stored());
    await first;
    expect(await second).toEqual(["tel:+1"]);
  });
});
