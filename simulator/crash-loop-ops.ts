import { setTimeout as sleep } from "node:timers/promises";
import { emptyCounts } from "./crash-verify.ts";
import { enc, messageId } from "./device-client.ts";
import { applied, nodesOf, type Op, type Outcome, type TwinRec } from "./crash-loop-model.ts";
import type { LoopState } from "./crash-loop-state.ts";

/**
 * The crash loop's sending of operations (see crash-loop.ts): each operation's HTTP requests to
 * its nodes, the ledger updated from a definite answer, and the device's retry of an unknown
 * outcome once its nodes are back.
 */

const REQUEST_TIMEOUT_MS = 15_000;

/** One request to a node's device or admin API (counted), its answer sorted into an Outcome. */
export async function call(loop: LoopState, operatorId: string, method: string, path: string, options: { token?: string | undefined; json?: unknown; form?: string; basic?: string } = {}): Promise<Outcome> {
  loop.c.requests++;
  const node = loop.sandbox.get(operatorId);
  const headers: Record<string, string> = {};
  if (options.token) headers.authorization = `Bearer ${options.token}`;
  if (options.basic) headers.authorization = `Basic ${options.basic}`;
  let body: string | undefined;
  if (options.json !== undefined) {
    body = JSON.stringify(options.json);
    headers["content-type"] = "application/json";
  }
  if (options.form !== undefined) {
    body = options.form;
    headers["content-type"] = "application/x-www-form-urlencoded";
  }
  try {
    const res = await fetch(`${node.deviceUrl}${path}`, { method, headers, ...(body !== undefined ? { body } : {}), signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
    const text = await res.text();
    let parsed: any = text;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      /* not JSON */
    }
    if (res.status >= 200 && res.status < 300) return { kind: "ok", status: res.status, body: parsed };
    if (res.status >= 500 || res.status === 408) return { kind: "unknown", why: `${res.status} ${messageId(parsed) ?? ""}` };
    return { kind: "refused", status: res.status, id: messageId(parsed) };
  } catch (error) {
    const e = error as Error & { cause?: { code?: string } };
    return { kind: "unknown", why: e.cause?.code ?? e.name };
  }
}

/** Runs (or retries) an operation: its answer updates the ledger; an unknown outcome is kept for a retry. */
export async function execute(loop: LoopState, op: Op): Promise<void> {
  const retry = op.attempts > 0;
  op.attempts++;
  const outcome = await send(loop, op, retry);
  if (outcome === "unknown") {
    if (!retry) {
      loop.c.unknownOutcomes++;
      loop.unknownByKind[op.kind] = (loop.unknownByKind[op.kind] ?? 0) + 1;
    }
    loop.pending.push(op);
    return;
  }
  if (retry) loop.c.settledByRetry++;
}

/** One attempt; "unknown" when it got no definite answer. */
async function send(loop: LoopState, op: Op, retry: boolean): Promise<"done" | "unknown"> {
  switch (op.kind) {
    case "provision":
      return sendProvision(loop, op);
    case "pair":
      return sendPair(loop, op, retry);
    default:
      return sendTwinOp(loop, op, retry);
  }
}

async function sendProvision(loop: LoopState, op: Extract<Op, { kind: "provision" }>): Promise<"done" | "unknown"> {
  const { sub } = op;
  const node = loop.sandbox.get(sub.operatorId);
  if (!sub.acked) {
    const put = await call(loop, sub.operatorId, "PUT", `/admin/v1/subscribers/${enc(sub.address)}`, {
      token: node.adminToken,
      json: { subscriber: { twinning: true, credential: sub.credential } },
    });
    if (put.kind === "unknown") return "unknown";
    if (put.kind === "refused") {
      loop.unexpected(`provisioning ${sub.address} refused: ${put.status} ${put.id}`);
      return "done";
    }
    sub.acked = true;
    loop.c.provisioned++;
  }
  const basic = Buffer.from(`${encodeURIComponent(sub.address)}:${encodeURIComponent(sub.credential)}`).toString("base64");
  const token = await call(loop, sub.operatorId, "POST", "/oauth/token", { basic, form: "grant_type=client_credentials&scope=twinning" });
  if (token.kind === "unknown") return "unknown";
  if (token.kind === "refused" || typeof token.body?.access_token !== "string") {
    // The node acknowledged the subscriber, then does not know its credential: a lost commit shows here first.
    loop.unexpected(`token for ${sub.address} refused after provisioning`);
    return "done";
  }
  sub.token = token.body.access_token;
  sub.busy = false;
  return "done";
}

async function sendPair(loop: LoopState, op: Extract<Op, { kind: "pair" }>, retry: boolean): Promise<"done" | "unknown"> {
  const { phone, watch } = op;
  if (!op.code) {
    // Step 1 (never retried: a code on its own creates nothing).
    const code = await call(loop, watch.operatorId, "POST", `/twinning/v1/secondary/${enc(watch.address)}/activationCodes`, {
      token: watch.token,
      json: op.withPrimaryOperator ? { primaryOperatorId: phone.operatorId } : {},
    });
    if (code.kind !== "ok") {
      if (code.kind === "refused") loop.c.refused++;
      watch.busy = false;
      return "done";
    }
    op.code = { code: code.body.activationCode.code, operatorId: code.body.activationCode.operatorId };
  }
  const res = await call(loop, phone.operatorId, "POST", `/twinning/v1/primary/${enc(phone.address)}/twins`, {
    token: phone.token,
    json: { activationCode: op.code.code, operatorId: op.code.operatorId, name: op.name, clientCorrelator: op.correlator },
  });
  if (res.kind === "unknown") return "unknown";
  watch.busy = false;
  if (res.kind === "refused") {
    // A definite refusal: no twin (a peer that committed is undone by the node's compensation).
    loop.c.refused++;
    if (retry) loop.c.activationsUndone++;
    return "done";
  }
  const t = res.body?.twin ?? {};
  if (typeof t.twinId !== "string") {
    loop.unexpected(`activation answer without a twinId: ${JSON.stringify(res.body).slice(0, 200)}`);
    return "done";
  }
  if (loop.twins.has(t.twinId)) {
    loop.c.duplicateAnswers++;
    loop.problem(`activation ${op.correlator} answered with twin ${t.twinId}, already created by another activation`);
    return "done";
  }
  if (t.status !== "On" || t.name !== op.name) loop.unexpected(`activation ${t.twinId}: answered ${t.status} ${t.name}, expected On ${op.name}${retry ? " (retry)" : ""}`);
  const notes = emptyCounts();
  notes.secondary.twinningActivatedNotification = 1;
  const rec: TwinRec = {
    twinId: t.twinId,
    phone,
    watch,
    cross: phone.operatorId !== watch.operatorId,
    state: { active: true, status: "On", version: 1, name: op.name },
    notes,
    known: { primary: 1, secondary: 1 },
    busy: false,
    alternative: undefined,
  };
  loop.twins.set(rec.twinId, rec);
  watch.twin = rec;
  loop.c.twinsActivated++;
  if (rec.cross) loop.c.crossOperatorTwins++;
  return "done";
}

async function sendTwinOp(loop: LoopState, op: Extract<Op, { kind: "toggle" | "deactivate" | "rename" }>, retry: boolean): Promise<"done" | "unknown"> {
  const rec = op.twin;
  const p = `/twinning/v1/primary/${enc(rec.phone.address)}/twins/${rec.twinId}`;
  const s = `/twinning/v1/secondary/${enc(rec.watch.address)}/twinning`;
  let res: Outcome;
  if (op.kind === "rename") {
    res = await call(loop, rec.phone.operatorId, "PATCH", p, { token: rec.phone.token, json: { name: op.name } });
  } else if (op.kind === "toggle") {
    res =
      op.side === "primary"
        ? await call(loop, rec.phone.operatorId, "PUT", `${p}/status`, { token: rec.phone.token, json: { status: op.status } })
        : await call(loop, rec.watch.operatorId, "PUT", `${s}/status`, { token: rec.watch.token, json: { status: op.status } });
  } else {
    res = op.side === "primary" ? await call(loop, rec.phone.operatorId, "DELETE", p, { token: rec.phone.token }) : await call(loop, rec.watch.operatorId, "DELETE", s, { token: rec.watch.token });
  }
  if (res.kind === "unknown") return "unknown";
  // A retried deactivation whose first attempt committed: the twin is gone (404, or POL1038 by twinId).
  const alreadyGone = op.kind === "deactivate" && retry && res.kind === "refused" && (res.status === 404 || res.id === "POL1038");
  if (res.kind === "refused" && !alreadyGone) {
    loop.unexpected(`${op.kind} of ${rec.twinId} at the ${op.kind === "rename" ? "primary" : op.side} side refused: ${res.status} ${res.id}${retry ? " (retry)" : ""}`);
    rec.busy = false;
    return "done";
  }
  if (op.kind === "toggle") {
    const answered = op.side === "primary" ? (res as any).body?.twin?.status : (res as any).body?.twinning?.status;
    if (answered !== op.status) loop.unexpected(`toggle of ${rec.twinId} to ${op.status} answered ${answered}`);
    loop.c.toggles++;
  }
  if (op.kind === "deactivate") loop.c.deactivations++;
  if (op.kind === "rename") loop.c.renames++;
  const next = applied(rec, op);
  rec.state = next.state;
  rec.notes = next.notes;
  if (op.kind === "toggle") rec.known[op.side] = rec.state.version;
  if (op.kind === "deactivate") rec.watch.twin = undefined;
  rec.busy = false;
  return "done";
}

/** Retries unknown outcomes whose home nodes are up, a few rounds with a pause between. */
export async function resolvePending(loop: LoopState, rounds: number): Promise<void> {
  for (let round = 0; round < rounds && loop.pending.length > 0; round++) {
    if (round > 0) await sleep(250 * round);
    for (const op of loop.pending.splice(0)) {
      if (nodesOf(op).every((id) => loop.up(id))) await execute(loop, op);
      else loop.pending.push(op);
    }
  }
}

/** What stays unknown is checked loosely: either outcome, and its watch or twin is not used again. */
export function freezePending(loop: LoopState): number {
  const n = loop.pending.length;
  for (const op of loop.pending.splice(0)) {
    loop.problem(`unsettled: ${op.kind} after ${op.attempts} attempts`);
    if (op.kind === "pair") op.watch.uncertain = true;
    else if (op.kind !== "provision") op.twin.alternative = applied(op.twin, op);
  }
  return n;
}
