import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { exportJWK, generateKeyPair, importJWK, type CryptoKey, type JWK } from "jose";

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
}

function readOrCreate(file: string, create: () => string): { value: string; created: boolean } {
  if (existsSync(file)) return { value: readFileSync(file, "utf8").trim(), created: false };
  const value = create();
  writeFileSync(file, value + "\n", { mode: 0o600, flag: "wx" });
  return { value, created: true };
}

export async function loadOrCreateSecrets(dataDir: string, configuredAdminToken: string | undefined): Promise<NodeSecrets> {
  mkdirSync(dataDir, { recursive: true });
  let keyText = existsSync(join(dataDir, "signing-key.jwk.json")) ? readFileSync(join(dataDir, "signing-key.jwk.json"), "utf8") : undefined;
  if (!keyText) {
    const { privateKey } = await generateKeyPair("ES256", { extractable: true });
    const jwk = await exportJWK(privateKey);
    jwk.kid = `node-${randomBytes(6).toString("hex")}`;
    jwk.alg = "ES256";
    keyText = JSON.stringify(jwk);
    writeFileSync(join(dataDir, "signing-key.jwk.json"), keyText + "\n", { mode: 0o600, flag: "wx" });
  }
  const privateJwk = JSON.parse(keyText) as JWK;
  const privateKey = (await importJWK(privateJwk, "ES256")) as CryptoKey;
  const { d: _private, ...publicJwk } = privateJwk;
  const codeSecret = readOrCreate(join(dataDir, "code-secret"), () => randomBytes(32).toString("base64url"));
  const admin = configuredAdminToken
    ? { value: configuredAdminToken, created: false }
    : readOrCreate(join(dataDir, "admin-token"), () => randomBytes(24).toString("base64url"));
  return {
    signingKey: { privateKey, publicJwk: { ...publicJwk, use: "sig" }, kid: privateJwk.kid ?? "node", alg: "ES256" },
    codeSecret: Buffer.from(codeSecret.value, "base64url"),
    adminToken: admin.value,
    adminTokenCreated: admin.created,
  };
}
