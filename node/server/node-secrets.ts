import { randomBytes } from "node:crypto";
import { existsSync, linkSync, mkdirSync, readFileSync, statSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { exportJWK, generateKeyPair, importJWK, type CryptoKey, type JWK } from "jose";
import { bearerSecret } from "../config/node-config.ts";

/**
 * Development secrets made on first start and kept in the data directory (mode 0600), so a
 * restarted node keeps its signing key, code secret and admin token. Operators supply their
 * own through configuration in production.
 */
export interface NodeSecrets {
  /** The JWS key that signs access tokens (ES256), with its kid. */
  readonly signingKey: { readonly privateKey: CryptoKey; readonly publicJwk: JWK; readonly kid: string; readonly alg: "ES256" };
  /** 32 random bytes: the HMAC key for activation codes and the sealing key for replays. */
  readonly codeSecret: Buffer;
  readonly adminToken: string;
  /** True when the admin token was generated now (so it is worth printing once). */
  readonly adminTokenCreated: boolean;
  /** Secret files others than the node's user may read (named, to be logged at start). */
  readonly readableByOthers: readonly string[];
}

/**
 * Writes a new secret file whole or not at all: written under a temporary name (0600), then
 * linked to its name, which fails if the file exists (as `wx` would). A crash mid-write leaves
 * no half-written secret behind, which the next start would refuse.
 */
function writeNewSecret(file: string, text: string): void {
  const partial = `${file}.${process.pid}.partial`;
  writeFileSync(partial, text, { mode: 0o600 });
  try {
    linkSync(partial, file);
  } finally {
    unlinkSync(partial);
  }
}

/** Whether a file's mode lets its group or others read it. */
const readableByOthers = (file: string): boolean => (statSync(file).mode & 0o044) !== 0;

/**
 * A secret from its file, or made now and written (0600). One read back is checked as the node
 * would make it (a hand-edited file is refused at start); the error names the file, never its
 * content.
 */
function readOrCreate(file: string, create: () => string, valid: (value: string) => boolean, what: string): { value: string; created: boolean } {
  if (existsSync(file)) {
    const value = readFileSync(file, "utf8").trim();
    if (!valid(value)) throw new Error(`the ${what} in ${file} is not valid: delete the file to make a new one, or fix it`);
    return { value, created: false };
  }
  const value = create();
  writeNewSecret(file, value + "\n");
  return { value, created: true };
}

/** The code secret keys the codes' HMAC: at least 32 bytes (base64url), as the node makes it. */
const CODE_SECRET_MIN_BYTES = 32;

export async function loadOrCreateSecrets(dataDir: string, configuredAdminToken: string | undefined): Promise<NodeSecrets> {
  // Created for this node's eyes only (an existing directory keeps its mode).
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const keyFile = join(dataDir, "signing-key.jwk.json");
  // An existing file is read as it is, empty or not (an empty one is refused below, by name).
  let keyText = existsSync(keyFile) ? readFileSync(keyFile, "utf8") : undefined;
  if (keyText === undefined) {
    const { privateKey } = await generateKeyPair("ES256", { extractable: true });
    const jwk = await exportJWK(privateKey);
    jwk.kid = `node-${randomBytes(6).toString("hex")}`;
    jwk.alg = "ES256";
    keyText = JSON.stringify(jwk);
    writeNewSecret(keyFile, keyText + "\n");
  }
  let privateJwk: JWK;
  let privateKey: CryptoKey;
  try {
    privateJwk = JSON.parse(keyText) as JWK;
    if (typeof privateJwk?.d !== "string") throw new Error("no private part");
    privateKey = (await importJWK(privateJwk, "ES256")) as CryptoKey;
  } catch {
    // Not the parser's message: it would quote the key's text.
    throw new Error(`the token signing key ${keyFile} is not a private ES256 JWK: delete the file to make a new one, or fix it`);
  }
  const { d: _private, ...publicJwk } = privateJwk;
  const codeSecret = readOrCreate(
    join(dataDir, "code-secret"),
    () => randomBytes(CODE_SECRET_MIN_BYTES).toString("base64url"),
    (v) => /^[A-Za-z0-9_-]+$/.test(v) && Buffer.from(v, "base64url").length >= CODE_SECRET_MIN_BYTES,
    "code secret",
  );
  const admin = configuredAdminToken
    ? { value: configuredAdminToken, created: false }
    : readOrCreate(join(dataDir, "admin-token"), () => randomBytes(24).toString("base64url"), (v) => bearerSecret.safeParse(v).success, "admin token");
  const files = [keyFile, join(dataDir, "code-secret"), ...(configuredAdminToken ? [] : [join(dataDir, "admin-token")])];
  return {
    readableByOthers: files.filter(readableByOthers),
    signingKey: { privateKey, publicJwk: { ...publicJwk, use: "sig" }, kid: privateJwk.kid ?? "node", alg: "ES256" },
    codeSecret: Buffer.from(codeSecret.value, "base64url"),
    adminToken: admin.value,
    adminTokenCreated: admin.created,
  };
}
