import type { AdminTwin, Role, TwinStatus } from "./crash-verify.ts";
import { other, type Op, type Sub, type TwinRec } from "./crash-loop-model.ts";
import { call } from "./crash-loop-ops.ts";
import type { LoopState } from "./crash-loop-state.ts";

/**
 * The crash loop's choice of the next operation (see crash-loop.ts): new subscribers, and a
 * random operation that can run now, drawn from the loop's seeded sequence. A choice locks what
 * it uses (the watch, the twin) until its outcome is known.
 */

/** A new subscriber at the operator, not yet provisioned (busy until it has its token). */
export function newSub(loop: LoopState, operatorId: string, kind: "phone" | "watch"): Sub {
  const n = ++loop.seq;
  const opDigit = String(loop.operatorIds.indexOf(operatorId) + 1);
  const address = `tel:+1${opDigit}${kind === "phone" ? "55" : "77"}${String(n).padStart(6, "0")}`;
  return { address, operatorId, kind, credential: `crash-${n}-${Math.floor(loop.random() * 1e9)}`, acked: false, token: undefined, busy: true, twin: undefined, uncertain: false };
}

/** A random operation that can run now (its home nodes up, its twin or watch not in use), locked. */
export async function pick(loop: LoopState, prefer?: string): Promise<Op | undefined> {
  for (let attempt = 0; attempt < 12; attempt++) {
    const r = loop.random();
    const activeTwins = [...loop.twins.values()].filter((t) => t.state.active).length;
    let op: Op | undefined;
    if (r < 0.07) op = pickProvision(loop, prefer);
    else if (r < 0.32 || activeTwins < 4) op = pickPair(loop, prefer);
    else if (r < 0.78) op = await pickTwinOp(loop, "toggle", prefer);
    else if (r < 0.87) op = pickRename(loop, prefer);
    else op = await pickTwinOp(loop, "deactivate", prefer);
    if (!op) continue;
    if (op.kind === "provision") op.sub.busy = true;
    else if (op.kind === "pair") op.watch.busy = true;
    else op.twin.busy = true;
    return op;
  }
  return undefined;
}

function pickProvision(loop: LoopState, prefer?: string): Op | undefined {
  const operatorId = prefer && loop.up(prefer) ? prefer : loop.pickOne(loop.operatorIds.filter((id) => loop.up(id)));
  if (!operatorId) return undefined;
  const sub = newSub(loop, operatorId, loop.random() < 0.7 ? "watch" : "phone");
  loop.subs.push(sub);
  return { kind: "provision", sub, attempts: 0 };
}

function pickPair(loop: LoopState, prefer?: string): Op | undefined {
  const ready = (s: Sub) => s.acked && s.token !== undefined && !s.busy && loop.up(s.operatorId);
  const watches = loop.subs.filter((s) => s.kind === "watch" && ready(s) && !s.twin && !s.uncertain);
  const phones = loop.subs.filter((s) => s.kind === "phone" && ready(s) && [...loop.twins.values()].filter((t) => t.phone === s && (t.state.active || t.alternative)).length < 6);
  if (watches.length === 0 || phones.length === 0) {
    // Run short of free devices: provision one.
    return pickProvision(loop, prefer);
  }
  const preferred = prefer ? watches.filter((w) => w.operatorId === prefer) : [];
  const watch = loop.pickOne(preferred.length > 0 && loop.random() < 0.5 ? preferred : watches)!;
  const local = phones.filter((p) => p.operatorId === watch.operatorId);
  const remote = phones.filter((p) => p.operatorId !== watch.operatorId);
  const remotePreferred = prefer && prefer !== watch.operatorId ? remote.filter((p) => p.operatorId === prefer) : [];
  const phone = loop.random() < 0.35 && local.length > 0 ? loop.pickOne(local)! : loop.pickOne(remotePreferred.length > 0 ? remotePreferred : remote.length > 0 ? remote : local)!;
  const n = ++loop.seq;
  return {
    kind: "pair",
    phone,
    watch,
    withPrimaryOperator: phone.operatorId !== watch.operatorId && loop.random() < 0.5,
    name: `t${n}`,
    correlator: `crash-activation-${n}`,
    code: undefined,
    attempts: 0,
  };
}

function pickRename(loop: LoopState, prefer?: string): Op | undefined {
  const candidates = [...loop.twins.values()].filter((t) => t.state.active && !t.busy && !t.alternative && loop.up(t.phone.operatorId));
  const preferred = prefer ? candidates.filter((t) => t.phone.operatorId === prefer) : [];
  const twin = loop.pickOne(preferred.length > 0 ? preferred : candidates);
  return twin ? { kind: "rename", twin, name: `n${++loop.seq}`, attempts: 0 } : undefined;
}

async function pickTwinOp(loop: LoopState, kind: "toggle" | "deactivate", prefer?: string): Promise<Op | undefined> {
  const candidates = [...loop.twins.values()].filter((t) => t.state.active && !t.busy && !t.alternative && (loop.up(t.phone.operatorId) || loop.up(t.watch.operatorId)));
  const preferred = prefer ? candidates.filter((t) => t.phone.operatorId === prefer || t.watch.operatorId === prefer) : [];
  const twin = loop.pickOne(preferred.length > 0 ? preferred : candidates);
  if (!twin) return undefined;
  const first: Role = loop.random() < 0.55 ? "primary" : "secondary";
  for (const side of [first, other(first)]) {
    if (!(await holdsLatest(loop, twin, side))) continue;
    if (kind === "deactivate") return { kind, twin, side, attempts: 0 };
    const status: TwinStatus = loop.random() < 0.85 ? (twin.state.status === "On" ? "Off" : "On") : twin.state.status;
    return { kind, twin, side, status, attempts: 0 };
  }
  return undefined;
}

/** Whether the side's node is up and holds the twin's latest acknowledged version (it may write then). */
async function holdsLatest(loop: LoopState, twin: TwinRec, side: Role): Promise<boolean> {
  const operatorId = (side === "primary" ? twin.phone : twin.watch).operatorId;
  if (!loop.up(operatorId)) return false;
  if (!twin.cross || twin.known[side] === twin.state.version) return true;
  // Has the last change reached it? One admin read refreshes what this node is known to hold.
  const res = await call(loop, operatorId, "GET", "/admin/v1/twins?limit=10000", { token: loop.sandbox.get(operatorId).adminToken });
  if (res.kind !== "ok") return false;
  for (const row of res.body.twins as AdminTwin[]) {
    const t = loop.twins.get(row.twinId);
    if (!t || !t.cross || t.busy || t.alternative) continue;
    const s: Role = t.phone.operatorId === operatorId ? "primary" : "secondary";
    if (row.version === t.state.version && row.status === t.state.status) t.known[s] = t.state.version;
  }
  return twin.known[side] === twin.state.version;
}
