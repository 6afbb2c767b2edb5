import { TwinningError } from "../errors/twinning-error.ts";

/** DESIGN "Words": a subscriber is `tel:+<E.164 digits>` (E.164 allows at most 15 digits). */
const TEL = /^tel:\+[1-9]\d{3,14}$/;

export function isAddress(value: string): boolean {
  return TEL.test(value);
}

/** Parses an address from a path or body, answering SVC0004 naming the message part. */
export function parseAddress(value: string, part: string): string {
  if (!isAddress(value)) throw new TwinningError("invalid_address", { variables: [part] });
  return value;
}

/** Percent-encodes an address for use in a resource URL (`tel%3A%2B15550001`). */
export function encodeAddress(address: string): string {
  return encodeURIComponent(address);
}
