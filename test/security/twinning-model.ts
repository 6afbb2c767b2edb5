/**
 * The in-memory model of the twinning requirements and the fast-check commands that drive
 * three real nodes with it (used by `model-based.test.ts`). Each command calls the device API
 * of a real node, checks the answer against what the model says the requirements allow, and
 * updates the model; after every command `settle` waits until delivery has drained and then
 * compares every node with the model:
 *
 * - HLF-TE-008/009: no secondary in two twins, no device both primary and secondary (on the
 *   nodes' own twin lists, GET /admin/v1/twins, not only in the model);
 * - both operators of a twin hold it with the same status and version, and no node holds a twin
 *   the model does not know (a half-made activation, a missed deactivation);
 * - every callback notification received matches a committed change of the model (type, twin,
 *   recipient and role, status, changedBy), and every committed change was notified once;
 * - a deactivated twin's tokens (both twin-scoped tokens, the primary-services tokens, and the
 *   RFC 8693 exchange at the primary's operator) never work again.
 */
import { randomUUID } from "node:crypto";
import fc from "fast-check";
import type { FederatedOperator } from "../helpers/federation-fixture.ts";
import type { CallbackReceiver } from "../helpers/callback-receiver.ts";
import { enc, messageId, type ApiResponse } from "../helpers/test-node.ts";
import { TOKEN_EXCHANGE_GRANT } from "../../node/service/twin-service.ts";

export const OPERATORS = ["001-01", "002-01", "003-01"] as const;
export const CODE_LENGTH = 10;
/** Two subscribers per operator in every run: A0 A1 at 001-01, B0 B1 at 002-01, C0 C1 at 003-01. */
export const PARTIES_PER_OPERATOR = 2;
const PARTY_COUNT = OPERATORS.length * PARTIES_PER_OPERATOR;
const LETTER = ["A", "B", "C"] as const;
/** Names a rename or an activation may ask for; twin-1 and twin-2 collide with default names. */
const NAMES = ["car", "watch", "twin-1", "twin-2"] as const;

/**
 * KNOWN DEVIATION: a rename is made at the primary's node only; DESIGN has no federation message
 * for it, so the secondary's operator keeps showing the old name. By default the model accepts
 * either name at the secondary's node; MODEL_STRICT_NAMES=1 requires the new one there too.
 *
 * Found by this test and fixed: the secondary's node used to enforce name uniqueness among its
 * (possibly stale) copies of a remote primary's twins, so a later activation of the same primary
 * with another secondary there was refused with 400 SVC0002. Shrunk counterexample:
 *   [Twin(B0 → A0, code from home), Rename(twin#0 to "car", twinning token, ref id),
 *    Twin(primary#0 → neighbour#0, code from home)]
 *   → "B0 activates A1 with a right code of 001-01" answered 400 SVC0002 "name".
 * Names now belong to the primary's operator alone, and the model holds activations to that.
 */
const STRICT_NAMES = process.env.MODEL_STRICT_NAMES === "1";

type Status = "On" | "Off";
type Role = "primary" | "secondary";
type TokenKind = "twinning" | "twin";
type RefKind = "id" | "name" | "address";
type NoteType = "twinningActivatedNotification" | "twinningStatusNotification" | "twinningDeactivatedNotification";

/** The real system: three nodes and one callback endpoint, shared by every run. */
export interface World {
  readonly ops: readonly FederatedOperator[];
  readonly receiver: CallbackReceiver;
  /** Where the next settle starts reading the receiver (earlier runs' callbacks are skipped). */
  seen: number;
  /** Dead letters per node already reported (a run is blamed only for new ones). */
  dead: number[];
}

interface Party {
  readonly ix: number;
  readonly label: string;
  readonly op: number;
  readonly address: string;
  /** A `twinning` token from the party's home node. */
  readonly token: string;
  readonly subscribed: Set<Role>;
}

interface CodeM {
  readonly code: string;
  readonly issuer: number;
  readonly resourcePath: string;
  state: "Pending" | "Used" | "Superseded";
}

interface TwinM {
  readonly twinId: string;
  readonly p: number;
  readonly s: number;
  name: string;
  /** The name the secondary's operator holds (renames do not reach it: see STRICT_NAMES). */
  readonly nameAtSecondary: string;
  status: Status;
  active: boolean;
  readonly primaryToken: string;
  secondaryToken: string;
  readonly psTokens: string[];
  deadChecked: boolean;
}

export interface Model {
  readonly tag: string;
  readonly parties: Party[];
  /** Codes per party (as secondary), oldest first. */
  readonly codes: CodeM[][];
  /** Parties in the order of their successful code requests, latest last. */
  readonly requesters: number[];
  readonly twins: TwinM[];
  /** Notifications the model allows: `required` committed changes, up to `optional` more (races). */
  readonly notes: Map<string, { required: number; optional: number }>;
  readonly received: Map<string, number>;
  readonly trace: string[];
  /** A race just run: the twin and the statuses it may converge to. */
  race?: { twin: TwinM; allowed: Set<Status> } | undefined;
}

// ---------------------------------------------------------------------------------------------
// Setup of one run: fresh subscribers, so runs never interfere (the nodes cannot be reset).
// ---------------------------------------------------------------------------------------------

let runCounter = 0;

/**
 * Provisions six fresh subscribers through each node's own store and token service. The admin
 * API and /oauth/token would cost two scrypt computations per subscriber (~70 ms here), which
 * for 200 runs is most of the budget; both are covered by their own tests. `credentialHash` is a
 * real scrypt hash computed once.
 */
