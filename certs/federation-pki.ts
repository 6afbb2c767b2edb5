import "reflect-metadata";
import { createPrivateKey, createPublicKey, randomBytes, webcrypto, type KeyObject } from "node:crypto";
import { isIP } from "node:net";
import * as x509 from "@peculiar/x509";
import { exportJWK, generateKeyPair, type JWK } from "jose";

/**
 * The federation's PKI without an openssl binary (DESIGN "Layout", certs/): a federation CA,
 * node certificates naming their operator in the SAN as `urn:twinning:operator:MCC-MNC`
 * (server and client auth, for mutual TLS), and JWS signing keys.
 */
x509.cryptoProvider.set(webcrypto as never);

type Key = webcrypto.CryptoKey;
type KeyPair = webcrypto.CryptoKeyPair;

const EC = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;
const DAY_MS = 86_400_000;

export const OPERATOR_URI_PREFIX = "urn:twinning:operator:";

export interface PemPair {
  readonly certPem: string;
  readonly keyPem: string;
}

function pem(label: string, der: ArrayBuffer): string {
  const b64 = Buffer.from(der).toString("base64").replace(/.{64}/g, "$&\n");
  return `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`;
}

/**
 * A distinguished name with one CN attribute holding `value` as it is: built as a name object,
 * not as "CN=…" text, so a comma or "O=" in the value stays inside the CN (escaped on output).
 */
const commonName = (value: string): x509.JsonName => [{ CN: [value] }];

// A DNS name in a certificate: dot-separated labels of letters, digits and inner hyphens
// (RFC 1123), at most 253 characters. No port, scheme, path or trailing dot.
const DNS_NAME = /^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/i;

/** A host's SAN entry: an IP address (v4 or v6) or a DNS name; anything else is refused by name. */
export function hostSanEntry(host: string): { type: "ip" | "dns"; value: string } {
  if (isIP(host) !== 0) return { type: "ip", value: host };
  // An all-digit last label is no top-level domain: "10.0.0" or "999.1.1.1" is a mistyped address.
  if (DNS_NAME.test(host) && !/(^|\.)\d+$/.test(host)) return { type: "dns", value: host };
  throw new Error(`host ${JSON.stringify(host)} is neither an IP address nor a DNS name (give the name alone, without port or scheme)`);
}

/** The private key of a PEM, or a one-line error that names the file's role, never its content. */
function privateKeyOf(keyPem: string): KeyObject {
  try {
    return createPrivateKey(keyPem);
  } catch {
    throw new Error("the CA key is not a PEM private key");
  }
}

async function importCaKey(key: KeyObject): Promise<Key> {
  const der = key.export({ type: "pkcs8", format: "der" });
  try {
    return (await webcrypto.subtle.importKey("pkcs8", der, EC, true, ["sign"])) as Key;
  } catch {
    throw new Error("the CA key is not an ECDSA P-256 key");
  }
}

/**
 * The CA's certificate and key, checked before they sign anything: a key of another CA would
 * produce a certificate no peer verifies, and an expired or non-CA certificate cannot issue.
 */
async function signingCa(ca: PemPair, now: Date): Promise<{ cert: x509.X509Certificate; key: Key }> {
  let cert: x509.X509Certificate;
  try {
    cert = new x509.X509Certificate(ca.certPem);
  } catch {
    throw new Error("the CA certificate is not a PEM certificate");
  }
  if (cert.getExtension(x509.BasicConstraintsExtension)?.ca !== true) throw new Error(`the CA certificate (${cert.subject}) is not a CA certificate (basicConstraints cA is not set)`);
  const usage = cert.getExtension(x509.KeyUsagesExtension);
  if (usage && (usage.usages & x509.KeyUsageFlags.keyCertSign) === 0) throw new Error(`the CA certificate (${cert.subject}) may not sign certificates (no keyCertSign usage)`);
  if (now > cert.notAfter) throw new Error(`the CA certificate (${cert.subject}) expired on ${cert.notAfter.toISOString()}`);
  if (now < cert.notBefore) throw new Error(`the CA certificate (${cert.subject}) is not valid before ${cert.notBefore.toISOString()}`);
  const key = privateKeyOf(ca.keyPem);
  const certKey = createPublicKey({ key: Buffer.from(cert.publicKey.rawData), format: "der", type: "spki" });
  if (!createPublicKey(key).equals(certKey)) throw new Error(`the CA key does not belong to the CA certificate (${cert.subject}): its public key differs`);
  return { cert, key: await importCaKey(key) };
}

