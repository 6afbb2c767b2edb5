import { isAddress } from "./address.ts";
/** HLF-PD-002/SD-004: a twin is On or Off; toggling Off keeps the relationship (HLF-TE-003). */
export type TwinStatus = "On" | "Off";
export type TwinRole = "primary" | "secondary";

/** Where the primary's operator serves the primary's messaging and NMS (HLF-IC-006). */
export interface PrimaryServiceEndpoints {
  readonly messaging: string;
  readonly nms: string;
}

/**
 * The messaging and NMS endpoints in a peer's `endpoints` object, when both are http(s) URLs of
 * a sane length: the secondary's device is sent to them; anything else names none.
 */
export function primaryServiceEndpointsIn(endpoints: unknown): PrimaryServiceEndpoints | undefined {
  const { messaging, nms } = (endpoints ?? {}) as { messaging?: unknown; nms?: unknown };
  return isServiceUrl(messaging) && isServiceUrl(nms) ? { messaging, nms } : undefined;
}

function isServiceUrl(value: unknown): value is string {
  return typeof value === "string" && value.length <= 2048 && /^https?:\/\//i.test(value) && URL.canParse(value);
}

export interface Twin {
  readonly twinId: string;
  readonly primaryAddress: string;
  readonly primaryOperatorId: string;
  readonly secondaryAddress: string;
  readonly secondaryOperatorId: string;
  readonly name: string;
  readonly status: TwinStatus;
  /** Last-writer-wins register: ordered by (version, statusOrigin). */
  readonly version: number;
  readonly statusOrigin: string;
  /** False once deactivated (HLF-TE-004); kept as a tombstone so its tokens stay dead. */
  readonly active: boolean;
  readonly createdAtMs: number;
  readonly updatedAtMs: number;
}

/**
 * The highest version a peer may send. A version grows by one per change, so no twin reaches it;
 * a peer that sent more (up to JSON's 2^53 - 1) would leave the next local change a version no
 * peer can read, every later message refused for good. 2^31 - 1 also fits a peer's 32-bit integer.
 */
export const MAX_TWIN_VERSION = 2 ** 31 - 1;

/** How a primary names one of its twins in a path (HLF-PD-003): twinId, secondary address or name. */
export type TwinRef =
  | { readonly kind: "twinId"; readonly twinId: string }
  | { readonly kind: "secondary"; readonly address: string }
  | { readonly kind: "name"; readonly name: string };

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function isTwinId(value: string): boolean {
  return UUID.test(value);
}

export function parseTwinRef(ref: string): TwinRef {
  if (isTwinId(ref)) return { kind: "twinId", twinId: ref.toLowerCase() };
  if (ref.startsWith("tel:")) return { kind: "secondary", address: ref };
  return { kind: "name", name: ref };
}

/** Whether a twin could be so named: an address or a name of the allowed form (a twin id always could). */
export function couldNameATwin(ref: TwinRef): boolean {
  if (ref.kind === "secondary") return isAddress(ref.address);
  if (ref.kind === "name") return isValidTwinName(ref.name);
  return true;
}

/**
 * HLF-TE-007: a user-chosen name. It must not be mistaken for the other two ways of naming a
 * twin in a path, so it is neither a UUID nor a `tel:` URI.
 */
export const TWIN_NAME = /^(?!tel:)[\p{L}\p{N}][\p{L}\p{N} ._'-]{0,63}$/u;

export function isValidTwinName(name: string): boolean {
  return TWIN_NAME.test(name) && !isTwinId(name);
}

/** HLF-TE-007: the default name the enabler gives when the user gives none. */
export function defaultTwinName(taken: ReadonlySet<string>): string {
  for (let n = 1; ; n++) {
    const candidate = `twin-${n}`;
    if (!taken.has(candidate)) return candidate;
  }
}