export async function newRun(w: World, credentialHash: string): Promise<Model> {
  const run = ++runCounter;
  const tag = `m${run}:`;
  const parties: Party[] = [];
  for (let op = 0; op < OPERATORS.length; op++) {
    const ctx = w.ops[op]!.node().context;
    for (let i = 0; i < PARTIES_PER_OPERATOR; i++) {
      const address = `tel:+1${OPERATORS[op]!.replace("-", "")}${String(run).padStart(6, "0")}${i}`;
      await ctx.store.putSubscriber({ address, twinningEnabled: true, credentialHash, updatedAtMs: Date.now() }, OPERATORS[op]!);
      const { token } = await ctx.tokens.mint({ subject: address, scope: "twinning", ttlSeconds: 3_600, clientId: address });
      parties.push({ ix: parties.length, label: `${LETTER[op]}${i}`, op, address, token, subscribed: new Set() });
    }
  }
  return { tag, parties, codes: parties.map(() => []), requesters: [], twins: [], notes: new Map(), received: new Map(), trace: [] };
}

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

type Err = readonly [status: number, messageId: string];
const E = {
  badCode: [400, "SVC3001"],
  roleMixture: [403, "POL1037"],
  alreadyTwinned: [409, "POL3001"],
  nameTaken: [400, "SVC0002"],
  notFound: [404, "SVC0002"],
  deactivated: [403, "POL1038"],
  revoked: [401, "SVC2003"],
  denied: [403, "POL2003"],
  off: [403, "POL0001"],
} as const satisfies Record<string, Err>;

class ModelMismatch extends Error {}

function fail(what: string, res?: ApiResponse): never {
  throw new ModelMismatch(res ? `${what}; node answered ${res.status} ${JSON.stringify(res.body)}` : what);
}

/** The answer must be `ok` when the model allows the operation, else one of the errors that apply. */
function expectOutcome(what: string, res: ApiResponse, errors: readonly Err[], ok: number): boolean {
  if (errors.length === 0) {
    if (res.status !== ok) fail(`${what}: the model expects ${ok}`, res);
    return true;
  }
  if (!errors.some(([status, id]) => status === res.status && id === messageId(res.body))) {
    fail(`${what}: the model expects one of ${errors.map((e) => e.join(" ")).join(", ")}`, res);
  }
  return false;
}

const op = (w: World, party: Party) => w.ops[party.op]!;
const opName = (ix: number) => OPERATORS[ix]!;
const activeTwinOfSecondary = (m: Model, s: number) => m.twins.find((t) => t.active && t.s === s);
const isActivePrimary = (m: Model, p: number) => m.twins.some((t) => t.active && t.p === p);
const activeTwinsOf = (m: Model, p: number) => m.twins.filter((t) => t.active && t.p === p);
const twinAt = (m: Model, i: number) => m.twins[i % m.twins.length]!;
const labelOf = (m: Model, ix: number) => m.parties[ix]!.label;

function describeTwin(m: Model, t: TwinM): string {
  return `twin#${m.twins.indexOf(t)}(${labelOf(m, t.p)}→${labelOf(m, t.s)} "${t.name}" ${t.status}${t.active ? "" : " deactivated"})`;
}

function noteKey(type: NoteType, twinId: string, recipient: string, role: Role, status: Status, changedBy: Role): string {
  return `${type}|${twinId}|${recipient}|${role}|${status}|${changedBy}`;
}

/** A committed change (or, for races, a change that may have been committed at one node). */
function expectNote(m: Model, type: NoteType, t: TwinM, changedBy: Role, status: Status, optional = false): void {
  const role: Role = changedBy === "primary" ? "secondary" : "primary";
  const recipient = m.parties[role === "primary" ? t.p : t.s]!;
  if (!recipient.subscribed.has(role)) return;
  const key = noteKey(type, t.twinId, recipient.label, role, status, changedBy);
  const entry = m.notes.get(key) ?? { required: 0, optional: 0 };
  if (optional) entry.optional += 1;
  else entry.required += 1;
  m.notes.set(key, entry);
}

/** Subscribes the party's callbacks for a role before it can first be notified in that role. */
async function subscribe(m: Model, w: World, party: Party, role: Role): Promise<void> {
  if (party.subscribed.has(role)) return;
  const res = await op(w, party).api.call("POST", `/twinning/v1/${role}/${enc(party.address)}/subscriptions`, {
    token: party.token,
    body: { callbackReference: { notifyURL: w.receiver.url, callbackData: `${m.tag}${party.label}:${role}` } },
  });
  if (res.status !== 201) fail(`subscription of ${party.label} as ${role}`, res);
  party.subscribed.add(role);
}

function claimsOf(token: string): Record<string, any> {
  return JSON.parse(Buffer.from(token.split(".")[1] ?? "", "base64url").toString("utf8"));
}

// ---------------------------------------------------------------------------------------------
// Operations: each calls the real node, compares its answer with the model, updates the model.
// ---------------------------------------------------------------------------------------------

