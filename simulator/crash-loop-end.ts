import { enc } from "./device-client.ts";
import { copyCounts, NOTIFICATION_TYPES, verifyFinalState, type AdminTwin, type ExpectedTwin, type Role, type Verdict } from "./crash-verify.ts";
import type { Sub } from "./crash-loop-model.ts";
import { setTimeout as sleep } from "node:timers/promises";
import { call } from "./crash-loop-ops.ts";
import type { LoopState } from "./crash-loop-state.ts";

/**
 * The end of a crash loop run (see crash-loop.ts): the nodes' metrics (retries, outbox depth),
 * the wait for the outboxes to drain, and the final read of every node's twins, subscribers and
 * notification feeds, checked against the ledger by verifyFinalState (crash-verify.ts).
 */

async function metrics(loop: LoopState, operatorId: string): Promise<string | undefined> {
  try {
    const res = await fetch(`${loop.sandbox.get(operatorId).deviceUrl}/metrics`, { signal: AbortSignal.timeout(5_000) });
    return res.ok ? await res.text() : undefined;
  } catch {
    return undefined;
  }
}

/** The federation messages the nodes retried so far, by their metrics (a killed node's count starts again). */
export async function sumRetries(loop: LoopState, operatorIds: readonly string[]): Promise<number> {
  let sum = 0;
  for (const id of operatorIds) sum += metricValue((await metrics(loop, id)) ?? "", "twinning_outbox_deliveries_total", { kind: "peer", result: "retry" });
  return sum;
}

/** Polls every node until all outboxes are empty (twice in a row), bounded. */
export async function drain(loop: LoopState, timeoutMs: number): Promise<{ drained: boolean; deadLetters: number }> {
  const deadline = Date.now() + timeoutMs;
  let quiet = 0;
  for (;;) {
    const texts = await Promise.all(loop.operatorIds.map((id) => metrics(loop, id)));
    const depth = texts.reduce((sum, t) => sum + (t === undefined ? Number.POSITIVE_INFINITY : metricValue(t, "twinning_outbox_depth")), 0);
    const deadLetters = texts.reduce((sum, t) => sum + (t === undefined ? 0 : metricValue(t, "twinning_outbox_dead_letters")), 0);
    quiet = depth === 0 ? quiet + 1 : 0;
    if (quiet >= 2) return { drained: true, deadLetters };
    if (Date.now() > deadline) {
      loop.problem(`outboxes not drained within ${timeoutMs} ms (depth ${depth})`);
      return { drained: false, deadLetters };
    }
    await sleep(200);
  }
}

/** Reads every node's final state and checks it against the ledger. */
export async function verify(loop: LoopState): Promise<Verdict> {
  const observed = new Map<string, AdminTwin[] | undefined>();
  for (const id of loop.operatorIds) {
    const res = await call(loop, id, "GET", "/admin/v1/twins?limit=10000", { token: loop.sandbox.get(id).adminToken });
    observed.set(id, res.kind === "ok" ? (res.body.twins as AdminTwin[]) : undefined);
  }
  const expected: ExpectedTwin[] = [...loop.twins.values()].map((t) => {
    const alt = t.alternative;
    const min = copyCounts(t.notes);
    const max = copyCounts(t.notes);
    if (alt) {
      for (const role of ["primary", "secondary"] as const) {
        for (const type of NOTIFICATION_TYPES) {
          min[role][type] = Math.min(t.notes[role][type], alt.notes[role][type]);
          max[role][type] = Math.max(t.notes[role][type], alt.notes[role][type]);
        }
      }
    }
    return {
      twinId: t.twinId,
      primaryAddress: t.phone.address,
      primaryOperatorId: t.phone.operatorId,
      secondaryAddress: t.watch.address,
      secondaryOperatorId: t.watch.operatorId,
      states: alt ? [t.state, alt.state] : [t.state],
      notificationsMin: min,
      notificationsMax: max,
    };
  });
  const subscribers: { address: string; operatorId: string; present: boolean }[] = [];
  const feeds = new Map<string, { type: string; twinId: string }[] | undefined>();
  for (const sub of loop.subs) {
    if (!sub.acked) continue;
    const res = await call(loop, sub.operatorId, "GET", `/admin/v1/subscribers/${enc(sub.address)}`, { token: loop.sandbox.get(sub.operatorId).adminToken });
    subscribers.push({ address: sub.address, operatorId: sub.operatorId, present: res.kind === "ok" });
    if (!sub.token) continue;
    const role: Role = sub.kind === "phone" ? "primary" : "secondary";
    feeds.set(`${role} ${sub.address}`, await feed(loop, sub, role));
  }
  return verifyFinalState({
    expected,
    observed,
    uncertainSecondaries: new Set(loop.subs.filter((s) => s.uncertain).map((s) => s.address)),
    feeds,
    subscribers,
  });
}

/** The subscriber's committed notifications: the SSE replay from the start (Last-Event-ID 0), up to the `: connected` mark. */
async function feed(loop: LoopState, sub: Sub, role: Role): Promise<{ type: string; twinId: string }[] | undefined> {
  loop.c.requests++;
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), 10_000);
  try {
    const res = await fetch(`${loop.sandbox.get(sub.operatorId).deviceUrl}/twinning/v1/${role}/${enc(sub.address)}/notifications`, {
      headers: { authorization: `Bearer ${sub.token}`, accept: "text/event-stream", "last-event-id": "0" },
      signal: controller.signal,
    });
    if (!res.ok || !res.body) return undefined;
    const decoder = new TextDecoder();
    let text = "";
    for await (const chunk of res.body) {
      text += decoder.decode(chunk, { stream: true });
      if (text.includes(": connected\n\n")) break;
    }
    controller.abort();
    const events: { type: string; twinId: string }[] = [];
    for (const frame of text.slice(0, text.indexOf(": connected\n\n")).split("\n\n")) {
      const data = frame.split("\n").find((l) => l.startsWith("data:"));
      if (!data) continue;
      const body = JSON.parse(data.slice(5)) as Record<string, { twinId: string }>;
      for (const [type, content] of Object.entries(body)) events.push({ type, twinId: content.twinId });
    }
    return events;
  } catch {
    return undefined;
  } finally {
    clearTimeout(timer);
    controller.abort();
  }
}

/** The sum of a Prometheus metric's samples whose labels include `labels`. */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(name) || (line[name.length] !== " " && line[name.length] !== "{")) continue;
    const labelText = line[name.length] === "{" ? line.slice(name.length + 1, line.indexOf("}")) : "";
    const have = new Map([...labelText.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1]!, m[2]!]));
    if (Object.entries(labels).every(([k, v]) => have.get(k) === v)) sum += Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return sum;
}
