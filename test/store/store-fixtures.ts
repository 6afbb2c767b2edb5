import { afterEach, beforeEach, expect } from "vitest";
import type { Twin, TwinRole } from "../../node/domain/twin.ts";
import { TwinningError, type ErrorCode } from "../../node/errors/twinning-error.ts";
import type {
  ActivationCodeRecord,
  IssueCodeInput,
  RedeemCodeInput,
  SubscriptionRecord,
  TwinningStore,
} from "../../node/store/store-port.ts";

/** What an implementation hands the shared suite: a fresh, empty store per test. */
export interface StoreHandle {
  readonly store: TwinningStore;
  /** Closes the store and opens a new one on the same data (durability tests). */
  readonly reopen?: () => Promise<TwinningStore>;
  readonly cleanup: () => Promise<void>;
}
export type MakeStore = () => Promise<StoreHandle>;

/** A fixed clock: every test passes these numbers as nowMs, nothing sleeps. */
export const T0 = Date.UTC(2030, 0, 1);
export const SECOND = 1_000;
export const MINUTE = 60_000;
export const CODE_TTL_MS = 10 * MINUTE;
export const WINDOW_MS = 15 * MINUTE;

export const OP = "001-01";
export const OTHER_OP = "002-02";

export const P1 = "tel:+15550000001";
export const P2 = "tel:+15550000002";
export const S1 = "tel:+15550000101";
export const S2 = "tel:+15550000102";
export const S3 = "tel:+15550000103";
export const S4 = "tel:+15550000104";

let seq = 0;
/** A fresh UUID-shaped id (deterministic, unique within the run). */
export function uuid(): string {
  seq++;
  return `00000000-0000-4000-8000-${seq.toString(16).padStart(12, "0")}`;
}
/** A fresh 6-digit code. */
export function newCode(): string {
  seq++;
  return String(100_000 + seq);
}
/** The stored form of a code: any deterministic digest serves the port. */
export const hashOf = (code: string): string => `hash:${code}`;

/** Registers a fresh store per test in the enclosing describe; returns its getter. */
export function useStore(makeStore: MakeStore): () => StoreHandle {
  let handle: StoreHandle | undefined;
  beforeEach(async () => {
    handle = await makeStore();
  });
  afterEach(async () => {
    await handle?.cleanup();
    handle = undefined;
  });
  return () => {
    if (!handle) throw new Error("no store open");
    return handle;
  };
}

export function codeInput(secondary: string, code: string, over: Partial<IssueCodeInput> = {}): IssueCodeInput {
  const nowMs = over.nowMs ?? T0;
  return {
    codeId: uuid(),
    secondaryAddress: secondary,
    secondaryOperatorId: OP,
    issuerOperatorId: OP,
    codeHash: hashOf(code),
    nowMs,
    expiresAtMs: nowMs + CODE_TTL_MS,
    ...over,
  };
}

export function redeemInput(primary: string, code: string, over: Partial<RedeemCodeInput> = {}): RedeemCodeInput {
  const codeHash = hashOf(code);
  return {
    issuerOperatorId: OP,
    codeHash,
    verify: (stored) => stored === codeHash,
    twinId: uuid(),
    primaryAddress: primary,
    primaryOperatorId: OP,
    ownOperatorId: OP,
    name: undefined,
    nowMs: T0,
    maxTwinsPerPrimary: 10,
    attemptBudgets: [{ key: `primary:${primary}`, limit: 5 }],
    attemptWindowMs: WINDOW_MS,
    ...over,
  };
}

/** Issues a code and insists it was issued. */
export async function issued(store: TwinningStore, secondary: string, code: string, over: Partial<IssueCodeInput> = {}): Promise<ActivationCodeRecord> {
  const result = await store.issueActivationCode(codeInput(secondary, code, over));
  if (result.kind !== "issued") throw new Error(`expected an issued code, got ${result.kind}`);
  return result.code;
}

/** Twins primary and secondary through the public operations (issue, then redeem). */
export async function activated(
  store: TwinningStore,
  primary: string,
  secondary: string,
  over: Partial<RedeemCodeInput> = {},
): Promise<Twin> {
  const code = newCode();
  await issued(store, secondary, code, { nowMs: over.nowMs ?? T0 });
  const result = await store.redeemActivationCode(redeemInput(primary, code, over));
  if (result.kind !== "activated") throw new Error(`expected an activation, got ${result.kind}`);
  return result.twin;
}

export function subscription(address: string, role: TwinRole, over: Partial<SubscriptionRecord> = {}): SubscriptionRecord {
  const id = uuid();
  return {
    subscriptionId: id,
    address,
    role,
    notifyUrl: `https://client.example/callbacks/${id}`,
    callbackData: undefined,
    createdAtMs: T0,
    expiresAtMs: T0 + 60 * MINUTE,
    ...over,
  };
}

export async function subscribe(store: TwinningStore, address: string, role: TwinRole, over: Partial<SubscriptionRecord> = {}): Promise<SubscriptionRecord> {
  return (await store.createSubscription({ subscription: subscription(address, role, over), maxPerSubscriber: 10 })).subscription;
}

/** The promise must reject with a TwinningError of this code (STYLE habit 3: assert the code). */
export async function expectTwinningError(promise: Promise<unknown>, code: ErrorCode): Promise<TwinningError> {
  let caught: unknown;
  try {
    await promise;
  } catch (error) {
    caught = error;
  }
  expect(caught, `expected a TwinningError "${code}"`).toBeInstanceOf(TwinningError);
  expect((caught as TwinningError).code).toBe(code);
  return caught as TwinningError;
}