/** HLF-SD-001..003, HLF-TE-005/006, HLF-IC-002/003 with HLF-TE-008/009. */
async function requestCode(m: Model, w: World, s: Party, issuerChoice: number | "home"): Promise<void> {
  const issuer = issuerChoice === "home" ? s.op : issuerChoice;
  await subscribe(m, w, s, "secondary");
  const res = await op(w, s).api.call("POST", `/twinning/v1/secondary/${enc(s.address)}/activationCodes`, {
    token: s.token,
    body: issuerChoice === "home" ? {} : { primaryOperatorId: opName(issuer) },
  });
  const errors: Err[] = [];
  if (isActivePrimary(m, s.ix)) errors.push(E.roleMixture);
  if (activeTwinOfSecondary(m, s.ix)) errors.push(E.alreadyTwinned);
  const what = `${s.label} requests a code from ${opName(issuer)}`;
  m.trace.push(`${what} → ${res.status} ${messageId(res.body) ?? ""}`);
  if (!expectOutcome(what, res, errors, 201)) return;
  const c = res.body?.activationCode;
  if (c?.operatorId !== opName(issuer) || c?.status !== "Pending" || !new RegExp(`^\\d{${CODE_LENGTH}}$`).test(c?.code ?? "")) {
    fail(`${what}: the code resource is not the one the model expects`, res);
  }
  // A new code supersedes the secondary's earlier ones (one live code per secondary).
  for (const old of m.codes[s.ix]!) if (old.state === "Pending") old.state = "Superseded";
  m.codes[s.ix]!.push({ code: c.code, issuer, resourcePath: new URL(c.resourceURL).pathname, state: "Pending" });
  m.requesters.push(s.ix);
}

type CodeKind = "right" | "stale" | "wrong";

/** HLF-PD-001, HLF-TE-005/007/008/009, HLF-IC-004, HLF-SD-005. */
async function activate(m: Model, w: World, p: Party, s: Party, kind: CodeKind, name: string | undefined, wrong: { code: string; issuer: number }): Promise<void> {
  await subscribe(m, w, p, "primary");
  const codes = m.codes[s.ix]!;
  const latest = codes.at(-1);
  const stale = codes.slice(0, -1).at(-1) ?? (latest?.state === "Used" ? latest : undefined);
  let chosen: CodeM | undefined = kind === "right" ? latest : kind === "stale" ? stale : undefined;
  let code = chosen?.code;
  let issuer = chosen?.issuer;
  if (!chosen) {
    // A wrong code: not one of this run's codes (other runs' pending codes are 1 in 10^10 away).
    let n = BigInt(wrong.code);
    const taken = new Set(m.codes.flat().map((c) => c.code));
    while (taken.has(String(n).padStart(CODE_LENGTH, "0"))) n = (n + 1n) % 10n ** BigInt(CODE_LENGTH);
    code = String(n).padStart(CODE_LENGTH, "0");
    issuer = wrong.issuer;
  }
  const res = await op(w, p).api.call("POST", `/twinning/v1/primary/${enc(p.address)}/twins`, {
    token: p.token,
    body: { activationCode: code, operatorId: opName(issuer!), ...(name === undefined ? {} : { name }) },
  });
  // The code is redeemable when it is the secondary's live code and the primary may use it: a
  // code of the secondary's own operator (any primary), or one the secondary obtained from the
  // primary's operator (HLF-TE-006).
  const valid = chosen !== undefined && chosen === latest && chosen.state === "Pending" && (chosen.issuer === s.op || chosen.issuer === p.op);
  const errors: Err[] = [];
  if (!valid) errors.push(E.badCode);
  if (p.ix === s.ix || activeTwinOfSecondary(m, p.ix) || isActivePrimary(m, s.ix)) errors.push(E.roleMixture);
  if (activeTwinOfSecondary(m, s.ix)) errors.push(E.alreadyTwinned);
  if (name !== undefined && activeTwinsOf(m, p.ix).some((t) => t.name === name)) errors.push(E.nameTaken);
  const what = `${p.label} activates ${s.label} with a ${kind} code of ${opName(issuer!)}${name === undefined ? "" : ` named "${name}"`}`;
  m.trace.push(`${what} → ${res.status} ${messageId(res.body) ?? ""}`);
  // HLF-TE-007: the chosen name, or the first free default name.
  const taken = new Set(activeTwinsOf(m, p.ix).map((t) => t.name));
  let expectedName = name;
  for (let n = 1; expectedName === undefined; n++) if (!taken.has(`twin-${n}`)) expectedName = `twin-${n}`;
  if (!expectOutcome(what, res, errors, 201)) return;
  const twin = res.body?.twin;
  const shape = { primaryAddress: p.address, secondaryAddress: s.address, secondaryOperatorId: opName(s.op), name: expectedName, status: "On" };
  for (const [k, v] of Object.entries(shape)) if (twin?.[k] !== v) fail(`${what}: twin.${k} should be ${v}`, res);
  if (typeof twin.accessToken !== "string" || typeof twin.twinId !== "string") fail(`${what}: no twinId or accessToken`, res);
  chosen!.state = "Used";
  const t: TwinM = { twinId: twin.twinId, p: p.ix, s: s.ix, name: expectedName, nameAtSecondary: expectedName, status: "On", active: true, primaryToken: twin.accessToken, secondaryToken: "", psTokens: [], deadChecked: false };
  m.twins.push(t);
  expectNote(m, "twinningActivatedNotification", t, "primary", "On");

  // HLF-SD-005: the secondary's code now reads Used, with the twin and its twin-scoped token.
  const used = await op(w, s).api.call("GET", chosen!.resourcePath, { token: s.token });
  const ac = used.body?.activationCode;
  if (used.status !== 200 || ac?.status !== "Used" || ac?.twin?.twinId !== t.twinId || typeof ac?.accessToken !== "string") {
    fail(`${what}: the secondary's code should read Used with the twin and a token`, used);
  }
  t.secondaryToken = ac.accessToken;
}