const serial = () => "01" + randomBytes(15).toString("hex");

/** A self-signed federation CA (ECDSA P-256). */
export async function createFederationCa(options: { name?: string; validDays?: number; now?: Date } = {}): Promise<PemPair> {
  const keys = (await webcrypto.subtle.generateKey(EC, true, ["sign", "verify"])) as KeyPair;
  const now = options.now ?? new Date();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: commonName(options.name ?? "Twinning Federation CA"),
    notBefore: new Date(now.getTime() - DAY_MS),
    notAfter: new Date(now.getTime() + (options.validDays ?? 3650) * DAY_MS),
    signingAlgorithm: EC,
    keys: keys as never,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey as never),
    ],
  });
  return { certPem: cert.toString("pem") + "\n", keyPem: pem("PRIVATE KEY", await webcrypto.subtle.exportKey("pkcs8", keys.privateKey as never)) };
}

/** A node certificate signed by the CA: operator URI, host names and addresses in the SAN. */
export async function issueNodeCertificate(options: {
  ca: PemPair;
  operatorId: string;
  hosts?: readonly string[];
  validDays?: number;
  now?: Date;
}): Promise<PemPair> {
  const now = options.now ?? new Date();
  const { cert: caCert, key: caKey } = await signingCa(options.ca, now);
  const hosts = options.hosts ?? ["127.0.0.1", "localhost"];
  const names: { type: "url" | "dns" | "ip"; value: string }[] = [{ type: "url", value: `${OPERATOR_URI_PREFIX}${options.operatorId}` }, ...hosts.map(hostSanEntry)];
  const keys = (await webcrypto.subtle.generateKey(EC, true, ["sign", "verify"])) as KeyPair;
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: commonName(`twinning-node-${options.operatorId}`),
    // The CA's subject as encoded in its certificate: a chain matches names byte for byte.
    issuer: caCert.subjectName,
    // Within the CA's own validity: a node certificate outliving its CA would fail verification
    // from the day the CA expires, while looking valid until its own date.
    notBefore: new Date(Math.max(now.getTime() - DAY_MS, caCert.notBefore.getTime())),
    notAfter: new Date(Math.min(now.getTime() + (options.validDays ?? 825) * DAY_MS, caCert.notAfter.getTime())),
    signingAlgorithm: EC,
    publicKey: keys.publicKey as never,
    signingKey: caKey as never,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyAgreement, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth], false),
      new x509.SubjectAlternativeNameExtension(names, false),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey as never),
      await x509.AuthorityKeyIdentifierExtension.create(caCert),
    ],
  });
  return { certPem: cert.toString("pem") + "\n", keyPem: pem("PRIVATE KEY", await webcrypto.subtle.exportKey("pkcs8", keys.privateKey as never)) };
}

export type SigningAlgorithm = "ES256" | "EdDSA";

/** A JWS signing key for federation messages: the private JWK and its public JWKS. */
export async function createSigningKey(options: { operatorId: string; alg?: SigningAlgorithm; kid?: string }): Promise<{ privateJwk: JWK; jwks: { keys: JWK[] } }> {
  const alg = options.alg ?? "ES256";
  const { privateKey } = await generateKeyPair(alg, { extractable: true, ...(alg === "EdDSA" ? { crv: "Ed25519" } : {}) });
  const privateJwk = await exportJWK(privateKey);
  privateJwk.kid = options.kid ?? `${options.operatorId}-${new Date().toISOString().slice(0, 10)}-${randomBytes(3).toString("hex")}`;
  privateJwk.alg = alg;
  privateJwk.use = "sig";
  const { d: _d, ...publicJwk } = privateJwk;
  return { privateJwk, jwks: { keys: [publicJwk] } };
}

/**
 * The operator a certificate names: its one subjectAltName URI `urn:twinning:operator:<id>`,
 * read from the certificate's DER (Node's `subjectaltname` string is for display; a name with a
 * comma in it could pass for another entry there). None, or more than one: undefined.
 */
export function operatorOfCertificate(der: Uint8Array): string | undefined {
  let names: readonly x509.GeneralName[];
  try {
    names = new x509.X509Certificate(der).getExtension(x509.SubjectAlternativeNameExtension)?.names.items ?? [];
  } catch {
    return undefined;
  }
  const operators = names.filter((n) => n.type === "url" && n.value.startsWith(OPERATOR_URI_PREFIX)).map((n) => n.value.slice(OPERATOR_URI_PREFIX.length));
  return operators.length === 1 && operators[0] !== "" ? operators[0] : undefined;
}
