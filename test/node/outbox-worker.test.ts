import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { callbackSlotsPerSubscriber, OutboxWorker, slotsPerKind, type BatchOutcome } from "../../node/notifications/outbox-worker.ts";
import type { OutboxEntry } from "../../node/store/store-port.ts";
import { SqliteStore } from "../../node/store/sqlite/sqlite-store.ts";
import { eventually } from "../helpers/federation-fixture.ts";
import { activated, OP, P1, P2, S1, S2, SECOND, subscribe, subscription, T0 } from "../store/store-fixtures.ts";

/**
 * The delivery worker's scheduling, on a real SQLite store. The peers are functions here: what
 * is under test is which lane the worker sends when, not the network (test/federation covers
 * the same worker between real nodes).
 */
const dirs: string[] = [];
const stores: SqliteStore[] = [];
const workers: OutboxWorker[] = [];
afterEach(async () => {
  for (const w of workers.splice(0)) await w.stop();
  for (const s of stores.splice(0)) await s.close();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function storeInTempDir(): SqliteStore {
  const dir = mkdtempSync(join(tmpdir(), "outbox-worker-"));
  dirs.push(dir);
  const store = new SqliteStore({ file: join(dir, "node.sqlite") });
  stores.push(store);
  return store;
}

const message = (operatorId: string) => ({ operatorId, method: "PUT" as const, path: `/twins/${randomUUID()}/status`, msgId: randomUUID(), body: { status: "Off", version: 2, changedBy: "primary" } });

function startWorker(
  store: SqliteStore,
  deliverBatch: (entries: OutboxEntry[]) => Promise<BatchOutcome[]>,
  options: { deliver?: (entry: OutboxEntry) => Promise<void>; nowMs?: () => number } = {},
): OutboxWorker {
  const worker = new OutboxWorker({
    store,
    deliver: options.deliver ?? (async () => {}),
    deliverBatch,
    policy: { retryBaseDelayMs: 10, retryMaxDelayMs: 50, maxAttempts: 20, maxAgeMs: 60_000 },
    concurrency: 4,
    nowMs: options.nowMs ?? (() => Date.now()),
    logger: pino({ level: "silent" }),
  });
  workers.push(worker);
  worker.start();
  return worker;
}

/** The `i`th of a test's many secondaries (each its own subscriber). */
const secondary = (i: number) => `tel:+1555100${String(i).padStart(4, "0")}`;

/**
 * A store with `callbacks` callback lanes (a notification to each of as many subscribers, one
 * subscription each), and a worker whose callback receivers never answer until `release`; peer
 * messages are delivered at once and recorded in `delivered`.
 */
async function stuckCallbacks(callbacks: number, nowMs: () => number) {
  const store = storeInTempDir();
  for (let i = 0; i < callbacks; i++) {
    const twin = await activated(store, P1, secondary(i));
    await subscribe(store, secondary(i), "secondary");
    await store.changeTwinStatus({ twinId: twin.twinId, status: "Off", changedBy: "primary", origin: OP, nowMs: T0 + SECOND });
  }
  let release!: () => void;
  const receiversAnswer = new Promise<void>((r) => (release = r));
  const state = { store, callbacksUnderWay: 0, delivered: [] as string[], release: () => release() };
  const worker = startWorker(
    store,
    async (entries) => (state.delivered.push(...entries.map((e) => e.target)), entries.map(() => ({ outcome: "delivered" as const }))),
    { nowMs, deliver: async () => (state.callbacksUnderWay++, await receiversAnswer) },
  );
  return { ...state, worker, get underWay() { return state.callbacksUnderWay; } };
}

describe("outbox worker", () => {
  it("HLF-IC-007 a lane waiting on a slow peer holds back only itself: another peer's message, queued after, is delivered meanwhile", async () => {
    const store = storeInTempDir();
    let release!: () => void;
    const slowPeerAnswers = new Promise<void>((r) => (release = r));
    const delivered: string[] = [];
    const worker = startWorker(store, async (entries) => {
      if (entries[0]!.target === "002-01") await slowPeerAnswers;
      delivered.push(...entries.map((e) => e.target));
      return entries.map(() => ({ outcome: "delivered" as const }));
    });
    await store.enqueuePeerMessages([message("002-01")], Date.now());
    worker.wake();
    await new Promise((r) => setTimeout(r, 50)); // the slow lane is under way
    await store.enqueuePeerMessages([message("003-01")], Date.now());
    worker.wake();
    await eventually(async () => delivered, (d) => d.includes("003-01"), 5_000);
    expect(delivered).toEqual(["003-01"]);
    release();
    await eventually(async () => (await store.outboxStats()).pending, (n) => n === 0, 5_000);
    expect(delivered).toEqual(["003-01", "002-01"]);
  });

  it("HLF-IC-007 a lane head handed to wake is sent at once, before the worker looks at the outbox; a busy lane's is not sent twice", async () => {
    const store = storeInTempDir();
    const steps: string[] = [];
    const dueOutboxHeads = store.dueOutboxHeads.bind(store);
    // Observed, not replaced: the real store answers.
    store.dueOutboxHeads = async (nowMs, limit) => (steps.push("outbox looked at"), dueOutboxHeads(nowMs, limit));
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const sent: number[] = [];
    const worker = startWorker(store, async (entries) => {
      steps.push(`sent ${entries.map((e) => e.id).join(",")}`);
      sent.push(...entries.map((e) => e.id));
      await held;
      return entries.map(() => ({ outcome: "delivered" as const }));
    });
    await eventually(async () => steps.length, (n) => n > 0, 5_000); // the worker's first round, on an empty outbox
    steps.length = 0;
    const [id] = await store.enqueuePeerMessages([message("002-01")], Date.now());
    const [head] = await store.nextOutboxEntriesInLane("peer:002-01", 0, Date.now(), 1);
    expect(head?.id).toBe(id);
    worker.wake([head!]);
    expect(steps[0]).toBe(`sent ${id}`);
    // Handed again while its lane is under way: not sent a second time.
    worker.wake([head!]);
    release();
    await eventually(async () => (await store.outboxStats()).pending, (n) => n === 0, 5_000);
    expect(sent).toEqual([id]);
  });

  it("HLF-IC-007 a lane sends its next message once the previous answer is in, without waiting for that completion to commit; it ends only after the commit", async () => {
    const store = storeInTempDir();
    const complete = store.completeOutboxEntries.bind(store);
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const completions: number[][] = [];
    // Observed and held, not replaced: the real store completes once released.
    store.completeOutboxEntries = async (ids) => (completions.push([...ids]), await held, complete(ids));
    const [first] = await store.enqueuePeerMessages([message("002-01")], Date.now());
    let second: number | undefined;
    const sent: number[] = [];
    const worker = startWorker(store, async (entries) => {
      sent.push(...entries.map((e) => e.id));
      // The next toggle, queued while this message is on its way.
      if (second === undefined) [second] = await store.enqueuePeerMessages([message("002-01")], Date.now());
      return entries.map(() => ({ outcome: "delivered" as const }));
    });
    worker.wake();
    await eventually(async () => sent.length, (n) => n === 2, 5_000);
    expect(sent).toEqual([first, second]);
    expect(completions[0]).toEqual([first]);
    expect((await store.outboxStats()).pending).toBe(2); // neither completion has committed yet
    // The lane is still under way until they have: no round takes the first for a pending head.
    await new Promise((r) => setTimeout(r, 150));
    expect(sent).toEqual([first, second]);
    release();
    await eventually(async () => (await store.outboxStats()).pending, (n) => n === 0, 5_000);
    expect(sent).toEqual([first, second]);
  });

  it("HLF-IC-007 a message queued while its lane's last completion commits is sent by that lane when the worker is woken, without waiting for the commit", async () => {
    const store = storeInTempDir();
    const complete = store.completeOutboxEntries.bind(store);
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let completing = 0;
    // Observed and held, not replaced: the real store completes once released.
    store.completeOutboxEntries = async (ids) => (completing++, await held, complete(ids));
    const sent: number[] = [];
    const worker = startWorker(store, async (entries) => {
      sent.push(...entries.map((e) => e.id));
      return entries.map(() => ({ outcome: "delivered" as const }));
    });
    const [first] = await store.enqueuePeerMessages([message("002-01")], Date.now());
    worker.wake();
    // Delivered, the lane found nothing after it, and its completion is held.
    await eventually(async () => completing, (n) => n === 1, 5_000);
    expect(sent).toEqual([first]);
    // The next toggle commits, and wakes the worker as a commit does.
    const [second] = await store.enqueuePeerMessages([message("002-01")], Date.now());
    worker.wake();
    await eventually(async () => sent.length, (n) => n === 2, 5_000);
    expect(sent).toEqual([first, second]);
    expect((await store.outboxStats()).pending).toBe(2); // the first's completion has still not committed
    release();
    await eventually(async () => (await store.outboxStats()).pending, (n) => n === 0, 5_000);
    expect(sent).toEqual([first, second]);
  });

  it("HLF-IC-007 a wake that comes after the worker's last look at the outbox and before it waits is not lost: the message goes at once, not at the next timer", async () => {
    const store = storeInTempDir();
    const nextDue = store.nextOutboxDueAtMs.bind(store);
    let queued: Promise<number | undefined> | undefined;
    const sent: number[] = [];
    // Observed, not replaced: as the real store answers the round's last look (nothing due, so
    // the worker is about to wait a minute), a commit queues a message and wakes the worker.
    store.nextOutboxDueAtMs = async () => {
      const answer = await nextDue();
      queued ??= Promise.resolve().then(async () => {
        const [id] = await store.enqueuePeerMessages([message("002-01")], Date.now());
        worker.wake();
        return id;
      });
      return answer;
    };
    const worker = startWorker(store, async (entries) => {
      sent.push(...entries.map((e) => e.id));
      return entries.map(() => ({ outcome: "delivered" as const }));
    });
    await eventually(async () => queued, (q) => q !== undefined, 5_000);
    const id = await queued;
    await eventually(async () => sent, (s) => s.length > 0, 2_000);
    expect(sent).toEqual([id]);
  });

  it("HLF-IC-007 a refusal whose dead letter cannot be written (disk full) stops its lane: what follows is not completed while the refused message is still pending", async () => {
    const store = storeInTempDir();
    const fail = store.failOutboxEntry.bind(store);
    const complete = store.completeOutboxEntries.bind(store);
    let failures = 1;
    // Fault injection on the real store: the first write-back fails.
    store.failOutboxEntry = async (input) => {
      if (failures-- > 0) throw new Error("SQLITE_FULL: database or disk is full");
      return fail(input);
    };
    const deadWhenCompleted: number[] = [];
    store.completeOutboxEntries = async (ids) => (deadWhenCompleted.push((await store.outboxStats()).dead), complete(ids));
    const [refused, next] = await store.enqueuePeerMessages([message("002-01"), message("002-01")], Date.now());
    const worker = startWorker(store, async (entries) => entries.map((e) => (e.id === refused ? { outcome: "permanent" as const, error: "peer answered 400" } : { outcome: "delivered" as const })));
    worker.wake();
    await eventually(async () => (await store.outboxStats()).pending, (n) => n === 0, 10_000);
    expect(failures).toBeLessThan(0);
    // The message after the refused one was completed only once the refusal was a dead letter.
    expect(deadWhenCompleted).toEqual([1]);
    expect((await store.listDeadLetters(10)).map((e) => e.id)).toEqual([refused]);
    expect(next).toBeGreaterThan(refused!);
  });

  it("HLF-IC-007 a store failure while a lane is delivered does not stop the worker: the lane is taken again and nothing is lost", async () => {
    const store = storeInTempDir();
    const complete = store.completeOutboxEntries;
    let failures = 1;
    // Fault injection on the real store: its completion write fails once (disk full).
    store.completeOutboxEntries = async (ids) => {
      if (failures-- > 0) throw new Error("SQLITE_FULL: database or disk is full");
      return complete.call(store, ids);
    };
    const sent: string[] = [];
    const worker = startWorker(store, async (entries) => {
      sent.push(...entries.map((e) => e.id.toString()));
      return entries.map(() => ({ outcome: "delivered" as const }));
    });
    const ids = await store.enqueuePeerMessages([message("002-01"), message("002-01")], Date.now());
    worker.wake();
    await eventually(async () => (await store.outboxStats()).pending, (n) => n === 0, 10_000);
    // The first attempt's completion was lost, so the lane was sent again: at least once, in order.
    expect(failures).toBeLessThan(0);
    expect(sent.slice(-2)).toEqual(ids.map(String));
    await store.enqueuePeerMessages([message("002-01")], Date.now());
    worker.wake();
    await eventually(async () => (await store.outboxStats()).pending, (n) => n === 0, 5_000);
    expect(sent.length).toBe(5);
  });
  it("HLF-IC-007 callbacks stuck on receivers that never answer leave a slot to the federation: a peer's message is delivered meanwhile", async () => {
    const t = await stuckCallbacks(4, () => T0 + 2 * SECOND);
    expect((await t.store.outboxStats()).pending).toBe(4);
    t.worker.wake();
    await eventually(async () => t.underWay, (n) => n === slotsPerKind(4), 5_000);
    await t.store.enqueuePeerMessages([message("002-01")], T0 + 2 * SECOND);
    t.worker.wake();
    await eventually(async () => t.delivered, (d) => d.length === 1, 5_000);
    expect(t.delivered).toEqual(["002-01"]);
    expect(t.underWay).toBe(slotsPerKind(4));
    expect(slotsPerKind(4)).toBe(3);
    t.release();
    await eventually(async () => (await t.store.outboxStats()).pending, (n) => n === 0, 5_000);
    expect(t.underWay).toBe(4);
  });

  it("HLF-IC-007 while callbacks wait for a slot of their kind, a peer's message that falls due later is still sent when due (no wait for a lane to end)", async () => {
    const started = Date.now();
    const clock = () => T0 + 2 * SECOND + (Date.now() - started);
    const t = await stuckCallbacks(5, clock);
    try {
      // Due in 300 ms, queued without a wake: only the worker's own next look can find it.
      await t.store.enqueuePeerMessages([message("002-01")], clock(), clock() + 300);
      t.worker.wake();
      await eventually(async () => t.underWay, (n) => n === slotsPerKind(4), 5_000);
      await eventually(async () => t.delivered, (d) => d.length === 1, 3_000);
      expect(t.delivered).toEqual(["002-01"]);
    } finally {
      t.release();
    }
  });

  it("HLF-PD-007 one subscriber's callbacks hold at most a quarter of the callback slots: a subscriber whose receivers never answer, with a subscription per slot, does not hold back another's callback", async () => {
    const store = storeInTempDir();
    const twin = await activated(store, P1, S1);
    const other = await activated(store, P2, S2);
    for (let i = 0; i < 15; i++) await store.createSubscription({ subscription: subscription(S1, "secondary", { notifyUrl: `https://slow.example/${i}` }), maxPerSubscriber: 20 });
    await subscribe(store, S2, "secondary", { notifyUrl: "https://fast.example/" });
    await store.changeTwinStatus({ twinId: twin.twinId, status: "Off", changedBy: "primary", origin: OP, nowMs: T0 + SECOND });
    // The other subscriber's notification is the newest entry: by due time and id, it is last.
    await store.changeTwinStatus({ twinId: other.twinId, status: "Off", changedBy: "primary", origin: OP, nowMs: T0 + 2 * SECOND });
    let release!: () => void;
    const slowAnswers = new Promise<void>((r) => (release = r));
    const underWay = new Set<string>();
    const fast: string[] = [];
    const worker = new OutboxWorker({
      store,
      deliver: async (entry) => {
        if (entry.target.startsWith("https://fast.example")) return void fast.push(entry.target);
        underWay.add(entry.lane);
        await slowAnswers;
      },
      policy: { retryBaseDelayMs: 10, retryMaxDelayMs: 50, maxAttempts: 20, maxAgeMs: 60_000 },
      concurrency: 16,
      nowMs: () => T0 + 3 * SECOND,
      logger: pino({ level: "silent" }),
    });
    workers.push(worker);
    worker.start();
    try {
      await eventually(async () => fast, (f) => f.length === 1, 5_000);
      expect(callbackSlotsPerSubscriber(16)).toBe(3);
      expect(underWay.size).toBe(callbackSlotsPerSubscriber(16));
    } finally {
      release();
    }
    await eventually(async () => (await store.outboxStats()).pending, (n) => n === 0, 5_000);
    expect(underWay.size).toBe(15);
  });

  it("HLF-PD-007 callbacks older than the delivery's maxAge are not sent late: they become dead letters without a call", async () => {
    const store = storeInTempDir();
    const twin = await activated(store, P1, S1);
    await subscribe(store, S1, "secondary");
    await subscribe(store, S1, "secondary");
    for (let i = 0; i < 3; i++) await store.changeTwinStatus({ twinId: twin.twinId, status: i % 2 ? "On" : "Off", changedBy: "primary", origin: OP, nowMs: T0 + SECOND });
    expect((await store.outboxStats()).pending).toBe(6);
    let calls = 0;
    // The receivers' entries waited past maxAgeMs (60 s here), say behind one that never answered.
    const worker = startWorker(store, async () => [], { nowMs: () => T0 + SECOND + 60_000, deliver: async () => void calls++ });
    worker.wake();
    await eventually(async () => await store.outboxStats(), (x) => x.pending === 0, 5_000);
    expect(await store.outboxStats()).toEqual({ pending: 0, dead: 6 });
    expect(calls).toBe(0);
    expect((await store.listDeadLetters(10)).every((e) => /maxAgeSeconds/.test(e.lastError ?? ""))).toBe(true);
  });
});