/** Which twin a primary's path reference names (HLF-PD-003): by id, name or secondary address. */
function resolvePrimaryRef(m: Model, t: TwinM, ref: RefKind): { path: string; target: TwinM | undefined; error?: Err } {
  const p = t.p;
  if (ref === "id") return { path: t.twinId, target: t.active ? t : undefined, error: t.active ? undefined : E.deactivated };
  if (ref === "name") {
    const target = activeTwinsOf(m, p).find((x) => x.name === t.name);
    return { path: enc(t.name), target, error: target ? undefined : E.notFound };
  }
  const target = activeTwinsOf(m, p).find((x) => x.s === t.s);
  return { path: enc(m.parties[t.s]!.address), target, error: target ? undefined : E.notFound };
}

interface Call {
  readonly res: ApiResponse;
  readonly target: TwinM | undefined;
  readonly errors: Err[];
}

/** A call on a twin as its primary (at the primary's node) or secondary (at the secondary's node). */
async function twinCall(m: Model, w: World, t: TwinM, side: Role, tokenKind: TokenKind, ref: RefKind, method: string, suffix: string, body?: unknown): Promise<Call> {
  const party = m.parties[side === "primary" ? t.p : t.s]!;
  const token = tokenKind === "twin" ? (side === "primary" ? t.primaryToken : t.secondaryToken) : party.token;
  const addr = tokenKind === "twin" ? "acr%3AAuthorization" : enc(party.address);
  let target: TwinM | undefined;
  let path: string;
  let error: Err | undefined;
  if (side === "primary") {
    ({ path, target, error } = resolvePrimaryRef(m, t, ref));
    path = `/twinning/v1/primary/${addr}/twins/${path}${suffix}`;
  } else {
    target = activeTwinOfSecondary(m, t.s);
    error = target ? undefined : E.notFound;
    path = `/twinning/v1/secondary/${addr}/twinning${suffix}`;
  }
  const errors: Err[] = [];
  // A twin-scoped token dies with its twin (HLF-TE-004) and reaches only its own twin.
  if (tokenKind === "twin" && !t.active) errors.push(E.revoked);
  else if (error) errors.push(error);
  else if (tokenKind === "twin" && target !== t) errors.push(E.denied);
  const res = await op(w, party).api.call(method, path, { token, ...(body === undefined ? {} : { body }) });
  return { res, target: errors.length === 0 ? target : undefined, errors };
}

/** HLF-PD-002, HLF-SD-004, HLF-TE-002/003, HLF-IC-005/007, HLF-PD-007, HLF-SD-008. */
async function toggle(m: Model, w: World, t: TwinM, side: Role, status: Status, tokenKind: TokenKind, ref: RefKind): Promise<void> {
  const { res, target, errors } = await twinCall(m, w, t, side, tokenKind, ref, "PUT", "/status", { status });
  const what = `${side} of ${describeTwin(m, t)} sets ${status} (${tokenKind} token, ref by ${side === "primary" ? ref : "address"})`;
  m.trace.push(`${what} → ${res.status} ${messageId(res.body) ?? ""}`);
  if (!expectOutcome(what, res, errors, 200)) return;
  const shown = side === "primary" ? res.body?.twin : res.body?.twinning;
  if (shown?.twinId !== target!.twinId || shown?.status !== status) fail(`${what}: the answer should show ${target!.twinId} ${status}`, res);
  if (target!.status !== status) {
    target!.status = status;
    expectNote(m, "twinningStatusNotification", target!, side, status);
  }
}

/**
 * HLF-IC-005: toggles from both sides at once (each side a few in a row) converge to the same
 * status at both operators (last writer wins by version, then operator).
 */
async function race(m: Model, w: World, t: TwinM, byPrimary: readonly Status[], bySecondary: readonly Status[]): Promise<void> {
  const p = m.parties[t.p]!;
  const s = m.parties[t.s]!;
  const run = async (side: Role, statuses: readonly Status[]) => {
    const answers: ApiResponse[] = [];
    for (const status of statuses) {
      answers.push(
        side === "primary"
          ? await op(w, p).api.call("PUT", `/twinning/v1/primary/${enc(p.address)}/twins/${t.twinId}/status`, { token: p.token, body: { status } })
          : await op(w, s).api.call("PUT", `/twinning/v1/secondary/${enc(s.address)}/twinning/status`, { token: s.token, body: { status } }),
      );
    }
    return answers;
  };
  const [rp, rs] = await Promise.all([run("primary", byPrimary), run("secondary", bySecondary)]);
  const what = `race on ${describeTwin(m, t)}: primary sets ${byPrimary.join(",")} while secondary sets ${bySecondary.join(",")}`;
  m.trace.push(`${what} → ${[...rp, ...rs].map((r) => r.status).join(" ")}`);
  for (const [i, r] of rp.entries()) if (r.status !== 200 || r.body?.twin?.status !== byPrimary[i]) fail(`${what}: the primary's toggle #${i}`, r);
  for (const [i, r] of rs.entries()) if (r.status !== 200 || r.body?.twinning?.status !== bySecondary[i]) fail(`${what}: the secondary's toggle #${i}`, r);
  // Which writes take effect where depends on timing; settle() reads the converged status and
  // checks it is one that was set, the same (and of the same version) at both operators. Each
  // side may hear of each of the other side's writes at most once.
  for (const status of byPrimary) expectNote(m, "twinningStatusNotification", t, "primary", status, true);
  for (const status of bySecondary) expectNote(m, "twinningStatusNotification", t, "secondary", status, true);
  m.race = { twin: t, allowed: new Set([...byPrimary, ...bySecondary]) };
}

