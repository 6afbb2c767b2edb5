import { createHash, randomBytes, scrypt as scryptCallback, timingSafeEqual } from "node:crypto";
import { promisify } from "node:util";
import type { SubscriberRecord } from "../store/store-port.ts";

const scrypt = promisify(scryptCallback) as (password: string, salt: Buffer, keylen: number, options: { N: number; r: number; p: number }) => Promise<Buffer>;

/** Subscriber device credentials are stored as scrypt hashes: `scrypt$N$r$p$salt$hash`. */
const N = 16_384;
const R = 8;
const P = 1;

// The store's read cache hands out the same record until the subscriber is written: a stamp is
// computed once per record, not per request.
const stamps = new WeakMap<SubscriberRecord, string>();

/**
 * What ties a token to the provisioning it was issued under: a digest of the subscriber's stored
 * credential hash, which every PUT of the subscriber renews (a fresh salt). A token minted before
 * a de-provisioning and re-provisioning, or before a credential change, no longer matches.
 */
export function provisioningStamp(subscriber: SubscriberRecord): string {
  let stamp = stamps.get(subscriber);
  if (stamp === undefined) stamps.set(subscriber, (stamp = createHash("sha256").update(subscriber.credentialHash).digest("base64url").slice(0, 22)));
  return stamp;
}

export async function hashCredential(credential: string): Promise<string> {
  const salt = randomBytes(16);
  const hash = await scrypt(credential, salt, 32, { N, r: R, p: P });
  return `scrypt$${N}$${R}$${P}$${salt.toString("base64url")}$${hash.toString("base64url")}`;
}

export async function verifyCredential(credential: string, stored: string): Promise<boolean> {
  const [scheme, n, r, p, salt, hash] = stored.split("$");
  if (scheme !== "scrypt" || !n || !r || !p || !salt || !hash) return false;
  const expected = Buffer.from(hash, "base64url");
  const actual = await scrypt(credential, Buffer.from(salt, "base64url"), expected.length, { N: Number(n), r: Number(r), p: Number(p) });
  return timingSafeEqual(actual, expected);
}

/** Constant-time equality of two secrets of any length (compares their SHA-256 digests). */
export function secretsEqual(a: string, b: string): boolean {
  return timingSafeEqual(createHash("sha256").update(a).digest(), createHash("sha256").update(b).digest());
}
