import { createHmac, randomInt, timingSafeEqual } from "node:crypto";

/**
 * HLF-TE-005 activation codes: digits from a CSPRNG, stored only as an HMAC under the node's
 * secret (a 6-digit space is too small for a plain hash), compared in constant time.
 */
export function generateCode(length: number): string {
  let code = "";
  for (let i = 0; i < length; i++) code += String(randomInt(10));
  return code;
}

export class CodeHasher {
  readonly #secret: Buffer;

  constructor(secret: Buffer) {
    if (secret.length < 32) throw new Error("code secret must be at least 32 bytes");
    this.#secret = secret;
  }

  /** The stored form of a code issued by `operatorId`. */
  hash(operatorId: string, code: string): string {
    return createHmac("sha256", this.#secret).update(`${operatorId}\0${code}`).digest("base64url");
  }

  /** Constant-time comparison of a stored hash with the hash of a presented code. */
  matches(storedHash: string, operatorId: string, presented: string): boolean {
    const a = Buffer.from(storedHash, "base64url");
    const b = Buffer.from(this.hash(operatorId, presented), "base64url");
    return a.length === b.length && timingSafeEqual(a, b);
  }
}

/** A code as the caller sees it: only digits, of the policy's length. */
export function isWellFormedCode(code: string, length: number): boolean {
  return code.length === length && /^\d+$/.test(code);
}

/** The failed-redemption budget of one of our primaries (HLF-CM-006); a new holder of the number starts afresh. */
export const localPrimaryBudgetKey = (address: string): string => `primary:${address}`;