/** HLF-TE-007, HLF-PD-003: renaming keeps names unique among the primary's twins. */
async function rename(m: Model, w: World, t: TwinM, name: string, tokenKind: TokenKind, ref: RefKind): Promise<void> {
  const call = await twinCall(m, w, t, "primary", tokenKind, ref, "PATCH", "", { name });
  const { res, target } = call;
  // Renaming needs the full twinning scope: a twin-scoped token is refused before anything else.
  const errors = tokenKind === "twin" ? [E.denied] : [...call.errors];
  if (errors.length === 0 && target!.name !== name && activeTwinsOf(m, t.p).some((x) => x.name === name)) errors.push(E.nameTaken);
  const what = `primary renames ${describeTwin(m, t)} to "${name}" (${tokenKind} token, ref by ${ref})`;
  m.trace.push(`${what} → ${res.status} ${messageId(res.body) ?? ""}`);
  if (!expectOutcome(what, res, errors, 200)) return;
  if (res.body?.twin?.name !== name || res.body?.twin?.twinId !== target!.twinId) fail(`${what}: the answer should show the new name`, res);
  target!.name = name;
}

/** HLF-PD-004, HLF-SD-007, HLF-TE-004: deactivation is final and notifies the other side. */
async function deactivate(m: Model, w: World, t: TwinM, side: Role, tokenKind: TokenKind, ref: RefKind): Promise<void> {
  const { res, target, errors } = await twinCall(m, w, t, side, tokenKind, ref, "DELETE", "");
  const what = `${side} deactivates ${describeTwin(m, t)} (${tokenKind} token, ref by ${side === "primary" ? ref : "address"})`;
  m.trace.push(`${what} → ${res.status} ${messageId(res.body) ?? ""}`);
  if (!expectOutcome(what, res, errors, 204)) return;
  target!.active = false;
  expectNote(m, "twinningDeactivatedNotification", target!, side, target!.status);
}

/** HLF-SD-009, HLF-IC-006: a primary-services token, minted by the primary's operator (RFC 8693 across). */
async function primaryServicesToken(m: Model, w: World, t: TwinM): Promise<void> {
  const s = m.parties[t.s]!;
  const res = await op(w, s).api.call("POST", `/twinning/v1/secondary/${enc(s.address)}/twinning/primaryServicesToken`, { token: s.token });
  const target = activeTwinOfSecondary(m, t.s);
  const errors: Err[] = !target ? [E.notFound] : target.status === "Off" ? [E.off] : [];
  const what = `${s.label} asks a primary-services token (its twin: ${target ? describeTwin(m, target) : "none"})`;
  m.trace.push(`${what} → ${res.status} ${messageId(res.body) ?? ""}`);
  if (!expectOutcome(what, res, errors, 200)) return;
  const p = m.parties[target!.p]!;
  const ps = res.body?.primaryServices;
  const claims = claimsOf(ps?.accessToken ?? "");
  const primaryNode = op(w, p).t.url;
  if (
    claims.iss !== `urn:twinning:operator:${opName(p.op)}` ||
    claims.sub !== p.address ||
    claims.act?.sub !== s.address ||
    claims.twin_id !== target!.twinId ||
    claims.scope !== "primary-services" ||
    ps?.endpoints?.messaging !== `${primaryNode}/messaging/v1`
  ) {
    fail(`${what}: the token must be the primary's operator's, for the primary, acting for the secondary`, res);
  }
  target!.psTokens.push(ps.accessToken);
  if (!(await introspect(w, p, ps.accessToken))) fail(`${what}: the fresh token should introspect active at ${opName(p.op)}`);
}

async function introspect(w: World, primary: Party, token: string): Promise<boolean> {
  const o = op(w, primary);
  const res = await fetch(`${o.t.url}/oauth/introspect`, {
    method: "POST",
    headers: { authorization: `Bearer ${o.t.node.adminToken}`, "content-type": "application/x-www-form-urlencoded" },
    body: `token=${encodeURIComponent(token)}`,
  });
  const body = (await res.json()) as { active?: boolean };
  if (res.status !== 200 || typeof body.active !== "boolean") throw new ModelMismatch(`introspection answered ${res.status} ${JSON.stringify(body)}`);
  return body.active;
}

/**
 * HLF-TE-004, HLF-SD-009: every token of the twin works exactly while the twin is active (a
 * primary-services token: and On), at the node that issued it; for a twin across operators, the
 * RFC 8693 exchange at the primary's operator too.
 */
async function checkTokens(m: Model, w: World, t: TwinM): Promise<void> {
  const p = m.parties[t.p]!;
  const s = m.parties[t.s]!;
  const label = describeTwin(m, t);
  const asPrimary = await op(w, p).api.call("GET", `/twinning/v1/primary/acr%3AAuthorization/twins/${t.twinId}`, { token: t.primaryToken });
  if (t.active ? asPrimary.status !== 200 || asPrimary.body?.twin?.status !== t.status : asPrimary.status !== 401 || messageId(asPrimary.body) !== "SVC2003") {
    fail(`the primary's twin token of ${label} should ${t.active ? "work" : "be dead (401 SVC2003)"}`, asPrimary);
  }
  const asSecondary = await op(w, s).api.call("GET", `/twinning/v1/secondary/acr%3AAuthorization/twinning`, { token: t.secondaryToken });
  if (t.active ? asSecondary.status !== 200 || asSecondary.body?.twinning?.twinId !== t.twinId : asSecondary.status !== 401 || messageId(asSecondary.body) !== "SVC2003") {
    fail(`the secondary's twin token of ${label} should ${t.active ? "work" : "be dead (401 SVC2003)"}`, asSecondary);
  }
  // A primary-services token works while the twin is active and On (HLF-SD-009).
  const servicesOn = t.active && t.status === "On";
  for (const token of t.psTokens) {
    if ((await introspect(w, p, token)) !== servicesOn) fail(`a primary-services token of ${label} should introspect ${servicesOn ? "active" : "inactive"}`);
  }
  if (p.op !== s.op) {
    // The signed token exchange the secondary's operator makes (DESIGN "Federation API" /token).
    const federation = op(w, s).node().context.federation!;
    const subject = await federation.subjectToken({ secondaryAddress: s.address, twinId: t.twinId, audienceOperatorId: opName(p.op) });
    const answer = await federation.send(opName(p.op), {
      method: "POST",
      path: "/token",
      msgId: randomUUID(),
      body: { grant_type: TOKEN_EXCHANGE_GRANT, subject_token: subject, subject_token_type: "urn:ietf:params:oauth:token-type:jwt", scope: "primary-services" },
    });
    const expected = !t.active ? 401 : t.status === "On" ? 200 : 403;
    if (answer.status !== expected) fail(`token exchange at ${opName(p.op)} for ${label}: expected ${expected}, got ${answer.status} ${JSON.stringify(answer.body)}`);
  }
}

// ---------------------------------------------------------------------------------------------
// After every command: delivery drains, then the nodes are compared with the model.
// ---------------------------------------------------------------------------------------------

async function drained(w: World, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const stats = await Promise.all(w.ops.map((o) => o.node().context.store.outboxStats()));
    if (stats.some((s, i) => s.dead > (w.dead[i] ?? 0))) {
      const before = w.dead.join(", ");
      w.dead = stats.map((s) => s.dead);
      fail(`a node gave up delivering a message (dead letters per node: ${before} before, ${w.dead.join(", ")} now)`);
    }
    if (stats.every((s) => s.pending === 0)) return;
    if (Date.now() > deadline) fail(`delivery did not drain within ${timeoutMs} ms (pending: ${stats.map((s) => s.pending).join(", ")})`);
    await new Promise((r) => setTimeout(r, 3));
  }
}

interface ListedTwin {
  twinId: string;
  primaryAddress: string;
  primaryOperatorId: string;
  secondaryAddress: string;
  secondaryOperatorId: string;
  name: string;
  status: Status;
  version: number;
}

export async function settle(m: Model, w: World): Promise<void> {
  await drained(w);
  const addresses = new Set(m.parties.map((p) => p.address));
  const lists = await Promise.all(
    w.ops.map(async (o) => {
      const res = await o.api.call("GET", "/admin/v1/twins?limit=10000", { token: o.t.node.adminToken });
      if (res.status !== 200) fail(`admin twin list of ${o.operatorId}`, res);
      return (res.body.twins as ListedTwin[]).filter((t) => addresses.has(t.primaryAddress) || addresses.has(t.secondaryAddress));
    }),
  );

  // HLF-TE-008/009 on what the nodes hold, whatever the model says.
  const union = new Map(lists.flat().map((t) => [t.twinId, t]));
  const secondaries = new Map<string, number>();
  for (const t of union.values()) secondaries.set(t.secondaryAddress, (secondaries.get(t.secondaryAddress) ?? 0) + 1);
  for (const [address, n] of secondaries) if (n > 1) fail(`HLF-TE-009: ${address} is the secondary of ${n} active twins`);
  for (const t of union.values()) if (secondaries.has(t.primaryAddress)) fail(`HLF-TE-008: ${t.primaryAddress} is both a primary and a secondary`);

  // A race: the status both operators converged to must be one of those that were set.
  const race = m.race;
  if (race) {
    m.race = undefined;
    const converged = lists[m.parties[race.twin.p]!.op]!.find((x) => x.twinId === race.twin.twinId)?.status;
    if (!converged || !race.allowed.has(converged)) fail(`the race on ${describeTwin(m, race.twin)} converged to ${converged}, not one of ${[...race.allowed].join("/")}`);
    race.twin.status = converged;
  }

  // Both operators of every twin agree with the model; no node holds a twin the model lacks.
  for (let i = 0; i < w.ops.length; i++) {
    const listed = new Map(lists[i]!.map((t) => [t.twinId, t]));
    const expected = m.twins.filter((t) => t.active && (m.parties[t.p]!.op === i || m.parties[t.s]!.op === i));
    for (const t of expected) {
      const got = listed.get(t.twinId);
      const p = m.parties[t.p]!;
      const s = m.parties[t.s]!;
      if (!got) fail(`${opName(i)} does not hold the active ${describeTwin(m, t)}`);
      const want: Partial<ListedTwin> = { primaryAddress: p.address, primaryOperatorId: opName(p.op), secondaryAddress: s.address, secondaryOperatorId: opName(s.op), status: t.status };
      if (p.op === i || STRICT_NAMES || got.name !== t.nameAtSecondary) want.name = t.name;
      for (const [k, v] of Object.entries(want)) if (got[k as keyof ListedTwin] !== v) fail(`${opName(i)} holds ${describeTwin(m, t)} with ${k} = ${got[k as keyof ListedTwin]}, the model says ${v}`);
      listed.delete(t.twinId);
    }
    for (const stray of listed.values()) fail(`${opName(i)} holds twin ${stray.twinId} (${stray.primaryAddress} → ${stray.secondaryAddress}, ${stray.status}) that the model does not have as active`);
  }
  for (const t of m.twins.filter((x) => x.active && m.parties[x.p]!.op !== m.parties[x.s]!.op)) {
    const [vp, vs] = [lists[m.parties[t.p]!.op]!, lists[m.parties[t.s]!.op]!].map((l) => l.find((x) => x.twinId === t.twinId)!.version);
    if (vp !== vs) fail(`the two operators of ${describeTwin(m, t)} hold versions ${vp} and ${vs}`);
  }

  // Every notification received matches a committed change, and every committed change was notified.
  const fresh = w.receiver.received.slice(w.seen);
  w.seen = w.receiver.received.length;
  for (const body of fresh) {
    const [type, content] = Object.entries(body as Record<string, any>)[0] ?? [];
    const data = String(content?.callbackData ?? "");
    if (!data.startsWith(m.tag)) continue; // not this run's
    const [recipient, role] = data.slice(m.tag.length).split(":") as [string, Role];
    const key = noteKey(type as NoteType, content.twinId, recipient, role, content.status, content.changedBy);
    const t = m.twins.find((x) => x.twinId === content.twinId);
    if (!t || !m.notes.has(key) || content.primaryAddress !== m.parties[t.p]!.address || content.secondaryAddress !== m.parties[t.s]!.address) {
      fail(`notification ${JSON.stringify(body)} matches no committed change of the model`);
    }
    m.received.set(key, (m.received.get(key) ?? 0) + 1);
  }
  for (const [key, { required, optional }] of m.notes) {
    const got = m.received.get(key) ?? 0;
    if (got < required || got > required + optional) fail(`notification ${key}: ${got} received, the model committed ${required}${optional ? ` (+ up to ${optional} in a race)` : ""}`);
  }

  // A deactivated twin's tokens stop working at once (checked again at the end of the run).
  for (const t of m.twins) {
    if (!t.active && !t.deadChecked) {
      await checkTokens(m, w, t);
      t.deadChecked = true;
    }
  }
}

/** End of a run: every twin left is deactivated; afterwards no token of the run works, no node holds a twin of it. */
export async function finish(m: Model, w: World): Promise<void> {
  for (const t of m.twins.filter((x) => x.active)) await deactivate(m, w, t, "primary", "twinning", "id");
  await settle(m, w);
  for (const t of m.twins) await checkTokens(m, w, t);
  for (const t of m.twins) if (t.active) fail(`${describeTwin(m, t)} is still active`);
}

// ---------------------------------------------------------------------------------------------
// fast-check commands
// ---------------------------------------------------------------------------------------------

/** Outcomes per operation over all runs (printed by the test with MODEL_STATS=1). */
export const outcomeCounts = new Map<string, number>();

function countOutcomes(m: Model, from: number): void {
  for (const line of m.trace.slice(from)) {
    const key = line.replace(/\b(twin#\d+|[ABC]\d)\b/g, "_").replace(/"[^"]*"/g, "_").replace(/\(.*?\)/g, "").replace(/\d{3}-\d{2}/g, "op");
    outcomeCounts.set(key, (outcomeCounts.get(key) ?? 0) + 1);
  }
}

class TwinningCommand implements fc.AsyncCommand<Model, World> {
  constructor(
    readonly label: string,
    readonly body: (m: Model, w: World) => Promise<void>,
    readonly needsTwin = false,
  ) {}
  check(m: Readonly<Model>): boolean {
    return !this.needsTwin || m.twins.length > 0;
  }
  async run(m: Model, w: World): Promise<void> {
    const from = m.trace.length;
    try {
      await this.body(m, w);
      countOutcomes(m, from);
      await settle(m, w);
    } catch (error) {
      const e = error as Error;
      e.message = `${e.message}\n  while running ${this.label}\n  run ${m.tag} so far:\n    ${m.trace.join("\n    ")}`;
      throw e;
    }
  }
  toString(): string {
    return this.label;
  }
}

const partyIx = fc.nat({ max: PARTY_COUNT - 1 });
const partyName = (ix: number) => `${LETTER[Math.floor(ix / PARTIES_PER_OPERATOR)]}${ix % PARTIES_PER_OPERATOR}`;
type IssuerChoice = number | "home" | "primary's";
const issuerChoice = fc.constantFrom<number | "home">("home", 0, 1, 2);
/** For a code meant for a known primary: mostly its own operator or the secondary's (HLF-TE-006). */
const twinIssuerChoice = fc.constantFrom<IssuerChoice>("home", "primary's", "primary's", 0, 1, 2);
const issuerName = (c: IssuerChoice) => (typeof c === "number" ? opName(c) : c);
const status = fc.constantFrom<Status>("On", "Off");
const side = fc.constantFrom<Role>("primary", "secondary");
const tokenKind = fc.constantFrom<TokenKind>("twinning", "twinning", "twin");
const refKind = fc.constantFrom<RefKind>("id", "id", "name", "address");
const twinIx = fc.nat({ max: 7 });
const name = fc.option(fc.constantFrom(...NAMES), { nil: undefined, freq: 2 });
const wrongCode = fc.record({ code: fc.bigInt({ min: 0n, max: 10n ** BigInt(CODE_LENGTH) - 1n }).map((n) => String(n).padStart(CODE_LENGTH, "0")), issuer: fc.nat({ max: 2 }) });
const codeKind = fc.constantFrom<CodeKind>("right", "right", "right", "stale", "wrong");

/** A primary: 0..5 any party; 6..7 one of the two latest successful primaries (so primaries gather twins). */
const primaryPick = fc.nat({ max: PARTY_COUNT + 1 });
const primaryName = (pick: number) => (pick < PARTY_COUNT ? partyName(pick) : `primary#${pick - PARTY_COUNT}`);
function pickPrimary(m: Model, pick: number): Party {
  if (pick < PARTY_COUNT) return m.parties[pick]!;
  const recent = [...new Set(m.twins.map((t) => t.p).reverse())];
  return m.parties[recent.length > 0 ? recent[(pick - PARTY_COUNT) % recent.length]! : 0]!;
}

/**
 * A secondary for a new twin: 0..5 any party; 6..7 a party of the operator of one of the two
 * latest twins' secondaries (another device at that operator, so one operator holds several
 * twins of a primary).
 */
const secondaryPick = fc.nat({ max: PARTY_COUNT + 1 });
const secondaryName = (pick: number) => (pick < PARTY_COUNT ? partyName(pick) : `neighbour#${pick - PARTY_COUNT}`);
function pickNewSecondary(m: Model, pick: number): Party {
  if (pick < PARTY_COUNT || m.twins.length === 0) return m.parties[pick % PARTY_COUNT]!;
  const t = m.twins[Math.max(0, m.twins.length - 1 - (pick - PARTY_COUNT))]!;
  const op = m.parties[t.s]!.op;
  const free = m.parties.filter((x) => x.op === op && !activeTwinOfSecondary(m, x.ix) && !isActivePrimary(m, x.ix));
  return free[0] ?? m.parties[t.s]!;
}

/** The secondary an activation names: one of the latest code requesters, else any party. */
function pickSecondary(m: Model, pick: number): Party {
  const recent = [...new Set([...m.requesters].reverse())];
  return m.parties[recent.length > 0 ? recent[pick % recent.length]! : pick % PARTY_COUNT]!;
}

export const commandArbitraries: fc.Arbitrary<fc.AsyncCommand<Model, World>>[] = [
  fc.record({ s: partyIx, issuer: issuerChoice }).map(
    ({ s, issuer }) => new TwinningCommand(`RequestCode(${partyName(s)} from ${issuerName(issuer)})`, (m, w) => requestCode(m, w, m.parties[s]!, issuer)),
  ),
  fc.record({ p: primaryPick, s: fc.nat({ max: 2 }), kind: codeKind, name, wrong: wrongCode }).map(
    ({ p, s, kind, name, wrong }) =>
      new TwinningCommand(`Activate(${primaryName(p)} with the ${kind} code of requester#${s}${name === undefined ? "" : `, "${name}"`}${kind === "wrong" ? `, ${wrong.code}@${opName(wrong.issuer)}` : ""})`, (m, w) =>
        activate(m, w, pickPrimary(m, p), pickSecondary(m, s), kind, name, wrong),
      ),
  ),
  // A code request followed by its redemption: reaches twinned states in short sequences.
  fc.record({ p: primaryPick, s: secondaryPick, issuer: twinIssuerChoice, name, wrong: wrongCode }).map(
    ({ p, s, issuer, name, wrong }) =>
      new TwinningCommand(`Twin(${primaryName(p)} → ${secondaryName(s)}, code from ${issuerName(issuer)}${name === undefined ? "" : `, "${name}"`})`, async (m, w) => {
        const primary = pickPrimary(m, p);
        const secondary = pickNewSecondary(m, s);
        await requestCode(m, w, secondary, issuer === "primary's" ? (primary.op === secondary.op ? "home" : primary.op) : issuer);
        await activate(m, w, primary, secondary, "right", name, wrong);
      }),
  ),
  fc.record({ t: twinIx, side, status, token: tokenKind, ref: refKind }).map(
    ({ t, side, status, token, ref }) =>
      new TwinningCommand(`Toggle(twin#${t} by ${side} to ${status}, ${token} token, ref ${ref})`, (m, w) => toggle(m, w, twinAt(m, t), side, status, token, ref), true),
  ),
  fc.record({ t: twinIx, a: fc.array(status, { minLength: 1, maxLength: 3 }), b: fc.array(status, { minLength: 1, maxLength: 3 }) }).map(
    ({ t, a, b }) =>
      new TwinningCommand(`Race(twin#${t}: primary ${a.join(",")} / secondary ${b.join(",")})`, async (m, w) => {
        const twin = twinAt(m, t);
        if (twin.active) await race(m, w, twin, a, b);
        else await toggle(m, w, twin, "primary", a[0]!, "twinning", "id"); // deactivated: the refusal is checked
      }, true),
  ),
  fc.record({ t: twinIx, name: fc.constantFrom(...NAMES), token: tokenKind, ref: refKind }).map(
    ({ t, name, token, ref }) => new TwinningCommand(`Rename(twin#${t} to "${name}", ${token} token, ref ${ref})`, (m, w) => rename(m, w, twinAt(m, t), name, token, ref), true),
  ),
  fc.record({ t: twinIx, side, token: tokenKind, ref: refKind }).map(
    ({ t, side, token, ref }) => new TwinningCommand(`Deactivate(twin#${t} by ${side}, ${token} token, ref ${ref})`, (m, w) => deactivate(m, w, twinAt(m, t), side, token, ref), true),
  ),
  twinIx.map((t) => new TwinningCommand(`PrimaryServicesToken(secondary of twin#${t})`, (m, w) => primaryServicesToken(m, w, twinAt(m, t)), true)),
  twinIx.map(
    (t) =>
      new TwinningCommand(
        `UseTokens(twin#${t})`,
        async (m, w) => {
          const twin = twinAt(m, t);
          await checkTokens(m, w, twin);
          m.trace.push(`the tokens of ${describeTwin(m, twin)} ${twin.active ? "work" : "are dead"}`);
        },
        true,
      ),
  ),
];
